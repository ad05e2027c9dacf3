#!/usr/bin/env bash
# Builds everything, starts a local 3-member etcd cluster on loopback and
# runs etcd-inspector in standalone mode against it with the bundled plugins.
# Ctrl-C stops the host and the cluster. State lives in .local/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build-plugins.sh
cargo build --quiet -p etcd-inspector
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
listen="${LISTEN:-127.0.0.1:9090}"
base="${BASE_PORT:-22379}"
state="$PWD/.local"
rm -rf "$state" && mkdir -p "$state/manifests" "$state/plugins"
cp "$target_dir"/plugins/bundled/*.wasm "$state/plugins/"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
cluster=""
for i in 0 1 2; do cluster+="m$i=http://127.0.0.1:$((base + 2*i + 1)),"; done
for i in 0 1 2; do
  client=$((base + 2*i)); peer=$((base + 2*i + 1))
  etcd --name "m$i" --data-dir "$state/m$i" --logger zap --log-outputs "$state/m$i.log" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "${cluster%,}" --initial-cluster-state new --initial-cluster-token local &
  pids+=($!)
done
endpoints="http://127.0.0.1:$base,http://127.0.0.1:$((base+2)),http://127.0.0.1:$((base+4))"
for _ in $(seq 50); do
  ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
# A few Kubernetes-style keys so the request inspection has something to count.
for key in /registry/pods/default/demo-0 /registry/pods/default/demo-1 /registry/configmaps/default/demo \
           /registry/apiextensions.k8s.io/customresourcedefinitions/demos.example.com; do
  ETCDCTL_API=3 etcdctl --endpoints "$endpoints" put "$key" demo >/dev/null
done
features=$(ls "$state/plugins" | sed 's/\.wasm$/=true/' | paste -sd, -)
cat > "$state/manifests/local.yaml" <<YAML
apiVersion: etcd.clay.io/v1alpha1
kind: EtcdCluster
metadata:
  name: local
  namespace: default
  annotations:
    importedAddr: http://127.0.0.1:$base
    featureGates: $features
spec:
  clusterType: imported
YAML
echo "etcd cluster: $endpoints"
echo "metrics:      http://$listen/metrics   status: http://$listen/   plugins: http://$listen/plugins"
"$target_dir/debug/etcd-inspector" standalone --manifests "$state/manifests" --plugin-dir "$state/plugins" --listen "$listen" &
pids+=($!)
wait "${pids[-1]}"
