"""Wake recall on recordings of voices from outside the corpus, in the corpus's REPORT rooms.

    python bench/eval_recordings.py                     # clips in $VOXKEEP_EVAL_CACHE/recordings/<word>/*.wav
    python bench/eval_recordings.py --clips DIR --seeds 3

Why: every wake phrase of bench/corpus.py is synthesized (espeak-ng, flite, one Piper speaker), and the
second look's classifiers learnt from those voices. Other projects' test clips are voices voxkeep never
trained or tuned on. Their sources do not say whether each is a person or a synthesizer; all are
16 kHz mono recordings of one wake phrase. The clips used for docs/wake.md (none is in git):

- ``OHF-Voice/pymicro-wakeword`` (Apache-2.0) ``tests/<word>/<n>.wav``, commit 503f1b1;
- ``rhasspy/wyoming-openwakeword`` (MIT) ``tests/<word>.wav``, commit 419701f;
- ``dscripka/openWakeWord`` (Apache-2.0) ``tests/data/<word>_test.wav``, commit 368c037.

Save each as ``<word>/<source>.wav``, e.g. ``alexa/pymicro-wakeword-2.wav`` (a clip identical to another,
byte for byte, is counted once). Each
clip is placed in every room of ``corpus.CONDITIONS`` but back-to-back (``corpus.apply_condition``, the
REPORT split's impulse responses, babble and music), ``--seeds`` times with fresh draws, and the rooms of a
word play as one stream through the product's ``WakeDetector`` and second look, as in bench/eval_wake.py.
Columns: bare openWakeWord (threshold 0.5), voxkeep's defaults (``wake.engine = "auto"``: hey_mycroft heard
by microWakeWord; the default second look), and openWakeWord with the classifier on every word (each given
its tuned threshold, as before it judged only the words that need it; with today's microWakeWord witness
for its refusals, ``wake.verify_witness``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

import corpus
import eval_wake
from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.config import WakeSettings, default_models_dir
from voxkeep.verify import load_classifiers
from voxkeep.wake import second_look

ROOMS = tuple(c for c in corpus.CONDITIONS if c != "back-to-back")


def clips(root: Path) -> dict[str, list[Path]]:
    """Wake word -> its clips, duplicates (same bytes) left out."""
    seen: set[str] = set()
    out: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(root.glob("*/*.wav")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if path.parent.name in eval_wake.WORDS and digest not in seen:
            seen.add(digest)
            out[path.parent.name].append(path)
    return dict(out)


def stream(word_clips: list[Path], seeds: int) -> tuple[np.ndarray, list[dict]]:
    """Every clip in every room, ``seeds`` times, one after another; spans say where each phrase is."""
    rng = np.random.default_rng(20261201)
    backgrounds = corpus.Backgrounds("report")
    parts, spans, at = [], [], 0
    for room in ROOMS:
        for _ in range(seeds):
            for path in word_clips:
                audio = corpus.load_16k(path)
                x, _ = corpus.apply_condition(audio, room, "report", rng, backgrounds)
                gap = np.zeros(SAMPLE_RATE, np.int16) if room == "silence" else np.round(
                    corpus.room_tone(SAMPLE_RATE, rng)).astype(np.int16)
                spans.append({"start": at + int(corpus.LEAD * SAMPLE_RATE), "end": at + len(x),
                              "condition": room, "source": path.stem})
                parts.append(np.concatenate([x, gap]))
                at += len(parts[-1])
    return np.concatenate(parts), spans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=corpus.cache_dir() / "recordings",
                        help="folder of <wake word>/<source>.wav (default: $VOXKEEP_EVAL_CACHE/recordings)")
    parser.add_argument("--seeds", type=int, default=3, choices=range(1, 21), metavar="1-20",
                        help="placements of each clip in each room (default 3)")
    args = parser.parse_args(argv)
    found = clips(args.clips)
    if not found:
        print(f"eval_recordings: no <wake word>/*.wav under {args.clips}; save clips there (see --help) "
              f"for any of {', '.join(eval_wake.WORDS)}", file=sys.stderr)
        return 2
    models_dir = default_models_dir()
    shipped = load_classifiers()
    columns = ("bare openWakeWord", "voxkeep (default)", "classifier on every word")
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for word, paths in sorted(found.items()):
        try:
            audio, spans = stream(paths, args.seeds)
        except RuntimeError as exc:  # libsndfile's error for a file it cannot read
            print(f"eval_recordings: {exc}; replace that clip with a readable sound file", file=sys.stderr)
            return 2
        everywhere = {word: shipped[word].threshold} if word in shipped else {}
        # (engine the hits come from, second look or None): bare, the default, the old classifier everywhere.
        sides = [("openwakeword", None), ("auto", second_look(WakeSettings(words=[word]), models_dir)),
                 ("openwakeword", second_look(WakeSettings(words=[word], engine="openwakeword",
                                                           verify_classifier_thresholds=everywhere), models_dir))]
        scored = {engine: eval_wake.Scored(word, {}, audio, *eval_wake.detect(audio, models_dir, engine, (word,)))
                  for engine in {e for e, _ in sides}}
        verdicts = [((frame + 1) * FRAME_SAMPLES, k)  # (end sample of an accepted hit, column)
                    for k, (engine, look) in enumerate(sides) for frame, _, _ in eval_wake.judge(scored[engine], look)]
        for span, (lo, hi) in zip(spans, eval_wake.windows(spans), strict=True):
            kept = [any(lo < end <= hi for end, c in verdicts if c == k) for k in range(len(columns))]
            for key in (("condition", span["condition"]), ("source", span["source"]), ("word", word), ("all", "all")):
                tally[key][0] += 1
                for k, ok in enumerate(kept):
                    tally[key][k + 1] += ok
    counts = ", ".join(f"{w} {len(p)}" for w, p in sorted(found.items()))
    print(f"{sum(len(p) for p in found.values())} clips ({counts}) from {args.clips}, "
          f"each in {len(ROOMS)} rooms x {args.seeds} placements")
    for axis in ("condition", "source", "word", "all"):
        print(f"\n| {axis} | phrases | " + " | ".join(columns) + " |")
        print("| --- " * (len(columns) + 2) + "|")
        values = ROOMS if axis == "condition" else sorted(v for a, v in tally if a == axis)
        for v in values:
            n, *kept = tally[(axis, v)]
            if n:
                print(f"| {v} | {n} | " + " | ".join(f"{k / n:.3f}" for k in kept) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
