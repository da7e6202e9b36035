#!/usr/bin/env bash
# Builds a flashable voxkeep SD-card image from Debian packages alone (no Raspberry Pi archive):
# mmdebstrap makes the root, hw/install.sh installs voxkeep in it, then the two partitions the Pi
# firmware needs (FAT boot, ext4 root, MBR label) are made from directories, without loop devices.
#
#   sudo hw/image/build.sh [--arch arm64|amd64] [--suite trixie|bookworm] [--out DIR] [--no-compress]
#
# arm64 (default): Raspberry Pi 3, 4, Zero 2 W (and Pi 5 as far as Debian's kernel goes; see
# hw/README.md), cross-built on x86 through qemu-user-static and binfmt_misc.
# amd64: the same system for a PC or a VM (hw/vm-check.sh boots it under KVM).
# Downloaded packages are kept in $CACHE (default /var/cache/voxkeep-image) for the next build.
# Output in --out (default build/image/): voxkeep-SUITE-ARCH.img[.xz], and the root tree
# rootfs-SUITE-ARCH/ that hw/check-arm64.sh tests in.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"
# shellcheck source=hw/lib.sh
. "$SRC/hw/lib.sh"
# shellcheck source=hw/image/layout.sh
. "$HERE/layout.sh"

ARCH=arm64
SUITE=trixie
OUT="$SRC/build/image"
COMPRESS=1
CACHE="${CACHE:-/var/cache/voxkeep-image}"
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH="${2:-}"; shift 2 ;;
        --suite) SUITE="${2:-}"; shift 2 ;;
        --out) OUT="${2:-}"; shift 2 ;;
        --no-compress) COMPRESS=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option '$1'; use --arch, --suite, --out or --no-compress" ;;
    esac
done
case "$ARCH" in
    arm64) KERNEL=linux-image-arm64; BOARD=(raspi-firmware firmware-brcm80211 wpasupplicant) ;;
    amd64) KERNEL=linux-image-amd64; BOARD=() ;;
    *) die "--arch $ARCH: the image is built for arm64 (Raspberry Pi) or amd64 (PC, VM)" ;;
esac
case "$SUITE" in bookworm|trixie) ;; *) die "--suite $SUITE: use trixie (Debian 13) or bookworm (Debian 12)" ;; esac
[ "$(id -u)" = 0 ] || die "building an image needs root (mmdebstrap, chroot); run it with sudo"
for tool in mmdebstrap mke2fs mkfs.vfat mcopy sfdisk git; do
    command -v "$tool" >/dev/null || die "$tool is missing; apt-get install mmdebstrap e2fsprogs dosfstools mtools fdisk git"
done

if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
    # Foreign binaries in the chroot run through qemu-user, registered with binfmt_misc.
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "cannot mount binfmt_misc; run: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 2>/dev/null || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
        || die "arm64 binaries cannot run here; apt-get install qemu-user-static binfmt-support"
fi

MIRROR_URI="$(debian_mirror)"
[ -n "$MIRROR_URI" ] || die "no Debian archive configured in /etc/apt; set MIRROR=<archive URI>"
SECURITY_URI="${SECURITY_MIRROR:-${MIRROR_URI}-security}"
COMPONENTS="main non-free-firmware"   # non-free-firmware: the Pi's Wi-Fi firmware

NAME="voxkeep-$SUITE-$ARCH"
ROOTFS="$OUT/rootfs-$SUITE-$ARCH"
APT_CACHE="$CACHE/apt-$SUITE-$ARCH"
mkdir -p "$OUT" "$APT_CACHE"
WORK="$(mktemp -d "$OUT/.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)

# The voxkeep source of this checkout, uncommitted changes to tracked files included; the image
# records which commit it was built from.
commit="$(git -C "$SRC" stash create 2>/dev/null || true)"
version="$(git -C "$SRC" describe --always --dirty 2>/dev/null || echo unknown)"
git -C "$SRC" archive --format=tar --prefix=voxkeep/ -o "$WORK/voxkeep.tar" "${commit:-HEAD}"

PACKAGES=(
    systemd-sysv udev kmod dbus systemd-timesyncd initramfs-tools "$KERNEL" "${BOARD[@]}"
    openssh-server sudo nano less iproute2 ca-certificates
    cloud-guest-utils fdisk e2fsprogs dosfstools   # first boot grows the root partition to the card
)
say "building $NAME from $MIRROR_URI ($version); packages cached in $APT_CACHE"
# An interrupted build can leave /dev or /proc mounted in the old root: never delete through them.
if findmnt -rn -o TARGET | grep -q "^$ROOTFS/"; then
    die "something is still mounted under $ROOTFS (an interrupted build?); see findmnt and umount it first"
fi
rm -rf "$ROOTFS"
# The hooks' "$1" (the root) is expanded by mmdebstrap, hence the single quotes.
# shellcheck disable=SC2016
# --skip=download/empty keeps the downloaded .debs for sync-out (before customizing, in case it fails,
# and after, with what install.sh added); the last hook removes them from the image.
nice -n 10 mmdebstrap --mode=root --arch="$ARCH" --variant=minbase --skip=download/empty \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --aptopt='Acquire::Retries "3"' \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives "$1"/boot/firmware' \
    --setup-hook="sync-in '$APT_CACHE' /var/cache/apt/archives" \
    --customize-hook="sync-out /var/cache/apt/archives '$APT_CACHE'" \
    --customize-hook="copy-in '$WORK/voxkeep.tar' /tmp" \
    --customize-hook="'$HERE/customize.sh' \"\$1\" '$ARCH' '$version'" \
    --customize-hook="sync-out /var/cache/apt/archives '$APT_CACHE'" \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/tmp/voxkeep.tar' \
    "$SUITE" "$ROOTFS" \
    "deb $MIRROR_URI $SUITE $COMPONENTS" \
    "deb $MIRROR_URI $SUITE-updates $COMPONENTS" \
    "deb $SECURITY_URI $SUITE-security $COMPONENTS"

say "making the partitions"
make_image "$ROOTFS" "$WORK/$NAME.img"
mv "$WORK/$NAME.img" "$OUT/$NAME.img"
if [ "$COMPRESS" = 1 ]; then
    say "compressing"
    nice -n 10 xz -T0 -6 -f -k "$OUT/$NAME.img"
fi
elapsed=$(( $(date +%s) - started ))
say "built $OUT/$NAME.img ($(du -h --apparent-size "$OUT/$NAME.img" | cut -f1)$( [ "$COMPRESS" = 0 ] || echo ", $(du -h "$OUT/$NAME.img.xz" | cut -f1) as .xz")) in $((elapsed / 60)) min $((elapsed % 60)) s"
