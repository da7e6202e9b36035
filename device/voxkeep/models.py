"""Model files: fetch them from their wheels, verify every byte, resolve wake words for either engine.

openwakeword 0.6 downloads its models from the internet at run time, which fails on an offline Pi.
The 0.4.0 wheel on PyPI still carries the ONNX files, so ``voxkeep models fetch`` takes them from there;
the microWakeWord models (``.tflite`` + ``.json``) come from the installed pymicro-wakeword wheel, a
runtime dependency. Every file is checked against the SHA-256 list in ``models/models.sha256`` (shipped
inside the package too) before it is installed and again before it is loaded. Nothing is loaded that
does not match the list, except custom wake words the owner names by path.
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
from .microwake import MicroModel, load_description

WHEEL_REQUIREMENT = "openwakeword==0.4.0"
WHEEL_PREFIX = "openwakeword/resources/models/"
MICRO_PACKAGE = "pymicro_wakeword"
"""The installed package whose ``models/`` folder holds the microWakeWord files."""
FEATURE_MODELS = ("melspectrogram.onnx", "embedding_model.onnx")
FETCH_HINT = "run 'voxkeep models fetch' to reinstall it"
CUSTOM_MICRO_HINT = "check the file, or export the model again from microWakeWord training (.tflite + .json)"

OPENWAKEWORD = "openwakeword"
MICROWAKEWORD = "microwakeword"
ENGINES = (OPENWAKEWORD, MICROWAKEWORD)

LICENCES = {
    "melspectrogram.onnx": "Apache-2.0 (openWakeWord feature model)",
    "embedding_model.onnx": "Apache-2.0 (openWakeWord feature model)",
    "silero_vad.onnx": "MIT (Silero VAD)",
}
WAKE_WORD_LICENCE = "CC BY-NC-SA 4.0 (openWakeWord pre-trained model; non-commercial use only)"
MICRO_LICENCE = "Apache-2.0 (microWakeWord model from pymicro-wakeword; a product may ship it)"

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


def engine_of(filename: str) -> str:
    """Which engine runs a model file: ``.onnx`` is openWakeWord's, ``.tflite``/``.json`` microWakeWord's."""
    return MICROWAKEWORD if filename.endswith((".tflite", ".json")) else OPENWAKEWORD


def licence_of(filename: str) -> str:
    """The licence a model file is distributed under."""
    if engine_of(filename) == MICROWAKEWORD:
        return MICRO_LICENCE
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
    engine: str


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
        rows.append(ModelStatus(name, path, state, licence_of(name), engine_of(name)))
    return rows


def verified_path(models_dir: Path, filename: str) -> Path:
    """Path of a pinned model file after checking its hash; ModelError naming the fix otherwise."""
    digest = expected_hashes().get(filename)
    if digest is None:
        raise ModelError(f"{filename} is not a bundled model; give a path to a .onnx or .tflite file instead")
    path = models_dir / filename
    if not path.is_file():
        raise ModelError(f"model {path} is missing; {FETCH_HINT}")
    if sha256_file(path) != digest:
        raise ModelError(f"model {path} is truncated or altered (SHA-256 mismatch); {FETCH_HINT}")
    return path


def bundled_wake_words() -> dict[str, str]:
    """Wake-word name -> file name for every pinned openWakeWord wake-word model."""
    return {
        wake_word_name(n): n for n in expected_hashes()
        if n.endswith(".onnx") and n not in FEATURE_MODELS and n != "silero_vad.onnx"
    }


def bundled_micro_words() -> dict[str, str]:
    """Wake-word name -> ``.json`` file name for every pinned microWakeWord model."""
    return {wake_word_name(n): n for n in expected_hashes() if n.endswith(".json")}


def is_micro_path(spec: str) -> bool:
    """Whether a wake-word spec names a custom microWakeWord model by path."""
    return spec.endswith((".tflite", ".json"))


def is_path(spec: str) -> bool:
    """Whether a wake-word spec is a path to a custom model rather than a bundled word's name."""
    return spec.endswith((".onnx", ".tflite", ".json")) or os.sep in spec


def resolve_micro_word(spec: str, models_dir: Path) -> tuple[str, MicroModel, str]:
    """``okay_nabu`` or ``/path/to/word.tflite`` (or ``.json``) -> (event name, checked description, fix hint).

    A bundled word's ``.json`` and ``.tflite`` must both match their pinned hashes; a custom model needs
    its ``.json`` beside the ``.tflite`` (microWakeWord's training writes both), which gives the cutoff.
    """
    if is_path(spec):
        path = Path(spec).expanduser()
        description = path if path.suffix == ".json" else path.with_suffix(".json")
        if not path.is_file():
            raise ModelError(f"custom wake-word model {path} does not exist; check the path")
        if not description.is_file():
            raise ModelError(f"custom microWakeWord model {path} has no description {description.name} beside it; "
                             "copy the .json that microWakeWord training wrote with the .tflite")
        return wake_word_name(description.name), load_description(description, CUSTOM_MICRO_HINT), CUSTOM_MICRO_HINT
    name = wake_word_name(spec)
    bundled = bundled_micro_words()
    if name not in bundled:
        raise ModelError(f"'{spec}' has no microWakeWord model; use one of {', '.join(sorted(bundled))}, or a "
                         "path to a .tflite model")
    description = load_description(verified_path(models_dir, bundled[name]), FETCH_HINT)
    pinned = verified_path(models_dir, f"{name}.tflite")
    if description.tflite_path != pinned:
        raise ModelError(f"{description.json_path} names {description.tflite_path.name}, not {pinned.name}; "
                         f"{FETCH_HINT}")
    return name, description, FETCH_HINT


def is_custom(spec: str) -> bool:
    """Whether a wake-word spec names a model file of the user's own rather than a bundled word."""
    return spec.endswith(".onnx") or os.sep in spec


def resolve_wake_word(spec: str, models_dir: Path) -> tuple[str, Path]:
    """Turn ``alexa``, ``alexa_v0.1`` or ``/path/to/custom.onnx`` into (event name, verified path)."""
    if is_custom(spec):
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


def _micro_payloads(expected: dict[str, str]) -> dict[str, bytes]:
    """The pinned microWakeWord files, read from the installed pymicro-wakeword package and checked."""
    try:
        folder = resources.files(MICRO_PACKAGE).joinpath("models")
    except ModuleNotFoundError:
        raise ModelError("pymicro-wakeword is not installed; reinstall voxkeep "
                         "(pip install pymicro-wakeword)") from None
    payloads = {}
    for name, digest in sorted(expected.items()):
        if engine_of(name) != MICROWAKEWORD:
            continue
        try:
            payloads[name] = folder.joinpath(name).read_bytes()
        except OSError:
            raise ModelError(f"the installed pymicro-wakeword has no {name}; reinstall it "
                             "(pip install --force-reinstall pymicro-wakeword)") from None
        if hashlib.sha256(payloads[name]).hexdigest() != digest:
            raise ModelError(f"{name} in the installed pymicro-wakeword does not match its pinned SHA-256 (another "
                             "version, or altered); install the version voxkeep names, nothing was installed")
    return payloads


def fetch(models_dir: Path, wheel: Path | None = None) -> list[str]:
    """Install every pinned model into ``models_dir``; return the names installed.

    Every file is hashed before any is written, and each is written atomically, so a crash or a bad
    download never leaves a half-written model where the daemon would load it.
    """
    expected = expected_hashes()
    payloads = _micro_payloads(expected)
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="voxkeep-fetch-") as tmp:
        wheel_path = wheel if wheel is not None else _download_wheel(Path(tmp))
        try:
            archive = zipfile.ZipFile(wheel_path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelError(f"{wheel_path} is not a readable wheel ({exc}); download it again") from None
        with archive:
            members = set(archive.namelist())
            for name, digest in sorted(expected.items()):
                if engine_of(name) != OPENWAKEWORD:
                    continue
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
