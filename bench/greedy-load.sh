#!/usr/bin/env bash
# How much a plugin that lists the keyspace in a loop loads the etcd it
# inspects, with and without the host's per-round etcd budget (issue 11.12).
# A 1-member etcd with 20 000 keys of 1 KiB; the host runs the greedy fixture
# every second; meanwhile 300 `/health` probes are timed against etcd
# directly. Prints p50/p99/max of the probes per setting.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target_dir/release/etcd-inspector"
[ -x "$bin" ] || cargo build --quiet --release -p etcd-inspector
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
port=23990
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$port" \
  --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls http://127.0.0.1:23991 \
  --quota-backend-bytes 4294967296 >"$work/etcd.log" 2>&1 &
pids+=($!)
ctl() { ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$port" "$@"; }
until ctl endpoint health >/dev/null 2>&1; do sleep 0.2; done
value=$(head -c 1024 /dev/zero | tr '\0' v)
for batch in $(seq 0 199); do
  { echo; for i in $(seq 0 99); do echo "put /bench/key-$batch-$i $value"; done; echo; echo; } | ctl txn >/dev/null
done
echo "keys: $(ctl get /bench/ --prefix --keys-only | grep -c /bench/)"

probe() {
  for _ in $(seq 300); do
    curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/health"
    sleep 0.05
  done | sort -n | awk '{a[NR]=$1} END {printf "p50 %.1f ms  p99 %.1f ms  max %.1f ms\n", a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000, a[NR]*1000}'
}

run_host() { # $1: settings file or empty
  mkdir -p "$work/m" "$work/p"
  cp "$target_dir/plugins/fixtures/greedy.wasm" "$work/p/"
  cat >"$work/m/c.yaml" <<YAML
apiVersion: etcd.clay.io/v1alpha1
kind: EtcdCluster
metadata: {name: load, annotations: {importedAddr: "http://127.0.0.1:$port"}}
spec: {clusterType: imported}
---
apiVersion: etcd.clay.io/v1alpha1
kind: EtcdInspection
metadata: {name: load-greedy}
spec: {clusterName: load, inspectionType: greedy, intervalInSecond: 1}
YAML
  local extra=()
  [ -n "$1" ] && extra=(--plugin-config "$1")
  "$bin" standalone --manifests "$work/m" --plugin-dir "$work/p" --listen 127.0.0.1:23992 "${extra[@]}" >"$work/host.log" 2>&1 &
  host=$!
  sleep 3
}

echo "no plugin:            $(probe)"
cat >"$work/unbounded.yaml" <<YAML
plugins:
  greedy: {etcdCallsPerRound: 100000000, etcdBytesPerRound: 1000000000000}
YAML
run_host "$work/unbounded.yaml"
echo "greedy, no budget:    $(probe)"
kill "$host"; wait "$host" 2>/dev/null || true
run_host ""
echo "greedy, default budget: $(probe)"
echo "refusals: $(curl -s http://127.0.0.1:23992/metrics | grep '^etcd_inspector_plugin_budget_refusals_total' || true)"
kill "$host"; wait "$host" 2>/dev/null || true
