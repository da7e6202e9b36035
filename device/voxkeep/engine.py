"""openWakeWord's streaming pipeline run directly on onnxruntime, with a silence gate.

Why not ``openwakeword.model.Model``: importing it pulls in scipy, scikit-learn, tqdm and requests
(about 190 MB RSS for a process that only needs onnxruntime), it keeps ten seconds of audio as a deque
of Python ints and copies it into a list on every frame, and it runs all three networks on every frame
even when the room is silent. This module reproduces its arithmetic step by step for 80 ms frames
(openwakeword 0.6, ``utils.AudioFeatures._streaming_features`` and ``model.Model.predict``):

1. melspectrogram model over the frame plus the previous 480 samples -> 8 rows of 32 mel bins
   (5 rows for the very first frame, which has no previous samples), transformed ``x / 10 + 2``;
2. embedding model over the newest 76 mel rows -> one 96-value embedding;
3. each wake model over its newest N embeddings (N = 16 for the bundled words) -> one score;
4. scores are forced to 0 for the first 5 frames after start or reset.

``tests/test_wake_engine.py`` holds this to openwakeword's own scores within 1e-4 on every frame.

The gate: a wake score on frame k depends only on frames k-25..k (16 embeddings, each over 10
frames of mel rows, each over one frame plus a 480-sample tail). So while no frame of that span was
loud, nothing is computed; raw frames go into a small ring instead. When a loud frame arrives, the
missed frames in the span are replayed through the feature models first, which leaves every buffer
exactly as if the models had run all along: scores while the gate is open are the ungated scores,
so gating cannot delay or lose a wake unless quiet audio alone would have crossed a threshold.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import FRAME_SAMPLES, SAMPLE_RATE
from .capture import speech_dbfs
from .errors import ModelError

MEL_TAIL = 480
"""Samples of the previous frame the melspectrogram model needs (its 25 ms window minus one hop)."""
MEL_ROWS = 8
"""Mel rows one 80 ms frame adds (10 ms hop)."""
MEL_WINDOW = 76
"""Mel rows the embedding model looks at (775 ms)."""
WINDOW_FRAMES = 10
"""Frames whose audio reaches one embedding: 76 rows span 9.5 frames, plus the first one's tail."""
ZEROED_FRAMES = 5
"""openWakeWord reports 0 for the first frames after start-up while its buffers fill."""
WARMUP_SECONDS = 4
"""openWakeWord seeds its embedding history with embeddings of this much low-level noise."""
WARMUP_SEED = 80
"""Fixed seed for that noise, so replaying the same audio gives the same scores every time."""


def warmup_noise(seed: int = WARMUP_SEED) -> np.ndarray:
    """The random int16 noise openWakeWord fills its feature history with (there: unseeded)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1000, WARMUP_SECONDS * SAMPLE_RATE).astype(np.int16)


HOLD_FRAMES = 10
"""Frames the energy gate stays open after the last loud frame. A score can depend on the 25 frames before
it, but a wake's score crosses while its phrase is still loud or just after: over the whole corpus (TUNE,
where this was chosen, and REPORT) every hit of every word is the same with 8 frames as with 25, and 6 changes
some; 10 keeps two frames of margin and skips most of the 2 s after every sound, which was a third of the
frames the networks ran on in a quiet household (bench/run.py)."""


DIGITAL_SILENCE_DB = -90.0
"""Frames quieter than this (RMS under one int16 step) are digital silence, never a microphone's own noise."""


class EnergyGate:
    """Decides per frame whether the room is loud enough that the models need to run.

    Threshold = noise floor + ``margin_db``, clamped to [``min_db``, ``max_db``] dBFS. The floor
    follows quieter frames at once and rises only ``rise_db`` per frame, so the pauses between words
    keep it at the room's level while a steady noise (a fan switched on) is learnt within seconds (1.25 dB/s).
    The ceiling makes any frame louder than ``max_db`` open the gate however noisy the room became:
    the gate may cost CPU in a loud room, never a missed wake. Only one loud frame per utterance is
    needed, because the engine replays the 2 s before it (the soft start of "hey" included).

    ``min_db`` is low (-70 dBFS) and the margin 6 dB because openWakeWord hears a soft-spoken request whose
    loudest 80 ms is at -55 to -60 dBFS in a quiet room, only a few dB above the room; at -50 dBFS and
    10 dB the gate slept through a talker across the room or a microphone set low
    (``tests/test_wake_engine.py``; docs/performance.md, "A soft voice"). Frames of digital silence (a dropout, a source
    that gates itself) are not the room: they leave the floor where it was, or a quiet room's floor would
    fall to nothing and take a minute to climb back, with the networks running all that time.
    """

    def __init__(self, margin_db: float = 6.0, min_db: float = -70.0, max_db: float = -35.0,
                 rise_db: float = 0.1, hold_frames: int = HOLD_FRAMES) -> None:
        self.hold_frames = hold_frames
        """How many frames after the last loud one the models keep running (``HOLD_FRAMES``)."""
        self.margin_db = margin_db
        self.min_db = min_db
        self.max_db = max_db
        self.rise_db = rise_db
        self.floor_db: float | None = None
        """The room's level in dBFS; None until the first frame that is not digital silence, which sets it (a
        fixed start would take the gate tens of seconds to climb from, running the networks all the while)."""

    def threshold_db(self) -> float:
        """The level in dBFS a frame must exceed to count as loud right now."""
        if self.floor_db is None:
            return self.min_db
        return min(max(self.floor_db + self.margin_db, self.min_db), self.max_db)

    def loud(self, samples: np.ndarray) -> bool:
        """Feed one frame (float32, int16 scale); True if it is above the threshold.

        The level is the speech band's (``capture.speech_dbfs``, 250 Hz-4 kHz), as the endpointer's: mains hum
        and a road's rumble carry no word, and measured broadband they set the floor. A 50 Hz hum at -50 dBFS
        (a ground loop between a Pi's amplifier and its microphone) held the threshold above a soft request that
        the ungated models heard (tests/test_wake_engine.py)."""
        level = speech_dbfs(samples)
        is_loud = level > self.threshold_db()
        if level > DIGITAL_SILENCE_DB:
            floor = self.floor_db
            self.floor_db = level if floor is None or level < floor else floor + self.rise_db
        return is_loud


_SESSIONS: dict[tuple[str, int, int], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def session(path: Path, ort: Any = None) -> Any:
    """One single-threaded session per model file, shared by everything in the process that runs it.

    Single-threaded: on a 4-core Pi the other cores belong to the rest of the daemon. Shared: the
    detector, the second look and the ``both`` agreement each used to load the same melspectrogram and
    embedding models again (2-12 MB each); a session holds no state between runs, and onnxruntime's
    ``run`` is safe to call from several threads. A file replaced on disk (new size or mtime) gets a new
    session. The memory arena is off: these models are tiny, and an arena sized for the largest batch
    ever run keeps that memory for good (a Pi Zero 2 W has 512 MB for everything).
    """
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelError(f"cannot load model {path}: {exc.strerror}; use an openWakeWord-compatible .onnx file") \
            from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            _SESSIONS[key] = _new_session(path, ort)
        return _SESSIONS[key]


def _new_session(path: Path, ort: Any) -> Any:
    if ort is None:
        import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelError(f"cannot load model {path}: {str(exc).splitlines()[0]}; "
                         "use an openWakeWord-compatible .onnx file") from None


class WakeEngine:
    """Frames in, one score per wake model out: openWakeWord's numbers at a fraction of the cost.

    ``gate=None`` runs every model on every frame, exactly like openWakeWord. ``warmup`` is the
    noise that seeds the embedding history (tests pass openWakeWord's own to compare frame 0 on).
    """

    def __init__(self, melspec: Path, embedding: Path, wake_models: Sequence[Path], *,
                 gate: EnergyGate | None = None, warmup: np.ndarray | None = None) -> None:
        import onnxruntime as ort  # here, so `voxkeep --help` never pays for it

        self._mel = session(melspec, ort)
        self._emb = session(embedding, ort)
        self._wake = [session(p, ort) for p in wake_models]
        self._wake_inputs = [s.get_inputs()[0].name for s in self._wake]
        self._wake_lengths = []
        for path, model in zip(wake_models, self._wake, strict=True):
            length, outputs = model.get_inputs()[0].shape[1], model.get_outputs()[0].shape[1]
            if not isinstance(length, int) or outputs != 1:
                raise ModelError(f"{path} is not a wake-word model (it has {outputs} outputs, a wake word "
                                 "has one score); use a single wake-word .onnx file")
            self._wake_lengths.append(length)
        self.gate = gate
        self._warmup = warmup_noise() if warmup is None else warmup
        self.context_frames = max(self._wake_lengths) - 1 + WINDOW_FRAMES
        """Frames before the current one that can still change its score."""
        self._hold = min(gate.hold_frames, self.context_frames) if gate is not None else 0
        # Preallocated buffers, reused every frame.
        self._ring = np.zeros((self.context_frames + 1, FRAME_SAMPLES), dtype=np.float32)
        self._mel_in = np.zeros((1, MEL_TAIL + FRAME_SAMPLES), dtype=np.float32)
        self._mel_rows = np.ones((1, MEL_WINDOW, 32, 1), dtype=np.float32)
        history = max(self._wake_lengths)
        self._features = np.zeros((1, history, 96), dtype=np.float32)
        self.scores = np.zeros(len(self._wake), dtype=np.float32)
        """Scores of the latest frame, one per wake model, in the order given."""
        self.frames_scored = 0
        """Frames on which the wake models ran (the rest were skipped by the gate)."""
        self._seeded: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        """Forget all audio, as openWakeWord's ``Model.reset`` does."""
        self._ring.fill(0.0)
        if self._seeded is None:  # the seed is the same every time: compute it once
            self._seed_features()
            self._seeded = self._features.copy()
        else:
            self._features[:] = self._seeded
            self._mel_rows.fill(1.0)
        self._frame = 0  # index of the next frame to arrive, counted from the reset
        self._fed = 0  # index of the next frame the feature models have not seen
        self._last_loud = -self.context_frames - 1
        self.gate_open = False
        """Whether the models ran on the latest frame."""
        self.scores.fill(0.0)

    def _seed_features(self) -> None:
        """openWakeWord's start state: embeddings of 4 s of noise, whole-clip melspectrogram."""
        spec = self._mel.run(None, {"input": self._warmup.astype(np.float32)[None]})[0].squeeze()
        spec = spec / 10 + 2
        starts = list(range(0, spec.shape[0] - MEL_WINDOW + 1, MEL_ROWS))[-self._features.shape[1]:]
        # One window per run, not one batch: a batch grows onnxruntime's arena by 14 MB for good.
        for row, start in enumerate(starts, self._features.shape[1] - len(starts)):
            self._mel_rows[0, :, :, 0] = spec[start:start + MEL_WINDOW]
            self._features[0, row] = self._emb.run(None, {"input_1": self._mel_rows})[0].reshape(96)
        self._mel_rows.fill(1.0)

    def _feed(self, index: int) -> None:
        """Run the melspectrogram model on frame ``index`` (from the ring) and shift in its rows."""
        slots = len(self._ring)
        frame = self._ring[index % slots]
        if index == 0:  # the very first frame has no tail: openWakeWord feeds it alone
            mel_in = self._mel_in[:, MEL_TAIL:]
            mel_in[0] = frame
        else:
            mel_in = self._mel_in
            mel_in[0, :MEL_TAIL] = self._ring[(index - 1) % slots, -MEL_TAIL:]
            mel_in[0, MEL_TAIL:] = frame
        spec = self._mel.run(None, {"input": mel_in})[0]
        rows = spec.shape[2]  # output is (1, 1, rows, 32)
        self._mel_rows[0, :-rows] = self._mel_rows[0, rows:]
        np.divide(spec.reshape(rows, 32, 1), 10, out=self._mel_rows[0, -rows:])
        self._mel_rows[0, -rows:] += 2

    def _embed(self) -> None:
        """Run the embedding model on the newest 76 mel rows and shift the result in."""
        embedding = self._emb.run(None, {"input_1": self._mel_rows})[0]
        self._features[0, :-1] = self._features[0, 1:]
        self._features[0, -1] = embedding.reshape(96)

    def process(self, frame: np.ndarray) -> np.ndarray:
        """Score one 80 ms int16 frame; returns ``self.scores`` (zeros while the gate is closed)."""
        index = self._frame
        self._frame += 1
        slot = self._ring[index % len(self._ring)]
        slot[:] = frame
        if self.gate is None or self.gate.loud(slot):
            self._last_loud = index
        self.gate_open = index - self._last_loud <= self._hold if self.gate is not None else True
        if not self.gate_open:
            self.scores.fill(0.0)
            return self.scores
        # Catch up on skipped frames that still matter: mel rows for the last 24, embeddings for the
        # last 15, so the buffers hold exactly what running every frame would have left in them.
        history = self._features.shape[1]
        first_mel = max(self._fed, index - self.context_frames + 1)
        first_embedding = max(self._fed, index - history + 1)
        for i in range(first_mel, index + 1):
            self._feed(i)
            if i >= first_embedding:
                self._embed()
        self._fed = index + 1
        self.frames_scored += 1
        for k, (model, name, length) in enumerate(
                zip(self._wake, self._wake_inputs, self._wake_lengths, strict=True)):
            result = model.run(None, {name: self._features[:, history - length:]})[0]
            self.scores[k] = result.reshape(-1)[0] if index >= ZEROED_FRAMES else 0.0
        return self.scores
