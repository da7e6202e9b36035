# shellcheck shell=bash
# The SD card's partitions, as the Raspberry Pi firmware needs them: an MBR (DOS) label (the Pi 3's
# boot ROM reads nothing else), a FAT32 first partition with the firmware, config.txt, the kernel
# and its device trees, then the ext4 root. Labels as on Raspberry Pi OS (bootfs, rootfs), so the boot
# partition shows up as "bootfs" on the maker's computer. Sourced by build.sh; tests/test_deploy.py
# builds a small image with it and checks the layout.

BOOT_START_MIB=4      # erase-block aligned, room before it for the MBR
BOOT_SIZE_MIB=508     # the root starts at 512 MiB: two kernels and initrds fit during an upgrade
BOOT_LABEL=bootfs
ROOT_LABEL=rootfs
ROOT_HEADROOM_MIB=256 # free space in the root before first boot grows it to the whole card

# make_image ROOTFS IMAGE: IMAGE gets ROOTFS/boot/firmware as its FAT partition and the rest of
# ROOTFS as ext4 (built from the directory with mke2fs -d, so no loop device or mount is needed).
make_image() {
    local rootfs="$1" image="$2" work used_mib root_mib boot_img root_img
    work="$(mktemp -d "$(dirname "$image")/.parts.XXXXXX")"
    boot_img="$work/boot.img"
    root_img="$work/root.img"

    # Lower-case "bootfs" is what Raspberry Pi OS uses too; mkfs.fat's warning about it is dropped.
    mkfs.vfat -F 32 -n "$BOOT_LABEL" -C "$boot_img" $((BOOT_SIZE_MIB * 1024)) 2>&1 >/dev/null | { grep -v lowercase >&2 || true; }
    if [ -n "$(ls -A "$rootfs/boot/firmware" 2>/dev/null)" ]; then
        mcopy -s -p -m -i "$boot_img" "$rootfs"/boot/firmware/* ::/
    fi

    # The root without the boot partition's files (they live on the FAT partition, mounted over
    # /boot/firmware): set them aside while mke2fs copies the tree.
    mv "$rootfs/boot/firmware" "$work/firmware"
    mkdir -m 0755 "$rootfs/boot/firmware"
    used_mib=$(du -s -m -x "$rootfs" | cut -f1)
    root_mib=$(( used_mib + used_mib / 5 + ROOT_HEADROOM_MIB ))
    mke2fs -q -t ext4 -L "$ROOT_LABEL" -E root_owner=0:0 -d "$rootfs" "$root_img" "${root_mib}M" >/dev/null
    rmdir "$rootfs/boot/firmware"
    mv "$work/firmware" "$rootfs/boot/firmware"

    truncate -s $(( (BOOT_START_MIB + BOOT_SIZE_MIB + root_mib) * 1024 * 1024 )) "$image"
    sfdisk --quiet "$image" <<SFDISK
label: dos
unit: sectors
start=$((BOOT_START_MIB * 2048)), size=$((BOOT_SIZE_MIB * 2048)), type=c, bootable
start=$(((BOOT_START_MIB + BOOT_SIZE_MIB) * 2048)), type=83
SFDISK
    dd if="$boot_img" of="$image" bs=1M seek="$BOOT_START_MIB" conv=notrunc,sparse status=none
    dd if="$root_img" of="$image" bs=1M seek=$((BOOT_START_MIB + BOOT_SIZE_MIB)) conv=notrunc,sparse status=none
    rm -rf "$work"
}
