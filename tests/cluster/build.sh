#!/usr/bin/env bash
# Builds the real test-cluster binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, kwok) from their Go modules into a versioned cache directory,
# only when they are missing. Prints the directory on stdout.
#
#   tests/cluster/build.sh            # build if missing, print the bin dir
#   FLEETHUB_K8S_REBUILD=1 tests/cluster/build.sh   # force a rebuild
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(awk '$1=="k8s.io/kubernetes" {print $2; exit}' "$here/go/go.mod")"
kwok_version="$(awk '$1=="sigs.k8s.io/kwok" {print $2; exit}' "$here/go/go.mod")"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fleethub/k8s/${version}-kwok-${kwok_version}"
bins=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)

complete=1
for b in "${bins[@]}"; do
  [ -x "$cache/$b" ] || complete=0
done
if [ "$complete" = 1 ] && [ -z "${FLEETHUB_K8S_REBUILD:-}" ]; then
  echo "$cache"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: the Go toolchain is needed to build the test cluster" >&2; exit 1; }
mkdir -p "$cache.tmp"
start=$(date +%s)
echo "build.sh: building Kubernetes $version, etcd and kwok $kwok_version into $cache (first run only; ~15-25 min on 2 cores)" >&2
(
  cd "$here/go"
  # The machine's Go may be newer than go.mod asks for; never download another toolchain.
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  go build -trimpath -ldflags='-s -w' -o "$cache.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    sigs.k8s.io/kwok/cmd/kwok
  # etcd's main package is its server module root; name the binary explicitly.
  go build -trimpath -ldflags='-s -w' -o "$cache.tmp/etcd" go.etcd.io/etcd/server/v3
) >&2
rm -rf "$cache"
mv "$cache.tmp" "$cache"
echo "build.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$cache"
