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


class MicroEngine:
    """Frames in, one microWakeWord score per model out, through one shared front end.

    Every frame is processed: a model's score depends on its internal streaming state, which cannot be
    rebuilt from a short replay the way openWakeWord's buffers can, and the models are cheap enough
    that skipping them in a quiet room would save little (bench/run.py).
    """

    def __init__(self, models: Sequence[MicroModel], fixes: Sequence[str]) -> None:
        from pymicro_wakeword import MicroWakeWordFeatures

        self._models = [_open_model(m, fix) for m, fix in zip(models, fixes, strict=True)]
        self._features = MicroWakeWordFeatures()
        self.scores = np.zeros(len(self._models), dtype=np.float32)
        """Scores of the latest frame, one per model, in the order given."""
        self.frames_scored = 0
        """Frames the models ran on (all of them: this engine has no gate)."""
        self.gate_open = True

    def process(self, frame: np.ndarray) -> np.ndarray:
        """Score one 80 ms int16 frame; returns ``self.scores``."""
        self.scores.fill(0.0)
        pcm = np.ascontiguousarray(frame, dtype=np.int16).tobytes()
        for features in self._features.process_streaming(pcm):
            for k, model in enumerate(self._models):
                probability = model.process_streaming_prob(features)
                if probability is not None and probability > self.scores[k]:
                    self.scores[k] = probability
        self.frames_scored += 1
        return self.scores

    def reset(self) -> None:
        """Forget all audio (the library reloads each model to clear its streaming state)."""
        self._features.reset()
        for model in self._models:
            model.reset()

    def close(self) -> None:
        """Free the TFLite interpreters now rather than whenever the garbage collector runs."""
        for model in self._models:
            model.close()
