"""Train the wake verifier's per-word classifiers (device/voxkeep/data/wake_classifiers.npz) on the TUNE split.

    python bench/train_verifier.py            # trains on TUNE, writes the .npz, prints held-out-voice figures
    python bench/eval_wake.py                 # then: figures on REPORT (never trained or tuned on)

Why this shape (openWakeWord's "custom verifier" idea, without owner enrolment): a logistic regression per
wake word on the 16x96 speech-embedding window the wake model reads, computed from scratch from the
daemon's buffered audio exactly as ``WakeVerifier.features`` does at run time.

Examples, all from the TUNE split (bench/corpus.py; REPORT is never read here):
- positives: every place in a synthesized wake clip where that word's model fired or came close
  (score > 0.1), seen at three look-ahead offsets so the decision does not hinge on the exact frame.
  The clips are the TUNE voices of all three families (espeak-ng, flite, Piper) in every room of
  ``corpus.CONDITIONS`` (``home-*``: noise, other people talking, music, simulated reverberation, far
  field, digital silence, back-to-back requests) besides the older clean / white / babble / rumble sets.
  Trained on white noise and rumble alone, the classifier had learnt "speech in the background = no
  wake" and refused 9 in 10 wakes over babble on REPORT;
- negatives: every such place in real speech (Czech acted dialogue, KLettres) and synthesized prose and
  near-misses, plus other words' wake phrases; and, every second along them, synthesized speech that is
  not the word's wake phrase (``speech_negatives``), so that "a synthesized voice" is no reason to accept.
Standardisation is folded into the weights, so the run-time check is one dot product.

The threshold per word is chosen from out-of-fold probabilities (folds by voice for synthesized audio and
by stretch of recording for real speech), so it reflects voices the model has not seen: it keeps ``KEEP``
(99 %) of the out-of-fold wake phrases the bare detector fired on (docs/wake.md has the figures).

A classifier judges by default only the words that need one (``needed`` in the .npz): those whose bare
model wakes more than ``eval_wake.BAR_FALSE_WAKES`` times an hour on TUNE's real speech. Why: every wake
phrase here is synthesized, and on recordings of other voices (docs/wake.md, "Voices from outside") the
classifiers refused 13 to 39 % of the phrases bare openWakeWord heard; a word whose model already
meets the false-wake bar should not pay that. The others are still trained and shipped, so that an owner
can turn one on by giving its threshold (``wake.verify_classifier_thresholds``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from scipy import optimize

import corpus
import eval_wake
from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.config import WakeSettings, default_models_dir
from voxkeep.verify import CLASSIFIERS_PATH, WakeVerifier

NEAR = 0.1
"""Score above which a place counts as "came close" and becomes a training example."""
OFFSETS = (1, 2, 3)
"""Look-ahead frames each example is seen at (the daemon checks at wake.verify_frames_after = 2)."""
L2 = 0.1
"""Ridge penalty on standardised features: strong, because positives number in the dozens per word."""
SPEECH_SHARE = 0.25
"""Share of the negatives' weight carried by the synthesized-speech windows (``speech_negatives``)."""
KEEP = 0.99
"""Share of out-of-fold wake phrases the bare detector fired on that the threshold keeps, per word."""
REAL_FOLD_FRAMES = 22500
"""Real speech is cut into 30-minute stretches for cross-validation folds."""


def candidates(s: eval_wake.Scored) -> list[tuple[int, str, bool]]:
    """(frame, word, fired) for every detector hit and every other rise above NEAR, 2 s apart."""
    out = [(f, w, True) for f, w, _ in s.hits]
    for word in corpus.CLASSIFIED:
        col = eval_wake.WORDS.index(word)
        last = -10 ** 9
        for i in np.flatnonzero(s.scores[:, col] > NEAR):
            if i - last >= 25 and not any(w == word and abs(i - f) < 25 for f, w, _ in s.hits):
                out.append((int(i), word, False))
                last = i
    return out


BABBLE_SNR_DB = (5.0, 10.0, 15.0)
"""Other people talking under the augmented copies (see ``babble_copies``)."""


def _stream_rows(path: Path, s: eval_wake.Scored, verifier: WakeVerifier, offsets: tuple[int, ...]) -> list[dict]:
    rows = []
    for frame, word, fired in candidates(s):
        end = (frame + 1) * FRAME_SAMPLES
        span = next((sp for sp in s.meta.get("spans", [])
                     if sp["start"] < end <= sp["end"] + eval_wake.RECALL_TAIL), None)
        positive = s.meta["kind"] == "wake" and s.meta["word"] == word and span is not None
        fold = (span["label"].split("|")[0] if span and s.meta["kind"] != "real"
                else f"{path.stem}:{frame // REAL_FOLD_FRAMES}")
        views = [verifier.features(eval_wake.context(s, frame, word, k)[0]) for k in offsets]
        rows.append({"word": word, "fired": fired, "positive": positive, "fold": fold, "frame": frame,
                     "kind": s.meta["kind"], "features": np.stack(views).reshape(len(offsets), -1),
                     "babble": (span or {}).get("condition") == "babble"})
    return rows


def babble_copies(s: eval_wake.Scored, rows: list[dict], verifier: WakeVerifier, offsets: tuple[int, ...],
                  backgrounds: corpus.Backgrounds, rng: np.random.Generator) -> list[dict]:
    """Each wake phrase the detector fired on, and each real-speech place, again under three other talkers.

    Why: trained on rooms with few babble phrases, the classifier learnt "speech in the background = no
    wake" and kept 10 of the 23 wakes bare openWakeWord heard over babble on REPORT. The copies teach it
    that the phrase, not the background, decides; the real-speech copies keep babble itself from
    becoming a reason to accept. The babble is the TUNE split's own (Czech cast), at 5, 10 or 15 dB.
    """
    out = []
    for r in rows:
        if not (r["fired"] and (r["positive"] or r["kind"] == "real")) or r["babble"]:
            continue
        views = []
        for k in offsets:
            audio = eval_wake.context(s, r["frame"], r["word"], k)[0].astype(np.float32)
            snr = BABBLE_SNR_DB[int(rng.integers(len(BABBLE_SNR_DB)))]
            mixed = corpus._with_background(audio, backgrounds.babble(len(audio), rng), snr)
            views.append(verifier.features(np.clip(np.round(mixed), -32768, 32767).astype(np.int16)))
        out.append({**r, "fired": False, "features": np.stack(views).reshape(len(offsets), -1)})
    return out


SPEECH_STEP_SECONDS = 1.0
"""Spacing of the synthesized-speech negatives (see ``speech_negatives``) along each phrase."""


def speech_negatives(s: eval_wake.Scored, verifier: WakeVerifier, offsets: tuple[int, ...]) -> list[dict]:
    """Windows of synthesized speech that is not a word's wake phrase, as negatives for that word.

    Why: every wake phrase is synthesized and most negatives are human speech, so a classifier can learn
    "synthetic voice = wake" and refuse its owner. Here the same synthesized voices, in the same rooms,
    say something else: another word's wake phrase and its request (okay_nabu's too), prose and near
    misses, seen every ``SPEECH_STEP_SECONDS`` along each phrase whether or not a wake model scored.
    A phrase of word W is a negative for every word but W. Out of fold on TUNE the classifier trained
    without them accepted 13 % (alexa) to 47 % (hey_jarvis) of these windows; with them 0.5-12 %.
    """
    spoken = s.meta.get("word") if s.meta["kind"] == "wake" else None
    step = int(SPEECH_STEP_SECONDS * SAMPLE_RATE)
    rows = []
    for span in s.meta.get("spans", []):
        voice = span["label"].split("|")[0]
        for end in range(span["start"] + step, span["end"] + step // 2, step):
            frame = min(end // FRAME_SAMPLES, len(s.scores) - 1)
            views = np.stack([verifier.features(eval_wake.context(s, frame, eval_wake.WORDS[0], k)[0])
                              for k in offsets]).reshape(len(offsets), -1)
            rows += [{"word": w, "fired": False, "positive": False, "fold": voice, "frame": frame,
                      "kind": "synth-speech", "features": views, "babble": span.get("condition") == "babble"}
                     for w in corpus.CLASSIFIED if w != spoken]
    return rows


def _cached(path: Path, key: str, what: str, make) -> list[dict]:
    """Rows of one stream, cached beside its scores (keyed by the models, the stream and what they are)."""
    name = f"{path.stem}-{path.stat().st_mtime_ns}-{what}.npz"
    file = corpus.cache_dir() / "verifier-rows" / key / path.parent.name / name
    if file.exists():
        with np.load(file) as d:  # each array read once: d[name] decompresses it again on every access
            columns = {str(n): d[str(n)] for n in d["names"]}
        return [{n: (c[i].item() if c.ndim == 1 else c[i]) for n, c in columns.items()}
                for i in range(len(columns["word"]))]
    rows = make()
    if rows:
        file.parent.mkdir(parents=True, exist_ok=True)
        names = list(rows[0])
        np.savez(file, names=np.array(names), **{n: np.array([r[n] for r in rows]) for n in names})
    return rows


def examples(split: str, verifier: WakeVerifier, offsets: tuple[int, ...]) -> list[dict]:
    """Every candidate of a split with its label, fold and embedding windows (one per offset), plus babble copies."""
    models_dir = default_models_dir()
    key = eval_wake._models_key(models_dir)
    backgrounds = corpus.Backgrounds(split)
    rows = []
    for path in sorted((corpus.cache_dir() / "streams" / split).glob("*.npy")):
        s = eval_wake.score_stream(path, models_dir, key)
        tag = "-".join(map(str, offsets))
        base = _cached(path, key, tag, lambda s=s, p=path: _stream_rows(p, s, verifier, offsets))
        rng = np.random.default_rng(int(hashlib.sha256(path.stem.encode()).hexdigest()[:8], 16))
        rows += base + _cached(path, key, f"{tag}-babble",
                               lambda s=s, b=base, r=rng: babble_copies(s, b, verifier, offsets, backgrounds, r))
        if path.stem.startswith(("home-", "synth-")):
            rows += _cached(path, key, f"{tag}-speech", lambda s=s: speech_negatives(s, verifier, offsets))
        print(f"{path.stem}: {len(rows)} examples", flush=True)
    return rows


def fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted, L2-penalised logistic regression (L-BFGS: the Hessian of 1,536 features over tens of
    thousands of views made Newton's method minutes per fold); weights on raw features."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    penalty = np.full(z.shape[1], L2)
    penalty[-1] = 0.0

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        m = z @ w
        p = 1 / (1 + np.exp(-np.clip(m, -50, 50)))
        nll = np.logaddexp(0, m) - y * m
        return float(weight @ nll + 0.5 * penalty @ w ** 2), z.T @ (weight * (p - y)) + penalty * w

    w = optimize.minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B",
                          options={"maxiter": 2000, "gtol": 1e-7}).x
    return (w[:-1] / std).astype(np.float32), float(w[-1] - np.sum(w[:-1] * mean / std))


def stacked(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and example weights: wake phrases carry half the weight, negatives the other half,
    ``SPEECH_SHARE`` of it on the synthesized-speech windows and the rest on the places where a wake model
    fired or came close (real speech, near misses), evenly within each group. Weighted by count, the
    thousands of easy speech windows drowned the few dozen near misses that decide false wakes."""
    x = np.vstack([r["features"] for r in rows])
    n = [len(r["features"]) for r in rows]
    y = np.concatenate([np.full(k, float(r["positive"])) for r, k in zip(rows, n, strict=True)])
    group = np.concatenate([np.full(k, 0 if r["positive"] else 2 if r["kind"] == "synth-speech" else 1)
                            for r, k in zip(rows, n, strict=True)])
    both = (group == 1).any() and (group == 2).any()
    shares = {0: 0.5, 1: 0.5 * (1 - SPEECH_SHARE) if both else 0.5, 2: 0.5 * SPEECH_SHARE if both else 0.5}
    weight = np.zeros(len(y))
    for g, share in shares.items():
        if (group == g).any():
            weight[group == g] = share / (group == g).sum()
    return x, y, weight


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
    threshold = float(np.clip(np.quantile(fired_pos, 1 - KEEP) if fired_pos else 0.5, 0.02, 0.9))
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
    settings = WakeSettings(words=list(corpus.CLASSIFIED), verify=True, verify_classifier=False)
    verifier = WakeVerifier(settings, default_models_dir())
    rows = examples("tune", verifier, OFFSETS)
    real_hours = sum(len(np.load(p, mmap_mode="r")) for p in
                     (corpus.cache_dir() / "streams" / "tune").glob("real-*.npy")) / SAMPLE_RATE / 3600
    checked = OFFSETS.index(settings.verify_frames_after)
    words, weights, biases, thresholds, needed = [], [], [], [], []
    for word in corpus.CLASSIFIED:
        w, b, threshold, stats = train_word([r for r in rows if r["word"] == word], checked)
        words.append(word)
        weights.append(w)
        biases.append(b)
        thresholds.append(threshold)
        bare_rate = stats["fired_real"] / real_hours
        needed.append(bare_rate > eval_wake.BAR_FALSE_WAKES)
        print(f"{word:12} threshold {threshold:.3f}  bare false wakes {bare_rate:.2f}/h of TUNE real speech "
              f"({'judged' if needed[-1] else 'not judged'} by default)  out-of-fold on TUNE: {json.dumps(stats)}")
    speech = sum(r["kind"] == "synth-speech" for r in rows)
    provenance = (f"bench/train_verifier.py on the TUNE split of bench/corpus.py: {len(rows) - speech} places where "
                  f"a wake model scored > {NEAR} ({sum(r['positive'] for r in rows)} in wake phrases) and {speech} "
                  f"synthesized-speech windows, "
                  f"offsets {OFFSETS}, L2 {L2}, synthesized-speech share {SPEECH_SHARE}, keep {KEEP}; "
                  f"judged by default where bare wakes > {eval_wake.BAR_FALSE_WAKES}/h on {real_hours:.2f} h "
                  f"of real speech; "
                  f"features from voxkeep.verify.WakeVerifier.features")
    np.savez_compressed(args.out, words=np.array(words), weights=np.stack(weights),
                        bias=np.array(biases), threshold=np.array(thresholds), needed=np.array(needed),
                        provenance=np.array(provenance))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
