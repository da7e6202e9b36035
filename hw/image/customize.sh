#!/usr/bin/env bash
# mmdebstrap customize hook of build.sh: turns the Debian root in $1 into the speaker. Runs on the
# build machine; everything that must run inside (apt, pip, systemctl) goes through chroot.
#
#   customize.sh ROOTFS ARCH VERSION
set -euo pipefail
ROOT="$1"
ARCH="$2"
VERSION="$3"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hw/image/layout.sh
. "$HERE/layout.sh"
FIRSTBOOT="$HERE/../pi-gen/stage-voxkeep/01-firstboot/files"   # the owner-key step, shared with pi-gen
# A clean environment inside: nothing of the build machine's (pip settings, proxies) leaks in.
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

echo voxkeep > "$ROOT/etc/hostname"
# A headless speaker: systemd-firstboot must not wait at the console for a locale, keymap or time zone.
echo LANG=C.UTF-8 > "$ROOT/etc/locale.conf"
ln -sf /usr/share/zoneinfo/Etc/UTC "$ROOT/etc/localtime"
in_root systemctl mask systemd-firstboot.service
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvoxkeep\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
cat > "$ROOT/etc/fstab" <<FSTAB
# Made by voxkeep's hw/image/build.sh. The boot partition holds the Pi firmware, config.txt, and
# the owner's key file before the first boot.
LABEL=$ROOT_LABEL  /               ext4  rw,noatime,errors=remount-ro  0 1
LABEL=$BOOT_LABEL  /boot/firmware  vfat  rw,noatime,umask=0077,shortname=mixed  0 2
FSTAB

# Network: DHCP on Ethernet and (once configured from the boot partition) Wi-Fi, with systemd-networkd.
install -D -m 0644 "$HERE/files/20-voxkeep-dhcp.network" "$ROOT/etc/systemd/network/20-voxkeep-dhcp.network"
in_root systemctl enable systemd-networkd.service

# voxkeep itself, by the same script a maker runs on a Pi. Nothing runs in a chroot: --no-start.
rm -rf "$ROOT/tmp/voxkeep"
tar -xf "$ROOT/tmp/voxkeep.tar" -C "$ROOT/tmp"
in_root apt-get update -qq
# Downloads during the build (pip, the models) trust what the build machine trusts: a network may
# inspect TLS with its own CA. That bundle is used from /tmp and is not left in the image.
cp "${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$ROOT/tmp/build-ca.crt"
in_root env PIP_CERT=/tmp/build-ca.crt SSL_CERT_FILE=/tmp/build-ca.crt /tmp/voxkeep/hw/install.sh --no-start
rm -rf "$ROOT/tmp/voxkeep" "$ROOT/tmp/build-ca.crt"

# Wiring defaults: the LED and the button where hw/README.md wires them (no mute switch: an unwired
# switch pin would read as "muted", which is safe but confusing).
sed -i -e 's/^# led_pin = (unset)$/led_pin = 23/' -e 's/^# button_pin = (unset)$/button_pin = 24/' \
    "$ROOT/etc/voxkeep/config.toml"
if ! grep -q '^led_pin = 23$' "$ROOT/etc/voxkeep/config.toml" || ! grep -q '^button_pin = 24$' "$ROOT/etc/voxkeep/config.toml"; then
    echo "customize: the example config no longer has the led_pin/button_pin lines this edits" >&2
    exit 1
fi

# First boot: the owner's public key from the boot partition (the pi-gen stage's step), and the
# system's own (grow the root, SSH host keys, the maker's SSH key and Wi-Fi from the boot partition).
install -m 0755 "$FIRSTBOOT/voxkeep-firstboot" "$ROOT/usr/local/sbin/voxkeep-firstboot"
install -m 0644 "$FIRSTBOOT/voxkeep-firstboot.service" "$ROOT/etc/systemd/system/voxkeep-firstboot.service"
install -m 0755 "$HERE/files/voxkeep-image-setup" "$ROOT/usr/local/sbin/voxkeep-image-setup"
install -m 0644 "$HERE/files/voxkeep-image-setup.service" "$ROOT/etc/systemd/system/voxkeep-image-setup.service"
in_root systemctl enable voxkeep-firstboot.service voxkeep-image-setup.service
# Every card gets its own SSH host keys (voxkeep-image-setup makes them on first boot).
rm -f "$ROOT"/etc/ssh/ssh_host_*

if [ "$ARCH" = arm64 ]; then
    # raspi-firmware writes config.txt and cmdline.txt from these whenever the initrd is updated.
    cat >> "$ROOT/etc/default/raspi-firmware" <<DEFAULTS

# voxkeep image: boot the root by label (the card may be mmcblk0 or a USB disk), serial console
# on the GPIO header (ttyS1 on Pi 3/4/Zero 2 W), boot messages on HDMI.
ROOTPART="LABEL=$ROOT_LABEL"
CONSOLES="ttyS1,115200 tty0"
DEFAULTS
    in_root update-initramfs -u -k all
    grep -q "root=LABEL=$ROOT_LABEL" "$ROOT/boot/firmware/cmdline.txt" \
        || { echo "customize: raspi-firmware did not write cmdline.txt" >&2; exit 1; }
else
    # A PC or VM: the kernel, initrd and command line on the boot partition too (hw/vm-check.sh
    # boots them directly; a bootloader is out of scope for this flavour).
    cp -L "$ROOT/vmlinuz" "$ROOT/boot/firmware/vmlinuz"
    cp -L "$ROOT/initrd.img" "$ROOT/boot/firmware/initrd.img"
    echo "root=LABEL=$ROOT_LABEL rw console=ttyS0,115200 net.ifnames=0" > "$ROOT/boot/firmware/cmdline.txt"
fi

# Name resolution last: its package points /etc/resolv.conf at a stub that only works once booted,
# and pip above needed the build machine's resolver.
in_root apt-get install -y -qq --no-install-recommends systemd-resolved
in_root systemctl enable systemd-resolved.service
install -D -m 0644 "$HERE/files/voxkeep-mdns.conf" "$ROOT/etc/systemd/resolved.conf.d/voxkeep-mdns.conf"
printf 'VOXKEEP_VERSION=%s\nBUILT=%s\n' "$VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$ROOT/etc/voxkeep-image"
# (The downloaded .debs stay until build.sh has copied them to its cache, then go.)
