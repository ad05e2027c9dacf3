#!/usr/bin/env bash
# Builds the bundled plugins and the hostile test fixtures as wasm32-wasip2
# components and copies them into $PLUGIN_OUT (default: <target>/plugins).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
out="${PLUGIN_OUT:-$target_dir/plugins}"
bundled=(healthy alarm consistency request compaction latency quota membership certificates leases)
examples=(db-quota)
fixtures=(spin greedy membomb panicker noop mislabel wit-next wit-patch)
args=()
for p in "${bundled[@]}" "${examples[@]}" "${fixtures[@]}"; do args+=(-p "$p"); done
cargo build --quiet --profile plugin --target wasm32-wasip2 "${args[@]}"
mkdir -p "$out/bundled" "$out/examples" "$out/fixtures"
for p in "${bundled[@]}"; do cp "$target_dir/wasm32-wasip2/plugin/$p.wasm" "$out/bundled/"; done
for p in "${examples[@]}"; do cp "$target_dir/wasm32-wasip2/plugin/${p//-/_}.wasm" "$out/examples/$p.wasm"; done
for p in "${fixtures[@]}"; do cp "$target_dir/wasm32-wasip2/plugin/${p//-/_}.wasm" "$out/fixtures/$p.wasm"; done
echo "plugins in $out"
