#!/usr/bin/env bash
# Runs the benchmarks (release build) against a local 3-member etcd and
# writes bench/RESULTS.md. Numbers are reported, never asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build-plugins.sh
state="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$state"; }
trap cleanup EXIT INT TERM
source scripts/local-etcd.sh
start_etcd "$state" "${BENCH_BASE_PORT:-32379}"
mkdir -p bench
# H needs etcd 3.6 (built from its Go module; needs Go).
etcd36="$(./tests/tools/build.sh etcd-3.6 | sed -n 's|^etcd-3.6/etcd=||p')"
BENCH_ETCD36="$etcd36" BENCH_ETCD_ENDPOINTS="$endpoints" BENCH_RESULTS="$PWD/bench/RESULTS.md" \
  cargo bench --quiet -p etcd-inspector --bench inspector
echo "written to bench/RESULTS.md"
