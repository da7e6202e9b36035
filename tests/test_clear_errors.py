"""Issue 14, item 13: inputs that used to end in a traceback each give one clear line (or a logged line)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import one_error_line, run_cli
from voxkeep.control import ControlServer


@pytest.fixture
def quiet_wav(tmp_path: Path) -> Path:
    path = tmp_path / "quiet.wav"
    soundfile.write(str(path), np.zeros(16000, np.int16), 16000)
    return path


@pytest.mark.parametrize("argv", [("recordings", "list"), ("audit", "verify"), ("run", "--input", "QUIET")])
def test_a_state_dir_that_is_a_file(tmp_path: Path, quiet_wav: Path, argv: tuple[str, ...]) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory")
    proc = run_cli(*(str(quiet_wav) if a == "QUIET" else a for a in argv), "--state-dir", str(state))
    assert proc.returncode == 1 and "is a file, not a directory" in one_error_line(proc.stderr)


def test_an_index_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "state" / "vault" / "index.sqlite3").mkdir(parents=True)
    proc = run_cli("recordings", "list", "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 1 and "index.sqlite3 is a directory" in one_error_line(proc.stderr)


def test_a_binary_recipients_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert run_cli("owner", "init", "--state-dir", str(state)).returncode == 0
    (state / "vault" / "recipients.txt").write_bytes(os.urandom(300) + b"\xff")
    for argv in (("owner", "list"), ("owner", "add", "age1ft2npjjrvpq90hgh7guxzsr98mf8wvju8r727nu3n66ynh2lcvjsamaqld")):
        proc = run_cli(*argv, "--state-dir", str(state))
        assert proc.returncode == 1 and "recipients.txt is damaged" in one_error_line(proc.stderr)


def test_events_to_a_full_device_is_one_logged_line_and_the_run_goes_on(tmp_path: Path, quiet_wav: Path) -> None:
    proc = run_cli("run", "--input", str(quiet_wav), "--events", "/dev/full", "--state-dir", str(tmp_path / "s"))
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert err.count("cannot write events to /dev/full (No space left on device)") == 1, err


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Path]:
    server = ControlServer(tmp_path, lambda request, *_: {"ok": True, "message": "", "echo": request})
    server.start()
    yield server.path
    server.stop()


@pytest.mark.parametrize("line", [b"[" * 4096, b"{" * 4000, b'{"a":' * 2000, b"\xff\xfe", b"[1]"])
def test_a_hostile_control_line_gets_an_answer(control: Path, line: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(control))
        sock.sendall(line[:4095] + b"\n")
        reply = json.loads(sock.makefile("rb").readline())
    assert reply["ok"] is False and reply["message"].startswith("bad request")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 300 kB tmpfs, as a nearly full SD card (needs root, as CI has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_at_start_up_says_the_disk_is_full(tiny_disk: Path, quiet_wav: Path) -> None:
    state = tiny_disk / "state"
    assert run_cli("owner", "init", "--state-dir", str(state)).returncode == 0
    filled = subprocess.run(["dd", "if=/dev/zero", f"of={tiny_disk / 'fill'}", "bs=4k"], capture_output=True,
                            check=False)
    assert b"No space left" in filled.stderr
    proc = run_cli("run", "--input", str(quiet_wav), "--state-dir", str(state))
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and "disk" in line and "full" in line and "restore" not in line, line


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory"])
def test_an_identity_that_is_not_a_file_neither_hangs_nor_fills_memory(tmp_path: Path, kind: str) -> None:
    state, key, bundle = tmp_path / "state", tmp_path / "owner.key", tmp_path / "b.zip"
    assert run_cli("owner", "init", "--identity-out", str(key), "--state-dir", str(state)).returncode == 0
    assert run_cli("export", "--out", str(bundle), "--state-dir", str(state)).returncode == 0
    identity = {"dev_zero": Path("/dev/zero"), "fifo": tmp_path / "fifo", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(identity)
    proc = run_cli("verify-export", str(bundle), "--identity", str(identity), timeout=60)
    assert proc.returncode == 1 and "not a plain file" in one_error_line(proc.stderr)


def test_an_export_onto_a_full_disk_says_so_and_leaves_nothing(tiny_disk: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert run_cli("owner", "init", "--state-dir", str(state)).returncode == 0
    subprocess.run(["dd", "if=/dev/zero", f"of={tiny_disk / 'fill'}", "bs=4k"], capture_output=True, check=False)
    proc = run_cli("export", "--out", str(tiny_disk / "export.zip"), "--state-dir", str(state))
    assert proc.returncode == 1 and "the disk is full" in one_error_line(proc.stderr)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["fill"]
