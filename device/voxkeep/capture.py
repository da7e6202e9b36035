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
from typing import Any

import numpy as np

from . import FRAME_SAMPLES, SAMPLE_RATE

FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE

COMMAND_LEAD_SECONDS = 0.48
"""How far before the frame the wake word fired on the command window begins, however long the second look
then waits (the daemon adds its look-ahead), so bench/commands_eval.py, which plays without one, measures
the daemon's own windows. The wake model fires 0.1-0.3 s after the wake word ends, so "alexa, delete what I
just said" said in one breath lost its "de-" to a window opened at the wake; this one starts inside the
wake word's tail, which the command grammar absorbs. On TUNE's cached windows 0.48 and 0.64 tie (185 of
199 commands, 17 false of 80), 0.40 hears 2 fewer; espeak-ng's "Alexa, don't record anymore." in one
breath scores -6.6 at 0.48 and -7.0 (refused) at 0.64, where the window holds all of "alexa"."""

WAKE_PHRASE_SECONDS = 0.8
"""How long before the frame the wake word fired on its phrase typically began (a short wake word and the
model's delay; the daemon adds the second look's look-ahead). When a new wake word cuts an open utterance
short, the old one ends there: a longer guess would cut the end of the request before it ("stop sharing"
heard as "stop"), a shorter one leaves more of the next wake phrase in it, which the recogniser tolerates
up to 0.2 s of."""


REQUEST_PAD_SECONDS = 1.0
"""Audio kept before the first loud frame of a request that followed a pause: a soft first consonant, and
as much quiet as a request said straight after the wake word has, so such requests' windows are unchanged
(the command recogniser and its figures were tuned on them)."""


WAKE_TAIL_SECONDS = 0.4
"""Sound after the wake that stops within this long may be the wake phrase's own end (the model fires before
"hey marvin" is over) or the room's echo of it, not a request: 0.7 s of quiet after it closed the window, and a
request said after waiting for the LED was lost (bench/commands_eval.py --pause 2.5, TUNE: 37 of 538 woken
requests, 15 of 67 in a reverberant room). It may also be a short command said at once ("stop sharing"). So the
window as it stands is judged at once, beside the loop (``UtteranceCapture.early``), and the speaker keeps
waiting for a request only if it held no command: a command said at once is obeyed as soon as before."""

NOISY_ROOM_DB = 18.0
"""A talker less than this far above the room's floor (speech band) is in a noisy room: there the quiet
that ends a request must last NOISY_SILENCE_FACTOR times longer. On bench/commands_eval.py's TUNE windows
pink noise at 10 dB SNR measures 8-17.6 dB, brown at 10 dB 16.5-26, noise at 20 dB 18.9 and up, a quiet
or reverberant room 36 and up."""

NOISY_SILENCE_FACTOR = 2.0
"""In steady pink noise at 10 dB SNR the soft syllables of a slow "please don't record anymore" fall
under the speech threshold: 0.7 s of them ended the window mid-sentence and no command fitted."""


_BAND = (np.fft.rfftfreq(FRAME_SAMPLES, 1 / SAMPLE_RATE) >= 250.0) & (np.fft.rfftfreq(FRAME_SAMPLES, 1 / SAMPLE_RATE)
                                                                      <= 4000.0)


def speech_dbfs(frame: np.ndarray) -> float:
    """Level of one frame in the speech band (250 Hz-4 kHz), in dB relative to full scale (silence -100).

    Why the band: a dishwasher's or a road's rumble (brown noise) puts its power below 250 Hz, where
    80 ms frames swing by 20 dB; measured broadband, the swings crossed any speech threshold and kept
    command windows open to their maximum. In the band the same rumble is steady and 20-30 dB under
    the voice.
    """
    if len(frame) != FRAME_SAMPLES:
        frame = np.resize(frame, FRAME_SAMPLES)
    spectrum = np.fft.rfft(frame.astype(np.float32))[_BAND]
    power = float(np.vdot(spectrum, spectrum).real) * 2 / FRAME_SAMPLES ** 2
    return 10.0 * math.log10(power) - 90.3 if power > 0.25 else -100.0


class Endpointer:
    """Says what counts as speech in this room: a margin above the recent noise floor.

    The floor is a low percentile of the last few seconds of frame levels, all of them, during
    utterances too: a steady fan or fridge becomes "silence" at once (no slow adaptation), the gaps
    between words keep the floor down during speech, and a dishwasher switched on mid-request becomes
    the floor within seconds instead of holding the window open to its maximum. The margin shrinks
    with the speech: at 5 dB SNR a voice stands only a few dB above the rumble, and a fixed 10 dB
    margin heard it as silence and cut requests off mid-sentence.
    """

    FLOOR_PERCENTILE = 10.0
    MIN_MARGIN_DB = 3.0

    def __init__(self, margin_db: float = 10.0, min_speech_dbfs: float = -55.0, history_seconds: float = 5.0) -> None:
        self.margin_db = margin_db
        self.min_speech_dbfs = min_speech_dbfs
        self._levels: deque[float] = deque(maxlen=max(1, round(history_seconds / FRAME_SECONDS)))

    def observe(self, level: float) -> None:
        """Remember the level of a frame (every frame the microphone delivers)."""
        self._levels.append(level)

    @property
    def floor(self) -> float:
        return float(np.percentile(self._levels, self.FLOOR_PERCENTILE)) if self._levels else -100.0

    def threshold(self, speech_dbfs: float | None = None) -> float:
        """The level above which a frame is speech, now; ``speech_dbfs``: how loud the speech has been."""
        floor = self.floor
        margin = self.margin_db
        if speech_dbfs is not None:
            margin = min(margin, max(self.MIN_MARGIN_DB, (speech_dbfs - floor) / 2))
        return max(floor + margin, self.min_speech_dbfs)


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
    """Index in ``pcm`` where the audio after the wake begins."""
    window_start: int
    """Index in ``pcm`` where the command window begins: up to ``COMMAND_LEAD_SECONDS`` before
    ``command_start``, since a command said straight after the wake word starts before the wake is confirmed."""
    request_start: int
    """Index in ``pcm`` where the request after the wake began (``REQUEST_PAD_SECONDS`` before its first
    loud frame), ``command_start`` if it followed at once: a pause before it is not part of the command."""
    store_allowed: bool
    """Whether the mode allowed keeping audio when the wake was heard (checked again when storing)."""
    wall_time: float
    """Unix time of the wake, for the vault's index."""
    arbitration: Any = None
    """The wake's round among the home's speakers (voxkeep.arbitration.Round), when arbitration is on."""
    head_end: int | None = None
    """Index in ``pcm`` where the short sound right after the wake ended, when the capture waited on past it
    (``WAKE_TAIL_SECONDS``); None when it did not, and always on the early window itself (``UtteranceCapture.early``),
    which ends there. That sound stays in the command window before the request."""

    def command_window(self, max_seconds: float) -> np.ndarray:
        """The audio the command recogniser judges: the wake phrase's tail (and any short sound right after the
        wake), then at most ``max_seconds`` of the request. A pause between them (the owner waiting for the LED)
        is left out, so a request after a pause is judged as one said at once."""
        head_end = self.command_start if self.head_end is None else self.head_end
        start = max(self.request_start, head_end)
        request = self.pcm[start:start + int(max_seconds * SAMPLE_RATE)]
        return np.concatenate([self.pcm[self.window_start:head_end], request])


class UtteranceCapture:
    """Collects one utterance; ``feed`` returns it once speech has ended or the window is full.

    People often wait for the LED before they speak, so the request may begin up to ``start_grace_seconds``
    after the wake, and may then last ``max_seconds`` from where it began (not from the wake).
    """

    def __init__(self, *, preroll: Iterable[np.ndarray], t_wake: float, wake_word: str, score: float,
                 store_allowed: bool, wall_time: float, endpointer: Endpointer, max_seconds: float,
                 silence_seconds: float, start_grace_seconds: float = 2.0, lead_frames: int = 0,
                 wait_past_tail: bool = False) -> None:
        """``preroll`` ends with the wake frame; its last ``lead_frames`` also belong to the command window.
        ``wait_past_tail``: a short sound right after the start does not end the capture (``early``); for requests
        after a wake word, not for the answer to "confirm?", where a quick "yes" is all there is."""
        self._frames: list[np.ndarray] = list(preroll)
        self._command_start = len(self._frames) * FRAME_SAMPLES
        self._window_start = max(0, len(self._frames) - lead_frames) * FRAME_SAMPLES
        self._t_wake = t_wake
        self._meta = (wake_word, score, store_allowed, wall_time)
        self._endpointer = endpointer
        self._loudest = max((speech_dbfs(f) for f in self._frames[-lead_frames:]), default=None) \
            if lead_frames else None
        """Loudest frame of the wake phrase's tail and the request so far: how loud this speaker is."""
        self._max_frames = max(1, round(max_seconds / FRAME_SECONDS))
        self._silence_frames = max(1, round(silence_seconds / FRAME_SECONDS))
        self._grace_frames = max(1, round(start_grace_seconds / FRAME_SECONDS))
        self._after = 0
        self._last_loud = 0
        """The last loud frame after the wake, counted from 1."""
        self._tail_frames = round(WAKE_TAIL_SECONDS / FRAME_SECONDS) if wait_past_tail else 0
        self.early: Utterance | None = None
        """The window as it stood when a short sound right after the wake was followed by quiet: to be judged at
        once, while the capture waits on for a request (see WAKE_TAIL_SECONDS)."""
        self._early_taken = False
        self._head_end: int | None = None
        self._heard_speech = False
        self._quiet_run = 0
        self._waited = 0
        """Frames after the wake before the request's first loud one: the pause, left out of ``max_seconds``."""

    def feed(self, frame: np.ndarray, t: float) -> Utterance | None:
        """Add a frame (at audio time ``t``); return the finished utterance, or None to keep going."""
        self._frames.append(frame)
        self._after += 1
        level = speech_dbfs(frame)
        if level > self._endpointer.threshold(self._loudest):
            self._loudest = level if self._loudest is None else max(self._loudest, level)
            if not self._heard_speech:
                self._waited = self._after - 1
            self._heard_speech = True
            self._quiet_run = 0
            self._last_loud = self._after
        else:
            self._quiet_run += 1
        ended = self._heard_speech and self._silence_ended()
        if ended and self.early is None and self._waited == 0 and 0 < self._last_loud <= self._tail_frames:
            self.early = self.finish(t)
            self._head_end = self._command_start + self._last_loud * FRAME_SAMPLES
            self._heard_speech = ended = False  # wait on for a request, unless the early window holds a command
        done = (
            self._after - self._waited >= self._max_frames
            or ended
            or (not self._heard_speech and self._after >= self._grace_frames)
        )
        return self.finish(t) if done else None

    def take_early(self) -> Utterance | None:
        """The early window (``early``) the first time it is asked for once it exists, else None."""
        if self.early is None or self._early_taken:
            return None
        self._early_taken = True
        return self.early

    def _silence_ended(self) -> bool:
        """Whether the quiet run has been long enough to end the request: longer in a noisy room.

        The floor (a percentile) is only looked at once the quiet room's wait is over, not every frame.
        """
        if self._quiet_run < self._silence_frames:
            return False
        noisy = self._loudest is not None and self._loudest - self._endpointer.floor < NOISY_ROOM_DB
        return not noisy or self._quiet_run >= round(self._silence_frames * NOISY_SILENCE_FACTOR)

    def finish(self, t: float, drop_frames: int = 0) -> Utterance:
        """End the capture now (also used at end of input).

        ``drop_frames``: leave out the last frames heard (at most down to the wake): the start of the
        next wake phrase when a new wake word cut this utterance short.
        """
        keep = max(self._command_start // FRAME_SAMPLES + 1, len(self._frames) - drop_frames)
        frames = self._frames[:keep]
        t_end = t - (len(self._frames) - len(frames)) * FRAME_SECONDS
        word, score, store_allowed, wall_time = self._meta
        pcm = np.concatenate(frames)
        request_start = self._command_start + max(0, self._waited * FRAME_SAMPLES - round(REQUEST_PAD_SECONDS
                                                                                        * SAMPLE_RATE))
        return Utterance(self._t_wake, round(t_end, 6), word, score, pcm, self._command_start, self._window_start,
                         min(request_start, len(pcm)), store_allowed, wall_time,
                         head_end=None if self._head_end is None else min(self._head_end, len(pcm)))


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
