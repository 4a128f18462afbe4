#!/usr/bin/env bash
# Builds Prometheus' promtool (pinned) into ~/.cache/fleethub/tools/ when missing, with the
# machine's Go from the Go module proxy, and prints its path. tests/tests/install.rs checks
# deploy/prometheus/*.yaml with it.
#
#   bash tests/tools/build-promtool.sh
set -euo pipefail

version="v0.316.0" # github.com/prometheus/prometheus: Prometheus 3.x's module version
dir="${XDG_CACHE_HOME:-$HOME/.cache}/fleethub/tools"
bin="$dir/promtool"
stamp="$dir/.promtool-$version"

if [ -x "$bin" ] && [ -e "$stamp" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
echo "build-promtool: building promtool $version (a few minutes the first time)" >&2
GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$dir" \
  go install "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
touch "$stamp"
echo "$bin"
