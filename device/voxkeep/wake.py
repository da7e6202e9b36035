"""Wake-word detection: openWakeWord's ONNX models over each 80 ms frame.

``WakeDetector.process`` takes one frame and returns the wake words that crossed their threshold on
it. A refractory period per word turns the run of high scores one utterance gives into one hit.
The openWakeWord import is kept inside ``_load_model`` so nothing else in voxkeep sees the library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import FRAME_SAMPLES, SAMPLE_RATE
from .config import WakeSettings
from .errors import ModelError
from .models import FEATURE_MODELS, resolve_wake_word, verified_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WakeHit:
    """One wake word crossing its threshold on one frame."""

    wake_word: str
    score: float


def _load_model(paths: list[Path], models_dir: Path) -> Any:
    melspec, embedding = (verified_path(models_dir, name) for name in FEATURE_MODELS)
    from openwakeword.model import Model

    try:
        return Model(wakeword_models=[str(p) for p in paths], inference_framework="onnx",
                     melspec_model_path=str(melspec), embedding_model_path=str(embedding))
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        names = ", ".join(str(p) for p in paths)
        raise ModelError(f"cannot load wake-word model(s) {names}: {str(exc).splitlines()[0]}; "
                         "use an openWakeWord-compatible .onnx file") from None


class WakeDetector:
    """Scores frames and applies per-word thresholds and the refractory period."""

    def __init__(self, settings: WakeSettings, models_dir: Path) -> None:
        resolved = [resolve_wake_word(spec, models_dir) for spec in settings.words]
        names = [name for name, _ in resolved]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ModelError(f"wake word {sorted(dupes)[0]} is configured twice; list each word once")
        self.words = names
        self._thresholds = {n: settings.thresholds.get(n, settings.threshold) for n in names}
        unknown = set(settings.thresholds) - set(names)
        if unknown:
            log.warning("thresholds given for wake words that are not enabled: %s", ", ".join(sorted(unknown)))
        self._model = _load_model([p for _, p in resolved], models_dir)
        # openWakeWord keys its predictions by file stem; map them back to event names.
        self._keys = {Path(p).stem: n for n, p in resolved}
        self._refractory_frames = round(settings.refractory_seconds * SAMPLE_RATE / FRAME_SAMPLES)
        self._quiet_until = dict.fromkeys(names, -1)
        self._frame = 0
        self.last_scores: dict[str, float] = dict.fromkeys(names, 0.0)

    def threshold(self, word: str) -> float:
        """The threshold in force for ``word``."""
        return self._thresholds[word]

    def process(self, frame: np.ndarray) -> list[WakeHit]:
        """Score one frame; return the words that woke on it."""
        scores = self._model.predict(frame)
        hits = []
        for key, score in scores.items():
            word = self._keys[key]
            value = float(score)
            self.last_scores[word] = value
            if value >= self._thresholds[word] and self._frame > self._quiet_until[word]:
                self._quiet_until[word] = self._frame + self._refractory_frames
                hits.append(WakeHit(word, value))
        self._frame += 1
        return hits

    def reset(self) -> None:
        """Forget buffered audio, e.g. after the microphone was closed and reopened."""
        self._model.reset()
