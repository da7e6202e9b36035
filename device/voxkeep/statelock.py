"""The state-directory lock: the proof of whether a daemon owns a state directory.

A daemon takes an exclusive ``flock`` on ``<state dir>/daemon.lock`` before it does anything else there
(privacy state, vault reconciliation, the control socket) and holds it for its lifetime. The kernel drops
the lock when the process ends, however it ends, so a stale lock cannot exist and a crash needs no clean-up.

So a second daemon is refused before it can touch the first one's files, and ``voxkeep mute`` with no
daemon answering can tell "no daemon" (it gets the lock, and changes ``state.json`` while holding it)
from "a daemon that does not answer" (the lock is held: it must fail loudly, never claim success).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from .errors import VoxkeepError

LOCK_FILE = "daemon.lock"


class StateDirBusy(VoxkeepError):
    """Another process holds the state-dir lock; ``holder`` says which, as well as it can."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


def holder_of(state_dir: Path) -> str:
    """Who holds the lock, from what it wrote there ("pid 123 (daemon)"), or "another process"."""
    try:
        text = (state_dir / LOCK_FILE).read_text(encoding="ascii", errors="replace")[:64].split()
    except OSError:
        text = []
    return f"pid {text[0]} ({text[1]})" if len(text) == 2 and text[0].isdigit() else "another process"


class StateLock:
    """An exclusive lock on one state directory, held until ``release`` (or the process ends)."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path, who: str, wait: float = 0.0) -> StateLock:
        """Take the lock for ``who`` ("daemon", "cli"), trying for up to ``wait`` seconds.

        StateDirBusy if someone else holds it; VoxkeepError if the lock file cannot be opened at all.
        """
        path = state_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise VoxkeepError(f"cannot open the state-dir lock {path} ({exc.strerror}), so cannot tell whether a "
                               "voxkeep daemon is using it; run this as the speaker's owner (the daemon's user "
                               "or root)") from None
        deadline = time.monotonic() + wait
        pause = threading.Event()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = holder_of(state_dir)
                    raise StateDirBusy(f"{holder} holds the state dir {state_dir}", holder) from None
                pause.wait(0.05)
        try:  # only for messages; a full disk must not stop a daemon from starting (muted, if need be)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {who}\n".encode(), 0)
        except OSError:
            pass
        return cls(state_dir, fd)

    def release(self) -> None:
        """Drop the lock (closing the file does it); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
