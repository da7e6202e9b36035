#!/bin/bash -e
# pi-gen: install voxkeep inside the image with the same script makers run on a Pi
# (hw/install.sh), from the source packed by hw/pi-gen/prepare.sh. Nothing runs in a chroot, so the
# service is only enabled; it starts on first boot.
SRC_IN_IMAGE=/tmp/voxkeep-src
rm -rf "${ROOTFS_DIR}${SRC_IN_IMAGE}"
mkdir -p "${ROOTFS_DIR}${SRC_IN_IMAGE}"
tar -xzf files/voxkeep.tar.gz -C "${ROOTFS_DIR}${SRC_IN_IMAGE}" --strip-components=1

on_chroot <<CHROOT
apt-get update
${SRC_IN_IMAGE}/hw/install.sh --no-start
CHROOT

rm -rf "${ROOTFS_DIR}${SRC_IN_IMAGE}"
