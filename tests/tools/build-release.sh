#!/usr/bin/env bash
# Builds the `hub` binary of an earlier release (a git tag of this repository, or the
# commit recorded for it below) into
# ~/.cache/fleethub/releases/<tag>/bin/hub when missing, and prints its path. The rolling
# upgrade test (tests/tests/rolling_upgrade.rs) runs it beside the current hub.
#
#   bash tests/tools/build-release.sh            # the previous release, v0.4.0
#   bash tests/tools/build-release.sh v0.4.0
#
# The tag's tree is exported with `git archive` (no worktree registered, nothing changed in
# this checkout) to releases/<tag>/src and built with this checkout's CARGO_TARGET_DIR, so
# the compiled dependencies (same Cargo.lock) are reused and only the workspace's own
# crates compile: a few minutes once, nothing afterwards. That build replaces
# $CARGO_TARGET_DIR/debug/hub with the old binary, so the current one is built (relinked)
# again at the end.
set -euo pipefail

tag="${1:-v0.4.0}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/fleethub/releases/$tag"
bin="$dir/bin/hub"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleethub/target}"
# Run from a test (testkit::releases), the environment `cargo test` set would change the
# fingerprints of build scripts that watch it (ring's) and rebuild half the dependencies.
unset CARGO_MANIFEST_DIR CARGO_MANIFEST_PATH CARGO_MANIFEST_LINKS OUT_DIR
for var in $(compgen -e | grep '^CARGO_PKG_' || true); do unset "$var"; done

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
# Each release's commit, for a clone that came without tags (a checkout made from the
# branch alone has the commits but not the tags that name them).
declare -A released=([v0.4.0]=54e14962f4660f3f4cc6b30e28de73c5407d8c66)
commit="$(git -C "$repo" rev-parse --verify --quiet "$tag^{commit}")" ||
  commit="$(git -C "$repo" rev-parse --verify --quiet "${released[$tag]:-none}^{commit}")" || {
  echo "build-release: no tag $tag in $repo, nor its known commit (git fetch --tags)" >&2
  exit 1
}
echo "build-release: building hub $tag ($commit) into $dir (a few minutes the first time)" >&2
rm -rf "$dir/src"
mkdir -p "$dir/src" "$dir/bin"
git -C "$repo" archive --format=tar "$commit" | tar -x -C "$dir/src"
cargo build --quiet --locked --bin hub --manifest-path "$dir/src/Cargo.toml" >&2
install -m 0755 "$CARGO_TARGET_DIR/debug/hub" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$commit" >"$dir/commit"
# Put this checkout's hub back where its tests look for it.
cargo build --quiet --bin hub --manifest-path "$repo/Cargo.toml" >&2
echo "$bin"
