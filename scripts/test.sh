#!/usr/bin/env bash
# The whole test suite: set-up, plugins (wasm32-wasip2), then every test
# (unit tests and the end-to-end tests against real etcd processes).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build-plugins.sh
cargo test --workspace --exclude healthy --exclude alarm --exclude consistency --exclude spin --exclude membomb --exclude panicker --exclude noop "$@"
