"""The listening daemon: frames in, events out.

The loop owns the audio source and does only what must happen per frame: score the frame, keep a
short history, collect the utterance after a wake word. Everything that can block (disk, network,
GPIO, command recognition) happens on other threads, reached through bounded queues: the event bus
for observers, the utterance worker for commands and recordings. The privacy state machine decides;
the loop obeys it by closing and reopening the stream and reports what the stream really did.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from . import FRAME_SAMPLES
from .arbitration import Arbiter, Round, strength_of
from .audio import AudioSource, DcRemover
from .bus import EventBus
from .capture import (
    COMMAND_LEAD_SECONDS,
    FRAME_SECONDS,
    WAKE_PHRASE_SECONDS,
    Endpointer,
    Preroll,
    UtteranceCapture,
    speech_dbfs,
)
from .config import Settings
from .events import Wake, WakeRejected
from .handling import Answer, UtteranceWorker
from .privacy import Mode, PrivacyState
from .wake import WakeDetector, WakeHit

log = logging.getLogger(__name__)

HISTORY_SECONDS = 2.0
"""Audio and scores kept for the wake verifier's second look."""


class Verifier(Protocol):
    """The second look at a wake (voxkeep.verify)."""

    def look_ahead(self, word: str) -> int:
        """Frames to wait after a hit of ``word`` before looking, so the look sees how the score went on."""
        ...

    def check(self, word: str, score: float, audio: np.ndarray, scores: Any) -> Any: ...


class FrameHook(Protocol):
    """Called on the loop after each frame; used by simulations to act at exact audio times."""

    def __call__(self, t: float) -> None: ...


@dataclass
class RunStats:
    """Counts for the one-line summary at the end of file input."""

    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    frames: int = 0
    wakes: int = 0
    rejected: int = 0
    frames_scored: int = 0
    """Frames the wake models actually ran on (the rest, the room was quiet)."""
    extra: dict[str, int] = field(default_factory=dict)

    def summary(self, description: str) -> str:
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        parts = [f"{self.wakes} wake(s)", f"{self.rejected} rejected",
                 f"models ran on {100 * self.frames_scored / max(self.frames, 1):.0f} % of frames"]
        parts += [f"{v} {k}" for k, v in self.extra.items()]
        pace = f"{speed:.0f}" if speed >= 10 else f"{speed:.2g}"  # slower than real time on a slow CPU: 0.041x
        return (f"voxkeep: {description}: {self.audio_seconds:.1f} s of audio in {self.wall_seconds:.1f} s "
                f"({pace}x real time): " + ", ".join(parts))


class Daemon:
    """The audio loop and the wiring of its workers; construct with real or test parts."""

    def __init__(self, settings: Settings, source: AudioSource, detector: WakeDetector, privacy: PrivacyState,
                 bus: EventBus, worker: UtteranceWorker, *, verifier: Verifier | None = None,
                 tone_guard: Callable[[], bool] | None = None, watchdog: Callable[[], None] | None = None,
                 on_frame: FrameHook | None = None, stop: threading.Event | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.source = source
        self._dc = DcRemover()
        self.detector = detector
        self.privacy = privacy
        self.bus = bus
        self.worker = worker
        self.verifier = verifier
        self.tone_guard = tone_guard
        self.watchdog = watchdog
        self.on_frame = on_frame
        self.stop = stop or threading.Event()
        self.wall_clock = wall_clock
        self.arbiter: Arbiter | None = None
        """Set when [arbitration] is on: each wake is claimed among the home's speakers."""
        self._round: Round | None = None
        """The open capture's arbitration round."""
        self.pace_origin: float | None = None
        """``time.monotonic()`` from which realtime file input is paced (default: the loop's start), so that
        simulated speakers in one home hear the same file together."""
        self.t = 0.0
        """Seconds of audio since the input started (advances with wall time while a live mic is muted)."""
        self._muted_seconds = 0.0
        self.stats = RunStats()
        self._history = Preroll(max(HISTORY_SECONDS, settings.vault.preroll_seconds))
        self._preroll_frames = max(1, round(settings.vault.preroll_seconds / FRAME_SECONDS))
        self._scores: dict[str, deque[float]] = {
            w: deque(maxlen=round(HISTORY_SECONDS / FRAME_SECONDS)) for w in detector.words}
        self._endpointer = Endpointer()
        self._capture: UtteranceCapture | None = None
        self._answer: UtteranceCapture | None = None
        """The answer window after "confirm?" (no wake word): it goes to the worker as an Answer, never stored."""
        # Hits wait here until the verifier's look-ahead for their word has been heard.
        self._due: list[tuple[int, WakeHit]] = []
        self._refractory_frames = round(settings.wake.refractory_seconds / FRAME_SECONDS)
        self._woke_at = -self._refractory_frames - 1
        """Frame of the last confirmed wake."""
        # Both counted from the frame the wake fired on; the look-ahead heard since is added per wake, so the
        # window and the cut between back-to-back requests do not move with how long the second look waits.
        self._lead_frames = round(COMMAND_LEAD_SECONDS / FRAME_SECONDS)
        self._phrase_frames = round(WAKE_PHRASE_SECONDS / FRAME_SECONDS)

    def clock(self) -> float:
        """The audio clock, for events raised off the loop (button, CLI, MQTT)."""
        return self.t

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> RunStats:
        """Process audio until the input ends or ``stop`` is set."""
        started = time.monotonic()
        self.worker.start()
        try:
            self._loop()
        finally:
            if self._capture is not None:
                self._submit(self._capture.finish(self.t))
                self._capture = None
            self._answer = None
            self.worker.cancel_answer("stopped", self.t, wait=True)  # nothing deleted without its yes
            if self.source.is_open:
                self.source.close()
            self.privacy.set_mic_open(False, "stopped")
            self.worker.stop()
            self.stats.audio_seconds = self.t
            self.stats.wall_seconds = time.monotonic() - started
            self.stats.extra.update(self.worker.stats)
            self.stats.frames_scored = self.detector.frames_scored
        return self.stats

    def _loop(self) -> None:
        pace_origin = time.monotonic() if self.pace_origin is None else self.pace_origin
        while not self.stop.is_set():
            if self.privacy.muted:
                if not self._while_muted():
                    return
            else:
                if not self.source.is_open:
                    self.source.open()
                    self.detector.reset()
                if not self.privacy.mic_open:
                    self.privacy.set_mic_open(True, "mic")
                frame = self.source.read()
                if frame is None:
                    return
                self._process(self._dc(frame))
            if self.settings.audio.realtime and not self.source.live:
                self.stop.wait(max(0.0, pace_origin + self.t - time.monotonic()))

    def _while_muted(self) -> bool:
        """Muted: close the stream (live) or discard input (files). False when the run should end."""
        if self._capture is not None:
            self._capture = self._round = None  # a mute mid-utterance keeps nothing of it
        self._lapse_answer("muted")  # a mute is never a "yes"
        if self.source.live:
            if self.source.is_open:
                self.source.close()
            self.privacy.set_mic_open(False, "mute")
            muted_at = time.monotonic()
            while not self.privacy.wait_until_unmuted(timeout=0.5):
                if self.stop.is_set():
                    return False
                if self.watchdog is not None:
                    self.watchdog()  # alive, just not listening
            self._muted_seconds += time.monotonic() - muted_at
            self._tick_clock()
            self._lapse_answer("muted")  # asked back while muted: no window opens after the unmute
            self._history.clear()
            return True
        self.privacy.set_mic_open(False, "mute")
        if not self.source.is_open:
            self.source.open()
        frame = self.source.read()
        if frame is None:
            return False
        self._advance()
        self._history.clear()
        return True

    def _tick_clock(self) -> None:
        self.t = round(self.stats.frames * FRAME_SECONDS + self._muted_seconds, 6)

    def _advance(self) -> None:
        """One frame came in and was handled (heard, or discarded while muted): the loop is alive."""
        self.stats.frames += 1
        self._tick_clock()
        if self.on_frame is not None:
            self.on_frame(self.t)
        if self.watchdog is not None:
            self.watchdog()

    def _process(self, frame: np.ndarray) -> None:
        hits = self.detector.process(frame)
        self._history.append(frame)
        for word, score in self.detector.last_scores.items():
            self._scores[word].append(score)
        self._endpointer.observe(speech_dbfs(frame))
        self._advance()
        if self._capture is not None:
            if self._round is not None and self._round.lost:
                self._capture = self._round = None  # another speaker answers this wake: keep or judge nothing
            else:
                done = self._capture.feed(frame, self.t)
                if done is not None:
                    self._capture = None
                    self._submit(done)
                else:
                    self._judge_early()
        self._listen_for_answer(frame)
        # A hit within the refractory period of the last wake is that wake's own phrase still scoring,
        # possibly on another model ("hey jarvis" also scores as hey_marvin): never a new request.
        if hits:
            hits = [h for h in hits if self.stats.frames - self._woke_at > self._refractory_frames]
        if not (hits or self._due):
            return  # the common case: nothing to look at, nothing allocated
        # Several models may fire on one phrase: best first.
        self._due = [(f, h) for f, h in self._due if f >= self.stats.frames]
        self._due += [(self.stats.frames + self._look(h.wake_word), h) for h in hits]
        ready = [h for f, h in self._due if f == self.stats.frames]
        for hit in sorted(ready, key=lambda h: -h.score):
            if self._accept(hit):
                # Hits still waiting for a longer look fired within the refractory period of this one:
                # its own phrase on another model, never a new request.
                self._due = [(f, h) for f, h in self._due
                             if f - self._look(h.wake_word) - self._woke_at > self._refractory_frames]
                break

    def _look(self, word: str) -> int:
        """Frames a hit of ``word`` waits for the second look."""
        return self.verifier.look_ahead(word) if self.verifier is not None else 0

    def _listen_for_answer(self, frame: np.ndarray) -> None:
        """Feed the answer window, or open one if the worker asked back a deletion."""
        if self._answer is not None:
            done = self._answer.feed(frame, self.t)
            if done is not None:
                self._answer = None
                self.worker.submit(Answer(t_end=done.t_end, pcm=done.pcm), wait=not self.source.live)
            return
        seconds = self.worker.take_answer_request()
        if seconds is None:
            return
        if self._capture is not None:  # a new wake came first: the question lapses
            self.worker.cancel_answer("wake word", self.t, wait=not self.source.live)
            return
        # Opened at once: the owner answers the tone, and a window opened later could miss the "yes".
        self._answer = UtteranceCapture(
            preroll=[], t_wake=self.t, wake_word="", score=0.0, store_allowed=False, wall_time=0.0,
            endpointer=self._endpointer, max_seconds=seconds, silence_seconds=self.settings.commands.silence_seconds,
            start_grace_seconds=seconds)

    def _lapse_answer(self, reason: str) -> None:
        """End the answer window, open or only asked for: the deletion waiting for it is not carried out."""
        if self._answer is not None or self.worker.take_answer_request() is not None:
            self._answer = None
            self.worker.cancel_answer(reason, self.t, wait=not self.source.live)

    def _accept(self, hit: WakeHit) -> bool:
        """Second look at a hit; on success open the command window. True if it opened."""
        t = self.t
        reason = ""
        if self.tone_guard is not None and self.tone_guard():
            reason = "own confirmation tone"
        elif self.verifier is not None:
            audio = np.concatenate(self._history.frames()) if self._history.frames() else np.zeros(
                FRAME_SAMPLES, np.int16)
            verdict = self.verifier.check(hit.wake_word, hit.score, audio, list(self._scores[hit.wake_word]))
            if not verdict.ok:
                reason = str(verdict.reason)
        if reason:
            if hit.faint:
                return False  # a faint rise nobody confirmed was never a wake: nothing to report
            self.stats.rejected += 1
            self.bus.publish(WakeRejected(t=t, wake_word=hit.wake_word, score=round(hit.score, 4), reason=reason))
            return False
        self.stats.wakes += 1
        look = self._look(hit.wake_word)
        lead, phrase = self._lead_frames + look, self._phrase_frames + look  # counted from the hit's frame
        # The hit's own frame, not the look's: counted from the look, the refractory period ran the
        # verifier's look-ahead longer than the detector's and dropped a request said 2 s after the last.
        self._woke_at = self.stats.frames - look
        self._lapse_answer("wake word")  # a new request instead of an answer: nothing is deleted
        if self._capture is not None:
            # People make requests back to back: a new wake word ends the open utterance just before
            # its own phrase, and that utterance is handled as it stands (a command in it is obeyed
            # before the new one is judged).
            self._submit(self._capture.finish(t, drop_frames=phrase))
            self._capture = None
        self.bus.publish(Wake(t=t, wake_word=hit.wake_word, score=round(hit.score, 4)))
        frames = self._history.frames()
        if self.arbiter is not None:  # hands the claim over; the answer comes back on self._round
            self._round = self.arbiter.claim(hit.wake_word, strength_of(frames[-phrase:],
                                                                        self._endpointer.floor), hit.score)
        store_allowed = self.privacy.mode is Mode.LISTENING
        max_seconds = self.settings.commands.max_seconds
        if store_allowed:
            max_seconds = max(max_seconds, self.settings.vault.max_utterance_seconds)
        # Not recording: keep only what the command window needs, never the pre-roll to store.
        preroll = frames[-max(self._preroll_frames, lead):] if store_allowed else frames[-lead:]
        self._capture = UtteranceCapture(
            preroll=preroll, t_wake=t, wake_word=hit.wake_word, score=hit.score, store_allowed=store_allowed,
            wall_time=self.wall_clock(), endpointer=self._endpointer, max_seconds=max_seconds,
            silence_seconds=self.settings.commands.silence_seconds,
            start_grace_seconds=self.settings.commands.wait_seconds, lead_frames=lead, wait_past_tail=True)
        return True

    def _judge_early(self) -> None:
        """Have the worker judge the open capture's early window (a short sound right after the wake); if it held
        a command, that window is the utterance and the wait for a request ends (voxkeep.capture.WAKE_TAIL_SECONDS).
        A verdict on an earlier wake's window (its capture cut short by a mute or a new wake) changes nothing."""
        assert self._capture is not None
        early = self._capture.take_early()
        if early is not None:
            self.worker.peek(early, wait=not self.source.live)
        verdict = self.worker.take_peek_verdict()
        early = self._capture.early
        if verdict is not None and early is not None and verdict == (early.t_wake, True):
            self._capture = None
            self._submit(early)

    def _submit(self, utterance: Any) -> None:
        if self._round is not None:  # the worker holds it until the round is decided
            utterance = dataclasses.replace(utterance, arbitration=self._round)
            self._round = None
        self.worker.submit(utterance, wait=not self.source.live)

