"""Wake recall per room and voice family, and false wakes per hour: bare openWakeWord beside voxkeep.

    python bench/eval_wake.py                  # REPORT split (never tuned on); builds the corpus if needed
    python bench/eval_wake.py --split tune
    python bench/eval_wake.py --log /tmp/hits.jsonl --verify-sure 0.98   # another operating point
    python bench/eval_wake.py --softer 30 [--no-gate]   # a soft voice; with or without the energy gate
    python bench/eval_wake.py --offset 300     # a microphone that adds a constant offset (DC) to every sample

Why one pass serves every column: the daemon runs ``WakeDetector`` (threshold 0.5, refractory 2 s) and
hands every hit to ``WakeVerifier.check`` with the last 2 s of audio and 25 frames of that word's scores.
A rejected hit still spends the detector's refractory period, exactly as in the daemon, so "bare" is the
detector's hits and "voxkeep" is the subset the verifier accepts, plus the faint hits (a score peaking between
``wake.faint_floor`` and the threshold) it accepts (``judge``; ``--no-faint`` for the default before them).
Per-frame scores and hits are cached per stream and engine in the eval cache (keyed by the models'
checksums), so re-running after a verifier change costs only the checks. With a second wake engine installed
(``wake.engine``), each engine setting gets its own bare and voxkeep columns in the same run.

Recall = share of wake phrases (``home-*`` streams, bench/corpus.py ``CONDITIONS``) with an accepted hit
of that word from the phrase's start to 1 s past its end (or the next phrase's start), per condition and
per voice family; false wakes per hour on real speech (no wake word in it) and counts on synthesized
negatives (prose and near-misses such as "a lexus", "hey travis"). CPU ms per check is process time.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

import corpus
from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.audio import DcRemover
from voxkeep.config import WakeSettings, default_models_dir
from voxkeep.engine import EnergyGate
from voxkeep.verify import AUDIO_SECONDS, SCORE_FRAMES, Verdict, WakeVerifier
from voxkeep.wake import WakeDetector

WORDS = tuple(corpus.WAKE_PHRASES)
RECALL_TAIL = SAMPLE_RATE  # a hit up to 1 s after the clip ends still belongs to it
REFRACTORY_FRAMES = round(WakeSettings().refractory_seconds * SAMPLE_RATE / FRAME_SAMPLES)
BAR_POINTS = 2.0
"""Issue 13: voxkeep's recall within this many points of bare openWakeWord in every condition and family."""
BAR_FALSE_WAKES = 1.0
"""Issue 13: false wakes per hour of real speech at most this."""


@dataclass
class Scored:
    """One stream run through the detector: its hits and every frame's scores."""

    name: str
    meta: dict
    audio: np.ndarray
    scores: np.ndarray  # frames x len(WORDS)
    hits: list[tuple[int, str, float]]  # (frame index, word, score): the threshold crossings, bare's wakes
    faint: list[tuple[int, str, float]] = field(default_factory=list)
    """Faint hits (``wake.faint_floor``): for the second look only, never a bare wake."""


def _models_key(models_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in sorted(p.name for p in models_dir.glob("*.onnx")):
        digest.update((models_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def engines() -> tuple[str, ...]:
    """Engine settings this checkout knows: openWakeWord alone unless ``wake.engine`` exists."""
    names = {f.name for f in dataclasses.fields(WakeSettings)}
    return ("auto", "openwakeword", "microwakeword", "both") if "engine" in names else ("openwakeword",)


CASCADE = "cascade@"
"""``cascade@T``: openWakeWord with ``wake.cascade_threshold = T`` (``--cascade``), columns of their own."""


def settings_for(engine: str, words: tuple[str, ...], **kw: object) -> WakeSettings:
    """The daemon's wake settings for ``engine`` and ``words`` (plus any second-look keys in ``kw``)."""
    if engine.startswith(CASCADE):
        kw = {**kw, "cascade_threshold": float(engine[len(CASCADE):])}
        engine = "openwakeword"
    extra = {"engine": engine} if len(engines()) > 1 else {}
    return WakeSettings(words=list(words), **extra, **kw)


def engine_words(engine: str, models_dir: Path) -> tuple[str, ...]:
    """The evaluated words this engine setting streams itself (a word it lacks falls back elsewhere: left out).
    "auto" mixes the engines word by word: it is evaluated on bare openWakeWord's words, to compare with it."""
    if len(engines()) == 1 or engine == "auto":
        return corpus.CLASSIFIED
    from voxkeep.errors import ModelError
    from voxkeep.models import bundled_micro_words
    from voxkeep.wake import plan_words

    usable = []
    for w in WORDS:
        try:
            (plan,) = plan_words(settings_for(engine, (w,)), models_dir)
        except ModelError:
            continue
        if engine.startswith(CASCADE) and w not in bundled_micro_words():
            continue  # the cascade needs microWakeWord's model of the word (else it is ignored for all)
        streams = "openwakeword" if engine.startswith(CASCADE) else engine
        if plan.engine == streams or (engine == "both" and (plan.agree or plan.engine == "microwakeword")):
            usable.append(w)
    return tuple(usable)


def second_look(engine: str, words: tuple[str, ...], models_dir: Path, look: dict) -> Look:
    """The daemon's second look for that engine setting (voxkeep.wake.second_look once engines exist)."""
    settings = settings_for(engine, words, **look)
    if len(engines()) == 1:
        return WakeVerifier(settings, models_dir)
    from voxkeep.wake import second_look as daemon_look

    return daemon_look(settings, models_dir)


Hit = tuple[int, str, float]
"""(frame index, word, score)."""


def detect(audio: np.ndarray, models_dir: Path, engine: str = "openwakeword",
           words: tuple[str, ...] = corpus.CLASSIFIED, gate: bool = True) -> tuple[np.ndarray, list[Hit], list[Hit]]:
    """The product's WakeDetector over ``audio`` frame by frame (as the daemon runs it, second look on): every
    frame's scores (columns = ``WORDS``), its hits, and its faint hits. ``gate=False``: the models run on every
    frame (what the energy gate must never lose)."""
    detector = WakeDetector(settings_for(engine, words), models_dir, gate=gate)
    n = len(audio) // FRAME_SAMPLES
    scores = np.zeros((n, len(WORDS)), dtype=np.float32)
    cols = [WORDS.index(w) for w in words]
    hits: list[Hit] = []
    faint: list[Hit] = []
    for i in range(n):
        for hit in detector.process(np.asarray(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])):
            (faint if hit.faint else hits).append((i, hit.wake_word, hit.score))
        scores[i, cols] = [detector.last_scores[w] for w in words]
    return scores, hits, faint


def softer(audio: np.ndarray, db: float, seed: int) -> np.ndarray:
    """``audio`` ``db`` quieter, over a fresh room tone at the corpus's level: a talker further away, or a
    microphone set lower, in the same quiet room (scaling alone would also quieten the room)."""
    tone = corpus.room_tone(len(audio), np.random.default_rng(seed))
    return np.clip(np.round(audio * 10 ** (-db / 20) + tone), -32768, 32767).astype(np.int16)


def without_offset(audio: np.ndarray) -> tuple[np.ndarray, bool]:
    """``audio`` as the daemon's loop hands it to the detector (``voxkeep.audio.DcRemover``), and whether that
    changed any frame (a stream it leaves alone keeps its cached scores)."""
    remover = DcRemover()
    frames = [np.asarray(audio[i:i + FRAME_SAMPLES]) for i in range(0, len(audio) // FRAME_SAMPLES * FRAME_SAMPLES,
                                                                     FRAME_SAMPLES)]
    out = [remover(f) for f in frames]
    if all(a is b for a, b in zip(out, frames, strict=True)):
        return audio, False
    return np.concatenate([*out, np.asarray(audio[len(frames) * FRAME_SAMPLES:])]), True


def score_stream(path: Path, models_dir: Path, key: str, engine: str = "openwakeword",
                 words: tuple[str, ...] = corpus.CLASSIFIED, quieter: float = 0.0, gate: bool = True,
                 offset: int = 0) -> Scored:
    """Run the product's WakeDetector over a stream once, as the daemon's loop does (its offset removed first); cache
    hits and scores (columns = ``WORDS``). ``quieter``: play the stream that many dB softer (``softer``); ``gate``:
    see ``detect``; ``offset``: add this constant to every sample first (a microphone's DC offset)."""
    meta = json.loads(path.with_suffix(".json").read_text())
    audio = np.load(path, mmap_mode="r")
    if quieter:
        audio = softer(audio.astype(np.float64), quieter, seed=len(audio))
    if offset:
        audio = corpus.with_offset(audio, offset)
    audio, shifted = without_offset(audio)
    # Keyed by the stream's mtime too: a rebuilt stream must never meet another stream's scores.
    tag = key if engine == "openwakeword" else f"{key}-{engine}-{'-'.join(words)}"
    tag += f"-faint{WakeSettings().faint_floor:g}"  # the floor decides which faint hits there are
    energy = EnergyGate()  # the gate decides which quiet phrases are heard at all ("band": its level is speech_dbfs)
    tag += f"-gate{energy.margin_db:g},{energy.min_db:g},{energy.max_db:g}-band" if gate else "-ungated"
    tag += f"-softer{quieter:g}" if quieter else ""
    tag += f"-offset{offset}" if offset else ""
    tag += "-dc" if shifted else ""
    cached = corpus.cache_dir() / "scores" / tag / path.parent.name / f"{path.stem}-{path.stat().st_mtime_ns}.npz"
    if cached.exists():
        data = np.load(cached)
        hits, faint = ([(int(f), WORDS[int(w)], float(s)) for f, w, s in data[k]] for k in ("hits", "faint"))
        return Scored(path.stem, meta, audio, data["scores"], hits, faint)
    scores, hits, faint = detect(audio, models_dir, engine, words, gate)
    cached.parent.mkdir(parents=True, exist_ok=True)
    packed = {k: np.array([(f, WORDS.index(w), s) for f, w, s in v], dtype=np.float64).reshape(-1, 3)
              for k, v in (("hits", hits), ("faint", faint))}
    np.savez(cached, scores=scores, **packed)
    return Scored(path.stem, meta, audio, scores, hits, faint)


def judge(s: Scored, look: Look | None, on_check: Callable[[Hit, Verdict, float], None] | None = None) -> list[Hit]:
    """The hits a column wakes on: bare (``look`` None) every threshold crossing; else every hit and faint hit
    the second look accepts, less those within the refractory period of an accepted one of the same word (in
    the daemon a faint wake's phrase crossing the threshold a moment later is that wake still scoring).
    ``on_check(hit, verdict, cpu seconds)`` sees every verdict."""
    if look is None:
        return list(s.hits)
    woke: list[Hit] = []
    last: dict[str, int] = {}
    for hit in sorted(s.hits + s.faint):
        frame, word, score = hit
        audio, scores = context(s, frame, word, look.look_ahead(word))
        t0 = time.process_time()
        verdict = look.check(word, score, audio, scores)
        if on_check is not None:
            on_check(hit, verdict, time.process_time() - t0)
        if verdict.ok and frame - last.get(word, -REFRACTORY_FRAMES - 1) > REFRACTORY_FRAMES:
            woke.append(hit)
            last[word] = frame
    return woke


def context(s: Scored, frame: int, word: str, frames_after: int) -> tuple[np.ndarray, np.ndarray]:
    """What the daemon's ring buffers hold ``frames_after`` frames after ``frame`` fired."""
    last = min(frame + frames_after, len(s.scores) - 1)
    end = (last + 1) * FRAME_SAMPLES
    audio = np.asarray(s.audio[max(0, end - int(AUDIO_SECONDS * SAMPLE_RATE)):end])
    col = WORDS.index(word)
    return audio, s.scores[max(0, last + 1 - SCORE_FRAMES):last + 1, col]


class Look(Protocol):
    """What the daemon hands each hit to: ``WakeVerifier`` or ``voxkeep.wake.SecondLook``."""

    def look_ahead(self, word: str) -> int: ...

    def check(self, word: str, score: float, audio: np.ndarray, scores: Sequence[float]) -> Verdict: ...


@dataclass
class Column:
    """One engine setting, bare (detector only) or as voxkeep runs it (with its second look)."""

    name: str
    engine: str
    verifier: Look | None
    words: tuple[str, ...]
    counted: tuple[str, ...] = ()
    """The words whose phrases and false wakes are counted (``--words``; default: all of ``words``)."""
    quieter: float = 0.0
    """dB softer the streams are played (``--softer``)."""
    offset: int = 0
    """Constant added to every sample of the streams (``--offset``)."""
    gate: bool = True
    """False: the detector runs its models on every frame (``--no-gate``)."""
    recall: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    """(axis, value, word) -> [phrases, recalled]; axes: condition, family, word, pair, detail, all."""
    real_hours: float = 0.0
    real_false: int = 0
    synth_false: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def tally(self, axis: str, value: str, word: str, hit: bool) -> None:
        counts = self.recall.setdefault((axis, value, word), [0, 0])
        counts[0] += 1
        counts[1] += hit

    def counts(self, axis: str, value: str, words: tuple[str, ...] | None = None) -> tuple[int, int]:
        """(phrases, recalled) over ``words`` (default: this column's own)."""
        pairs = [self.recall.get((axis, value, w), (0, 0)) for w in (words or self.words)]
        return sum(n for n, _ in pairs), sum(k for _, k in pairs)

    def rate(self, axis: str, value: str, words: tuple[str, ...] | None = None) -> float | None:
        n, k = self.counts(axis, value, words)
        return k / n if n else None


def windows(spans: list[dict]) -> list[tuple[int, int]]:
    """Where each phrase's hit may land: its start to 1 s past its end, never into the next phrase."""
    out = []
    for i, span in enumerate(spans):
        end = span["end"] + RECALL_TAIL
        if i + 1 < len(spans):
            end = min(end, spans[i + 1]["start"] + FRAME_SAMPLES * 4)
        out.append((span["start"], end))
    return out


def run_column(col: Column, streams: list[Path], models_dir: Path, key: str, cpu_ms: list[float],
               log: list[dict], split: str) -> None:
    for path in streams:
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta["kind"] == "wake" and meta.get("condition") != "home":
            continue  # the older mixed and rumbling sets train the verifier; the report reads home-* only
        s = score_stream(path, models_dir, key, col.engine, col.words, col.quieter, col.gate, col.offset)
        kind = s.meta["kind"]

        def checked(hit: Hit, verdict: Verdict, cpu: float, s: Scored = s, kind: str = kind) -> None:
            cpu_ms.append(cpu * 1000)
            log.append({"split": split, "column": col.name, "stream": s.name, "frame": hit[0], "word": hit[1],
                        "score": round(hit[2], 3), "ok": verdict.ok, "reason": verdict.reason})
            if kind != "wake":
                col.reasons[verdict.reason] = col.reasons.get(verdict.reason, 0) + 1

        woke = judge(s, col.verifier, checked)
        if kind == "wake":
            word = s.meta["word"]
            if word not in (col.counted or col.words):
                continue
            ends = [(f + 1) * FRAME_SAMPLES for f, w, _ in woke if w == word]
            for span, (lo, hi) in zip(s.meta["spans"], windows(s.meta["spans"]), strict=True):
                hit = any(lo < e <= hi for e in ends)
                col.tally("all", "all", word, hit)
                col.tally("condition", span["condition"], word, hit)
                col.tally("family", span["family"], word, hit)
                col.tally("word", word, word, hit)
                if span.get("detail"):
                    col.tally("detail", span["detail"], word, hit)
                if span.get("pair"):
                    col.tally("pair", f"back-to-back, request {span['pair']}", word, hit)
            continue
        n_ok = sum(w in (col.counted or col.words) for _, w, _ in woke)
        if kind == "real":
            col.real_hours += len(s.audio) / SAMPLE_RATE / 3600
            col.real_false += n_ok
        else:
            col.synth_false += n_ok


def table(columns: list[Column], axis: str, values: list[str], title: str) -> list[str]:
    """Markdown rows: one per value, one recall column per engine setting, plus voxkeep - bare."""
    head = f"| {title} | phrases | " + " | ".join(c.name for c in columns) + " |"
    rows = [head, "| --- " * (len(columns) + 2) + "|"]
    for v in values:
        n = columns[0].counts(axis, v)[0]
        if not n:
            continue
        cells = []
        for c in columns:
            r = c.rate(axis, v)
            cells.append("" if r is None else f"{r:.3f}")
        rows.append(f"| {v} | {n} | " + " | ".join(cells) + " |")
    return rows


def verdict_lines(columns: list[Column]) -> list[str]:
    """Issue 13's bar for each voxkeep column against its engine's bare column."""
    lines = []
    bare = {c.engine: c for c in columns if c.verifier is None}
    reference = bare.get("openwakeword")
    for c in columns:
        if c.verifier is None or reference is None:
            continue
        misses = []
        common = tuple(w for w in c.words if w in reference.words)
        for axis, v in sorted({(a, v) for a, v, _ in c.recall if a in ("condition", "family", "all")}):
            n = c.counts(axis, v, common)[0]
            ref = reference.rate(axis, v, common)
            mine = c.rate(axis, v, common)
            if ref is not None and mine is not None and (ref - mine) * 100 > BAR_POINTS + 1e-9:
                misses.append(f"{v} {mine:.3f} vs {ref:.3f} ({(mine - ref) * 100:+.1f} pts, n={n})")
        fw = c.real_false / c.real_hours if c.real_hours else float("nan")
        ok = not misses and fw <= BAR_FALSE_WAKES
        lines.append(f"{c.name}: {'MEETS' if ok else 'MISSES'} the bar (recall within {BAR_POINTS:g} points of "
                     f"bare openWakeWord in every condition and family, on {', '.join(common)}; "
                     f"<= {BAR_FALSE_WAKES:g} false wake/h): "
                     f"{fw:.2f} false wakes/h" + ("; short: " + "; ".join(misses) if misses else ""))
    return lines


CASCADE_BAR_POINTS = 1.0
"""Issue 15: the cascade may become the default only within this many points of the default's recall everywhere."""


def cascade_lines(columns: list[Column]) -> list[str]:
    """The cascade's recall against the default (voxkeep openWakeWord) per condition and family, and its verdict."""
    default = next(c for c in columns if c.engine == "openwakeword" and c.verifier is not None)
    bare = next(c for c in columns if c.engine == "openwakeword" and c.verifier is None)
    lines = []
    for c in (c for c in columns if c.engine.startswith(CASCADE) and c.verifier is not None):
        cascade_bare = next(b for b in columns if b.engine == c.engine and b.verifier is None)
        group = (bare, default, cascade_bare, c)
        lines += ["", f"| on {', '.join(c.words)} | phrases | " + " | ".join(x.name for x in group) + " |",
                  "| --- " * (len(group) + 2) + "|"]
        short = []
        for axis, v in sorted({(a, v) for a, v, _ in c.recall if a in ("condition", "family", "all")}):
            rates = [x.rate(axis, v, c.words) for x in group]
            lines.append(f"| {v} | {c.counts(axis, v)[0]} | " + " | ".join(f"{r:.3f}" if r is not None else ""
                                                                          for r in rates) + " |")
            ref, mine = default.rate(axis, v, c.words), c.rate(axis, v, c.words)
            if ref is not None and mine is not None and (ref - mine) * 100 > CASCADE_BAR_POINTS + 1e-9:
                short.append(f"{v} {mine:.3f} vs {ref:.3f} ({(mine - ref) * 100:+.1f} pts)")
        verdict = "within" if not short else "NOT within"
        lines.append(f"{c.name}: {verdict} {CASCADE_BAR_POINTS:g} point of {default.name}'s recall in every condition "
                     f"and family" + ("; short: " + "; ".join(short) if short else ""))
    return lines


def report(split: str, columns: list[Column]) -> None:
    c0 = columns[0]
    label = "REPORT split (never tuned on)" if split == "report" else "TUNE split (the verifier is tuned here)"
    print(f"\n== {label}: {c0.counts('all', 'all')[0]} wake phrases per column (home-* streams), "
          f"{c0.real_hours:.2f} h of real speech")
    for c in columns:
        print(f"   {c.name}: {', '.join(c.counted or c.words)}")
    print()
    for axis, values, title in (
            ("condition", list(corpus.CONDITIONS), "condition"),
            ("family", list(corpus.FAMILIES), "voice family"),
            ("word", list(WORDS), "wake word"),
            ("pair", ["back-to-back, request 1", "back-to-back, request 2"], "back-to-back"),
            ("detail", sorted({v for (a, v, _) in c0.recall if a == "detail"}), "detail"),
            ("all", ["all"], "all phrases")):
        print("\n".join(table(columns, axis, values, title)))
        print()
    print("| false wakes | " + " | ".join(c.name for c in columns) + " |")
    print("| --- " * (len(columns) + 1) + "|")
    print("| per hour of real speech | " + " | ".join(
        f"{c.real_false / c.real_hours:.2f} ({c.real_false})" if c.real_hours else "" for c in columns) + " |")
    print("| synthesized negatives (count) | " + " | ".join(str(c.synth_false) for c in columns) + " |")
    print()
    for line in verdict_lines(columns):
        print(line)
    for c in columns:
        if c.reasons:
            print(f"{c.name}: verdicts on hits in negatives: {json.dumps(c.reasons, sort_keys=True)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="wake recall per condition and voice family, and false wakes "
                                     "per hour, bare openWakeWord beside voxkeep (same audio, same run)")
    parser.add_argument("--split", choices=(*corpus.SPLITS, "both"), default="report")
    parser.add_argument("--log", type=Path, help="write every hit and its verdict as JSON Lines here")
    parser.add_argument("--engines", nargs="+", choices=("auto", "openwakeword", "microwakeword", "both"),
                        help="engine settings to compare (default: every one this checkout has)")
    parser.add_argument("--cascade", type=float, metavar="T",
                        help="also openWakeWord with wake.cascade_threshold = T, and its recall against the default")
    defaults = WakeSettings()
    parser.add_argument("--verify-peak", type=float, default=defaults.verify_peak,
                        help="wake.verify_peak to evaluate (default: the config default)")
    parser.add_argument("--verify-rescore", type=float, default=defaults.verify_rescore,
                        help="wake.verify_rescore to evaluate (0 turns the re-score off)")
    parser.add_argument("--verify-sure", type=float, default=defaults.verify_sure,
                        help="wake.verify_sure to evaluate (a score held this high from the hit to the look skips "
                        "the classifier; 1.0 = never)")
    parser.add_argument("--words", nargs="+", choices=corpus.CLASSIFIED,
                        help="count only these words' phrases and false wakes (e.g. hey_jarvis, the default word)")
    parser.add_argument("--no-faint", action="store_true",
                        help="evaluate with wake.faint_floor = 0 (faint rises never wake: the default before it)")
    parser.add_argument("--no-classifier", action="store_true",
                        help="evaluate with wake.verify_classifier = false (the re-score and peak alone)")
    parser.add_argument("--softer", type=float, default=0.0, metavar="DB",
                        help="play every stream DB softer over the corpus's room tone (a talker further away, a "
                        "microphone set lower)")
    parser.add_argument("--no-gate", action="store_true",
                        help="run the wake models on every frame: what the energy gate must not lose")
    parser.add_argument("--offset", type=corpus.sample_offset, default=0, metavar="STEPS",
                        help="add STEPS (int16, e.g. 300) to every sample: a microphone with a DC offset")
    args = parser.parse_args(argv)
    if not (corpus.cache_dir() / "streams" / "report" / f"home-{WORDS[-1]}.npy").exists():  # built last
        corpus.main([])
    models_dir = default_models_dir()
    key = _models_key(models_dir)
    look = {"verify": True, "verify_peak": args.verify_peak, "verify_rescore": args.verify_rescore,
            "verify_classifier": not args.no_classifier, "verify_sure": args.verify_sure,
            "faint_floor": 0.0 if args.no_faint else defaults.faint_floor}
    print(f"voxkeep = the second look with wake.verify_peak = {args.verify_peak}, verify_sure = {args.verify_sure}, "
          f"verify_rescore = {args.verify_rescore}, verify_classifier = {not args.no_classifier}, "
          f"faint_floor = {look['faint_floor']}")
    if args.offset:
        print(f"every stream carries an offset of {args.offset} (of 32768), as some microphones add")
    if args.softer or args.no_gate:
        print(f"every stream played {args.softer:g} dB softer; the wake models run "
              f"{'on every frame (no energy gate)' if args.no_gate else 'behind the energy gate'}")
    cpu_ms: list[float] = []
    log: list[dict] = []
    splits = corpus.SPLITS if args.split == "both" else (args.split,)
    for split in splits:
        streams = sorted((corpus.cache_dir() / "streams" / split).glob("*.npy"))
        columns = []
        cascade = [f"{CASCADE}{args.cascade:g}"] if args.cascade else []
        for engine in [*(args.engines or engines()), *cascade]:
            words = engine_words(engine, models_dir)
            counted = tuple(w for w in words if w in args.words) if args.words else ()
            prefix = {"auto": "auto (default)", "openwakeword": "openWakeWord", "microwakeword": "microWakeWord",
                      "both": "both"}.get(
                engine, f"openWakeWord {engine.replace('@', ' ')}")
            play = {"quieter": args.softer, "gate": not args.no_gate, "offset": args.offset}
            if engine != "both":  # "both" streams microWakeWord: its bare hits are that column's
                columns.append(Column(f"bare {prefix}", engine, None, words, counted, **play))
            columns.append(Column(f"voxkeep {prefix}", engine, second_look(engine, words, models_dir, look), words,
                                  counted, **play))
        for col in columns:
            run_column(col, streams, models_dir, key, cpu_ms, log, split)
        report(split, columns)
        if cascade:
            for line in cascade_lines(columns):
                print(line)
    if cpu_ms:
        print(f"\nsecond-look CPU per wake: mean {np.mean(cpu_ms):.1f} ms, p95 {np.percentile(cpu_ms, 95):.1f} ms, "
              f"max {np.max(cpu_ms):.1f} ms over {len(cpu_ms)} checks (this machine)")
    if args.log:
        args.log.write_text("".join(json.dumps(r) + "\n" for r in log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
