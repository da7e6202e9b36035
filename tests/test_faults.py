"""Fault injection: the owner's mute wins on a full or failing disk, and the CLI never lies about it.

* ENOSPC: the state dir is a real 300 kB tmpfs, filled with ``dd`` while the daemon runs (needs root
  to mount; skipped with the reason otherwise).
* EIO: ``voxkeep.durable.faults`` makes the durable write path fail as a dying SD card does.
* A daemon that holds its state dir but does not answer (its socket gone, or resetting connections),
  and a second daemon started on a live state dir.
* A consented HTTP sink that stalls mid-transfer.

The rest of the fault-injection suite: SIGKILL trials in test_vault_crash.py, a SIGSTOPped and killed
broker in test_mqtt_daemon.py and test_mqtt.py, control-socket floods and disk stalls in test_control.py,
disk and broker stalls against the audio loop's timing in bench/stall.py.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from tests.helpers import one_error_line, run_cli, running_daemon, wait_until
from voxkeep.control import socket_path
from voxkeep.durable import faults
from voxkeep.events import Event, Notice, State
from voxkeep.privacy import STATE_FILE, Mode, PrivacyState
from voxkeep.testing.speech import silence, write_wav

LED = 17


class SmallDisk:
    """A 300 kB tmpfs mounted on ``path``, to fill with dd and free again."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        subprocess.run(["dd", "if=/dev/zero", f"of={self.path / 'filler'}", "bs=4k"], capture_output=True,
                       check=False)  # dd exits non-zero when the disk is full, which is the point
        assert os.statvfs(self.path).f_bavail == 0, "the small disk did not fill up"

    def free(self) -> None:
        (self.path / "filler").unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mount = tmp_path / "state"
    mount.mkdir(mode=0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 300 kB tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    f"{done.stderr.decode().strip()}")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _seen(events: list[Event], kind: type, pred=lambda e: True) -> Event:
    """The first event of ``kind`` matching ``pred``, waiting for the bus if need be."""
    assert wait_until(lambda: any(isinstance(e, kind) and pred(e) for e in events), timeout=20), \
        f"no such {kind.__name__} in {events}"
    return next(e for e in events if isinstance(e, kind) and pred(e))


def test_a_full_disk_cannot_stop_a_mute_and_an_unmute_that_cannot_be_saved_is_refused(small_disk: SmallDisk) -> None:
    state_dir = small_disk.path
    sd = ["--state-dir", str(state_dir)]
    factory = MockFactory()
    events: list[Event] = []
    with running_daemon(state_dir, settings={"gpio": {"led_pin": LED}}, pin_factory=factory,
                        events=events.append) as (app, mic):
        app.bus.drain()
        assert factory.pin(LED).state == 0  # listening: dark
        small_disk.fill()  # ENOSPC from here on

        proc = run_cli("mute", *sd)
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout.startswith(b"now muted") and b"not saved" in proc.stdout
        assert app.privacy.muted
        _seen(events, State, lambda e: e.mode == "muted" and not e.mic_open)  # the stream closed
        assert mic.open_streams == []
        app.bus.drain()
        assert factory.pin(LED).state == 1  # the LED tells the truth
        notice = _seen(events, Notice)
        assert notice.level == "error" and "No space left" in notice.message
        assert "saving it is retried" in run_cli("status", *sd).stdout.decode()

        refused = run_cli("unmute", *sd)
        assert refused.returncode == 1
        assert b"cannot unmute" in refused.stdout and b"free some space" in refused.stdout
        assert app.privacy.muted and mic.open_streams == []

        small_disk.free()  # the background retry saves the mute
        assert wait_until(lambda: app.privacy.unsaved is None, timeout=30)
        assert json.loads((state_dir / STATE_FILE).read_text())["muted"] is True
        assert "saved now" in _seen(events, Notice, lambda e: e.level == "info").message
        assert run_cli("unmute", *sd).stdout.strip() == b"now listening"


@pytest.mark.parametrize("cause", ["switch", "button", "mqtt", "voice", "cli"])
def test_every_cause_of_mute_or_recording_off_wins_over_eio(tmp_path: Path, cause: str) -> None:
    problems: list[tuple[str, str]] = []
    ps = PrivacyState(tmp_path / STATE_FILE, on_problem=lambda *p: problems.append(p), retry_first_seconds=0.05)
    seen: list[State] = []
    ps.subscribe(seen.append)
    with faults.inject(errno.EIO, pattern=STATE_FILE) as fault:
        if cause == "switch":
            ps.set_switch(True)
        elif cause == "voice":  # "don't record anymore"
            assert ps.request("recording_off", cause).ok
        else:
            assert ps.request("mute", cause).ok
        want = Mode.NOT_RECORDING if cause == "voice" else Mode.MUTED
        assert ps.mode is want and seen[-1].mode == want.value  # in force, and observers were told
        assert problems and problems[0][0] == "error" and "Input/output error" in problems[0][1]
        if cause == "switch":
            ps.set_switch(False)  # released: now only the failing disk stands in the way of an unmute
        opening = ps.request("recording_on" if cause == "voice" else "unmute", "button")
        assert not opening.ok and "Input/output error" in opening.message
        assert ps.mode is want
        assert wait_until(lambda: fault.hits >= 3), "the save is not retried"
    assert wait_until(lambda: ps.unsaved is None)
    assert PrivacyState(tmp_path / STATE_FILE).mode is want
    assert problems[-1][0] == "info"


def test_eio_at_every_step_of_the_write_keeps_the_old_file_intact(tmp_path: Path) -> None:
    from voxkeep.durable import STEPS

    path = tmp_path / STATE_FILE
    ps = PrivacyState(path, retry_first_seconds=3600)
    assert ps.request("mute", "cli").ok
    for step in STEPS:
        with faults.inject(errno.EIO, pattern=STATE_FILE, step=step):
            outcome = ps.request("unmute", "cli")
        assert not outcome.ok and ps.muted, step
        # fsync of the directory fails after the rename: the new file is there, but the unmute is refused
        # and the mute is written back.
        ps.request("mute", "cli")
        assert PrivacyState(path).mode is Mode.MUTED, step
        assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE], step


def _stand_in_that_resets(path: Path, stop: threading.Event) -> threading.Thread:
    """Replace the daemon's control socket with one that accepts and closes at once (a pids limit)."""
    path.unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)
    server.settimeout(0.1)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("fault", ["socket removed", "connections reset"])
def test_the_cli_never_claims_a_mute_a_silent_daemon_did_not_make(state_dir: Path, fault: str) -> None:
    sd = ["--state-dir", str(state_dir)]
    with running_daemon(state_dir) as (app, _mic):
        stop = threading.Event()
        if fault == "socket removed":
            socket_path(state_dir).unlink()
        else:
            _stand_in_that_resets(socket_path(state_dir), stop)
        before = (state_dir / STATE_FILE).read_bytes() if (state_dir / STATE_FILE).exists() else None
        try:
            proc = run_cli("mute", *sd)
            status = run_cli("status", *sd).stdout.decode()
        finally:
            stop.set()
        assert proc.returncode == 1 and proc.stdout == b""
        line = one_error_line(proc.stderr)
        assert "is running" in line and "nothing was changed" in line
        assert app.privacy.mode is Mode.LISTENING  # the truth the CLI must not contradict
        after = (state_dir / STATE_FILE).read_bytes() if (state_dir / STATE_FILE).exists() else None
        assert after == before
        assert "does not answer" in status


def test_a_refused_second_daemon_touches_nothing_of_the_first(state_dir: Path, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "s.wav", silence(1.0))
    with running_daemon(state_dir) as (app, _mic):
        app.bus.drain()  # the first daemon's own start-up audit entry is written by now
        # What a running daemon has in flight: a recording being written, the audit head being replaced.
        partial = app.vault.recordings_dir / f".{'ab' * 12}.wav.age.tmp"
        partial.write_bytes(b"half a recording")
        head_tmp = app.vault.audit_log.head_path.with_name(".audit.head.tmp")
        head_tmp.write_bytes(b"{}")
        before = {p: p.stat().st_mtime_ns for p in state_dir.rglob("*") if p.is_file()}
        proc = run_cli("run", "--input", str(wav), "--state-dir", str(state_dir))
        assert proc.returncode == 1
        assert "already running" in one_error_line(proc.stderr)
        assert partial.exists() and head_tmp.exists()
        after = {p: p.stat().st_mtime_ns for p in state_dir.rglob("*") if p.is_file()}
        assert after == before
        assert socket_path(state_dir).exists()
        assert run_cli("mute", "--state-dir", str(state_dir)).stdout.strip() == b"now muted"


def test_a_stalled_sink_never_holds_up_a_mute(state_dir: Path) -> None:
    """A consented HTTP sink takes the upload and then never answers: the owner's mute is at once."""
    from tests.test_forward import HttpSpy
    from voxkeep.config import VaultSettings
    from voxkeep.owner import generate_identity
    from voxkeep.testing.speech import speak
    from voxkeep.vault import Vault

    with Vault(state_dir, VaultSettings()) as vault:
        vault.add_recipient(generate_identity()[1])
        vault.consent("http", "grant", "cli")
    sink = HttpSpy()
    sink.hold.clear()  # the sink stalls after reading the body
    room = np.concatenate([silence(1.0), speak("alexa"), silence(0.2), speak("what is the weather tomorrow"),
                           silence(2.5)])
    try:
        with running_daemon(state_dir, room=room, settings={"forward": {"http_url": sink.url,
                                                                        "timeout_seconds": 20.0}}) as (_app, mic):
            assert sink.entered.wait(60), "the utterance never reached the sink"
            proc = run_cli("mute", "--state-dir", str(state_dir))
            assert proc.stdout.strip() == b"now muted", proc.stderr.decode()
            assert wait_until(lambda: mic.open_streams == [])
            assert not sink.hold.is_set()  # the transfer is still stuck while the microphone is closed
    finally:
        sink.close()


def test_a_silent_system_service_is_never_bypassed_through_another_state_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With no --state-dir the CLI means the systemd service; if its socket refuses, the CLI must not
    "mute" its own user's state dir instead (which the service never reads)."""
    from voxkeep import control
    from voxkeep.cli import main

    runtime = tmp_path / "run-voxkeep"
    runtime.mkdir()
    refusing = socket.socket(socket.AF_UNIX)
    refusing.bind(str(runtime / "control.sock"))  # bound, never listening: connections are refused
    monkeypatch.setattr(control, "SERVICE_SOCKET", runtime / "control.sock")
    try:
        assert main(["mute"]) == 1
    finally:
        refusing.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "nothing was changed" in captured.err
    assert not list(tmp_path.rglob(STATE_FILE)), "the CLI wrote a state file the service never reads"


def test_a_mute_whose_save_hangs_is_answered_at_once_and_says_it_is_not_saved_yet(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    sd = ["--state-dir", str(state_dir)]
    with running_daemon(state_dir) as (app, mic):
        # The SD card hangs on the mute's write for longer than the CLI waits for an answer (5 s).
        with faults.inject(pattern=STATE_FILE, step="fsync", delay=7.0, err=0, count=1) as stall:
            proc = run_cli("mute", *sd)
            assert (proc.returncode, stall.done) == (0, 0), proc.stderr.decode()  # answered, the disk still hung
            assert proc.stdout.startswith(b"now muted") and b"not saved yet" in proc.stdout
            assert app.privacy.muted
            assert wait_until(lambda: mic.open_streams == [])  # in force: the microphone closed
            assert "not saved yet" in run_cli("status", *sd).stdout.decode()
            assert wait_until(lambda: stall.done == 1, timeout=30)
        assert wait_until(lambda: app.privacy.unsaved is None)
        assert json.loads((state_dir / STATE_FILE).read_text())["muted"] is True
        assert run_cli("unmute", *sd).stdout.strip() == b"now listening"


def test_a_hung_save_of_a_mute_does_not_hold_back_the_answer(tmp_path: Path) -> None:
    ps = PrivacyState(tmp_path / STATE_FILE, save_wait_seconds=0.05)
    seen: list[State] = []
    ps.subscribe(seen.append)
    with faults.inject(pattern=STATE_FILE, step="write", delay=3.0, err=0, count=1) as stall:
        outcome = ps.request("mute", "button")
        assert stall.done == 0 and outcome.ok and "not saved yet" in outcome.message
        assert ps.muted and seen[-1].mode == "muted" and ps.unsaved
        assert "not saved yet" in ps.snapshot()["problem"]
        again = ps.request("mute", "cli")  # asked again meanwhile: still honest, not "already muted"
        assert again.ok and "not saved yet" in again.message
        assert wait_until(lambda: stall.done == 1, timeout=30)
    assert wait_until(lambda: ps.unsaved is None)
    assert PrivacyState(tmp_path / STATE_FILE).muted
