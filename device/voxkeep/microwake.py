"""microWakeWord's streaming TFLite models (``pymicro-wakeword``), frames in, one score per model out.

Why a second engine: openWakeWord runs three networks (melspectrogram, embedding, word) on every
80 ms frame the room is not silent, about 229 CPU-seconds per audio hour on one x86 core. microWakeWord's
models are small streaming convolutions over a 40-bin front end (the one ESPHome devices run), one
inference every 30 ms, and cost a small fraction of that; its bundled words are Apache-2.0.

This module only adapts the library to voxkeep's frame loop: ``MicroEngine.process`` takes one 80 ms
int16 frame and returns, per model, the highest of the model's own sliding-mean probabilities computed
on that frame (0 on a frame where none completed), which is what ``pymicro_wakeword`` compares with a
model's ``probability_cutoff``. Thresholds, the refractory period and the second look stay in ``wake``,
so they treat both engines alike.

A model is a ``.json`` description (microWakeWord's format: ``model`` names the ``.tflite`` file beside it,
``micro.probability_cutoff`` and ``micro.sliding_window_size``) plus that file. Both are read with
bounds and checked before the TFLite runtime sees them: the library hands a file TFLite rejects straight
to the interpreter, which would crash the process instead of naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import FRAME_SAMPLES
from .errors import ModelError

MAX_JSON_BYTES = 64 * 1024
"""A microWakeWord description is a few hundred bytes; anything larger is not one."""
MAX_TFLITE_BYTES = 8 * 1024 * 1024
"""The bundled models are 52-81 kB; a streaming wake-word model of 8 MB would not run on a Pi Zero anyway."""
MAX_WINDOW = 100
"""Sliding-window sizes beyond this (3 s of inferences) are a broken description, not a model."""
FEATURE_BINS = 40
"""microWakeWord's front end gives 40 mel-like bins every 10 ms."""


@dataclass(frozen=True)
class MicroModel:
    """One microWakeWord model as its ``.json`` describes it."""

    json_path: Path
    tflite_path: Path
    cutoff: float
    """The model's own ``probability_cutoff``: voxkeep's default threshold for the word."""
    window: int
    """``sliding_window_size``: how many probabilities are averaged into one score."""
    phrase: str


def load_description(json_path: Path, fix: str) -> MicroModel:
    """Read and check a microWakeWord ``.json``; ``fix`` is what the error tells the user to do."""
    try:
        with json_path.open("rb") as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"cannot read microWakeWord description {json_path} ({exc.strerror}); {fix}") from None
    try:
        if len(raw) > MAX_JSON_BYTES:
            raise ValueError("it is too large")
        data = json.loads(raw)
        micro = data["micro"]
        model = data["model"]
        cutoff = float(micro["probability_cutoff"])
        window = int(micro["sliding_window_size"])
        if not isinstance(model, str) or Path(model).name != model or not model.endswith(".tflite"):
            raise ValueError("'model' must name a .tflite file in the same folder")
        if not (math.isfinite(cutoff) and 0.0 < cutoff < 1.0) or not 1 <= window <= MAX_WINDOW:
            raise ValueError("probability_cutoff must be in (0, 1) and sliding_window_size in 1..100")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        what = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelError(f"{json_path} is not a microWakeWord model description ({what}); {fix}") from None
    return MicroModel(json_path, json_path.parent / model, cutoff, window, str(data.get("wake_word", "")))


def _tflite_library() -> Path:
    """The TFLite C runtime that ships inside the pymicro-wakeword wheel."""
    import pymicro_wakeword

    found = sorted((Path(pymicro_wakeword.__file__).parent / "lib").glob("*tensorflowlite_c.*"))
    if not found:
        raise ModelError("pymicro-wakeword is installed without its TFLite runtime; reinstall voxkeep "
                         "(pip install --force-reinstall pymicro-wakeword)")
    return found[0]


def _open_model(spec: MicroModel, fix: str) -> Any:
    """A ``pymicro_wakeword.MicroWakeWord`` for ``spec``, after TFLite itself has accepted the file."""
    from pymicro_wakeword import MicroWakeWord
    from pymicro_wakeword.wakeword import TfLiteWakeWord

    path = spec.tflite_path
    try:
        size = path.stat().st_size
    except OSError:
        raise ModelError(f"microWakeWord model {path} (named in {spec.json_path.name}) is missing; {fix}") from None
    if size > MAX_TFLITE_BYTES:
        raise ModelError(f"{path} is {size} bytes, too large for a microWakeWord model; {fix}")
    library = _tflite_library()
    lib = TfLiteWakeWord(library).lib
    handle = lib.TfLiteModelCreateFromFile(str(path.resolve()).encode())
    if not handle:  # TFLite verifies the flatbuffer; the library would pass NULL on and crash
        raise ModelError(f"{path} is damaged or not a TFLite model (TFLite rejected it); {fix}")
    lib.TfLiteModelDelete(handle)
    try:
        model = MicroWakeWord(path.stem, wake_word=spec.phrase, tflite_model=path,
                              probability_cutoff=spec.cutoff, sliding_window_size=spec.window,
                              trained_languages=[], libtensorflowlite_c_path=library)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path} is not a streaming microWakeWord model ({exc}); {fix}") from None
    dims = [model.lib.TfLiteTensorDim(model.input_tensor, i) for i in range(model.lib.TfLiteTensorNumDims(
        model.input_tensor))]
    if len(dims) != 3 or dims[2] != FEATURE_BINS or model.lib.TfLiteTensorByteSize(model.output_tensor) != 1:
        model.close()
        raise ModelError(f"{path} is not a streaming microWakeWord model (input {dims}, expected "
                         f"[1, stride, {FEATURE_BINS}] and one output); {fix}")
    return model


class _Stream:
    """One model's streaming inference, as ``MicroWakeWord.process_streaming_prob`` computes it, on preallocated
    buffers: the library quantizes through float64 temporaries and averages with ``statistics.mean`` (exact
    fractions), which was two thirds of this engine's CPU. Same inputs, same probabilities (tests check)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.stride = int(model.stride)
        self._scale, self._zero = float(model.input_scale), float(model.input_zero_point)
        self._rows = np.zeros((self.stride, FEATURE_BINS), dtype=np.float64)  # float64 and a division, as there
        self._quantized = np.zeros((self.stride, FEATURE_BINS), dtype=model.input_dtype)
        self._out = np.zeros(1, dtype=model.output_dtype)
        self._out_scale, self._out_zero = float(model.output_scale), float(model.output_zero_point)
        self._size = int(model.sliding_window_size)
        self._window = [0.0] * self._size
        # Raw addresses once, not a ctypes object per call: this loop runs 33 times a second per model.
        self._in_ptr, self._in_bytes = self._quantized.ctypes.data, self._quantized.nbytes
        self._out_ptr, self._out_bytes = self._out.ctypes.data, self._out.nbytes
        lib = model.lib
        self._copy_in, self._invoke, self._copy_out = (lib.TfLiteTensorCopyFromBuffer, lib.TfLiteInterpreterInvoke,
                                                       lib.TfLiteTensorCopyToBuffer)
        self.reset()

    def restart(self) -> None:
        """Start the streaming state over: a fresh interpreter on the model already in memory.

        ``MicroWakeWord.reset`` would read the file again: disk work that the second look (on the audio loop)
        must not wait for, and a file that may have changed since it was verified at start-up.
        """
        model, lib = self.model, self.model.lib
        lib.TfLiteInterpreterDelete(model.interpreter)
        model.interpreter = lib.TfLiteInterpreterCreate(model.model, None)
        lib.TfLiteInterpreterAllocateTensors(model.interpreter)
        model.input_tensor = lib.TfLiteInterpreterGetInputTensor(model.interpreter, 0)
        model.output_tensor = lib.TfLiteInterpreterGetOutputTensor(model.interpreter, 0)
        self.reset()

    def reset(self) -> None:
        """Forget the rows and probabilities (after ``restart``, whose tensors are new)."""
        self._tensors = (self.model.input_tensor, self.model.interpreter, self.model.output_tensor)
        self._filled = 0  # feature rows waiting for the next inference
        self._seen = 0  # probabilities computed since the reset (the mean needs a full window)
        self._window = [0.0] * self._size

    def push(self, row: np.ndarray) -> float:
        """Add one 40-bin feature row; the windowed probability after an inference, else 0."""
        self._rows[self._filled] = row
        self._filled += 1
        if self._filled < self.stride:
            return 0.0
        self._filled = 0
        rows = self._rows
        np.divide(rows, self._scale, out=rows)
        rows += self._zero
        np.rint(rows, out=rows)
        self._quantized[:] = rows
        inp, interpreter, out = self._tensors
        self._copy_in(inp, self._in_ptr, self._in_bytes)
        self._invoke(interpreter)
        self._copy_out(out, self._out_ptr, self._out_bytes)
        self._window[self._seen % self._size] = (float(self._out[0]) - self._out_zero) * self._out_scale
        self._seen += 1
        return sum(self._window) / self._size if self._seen >= self._size else 0.0


class MicroEngine:
    """Frames in, one microWakeWord score per model out, through one shared front end, behind a gate.

    The gate (``engine.EnergyGate``, the one openWakeWord uses) skips the front end and the models while
    the room is quiet. The models are stateful streaming networks whose state cannot be copied, so when
    a loud frame comes the last ``REPLAY_FRAMES`` frames (kept raw in a ring) are fed first: that is more
    than the models' receptive field, so their state is then what running all along would have left,
    up to the front end's slowly adapting noise estimate (``tests/test_wake_engine.py`` checks the wakes).
    """

    REPLAY_FRAMES = 25
    """Frames (2 s) replayed when the gate opens, and kept open after the last loud one."""

    def __init__(self, models: Sequence[MicroModel], fixes: Sequence[str], *, gate: Any = None) -> None:
        from pymicro_wakeword import MicroWakeWordFeatures

        self._streams = [_Stream(_open_model(m, fix)) for m, fix in zip(models, fixes, strict=True)]
        self._features = MicroWakeWordFeatures()
        self.gate = gate
        self._ring = np.zeros((self.REPLAY_FRAMES + 1, FRAME_SAMPLES), dtype=np.int16)
        self._level = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self.scores = np.zeros(len(self._streams), dtype=np.float32)
        """Scores of the latest frame, one per model, in the order given."""
        self.frames_scored = 0
        """Frames the models ran on (the rest were skipped by the gate)."""
        self._frame = self._fed = 0
        self._last_loud = -self.REPLAY_FRAMES - 1
        self.gate_open = False

    def _feed(self, frame: np.ndarray) -> None:
        for features in self._features.process_streaming(frame.tobytes()):
            row = features.reshape(FEATURE_BINS)
            for k, stream in enumerate(self._streams):
                probability = stream.push(row)
                if probability > self.scores[k]:
                    self.scores[k] = probability

    def process(self, frame: np.ndarray) -> np.ndarray:
        """Score one 80 ms int16 frame; returns ``self.scores`` (zeros while the gate is closed)."""
        index = self._frame
        self._frame += 1
        slot = self._ring[index % len(self._ring)]
        slot[:] = frame
        if self.gate is not None:
            self._level[:] = slot
        if self.gate is None or self.gate.loud(self._level):
            self._last_loud = index
        self.gate_open = index - self._last_loud <= self.REPLAY_FRAMES
        self.scores.fill(0.0)
        if not self.gate_open:
            return self.scores
        for i in range(max(self._fed, index - self.REPLAY_FRAMES), index):  # catch up on skipped frames
            self._feed(self._ring[i % len(self._ring)])
        self.scores.fill(0.0)  # a replayed frame's score belongs to the past
        self._feed(slot)
        self._fed = index + 1
        self.frames_scored += 1
        return self.scores

    def reset(self) -> None:
        """Forget all audio: each model's streaming state starts over (``_Stream.restart``)."""
        self._features.reset()
        for stream in self._streams:
            stream.restart()
        self._ring.fill(0)
        self._frame = self._fed = 0
        self._last_loud = -self.REPLAY_FRAMES - 1

    def close(self) -> None:
        """Free the TFLite interpreters now rather than whenever the garbage collector runs."""
        for stream in self._streams:
            stream.model.close()
