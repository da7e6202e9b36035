"""Evaluation audio for false wakes (issue 10): real speech from Debian packages, synthesized sets.

Why these sources: the false-wake rate only means something on real human voices, and the package
registries are the only place this project may fetch audio from. Fish Fillets NG ships its whole acted
dialogue, recorded by different actors per language (Czech, Dutch, English); KLettres ships letters and
syllables read by native speakers of many languages. Neither says any wake word.

Split (by speaker, never by frame, so nothing tuned on leaks into the report):
  TUNE   = Fillets Czech cast  + KLettres languages at even positions (sorted by code)
  REPORT = Fillets Dutch cast  + Fillets English cast + KLettres languages at odd positions
Synthesized wake phrases and negatives are split by voice in the same way.

Everything lands in ``$VOXKEEP_EVAL_CACHE`` (default ``~/.cache/voxkeep-eval``), outside the repository;
no audio is ever committed. ``python bench/corpus.py`` builds it (idempotent; ``--list`` prints sources and
licences). Streams are 16 kHz mono int16 ``.npy`` files plus a JSON manifest of clip spans.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from voxkeep import SAMPLE_RATE
from voxkeep.testing.speech import speak

SPLITS = ("tune", "report")
WAKE_PHRASES = {"alexa": "alexa", "hey_jarvis": "hey jarvis", "hey_mycroft": "hey mycroft",
                "hey_marvin": "hey marvin"}
GAP_SECONDS = 0.25
"""Silence between real clips: short, so the stream plays like continuous dialogue."""
WAKE_GAP_SECONDS = 2.5
"""Between wake clips: longer than the detector's 2 s refractory period, so every clip can fire."""


def cache_dir() -> Path:
    """Where downloads and streams live (never inside the repository)."""
    return Path(os.environ.get("VOXKEEP_EVAL_CACHE") or Path.home() / ".cache" / "voxkeep-eval")


@dataclass(frozen=True)
class Source:
    """One Debian package of real speech, and how its files map to speakers and splits."""

    package: str
    licence: str
    what: str
    pattern: str
    """Regex on the path inside the package; group 1 is the speaker group (language)."""


SOURCES = (
    Source("fillets-ng-data-cs", "GPL-2+", "Fish Fillets NG acted dialogue, Czech cast",
           r"/sound/.*/(cs)/[^/]+\.ogg$"),
    Source("fillets-ng-data-nl", "GPL-2+", "Fish Fillets NG acted dialogue, Dutch cast",
           r"/sound/.*/(nl)/[^/]+\.ogg$"),
    Source("fillets-ng-data", "GPL-2+", "Fish Fillets NG acted dialogue, English cast",
           r"/sound/.*/(en)/[^/]+\.ogg$"),
    Source("klettres-data", "GPL-2+ (KDE)", "KLettres letters and syllables, native speakers",
           r"/klettres/([a-zA-Z_]+)/(?:alpha|syllab)/.*\.ogg$"),
)


def split_of(package: str, group: str) -> str:
    """The split a speaker group belongs to; fixed rules, so reruns agree."""
    if package == "fillets-ng-data-cs":
        return "tune"
    if package.startswith("fillets-ng-data"):
        return "report"
    langs = sorted(KLETTRES_LANGS)
    return "tune" if langs.index(group) % 2 == 0 else "report"


KLETTRES_LANGS = ("ar", "cs", "da", "de", "en", "en_GB", "es", "fr", "he", "hu", "id", "it", "lt", "ml", "nb",
                  "nds", "nl", "nn", "pt_BR", "ru", "tn", "uk")


def _extract(source: Source, root: Path) -> Path:
    """apt-get download + dpkg-deb -x, once; returns the extracted tree."""
    debs, tree = root / "debs", root / "x" / source.package
    if tree.exists():
        return tree
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob(f"{source.package}_*.deb")):
        subprocess.run(["apt-get", "download", source.package], cwd=debs, check=True)
    deb = sorted(debs.glob(f"{source.package}_*.deb"))[-1]
    tree.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return tree


def load_16k(path: Path) -> np.ndarray:
    """Any file libsndfile reads, as 16 kHz mono int16."""
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return (np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)


def _join(clips: Iterable[tuple[str, np.ndarray]], gap: float) -> tuple[np.ndarray, list[dict]]:
    """Concatenate clips with ``gap`` seconds of silence; return the stream and each clip's span."""
    pad = np.zeros(int(gap * SAMPLE_RATE), dtype=np.int16)
    parts, spans, pos = [pad], [], len(pad)
    for label, clip in clips:
        parts += [clip, pad]
        spans.append({"label": label, "start": pos, "end": pos + len(clip)})
        pos += len(clip) + len(pad)
    return np.concatenate(parts), spans


def _save(name: str, split: str, stream: np.ndarray, spans: list[dict], meta: dict) -> None:
    out = cache_dir() / "streams" / split
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{name}.npy", stream)
    (out / f"{name}.json").write_text(json.dumps({**meta, "spans": spans}, indent=0))


def build_real() -> None:
    """One stream per (package, split), clips in sorted path order."""
    root = cache_dir()
    for source in SOURCES:
        tree = _extract(source, root)
        rx = re.compile(source.pattern)
        by_split: dict[str, list[Path]] = {s: [] for s in SPLITS}
        for path in sorted(tree.rglob("*.ogg")):
            m = rx.search(str(path))
            if m:
                by_split[split_of(source.package, m.group(1))].append(path)
        for split, paths in by_split.items():
            name = f"real-{source.package}"
            if not paths or (root / "streams" / split / f"{name}.npy").exists():
                continue
            stream, spans = _join(((str(p.relative_to(tree)), load_16k(p)) for p in paths), GAP_SECONDS)
            _save(name, split, stream, spans, {"kind": "real", "package": source.package,
                                               "licence": source.licence, "what": source.what})
            print(f"{split}: {name} {len(stream) / SAMPLE_RATE / 3600:.2f} h from {len(paths)} clips")


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str


# Split by voice: each voice speaks only in one split.
VOICES = {
    "tune": (Voice("espeak-ng", "en-us"), Voice("espeak-ng", "en-gb-x-rp"), Voice("espeak-ng", "en-029"),
             Voice("espeak-ng", "en-us+f3"), Voice("espeak-ng", "en+m3"), Voice("espeak-ng", "en-gb+f4"),
             Voice("flite", "slt"), Voice("flite", "awb")),
    "report": (Voice("espeak-ng", "en"), Voice("espeak-ng", "en-gb-scotland"),
               Voice("espeak-ng", "en-gb-x-gbclan"), Voice("espeak-ng", "en-us+f2"), Voice("espeak-ng", "en+m7"),
               Voice("espeak-ng", "en-gb-x-gbcwmd+f5"), Voice("flite", "kal16"), Voice("flite", "rms")),
}
SPEEDS = (125, 155, 185)
PITCH_SEMITONES = (-2.0, 0.0, 2.5)
NOISES = ("clean", "white20", "speech10")
LOW_NOISES = ("brown10", "pink15", "brown20", "pink25")
"""Rumbling conditions (dishwasher, fan, traffic) for the separate ``wake-low-*`` streams: the verifier once
refused clear wakes over brown noise at 20 dB, having heard only white noise and babble."""
LOW_LEAD = 2.0
"""Seconds of rumble alone before each of those phrases: the verifier's whole 2 s window hears it."""
COMMANDS = ("", "what time is it", "turn on the kitchen lights")


def _tts(text: str, voice: Voice, speed: int) -> np.ndarray:
    """Cached TTS: flite has no speed flag, so its speed is applied by resampling (also shifts pitch)."""
    key = hashlib.sha256(f"{voice}|{speed}|{text}".encode()).hexdigest()[:20]
    path = cache_dir() / "tts" / f"{key}.npy"
    if path.exists():
        return np.load(path)
    if voice.engine == "flite":
        audio = speak(text, voice.name, engine="flite")
        audio = _shift(audio, speed / 155)
    else:
        audio = speak(text, voice.name, speed=speed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, audio)
    return audio


def _shift(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch moves with it), like a tape."""
    if abs(factor - 1.0) < 1e-3:
        return audio
    out = soxr.resample(audio.astype(np.float32), SAMPLE_RATE * factor, SAMPLE_RATE)
    return np.clip(out, -32768, 32767).astype(np.int16)


def coloured_noise(colour: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Brown (1/f^2 power) or pink (1/f power) noise, shaped in the frequency domain, unit variance.

    Why in the frequency domain: one FFT gives both colours, and leaving out the lowest bins (below
    20 Hz) removes the DC drift a real microphone's coupling would block anyway.
    """
    spectrum = np.fft.rfft(rng.normal(0.0, 1.0, n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    gain = np.zeros_like(freqs)
    audible = freqs >= 20.0
    gain[audible] = freqs[audible] ** (-1.0 if colour == "brown" else -0.5)
    out = np.fft.irfft(spectrum * gain, n)
    return (out / max(float(out.std()), 1e-12)).astype(np.float32)


def _mix(clean: np.ndarray, noise: str, rng: np.random.Generator, babble: np.ndarray,
         lead: float = 0.0) -> np.ndarray:
    """Add white, brown or pink noise or real background speech at the named signal-to-noise ratio (dB).

    ``lead``: seconds of noise alone before the speech. Why: a steady noise (a dishwasher) is there
    before the phrase too; with digital silence there the verifier learnt "silence, then speech" as part
    of a wake and refused wakes over a rumble that had been running all along.
    """
    if noise == "clean":
        return clean
    speech_power = float(np.mean(clean.astype(np.float32) ** 2))
    x = np.concatenate([np.zeros(int(lead * SAMPLE_RATE), dtype=np.float32), clean.astype(np.float32)])
    if noise.startswith("white"):
        bg = rng.normal(0.0, 1.0, len(x)).astype(np.float32)
    elif noise.startswith(("brown", "pink")):
        bg = coloured_noise(re.sub(r"\d", "", noise), len(x), rng)
    else:
        start = int(rng.integers(0, len(babble) - len(x)))
        bg = babble[start:start + len(x)].astype(np.float32)
    snr_db = float(re.sub(r"[a-z]", "", noise))
    power = speech_power / (10 ** (snr_db / 10))
    bg *= np.sqrt(power / max(float(np.mean(bg ** 2)), 1e-9))
    return np.clip(x + bg, -32768, 32767).astype(np.int16)


def build_wake(split: str, low: bool = False) -> None:
    """Wake phrases for every bundled word: voice x speed x pitch x noise x carrier, 1 in 3 combinations.

    ``low``: the same phrases over rumbling noise (``LOW_NOISES``), as separate ``wake-low-*`` streams so
    their recall is reported as its own condition.
    """
    babble = np.load(cache_dir() / "streams" / split / ("real-fillets-ng-data-cs.npy" if split == "tune"
                                                        else "real-fillets-ng-data-nl.npy"), mmap_mode="r")
    for word, phrase in WAKE_PHRASES.items():
        name = f"wake-low-{word}" if low else f"wake-{word}"
        if (cache_dir() / "streams" / split / f"{name}.npy").exists():
            continue
        seed = f"{split}{word}low" if low else f"{split}{word}"
        rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
        clips = []
        for vi, voice in enumerate(VOICES[split]):
            for si, speed in enumerate(SPEEDS):
                for pi, pitch in enumerate(PITCH_SEMITONES):
                    # One third of the combinations, chosen so that per voice every noise meets every
                    # carrier once and each speed and pitch thrice (a counter modulo 3 once picked only
                    # "speech10" with one carrier, and the verifier learnt the babble).
                    noise = (LOW_NOISES[(vi + si + 2 * pi) % len(LOW_NOISES)] if low
                             else NOISES[-(vi + si + pi) % 3])
                    command = COMMANDS[(si + 2 * pi) % 3]
                    text = f"{phrase}, {command}" if command else phrase
                    audio = _shift(_tts(text, voice, speed), 2 ** (pitch / 12))
                    clips.append((f"{voice.engine}:{voice.name}|{speed}|{pitch}|{noise}|{text}",
                                  _mix(audio, noise, rng, babble, LOW_LEAD if low else 0.0)))
        stream, spans = _join(clips, WAKE_GAP_SECONDS)
        _save(name, split, stream, spans, {"kind": "wake", "word": word, "condition": "low" if low else "mixed"})
        print(f"{split}: {name} {len(spans)} clips")


NEAR_MISSES = (
    "a lexus is parked outside", "alexander called about the electric bill", "hey travis, pass the salt",
    "hey marvelous, how was the day", "my craft project is done", "hey mike, roughly ten minutes",
    "a jar of jam is on the shelf", "the marble floor is cold", "hey, jar this sauce please", "lexicon",
    "election results come in tonight", "hey, my car is loft", "hey martin, come over here",
    "the harvest was large this year", "hey jasper", "alexis and anna went home", "mark, vin and jo",
)


def negative_sentences() -> list[str]:
    """Plain English prose (the GPL's text, always on Debian) plus near-misses of each wake phrase."""
    text = Path("/usr/share/common-licenses/GPL-3").read_text(encoding="utf-8")
    sentences = []
    for raw in re.split(r"(?<=[.;:])\s+", re.sub(r"\s+", " ", text)):
        words = re.sub(r"[^A-Za-z ,']", " ", raw).split()
        if 5 <= len(words) <= 25:
            sentences.append(" ".join(words))
    bad = re.compile(r"alexa\b|jarvis|mycroft|marvin", re.I)
    return [s for s in sentences[:160] if not bad.search(s)] + list(NEAR_MISSES)


def build_negatives(split: str) -> None:
    """Every negative sentence, each voice of the split speaking its share at a default speed."""
    name = "synth-negatives"
    if (cache_dir() / "streams" / split / f"{name}.npy").exists():
        return
    voices = VOICES[split]
    sentences = negative_sentences()
    clips = []
    for i, text in enumerate(sentences):
        voice = voices[i % len(voices)]
        clips.append((f"{voice.engine}:{voice.name}|{text}", _tts(text, voice, SPEEDS[i % len(SPEEDS)])))
    for voice in voices:  # near-misses are the interesting ones: every voice says every one
        clips += [(f"{voice.engine}:{voice.name}|{t}", _tts(t, voice, 155)) for t in NEAR_MISSES]
    stream, spans = _join(clips, 0.5)
    _save(name, split, stream, spans, {"kind": "synth-negative"})
    print(f"{split}: {name} {len(stream) / SAMPLE_RATE / 60:.1f} min, {len(spans)} clips")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print sources and licences, build nothing")
    args = parser.parse_args(argv)
    if args.list:
        for s in SOURCES:
            print(f"{s.package:22} {s.licence:14} {s.what}")
        print("espeak-ng, flite       GPL-3 / BSD    synthesized wake phrases and negatives")
        return 0
    build_real()
    for split in SPLITS:
        build_wake(split)
        build_negatives(split)
        build_wake(split, low=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
