"""Every performance figure of issues 2 and 9 in one command, each against a bare openWakeWord loop.

    python bench/run.py                # a generated hour (about 10 min of CPU on a 2-core x86)
    python bench/run.py --minutes 10   # CI-sized; still >= 10 min of mixed audio (issue 2, item 10)

It generates its audio (espeak-ng/flite speech via ``voxkeep.testing.speech``, sox noise), then runs
``bench/bare_loop.py`` (openWakeWord 0.6's ``Model.predict`` on every frame) and ``voxkeep run --input
FILE --events FILE`` as separate processes on the same files, one after the other. CPU time and peak
RSS come from ``os.wait4`` of each child, so each figure is that process's own; the CPU cost of start-up
(measured on a half-second file) is subtracted before dividing by the audio length. Wake recall, false
wakes and latency compare the wake events of both on the same phrases. Why ratios: the machine is
shared, so absolute times drift between runs; both sides of a ratio drift together.

Scenes: a quiet household day (about 75 % silence and room noise, 20 % ordinary speech, 5 % wake
phrases with commands) and continuous speech (sentences back to back, wake phrases among them).
The exit status is 1 if any target is missed. More measurements (e.g. the stall test) plug into
``MEASUREMENTS``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from corpus import WAKE_PHRASES, negative_sentences
from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.config import default_models_dir
from voxkeep.testing.speech import synthesize

BENCH_DIR = Path(__file__).resolve().parent
WORDS = ("hey_jarvis", "alexa", "hey_mycroft")
VOICES = (("espeak-ng", "en-us"), ("espeak-ng", "en-gb"), ("espeak-ng", "en-us+f3"), ("espeak-ng", "en+m3"),
          ("espeak-ng", "en-gb-x-rp"), ("flite", "slt"), ("flite", "awb"), ("flite", "rms"))
COMMANDS = ("don't record anymore", "delete what I just said", "delete everything I said today",
            "what time is it")
ROOM_DBFS = -62.0
"""The noise bed under everything: a quiet room through a USB microphone."""
WAKE_SPACING = 12.0
"""Seconds after a wake phrase before the next one: longer than the daemon's 10 s utterance window."""
HIT_WINDOW = 1.5
"""A wake counts for a phrase if it comes between the phrase's start and this long after its end."""
LATENCY_TARGET = 0.16


def dbfs_to_rms(db: float) -> float:
    return 32768.0 * 10 ** (db / 20)


@dataclass
class Scene:
    """One generated WAV and where its wake phrases are."""

    name: str
    path: Path
    seconds: float
    wakes: list[tuple[str, float, float]] = field(default_factory=list)
    """(wake word, start s, end s) of every wake phrase."""


class Generator:
    """Builds scenes from cached TTS clips and sox noise, deterministically from a seed."""

    def __init__(self, cache: Path, seed: int) -> None:
        self.cache = cache
        self.rng = np.random.default_rng(seed)
        self.sentences = negative_sentences()
        self._noise = {color: self._sox_noise(color) for color in ("brownnoise", "pinknoise")}

    def _sox_noise(self, color: str) -> np.ndarray:
        path = self.cache / f"{color}.wav"
        if not path.exists():
            subprocess.run(["sox", "-n", "-r", str(SAMPLE_RATE), "-b", "16", "-c", "1", str(path),
                            "synth", "60", color], check=True)
        data, _ = soundfile.read(str(path), dtype="float32")
        return data / data.std()

    def noise(self, seconds: float, db: float, color: str = "brownnoise") -> np.ndarray:
        source = self._noise[color]
        n = int(seconds * SAMPLE_RATE)
        start = int(self.rng.integers(0, len(source)))
        return np.resize(np.roll(source, -start), n) * dbfs_to_rms(db)

    def say(self, text: str) -> np.ndarray:
        engine, voice = VOICES[int(self.rng.integers(len(VOICES)))]
        speed = int(self.rng.choice((130, 150, 170)))
        path = synthesize(text, self.cache, voice=voice, speed=speed, pad=0.0, engine=engine)
        data, _ = soundfile.read(str(path), dtype="float32")
        return data * 32768.0 * 10 ** (self.rng.uniform(-16.0, -3.0) / 20)

    def wake_item(self) -> tuple[str, np.ndarray, float]:
        """A wake phrase, a short pause, a command; returns (word, audio, phrase length in s)."""
        word = WORDS[int(self.rng.integers(len(WORDS)))]
        phrase = self.say(WAKE_PHRASES[word])
        command = self.say(str(self.rng.choice(COMMANDS)))
        pause = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
        return word, np.concatenate([phrase, pause, command]), len(phrase) / SAMPLE_RATE

    def speech_item(self, sentences: int) -> np.ndarray:
        parts = []
        for _ in range(sentences):
            parts += [self.say(str(self.rng.choice(self.sentences))),
                      np.zeros(int(self.rng.uniform(0.2, 0.6) * SAMPLE_RATE), np.float32)]
        return np.concatenate(parts)

    def quiet_gap(self, seconds: float) -> np.ndarray:
        """Silence, or a fan switched on for a while, sometimes with a clatter in it."""
        out = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
        if self.rng.random() < 0.3:
            out += self.noise(seconds, self.rng.uniform(-54.0, -46.0), "pinknoise")
        if self.rng.random() < 0.2 and seconds > 1:
            bang = self.noise(self.rng.uniform(0.05, 0.3), -25.0)
            at = int(self.rng.integers(0, len(out) - len(bang)))
            out[at:at + len(bang)] += bang
        return out

    def build(self, name: str, items: list[tuple[str, np.ndarray, float]], gaps: list[float],
              tail: float = 2.0) -> Scene:
        """Lay out ``items`` (word or "", audio, phrase s) with quiet gaps, add the room bed, write it."""
        parts, wakes, pos = [], [], 0
        for (word, audio, phrase_s), gap in zip(items, gaps, strict=True):
            parts.append(self.quiet_gap(gap))
            pos += len(parts[-1])
            if word:
                wakes.append((word, pos / SAMPLE_RATE, pos / SAMPLE_RATE + phrase_s))
            parts.append(audio)
            pos += len(audio)
        mix = np.concatenate([*parts, np.zeros(int(tail * SAMPLE_RATE), np.float32)])
        mix += self.noise(len(mix) / SAMPLE_RATE, ROOM_DBFS)
        mix = mix[: len(mix) // FRAME_SAMPLES * FRAME_SAMPLES]
        path = self.cache / f"{name}.wav"
        soundfile.write(str(path), np.clip(np.round(mix), -32768, 32767).astype(np.int16), SAMPLE_RATE,
                        subtype="PCM_16")
        return Scene(name, path, len(mix) / SAMPLE_RATE, wakes)

    def quiet_day(self, minutes: float) -> Scene:
        total = minutes * 60
        items: list[tuple[str, np.ndarray, float]] = []
        wake_s = speech_s = 0.0
        while wake_s < 0.05 * total:
            item = self.wake_item()
            items.append(item)
            wake_s += len(item[1]) / SAMPLE_RATE
        while speech_s < 0.20 * total:
            audio = self.speech_item(int(self.rng.integers(1, 4)))
            items.append(("", audio, 0.0))
            speech_s += len(audio) / SAMPLE_RATE
        order = self.rng.permutation(len(items))
        items = [items[i] for i in order]
        quiet = max(total - wake_s - speech_s, 0.0)
        # The gap before an item follows the item before it: after a wake phrase, leave the daemon's
        # utterance window free, so each phrase can wake on its own.
        floor = [WAKE_SPACING if i and items[i - 1][0] else 1.0 for i in range(len(items))]
        spare = max(quiet - sum(floor), 0.0)
        gaps = [f + s for f, s in zip(floor, self.rng.dirichlet(np.ones(len(items))) * spare, strict=True)]
        return self.build("quiet-day", items, gaps)

    def continuous_speech(self, minutes: float) -> Scene:
        items: list[tuple[str, np.ndarray, float]] = []
        seconds, since_wake = 0.0, 0.0
        while seconds < minutes * 60:
            if since_wake >= WAKE_SPACING:
                item = self.wake_item()
                since_wake = 0.0
            else:
                item = ("", self.speech_item(1), 0.0)
            items.append(item)
            seconds += len(item[1]) / SAMPLE_RATE + 0.3
            since_wake += len(item[1]) / SAMPLE_RATE + 0.3
        return self.build("continuous-speech", items, [0.3] * len(items))

    def short(self) -> Scene:
        """Half a second of room: the run is all start-up."""
        return self.build("startup", [("", np.zeros(FRAME_SAMPLES, np.float32), 0.0)], [0.42], tail=0.0)


@dataclass
class Run:
    """What one child process cost and said."""

    cpu: float
    peak_mb: float
    wall: float
    wakes: list[dict]


def run_child(cmd: list[str], events: Path | None) -> Run:
    """Run ``cmd`` under ``rusage.py``; its wakes from ``events`` (or from its stdout if None)."""
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "rusage.py"), *cmd], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    usage = json.loads(proc.stderr.rsplit("RUSAGE ", 1)[1])
    text = events.read_text() if events is not None else proc.stdout
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    # A wake the daemon's verifier rejected was still detected: the gate is judged on detection.
    wakes = [e for e in lines if e.get("type") in ("wake", "wake_rejected")]
    return Run(usage["cpu"], usage["peak_mb"], usage["wall"], wakes)


@dataclass
class Bench:
    """The generated scenes, where to put child output, and the results so far."""

    models_dir: Path
    work: Path
    words: tuple[str, ...]
    scenes: dict[str, Scene]
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)

    def bare(self, scene: Scene) -> Run:
        models = [f"{w}_v0.1.onnx" for w in self.words]
        cmd = [sys.executable, str(BENCH_DIR / "bare_loop.py"), str(scene.path), "--models-dir",
               str(self.models_dir), *[a for m in models for a in ("--model", m)]]
        return run_child(cmd, None)

    def voxkeep(self, scene: Scene) -> Run:
        events = self.work / f"{scene.name}.events.jsonl"
        events.unlink(missing_ok=True)  # the daemon appends to an existing events file
        state = self.work / f"state-{scene.name}"
        shutil.rmtree(state, ignore_errors=True)
        config = self.work / "empty.toml"
        config.write_text("")
        cmd = ["voxkeep", "run", "--config", str(config), "--input", str(scene.path), "--events", str(events),
               "--state-dir", str(state), "--models-dir", str(self.models_dir),
               *[a for w in self.words for a in ("--wake-word", w)]]
        return run_child(cmd, events)

    def run(self, who: str, scene: str) -> Run:
        key = (who, scene)
        if key not in self.runs:
            print(f"  running {who} on {scene} ...", file=sys.stderr, flush=True)
            self.runs[key] = (self.bare if who == "bare" else self.voxkeep)(self.scenes[scene])
        return self.runs[key]


@dataclass(frozen=True)
class Row:
    """One printed figure: bare, voxkeep, and the verdict against its target."""

    label: str
    bare: str
    voxkeep: str
    result: str
    target: str
    ok: bool


def cpu_per_hour(bench: Bench, who: str, scene: str) -> float:
    run, startup = bench.run(who, scene), bench.run(who, "startup")
    return max(run.cpu - startup.cpu, 0.0) / (bench.scenes[scene].seconds / 3600)


def measure_cpu(bench: Bench) -> list[Row]:
    rows = []
    for scene, label, limit, target in (
            ("quiet-day", "quiet day CPU s per audio hour", 0.35, "<= 0.35x (issue 9.1; issue 2.10: <= 1.10x)"),
            ("continuous-speech", "continuous speech CPU s per audio hour", 1.05, "<= 1.05x (issue 9.2)")):
        bare, vox = cpu_per_hour(bench, "bare", scene), cpu_per_hour(bench, "voxkeep", scene)
        ratio = vox / bare
        rows.append(Row(label, f"{bare:.1f}", f"{vox:.1f}", f"{ratio:.3f}x", target, ratio <= limit))
    return rows


def measure_memory_and_startup(bench: Bench) -> list[Row]:
    peak = {who: max(bench.run(who, s).peak_mb for s in bench.scenes) for who in ("bare", "voxkeep")}
    start = {who: bench.run(who, "startup").wall for who in ("bare", "voxkeep")}
    return [
        Row("peak RSS MB (largest of all runs)", f"{peak['bare']:.0f}", f"{peak['voxkeep']:.0f}",
            f"{peak['voxkeep'] / peak['bare']:.2f}x", "<= 120 MB (issue 9.4)", peak["voxkeep"] <= 120),
        Row("start-up s: whole run of a 0.5 s file", f"{start['bare']:.2f}", f"{start['voxkeep']:.2f}",
            f"{start['voxkeep'] / start['bare']:.2f}x", "< 2 s to first frame (issue 9.6)", start["voxkeep"] < 2.0),
    ]


def _match(wakes: list[dict], truth: list[tuple[str, float, float]]) -> tuple[dict[int, float], int]:
    """Phrase index -> time of its first wake; and the number of wakes that match no phrase."""
    found: dict[int, float] = {}
    false = 0
    for event in wakes:
        hit = next((i for i, (word, start, end) in enumerate(truth)
                    if word == event["wake_word"] and start <= event["t"] <= end + HIT_WINDOW), None)
        if hit is None:
            false += 1
        elif hit not in found:
            found[hit] = event["t"]
    return found, false


def measure_wakes(bench: Bench) -> list[Row]:
    total = recall_b = recall_v = false_b = false_v = only_b = only_v = 0
    delays: list[float] = []
    for scene in ("quiet-day", "continuous-speech"):
        truth = bench.scenes[scene].wakes
        found_b, fb = _match(bench.run("bare", scene).wakes, truth)
        found_v, fv = _match(bench.run("voxkeep", scene).wakes, truth)
        total += len(truth)
        recall_b, recall_v = recall_b + len(found_b), recall_v + len(found_v)
        false_b, false_v = false_b + fb, false_v + fv
        only_b += len(found_b.keys() - found_v.keys())
        only_v += len(found_v.keys() - found_b.keys())
        delays += [found_v[i] - found_b[i] for i in found_b.keys() & found_v.keys()]
    pct_b, pct_v = 100 * recall_b / max(total, 1), 100 * recall_v / max(total, 1)
    worst = max(delays, default=0.0)
    return [
        Row(f"wake recall on {total} phrases", f"{recall_b} ({pct_b:.1f} %)", f"{recall_v} ({pct_v:.1f} %)",
            f"{pct_v - pct_b:+.1f} pp", "within 1 pp (issue 9.3)", pct_v >= pct_b - 1.0),
        Row("phrases caught by one side only", str(only_b), str(only_v), "", "information", True),
        Row("false wakes (detections matching no phrase)", str(false_b), str(false_v), f"{false_v - false_b:+d}",
            "no extra (issue 9.3)", false_v <= false_b),
        Row(f"wake delay vs bare, worst of {len(delays)}", "0", f"{worst:+.2f} s",
            f"mean {np.mean(delays) if delays else 0:+.3f} s", f"<= {LATENCY_TARGET} s (issue 9.3)",
            worst <= LATENCY_TARGET + 1e-9),
    ]


def measure_stalls(bench: Bench) -> list[Row]:
    """Issue 9.5, from bench/stall.py: the daemon alone (a bare loop has no broker or disk to stall)."""
    import stall

    work = bench.work / "stall"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    r = stall.measure(work)
    return [Row(f"frames dropped / late, broker and disk stalled {stall.STALL_SECONDS:.0f} s each", "-",
                f"{r['dropped']:.0f} / {r['late']:.0f} of {r['frames']:.0f}",
                f"worst lag {r['worst_lag'] * 1000:.0f} ms", "0 / 0 (issue 9.5)", r["dropped"] == r["late"] == 0)]


MEASUREMENTS: list[Callable[[Bench], list[Row]]] = [measure_cpu, measure_wakes, measure_memory_and_startup,
                                                    measure_stalls]
"""Each returns printed rows."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the quiet day (default 60)")
    parser.add_argument("--speech-minutes", type=float, default=0.0,
                        help="length of the continuous-speech scene (default: a quarter of --minutes, >= 2)")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "voxkeep-bench",
                        help="where generated audio and child output go (outside the repository)")
    parser.add_argument("--models-dir", type=Path, default=default_models_dir())
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    speech_minutes = args.speech_minutes or max(args.minutes / 4, 2.0)
    print(f"generating audio in {args.work} ...", file=sys.stderr, flush=True)
    gen = Generator(args.work, args.seed)
    scenes = {s.name: s for s in (gen.quiet_day(args.minutes), gen.continuous_speech(speech_minutes), gen.short())}
    bench = Bench(args.models_dir, args.work, WORDS, scenes)
    rows = [row for measure in MEASUREMENTS for row in measure(bench)]
    print(f"voxkeep bench: quiet day {scenes['quiet-day'].seconds / 60:.1f} min, continuous speech "
          f"{scenes['continuous-speech'].seconds / 60:.1f} min; wake words {', '.join(WORDS)}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'figure':46} {'bare oww':>16} {'voxkeep run':>16} {'result':>16}  target")
    for row in rows:
        mark = "" if row.ok else "   <-- MISSED"
        print(f"{row.label:46} {row.bare:>16} {row.voxkeep:>16} {row.result:>16}  {row.target}{mark}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
