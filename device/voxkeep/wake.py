"""Wake-word detection: openWakeWord's ONNX models over each 80 ms frame.

``WakeDetector.process`` takes one frame and returns the wake words that crossed their threshold on
it. A refractory period per word turns the run of high scores one utterance gives into one hit.
The models run in ``engine.WakeEngine`` (openWakeWord's arithmetic on onnxruntime, without the
library's scipy/scikit-learn imports), behind an energy gate that skips them in a quiet room.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import FRAME_SAMPLES, SAMPLE_RATE
from .config import WakeSettings
from .engine import EnergyGate, WakeEngine
from .errors import ModelError
from .models import FEATURE_MODELS, resolve_wake_word, verified_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WakeHit:
    """One wake word crossing its threshold on one frame."""

    wake_word: str
    score: float


class WakeDetector:
    """Scores frames and applies per-word thresholds and the refractory period.

    ``gate=False`` runs the models on every frame (for comparisons); the default skips them while
    the room is quiet, which gives the same wakes (see ``engine``).
    """

    def __init__(self, settings: WakeSettings, models_dir: Path, *, gate: bool = True) -> None:
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
        melspec, embedding = (verified_path(models_dir, name) for name in FEATURE_MODELS)
        self._engine = WakeEngine(melspec, embedding, [p for _, p in resolved],
                                  gate=EnergyGate() if gate else None)
        self._refractory_frames = round(settings.refractory_seconds * SAMPLE_RATE / FRAME_SAMPLES)
        self._quiet_until = dict.fromkeys(names, -1)
        self._frame = 0
        self.last_scores: dict[str, float] = dict.fromkeys(names, 0.0)

    def process(self, frame: np.ndarray) -> list[WakeHit]:
        """Score one frame; return the words that woke on it."""
        scores = self._engine.process(frame)
        hits = []
        for word, score in zip(self.words, scores, strict=True):
            value = float(score)
            self.last_scores[word] = value
            if value >= self._thresholds[word] and self._frame > self._quiet_until[word]:
                self._quiet_until[word] = self._frame + self._refractory_frames
                hits.append(WakeHit(word, value))
        self._frame += 1
        return hits

    def reset(self) -> None:
        """Forget buffered audio, e.g. after the microphone was closed and reopened."""
        self._engine.reset()

    @property
    def frames_scored(self) -> int:
        """Frames the models ran on since start, for the summary line and the benchmark."""
        return self._engine.frames_scored
