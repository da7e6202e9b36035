"""Synthesized speech for tests, benchmarks and simulated households (espeak-ng, flite, sox).

Fixtures are generated at run time instead of committed: they are small to describe and large to
store. Every function returns 16 kHz mono int16 audio, the daemon's own format.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from .. import SAMPLE_RATE
from ..errors import VoxkeepError

NO_SOUND_SERVER = {"PULSE_SERVER": "unix:/nonexistent/voxkeep-synthesizes-to-files"}
"""Environment for the synthesizers: no sound server to reach. espeak-ng starts a PulseAudio client even when it
only writes a file, and where that client first sets itself up (a new XDG_CONFIG_HOME: every test gets one) the
breath noise of breathy voices (en-us+f3) came out different on every run, while later runs gave the same samples.
A test's first sentence in such a voice then sat at a different score each time (tests/test_commands.py's talker
across the room was refused in CI twice, never when run alone). With no server to reach, every run is the same."""


def _run(cmd: list[str]) -> None:
    if shutil.which(cmd[0]) is None:
        raise VoxkeepError(f"{cmd[0]} is not installed; install it (apt-get install espeak-ng flite sox)")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ | NO_SOUND_SERVER)
    if proc.returncode != 0:
        raise VoxkeepError(f"{cmd[0]} failed: {proc.stderr.strip() or proc.returncode}")


def speak(text: str, voice: str = "en-us", speed: int = 150, engine: str = "espeak-ng") -> np.ndarray:
    """``text`` spoken by ``engine`` (espeak-ng or flite) as 16 kHz mono int16 samples."""
    with tempfile.TemporaryDirectory(prefix="voxkeep-tts-") as tmp:
        raw = Path(tmp) / "raw.wav"
        out = Path(tmp) / "out.wav"
        if engine == "flite":
            _run(["flite", "-voice", voice or "slt", "-t", text, "-o", str(raw)])
        else:
            # "--": text starting with "-" (say = "-w/tmp/x.wav") is spoken, never taken as an option.
            _run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), "--", text])
        # -R: dither with a fixed seed, so the same text always gives the same samples (tests sit near
        # thresholds); dither itself stays, since digital silence is nothing a microphone ever hears.
        _run(["sox", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out)])
        data, _ = soundfile.read(str(out), dtype="int16")
    return np.asarray(data, dtype=np.int16)


def silence(seconds: float) -> np.ndarray:
    """Digital silence."""
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.int16)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    """Write 16 kHz mono int16 samples as a WAV file."""
    soundfile.write(str(path), samples, SAMPLE_RATE, subtype="PCM_16")
    return path


def synthesize(text: str, cache: Path, voice: str = "en-us", speed: int = 150, pad: float = 0.5,
               engine: str = "espeak-ng") -> Path:
    """A WAV of ``text`` with ``pad`` seconds of silence each side, cached in ``cache`` by content."""
    key = hashlib.sha256(f"{engine}|{voice}|{speed}|{pad}|{text}".encode()).hexdigest()[:16]
    path = cache / f"{key}.wav"
    if not path.exists():
        samples = np.concatenate([silence(pad), speak(text, voice, speed, engine), silence(pad)])
        write_wav(path, samples)
    return path
