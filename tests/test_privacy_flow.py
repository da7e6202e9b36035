"""The privacy promises through the whole daemon: voice commands, the button, the LED, restarts."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from tests.helpers import events_of, of_type, run_cli, scene
from voxkeep.app import build_app
from voxkeep.audio import MicSource
from voxkeep.config import load_settings
from voxkeep.events import Event, State
from voxkeep.testing.fakes import FakePyAudio
from voxkeep.testing.speech import silence, speak

LED, BUTTON = 17, 27


def _run(wav: Path, state_dir: Path, *extra: str) -> tuple[list[dict], str]:
    proc = run_cli("run", "--input", str(wav), "--events", "-", "--state-dir", str(state_dir), "-w", "alexa",
                   *extra)
    assert proc.returncode == 0, proc.stderr.decode()
    return events_of(proc.stdout), proc.stderr.decode()


def test_dont_record_anymore_stops_recording_and_lights_the_led(tmp_path: Path, state_dir: Path) -> None:
    settings = load_settings(None, {"state_dir": str(state_dir), "wake": {"words": ["alexa"]},
                                    "gpio": {"led_pin": LED}})
    wav = scene(tmp_path / "stop.wav", 1.0, "alexa", 0.3, "please don't record anymore", 2.0,
                "alexa", 0.3, "what time is it", 2.0)
    factory = MockFactory()
    seen: list[Event] = []
    from voxkeep.audio import WavFileSource

    app = build_app(settings, source=WavFileSource(wav), pin_factory=factory, extra_observers=[seen.append],
                    control=False)
    app.run()
    commands = [e.to_dict() for e in seen if e.TYPE == "command"]
    assert [c["command"] for c in commands] == ["stop_recording"]
    modes = [e.mode for e in seen if isinstance(e, State)]
    assert "not_recording" in modes
    assert app.privacy.mode.value == "not_recording"
    handled = [e.to_dict() for e in seen if e.TYPE == "handled"]
    assert [h["outcome"] for h in handled] == ["command", "not_recorded"]
    # The daemon has stopped (mic closed): the LED is on; before that, not recording kept it on too.
    assert factory.pin(LED).state == 1


def test_a_request_after_waiting_for_the_led_is_obeyed(tmp_path: Path, state_dir: Path) -> None:
    """People say the wake word, wait for the LED, then speak: a 3 s pause used to lose the command."""
    events, _ = _run(scene(tmp_path / "p.wav", 1.0, "alexa", 3.0, "please don't record anymore", 2.0), state_dir)
    assert [c["command"] for c in of_type(events, "command")] == ["stop_recording"]
    assert [s["mode"] for s in of_type(events, "state")][-1] == "not_recording"


@pytest.mark.parametrize("sentence", [
    "I don't want any more coffee",
    "record my favourite show tonight",
    "stop the music",
    "delete the last email",
])
def test_confusable_sentences_change_nothing(tmp_path: Path, state_dir: Path, sentence: str) -> None:
    events, _ = _run(scene(tmp_path / "c.wav", 1.0, "alexa", 0.3, sentence, 2.0), state_dir)
    assert of_type(events, "wake")
    assert of_type(events, "command") == []
    assert {e["mode"] for e in of_type(events, "state")} == {"listening"}


def test_button_closes_the_stream_and_voice_cannot_reopen_it(state_dir: Path) -> None:
    settings = load_settings(None, {"state_dir": str(state_dir), "wake": {"words": ["alexa"]},
                                    "gpio": {"led_pin": LED, "button_pin": BUTTON},
                                    "commands": {"allow_voice_resume": True}})
    room = np.concatenate([silence(1.0), speak("alexa"), silence(0.3), speak("start recording again"),
                           silence(60.0)])
    mic = FakePyAudio(room, accepts_16k=True, speed=2.0)
    factory = MockFactory()
    events: queue.Queue[Event] = queue.Queue()
    app = build_app(settings, source=MicSource(pa_module=mic), pin_factory=factory, extra_observers=[events.put])
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()

    def wait_state(pred) -> State:
        while True:
            e = events.get(timeout=20)
            if isinstance(e, State) and pred(e):
                return e

    try:
        wait_state(lambda e: e.mic_open)
        app.bus.drain()  # the LED follows on its own observer thread
        assert factory.pin(LED).state == 0  # listening: dark
        button = factory.pin(BUTTON)
        button.drive_low()
        button.drive_high()  # a short press
        closed = wait_state(lambda e: not e.mic_open)
        assert (closed.mode, closed.cause) == ("muted", "mute")
        assert mic.open_streams == []
        app.bus.drain()
        assert factory.pin(LED).state == 1
        # Whatever is said now is never heard: the stream is closed and voice cannot unmute.
        threading.Event().wait(2.0)
        assert mic.open_streams == [] and app.privacy.muted
        button.drive_low()
        button.drive_high()
        reopened = wait_state(lambda e: e.mic_open)
        assert reopened.mode == "listening" and len(mic.open_streams) == 1
        assert reopened.t >= closed.t + 2.0  # event times count the muted wall time too
    finally:
        app.daemon.stop.set()
        thread.join(10)


def test_a_killed_daemon_comes_back_in_the_same_mode(state_dir: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; from voxkeep.cli import main; sys.exit(main())", "run",
           "--input", "-", "--events", "-", "--state-dir", str(state_dir), "-w", "alexa"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(silence(1.0).tobytes())
        proc.stdin.flush()
        while json.loads(proc.stdout.readline()).get("mic_open") is not True:
            pass
        assert run_cli("recording", "off", "--state-dir", str(state_dir)).returncode == 0
        while json.loads(proc.stdout.readline()).get("mode") != "not_recording":
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert "NOT recording" in run_cli("status", "--state-dir", str(state_dir)).stdout.decode()


def test_a_damaged_state_file_means_muted_with_one_clear_line(tmp_path: Path, state_dir: Path) -> None:
    (state_dir / "state.json").write_text('{"muted": fals')
    events, stderr = _run(scene(tmp_path / "w.wav", 1.0, "alexa", 1.0), state_dir)
    assert of_type(events, "wake") == []  # nothing processed
    assert {e["mode"] for e in of_type(events, "state")} == {"muted"}
    assert not any(e["mic_open"] for e in of_type(events, "state"))
    lines = [ln for ln in stderr.splitlines() if "state.json" in ln]
    assert len(lines) == 1 and "muted" in lines[0] and "Traceback" not in stderr


# -- deletions are asked back: a "confirm?" tone, then only a clear "yes" deletes ----------------------

TWO_REQUESTS = (1.5, "alexa", 0.3, "add coffee and oat milk to the shopping list", 2.0,
                "alexa", 0.3, "remind me to call the dentist tomorrow morning", 2.0)


@pytest.fixture
def owned(state_dir: Path) -> Path:
    """A state dir with an owner key, so requests are recorded."""
    from voxkeep.owner import generate_identity

    _, recipient = generate_identity()
    assert run_cli("owner", "add", recipient, "--state-dir", str(state_dir)).returncode == 0
    return state_dir


def _recording_ids(state_dir: Path) -> set[str]:
    return {p.name.split(".")[0] for p in (state_dir / "vault" / "recordings").iterdir()}


@pytest.mark.parametrize(("request_", "answer", "reason", "voice"), [
    ("delete what I just said", (), "no clear yes", "en-us"),                 # silence after the tone
    ("delete what I just said", ("no",), "no", "en-us"),
    # Near misses that this voice's "delete what I just sent" and "... sent today" are taken for:
    ("delete what I just sent", (), "no clear yes", "en+f2"),
    ("delete everything I sent today", (), "no clear yes", "en+f2"),
])
def test_a_deletion_without_a_yes_deletes_nothing(tmp_path: Path, owned: Path, request_: str,
                                                  answer: tuple[str, ...], reason: str, voice: str) -> None:
    wav = scene(tmp_path / "d.wav", *TWO_REQUESTS, "alexa", 0.3, request_, 1.2, *answer, 5.0, voice=voice)
    events, _ = _run(wav, owned)
    kept = {e["recording_id"] for e in of_type(events, "recorded")}
    assert len(kept) == 2 and _recording_ids(owned) == kept  # everything stored is still there
    assert of_type(events, "deleted") == []
    command = "delete_today" if "today" in request_ else "delete_last"
    assert [(e["command"], e["seconds"]) for e in of_type(events, "confirm")] == [(command, 4.0)]
    assert [(e["command"], e["reason"]) for e in of_type(events, "not_deleted")] == [(command, reason)]


def test_yes_after_the_confirmation_tone_deletes_the_last_recording_and_keeps_no_answer(
        tmp_path: Path, owned: Path) -> None:
    wav = scene(tmp_path / "y.wav", *TWO_REQUESTS, "alexa", 0.3, "delete what I just said", 1.2, "yes", 5.0)
    events, _ = _run(wav, owned)
    first, _second = (e["recording_id"] for e in of_type(events, "recorded"))
    kinds = [e["type"] for e in events]
    assert kinds.index("confirm") < kinds.index("deleted")
    assert [(e["count"], e["cause"]) for e in of_type(events, "deleted")] == [(1, "voice:delete_last")]
    assert of_type(events, "not_deleted") == []
    assert _recording_ids(owned) == {first}  # the answer window was not stored either
    assert [e["outcome"] for e in of_type(events, "handled")][-1] == "command"
    audit = [json.loads(line) for line in (owned / "vault" / "audit.jsonl").read_text().splitlines()]
    assert [(e["cause"], e["count"]) for e in audit if e["kind"] == "recordings_deleted"] == [("voice", 1)]


def test_with_confirm_deletes_off_a_deletion_is_one_shot(tmp_path: Path, owned: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[commands]\nconfirm_deletes = false\n")
    wav = scene(tmp_path / "o.wav", *TWO_REQUESTS, "alexa", 0.3, "delete what I just said", 2.0)
    events, _ = _run(wav, owned, "--config", str(config))
    first, _second = (e["recording_id"] for e in of_type(events, "recorded"))
    assert of_type(events, "confirm") == []
    assert _recording_ids(owned) == {first}


def _seconds(*parts: str | float) -> float:
    return sum(p if isinstance(p, float) else len(speak(p)) / 16000 for p in parts)


def test_a_mute_during_the_answer_window_deletes_nothing_even_after_a_yes(tmp_path: Path, owned: Path) -> None:
    before = (*TWO_REQUESTS, "alexa", 0.3, "delete what I just said", 1.2)
    wav = scene(tmp_path / "m.wav", *before, "yes", 5.0)
    t_yes = _seconds(*before)
    settings = load_settings(None, {"state_dir": str(owned), "wake": {"words": ["alexa"]}})
    seen: list[Event] = []
    app: list = []

    def press(t: float) -> None:  # the mute button, pressed just before the "yes" and released after it
        if abs(t - (t_yes - 0.16)) < 0.04:
            app[0].privacy.request("mute", "button")
        elif abs(t - (t_yes + 1.6)) < 0.04:
            app[0].privacy.request("unmute", "button")

    from voxkeep.audio import WavFileSource

    app.append(build_app(settings, source=WavFileSource(wav), extra_observers=[seen.append], on_frame=press,
                         control=False))
    app[0].run()
    events = [e.to_dict() for e in seen]
    assert [e["reason"] for e in of_type(events, "not_deleted")] == ["muted"]
    assert of_type(events, "deleted") == []
    assert len(_recording_ids(owned)) == 2


def test_a_new_wake_word_instead_of_an_answer_deletes_nothing_and_is_heard(tmp_path: Path, owned: Path) -> None:
    wav = scene(tmp_path / "w.wav", *TWO_REQUESTS, "alexa", 0.3, "delete what I just said", 1.2,
                "alexa", 0.3, "what will the weather be like tomorrow", 3.0)
    events, _ = _run(wav, owned)
    assert [e["reason"] for e in of_type(events, "not_deleted")] == ["wake word"]
    assert of_type(events, "deleted") == []
    assert len(of_type(events, "recorded")) == 3 and len(_recording_ids(owned)) == 3  # the new request is kept


def _said(text: str, t: float) -> Any:
    """The utterance of ``text`` after an "alexa" wake at audio time ``t``, as the loop hands it over."""
    from voxkeep.capture import Utterance

    pcm = np.concatenate([silence(0.3), speak(text), silence(0.8)])
    return Utterance(t, t + len(pcm) / 16000, "alexa", 0.9, pcm, 0, 0, 0, True, 0.0)


@contextlib.contextmanager
def _worker(state_dir: Path, answers: Any, on_request: Any = None) -> Iterator[tuple[Any, Any, list[Event]]]:
    """The utterance worker as the daemon runs it, on a vault with an owner: (worker, vault, events)."""
    from voxkeep.commands import CommandRecognizer
    from voxkeep.handling import UtteranceWorker
    from voxkeep.owner import generate_identity
    from voxkeep.privacy import PrivacyState
    from voxkeep.vault import Vault

    settings = load_settings(None, {"state_dir": str(state_dir), "wake": {"words": ["alexa"]}})
    seen: list[Event] = []
    with Vault(state_dir, settings.vault) as vault:
        vault.add_recipient(generate_identity()[1])
        worker = UtteranceWorker(settings, PrivacyState(state_dir / "state.json"), seen.append,
                                 recognizer=CommandRecognizer(settings.commands, ["alexa"]), vault=vault,
                                 answers=answers, on_request=on_request)
        worker.start()
        yield worker, vault, seen


def test_the_answer_never_reaches_the_vault_or_the_satellite(state_dir: Path) -> None:
    """The worker's contract: an answer window is judged yes/no and dropped, whatever it holds."""
    from voxkeep.commands import AnswerRecognizer
    from voxkeep.config import CommandSettings
    from voxkeep.handling import Answer

    handed: list[Any] = []
    with _worker(state_dir, lambda: AnswerRecognizer(CommandSettings()),
                 on_request=lambda u: handed.append(u) or None) as (worker, vault, seen):
        worker.submit(_said("what will the weather be like tomorrow", 1.0), wait=True)
        worker.submit(_said("delete what I just said", 10.0), wait=True)
        assert worker.take_answer_request() == 4.0 and worker.take_answer_request() is None  # one at a time
        answer = np.concatenate([silence(0.3), speak("yes, and what will the weather be like"), silence(0.8)])
        worker.submit(Answer(t_end=14.0, pcm=answer), wait=True)  # not a clear yes: kept, never passed on
        worker.submit(_said("delete what I just said", 20.0), wait=True)
        worker.submit(Answer(t_end=24.0, pcm=np.concatenate([silence(0.3), speak("yes"), silence(0.8)])), wait=True)
        worker.stop()
        assert len(handed) == 1 and handed[0].t_wake == 1.0  # only the weather request went to the satellite
        assert [e.TYPE for e in seen if e.TYPE in ("recorded", "confirm", "not_deleted", "deleted")] == \
            ["recorded", "confirm", "not_deleted", "confirm", "deleted"]
        assert vault.list() == []


def _broken() -> Any:
    from voxkeep.errors import ModelError

    raise ModelError("the pocketsphinx en-us model is missing; reinstall pocketsphinx")


@pytest.mark.parametrize("answers", [_broken, None], ids=["damaged model", "none given"])
def test_an_answer_that_cannot_be_heard_deletes_nothing(state_dir: Path, answers: Any) -> None:
    """The answer recogniser is built on the first deletion asked back; if it cannot be (a damaged model), or the
    worker was given none, the deletion is still asked back (it was heard at the common bar, which counts on the
    "yes"), a "yes" deletes nothing, and the next request is handled as usual."""
    from voxkeep.handling import Answer

    with _worker(state_dir, answers) as (worker, vault, seen):
        worker.submit(_said("what will the weather be like tomorrow", 1.0), wait=True)
        worker.submit(_said("delete what I just said", 10.0), wait=True)
        worker.submit(Answer(t_end=14.0, pcm=np.concatenate([silence(0.3), speak("yes"), silence(0.8)])), wait=True)
        worker.submit(_said("what time is it", 20.0), wait=True)
        worker.stop()
        assert [e.TYPE for e in seen if e.TYPE in ("recorded", "confirm", "not_deleted", "deleted")] == \
            ["recorded", "confirm", "not_deleted", "recorded"]
        assert len(vault.list()) == 2


def test_an_early_window_is_only_judged_and_its_command_stands_for_that_wake(state_dir: Path) -> None:
    """While the loop waits on for a request, the short sound after the wake is judged beside it. That judging
    obeys, stores and passes on nothing; a command found in it is what that wake's utterance is taken for."""
    import dataclasses

    handed: list[Any] = []
    with _worker(state_dir, None, on_request=lambda u: handed.append(u) or None) as (worker, vault, seen):
        worker.peek(_said("what will the weather be like tomorrow", 1.0), wait=True)
        assert worker.take_peek_verdict()[1] is False and worker.take_peek_verdict() is None
        early = _said("stop recording", 5.0)
        worker.peek(early, wait=True)
        assert worker.take_peek_verdict() == (5.0, True)
        assert seen == [] and handed == []  # nothing obeyed, stored or sent off yet
        later = np.concatenate([early.pcm, speak("what will the weather be like"), silence(0.8)])
        worker.submit(dataclasses.replace(early, pcm=later, t_end=5.0 + len(later) / 16000), wait=True)
        worker.submit(_said("what time is it", 10.0), wait=True)  # not recording now: nothing kept
        worker.stop()
        assert [(e.TYPE, getattr(e, "command", None)) for e in seen if e.TYPE in ("command", "recorded")] == \
            [("command", "stop_recording")]
        assert handed[0].t_wake == 10.0 and len(handed) == 1 and vault.list() == []


def test_from_a_live_microphone_a_command_after_waiting_for_the_led_is_obeyed(state_dir: Path) -> None:
    """Live, the short sound after the wake (the end of "alexa" and its echo in a reverberant room) is judged
    beside the loop while the speaker waits on; no command in it, so the request after the wait is heard."""
    from tests.helpers import reverberant

    settings = load_settings(None, {"state_dir": str(state_dir), "wake": {"words": ["alexa"]}})
    said = np.concatenate([silence(1.0), speak("alexa"), silence(2.5), speak("stop recording"), silence(2.0)])
    wet = reverberant(said, 0.6).astype(np.float64)
    wet += np.random.default_rng(3).normal(0.0, 12.0, len(wet))  # a quiet room, never exact zeros
    mic = FakePyAudio(np.concatenate([np.clip(wet, -32768, 32767).astype(np.int16), silence(30.0)]),
                      accepts_16k=True, speed=2.0)
    events: queue.Queue[Event] = queue.Queue()
    app = build_app(settings, source=MicSource(pa_module=mic), extra_observers=[events.put], control=False)
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    try:
        while (e := events.get(timeout=20)).TYPE != "handled":
            pass
        assert e.outcome == "command" and app.privacy.mode.value == "not_recording"
    finally:
        app.daemon.stop.set()
        thread.join(10)
