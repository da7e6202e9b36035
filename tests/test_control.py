"""The owner's CLI against a running daemon: mute, unmute, recording on/off, status; owner only."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli, running_daemon, wait_until
from voxkeep.control import socket_path
from voxkeep.durable import faults
from voxkeep.testing.speech import silence


@pytest.fixture
def daemon(state_dir: Path):
    """A daemon on a (silent) fake microphone, serving its control socket."""
    with running_daemon(state_dir) as running:
        yield running


@pytest.fixture
def reachable_daemon():
    """A daemon whose state dir's parents other users can traverse (pytest's own tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="voxkeep-test-", dir="/tmp"))
    os.chmod(path, 0o711)
    try:
        with running_daemon(path / "state") as running:
            yield running
    finally:
        shutil.rmtree(path)


def test_owner_commands_reach_the_running_daemon(daemon, state_dir: Path) -> None:
    app, _mic = daemon
    sd = ["--state-dir", str(state_dir)]
    assert run_cli("mute", *sd).stdout.strip() == b"now muted"
    assert app.privacy.mode.value == "muted"
    status = run_cli("status", *sd).stdout.decode()
    assert "MUTED" in status and "daemon:      running" in status
    assert run_cli("recording", "off", *sd).returncode == 0
    assert run_cli("unmute", *sd).stdout.strip() == b"now not recording"
    assert app.privacy.mode.value == "not_recording"
    run_cli("recording", "on", *sd)
    assert app.privacy.mode.value == "listening"


_NOBODY_CLIENT = """
import contextlib, socket, sys
try:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(sys.argv[1])
        if sys.argv[2] == "send":  # the daemon may have answered and closed already: read its answer anyway
            with contextlib.suppress(BrokenPipeError):
                sock.sendall(b'{"action": "mute"}\\n')
        answer = sock.recv(4096).decode()
except OSError as exc:
    answer = type(exc).__name__
print(answer, end="")
"""


def _as_nobody(path: Path, send: bool = True) -> str:
    """Try the control socket as user 'nobody' in a child process; return what happened.

    The system's python3, isolated (-I): nobody may not be able to read the virtual environment. Not a fork
    of pytest, which has threads by now (a forked child can inherit a held lock; Python 3.13 warns).
    """
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    done = subprocess.run([python, "-I", "-c", _NOBODY_CLIENT, str(path), "send" if send else "wait"], user=65534,
                          group=65534, extra_groups=[], cwd="/", capture_output=True, timeout=30, check=True)
    return done.stdout.decode()


def test_the_socket_is_for_the_owner_only(reachable_daemon) -> None:
    app, _ = reachable_daemon
    state_dir = app.settings.state_path
    path = socket_path(state_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")  # CI runs as root
    assert _as_nobody(path) == "PermissionError"
    # Even if someone loosened the permissions, the daemon checks who is calling.
    os.chmod(state_dir, 0o711)
    os.chmod(path, 0o666)
    assert "only the speaker's owner" in _as_nobody(path)
    # Credentials are checked before anything is read: a refused user who sends nothing is answered at
    # once and cannot hold a connection open.
    assert "only the speaker's owner" in _as_nobody(path, send=False)
    assert app.privacy.mode.value == "listening"


def test_a_second_daemon_on_the_same_state_is_refused(daemon, state_dir: Path, tmp_path: Path) -> None:
    wav = tmp_path / "s.wav"
    from voxkeep.testing.speech import write_wav

    write_wav(wav, silence(1.0))
    proc = run_cli("run", "--input", str(wav), "--state-dir", str(state_dir))
    assert proc.returncode == 1
    assert "already running" in one_error_line(proc.stderr)
    assert socket_path(state_dir).exists()


def test_without_a_daemon_the_saved_state_changes(state_dir: Path) -> None:
    sd = ["--state-dir", str(state_dir)]
    proc = run_cli("mute", *sd)
    assert proc.returncode == 0 and b"not running" in proc.stdout
    assert b"MUTED" in run_cli("status", *sd).stdout
    assert run_cli("unmute", *sd).returncode == 0
    assert b"listening" in run_cli("status", *sd).stdout


def test_an_idle_connection_is_closed_and_holds_nothing(daemon, state_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)  # far longer than the daemon's idle limit; not a speed limit
        sock.connect(str(socket_path(state_dir)))
        answer = sock.recv(4096)  # never sends a request
    assert b"no request within" in answer


def test_a_flood_of_idle_connections_does_not_lock_the_owner_out(daemon, state_dir: Path) -> None:
    app, _mic = daemon
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 5000
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, wanted + 200), hard), hard))
    threads_before = threading.active_count()
    flood: list[socket.socket] = []
    try:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100
        for _ in range(min(wanted, limit)):
            sock = socket.socket(socket.AF_UNIX)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # a full backlog: keep the fd, as an attacker would
                sock.connect(str(socket_path(state_dir)))
            flood.append(sock)
        peak_threads = threading.active_count()
        sd = ["--state-dir", str(state_dir)]
        muted = run_cli("mute", *sd)
        assert (muted.returncode, muted.stdout.strip()) == (0, b"now muted"), muted.stderr.decode()
        assert app.privacy.muted
        unmuted = run_cli("unmute", *sd)
        assert (unmuted.returncode, unmuted.stdout.strip()) == (0, b"now listening"), unmuted.stderr.decode()
        print(f"{len(flood)} idle connections: threads {threads_before} -> {peak_threads} (peak "
              f"{threading.active_count()} after the CLI ran); mute and unmute answered")
        assert threading.active_count() <= threads_before + 4
        assert peak_threads <= threads_before + 4
    finally:
        for sock in flood:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_unmute_that_cannot_be_saved_before_the_cli_gives_up_never_happens(daemon, state_dir: Path) -> None:
    app, _mic = daemon
    sd = ["--state-dir", str(state_dir)]
    assert run_cli("mute", *sd).returncode == 0
    # The SD card hangs on the unmute's write for longer than the CLI waits (5 s).
    with faults.inject(pattern="state.json", step="fsync", delay=7.0, err=0, count=1) as stall:
        proc = run_cli("unmute", *sd)
        assert proc.returncode != 0 and b"did not answer" in proc.stderr
        assert wait_until(lambda: stall.done == 1, timeout=30)
    assert not wait_until(lambda: not app.privacy.muted, timeout=2.0), \
        "the unmute took effect after the owner was told it failed"
    assert json.loads((state_dir / "state.json").read_text())["muted"] is True
    assert "MUTED" in run_cli("status", *sd).stdout.decode()
