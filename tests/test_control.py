"""The owner's CLI against a running daemon: mute, unmute, recording on/off, status; owner only."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli
from voxkeep.app import build_app
from voxkeep.audio import MicSource
from voxkeep.config import load_settings
from voxkeep.control import socket_path
from voxkeep.testing.fakes import FakePyAudio
from voxkeep.testing.speech import silence


@pytest.fixture
def daemon(state_dir: Path):
    """A daemon on a (silent) fake microphone, serving its control socket."""
    yield from _daemon(state_dir)


@pytest.fixture
def reachable_daemon():
    """A daemon whose state dir's parents other users can traverse (pytest's own tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="voxkeep-test-", dir="/tmp"))
    os.chmod(path, 0o711)
    try:
        yield from _daemon(path / "state")
    finally:
        shutil.rmtree(path)


def _daemon(state_dir: Path):
    settings = load_settings(None, {"state_dir": str(state_dir), "wake": {"words": ["alexa"]}})
    mic = FakePyAudio(silence(0.1), accepts_16k=True, speed=1.0)
    app = build_app(settings, source=MicSource(pa_module=mic))
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    for _ in range(100):
        if socket_path(state_dir).exists() and app.privacy.mic_open:
            break
        threading.Event().wait(0.05)
    yield app, mic
    app.daemon.stop.set()
    thread.join(10)


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


def _as_nobody(path: Path) -> str:
    """Try the control socket as user 'nobody' in a forked child; return what happened."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no exec, so nothing on disk needs to be readable by nobody
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(str(path))
                sock.sendall(b'{"action": "mute"}\n')
                answer = sock.recv(4096).decode()
        except OSError as exc:
            answer = type(exc).__name__
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as fh:
        return fh.read()


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
