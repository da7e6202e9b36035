"""Privacy-command recognition: recall per command and false accepts on confusable speech.

    python bench/commands_eval.py [--sweep] [--cache DIR] [--min-score X --delete-min-score Y]

Two sets, never mixed: the *tuning* set (espeak-ng voices, clean, the sentences ``commands.min_score``
was chosen on) and the *held-out* set (flite voices the threshold never saw, clean and with room noise
at 20 and 10 dB SNR, plus confusable sentences never used for tuning). Every window starts with the
last quarter second of "hey jarvis" in the same voice, as the daemon's window does when the wake model
fires late in the phrase. Also prints how long one recognition takes, as a real-time factor.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from voxkeep import SAMPLE_RATE
from voxkeep.commands import DELETING, PHRASES, CommandRecognizer, Recognition, min_score_for
from voxkeep.config import CommandSettings
from voxkeep.testing.speech import silence, synthesize

CONFUSABLE_TUNE = (
    "record my favourite show tonight", "I don't want any more coffee", "delete the last email",
    "what did I say today", "stop the music", "start the timer again", "don't forget to record the game",
    "I just said hello", "delete my alarm", "do not disturb", "I don't like it anymore",
    "please stop", "what did I just say", "delete everything on my calendar", "the quick brown fox",
    "tell me a joke", "what time is it", "turn the lights off please",
    "delete what I just sent", "delete everything I saved today", "don't worry anymore", "I can't hear you anymore",
    "start recording the game", "start sharing my recordings", "stop snoring",
)
"""Sentences the threshold was tuned against: near misses of each command, and ordinary requests."""

CONFUSABLE_HELD = (
    "do not play that song anymore", "start again from the beginning", "can you start the recording",
    "everything I said was true", "delete the shopping list", "stop recording the football",
    "I said it again today", "remind me to stop at the store", "I don't remember anymore",
    "what's the weather today", "set a timer for ten minutes", "add milk to the shopping list",
    "play some jazz please", "how tall is mount everest", "delete what you just wrote",
    "we should start recording the band", "good morning", "read me the news",
    "keep sharing my recordings", "stop showing the recordings", "I love sharing recipes",
)
"""Confusables kept out of tuning entirely, so the held-out false-accept rate is honest."""

TUNE_VOICES = (("espeak-ng", "en-us", 150), ("espeak-ng", "en-gb", 150), ("espeak-ng", "en+f3", 150),
               ("espeak-ng", "en-us+m3", 150), ("espeak-ng", "en-us", 120), ("espeak-ng", "en-gb+f2", 185))
HELD_VOICES = (("flite", "slt", 0), ("flite", "kal", 0), ("flite", "awb", 0), ("flite", "rms", 0))
HELD_SNRS = (None, 20.0, 10.0)

WAKE_PHRASE = "hey jarvis"
TAIL_SECONDS = 0.25


@dataclass(frozen=True)
class Case:
    """One window to recognise and what it should give (None: must be rejected)."""

    voice: str
    text: str
    expect: str | None
    snr: float | None
    pcm: np.ndarray = dataclasses.field(repr=False)


def room_noise(n: int, seed: int) -> np.ndarray:
    """Pink noise plus a faint mains hum: a fan-and-fridge room, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    pink = np.fft.irfft(spectrum, n)
    hum = 0.3 * np.sin(2 * np.pi * 50 * np.arange(n) / SAMPLE_RATE) * pink.std()
    return pink + hum


def mix(speech: np.ndarray, snr_db: float | None, seed: int) -> np.ndarray:
    """``speech`` with room noise at ``snr_db`` relative to its voiced part."""
    if snr_db is None:
        return speech
    x = speech.astype(np.float64)
    voiced = x[np.abs(x) > 0.05 * np.abs(x).max()]
    noise = room_noise(len(x), seed)
    noise *= np.sqrt(np.mean(voiced ** 2) / 10 ** (snr_db / 10)) / noise.std()
    return np.clip(x + noise, -32768, 32767).astype(np.int16)


def _say(text: str, engine: str, voice: str, speed: int, cache: Path) -> np.ndarray:
    data, _ = soundfile.read(str(synthesize(text, cache, voice=voice, speed=speed or 150, pad=0.0,
                                            engine=engine)), dtype="int16")
    return np.asarray(data, dtype=np.int16)


def _wake_tail(engine: str, voice: str, speed: int, cache: Path) -> np.ndarray:
    wake = _say(WAKE_PHRASE, engine, voice, speed, cache)
    loud = np.nonzero(np.abs(wake) > 0.05 * np.abs(wake).max())[0]
    end = loud[-1] + 1
    return wake[max(0, end - int(TAIL_SECONDS * SAMPLE_RATE)):end]


def cases(voices: tuple[tuple[str, str, int], ...], confusables: tuple[str, ...],
          snrs: tuple[float | None, ...], cache: Path) -> Iterator[Case]:
    """Every command phrase and confusable, in every voice and noise condition."""
    sentences = [(p, c) for c, ps in PHRASES.items() for p in ps] + [(t, None) for t in confusables]
    for engine, voice, speed in voices:
        name = f"{engine}:{voice}" + (f"@{speed}" if speed else "")
        tail = _wake_tail(engine, voice, speed, cache)
        for i, (text, expect) in enumerate(sentences):
            clean = np.concatenate([tail, silence(0.1), _say(text, engine, voice, speed, cache), silence(0.4)])
            for snr in snrs:
                yield Case(name, text, expect, snr, mix(clean, snr, seed=i))


def report(title: str, results: list[tuple[Case, Recognition | None]], settings: CommandSettings) -> None:
    """Per-command recall and false accepts at the configured thresholds, naming each false accept."""
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    false_accepts: list[tuple[Case, Recognition]] = []
    total_neg = wrong = 0
    for case, got in results:
        accepted = got is not None and got.score >= min_score_for(settings, got.command)
        if case.expect is None:
            total_neg += 1
            if accepted and got is not None:
                false_accepts.append((case, got))
        else:
            hits[case.expect][1] += 1
            hits[case.expect][0] += accepted and got is not None and got.command == case.expect
            wrong += accepted and got is not None and got.command != case.expect
    print(f"\n== {title} (min_score {settings.min_score:+.2f}, delete_min_score {settings.delete_min_score:+.2f})")
    for command in PHRASES:
        ok, n = hits[command]
        print(f"  recall {command:16s} {ok:4d}/{n:<4d} = {ok / max(n, 1):6.1%}")
    ok = sum(h[0] for h in hits.values())
    n = sum(h[1] for h in hits.values())
    print(f"  recall {'all':16s} {ok:4d}/{n:<4d} = {ok / max(n, 1):6.1%}   (wrong command: {wrong})")
    fa = len(false_accepts)
    deleting = sum(got.command in DELETING for _, got in false_accepts)
    print(f"  false accepts on confusables: {fa}/{total_neg} = {fa / max(total_neg, 1):.1%} "
          f"(as a delete command: {deleting})")
    for case, got in false_accepts:
        print(f"    {case.voice}: {case.text!r} taken for {got.command} ({got.score:+.2f})")


def run(recognizer: CommandRecognizer, batch: Iterator[Case]) -> tuple[list[tuple[Case, Recognition | None]],
                                                                        list[float]]:
    """Unthresholded scores for every case, and seconds per second of audio for each decode."""
    out: list[tuple[Case, Recognition | None]] = []
    rtf: list[float] = []
    for case in batch:
        t0 = time.perf_counter()
        got = recognizer.score(case.pcm)
        rtf.append((time.perf_counter() - t0) / (len(case.pcm) / SAMPLE_RATE))
        out.append((case, got))
    return out, rtf


def sweep(results: list[tuple[Case, Recognition | None]]) -> None:
    """Recall and false accepts over a range of thresholds, all commands and the deleting ones alone."""
    def scores(deleting: bool) -> tuple[np.ndarray, np.ndarray]:
        pos = [g.score if g and g.command == c.expect else -np.inf for c, g in results
               if c.expect and (not deleting or c.expect in DELETING)]
        neg = [g.score if g and (not deleting or g.command in DELETING) else -np.inf
               for c, g in results if c.expect is None]
        return np.array(pos), np.array(neg)

    (pos, neg), (dpos, dneg) = scores(False), scores(True)
    print("  threshold  recall  false-accepts | delete commands: recall  false-accepts")
    for thr in np.arange(-7.0, -1.99, 0.25):
        print(f"  {thr:+9.2f}  {np.mean(pos >= thr):6.1%}  {int(np.sum(neg >= thr)):4d}/{len(neg)}"
              f"     |  {np.mean(dpos >= thr):22.1%}  {int(np.sum(dneg >= thr)):4d}/{len(dneg)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "voxkeep-bench" / "speech",
                        help="where synthesized sentences are kept between runs")
    parser.add_argument("--sweep", action="store_true", help="also print recall/false accepts per threshold")
    parser.add_argument("--min-score", type=float, help="commands.min_score to report at (default: the config's)")
    parser.add_argument("--delete-min-score", type=float, help="commands.delete_min_score to report at")
    parser.add_argument("--filler-words", type=int, help="commands.filler_words (default: the config's)")
    parser.add_argument("--command-weight", type=float, help="commands.command_weight (default: the config's)")
    parser.add_argument("--sets", default="01234", help="which sets to run, by index (default: all five)")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    settings = CommandSettings()
    settings = dataclasses.replace(
        settings, min_score=settings.min_score if args.min_score is None else args.min_score,
        delete_min_score=settings.delete_min_score if args.delete_min_score is None else args.delete_min_score,
        filler_words=settings.filler_words if args.filler_words is None else args.filler_words,
        command_weight=settings.command_weight if args.command_weight is None else args.command_weight)
    print(f"filler_words {settings.filler_words}, command_weight {settings.command_weight:g}")
    t0 = time.perf_counter()
    recognizer = CommandRecognizer(settings)
    print(f"decoder load: {time.perf_counter() - t0:.2f} s")
    rtfs: list[float] = []
    for index, (title, voices, confusables, snrs) in enumerate((
            ("tuning set: espeak-ng voices, clean, tuning confusables", TUNE_VOICES, CONFUSABLE_TUNE, (None,)),
            ("held-out voices (flite), clean, unseen confusables", HELD_VOICES, CONFUSABLE_HELD, (None,)),
            ("held-out voices (flite), room noise 20 dB SNR, unseen confusables", HELD_VOICES, CONFUSABLE_HELD,
             (20.0,)),
            ("held-out voices (flite), room noise 10 dB SNR, unseen confusables", HELD_VOICES, CONFUSABLE_HELD,
             (10.0,)),
            ("held-out voices (flite), clean, tuning confusables", HELD_VOICES, CONFUSABLE_TUNE, (None,)))):
        if str(index) not in args.sets:
            continue
        results, rtf = run(recognizer, cases(voices, confusables, snrs, args.cache))
        rtfs += rtf
        report(title, results, settings)
        if args.sweep:
            sweep(results)
    print(f"\nrecognition time: median {statistics.median(rtfs):.3f} s per second of audio, "
          f"p95 {np.percentile(rtfs, 95):.3f} (x a 3 s window = time per command) over {len(rtfs)} windows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
