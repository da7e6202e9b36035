#!/bin/bash -e
# pi-gen: the first-boot step that registers the owner's public key (see files/voxkeep-firstboot).
install -D -m 0755 files/voxkeep-firstboot "${ROOTFS_DIR}/usr/local/sbin/voxkeep-firstboot"
install -D -m 0644 files/voxkeep-firstboot.service "${ROOTFS_DIR}/etc/systemd/system/voxkeep-firstboot.service"

on_chroot <<CHROOT
systemctl enable voxkeep-firstboot.service
CHROOT
