"""Operating points of the two wake engines on one split: where ``wake.engine = "both"``'s defaults come from.

    python bench/sweep_engines.py                 # TUNE split: choose the agreement point here
    python bench/sweep_engines.py --split report  # then read it, never tune, on REPORT

For the words both engines ship (alexa, hey_jarvis, hey_mycroft) it prints recall per condition and voice
family (``home-*`` streams, ``eval_wake.windows``) and false wakes per hour of real speech for: bare
openWakeWord at 0.5, openWakeWord with the shipped classifier (today's default), bare microWakeWord at its
models' cutoffs and at lower thresholds, and "both" at every pair of microWakeWord threshold and
openWakeWord agreement threshold (``wake.agree_micro_threshold`` x ``wake.agree_threshold``), the agreement
computed as the daemon does (``voxkeep.wake.Agreement`` over the buffered 2 s when microWakeWord fires).
With ``okay_nabu`` in the corpus it also prints microWakeWord's okay_nabu beside bare openWakeWord's
hey_jarvis, issue 15's "default word a maker may ship" question. ``bench/eval_wake.py`` is the reference
table at the shipped defaults; this sweep is how those defaults were chosen.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import corpus
from eval_wake import WORDS, _models_key, context, score_stream, windows
from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.config import WakeSettings, default_models_dir
from voxkeep.wake import Agreement, WakeDetector, plan_words, second_look

COMMON = ("alexa", "hey_jarvis", "hey_mycroft")
MICRO_POINTS = (None, 0.7, 0.5)
"""microWakeWord thresholds tried (None: each model's own cutoff)."""
AGREE_POINTS = (0.02, 0.05, 0.1, 0.2, 0.3)
REFRACTORY = 25


def micro_scores(path: Path, words: tuple[str, ...], models_dir: Path) -> np.ndarray:
    """microWakeWord's per-frame scores for ``words`` over a stream, cached beside eval_wake's scores."""
    cached = corpus.cache_dir() / "scores" / "micro" / path.parent.name / f"{path.stem}-{path.stat().st_mtime_ns}.npy"
    if cached.exists():
        return np.load(cached)
    detector = WakeDetector(WakeSettings(words=list(words), engine="microwakeword", verify=False), models_dir)
    audio = np.load(path, mmap_mode="r")
    out = np.zeros((len(audio) // FRAME_SAMPLES, len(words)), np.float32)
    for i in range(len(out)):
        detector.process(np.asarray(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]))
        out[i] = [detector.last_scores[w] for w in words]
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, out)
    return out


def onsets(scores: np.ndarray, threshold: float) -> list[int]:
    """Frames the detector would report: crossings, one per refractory period."""
    out, quiet = [], -1
    for i in np.nonzero(scores >= threshold)[0]:
        if i > quiet:
            out.append(int(i))
            quiet = i + REFRACTORY
    return out


class Tally:
    def __init__(self) -> None:
        self.recall: dict[str, list[int]] = {}
        self.false = 0

    def add(self, axis: str, hit: bool) -> None:
        counts = self.recall.setdefault(axis, [0, 0])
        counts[0] += 1
        counts[1] += hit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=corpus.SPLITS, default="tune")
    args = parser.parse_args(argv)
    models_dir = default_models_dir()
    key = _models_key(models_dir)
    words = (*COMMON, "okay_nabu")
    cutoffs = {p.name: p.threshold for p in plan_words(WakeSettings(words=list(words), engine="microwakeword"),
                                                         models_dir)}
    both = WakeSettings(words=list(COMMON), engine="both", agree_frames=20)
    agreement = Agreement(plan_words(both, models_dir), both, models_dir)
    classifier = second_look(WakeSettings(words=list(COMMON)), models_dir)
    columns = ["bare oww", "oww+classifier", *(f"mww@{m or 'cut'}" for m in MICRO_POINTS),
               *(f"both {m or 'cut'}/{a}" for m in MICRO_POINTS for a in AGREE_POINTS)]
    tallies = {(c, w): Tally() for c in columns for w in words}
    lags: dict[str, list[float]] = {"cut": [], "0.7": []}
    """microWakeWord's first crossing minus bare openWakeWord's, per phrase both woke on (issue 15.5)."""
    hours = 0.0
    for path in sorted((corpus.cache_dir() / "streams" / args.split).glob("*.npy")):
        name = path.stem
        if not (name.startswith("home-") or name.startswith("real-")) or name == "home-hey_marvin":
            continue
        print(f"  {name} ...", file=sys.stderr, flush=True)
        s = score_stream(path, models_dir, key)
        micro = micro_scores(path, words, models_dir)
        targets = [s.meta["word"]] if s.meta["kind"] == "wake" else list(words)
        for word in targets:
            hits: dict[str, list[int]] = {}
            if word in COMMON:
                oww = s.scores[:, WORDS.index(word)]
                hits["bare oww"] = onsets(oww, 0.5)
                frames_after = classifier.look_ahead(word)
                hits["oww+classifier"] = [
                    f + frames_after for f in hits["bare oww"]
                    if classifier.check(word, float(oww[f]), *context(s, f, word, frames_after)).ok]
            for m in MICRO_POINTS:
                proposed = onsets(micro[:, words.index(word)], m or cutoffs[word])
                hits[f"mww@{m or 'cut'}"] = proposed
                if word not in COMMON:
                    continue
                agree = {f: agreement.score(word, context(s, f, word, 0)[0]) for f in proposed}
                for a in AGREE_POINTS:
                    hits[f"both {m or 'cut'}/{a}"] = [f for f in proposed if agree[f] >= a]
            for column, frames in hits.items():
                t = tallies[(column, word)]
                if s.meta["kind"] != "wake":
                    t.false += len(frames)
                    continue
                ends = [(f + 1) * FRAME_SAMPLES for f in frames]
                for span, (lo, hi) in zip(s.meta["spans"], windows(s.meta["spans"]), strict=True):
                    hit = any(lo < e <= hi for e in ends)
                    for axis in ("all", span["condition"], f"voice: {span['family']}"):
                        t.add(axis, hit)
        if s.meta["kind"] == "real":
            hours += len(s.audio) / SAMPLE_RATE / 3600
        elif s.meta["word"] in COMMON:
            word = s.meta["word"]
            oww, mww = s.scores[:, WORDS.index(word)], micro[:, words.index(word)]
            for lo, hi in windows(s.meta["spans"]):
                first = lo // FRAME_SAMPLES
                crossed = np.nonzero(oww[first:hi // FRAME_SAMPLES] >= 0.5)[0]
                for label, threshold in (("cut", cutoffs[word]), ("0.7", 0.7)):
                    micro_crossed = np.nonzero(mww[first:hi // FRAME_SAMPLES] >= threshold)[0]
                    if len(crossed) and len(micro_crossed):
                        lags[label].append((micro_crossed[0] - crossed[0]) * FRAME_SAMPLES / SAMPLE_RATE)

    def show(cols: list[str], ws: tuple[str, ...], title: str) -> None:
        print(f"\n## {title} ({args.split} split, {hours:.2f} h of real speech)\n")
        print("| condition / voice | clips | " + " | ".join(cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        axes = sorted({a for c in cols for w in ws for a in tallies[(c, w)].recall}, key=lambda a: (a != "all", a))
        for axis in axes:
            n = [sum(tallies[(c, w)].recall.get(axis, [0, 0])[0] for w in ws) for c in cols]
            k = [sum(tallies[(c, w)].recall.get(axis, [0, 0])[1] for w in ws) for c in cols]
            cells = [f"{b / a:.3f}" if a else "-" for a, b in zip(n, k, strict=True)]
            print(f"| {axis} | {max(n)} | " + " | ".join(cells) + " |")
        print("| **false wakes / h, real speech** | | "
              + " | ".join(f"{sum(tallies[(c, w)].false for w in ws) / max(hours, 1e-9):.2f}" for c in cols) + " |")

    show(columns, COMMON, "alexa + hey_jarvis + hey_mycroft")
    print()
    for label, values in lags.items():
        v = np.array(values)
        print(f"microWakeWord at {label} crosses after bare openWakeWord (0.5) by: mean {v.mean():+.3f} s, median "
              f"{np.median(v):+.3f} s, p90 {np.percentile(v, 90):+.3f} s, worst {v.max():+.3f} s; within 160 ms: "
              f"{np.mean(v <= 0.16 + 1e-9):.0%} of {len(v)} phrases both woke on")
    if any(tallies[(c, "okay_nabu")].recall for c in columns):
        show([c for c in columns if c.startswith("mww@")], ("okay_nabu",), "okay_nabu (microWakeWord only)")
        show(["bare oww", "oww+classifier", "mww@cut"], ("hey_jarvis",), "hey_jarvis, for comparison")
    return 0


if __name__ == "__main__":
    sys.exit(main())
