#!/usr/bin/env bash
# Boots the amd64 flavour of the image (hw/image/build.sh --arch amd64) headless under KVM with a
# serial console, and checks the service under a real systemd (hw/image/vm/guest-check.sh, added to
# a copy of the image): READY=1 as user voxkeep with the sandbox in force (systemd-analyze security
# at most 2.0), `voxkeep status`/`mute` for a member of group voxkeep, mute across a reboot (read
# back from the LED log), the watchdog restarting a stalled loop, a WAV source on a VM without a
# sound card and what doctor says about it, the first-boot owner key. No network; a few minutes
# under KVM, half an hour with an emulated CPU.
#
#   sudo hw/image/vm-check.sh [IMAGE]     (default build/image/voxkeep-trixie-amd64.img)
#
# The console goes to build/vm-check/serial.log; the check's lines to build/vm-check/result.txt.
# Exit status 0 only if every check passed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"
# shellcheck source=hw/lib.sh
. "$SRC/hw/lib.sh"
# shellcheck source=hw/image/layout.sh
. "$HERE/layout.sh"

IMAGE="${1:-$SRC/build/image/voxkeep-trixie-amd64.img}"
WORK="$SRC/build/vm-check"
[ -f "$IMAGE" ] || die "$IMAGE does not exist; build it first: sudo hw/image/build.sh --arch amd64"
[ "$(id -u)" = 0 ] || die "the check mounts a copy of the image to add itself; run it with sudo"
for tool in qemu-system-x86_64 mcopy age-keygen python3; do
    command -v "$tool" >/dev/null || die "$tool is missing; apt-get install qemu-system-x86 mtools age python3"
done
# KVM where it can run a stock Debian kernel. A PVM host (kvm_pvm, nested virtualisation without
# hardware support) runs only kernels built for it: Debian's stops in its decompressor there, so the
# CPU is emulated instead (TCG, several times slower; the check allows for it). VM_ACCEL overrides.
ACCEL="${VM_ACCEL:-kvm}"
if [ -z "${VM_ACCEL:-}" ] && { [ ! -w /dev/kvm ] || [ -d /sys/module/kvm_pvm ]; }; then
    ACCEL=tcg
    say "no usable KVM here ($( [ -d /sys/module/kvm_pvm ] && echo "a PVM host" || echo "no /dev/kvm")): emulating the CPU"
fi

rm -rf "$WORK"
mkdir -p "$WORK/mnt"
cleanup() { mountpoint -q "$WORK/mnt" && umount "$WORK/mnt"; true; }
trap cleanup EXIT

say "copying $IMAGE (the image itself is not changed)"
cp --sparse=always "$IMAGE" "$WORK/disk.img"
truncate -s +1G "$WORK/disk.img"   # a bigger "card": the first boot grows the root into it
boot="$WORK/disk.img@@${BOOT_START_MIB}M"
for f in vmlinuz initrd.img cmdline.txt; do mcopy -n -i "$boot" "::/$f" "$WORK/$f"; done

# The owner's key, as a maker puts it on the boot partition before the first boot.
age-keygen -o "$WORK/owner.key" 2>/dev/null
age-keygen -y "$WORK/owner.key" > "$WORK/voxkeep-owner.txt"
mcopy -i "$boot" "$WORK/voxkeep-owner.txt" ::/voxkeep-owner.txt

mount -o loop,offset=$(( (BOOT_START_MIB + BOOT_SIZE_MIB) * 1024 * 1024 )) "$WORK/disk.img" "$WORK/mnt"
install -m 0755 "$HERE/vm/guest-check.sh" "$WORK/mnt/usr/local/sbin/voxkeep-vm-check"
cat > "$WORK/mnt/etc/systemd/system/voxkeep-vm-check.service" <<'UNIT'
[Unit]
Description=voxkeep VM check (hw/image/vm-check.sh)
After=voxkeep.service voxkeep-firstboot.service voxkeep-image-setup.service

[Service]
Type=simple
ExecStart=/usr/local/sbin/voxkeep-vm-check
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/voxkeep-vm-check.service "$WORK/mnt/etc/systemd/system/multi-user.target.wants/"
if [ "$ACCEL" = tcg ]; then
    # An emulated CPU starts the service several times slower than a Pi: give the start more time.
    # Nothing else of the unit (sandbox, watchdog) is changed.
    install -d "$WORK/mnt/etc/systemd/system/voxkeep.service.d"
    printf '[Service]\nTimeoutStartSec=900\n' > "$WORK/mnt/etc/systemd/system/voxkeep.service.d/vm-check-slow-cpu.conf"
fi
# Twenty minutes of quiet room noise for the WAV source (stdlib only: no numpy needed here).
install -d -m 0755 "$WORK/mnt/srv/vm-check"
python3 - "$WORK/mnt/srv/vm-check/room.wav" <<'PY'
import array, random, sys, wave
rng = random.Random(7)
second = array.array("h", (int(rng.gauss(0, 120)) for _ in range(16000))).tobytes()
with wave.open(sys.argv[1], "wb") as out:
    out.setnchannels(1); out.setsampwidth(2); out.setframerate(16000)
    for _ in range(20 * 60):
        out.writeframes(second)
PY
chmod 0644 "$WORK/mnt/srv/vm-check/room.wav"
umount "$WORK/mnt"

say "booting the VM ($ACCEL, serial console in $WORK/serial.log); boot 1, a reboot, boot 2"
started=$(date +%s)
set +e
nice -n 10 timeout 3600 qemu-system-x86_64 -machine q35,accel="$ACCEL" -cpu max -smp 2 -m 1536 \
    -display none -monitor none -serial "file:$WORK/serial.log" -nic none \
    -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" -append "$(cat "$WORK/cmdline.txt")" \
    -drive "file=$WORK/disk.img,format=raw,if=virtio"
qemu_status=$?
set -e
tr -d '\r' < "$WORK/serial.log" | sed -n 's/^.*vm-check: //p' > "$WORK/result.txt"
cat "$WORK/result.txt"
passed=$(grep -c '^PASS: ' "$WORK/result.txt" || true)
failed=$(grep -c '^FAIL: ' "$WORK/result.txt" || true)
say "VM check: $passed passed, $failed failed, $(( $(date +%s) - started )) s (qemu exit $qemu_status)"
[ "$qemu_status" = 0 ] && [ "$failed" = 0 ] && grep -q '^done: 0 failed$' "$WORK/result.txt"
