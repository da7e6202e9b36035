"""The utterance after a wake word ends when the speaker stops, in a quiet room or a noisy one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxkeep import FRAME_SAMPLES
from voxkeep.capture import FRAME_SECONDS, Endpointer, UtteranceCapture, speech_dbfs
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
        endpointer.observe(speech_dbfs(frame))
    cap = UtteranceCapture(preroll=[], t_wake=0.0, wake_word="w", score=1.0, store_allowed=True, wall_time=0.0,
                           endpointer=endpointer, max_seconds=max_seconds, silence_seconds=0.7)
    for i, frame in enumerate(_frames(after), 1):
        endpointer.observe(speech_dbfs(frame))  # the daemon hears every frame, in a capture too
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


def test_a_request_after_a_pause_may_last_the_maximum_from_where_it_begins() -> None:
    """The owner says the wake word, waits for the LED, then speaks: the wait is not taken off the request."""
    endpointer = Endpointer()
    cap = UtteranceCapture(preroll=[], t_wake=0.0, wake_word="w", score=1.0, store_allowed=True, wall_time=0.0,
                           endpointer=endpointer, max_seconds=4.0, silence_seconds=0.7, start_grace_seconds=4.0)
    after = np.concatenate([_noise(3.0, -70.0), np.tile(speak("la la la la la la"), 6)])
    done = None
    for i, frame in enumerate(_frames(after), 1):
        endpointer.observe(speech_dbfs(frame))
        done = cap.feed(frame, i * FRAME_SECONDS)
        if done is not None:
            break
    assert done is not None
    assert done.t_end == pytest.approx(7.0, abs=0.2)  # 3 s of waiting, then 4 s of request
    assert done.request_start / 16000 == pytest.approx(3.0 - 1.0, abs=0.1)  # the pause is marked, not cut


def test_a_short_sound_after_the_wake_is_offered_for_judging_and_the_wait_goes_on() -> None:
    """The wake model fires before "hey marvin" is over, and a room echoes it: 0.2 s of that sound, then the owner
    waits 2.5 s for the LED and speaks. The window as it stood after that sound is offered once to be judged (it
    may be a short command said at once); the capture waits on, and its window holds both the sound and the
    request, without most of the pause."""
    endpointer = Endpointer()
    cap = UtteranceCapture(preroll=[], t_wake=0.0, wake_word="w", score=1.0, store_allowed=True, wall_time=0.0,
                           endpointer=endpointer, max_seconds=4.0, silence_seconds=0.7, start_grace_seconds=4.0,
                           wait_past_tail=True)
    request, tail = speak("stop recording"), speak("la")
    tail = tail[np.argmax(np.abs(tail) > 0.05 * np.abs(tail).max()):][:3200]
    after = np.concatenate([tail, _noise(2.5, -70.0), request, _noise(2.0, -70.0)])
    for frame in _frames(_noise(3.0, -70.0, seed=1)):  # the room, heard before the wake word
        endpointer.observe(speech_dbfs(frame))
    done, offered = None, []
    for i, frame in enumerate(_frames(after), 1):
        endpointer.observe(speech_dbfs(frame))
        done = cap.feed(frame, i * FRAME_SECONDS)
        offered += [(i * FRAME_SECONDS, early) for early in [cap.take_early()] if early is not None]
        if done is not None:
            break
    assert done is not None
    assert len(offered) == 1
    at, early = offered[0]
    assert at == pytest.approx(0.2 + 0.7, abs=0.17)  # offered as soon as the quiet after the sound was heard
    assert len(early.command_window(4.0)) / 16000 == pytest.approx(at, abs=0.01)
    begins = 2.7 + np.nonzero(np.abs(request) > 0.05 * np.abs(request).max())[0][0] / 16000
    assert done.t_end > begins + len(request) / 16000 - 0.5  # the request was waited for, and heard out
    assert done.request_start / 16000 == pytest.approx(begins - 1.0, abs=0.16)
    window = done.command_window(4.0)
    assert np.array_equal(window[:3200], after[:3200])  # the early sound is still in the window ...
    assert len(window) / 16000 < done.t_end - 1.0  # ... and the pause (1.7 s of it at least) is not


def test_a_quick_yes_ends_the_answer_window_at_once() -> None:
    """The answer to "confirm?" has no wake phrase in front of it: a short "yes" and 0.7 s of quiet end it, with no
    waiting on for more (more talk in the window could only blur the yes)."""
    yes = speak("yes")
    yes = yes[np.argmax(np.abs(yes) > 0.05 * np.abs(yes).max()):][:4800]
    took = _capture(-70.0, np.concatenate([yes, _noise(4.0, -70.0)]), max_seconds=4.0)
    assert took == pytest.approx(0.3 + 0.7, abs=0.17)


@settings(deadline=None, database=None)  # a slow machine (the arm64 image's emulator) is not a failure
@given(st.lists(st.sampled_from([-100.0, -70.0, -50.0, -30.0, -10.0]), min_size=1, max_size=160))
def test_any_sound_ends_in_a_bounded_capture_and_window(levels: list[float]) -> None:
    """Whatever follows the wake (frame by frame: digital silence, a quiet room, speech, shouting), the capture
    ends within the wait plus the maximum, offers its early window at most once, and the window judged stays
    within the wake's tail, the short sound after it and the maximum request."""
    endpointer = Endpointer()
    cap = UtteranceCapture(preroll=[_noise(0.48, -70.0)], t_wake=0.0, wake_word="w", score=1.0,
                           store_allowed=True, wall_time=0.0, endpointer=endpointer, max_seconds=2.0,
                           silence_seconds=0.24, start_grace_seconds=1.0, lead_frames=1, wait_past_tail=True)
    done, offered, i = None, 0, 0
    while done is None:
        level = levels[i % len(levels)]
        frame = np.zeros(FRAME_SAMPLES, np.int16) if level < -90 else _noise(FRAME_SECONDS, level, seed=i)
        endpointer.observe(speech_dbfs(frame))
        i += 1
        done = cap.feed(frame, i * FRAME_SECONDS)
        offered += cap.take_early() is not None
        assert i <= round((1.0 + 2.0) / FRAME_SECONDS)
    assert offered <= 1
    assert len(done.command_window(2.0)) <= FRAME_SAMPLES + round((0.4 + 2.0) * 16000)


def test_never_longer_than_the_maximum() -> None:
    endless = np.tile(speak("la la la la la la"), 6)
    assert _capture(-70.0, endless, max_seconds=4.0) == pytest.approx(4.0, abs=0.1)


@pytest.mark.parametrize("snr_db", [5.0, 10.0])
def test_a_rumbling_room_neither_cuts_a_request_short_nor_holds_the_window_open(snr_db: float) -> None:
    """Brown noise (a dishwasher) swings 20 dB from one 80 ms frame to the next: measured broadband,
    it cut requests off mid-sentence or kept the window open to its maximum."""
    from pathlib import Path

    from voxkeep.simulate import make_noise

    words = speak("what will the weather be like tomorrow")
    loud = np.nonzero(np.abs(words) > 0.02 * np.abs(words).max())[0]
    words = words[loud[0]:loud[-1] + 1].astype(np.float64)
    spoken = len(words) / 16000
    n = len(words) + 6 * 16000
    rumble = make_noise("brown", 3 * 16000 + n, np.random.default_rng(2), Path()).astype(np.float64)
    rumble *= np.sqrt(np.mean(words[np.abs(words) > 0.05 * np.abs(words).max()] ** 2) / 10 ** (snr_db / 10))
    before, room = rumble[:3 * 16000], rumble[3 * 16000:]
    after = room.copy()
    after[:len(words)] += words
    endpointer = Endpointer()
    for frame in _frames(np.clip(before, -32768, 32767).astype(np.int16)):
        endpointer.observe(speech_dbfs(frame))
    cap = UtteranceCapture(preroll=[], t_wake=0.0, wake_word="w", score=1.0, store_allowed=True, wall_time=0.0,
                           endpointer=endpointer, max_seconds=10.0, silence_seconds=0.7)
    took = float("inf")
    for i, frame in enumerate(_frames(np.clip(after, -32768, 32767).astype(np.int16)), 1):
        endpointer.observe(speech_dbfs(frame))
        if cap.feed(frame, i * FRAME_SECONDS) is not None:
            took = i * FRAME_SECONDS
            break
    assert spoken <= took <= spoken + 1.5, (spoken, took)
