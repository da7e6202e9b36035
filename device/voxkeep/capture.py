"""Capturing the utterance after a wake word, on the audio loop: cheap, bounded, no I/O.

The capture starts with a short pre-roll (the wake phrase itself, not more), then takes frames until
the speaker stops (an energy endpointer tracking the room's noise floor) or a maximum length. The
finished ``Utterance`` is handed to the handling worker; nothing here touches disk.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import FRAME_SAMPLES, SAMPLE_RATE

FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


def frame_dbfs(frame: np.ndarray) -> float:
    """Level of one frame in dB relative to full scale (silence is -100)."""
    f = frame.astype(np.float32)
    rms = math.sqrt(float(np.dot(f, f)) / len(f))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0.5 else -100.0


class Endpointer:
    """Says what counts as speech in this room: a margin above the recent noise floor.

    The floor is a low percentile of the last few seconds of frame levels heard outside utterances,
    so a steady fan or fridge becomes "silence" at once (no slow adaptation), while the gaps between
    words keep the floor down during conversation. It is taken once when a capture starts.
    """

    FLOOR_PERCENTILE = 10.0

    def __init__(self, margin_db: float = 10.0, min_speech_dbfs: float = -55.0, history_seconds: float = 5.0) -> None:
        self.margin_db = margin_db
        self.min_speech_dbfs = min_speech_dbfs
        self._levels: deque[float] = deque(maxlen=max(1, round(history_seconds / FRAME_SECONDS)))

    def observe(self, level: float) -> None:
        """Remember the level of a frame heard outside any utterance."""
        self._levels.append(level)

    @property
    def floor(self) -> float:
        return float(np.percentile(self._levels, self.FLOOR_PERCENTILE)) if self._levels else -100.0

    def threshold(self) -> float:
        """The level above which a frame is speech, now."""
        return max(self.floor + self.margin_db, self.min_speech_dbfs)


@dataclass(frozen=True)
class Utterance:
    """What was heard from the wake phrase to the end of speech, with what is needed to handle it."""

    t_wake: float
    """Audio time of the frame on which the wake word fired."""
    t_end: float
    """Audio time at the end of the capture."""
    wake_word: str
    score: float
    pcm: np.ndarray
    """int16 16 kHz mono samples: pre-roll, then everything after the wake."""
    command_start: int
    """Index in ``pcm`` where the audio after the wake begins (the command window)."""
    store_allowed: bool
    """Whether the mode allowed keeping audio when the wake was heard (checked again when storing)."""
    wall_time: float
    """Unix time of the wake, for the vault's index."""


class UtteranceCapture:
    """Collects one utterance; ``feed`` returns it once speech has ended or the window is full."""

    def __init__(self, *, preroll: Iterable[np.ndarray], t_wake: float, wake_word: str, score: float,
                 store_allowed: bool, wall_time: float, endpointer: Endpointer, max_seconds: float,
                 silence_seconds: float, start_grace_seconds: float = 2.0) -> None:
        self._frames: list[np.ndarray] = list(preroll)
        self._command_start = len(self._frames) * FRAME_SAMPLES
        self._t_wake = t_wake
        self._meta = (wake_word, score, store_allowed, wall_time)
        self._speech_above = endpointer.threshold()
        self._max_frames = max(1, round(max_seconds / FRAME_SECONDS))
        self._silence_frames = max(1, round(silence_seconds / FRAME_SECONDS))
        self._grace_frames = max(1, round(start_grace_seconds / FRAME_SECONDS))
        self._after = 0
        self._heard_speech = False
        self._quiet_run = 0

    def feed(self, frame: np.ndarray, t: float) -> Utterance | None:
        """Add a frame (at audio time ``t``); return the finished utterance, or None to keep going."""
        self._frames.append(frame)
        self._after += 1
        if frame_dbfs(frame) > self._speech_above:
            self._heard_speech = True
            self._quiet_run = 0
        else:
            self._quiet_run += 1
        done = (
            self._after >= self._max_frames
            or (self._heard_speech and self._quiet_run >= self._silence_frames)
            or (not self._heard_speech and self._after >= self._grace_frames)
        )
        return self.finish(t) if done else None

    def finish(self, t: float) -> Utterance:
        """End the capture now (also used at end of input)."""
        word, score, store_allowed, wall_time = self._meta
        return Utterance(self._t_wake, t, word, score, np.concatenate(self._frames), self._command_start,
                         store_allowed, wall_time)


class Preroll:
    """The last few frames, kept so a capture can begin with the wake phrase itself."""

    def __init__(self, seconds: float) -> None:
        self._frames: deque[np.ndarray] = deque(maxlen=max(1, round(seconds / FRAME_SECONDS)))

    def append(self, frame: np.ndarray) -> None:
        self._frames.append(frame)

    def frames(self) -> list[np.ndarray]:
        return list(self._frames)

    def clear(self) -> None:
        self._frames.clear()
