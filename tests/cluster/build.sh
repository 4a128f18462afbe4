#!/usr/bin/env bash
# Builds the real test-cluster binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, kwok) from their Go modules into a versioned cache directory,
# only when they are missing. Prints the directory on stdout.
#
#   tests/cluster/build.sh            # build if missing, print the bin dir
#   FLEETHUB_K8S_REBUILD=1 tests/cluster/build.sh   # force a rebuild
#
# The directory also holds `.stamp`, a hash of go.mod, go.sum and the build recipe below:
# when any of them changes the binaries are rebuilt (a relink only, when Go's build cache
# is warm). A lock file serialises concurrent callers, so parallel test runs never build
# twice or read a half-written directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(awk '$1=="k8s.io/kubernetes" {print $2; exit}' "$here/go/go.mod")"
kwok_version="$(awk '$1=="sigs.k8s.io/kwok" {print $2; exit}' "$here/go/go.mod")"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fleethub/k8s/${version}-kwok-${kwok_version}"
bins=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)

# `go build` leaves the version variables at "v0.0.0-master+$Format:%H$", which kubectl
# and other clients cannot parse; set them as Kubernetes' own build does
# (hack/lib/version.sh). A fixed build date keeps the binaries reproducible.
major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
stamp="$(cat "$here/go/go.mod" "$here/go/go.sum" <(echo "ldflags=$ldflags bins=${bins[*]}") |
  sha256sum | cut -d' ' -f1)"

up_to_date() {
  for b in "${bins[@]}"; do
    [ -x "$cache/$b" ] || return 1
  done
  [ "$(cat "$cache/.stamp" 2>/dev/null)" = "$stamp" ]
}

if up_to_date && [ -z "${FLEETHUB_K8S_REBUILD:-}" ]; then
  echo "$cache"
  exit 0
fi

mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9
# Another caller may have finished the build while we waited for the lock.
if up_to_date && [ -z "${FLEETHUB_K8S_REBUILD:-}" ]; then
  echo "$cache"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: the Go toolchain is needed to build the test cluster" >&2; exit 1; }
rm -rf "$cache.tmp"
mkdir -p "$cache.tmp"
start=$(date +%s)
echo "build.sh: building Kubernetes $version, etcd and kwok $kwok_version into $cache (a cold build takes ~8 min on 2 cores)" >&2
(
  cd "$here/go"
  # The machine's Go may be newer than go.mod asks for; never download another toolchain.
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  go build -trimpath -ldflags="$ldflags" -o "$cache.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    sigs.k8s.io/kwok/cmd/kwok
  # etcd's main package is its server module root; name the binary explicitly.
  go build -trimpath -ldflags='-s -w' -o "$cache.tmp/etcd" go.etcd.io/etcd/server/v3
) >&2
echo "$stamp" >"$cache.tmp/.stamp"
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "build.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$cache"
