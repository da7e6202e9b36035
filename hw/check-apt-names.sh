#!/usr/bin/env bash
# Checks that every apt package hw/install.sh (on the Pi: arm64) and .ci/setup (this machine's
# architecture) install exists in Debian bookworm and trixie, the bases of Raspberry Pi OS then and now.
# Reads package lists into a scratch directory; the system's own apt state is not touched.
#
#   hw/check-apt-names.sh [SUITE ...]      (default: bookworm trixie; MIRROR=URI overrides the archive)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hw/lib.sh
. "$SRC/hw/lib.sh"
SUITES=("${@:-bookworm}")
[ $# -gt 0 ] || SUITES=(bookworm trixie)

names_in() {  # the words of the APT_PACKAGES=( ... ) array in a script, comments dropped
    sed -n '/^APT_PACKAGES=(/,/^)/p' "$1" | sed -e 's/#.*//' -e 's/APT_PACKAGES=(//' -e 's/)//' | tr -s ' \t' '\n' | sed '/^$/d'
}

mirror="$(debian_mirror)"
[ -n "$mirror" ] || { echo "check-apt-names: no Debian archive configured; set MIRROR=<archive URI>" >&2; exit 2; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=0
for suite in "${SUITES[@]}"; do
    for arch in arm64 "$(dpkg --print-architecture)"; do
        dir="$scratch/$suite-$arch"
        mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$dir/sources.list"
        opts=(-o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache" -o Dir::State::status=/dev/null
              -o "APT::Architecture=$arch" -o "APT::Architectures=$arch")
        apt-get -qq "${opts[@]}" update || { echo "check-apt-names: cannot read $suite ($arch) from $mirror" >&2; exit 2; }
        if [ "$arch" = arm64 ]; then script="$SRC/hw/install.sh"; else script="$SRC/.ci/setup"; fi
        missing=()
        while read -r name; do
            apt-cache "${opts[@]}" show --no-all-versions "$name" >/dev/null 2>&1 || missing+=("$name")
        done < <(names_in "$script")
        if ((${#missing[@]})); then
            echo "$suite/$arch: ${script#"$SRC"/} names packages that do not exist: ${missing[*]}"
            failed=1
        else
            echo "$suite/$arch: all $(names_in "$script" | wc -l) packages of ${script#"$SRC"/} exist"
        fi
        [ "$arch" = "$(dpkg --print-architecture)" ] && break
    done
done
exit "$failed"
