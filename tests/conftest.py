"""Shared fixtures: synthesized speech, a models directory, an isolated state dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voxkeep.testing.speech import synthesize


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The verified models, installed once by .ci/run (``voxkeep models fetch``)."""
    from voxkeep.config import default_models_dir
    from voxkeep.models import status

    path = default_models_dir()
    missing = [r.filename for r in status(path) if r.status != "verified"]
    if missing:
        pytest.fail(f"models not installed in {path}: {missing}; run 'voxkeep models fetch'")
    return path


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A private state dir per test."""
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory):
    """``speech(text, ...) -> Path``: a 16 kHz mono WAV of espeak-ng saying ``text``, cached per session."""
    cache = tmp_path_factory.mktemp("speech")

    def make(text: str, voice: str = "en-us", speed: int = 150, pad: float = 0.5) -> Path:
        return synthesize(text, cache, voice=voice, speed=speed, pad=pad)

    return make


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's own ~/.config/voxkeep or /etc/voxkeep."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    os.environ.pop("STATE_DIRECTORY", None)
