#!/usr/bin/env bash
# Builds the Go-built test tools named by the modules beside this script:
# etcd and etcdctl 3.5, 3.6 and 3.7, kube-apiserver and kubectl, helm. Each
# binary lands in $TOOLS_BIN (default ~/.cache/etcd-inspector/bin) under
# its name and version, e.g. etcd-3.6.16, so a warm run builds nothing and
# a version bump in a go.mod builds only what changed. The versions live in
# the go.mod files only; this script reads them from there.
#
# Usage: build.sh [MODULE...]   (default: every module)
# Prints one line per tool: MODULE/NAME=PATH, e.g. etcd-3.6/etcd=...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${TOOLS_BIN:-$HOME/.cache/etcd-inspector/bin}"
mkdir -p "$bin"
command -v go >/dev/null || { echo "build.sh: Go 1.26 or newer is needed to build the test tools" >&2; exit 1; }
# One build at a time: a second caller (CI starts one early, make test
# another) waits, then finds the binaries there.
exec 9>"$bin/.build.lock"
flock 9

# build MODULE_DIR NAME PACKAGE VERSION_OF [LDFLAGS]
build() {
  local dir="$1" name="$2" pkg="$3" of="$4" ldflags="${5:-}" version out
  version="$(cd "$here/$dir" && go list -m -f '{{.Version}}' "$of")"
  version="${version#v}"
  out="$bin/$name-$version"
  if [ ! -x "$out" ]; then
    echo "building $name $version" >&2
    (cd "$here/$dir" && go build -trimpath -ldflags="-s ${ldflags//@V@/$version}" -o "$out.tmp" "$pkg")
    mv "$out.tmp" "$out"
  fi
  echo "$dir/$name=$out"
}

modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(etcd-3.5 etcd-3.6 etcd-3.7 kubernetes helm)
for m in "${modules[@]}"; do
  case "$m" in
    etcd-*)
      build "$m" etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3
      build "$m" etcdctl go.etcd.io/etcd/etcdctl/v3 go.etcd.io/etcd/server/v3
      ;;
    kubernetes)
      # What Kubernetes' own build stamps in (hack/lib/version.sh), so both
      # report v1.x.y instead of v0.0.0-master.
      kv=""
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        kv+=" -X $p.gitVersion=v@V@ -X $p.gitTreeState=clean"
      done
      build "$m" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes "$kv"
      build "$m" kubectl k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes "$kv"
      ;;
    helm)
      build "$m" helm helm.sh/helm/v3/cmd/helm helm.sh/helm/v3 \
        "-X helm.sh/helm/v3/internal/version.version=v@V@"
      ;;
    *) echo "build.sh: unknown module $m" >&2; exit 2 ;;
  esac
done
