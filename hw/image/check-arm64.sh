#!/usr/bin/env bash
# On the Pi's architecture, without a Pi: in the cross-built arm64 root (hw/image/build.sh leaves it
# in build/image/rootfs-trixie-arm64), run through qemu-user, this checkout's fast test subset passes
# and the installed `voxkeep run --input` hears the wake word and the privacy command after it in generated
# speech. Proof that every wheel and build
# step (onnxruntime, the microWakeWord TFLite runtime, pocketsphinx, pyrage, PyAudio, lgpio) works
# on arm64. The root itself is not changed: the tests run in an overlay on top of it. A root built
# from an older commit gets this checkout's voxkeep in the overlay first, the way a maker upgrades a
# speaker (hw/install.sh run again), so the installed service checked is this checkout's.
#
#   sudo hw/image/check-arm64.sh [ROOTFS]       (TESTS="tests/test_x.py ..." picks other tests)
#
# The fast subset leaves out the tests marked slow (crash loops, fuzzing) and scene (tens of seconds of audio
# through the daemon, where 10 s take over 5 minutes emulated, or frame by frame through the wake engine and
# the openwakeword library side by side, over half an hour); the end-to-end run below stands for them. Hang guards are stretched tenfold (VOXKEEP_TEST_TIMEOUT_SCALE).
# Slow: everything is emulated (tens of minutes on two cores; the test environment's venv is kept in
# build/arm64-check/upper for the next run, FRESH=1 starts from the bare root again). Output in
# build/arm64-check/log.txt, the whole pytest output in build/arm64-check/pytest.txt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"
# shellcheck source=hw/lib.sh
. "$SRC/hw/lib.sh"

ROOTFS="${1:-$SRC/build/image/rootfs-trixie-arm64}"
WORK="$SRC/build/arm64-check"
# One test module per native part: wake engines (onnxruntime, TFLite), commands (pocketsphinx),
# vault and owner keys (pyrage), capture and microphone (soundfile, soxr, PyAudio), LED and button
# (gpiozero), MQTT (paho, a real Mosquitto), config.
TESTS="${TESTS:-tests/test_config.py tests/test_owner.py tests/test_vault.py tests/test_indicators.py tests/test_capture.py tests/test_mic.py tests/test_mqtt.py tests/test_commands.py tests/test_run.py tests/test_wake_engine.py}"
[ -x "$ROOTFS/opt/voxkeep/venv/bin/voxkeep" ] || die "$ROOTFS is not a built voxkeep root; run: sudo hw/image/build.sh --arch arm64"
[ "$(id -u)" = 0 ] || die "the check mounts an overlay and chroots; run it with sudo"
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "arm64 binaries cannot run here; apt-get install qemu-user-static binfmt-support"

MERGED="$WORK/root"
mounts=()
# shellcheck disable=SC2317  # called by the trap
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_at() { mount "$@"; mounts+=("${*: -1}"); }

for m in "$MERGED/dev/pts" "$MERGED/dev" "$MERGED/sys" "$MERGED/proc" "$MERGED"; do
    umount -l "$m" 2>/dev/null || true
done
if [ "${FRESH:-0}" = 1 ] || [ "$(cat "$WORK/lower" 2>/dev/null)" != "$ROOTFS" ]; then rm -rf "$WORK"; fi
mkdir -p "$WORK/upper" "$WORK/work" "$MERGED"
echo "$ROOTFS" > "$WORK/lower"
mount_at -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$WORK/upper,workdir=$WORK/work" "$MERGED"
mount_at -t proc proc "$MERGED/proc"
# No /sys: it would describe this x86 machine's CPUs to arm64 code, and onnxruntime's cpuinfo
# crashes (SIGSEGV at import) parsing that; without it cpuinfo falls back, as on any unknown CPU.
mount_at --bind /dev "$MERGED/dev"
mount_at -t devpts devpts "$MERGED/dev/pts"
mount_at -t tmpfs tmpfs "$MERGED/tmp"
# The image resolves names through systemd-resolved once booted; here, the build machine's resolver.
cp --remove-destination /etc/resolv.conf "$MERGED/etc/resolv.conf"
mkdir -p "$MERGED/root/voxkeep"
commit="$(git -C "$SRC" stash create 2>/dev/null || true)"
find "$MERGED/root/voxkeep" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +   # a kept venv, fresh code
git -C "$SRC" archive "${commit:-HEAD}" | tar -x -C "$MERGED/root/voxkeep"
version="$(git -C "$SRC" describe --always --dirty 2>/dev/null || echo unknown)"
built="$(sed -n 's/^VOXKEEP_VERSION=//p' "$ROOTFS/etc/voxkeep-image" 2>/dev/null)"

# Downloads trust what this machine trusts (a network may inspect TLS with its own CA), from /tmp only.
cp "${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$MERGED/tmp/build-ca.crt"
inside() {
    chroot "$MERGED" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        PIP_CERT=/tmp/build-ca.crt SSL_CERT_FILE=/tmp/build-ca.crt REQUESTS_CA_BUNDLE=/tmp/build-ca.crt \
        bash -c "cd /root/voxkeep && $1"
}
{
    set +e  # run every step and report them all
    started=$(date +%s)
    # shellcheck disable=SC2016  # expanded inside the root
    inside 'echo "arm64 root: $(uname -m), $(python3 --version), $(. /etc/os-release; echo "$PRETTY_NAME")"'
    say "setting up the test environment inside (.ci/setup: apt, a venv from PyPI, the models)"
    inside 'bash .ci/setup' 2>&1 | tail -n 5
    setup_status=${PIPESTATUS[0]}
    upgrade_status=0
    if [ "$built" != "$version" ]; then
        say "the root's voxkeep is ${built:-unknown}, this checkout $version: upgrading it as a maker would (hw/install.sh --no-start)"
        inside 'hw/install.sh --no-start' 2>&1 | tail -n 5
        upgrade_status=${PIPESTATUS[0]}
    fi
    say "fast test subset: $TESTS"
    inside "VOXKEEP_TEST_TIMEOUT_SCALE=10 timeout 7200 .venv/bin/python -m pytest -q -m 'not slow and not scene' -p no:cacheprovider $TESTS" > "$WORK/pytest.txt" 2>&1
    tests_status=$?
    tail -n 15 "$WORK/pytest.txt"
    say "the installed service's own voxkeep, on generated speech: \"hey jarvis\", then \"please don't record anymore\""
    inside '.venv/bin/python -c "
from pathlib import Path
import numpy as np
from voxkeep.testing.speech import silence, speak, write_wav
write_wav(Path(\"/tmp/request.wav\"), np.concatenate([silence(1.0), speak(\"hey jarvis\"), speak(\"please dont record anymore\"), silence(2.0)]))"
        /opt/voxkeep/venv/bin/voxkeep run --input /tmp/request.wav --models-dir /opt/voxkeep/models --state-dir /tmp/state --events - > /tmp/events.jsonl
        grep "\"type\": \"wake\"" /tmp/events.jsonl && grep "\"type\": \"command\"" /tmp/events.jsonl'
    wake_status=$?
    say "arm64 check: setup exit $setup_status, upgrade exit $upgrade_status, tests exit $tests_status, wake and command $( [ "$wake_status" = 0 ] && echo heard || echo MISSED), $(( $(date +%s) - started )) s"
    [ "$setup_status" = 0 ] && [ "$upgrade_status" = 0 ] && [ "$tests_status" = 0 ] && [ "$wake_status" = 0 ]
} 2>&1 | tee "$WORK/log.txt"
exit "${PIPESTATUS[0]}"
