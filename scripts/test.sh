#!/usr/bin/env bash
# The whole test suite: set-up, the Go-built test tools (etcd 3.5-3.7,
# kube-apiserver, kubectl; cached by version under ~/.cache), plugins
# (wasm32-wasip2), then every test: the host's unit and end-to-end tests
# (real etcd processes, a real kube-apiserver), the SDK's, and the plugins'
# own unit tests (run natively). Separate cargo invocations keep the host's
# and the plugins' dependency features apart.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The Go-built tools compile beside the Rust build: each has long serial
# stretches (linking), so on 2 cores the two overlap well.
tools_log="$(mktemp)"
./tests/tools/build.sh >"$tools_log" 2>&1 &
tools=$!
./scripts/build-plugins.sh
cargo test -p etcd-inspector --no-run "$@"
if ! wait "$tools"; then
  cat "$tools_log" >&2
  exit 1
fi
cargo test -p etcd-inspector "$@"
cargo test -p etcd-inspector-sdk -p healthy -p alarm -p consistency -p request -p compaction -p latency -p quota -p membership -p certificates -p leases -p db-quota "$@"
# The plugin template builds out of the box, passes its test and is accepted.
template=templates/plugin/Cargo.toml
cargo test --quiet --manifest-path "$template"
cargo build --quiet --manifest-path "$template" --release --target wasm32-wasip2
cargo run --quiet -p etcd-inspector -- plugin check "${CARGO_TARGET_DIR:-templates/plugin/target}/wasm32-wasip2/release/my_inspection.wasm"
# The SDK stands alone: packaged as it would be published, unpacked in an
# empty directory outside the workspace, the template built against it.
outside="$(mktemp -d)"
trap 'rm -rf "$outside"' EXIT
cargo package --quiet --no-verify --allow-dirty -p etcd-inspector-sdk
sdk_version="$(sed -n 's/^version = "\(.*\)"/\1/p' sdk/Cargo.toml | head -1)"
tar -xzf "${CARGO_TARGET_DIR:-target}/package/etcd-inspector-sdk-$sdk_version.crate" -C "$outside"
cp -r templates/plugin "$outside/plugin"
rm -rf "$outside/plugin/target"
sed -i "s|^etcd-inspector-sdk = { path = .*|etcd-inspector-sdk = { path = \"../etcd-inspector-sdk-$sdk_version\" }|" "$outside/plugin/Cargo.toml"
cargo test --quiet --manifest-path "$outside/plugin/Cargo.toml"
cargo build --quiet --manifest-path "$outside/plugin/Cargo.toml" --release --target wasm32-wasip2
cargo run --quiet -p etcd-inspector -- plugin check "${CARGO_TARGET_DIR:-$outside/plugin/target}/wasm32-wasip2/release/my_inspection.wasm"
# And as a git dependency on this repository (how a plugin pins the SDK of
# a release tag before the crate is on crates.io): the committed HEAD.
git_dep="$outside/git-plugin"
cp -r templates/plugin "$git_dep"
rm -rf "$git_dep/target"
sed -i "s|^etcd-inspector-sdk = { path = .*|etcd-inspector-sdk = { git = \"file://$PWD\", rev = \"$(git rev-parse HEAD)\" }|" "$git_dep/Cargo.toml"
CARGO_NET_GIT_FETCH_WITH_CLI=true cargo test --quiet --manifest-path "$git_dep/Cargo.toml"
