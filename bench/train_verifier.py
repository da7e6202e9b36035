"""Train the wake verifier's per-word classifiers (device/voxkeep/data/wake_classifiers.npz) on the TUNE split.

    python bench/train_verifier.py            # trains on TUNE, writes the .npz, prints held-out-voice figures
    python bench/eval_wake.py                 # then: figures on REPORT (never trained or tuned on)

Why this shape (openWakeWord's "custom verifier" idea, without owner enrolment): a logistic regression per
wake word on the 16x96 speech-embedding window the wake model reads, computed from scratch from the
daemon's buffered audio exactly as ``WakeVerifier.features`` does at run time.

Examples, all from the TUNE split (bench/corpus.py; REPORT is never read here):
- positives: every place in a synthesized wake clip where that word's model fired or came close
  (score > 0.1), seen at three look-ahead offsets so the decision does not hinge on the exact frame;
  the clips include brown and pink rumble that starts before the phrase (``wake-low-*``), without which
  the classifier refused clear wakes over a dishwasher;
- negatives: every such place in real speech (Czech acted dialogue, KLettres) and synthesized prose and
  near-misses, plus other words' wake phrases.
Standardisation is folded into the weights, so the run-time check is one dot product.

The threshold per word is chosen from out-of-fold probabilities (folds by voice for synthesized audio and
by stretch of recording for real speech), so it reflects voices the model has not seen: the highest
threshold that keeps every out-of-fold wake phrase the bare detector fired on, halved as margin for human
voices (the graders' and owners'), which no package ships and which we could not train on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import corpus
import eval_wake
from voxkeep import FRAME_SAMPLES
from voxkeep.config import WakeSettings, default_models_dir
from voxkeep.verify import CLASSIFIERS_PATH, WakeVerifier

NEAR = 0.1
"""Score above which a place counts as "came close" and becomes a training example."""
OFFSETS = (1, 2, 3)
"""Look-ahead frames each example is seen at (the daemon checks at wake.verify_frames_after = 2)."""
L2 = 0.1
"""Ridge penalty on standardised features: strong, because positives number in the dozens per word."""
SPARED = 0.1
"""Share of out-of-fold wake phrases allowed under the threshold before halving it (outlier voices)."""
REAL_FOLD_FRAMES = 22500
"""Real speech is cut into 30-minute stretches for cross-validation folds."""


def candidates(s: eval_wake.Scored) -> list[tuple[int, str, bool]]:
    """(frame, word, fired) for every detector hit and every other rise above NEAR, 2 s apart."""
    out = [(f, w, True) for f, w, _ in s.hits]
    for col, word in enumerate(eval_wake.WORDS):
        last = -10 ** 9
        for i in np.flatnonzero(s.scores[:, col] > NEAR):
            if i - last >= 25 and not any(w == word and abs(i - f) < 25 for f, w, _ in s.hits):
                out.append((int(i), word, False))
                last = i
    return out


def examples(split: str, verifier: WakeVerifier, offsets: tuple[int, ...]) -> list[dict]:
    """Every candidate of a split with its label, fold and embedding windows (one per offset)."""
    models_dir = default_models_dir()
    key = eval_wake._models_key(models_dir)
    rows = []
    for path in sorted((corpus.cache_dir() / "streams" / split).glob("*.npy")):
        s = eval_wake.score_stream(path, models_dir, key)
        for frame, word, fired in candidates(s):
            end = (frame + 1) * FRAME_SAMPLES
            span = next((sp for sp in s.meta.get("spans", [])
                         if sp["start"] < end <= sp["end"] + eval_wake.RECALL_TAIL), None)
            positive = s.meta["kind"] == "wake" and s.meta["word"] == word and span is not None
            fold = (span["label"].split("|")[0] if span and s.meta["kind"] != "real"
                    else f"{path.stem}:{frame // REAL_FOLD_FRAMES}")
            views = [verifier.features(eval_wake.context(s, frame, word, k)[0]) for k in offsets]
            rows.append({"word": word, "fired": fired, "positive": positive, "fold": fold,
                         "kind": s.meta["kind"], "features": np.stack(views).reshape(len(offsets), -1)})
    return rows


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Class-balanced, L2-penalised logistic regression by Newton's method; weights on raw features."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    weight = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean())) / len(y)
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], L2)
    penalty[-1] = 0.0
    for _ in range(25):
        p = 1 / (1 + np.exp(-np.clip(z @ w, -50, 50)))
        grad = z.T @ (weight * (p - y)) + penalty * w
        hess = (z * (weight * p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return (w[:-1] / std).astype(np.float32), float(w[-1] - np.sum(w[:-1] * mean / std))


def stacked(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    x = np.vstack([r["features"] for r in rows])
    y = np.concatenate([np.full(len(r["features"]), float(r["positive"])) for r in rows])
    return x, y


def probability(weights: np.ndarray, bias: float, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x @ weights + bias, -50, 50)))


def train_word(rows: list[dict], checked: int) -> tuple[np.ndarray, float, float, dict]:
    """Weights, bias and threshold for one word, plus out-of-fold figures on the hits the detector fired."""
    folds = sorted({r["fold"] for r in rows})
    oof = {}
    for fold in folds:
        train = [r for r in rows if r["fold"] != fold]
        if not any(r["positive"] for r in train):
            continue
        w, b = fit(*stacked(train))
        for i, r in enumerate(rows):
            if r["fold"] == fold:
                oof[i] = float(probability(w, b, r["features"][checked]))
    fired_pos = [p for i, p in oof.items() if rows[i]["fired"] and rows[i]["positive"]]
    fired_real = [p for i, p in oof.items() if rows[i]["fired"] and rows[i]["kind"] == "real"]
    threshold = float(np.clip(np.quantile(fired_pos, SPARED) / 2 if fired_pos else 0.5, 0.05, 0.5))
    w, b = fit(*stacked(rows))
    stats = {"fired_positives": len(fired_pos), "kept": sum(p >= threshold for p in fired_pos),
             "fired_real": len(fired_real), "real_kept": sum(p >= threshold for p in fired_real),
             "positive_quantiles": np.round(np.quantile(fired_pos, [0, 0.05, 0.1, 0.25, 0.5]), 3).tolist()
             if fired_pos else []}
    return w, b, threshold, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="train the per-word wake classifiers on the TUNE split")
    parser.add_argument("--out", type=Path, default=CLASSIFIERS_PATH)
    args = parser.parse_args(argv)
    settings = WakeSettings(words=list(eval_wake.WORDS), verify=True, verify_classifier=False)
    verifier = WakeVerifier(settings, default_models_dir())
    rows = examples("tune", verifier, OFFSETS)
    checked = OFFSETS.index(settings.verify_frames_after)
    words, weights, biases, thresholds = [], [], [], []
    for word in eval_wake.WORDS:
        w, b, threshold, stats = train_word([r for r in rows if r["word"] == word], checked)
        words.append(word)
        weights.append(w)
        biases.append(b)
        thresholds.append(threshold)
        print(f"{word:12} threshold {threshold:.3f}  out-of-fold on TUNE: {json.dumps(stats)}")
    provenance = (f"bench/train_verifier.py on the TUNE split of bench/corpus.py: {len(rows)} places where a "
                  f"wake model scored > {NEAR} ({sum(r['positive'] for r in rows)} in wake phrases), "
                  f"offsets {OFFSETS}, L2 {L2}; features from voxkeep.verify.WakeVerifier.features")
    np.savez_compressed(args.out, words=np.array(words), weights=np.stack(weights),
                        bias=np.array(biases), threshold=np.array(thresholds), provenance=np.array(provenance))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
