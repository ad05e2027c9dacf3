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
source scripts/local-etcd.sh
start_etcd "$state" "$base"
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
