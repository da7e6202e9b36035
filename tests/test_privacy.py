"""The privacy state machine's promises: who may do what, and that the mode survives a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from voxkeep.events import State
from voxkeep.privacy import STATE_FILE, Mode, PrivacyState


def _state(tmp_path: Path, **kw) -> tuple[PrivacyState, list[State]]:
    seen: list[State] = []
    ps = PrivacyState(tmp_path / STATE_FILE, **kw)
    ps.subscribe(seen.append)
    return ps, seen


def test_voice_can_stop_recording_but_never_unmute(tmp_path: Path) -> None:
    ps, seen = _state(tmp_path)
    assert ps.request("recording_off", "voice").ok
    assert ps.mode is Mode.NOT_RECORDING
    assert ps.request("mute", "button").ok
    refused = ps.request("unmute", "voice")
    assert not refused.ok and "voice" in refused.message
    assert ps.mode is Mode.MUTED
    assert [e.mode for e in seen] == ["not_recording", "muted"]


def test_unmute_returns_to_the_owners_recording_choice(tmp_path: Path) -> None:
    ps, _ = _state(tmp_path)
    ps.request("recording_off", "cli")
    ps.request("mute", "button")
    ps.request("unmute", "button")
    assert ps.mode is Mode.NOT_RECORDING  # never silently back to recording


def test_voice_resume_only_when_the_owner_allowed_it(tmp_path: Path) -> None:
    ps, _ = _state(tmp_path)
    ps.request("recording_off", "voice")
    assert not ps.request("recording_on", "voice").ok
    assert ps.mode is Mode.NOT_RECORDING
    (tmp_path / "b").mkdir()
    allowed, _ = _state(tmp_path / "b", allow_voice_resume=True)
    allowed.request("recording_off", "voice")
    assert allowed.request("recording_on", "voice").ok
    assert allowed.mode is Mode.LISTENING


def test_hardware_switch_is_a_latch_no_software_path_can_unmute(tmp_path: Path) -> None:
    ps, seen = _state(tmp_path)
    ps.set_switch(True)
    assert ps.mode is Mode.MUTED and seen[-1].cause == "switch"
    for cause in ("cli", "mqtt", "button", "voice"):
        assert not ps.request("unmute", cause).ok
        assert ps.mode is Mode.MUTED
    ps.set_switch(False)
    assert ps.mode is Mode.MUTED  # releasing the switch leaves the decision to the owner
    assert ps.request("unmute", "cli").ok


def test_opening_changes_are_saved_before_observers_hear_and_mutes_by_the_time_they_return(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    ps = PrivacyState(path)
    on_disk: list[str] = []
    ps.subscribe(lambda e: on_disk.append(json.loads(path.read_text())["mode"] if path.exists() else "-"))
    ps.request("mute", "cli")  # a mute is in force first (the stream closes at once), then saved
    assert json.loads(path.read_text())["mode"] == "muted"
    ps.request("unmute", "cli")  # an unmute is only in force once saved
    assert on_disk[-1] == "listening"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ps.request("mute", "cli")
    assert PrivacyState(path).mode is Mode.MUTED


@pytest.mark.parametrize("content", ["{not json", '{"muted": "yes", "recording": true}', "[]", "", '{"mode": 1}'])
def test_a_damaged_state_file_falls_back_to_muted(tmp_path: Path, content: str) -> None:
    path = tmp_path / STATE_FILE
    path.write_text(content)
    ps = PrivacyState(path)
    assert ps.mode is Mode.MUTED
    assert ps.load_problem and str(path) in ps.load_problem and "muted" in ps.load_problem


def test_mic_state_is_reported_not_chosen(tmp_path: Path) -> None:
    ps, seen = _state(tmp_path)
    ps.set_mic_open(True, "mic")
    ps.set_mic_open(True, "mic")  # no change, no event
    ps.set_mic_open(False, "mute")
    assert [(e.mic_open, e.cause) for e in seen] == [(True, "mic"), (False, "mute")]
    assert not (tmp_path / STATE_FILE).exists()  # facts are not persisted, only choices


KILLER = """
import os, sys
from pathlib import Path
from voxkeep.privacy import PrivacyState
ps = PrivacyState(Path(sys.argv[1]))
ps.request(sys.argv[2], "cli")
print("done", flush=True)
os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("action,mode", [("mute", "muted"), ("recording_off", "not_recording")])
def test_mode_survives_sigkill(tmp_path: Path, action: str, mode: str) -> None:
    path = tmp_path / STATE_FILE
    proc = subprocess.run([sys.executable, "-c", KILLER, str(path), action], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL and b"done" in proc.stdout
    assert PrivacyState(path).mode.value == mode
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert os.stat(path).st_size > 0
