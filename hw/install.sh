#!/usr/bin/env bash
# One-command install of voxkeep on Raspberry Pi OS Bookworm or Trixie (Lite), or plain Debian 12/13. Safe to run again to upgrade:
# the config in /etc/voxkeep is kept, the recordings in /var/lib/voxkeep are never touched.
#
#   sudo hw/install.sh [--no-start] [--root DIR] [--dry-run]
#
# --no-start   enable the service but do not start it (image builds, where nothing runs)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(dirname "$HERE")"
# shellcheck source=hw/lib.sh
. "$HERE/lib.sh"

APT_PACKAGES=(
    python3 python3-venv python3-dev build-essential   # the virtual environment and wheels without binaries
    portaudio19-dev libportaudio2 alsa-utils            # microphone and speaker (PyAudio), arecord for checks
    libsndfile1                                         # soundfile
    swig                                                # lets pip build lgpio where apt has none (plain Debian)
    ca-certificates                                     # TLS to the MQTT broker
)

START=1
parse_common "$@"
for arg in "${EXTRA_ARGS[@]}"; do
    case "$arg" in
        --no-start) START=0 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) die "unknown option '$arg'; use --no-start, --root DIR or --dry-run" ;;
    esac
done

# gpiozero's pin library (Pi 5 too): Raspberry Pi OS packages it, plain Debian does not, and then pip builds
# it into the venv from PyPI, statically linked (PYPI=1), which needs only swig and a compiler.
if apt-cache show python3-lgpio >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-lgpio)
    LGPIO_FROM_PIP=0
else
    LGPIO_FROM_PIP=1
fi

[ -f "$SRC/pyproject.toml" ] || die "$SRC is not a voxkeep source tree; run hw/install.sh from the checkout"
[ -f "$SRC/device/config.example.toml" ] || die "$SRC/device/config.example.toml is missing; use a complete checkout"

if [ -r "$ROOT/etc/os-release" ]; then
    # shellcheck disable=SC1091
    codename="$(. "$ROOT/etc/os-release" && echo "${VERSION_CODENAME:-}")"
    case "$codename" in
        bookworm|trixie) ;;
        *) say "warning: made for Raspberry Pi OS Bookworm or Trixie, this is '${codename:-unknown}'" ;;
    esac
fi

say "installing system packages"
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"

say "creating the service user '$SERVICE_USER' (groups audio, gpio)"
for group in audio gpio; do
    grep -q "^$group:" "$ROOT/etc/group" 2>/dev/null || run groupadd --system "$group"
done
if ! user_exists "$SERVICE_USER"; then
    run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "voxkeep smart speaker" "$SERVICE_USER"
fi
run usermod -a -G audio,gpio "$SERVICE_USER"

# GPIO character devices for group gpio (Raspberry Pi OS has this; other images may not).
install -d -m 0755 "$ROOT/etc/udev/rules.d"
cat > "$ROOT/etc/udev/rules.d/60-voxkeep-gpio.rules" <<'RULES'
# Installed by voxkeep: let group gpio use the GPIO character devices (lgpio, gpiozero).
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
RULES
if systemd_running; then  # in an image build or a chroot no udev runs: the rule applies at boot
    run udevadm control --reload-rules
    run udevadm trigger --subsystem-match=gpio
fi

say "installing voxkeep into $PREFIX/venv"
install -d -m 0755 "$ROOT$PREFIX" "$ROOT$PREFIX/hw"
# System site packages: python3-lgpio, where apt has it, matched to the kernel's GPIO interface.
[ -x "$ROOT$PREFIX/venv/bin/python" ] || run python3 -m venv --system-site-packages "$PREFIX/venv"
run "$PREFIX/venv/bin/pip" install --no-cache-dir --upgrade pip
run "$PREFIX/venv/bin/pip" install --no-cache-dir --upgrade "$SRC"
[ "$LGPIO_FROM_PIP" = 0 ] || run env PYPI=1 "$PREFIX/venv/bin/pip" install --no-cache-dir --no-binary lgpio lgpio
install -m 0644 "$HERE/README.md" "$HERE/wiring.svg" "$ROOT$PREFIX/hw/"
# The owner's commands (voxkeep mute, status, doctor, ...) on everyone's PATH, finding the service's
# models as the unit's VOXKEEP_MODELS_DIR does, with lgpio's pipes in a writable place as the unit's
# LG_WD (else lgpio uses the working directory, and fails where it cannot write: the doctor's pin
# check). An older install put a symlink here: replace it, never write through it.
install -d -m 0755 "$ROOT/usr/local/bin"
rm -f "$ROOT/usr/local/bin/voxkeep"
cat > "$ROOT/usr/local/bin/voxkeep" <<WRAPPER
#!/bin/sh
# Installed by voxkeep's hw/install.sh.
: "\${VOXKEEP_MODELS_DIR:=$PREFIX/models}"
: "\${LG_WD:=\${XDG_RUNTIME_DIR:-/tmp}}"
export VOXKEEP_MODELS_DIR LG_WD
exec $PREFIX/venv/bin/voxkeep "\$@"
WRAPPER
chmod 0755 "$ROOT/usr/local/bin/voxkeep"

say "fetching and verifying models into $PREFIX/models"
install -d -m 0755 "$ROOT$PREFIX/models"
run "$PREFIX/venv/bin/voxkeep" models fetch --models-dir "$PREFIX/models"

# Config: owned by root, readable by the service; an existing one is the owner's and is kept.
install -d -m 0755 "$ROOT$CONF_DIR"
install -m 0644 "$SRC/device/config.example.toml" "$ROOT$CONF_DIR/config.example.toml"
if [ -e "$ROOT$CONF_DIR/config.toml" ]; then
    say "keeping your $CONF_DIR/config.toml (new defaults are in $CONF_DIR/config.example.toml)"
else
    install -m 0644 "$SRC/device/config.example.toml" "$ROOT$CONF_DIR/config.toml"
    say "wrote $CONF_DIR/config.toml; set your pins and wake words there"
fi

# The MQTT password file the unit loads as a credential; empty means "no password".
if [ ! -e "$ROOT$CONF_DIR/mqtt-password" ]; then
    install -m 0600 /dev/null "$ROOT$CONF_DIR/mqtt-password"
fi

say "installing the service"
install -d -m 0755 "$ROOT/etc/systemd/system"
install -m 0644 "$SRC/systemd/voxkeep.service" "$ROOT/etc/systemd/system/$UNIT"
if systemd_running; then
    run systemctl daemon-reload
    if [ "$START" = 1 ]; then
        run systemctl enable "$UNIT"
        run systemctl restart "$UNIT"
        say "started; follow it with: journalctl -u voxkeep -f"
    else
        run systemctl enable "$UNIT"
    fi
else
    # Image build or scratch root: nothing runs here, so only enable it for the next boot.
    run systemctl --root="${ROOT:-/}" enable "$UNIT"
fi
say "done. Add yourself to group $SERVICE_USER for 'voxkeep mute' etc.: sudo usermod -a -G $SERVICE_USER \$USER"
