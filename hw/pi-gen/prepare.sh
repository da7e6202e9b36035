#!/usr/bin/env bash
# Put the voxkeep stage into a pi-gen checkout (bookworm branch), with the voxkeep source of one
# git commit packed inside it, so the image is built from exactly that commit.
#
#   hw/pi-gen/prepare.sh PI_GEN_DIR [COMMIT]     (COMMIT defaults to HEAD)
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 PI_GEN_DIR [COMMIT]" >&2; exit 2; }
PI_GEN="$1"
COMMIT="${2:-HEAD}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ -f "$PI_GEN/build.sh" ] || { echo "error: $PI_GEN is not a pi-gen checkout; git clone -b bookworm https://github.com/RPi-Distro/pi-gen" >&2; exit 1; }

rm -rf "$PI_GEN/stage-voxkeep"
cp -r "$HERE/stage-voxkeep" "$PI_GEN/stage-voxkeep"
mkdir -p "$PI_GEN/stage-voxkeep/00-install/files"
git -C "$HERE/../.." archive --format=tar.gz --prefix=voxkeep/ -o "$PI_GEN/stage-voxkeep/00-install/files/voxkeep.tar.gz" "$COMMIT"
cp "$HERE/config" "$PI_GEN/config"
# Only the voxkeep stage exports an image; stage2 would otherwise export a plain Lite image too.
touch "$PI_GEN/stage2/SKIP_IMAGES"
echo "ready: cd $PI_GEN && ./build-docker.sh   (image in $PI_GEN/deploy/)"
