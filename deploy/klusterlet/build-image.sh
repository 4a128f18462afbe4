#!/usr/bin/env bash
# Builds the klusterlet's container image with buildah (daemonless, from Debian's
# packages), from a klusterlet binary and the shared libraries `ldd` says it needs, on the
# Containerfile beside this script. Then runs `klusterlet --version` inside the image to
# prove it is complete. Needs root (or a user with subuids) and buildah.
#
#   deploy/klusterlet/build-image.sh [--binary PATH] [--tag NAME] [--oci-archive FILE] [--keep]
#
#   --binary       the klusterlet to package [default: cargo build --release, then
#                  $CARGO_TARGET_DIR/release/klusterlet]
#   --tag          the image name [default: fleethub/klusterlet:<version of the binary>]
#   --oci-archive  also write the image to this OCI archive (to load or push elsewhere)
#   --keep         keep the image in buildah's local storage (default: removed after the
#                  check, so repeated runs do not fill the disk)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
binary=""
tag=""
archive=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --oci-archive) archive="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v buildah >/dev/null || {
  echo "build-image.sh: buildah is not installed (Debian: apt-get install buildah crun)" >&2
  exit 1
}
if [ -z "$binary" ]; then
  target="${CARGO_TARGET_DIR:-$repo/target}"
  echo "build-image.sh: cargo build --release --bin klusterlet" >&2
  cargo build --release --bin klusterlet --manifest-path "$repo/Cargo.toml" >&2
  binary="$target/release/klusterlet"
fi
[ -x "$binary" ] || { echo "build-image.sh: no klusterlet binary at $binary" >&2; exit 1; }
version="$("$binary" --version | awk '{print $2}')"
tag="${tag:-fleethub/klusterlet:$version}"

ctx="$(mktemp -d "${TMPDIR:-/tmp}/klusterlet-image.XXXXXX")"
container=""
# vfs: works as root without overlay support in the kernel or fuse-overlayfs.
bh() { buildah --storage-driver vfs "$@"; }
cleanup() {
  [ -n "$container" ] && bh rm "$container" >/dev/null 2>&1 || true
  [ "$keep" -eq 1 ] || bh rmi "$tag" >/dev/null 2>&1 || true
  rm -rf "$ctx"
}
trap cleanup EXIT

mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/var/lib/klusterlet" "$ctx/rootfs/tmp"
chmod 1777 "$ctx/rootfs/tmp"
cp "$binary" "$ctx/rootfs/usr/local/bin/klusterlet"
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp "$here/Containerfile" "$ctx/Containerfile"

echo "build-image.sh: buildah bud -t $tag ($(du -sh "$ctx/rootfs" | cut -f1) of files)" >&2
bh bud --quiet -f "$ctx/Containerfile" -t "$tag" "$ctx" >/dev/null
container="$(bh from --quiet "$tag")"
ran="$(bh run --isolation chroot "$container" -- /usr/local/bin/klusterlet --version)"
if [ "$ran" != "klusterlet $version" ]; then
  echo "build-image.sh: the image's klusterlet answered '$ran', expected 'klusterlet $version'" >&2
  exit 1
fi
if [ -n "$archive" ]; then
  bh push --quiet "$tag" "oci-archive:$archive:$tag"
  echo "build-image.sh: wrote $archive" >&2
fi
echo "build-image.sh: $tag built; inside it: $ran" >&2
echo "$tag"
