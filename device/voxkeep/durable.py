"""Crash-safe file writes: temp file -> fsync -> rename -> fsync directory.

Used for everything voxkeep must find intact after a power cut: models, the privacy state, vault
files. After ``atomic_write`` returns, the new content is on disk under its final name; before that,
readers see the old content (or nothing). The temp name starts with a dot and ends in ``.tmp`` so
start-up reconciliation can recognise and remove leftovers.

``faults`` is the I/O-error hook of the fault-injection tests: armed, it makes the next matching
writes fail with a chosen errno (EIO, ENOSPC) at a chosen step, exactly as a dying SD card would.
Unarmed (always, outside tests) it costs one truthiness check per write.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import StateError

TMP_SUFFIX = ".tmp"
STEPS = ("open", "write", "fsync", "rename", "fsync_dir")
"""Where in ``atomic_write`` an armed fault can strike."""


@dataclass
class _Fault:
    errno: int
    pattern: str
    step: str
    remaining: int | None
    delay: float
    hits: int = 0
    """How often it struck."""
    done: int = 0
    """How many of those strikes have finished their delay."""


class FaultHook:
    """Failures armed by tests for the durable write path (thread-safe; empty in production)."""

    def __init__(self) -> None:
        self._armed: list[_Fault] = []
        self._lock = threading.Lock()

    @contextmanager
    def inject(self, err: int = errno.EIO, pattern: str = "*", step: str = "write",
               count: int | None = None, delay: float = 0.0) -> Iterator[_Fault]:
        """While inside, writes to files whose name matches ``pattern`` stall ``delay`` seconds at ``step``
        and then fail with ``err`` (0: go on, a stall only), ``count`` times or every time."""
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}")
        fault = _Fault(err, pattern, step, count, delay)
        with self._lock:
            self._armed.append(fault)
        try:
            yield fault
        finally:
            with self._lock:
                self._armed.remove(fault)

    def check(self, path: Path, step: str) -> None:
        """Stall and raise as armed for writing ``path`` at ``step``, if anything is armed."""
        if not self._armed:
            return
        with self._lock:
            fault = next((f for f in self._armed if f.step == step and f.remaining != 0
                          and fnmatch.fnmatch(path.name, f.pattern)), None)
            if fault is None:
                return
            fault.hits += 1
            if fault.remaining is not None:
                fault.remaining -= 1
        if fault.delay:
            time.sleep(fault.delay)  # this thread is the stuck disk
        fault.done += 1
        if fault.errno:
            raise OSError(fault.errno, os.strerror(fault.errno), str(path))


faults = FaultHook()


def temp_name(path: Path) -> Path:
    """The temporary sibling ``atomic_write`` uses for ``path``."""
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` durably; on any error the old file is untouched."""
    tmp = temp_name(path)
    try:
        faults.check(path, "open")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, mode)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            tmp.unlink()  # a link planted where the temp file goes: removed, never written through
            fd = os.open(tmp, flags, mode)
        with os.fdopen(fd, "wb") as fh:
            faults.check(path, "write")
            fh.write(data)
            fh.flush()
            faults.check(path, "fsync")
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        faults.check(path, "rename")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    faults.check(path, "fsync_dir")
    fsync_dir(path.parent)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 and return it; tighten it if it already exists.

    A symlink is refused rather than followed, and anything in the way is one StateError naming it.
    """
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.is_symlink():
            raise StateError(f"{path} is a symbolic link; voxkeep keeps its state only in a real directory: "
                             "replace the link with the directory itself")
        os.chmod(path, 0o700)
    except (FileExistsError, NotADirectoryError):
        raise StateError(f"{path} (or a folder above it) is a file, not a directory; move it aside or choose "
                         "another --state-dir") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StateError(f"cannot create {path}: the disk is full; free some space") from None
        raise StateError(f"cannot create or use the directory {path} ({exc.strerror}); check its permissions "
                         "or choose another --state-dir") from None
    return path
