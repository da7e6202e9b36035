"""Helpers for running the daemon the way a user does and reading what it reports."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from voxkeep.testing.speech import silence, speak, write_wav

TIMEOUT_SCALE = float(os.environ.get("VOXKEEP_TEST_TIMEOUT_SCALE", "1"))
"""Stretches the hang guards where everything is slow (hw/image/check-arm64.sh runs the tests under qemu)."""


def run_cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run ``voxkeep ARGS`` as a separate process, exactly as a user would; ``timeout`` only guards a hang."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", "import sys; from voxkeep.cli import main; sys.exit(main())",
                           *args], input=stdin, capture_output=True, env=full_env, timeout=timeout * TIMEOUT_SCALE,
                          check=False)


def events_of(stdout: bytes | str) -> list[dict[str, Any]]:
    """Parse a JSON Lines event stream."""
    text = stdout.decode() if isinstance(stdout, bytes) else stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def scene(path: Path, *parts: str | float, voice: str = "en-us") -> Path:
    """A WAV of spoken lines (str) and pauses (float seconds), in order."""
    chunks = [silence(p) if isinstance(p, float | int) else speak(p, voice=voice) for p in parts]
    return write_wav(path, np.concatenate(chunks))


def one_error_line(stderr: bytes) -> str:
    """The user-facing error: exactly one line, no traceback."""
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("voxkeep: error:")]
    assert len(lines) == 1, text
    return lines[0]


def wait_until(condition, timeout: float = 10.0) -> bool:
    """Poll ``condition`` for things only visible from outside (pins, logs, a broker); True once it holds.

    A bounded wait for other threads, not a speed limit: a fast machine returns at once.
    """
    import threading

    pause = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        pause.wait(0.01)
    return condition()


@contextlib.contextmanager
def running_daemon(state_dir: Path, *, settings: dict[str, Any] | None = None, pin_factory: Any = None,
                   events: Any = None, room: np.ndarray | None = None) -> Iterator[tuple[Any, Any]]:
    """A daemon in this process on a live fake microphone (hearing ``room``, then silence, at twice real
    time; silence by default), serving its control socket.

    Yields ``(app, mic)`` once the socket exists and the microphone is open; ``events`` (a callable,
    e.g. ``queue.put``) sees every event.
    """
    import threading

    from voxkeep.app import build_app
    from voxkeep.audio import MicSource
    from voxkeep.config import load_settings
    from voxkeep.control import socket_path
    from voxkeep.testing.fakes import FakePyAudio

    conf = load_settings(None, {"state_dir": str(state_dir), "wake": {"words": ["alexa"]}, **(settings or {})})
    mic = FakePyAudio(silence(0.1), accepts_16k=True, speed=1.0) if room is None else \
        FakePyAudio(np.concatenate([room, silence(120.0)]), accepts_16k=True, speed=2.0)
    app = build_app(conf, source=MicSource(pa_module=mic), pin_factory=pin_factory,
                    extra_observers=[events] if events else None)
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    assert wait_until(lambda: socket_path(state_dir).exists() and (app.privacy.mic_open or app.privacy.muted))
    try:
        yield app, mic
    finally:
        app.daemon.stop.set()
        thread.join(10)


def reverberant(samples: np.ndarray, rt60: float, seed: int = 5) -> np.ndarray:
    """``samples`` in a reverberant room: exponentially decaying noise as the impulse response."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rt60 * 16000)) / 16000
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0
    wet = np.convolve(samples.astype(np.float64), ir / np.sqrt(np.sum(ir ** 2)))
    return np.clip(wet, -32768, 32767).astype(np.int16)
