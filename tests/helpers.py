"""Helpers for running the daemon the way a user does and reading what it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from voxkeep.testing.speech import silence, speak, write_wav


def run_cli(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run ``voxkeep ARGS`` as a separate process, exactly as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", "import sys; from voxkeep.cli import main; sys.exit(main())",
                           *args], input=stdin, capture_output=True, env=full_env, timeout=timeout, check=False)


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
