"""The second look: decide whether a wake the detector reported is kept (issue 10).

Why: every false wake opens the command window and may store seconds of a private conversation. On
real dialogue, bare openWakeWord at 0.5 wakes many times an hour (bench/eval_wake.py). Measured on the
tune split, what separates real wakes from false ones best with the models voxkeep ships is how the
score goes on right after the first crossing: a spoken wake phrase keeps rising to near 1, a chance
resemblance usually touches the threshold and falls back. So the daemon waits ``verify_frames_after``
frames (160 ms by default) after a hit and calls ``check`` with buffers that end then. A second,
independent run of the same models over the buffered audio (whole 2 s at once, aligned to its end rather
than to the streaming hop) must also find the word.

Two operating points, measured on the REPORT split (bench/README-falsewakes.md): the default
(``verify_peak = 0.5``, so only the re-score decides) keeps recall within 3 points of bare openWakeWord
and cuts false wakes per hour by 44 %; ``verify_peak = 0.95`` cuts them by 80 % but refuses about one
wake phrase in four that bare openWakeWord heard.

Tried and left out because they did not separate on the tune split: time-stretched re-scoring
(+-8 %, +-15 %), a pocketsphinx keyphrase search (it misses most synthesized wake phrases, so recall
collapsed) and a silero-VAD pause before the phrase (only separates because synthesized wake phrases
start after silence).

Reason strings (``Verdict.reason``), also in the ``wake_rejected`` event:

- ``confirmed``: accepted.
- ``verification_off``: accepted without a look, ``wake.verify`` is false.
- ``weak_peak``: the score did not reach ``verify_peak`` within ``verify_frames_after`` frames.
- ``rescore_disagrees``: a fresh run of the model over the buffered audio scored below ``verify_rescore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import SAMPLE_RATE
from .config import WakeSettings
from .models import FEATURE_MODELS, resolve_wake_word, verified_path

AUDIO_SECONDS = 2.0
"""Audio the daemon hands to ``check``: enough for the 16 embeddings one wake-model step reads."""
SCORE_FRAMES = 25
"""Score history (80 ms frames) the daemon hands to ``check``, ending with the newest frame."""

REASONS = {
    "confirmed": "accepted",
    "verification_off": "accepted without a second look (wake.verify = false)",
    "weak_peak": "the wake score did not rise to verify_peak soon after the wake",
    "rescore_disagrees": "a fresh run of the wake model over the buffered audio did not find the word",
}

_MEL_WINDOW, _MEL_STEP, _EMBEDDINGS = 76, 8, 16  # openWakeWord's feature geometry


@dataclass(frozen=True)
class Verdict:
    """Whether to keep a wake, and why (one of ``REASONS``)."""

    ok: bool
    reason: str


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread: the check runs on a worker beside the audio loop and must not compete with it.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class WakeVerifier:
    """Second look at a wake; thread-confined (own ONNX sessions), so give each worker its own."""

    def __init__(self, settings: WakeSettings, models_dir: Path) -> None:
        self.enabled = settings.verify
        self.frames_after = settings.verify_frames_after if self.enabled else 0
        # Verification off loads nothing: the daemon then needs no models beyond the detector's.
        resolved = dict(resolve_wake_word(spec, models_dir) for spec in settings.words) if self.enabled else {}
        self._peaks = {w: settings.verify_peaks.get(w, settings.verify_peak) for w in resolved}
        self._rescore_min = settings.verify_rescore
        self._models: dict[str, Any] = {}
        if self.enabled and self._rescore_min > 0:
            melspec, embedding = (verified_path(models_dir, name) for name in FEATURE_MODELS)
            self._melspec, self._embedding = _session(melspec), _session(embedding)
            self._models = {w: _session(p) for w, p in resolved.items()}

    def check(self, word: str, score: float, audio: np.ndarray, scores: Sequence[float]) -> Verdict:
        """Judge a wake of ``word`` that fired with ``score``.

        ``audio``: the last ~2 s of 16 kHz int16 audio and ``scores``: that word's recent scores, both
        ending ``frames_after`` frames after the frame that fired (the daemon keeps them in ring buffers).
        """
        if not self.enabled:
            return Verdict(True, "verification_off")
        if word not in self._peaks:
            raise ValueError(f"wake word {word!r} is not configured for verification")
        recent = list(scores)[-(self.frames_after + 1):]
        if max([score, *recent]) < self._peaks[word]:
            return Verdict(False, "weak_peak")
        if self._models and self.rescore(word, audio) < self._rescore_min:
            return Verdict(False, "rescore_disagrees")
        return Verdict(True, "confirmed")

    def rescore(self, word: str, audio: np.ndarray) -> float:
        """The wake model's score for the end of ``audio``, computed in one batch from scratch."""
        samples = np.asarray(audio, dtype=np.int16)[-int(AUDIO_SECONDS * SAMPLE_RATE):].astype(np.float32)
        spec = self._melspec.run(None, {"input": samples[None]})[0].squeeze(axis=(1,))
        spec = spec.reshape(-1, 32) / 10 + 2  # openWakeWord's scaling of the melspectrogram model output
        n = (len(spec) - _MEL_WINDOW) // _MEL_STEP + 1
        features = np.zeros((_EMBEDDINGS, 96), dtype=np.float32)
        if n > 0:
            starts = [len(spec) - _MEL_WINDOW - _MEL_STEP * k for k in range(min(n, _EMBEDDINGS))][::-1]
            windows = np.stack([spec[s:s + _MEL_WINDOW] for s in starts])[..., None].astype(np.float32)
            emb = self._embedding.run(None, {"input_1": windows})[0].reshape(-1, 96)
            features[_EMBEDDINGS - len(emb):] = emb
        model = self._models[word]
        return float(model.run(None, {model.get_inputs()[0].name: features[None]})[0].ravel()[0])
