#!/usr/bin/env bash
# Remove voxkeep. Recordings, the audit log and your config are KEPT unless you add --purge.
#
#   sudo hw/uninstall.sh [--purge] [--root DIR] [--dry-run]
#
# --purge   also delete /var/lib/voxkeep (the encrypted recordings and audit log), /etc/voxkeep
#           and the voxkeep user. Export first if you want them: voxkeep export --out FILE.zip
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hw/lib.sh
. "$HERE/lib.sh"

PURGE=0
parse_common "$@"
for arg in "${EXTRA_ARGS[@]}"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) die "unknown option '$arg'; use --purge, --root DIR or --dry-run" ;;
    esac
done

say "stopping and removing the service"
if systemd_running; then
    run systemctl disable --now "$UNIT" || true
fi
rm -f "$ROOT/etc/systemd/system/$UNIT" "$ROOT/etc/systemd/system/multi-user.target.wants/$UNIT" \
      "$ROOT/etc/udev/rules.d/60-voxkeep-gpio.rules" "$ROOT/usr/local/bin/voxkeep"
if systemd_running; then
    run systemctl daemon-reload
fi
rm -rf "$ROOT$PREFIX"

if [ "$PURGE" = 1 ]; then
    say "purging recordings, audit log and config"
    rm -rf "$ROOT$STATE_DIR" "$ROOT/var/lib/private/voxkeep" "$ROOT$CONF_DIR"
    if user_exists "$SERVICE_USER"; then
        run userdel "$SERVICE_USER"
    fi
else
    say "kept your recordings in $STATE_DIR and config in $CONF_DIR (remove them with --purge)"
fi
say "voxkeep removed"
