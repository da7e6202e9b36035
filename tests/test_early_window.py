"""The loop and the early window: a short sound right after the wake is judged beside the loop, and only the
verdict on this wake's own window ends the wait for a request (voxkeep.capture.WAKE_TAIL_SECONDS)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from voxkeep.audio import WavFileSource
from voxkeep.bus import EventBus
from voxkeep.capture import COMMAND_LEAD_SECONDS, FRAME_SECONDS, Utterance
from voxkeep.config import load_settings
from voxkeep.daemon import Daemon
from voxkeep.privacy import PrivacyState
from voxkeep.testing.speech import write_wav
from voxkeep.wake import WakeHit

WAKE_AT = 1.0


class _Wakes:
    """A wake word heard at the given audio times, nothing else: the wake models are not what is tested here."""

    words = ("alexa",)
    frames_scored = 0

    def __init__(self, *at: float) -> None:
        self.last_scores = {"alexa": 0.0}
        self._frames = {round(t / FRAME_SECONDS) for t in at}
        self._frame = 0

    def process(self, frame: np.ndarray) -> list[WakeHit]:
        self._frame += 1
        return [WakeHit("alexa", 0.9)] if self._frame in self._frames else []

    def reset(self) -> None:
        pass


class _SlowWorker:
    """Judges the early windows handed over as told (``commands``, in turn), and hands each verdict back, one a
    frame in the order they were handed over, only from audio time ``verdict_at`` on."""

    def __init__(self, *commands: bool, verdict_at: float) -> None:
        self.commands, self.verdict_at, self.t = commands, verdict_at, 0.0
        self.submitted: list[Utterance] = []
        self.peeked: list[Utterance] = []
        self.stats: dict[str, int] = {}
        self._told = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, utterance: Utterance, *, wait: bool) -> bool:
        self.submitted.append(utterance)
        return True

    def peek(self, early: Utterance, *, wait: bool) -> None:
        self.peeked.append(early)

    def take_peek_verdict(self) -> tuple[float, bool] | None:
        if self._told == len(self.peeked) or self.t < self.verdict_at:
            return None
        self._told += 1
        return self.peeked[self._told - 1].t_wake, self.commands[self._told - 1]

    def take_answer_request(self) -> float | None:
        return None

    def cancel_answer(self, reason: str, t: float, *, wait: bool) -> None: ...


def _run(tmp_path: Path, worker: _SlowWorker, wakes: tuple[float, ...] = (WAKE_AT,),
         sounds: tuple[tuple[float, float], ...] = ((WAKE_AT, 0.24), (3.5, 1.0))) -> None:
    """A quiet room with ``wakes`` and ``sounds`` (start, seconds); by default the wake at 1 s, 0.24 s of sound
    right after it, then a request from 3.5 s to 4.5 s."""
    rng = np.random.default_rng(0)
    audio = rng.normal(0.0, 10.0, 8 * 16000)
    for start, seconds in sounds:
        i = round(start * 16000)
        audio[i:i + round(seconds * 16000)] += rng.normal(0.0, 4000.0, round(seconds * 16000))
    settings = load_settings(None, {"state_dir": str(tmp_path), "wake": {"words": ["alexa"]}})
    daemon = Daemon(settings, WavFileSource(write_wav(tmp_path / "a.wav", audio.astype(np.int16))), _Wakes(*wakes),
                    PrivacyState(tmp_path / "state.json"), EventBus(live=False), worker,  # type: ignore[arg-type]
                    on_frame=lambda t: setattr(worker, "t", t), stop=threading.Event())
    daemon.run()


def test_a_command_in_the_early_window_is_the_wakes_one_utterance(tmp_path: Path) -> None:
    """The verdict comes 0.3 s after the window was handed over: the wait ends then, the request after it is not
    waited for, and the window judged is the one handed over, once."""
    worker = _SlowWorker(True, verdict_at=WAKE_AT + 1.3)
    _run(tmp_path, worker)
    assert len(worker.peeked) == 1
    assert worker.submitted == [worker.peeked[0]] and worker.submitted[0] is worker.peeked[0]
    assert worker.peeked[0].t_end < WAKE_AT + 1.2  # 0.24 s of sound and 0.7 s of quiet after the wake


@pytest.mark.parametrize(("command", "verdict_at"), [(False, WAKE_AT + 1.3), (True, 7.0)])
def test_without_a_timely_command_the_request_after_the_wait_is_heard(tmp_path: Path, command: bool,
                                                                       verdict_at: float) -> None:
    """No command in the early window, or a verdict that comes after the utterance ended: one utterance, holding
    the sound after the wake and the request, with most of the pause between them left out."""
    worker = _SlowWorker(command, verdict_at=verdict_at)
    _run(tmp_path, worker)
    assert len(worker.peeked) == 1 and len(worker.submitted) == 1
    u = worker.submitted[0]
    assert u.t_end == pytest.approx(4.5 + 0.7, abs=FRAME_SECONDS * 2)  # the request, heard out
    window = u.command_window(4.0)
    blocks = window[:len(window) // 160 * 160].astype(np.float64).reshape(-1, 160)  # 10 ms each
    loud = np.sqrt(np.mean(blocks ** 2, axis=1)) > 1000
    assert loud.sum() / 100 == pytest.approx(0.24 + 1.0, abs=0.03)  # both sounds are in it ...
    assert len(window) / 16000 < COMMAND_LEAD_SECONDS + u.t_end - u.t_wake - 1.0  # ... at least 1 s of the pause not


def test_a_verdict_on_an_earlier_wakes_window_does_not_end_the_next_one(tmp_path: Path) -> None:
    """Two wakes 3.5 s apart, each with a short sound after it; the first window held a command, but its verdict
    comes only once the second wake's window is waiting on: the second request is still heard out."""
    worker = _SlowWorker(True, False, verdict_at=5.6)
    _run(tmp_path, worker, wakes=(WAKE_AT, 4.5), sounds=((WAKE_AT, 0.24), (4.5, 0.24), (6.0, 1.0)))
    assert len(worker.peeked) == 2 and len(worker.submitted) == 2
    first, second = worker.submitted
    assert first.t_wake < 2.0 < second.t_wake
    assert second.t_end == pytest.approx(7.0 + 0.7, abs=FRAME_SECONDS * 2)  # not ended by the first's verdict
