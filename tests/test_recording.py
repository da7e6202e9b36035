"""Capture after a wake word, through the whole daemon, into the encrypted vault."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pyrage
import pytest
import soundfile

from tests.helpers import events_of, of_type, run_cli, scene
from voxkeep.owner import generate_identity

WEATHER = ("alexa", 0.3, "what will the weather be like tomorrow afternoon", 2.0)


@pytest.fixture
def owner(state_dir: Path) -> pyrage.x25519.Identity:
    """An owner key registered on the device; the secret stays with the test (the owner)."""
    secret, recipient = generate_identity()
    assert run_cli("owner", "add", recipient, "--state-dir", str(state_dir)).returncode == 0
    return pyrage.x25519.Identity.from_str(secret)


def _run(wav: Path, state_dir: Path) -> list[dict]:
    proc = run_cli("run", "--input", str(wav), "--events", "-", "--state-dir", str(state_dir), "-w", "alexa")
    assert proc.returncode == 0, proc.stderr.decode()
    return events_of(proc.stdout)


def test_an_utterance_is_stored_encrypted_from_the_wake_phrase_to_the_end_of_speech(
        tmp_path: Path, state_dir: Path, owner: pyrage.x25519.Identity) -> None:
    wav = scene(tmp_path / "ask.wav", 2.0, *WEATHER)
    events = _run(wav, state_dir)
    [wake] = of_type(events, "wake")
    [rec] = of_type(events, "recorded")
    path = state_dir / "vault" / "recordings" / f"{rec['recording_id']}.wav.age"
    blob = path.read_bytes()
    assert b"RIFF" not in blob and blob.startswith(b"age-encryption.org/v1")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    audio, rate = soundfile.read(io.BytesIO(pyrage.decrypt(blob, [owner])), dtype="int16")
    assert rate == 16000
    seconds = len(audio) / rate
    # From the wake phrase (pre-roll, not the silence before it) to the end of the question.
    assert 2.5 <= seconds <= 6.5
    assert seconds == pytest.approx(rec["duration"], abs=0.01)
    assert rec["t"] > wake["t"] + 1.5  # the question after the wake word is in it
    listed = run_cli("recordings", "list", "--state-dir", str(state_dir)).stdout.decode()
    assert rec["recording_id"] in listed


def test_without_an_owner_nothing_is_recorded_and_status_says_why(tmp_path: Path, state_dir: Path) -> None:
    wav = scene(tmp_path / "ask.wav", 1.0, *WEATHER)
    events = _run(wav, state_dir)
    assert of_type(events, "wake") and not of_type(events, "recorded")
    assert "owner" in of_type(events, "handled")[0]["reason"]
    status = run_cli("status", "--state-dir", str(state_dir)).stdout.decode()
    assert "voxkeep owner init" in status
    assert not list((state_dir / "vault" / "recordings").iterdir())


def test_not_recording_mode_keeps_nothing(tmp_path: Path, state_dir: Path, owner) -> None:
    run_cli("recording", "off", "--state-dir", str(state_dir))
    events = _run(scene(tmp_path / "ask.wav", 1.0, *WEATHER), state_dir)
    assert of_type(events, "wake")
    assert not of_type(events, "recorded")
    assert of_type(events, "handled")[0]["reason"] == "not recording"
    assert not list((state_dir / "vault" / "recordings").iterdir())


def test_retention_zero_keeps_nothing(tmp_path: Path, state_dir: Path, owner) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[vault]\nretention_days = 0\n")
    proc = run_cli("run", "--config", str(config), "--input", str(scene(tmp_path / "a.wav", 1.0, *WEATHER)),
                   "--events", "-", "--state-dir", str(state_dir), "-w", "alexa")
    events = events_of(proc.stdout)
    assert of_type(events, "wake") and not of_type(events, "recorded")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root (CI runs as root)")
def test_a_full_disk_loses_the_recording_not_the_speaker(tmp_path: Path, owner) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=360k,mode=0700", "tmpfs", str(small)], check=True)
    try:
        state = small / "state"
        _, recipient = generate_identity()
        run_cli("owner", "add", recipient, "--state-dir", str(state))
        parts = [1.0]
        for _ in range(4):
            parts += [*WEATHER]
        events = _run(scene(tmp_path / "many.wav", *parts), state)
        assert len(of_type(events, "wake")) == 4  # it kept listening after the disk filled
        stored = of_type(events, "recorded")
        failed = [e for e in of_type(events, "notice") if e["level"] == "error"]
        assert stored and failed and "disk full" in failed[0]["message"]
        files = list((state / "vault" / "recordings").iterdir())
        assert sorted(f.name for f in files) == sorted(f"{e['recording_id']}.wav.age" for e in stored)
        assert not any(f.name.endswith(".tmp") for f in files)
    finally:
        subprocess.run(["umount", str(small)], check=True)
