"""The utterance after a wake word ends when the speaker stops, in a quiet room or a noisy one."""

from __future__ import annotations

import numpy as np
import pytest

from voxkeep import FRAME_SAMPLES
from voxkeep.capture import FRAME_SECONDS, Endpointer, UtteranceCapture, frame_dbfs
from voxkeep.testing.speech import speak


def _frames(audio: np.ndarray) -> list[np.ndarray]:
    n = len(audio) // FRAME_SAMPLES
    return [audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES] for i in range(n)]


def _noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rms = 32768 * 10 ** (dbfs / 20)
    return (np.random.default_rng(seed).normal(0, rms, int(seconds * 16000))).astype(np.int16)


def _capture(room_dbfs: float, after: np.ndarray, max_seconds: float = 10.0) -> float:
    """Seconds captured after the wake, in a room at ``room_dbfs`` heard for 3 s beforehand."""
    endpointer = Endpointer()
    for frame in _frames(_noise(3.0, room_dbfs)):
        endpointer.observe(frame_dbfs(frame))
    cap = UtteranceCapture(preroll=[], t_wake=0.0, wake_word="w", score=1.0, store_allowed=True, wall_time=0.0,
                           endpointer=endpointer, max_seconds=max_seconds, silence_seconds=0.7)
    for i, frame in enumerate(_frames(after), 1):
        if cap.feed(frame, i * FRAME_SECONDS) is not None:
            return i * FRAME_SECONDS
    return float("inf")


@pytest.mark.parametrize("room_dbfs", [-80.0, -50.0, -38.0])
def test_speech_ends_the_capture_soon_after_it_stops(room_dbfs: float) -> None:
    words = speak("what will the weather be like tomorrow")
    spoken = len(words) / 16000
    room = _noise(6.0, room_dbfs, seed=1)
    loud = words.astype(np.int32) + room[: len(words)]
    after = np.concatenate([np.clip(loud, -32768, 32767).astype(np.int16), room[len(words):]])
    took = _capture(room_dbfs, after)
    assert spoken <= took <= spoken + 1.5  # not cut short, and not run on to the maximum in a noisy room


def test_no_speech_after_the_wake_ends_after_a_short_grace() -> None:
    assert _capture(-60.0, _noise(8.0, -60.0)) == pytest.approx(2.0, abs=0.1)


def test_never_longer_than_the_maximum() -> None:
    endless = np.tile(speak("la la la la la la"), 6)
    assert _capture(-70.0, endless, max_seconds=4.0) == pytest.approx(4.0, abs=0.1)
