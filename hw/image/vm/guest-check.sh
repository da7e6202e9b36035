#!/usr/bin/env bash
# Runs inside the VM that hw/image/vm-check.sh boots (installed there by it, never part of the image).
# Boot 1 checks the service as a maker would meet it, mutes, and reboots; boot 2 checks the mute
# survived, then powers off. Every line starts with "vm-check:" on the serial console; the host
# script reads them back. PASS/FAIL lines are the result.
set -uo pipefail
STATE=/var/lib/voxkeep-vm-check
WAV=/srv/vm-check/room.wav
UNIT=voxkeep.service
mkdir -p "$STATE"
PHASE="$(cat "$STATE/phase" 2>/dev/null || echo 1)"
exec > >(sed -u 's/^/vm-check: /') 2>&1

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; echo x >> "$STATE/failed"; }
show() { echo "\$ $*"; "$@" 2>&1 | sed -u 's/^/| /'; return "${PIPESTATUS[0]}"; }
prop() { systemctl show -p "$1" --value "$UNIT"; }
as_maker() { runuser -u maker -- "$@"; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
at_most() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
# wait_running SECONDS: until the service is active (running), i.e. it sent READY=1.
wait_running() {
    local i
    for ((i = 0; i < $1; i++)); do
        [ "$(prop ActiveState)/$(prop SubState)" = active/running ] && return 0
        sleep 1
    done
    return 1
}

if [ "$PHASE" = 1 ]; then
    echo "boot 1: $(tr '\n' ' ' < /etc/voxkeep-image)"
    show cat /proc/asound/cards
    show df -h /
    show journalctl -b -o cat -u voxkeep-image-setup.service -u voxkeep-firstboot.service --no-pager
    if [ ! -e /boot/firmware/voxkeep-owner.txt ] && journalctl -b -u voxkeep-firstboot -o cat | grep -q "registered"; then
        pass "first boot registered the owner key from the boot partition and deleted the file"
    else
        fail "first-boot owner key step"
    fi

    # Out of the box the image listens to a microphone; this VM has none.
    sleep 5
    show runuser -u voxkeep -- voxkeep doctor --state-dir /var/lib/voxkeep --seconds 1 > "$STATE/doctor-mic.txt"
    cat "$STATE/doctor-mic.txt"
    if grep -q "FAIL\] microphone: no microphone found" "$STATE/doctor-mic.txt"; then
        pass "without a sound card, doctor says there is no microphone"
    else
        fail "doctor without a sound card"
    fi

    # What a maker without a microphone does: point [audio] input at a WAV file, paced at real time.
    sed -i -e "s|^# input = \"mic\"$|input = \"$WAV\"|" -e 's|^# realtime = false$|realtime = true|' /etc/voxkeep/config.toml
    show grep -E '^(input|realtime) =' /etc/voxkeep/config.toml
    systemctl reset-failed "$UNIT"
    started=$(date +%s.%N)
    show systemctl restart "$UNIT"
    if wait_running 900; then
        pass "$UNIT active (running) after READY=1, $(since "$started") s after restart (Type=$(prop Type), NotifyAccess=$(prop NotifyAccess), WatchdogUSec=$(prop WatchdogUSec))"
    else
        fail "$UNIT did not reach active (running)"
    fi
    show systemctl status "$UNIT" --no-pager -n 5
    pid="$(prop MainPID)"
    user="$(ps -o user= -p "$pid" | tr -d ' ')"
    if [ "$user" = voxkeep ]; then pass "main process $pid runs as user voxkeep"; else fail "main process runs as '$user'"; fi
    show grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' "/proc/$pid/status"
    show findmnt -N "$pid" -n -o TARGET,OPTIONS --target /usr
    if grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" && grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status" \
        && grep -q '^CapEff:[[:space:]]*0000000000000000' "/proc/$pid/status" \
        && [ "$(findmnt -N "$pid" -n -o OPTIONS --target /usr | cut -d, -f1)" = ro ]; then
        pass "sandbox in force: no new privileges, seccomp filter, no capabilities, /usr read-only in its namespace"
    else
        fail "sandbox not in force"
    fi
    show systemd-analyze security "$UNIT" --no-pager > "$STATE/security.txt"
    tail -n 3 "$STATE/security.txt"
    exposure="$(sed -n 's/.*Overall exposure level for voxkeep.service: \([0-9.]*\).*/\1/p' "$STATE/security.txt")"
    if [ -n "$exposure" ] && at_most "$exposure" 2.0; then
        pass "systemd-analyze security: exposure $exposure (at most 2.0)"
    else
        fail "systemd-analyze security: exposure '${exposure:-?}'"
    fi

    show runuser -u voxkeep -- voxkeep doctor --state-dir /var/lib/voxkeep > "$STATE/doctor-wav.txt"
    cat "$STATE/doctor-wav.txt"
    if grep -q "\[ ok \] microphone: not used (this machine has no sound card): audio comes from the file $WAV" "$STATE/doctor-wav.txt"; then
        pass "doctor says the service runs on a WAV file and the machine has no sound card"
    else
        fail "doctor on a WAV source"
    fi

    # The owner's commands for a member of group voxkeep, through /run/voxkeep; others are refused.
    id maker >/dev/null 2>&1 || useradd --create-home --groups voxkeep maker
    show ls -ld /run/voxkeep
    if show as_maker voxkeep status && as_maker voxkeep status --json | grep -q '"daemon_running": true'; then
        pass "voxkeep status works for a member of group voxkeep (daemon_running, through /run/voxkeep)"
    else
        fail "voxkeep status for group voxkeep"
    fi
    # Refused with the one line that names the fix: a traceback is a failure too.
    if show runuser -u nobody -- voxkeep mute > "$STATE/refused.txt"; then
        cat "$STATE/refused.txt"
        fail "a user outside group voxkeep could mute"
    else
        cat "$STATE/refused.txt"
        if grep -q "only members of group voxkeep may use the speaker's service" "$STATE/refused.txt" \
            && ! grep -q Traceback "$STATE/refused.txt"; then
            pass "a user outside group voxkeep is refused with one line naming the fix"
        else
            fail "a user outside group voxkeep is refused, but not with one clear line"
        fi
    fi

    # A stalled audio loop: freeze the process; the watchdog (WatchdogSec) must restart it.
    wd_sec="$(systemctl cat "$UNIT" | sed -n 's/^WatchdogSec=//p' | tail -n 1)"
    cursor="$(journalctl -u "$UNIT" -n 0 --show-cursor | sed -n 's/^-- cursor: //p')"
    old="$(prop MainPID)"
    stopped=$(date +%s.%N)
    echo "SIGSTOP to $old at $(date -u +%T.%N | cut -c1-12), WatchdogSec=${wd_sec}s"
    kill -STOP "$old"
    restarted=""
    for ((i = 0; i < wd_sec + 900; i++)); do  # the restart itself is slow on an emulated CPU
        sleep 1
        now_pid="$(prop MainPID)"
        if [ "$now_pid" != "$old" ] && [ "$now_pid" != 0 ] && [ "$(prop SubState)" = running ]; then
            restarted="$(since "$stopped")"
            break
        fi
    done
    journalctl -u "$UNIT" --after-cursor="$cursor" -o short-unix --no-pager > "$STATE/watchdog.txt"
    sed 's/^/| /' "$STATE/watchdog.txt" | grep -v ' LED: ' | head -n 20
    timeout_at="$(grep -m1 'Watchdog timeout' "$STATE/watchdog.txt" | cut -d' ' -f1)"
    if [ -n "$restarted" ] && [ -n "$timeout_at" ]; then
        detect="$(awk -v a="$stopped" -v b="$timeout_at" 'BEGIN { printf "%.1f", b - a }')"
        if at_most "$detect" "$((wd_sec + 1))"; then
            pass "stalled loop: watchdog timeout $detect s after SIGSTOP (WatchdogSec=$wd_sec), running again as pid $now_pid $restarted s after it"
        else
            fail "watchdog fired only ${detect} s after the stall (WatchdogSec=$wd_sec)"
        fi
    else
        fail "stalled loop not restarted by the watchdog (timeout line: '${timeout_at}', restarted: '${restarted}')"
    fi
    wait_running 900 || true

    # Mute as the maker; it must survive the reboot.
    if show as_maker voxkeep mute && as_maker voxkeep status --json | grep -q '"mode": "muted"'; then
        pass "voxkeep mute works for a member of group voxkeep"
    else
        fail "voxkeep mute for group voxkeep"
    fi
    sleep 2
    show journalctl -u "$UNIT" -b -o cat --no-pager -g 'LED:' -n 2
    echo 2 > "$STATE/phase"
    echo "rebooting"
    sync
    systemctl reboot
    exit 0
fi

echo "boot 2"
wait_running 900 || fail "$UNIT not running after the reboot"
show as_maker voxkeep status
if as_maker voxkeep status --json | grep -q '"mode": "muted"'; then
    pass "still muted after the reboot (voxkeep status)"
else
    fail "mute lost across the reboot"
fi
led="$(journalctl -u "$UNIT" -b -o cat --no-pager -g 'LED:' | head -n 1)"
echo "first LED line of this boot: $led"
case "$led" in
    *"LED: on"*) pass "after the reboot the LED came up on (not recording) from the start: $led" ;;
    *) fail "LED after the reboot: '${led:-no LED line}'" ;;
esac
failed=0
[ ! -f "$STATE/failed" ] || failed=$(wc -l < "$STATE/failed")
echo "done: $failed failed"
sync
systemctl poweroff
