"""Every performance figure of issues 2, 9 and 15 in one command, each against a bare openWakeWord loop.

    python bench/run.py                # a generated hour (about 15 min of CPU on a 2-core x86)
    python bench/run.py --minutes 10   # CI-sized; still >= 10 min of mixed audio (issue 2, item 10)

It generates its audio (espeak-ng/flite speech via ``voxkeep.testing.speech``, sox noise), then runs
``bench/bare_loop.py`` (openWakeWord 0.6's ``Model.predict`` on every frame, and a bare pymicro-wakeword
loop) and ``voxkeep run --input FILE --events FILE --engine E`` for every engine setting as separate
processes on the same files, one after the other, and prints them side by side; the targets apply to
the default engine (``wake.engine``). CPU time and peak
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from corpus import WAKE_PHRASES, negative_sentences
from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.config import WakeSettings, default_models_dir
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
ENGINES = ("auto", "openwakeword", "microwakeword", "both", "cascade")
"""voxkeep's engine settings, each run as ``voxkeep run --engine E`` ("auto", the default, puts hey_mycroft
on microWakeWord and the other words on openWakeWord; "cascade": openwakeword with
``wake.cascade_threshold = CASCADE``, an opt-in setting rather than an engine)."""
CASCADE = 0.01
"""The cascade's microWakeWord threshold measured here (the point evaluated in docs/wake-engines.md)."""
SIDES = ("bare", "bare-mww", *(f"vox-{e}" for e in ENGINES))
"""Every process the bench runs: bare openWakeWord (the reference), bare pymicro-wakeword, voxkeep per engine."""
HEADINGS = {"bare": "bare oww", "bare-mww": "bare mww", **{f"vox-{e}": f"vox {e[:5] if e != 'both' else e}"
                                                          for e in ENGINES}, "vox-cascade": "oww cascade"}


def wake_keys(engine: str) -> tuple[str, dict[str, float]]:
    """(``--engine`` value, extra ``[wake]`` keys) for one of ``ENGINES``."""
    return ("openwakeword", {"cascade_threshold": CASCADE}) if engine == "cascade" else (engine, {})


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
    default: str = WakeSettings.engine
    """The engine the targets apply to: voxkeep's default."""
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)

    def bare(self, scene: Scene, engine: str) -> Run:
        models = [f"{w}_v0.1.onnx" if engine == "openwakeword" else f"{w}.json" for w in self.words]
        cmd = [sys.executable, str(BENCH_DIR / "bare_loop.py"), str(scene.path), "--models-dir",
               str(self.models_dir), "--engine", engine, *[a for m in models for a in ("--model", m)]]
        return run_child(cmd, None)

    def voxkeep(self, scene: Scene, engine: str, listen_only: bool = False) -> Run:
        tag = f"{scene.name}-{engine}{'-listen' if listen_only else ''}"
        events = self.work / f"{tag}.events.jsonl"
        events.unlink(missing_ok=True)  # the daemon appends to an existing events file
        state = self.work / f"state-{tag}"
        shutil.rmtree(state, ignore_errors=True)
        flag, keys = wake_keys(engine)
        config = self.work / f"{'listen-only' if listen_only else 'wake'}-{engine}.toml"
        # Listening only: thresholds no score reaches, so no wake, no second look, no command decode.
        lines = [f"{k} = {v}" for k, v in keys.items()]
        if listen_only:
            lines.append("thresholds = { " + ", ".join(f"{w} = 0.999999" for w in self.words) + " }")
        config.write_text("[wake]\n" + "".join(f"{line}\n" for line in lines))
        cmd = ["voxkeep", "run", "--config", str(config), "--input", str(scene.path), "--events", str(events),
               "--state-dir", str(state), "--models-dir", str(self.models_dir), "--engine", flag,
               *[a for w in self.words for a in ("--wake-word", w)]]
        return run_child(cmd, events)

    def run(self, who: str, scene: str) -> Run:
        """One side on one scene. Start-up is run twice and the cheaper kept: it is subtracted from every
        scene, and one start-up slowed by another job's load (a page-in under memory pressure) once made a
        whole column's CPU look like nothing."""
        key = (who, scene)
        if key not in self.runs:
            print(f"  running {who} on {scene} ...", file=sys.stderr, flush=True)
            self.runs[key] = min((self._run_once(who, scene) for _ in range(2 if scene == "startup" else 1)),
                                 key=lambda r: r.cpu)
        return self.runs[key]

    def _run_once(self, who: str, scene: str) -> Run:
        if who.startswith("listen-"):
            return self.voxkeep(self.scenes[scene], who[7:], listen_only=True)
        if who.startswith("vox-"):
            return self.voxkeep(self.scenes[scene], who[4:])
        return self.bare(self.scenes[scene], "openwakeword" if who == "bare" else "microwakeword")


@dataclass(frozen=True)
class Row:
    """One printed figure for every side, and the verdict of the default engine against its target."""

    label: str
    values: dict[str, str]
    target: str
    ok: bool


def cpu_per_hour(bench: Bench, who: str, scene: str) -> float:
    run, startup = bench.run(who, scene), bench.run(who, "startup")
    if run.cpu <= startup.cpu:
        raise SystemExit(f"{who} on {scene} cost no more CPU than its start-up ({run.cpu:.2f} s against "
                         f"{startup.cpu:.2f} s): the machine was too loaded to measure; run the benchmark again")
    return (run.cpu - startup.cpu) / (bench.scenes[scene].seconds / 3600)


def measure_cpu(bench: Bench) -> list[Row]:
    rows = []
    for scene, label, limit in (("quiet-day", "quiet day CPU s per audio hour", 0.10),
                                ("continuous-speech", "continuous speech CPU s per audio hour", 0.30)):
        cost = {who: cpu_per_hour(bench, who, scene) for who in SIDES}
        ratio = {who: cost[who] / cost["bare"] for who in SIDES}
        rows.append(Row(label, {who: f"{cost[who]:.1f}" for who in SIDES}, "information", True))
        rows.append(Row("  ratio to bare openWakeWord", {who: f"{ratio[who]:.3f}x" for who in SIDES},
                        f"<= {limit:.2f}x (issue 15.4)", ratio[f"vox-{bench.default}"] <= limit))
    return rows


def measure_listening(bench: Bench) -> list[Row]:
    """What the daemon costs while it only listens, and its wake detection alone (in this process).

    Every wake in the scenes above also pays for the second look and the command recogniser (about a
    quarter of a CPU-second per wake here); the scenes hold a wake a minute (quiet day) and one every
    12 s (continuous speech), far more than a household. These rows separate the two costs.
    """
    rows = []
    for scene, label in (("quiet-day", "quiet day"), ("continuous-speech", "continuous speech")):
        bare = cpu_per_hour(bench, "bare", scene)
        listening = {f"vox-{e}": cpu_per_hour(bench, f"listen-{e}", scene) / bare for e in ENGINES}
        rows.append(Row(f"  {label}, listening only (no wake)", {w: f"{r:.3f}x" for w, r in listening.items()},
                        "information", True))
        detection = {f"vox-{e}": detector_cpu_per_hour(bench, e, scene) / bare for e in ENGINES}
        rows.append(Row(f"  {label}, WakeDetector alone", {w: f"{r:.3f}x" for w, r in detection.items()},
                        "information", True))
    return rows


def detector_cpu_per_hour(bench: Bench, engine: str, scene: str) -> float:
    """CPU seconds per audio hour of ``voxkeep.wake.WakeDetector`` (gate on) over the scene, in this process."""
    from voxkeep.wake import WakeDetector

    audio, _ = soundfile.read(str(bench.scenes[scene].path), dtype="int16")
    flag, keys = wake_keys(engine)
    detector = WakeDetector(WakeSettings(words=list(bench.words), engine=flag, **keys), bench.models_dir)
    start = time.process_time()
    for frame in audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES):
        detector.process(frame)
    return (time.process_time() - start) / (bench.scenes[scene].seconds / 3600)


def measure_memory_and_startup(bench: Bench) -> list[Row]:
    peak = {who: max(bench.run(who, s).peak_mb for s in bench.scenes) for who in SIDES}
    start = {who: bench.run(who, "startup").wall for who in SIDES}
    default = f"vox-{bench.default}"
    return [
        Row("peak RSS MB (largest of all runs)", {who: f"{peak[who]:.0f}" for who in SIDES},
            "<= 80 MB (issue 15.4)", peak[default] <= 80),
        Row("start-up s: whole run of a 0.5 s file", {who: f"{start[who]:.2f}" for who in SIDES},
            "< 2 s to first frame (issue 9.6)", start[default] < 2.0),
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
    """Recall, false wakes (detections: the gate and engine are judged, not the verifier) and latency.

    Latency: for each phrase that both bare openWakeWord and the side woke on, the side's event time
    minus the bare loop's crossing frame; the worst is what a user waits longest beyond bare openWakeWord.
    """
    total = 0
    found: dict[str, int] = dict.fromkeys(SIDES, 0)
    false: dict[str, int] = dict.fromkeys(SIDES, 0)
    delays: dict[str, list[float]] = {who: [] for who in SIDES}
    for scene in ("quiet-day", "continuous-speech"):
        truth = bench.scenes[scene].wakes
        total += len(truth)
        reference, _ = _match(bench.run("bare", scene).wakes, truth)
        for who in SIDES:
            hits, fw = _match(bench.run(who, scene).wakes, truth)
            found[who] += len(hits)
            false[who] += fw
            delays[who] += [hits[i] - reference[i] for i in hits.keys() & reference.keys()]
    default = f"vox-{bench.default}"
    pct = {who: 100 * found[who] / max(total, 1) for who in SIDES}
    worst = {who: max(delays[who], default=0.0) for who in SIDES}
    return [
        Row(f"wake recall on {total} phrases", {who: f"{found[who]} ({pct[who]:.0f} %)" for who in SIDES},
            "within 1 pp of bare oww (issue 9.3)", pct[default] >= pct["bare"] - 1.0),
        Row("false wakes (detections matching no phrase)", {who: str(false[who]) for who in SIDES},
            "no more than bare oww (issue 9.3)", false[default] <= false["bare"]),
        Row("wake delay vs bare oww: mean s", {who: f"{np.mean(delays[who]) if delays[who] else 0:+.3f}"
                                                for who in SIDES}, "information", True),
        Row("wake delay vs bare oww: worst s", {who: f"{worst[who]:+.2f}" for who in SIDES},
            f"<= {LATENCY_TARGET} s (issue 15.5)", worst[default] <= LATENCY_TARGET + 1e-9),
    ]


def measure_stalls(bench: Bench) -> list[Row]:
    """Issue 9.5, from bench/stall.py: the daemon alone (a bare loop has no broker or disk to stall)."""
    import stall

    work = bench.work / "stall"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    r = stall.measure(work)
    return [Row(f"frames dropped / late, stalls of {stall.STALL_SECONDS:.0f} s",
                {f"vox-{bench.default}": f"{r['dropped']:.0f}/{r['late']:.0f} of {r['frames']:.0f}"},
                f"0 / 0 (issue 9.5); worst lag {r['worst_lag'] * 1000:.0f} ms", r["dropped"] == r["late"] == 0)]


MEASUREMENTS: list[Callable[[Bench], list[Row]]] = [measure_cpu, measure_listening, measure_wakes,
                                                    measure_memory_and_startup, measure_stalls]
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
    parser.add_argument("--no-stall", action="store_true", help="skip the stall test (bench/stall.py)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    speech_minutes = args.speech_minutes or max(args.minutes / 4, 2.0)
    print(f"generating audio in {args.work} ...", file=sys.stderr, flush=True)
    gen = Generator(args.work, args.seed)
    scenes = {s.name: s for s in (gen.quiet_day(args.minutes), gen.continuous_speech(speech_minutes), gen.short())}
    bench = Bench(args.models_dir, args.work, WORDS, scenes)
    measures = [m for m in MEASUREMENTS if not (args.no_stall and m is measure_stalls)]
    rows = [row for measure in measures for row in measure(bench)]
    print(f"voxkeep bench: quiet day {scenes['quiet-day'].seconds / 60:.1f} min, continuous speech "
          f"{scenes['continuous-speech'].seconds / 60:.1f} min; wake words {', '.join(WORDS)}; "
          f"{os.cpu_count()} CPUs; targets apply to the default engine ({bench.default})")
    print(f"{'figure':44}" + "".join(f"{HEADINGS[who]:>13}" for who in SIDES) + "  target")
    for row in rows:
        mark = "" if row.ok else "   <-- MISSED"
        cells = "".join(f"{row.values.get(who, '-'):>13}" for who in SIDES)
        print(f"{row.label:44}{cells}  {row.target}{mark}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
