#!/usr/bin/env bash
# Runs every fuzz target of host/fuzz for FUZZ_SECONDS (default 60) each.
# cargo-fuzz drives libFuzzer; the sanitizer is off so a stable toolchain
# builds it (RUSTC_BOOTSTRAP lets cargo-fuzz pass its few -Z flags).
# Crashes land in host/fuzz/artifacts/<target>/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
./scripts/build-plugins.sh >/dev/null
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p host/fuzz/corpus/plugin_bytes host/fuzz/corpus/manifest host/fuzz/corpus/settings
cp "$target_dir"/plugins/bundled/*.wasm "$target_dir"/plugins/fixtures/*.wasm host/fuzz/corpus/plugin_bytes/
cat > host/fuzz/corpus/manifest/seed.yaml <<'YAML'
apiVersion: etcd.clay.io/v1alpha1
kind: EtcdCluster
metadata:
  name: prod
  annotations:
    importedAddr: https://10.0.0.1:2379,https://[fd00::1]:2379
    featureGates: healthy=true,alarm=true,consistency=false
    extClientURL: 10.0.0.1:2379->lb.example:32379
    etcd-inspector.io/insecure-skip-tls-verify: "false"
spec:
  clusterType: imported
---
apiVersion: etcd.clay.io/v1alpha1
kind: EtcdInspection
metadata: {name: prod-healthy}
spec: {clusterName: prod, inspectionType: healthy, intervalInSecond: 15}
YAML
printf 'plugins:\n  healthy:\n    timeoutSeconds: 2.5\n    memoryMiB: 8\n    sha256: "%064d"\n' 0 > host/fuzz/corpus/settings/seed.yaml
cd host/fuzz
for target in manifest settings plugin_bytes; do
  echo "fuzzing $target for ${seconds}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096
done
