# Sourced by run-local.sh and bench.sh: start_etcd DIR BASE_PORT starts a
# 3-member etcd on loopback (client ports BASE, BASE+2, BASE+4), waits until
# it is healthy, and sets $endpoints and appends to $pids.
start_etcd() {
  local state="$1" base="$2" cluster="" i
  for i in 0 1 2; do cluster+="m$i=http://127.0.0.1:$((base + 2*i + 1)),"; done
  for i in 0 1 2; do
    local client=$((base + 2*i)) peer=$((base + 2*i + 1))
    etcd --name "m$i" --data-dir "$state/m$i" --logger zap --log-outputs "$state/m$i.log" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "${cluster%,}" --initial-cluster-state new --initial-cluster-token local &
    pids+=($!)
  done
  endpoints="http://127.0.0.1:$base,http://127.0.0.1:$((base+2)),http://127.0.0.1:$((base+4))"
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "etcd did not become healthy; see $state/m*.log" >&2
  return 1
}
