#!/usr/bin/env bash
# Installs what building and testing need on Debian 12 with rustup:
# Debian's etcd 3.4 (server and etcdctl; the oldest row of the test matrix
# and what `make run` starts), protoc (for the etcd client crate),
# Prometheus, Chromium and an OCI registry (tests) and the wasm32-wasip2 Rust target. Safe to run
# again: it skips what is present.
# The Go-built test tools (etcd 3.5-3.7, kube-apiserver, kubectl) are
# tests/tools/build.sh's, which `make test` calls.
set -euo pipefail
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# promtool and the server, for the alerting rules' tests; Chromium for the
# status page's.
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
# A real OCI registry (distribution 2.8) for the plugin-from-registry tests.
command -v docker-registry >/dev/null || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  # Where rustup cannot download, the workplace may provide the same
  # standard library for this rustc beside the project.
  fallback="$(dirname "$0")/../../shared/toolchains/install-wasm32-wasip2.sh"
  if ! rustup target add wasm32-wasip2; then
    [ -f "$fallback" ] || { echo "setup.sh: cannot install wasm32-wasip2" >&2; exit 1; }
    bash "$fallback"
  fi
fi
