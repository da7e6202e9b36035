"""False wakes and recall, bare openWakeWord against voxkeep's verified wakes (issue 10).

    python bench/eval_wake.py            # builds the corpus if needed (bench/corpus.py), then prints
    python bench/eval_wake.py --split tune

Why one pass serves both columns: the daemon runs ``WakeDetector`` (threshold 0.5, refractory 2 s) and
hands every hit to ``WakeVerifier.check`` with the last 2 s of audio and 25 frames of that word's scores.
A rejected hit still spends the detector's refractory period, exactly as in the daemon, so "bare" is the
detector's hits and "verified" is the subset the verifier accepts. Per-frame scores and hits are cached per
stream in the eval cache (keyed by the models' checksums), so re-running after a verifier change costs
only the checks.

Figures: recall = share of wake clips with an accepted hit of that word from the clip's start to 1 s past
its end, on the mixed clips (clean, white noise, babble) and separately on the rumbling ones (brown and
pink noise, ``wake-low-*`` streams), each also per noise condition; false wakes per hour on real speech
(no wake word in it); false wakes on synthesized negatives (plain prose and near-misses such as "a lexus",
"hey travis"). CPU ms per check is process time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import corpus
from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.config import WakeSettings, default_models_dir
from voxkeep.verify import AUDIO_SECONDS, SCORE_FRAMES, WakeVerifier
from voxkeep.wake import WakeDetector

WORDS = tuple(corpus.WAKE_PHRASES)
RECALL_TAIL = SAMPLE_RATE  # a hit up to 1 s after the clip ends still belongs to it


@dataclass
class Scored:
    """One stream run through the detector: its hits and every frame's scores."""

    name: str
    meta: dict
    audio: np.ndarray
    scores: np.ndarray  # frames x len(WORDS)
    hits: list[tuple[int, str, float]]  # (frame index, word, score)


def _models_key(models_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in models_dir.glob("*.onnx")):
        digest.update((models_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def score_stream(path: Path, models_dir: Path, key: str) -> Scored:
    """Run the product's WakeDetector over a stream once; cache hits and scores."""
    meta = json.loads(path.with_suffix(".json").read_text())
    audio = np.load(path, mmap_mode="r")
    # Keyed by the stream's mtime too: a rebuilt stream must never meet another stream's scores.
    cached = corpus.cache_dir() / "scores" / key / path.parent.name / f"{path.stem}-{path.stat().st_mtime_ns}.npz"
    if cached.exists():
        data = np.load(cached)
        hits = [(int(f), WORDS[int(w)], float(s)) for f, w, s in data["hits"]]
        return Scored(path.stem, meta, audio, data["scores"], hits)
    detector = WakeDetector(WakeSettings(words=list(WORDS), verify=False), models_dir)
    n = len(audio) // FRAME_SAMPLES
    scores = np.zeros((n, len(WORDS)), dtype=np.float32)
    hits = []
    for i in range(n):
        for hit in detector.process(np.asarray(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])):
            hits.append((i, hit.wake_word, hit.score))
        scores[i] = [detector.last_scores[w] for w in WORDS]
    cached.parent.mkdir(parents=True, exist_ok=True)
    packed = np.array([(f, WORDS.index(w), s) for f, w, s in hits], dtype=np.float64).reshape(-1, 3)
    np.savez(cached, scores=scores, hits=packed)
    return Scored(path.stem, meta, audio, scores, hits)


@dataclass
class Tally:
    """Counts for one wake word on one split."""

    clips: int = 0
    recalled_bare: int = 0
    recalled_verified: int = 0
    real_hours: float = 0.0
    real_bare: int = 0
    real_verified: int = 0
    synth_minutes: float = 0.0
    synth_bare: int = 0
    synth_verified: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    low_clips: int = 0
    low_bare: int = 0
    low_verified: int = 0
    by_noise: dict[str, list[int]] = field(default_factory=dict)
    """Noise condition -> [clips, recalled bare, recalled verified], over every wake stream."""


def context(s: Scored, frame: int, word: str, frames_after: int) -> tuple[np.ndarray, np.ndarray]:
    """What the daemon's ring buffers hold ``frames_after`` frames after ``frame`` fired."""
    last = min(frame + frames_after, len(s.scores) - 1)
    end = (last + 1) * FRAME_SAMPLES
    audio = np.asarray(s.audio[max(0, end - int(AUDIO_SECONDS * SAMPLE_RATE)):end])
    col = WORDS.index(word)
    return audio, s.scores[max(0, last + 1 - SCORE_FRAMES):last + 1, col]


def evaluate(split: str, models_dir: Path, verifier: WakeVerifier, cpu_ms: list[float],
             log: list[dict]) -> dict[str, Tally]:
    key = _models_key(models_dir)
    tallies = {w: Tally() for w in WORDS}
    for path in sorted((corpus.cache_dir() / "streams" / split).glob("*.npy")):
        s = score_stream(path, models_dir, key)
        accepted = []
        for frame, word, score in s.hits:
            audio, scores = context(s, frame, word, verifier.frames_after)
            t0 = time.process_time()
            verdict = verifier.check(word, score, audio, scores)
            cpu_ms.append((time.process_time() - t0) * 1000)
            accepted.append(verdict.ok)
            log.append({"split": split, "stream": s.name, "frame": frame, "word": word, "score": round(score, 3),
                        "ok": verdict.ok, "reason": verdict.reason})
            if s.meta["kind"] != "wake":
                tallies[word].reasons[verdict.reason] = tallies[word].reasons.get(verdict.reason, 0) + 1
        kind = s.meta["kind"]
        if kind == "wake":
            t = tallies[s.meta["word"]]
            ends = [((f + 1) * FRAME_SAMPLES, ok) for (f, w, _), ok in zip(s.hits, accepted, strict=True)
                    if w == s.meta["word"]]
            low = s.meta.get("condition") == "low"
            for span in s.meta["spans"]:
                inside = [ok for e, ok in ends if span["start"] < e <= span["end"] + RECALL_TAIL]
                if low:
                    t.low_clips += 1
                    t.low_bare += bool(inside)
                    t.low_verified += any(inside)
                else:
                    t.clips += 1
                    t.recalled_bare += bool(inside)
                    t.recalled_verified += any(inside)
                counts = t.by_noise.setdefault(span["label"].split("|")[3], [0, 0, 0])
                counts[0] += 1
                counts[1] += bool(inside)
                counts[2] += any(inside)
            continue
        for w in WORDS:
            n_bare = sum(1 for _, hw, _ in s.hits if hw == w)
            n_ok = sum(ok for (_, hw, _), ok in zip(s.hits, accepted, strict=True) if hw == w)
            t = tallies[w]
            if kind == "real":
                t.real_hours += len(s.audio) / SAMPLE_RATE / 3600
                t.real_bare += n_bare
                t.real_verified += n_ok
            else:
                t.synth_minutes += len(s.audio) / SAMPLE_RATE / 60
                t.synth_bare += n_bare
                t.synth_verified += n_ok
    return tallies


def report(split: str, tallies: dict[str, Tally]) -> None:
    label = "REPORT split (not tuned on)" if split == "report" else "TUNE split (verifier tuned here)"
    any_t = next(iter(tallies.values()))
    print(f"\n== {label}: {any_t.real_hours:.2f} h real speech, {any_t.synth_minutes:.0f} min synthesized "
          f"negatives, {any_t.clips} wake clips per word")
    print(f"{'wake word':12} {'recall bare':>11} {'verified':>9} {'FW/h bare':>10} {'verified':>9} "
          f"{'synth FW bare':>14} {'verified':>9}")
    total = Tally()
    for w, t in tallies.items():
        print(f"{w:12} {t.recalled_bare / t.clips:11.3f} {t.recalled_verified / t.clips:9.3f} "
              f"{t.real_bare / t.real_hours:10.2f} {t.real_verified / t.real_hours:9.2f} "
              f"{t.synth_bare:14d} {t.synth_verified:9d}")
        total.clips += t.clips
        total.recalled_bare += t.recalled_bare
        total.recalled_verified += t.recalled_verified
        total.real_bare += t.real_bare
        total.real_verified += t.real_verified
        total.synth_bare += t.synth_bare
        total.synth_verified += t.synth_verified
    h = any_t.real_hours
    print(f"{'all four':12} {total.recalled_bare / total.clips:11.3f} {total.recalled_verified / total.clips:9.3f} "
          f"{total.real_bare / h:10.2f} {total.real_verified / h:9.2f} {total.synth_bare:14d} "
          f"{total.synth_verified:9d}")
    print(f"   (real false wakes: {total.real_bare} bare, {total.real_verified} verified)")
    low = [(w, t) for w, t in tallies.items() if t.low_clips]
    if low:
        print(f"\n{'rumbling':12} {'recall bare':>11} {'verified':>9}   (brown/pink noise clips, per word)")
        for w, t in low:
            print(f"{w:12} {t.low_bare / t.low_clips:11.3f} {t.low_verified / t.low_clips:9.3f}")
        n, bare, ok = (sum(t.low_clips for _, t in low), sum(t.low_bare for _, t in low),
                       sum(t.low_verified for _, t in low))
        print(f"{'all four':12} {bare / n:11.3f} {ok / n:9.3f}")
    noises: dict[str, list[int]] = {}
    for t in tallies.values():
        for noise, counts in t.by_noise.items():
            noises[noise] = [a + b for a, b in zip(noises.get(noise, [0, 0, 0]), counts, strict=True)]
    print(f"\n{'noise':12} {'clips':>5} {'recall bare':>11} {'verified':>9}   (all four words)")
    for noise, (n, bare, ok) in sorted(noises.items()):
        print(f"{noise:12} {n:5d} {bare / n:11.3f} {ok / n:9.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="recall and false wakes per hour, bare vs verified")
    parser.add_argument("--split", choices=(*corpus.SPLITS, "both"), default="both")
    parser.add_argument("--log", type=Path, help="write every hit and its verdict as JSON Lines here")
    parser.add_argument("--verify-peak", type=float, default=WakeSettings.verify_peak,
                        help="wake.verify_peak to evaluate (default: the config default; 0.95 is the strict point)")
    parser.add_argument("--verify-rescore", type=float, default=WakeSettings.verify_rescore,
                        help="wake.verify_rescore to evaluate (0 turns the re-score off)")
    parser.add_argument("--verify-sure", type=float, default=WakeSettings.verify_sure,
                        help="wake.verify_sure to evaluate (a peak this high skips the classifier; 1.0 = never)")
    parser.add_argument("--no-classifier", action="store_true",
                        help="evaluate with wake.verify_classifier = false (the re-score and peak alone)")
    args = parser.parse_args(argv)
    if not (corpus.cache_dir() / "streams" / "report" / "wake-low-hey_marvin.npy").exists():  # built last
        corpus.main([])
    models_dir = default_models_dir()
    settings = WakeSettings(words=list(WORDS), verify=True, verify_peak=args.verify_peak,
                            verify_rescore=args.verify_rescore, verify_classifier=not args.no_classifier,
                            verify_sure=args.verify_sure)
    verifier = WakeVerifier(settings, models_dir)
    print(f"verified = voxkeep's second look with wake.verify_peak = {settings.verify_peak}, "
          f"verify_sure = {settings.verify_sure}, "
          f"verify_rescore = {settings.verify_rescore}, verify_classifier = {settings.verify_classifier}")
    cpu_ms: list[float] = []
    log: list[dict] = []
    splits = corpus.SPLITS if args.split == "both" else (args.split,)
    for split in splits:
        report(split, evaluate(split, models_dir, verifier, cpu_ms, log))
    if cpu_ms:
        print(f"\nverifier CPU per wake: mean {np.mean(cpu_ms):.1f} ms, p95 {np.percentile(cpu_ms, 95):.1f} ms, "
              f"max {np.max(cpu_ms):.1f} ms over {len(cpu_ms)} checks (this machine)")
    if args.log:
        args.log.write_text("".join(json.dumps(r) + "\n" for r in log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
