# shellcheck shell=bash
# Shared by install.sh and uninstall.sh: option parsing, the scratch-root prefix and dry runs.
#
# --root DIR   put every file under DIR instead of / (building an image, or the tests)
# --dry-run    print the commands that change the running system (apt-get, useradd, systemctl,
#              pip, udevadm) instead of running them; files under --root are still written, so
#              what the install leaves on disk can be checked.

# shellcheck disable=SC2034  # the paths below are used by the scripts that source this file
ROOT=""
DRY_RUN=0
PREFIX=/opt/voxkeep
CONF_DIR=/etc/voxkeep
STATE_DIR=/var/lib/voxkeep
UNIT=voxkeep.service
SERVICE_USER=voxkeep

say() { printf 'voxkeep: %s\n' "$*"; }
die() { printf 'voxkeep: error: %s\n' "$*" >&2; exit 1; }

# run CMD...: run a command that changes the system, or only show it in a dry run.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

# parse_common "$@": handle --root/--dry-run; the rest is left in EXTRA_ARGS for the caller.
parse_common() {
    EXTRA_ARGS=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --root)
                [ $# -ge 2 ] || die "--root needs a directory, e.g. --root /mnt/rootfs"
                ROOT="${2%/}"
                [ -d "$ROOT" ] || die "--root $ROOT is not a directory; create it first"
                shift 2 ;;
            --dry-run) DRY_RUN=1; shift ;;
            *) EXTRA_ARGS+=("$1"); shift ;;
        esac
    done
    if [ -n "$ROOT" ] && [ "$DRY_RUN" = 0 ]; then
        die "--root only checks what would be installed: add --dry-run (to build an image, run the script inside its chroot, see hw/pi-gen)"
    fi
    if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
        die "this changes the system; run it with sudo (or add --dry-run to see what it would do)"
    fi
}

# debian_mirror: the Debian archive this machine's apt already uses (MIRROR=URI overrides it), or nothing.
debian_mirror() {
    local mirror="${MIRROR:-}"
    if [ -z "$mirror" ]; then
        mirror="$(sed -n 's/^URIs: *\(.*\/debian\)\/\?$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
        [ -n "$mirror" ] || mirror="$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)"
    fi
    printf '%s\n' "${mirror%/}"
}

# user_exists NAME: looks in the (possibly scratch) root's passwd file, not the host's.
user_exists() { grep -q "^$1:" "$ROOT/etc/passwd" 2>/dev/null; }

# systemd_running: true only when managing the live system (not a scratch root or a chroot).
systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }
