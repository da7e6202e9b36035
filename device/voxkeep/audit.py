"""The audit log: append-only, hash-chained JSON Lines of every state change, consent, deletion, export.

Each entry carries ``seq``, ``t``, ``kind``, its fields, the previous entry's hash (``prev``) and its own
``hash`` (SHA-256 of the canonical JSON of everything else). Editing, removing or reordering an entry
breaks the chain. Cutting entries off the end does not, so the newest ``(seq, hash)`` is also kept in a
separate small head file, and ``verify`` checks the log still reaches it; an owner who noted a head
earlier can check against that too (``voxkeep audit verify --head HASH``).

Entries hold metadata only, never audio, transcripts or recording ids (see vault.py for the per-recording
reference that becomes unlinkable once a recording is deleted). Several processes may append (the daemon
and the CLI): each append holds an exclusive ``flock`` on the log while it reads the tail and writes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .durable import atomic_write
from .errors import VaultError

LOG_FILE = "audit.jsonl"
HEAD_FILE = "audit.head"
GENESIS = "0" * 64
RESERVED = ("seq", "t", "kind", "prev", "hash")

log = logging.getLogger(__name__)


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of an entry without its own ``hash``."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class AuditReport:
    """What ``verify`` found: a chain of ``entries`` entries ending at ``head``."""

    entries: int
    head: str


def verify_chain(data: bytes, head: dict[str, Any] | None = None, expected_head: str | None = None) -> AuditReport:
    """Check a whole log; raise VaultError naming the first broken line.

    ``head`` is the stored head record (``{"seq", "hash"}``): the log must still contain it unchanged, or
    entries were cut off the end. ``expected_head`` is a hash the owner noted earlier, which must appear.
    """
    prev, seq, hashes = GENESIS, 0, {}
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        raise VaultError(f"audit log line {len(lines)} is incomplete (a crash while writing?); "
                         "start the daemon once so it repairs the tail, then verify again")
    for number, raw in enumerate(lines, 1):
        try:
            entry = json.loads(raw)
        except ValueError:
            raise VaultError(f"audit log line {number} is not JSON: the log was edited") from None
        if not isinstance(entry, dict) or entry.get("hash") != entry_hash(entry):
            raise VaultError(f"audit log line {number} does not match its hash: the entry was edited")
        if entry.get("prev") != prev or entry.get("seq") != seq + 1:
            raise VaultError(f"audit log line {number} does not follow line {number - 1}: "
                             "an entry was removed, inserted or reordered")
        prev, seq = entry["hash"], entry["seq"]
        hashes[seq] = prev
    if head is not None and hashes.get(head.get("seq")) != head.get("hash"):
        raise VaultError(f"audit log no longer contains its last recorded head (entry {head.get('seq')}): "
                         "entries were cut off the end or rewritten")
    if expected_head is not None and expected_head not in hashes.values():
        raise VaultError(f"audit log does not contain the head {expected_head[:16]}... you noted: "
                         "it was truncated or rewritten since")
    return AuditReport(entries=seq, head=prev)


def _last_line(fd: int) -> bytes:
    """The final line of the file (without its newline), read backwards in small chunks."""
    pos = os.fstat(fd).st_size
    buf = b""
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1:].rstrip(b"\n")
    return buf.rstrip(b"\n")


class AuditLog:
    """The hash-chained log in ``directory``; safe across threads and processes."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = directory / LOG_FILE
        self.head_path = directory / HEAD_FILE
        self._clock = clock

    def append(self, kind: str, **fields: Any) -> str:
        """Durably add one entry and return its hash; fields must be JSON metadata, never content."""
        clash = set(RESERVED) & fields.keys()
        if clash:
            raise ValueError(f"audit fields may not be named {sorted(clash)}")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._repair_torn_tail(fd)
            last = _last_line(fd)
            prev, seq = (GENESIS, 0) if not last else (json.loads(last)["hash"], json.loads(last)["seq"])
            entry: dict[str, Any] = {"seq": seq + 1, "t": round(self._clock(), 3), "kind": kind, **fields,
                                     "prev": prev}
            entry["hash"] = entry_hash(entry)
            os.write(fd, json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n")
            os.fsync(fd)
            atomic_write(self.head_path, json.dumps({"seq": entry["seq"], "hash": entry["hash"]}).encode())
            return str(entry["hash"])
        finally:
            os.close(fd)  # releases the flock

    def _repair_torn_tail(self, fd: int) -> None:
        """Cut an incomplete last line (power cut mid-write); it was never acknowledged to anyone."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            last = _last_line(fd)
            os.ftruncate(fd, size - len(last))
            log.warning("audit log: removed an incomplete last entry (%d bytes) left by a crash", len(last))

    def read(self) -> bytes:
        """The whole log as stored (empty if nothing was logged yet)."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def head(self) -> dict[str, Any] | None:
        """The stored head record, or None before the first entry."""
        try:
            return dict(json.loads(self.head_path.read_bytes()))
        except FileNotFoundError:
            return None
        except ValueError:
            raise VaultError(f"audit head file {self.head_path} is damaged; the log cannot be checked "
                             "for truncation") from None

    def verify(self, expected_head: str | None = None) -> AuditReport:
        """Verify the chain and that it still reaches the stored head (and ``expected_head`` if given)."""
        with open(self.path, "rb") if self.path.exists() else open(os.devnull, "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            data, head = fh.read(), self.head()
        return verify_chain(data, head, expected_head)
