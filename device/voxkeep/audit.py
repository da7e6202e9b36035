"""The audit log: append-only, hash-chained JSON Lines of every state change, consent, deletion, export.

Each entry carries ``seq``, ``t``, ``kind``, its fields, the previous entry's hash (``prev``) and its own
``hash`` (SHA-256 of the canonical JSON of everything else). Editing, removing or reordering an entry
breaks the chain. Cutting entries off the end does not, so the newest ``(seq, hash)`` is also kept in a
separate small head file, and ``verify`` checks the log still reaches it; an owner who noted a head
earlier can check against that too (``voxkeep audit verify --head HASH``).

Appending checks the log's tail against the head first and never extends a log that fails it (cut off,
rewritten, a garbage last line, a damaged head file): that log is set aside untouched as
``audit-damaged-<time>.jsonl`` and a new chain starts whose first entry (``audit_restarted``) says what was
wrong, where the old log went and which head it should have reached. So nothing goes unaudited, nothing
"heals" silently, and ``verify`` fails, naming the file, until the owner has looked at it and removed it.

Entries hold metadata only, never audio, transcripts or recording ids (see vault.py for the per-recording
reference that becomes unlinkable once a recording is deleted). An entry may carry ``id``, a random id of
the entry itself: the vault queues each entry in its index (an outbox) in the same transaction as the change
it describes and appends it afterwards, and ``append_pending`` uses the id to append each queued entry
exactly once, even when a crash came between the append and the removal from the outbox.

Several processes may append (the daemon and the CLI): each append holds an exclusive ``flock`` on the log
while it reads the tail and writes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .durable import atomic_write, fsync_dir
from .errors import VaultError

LOG_FILE = "audit.jsonl"
HEAD_FILE = "audit.head"
GENESIS = "0" * 64
RESERVED = ("seq", "t", "kind", "prev", "hash", "id")
DAMAGED_PREFIX = "audit-damaged-"
MAX_LINE = 1 << 20
"""Longest entry looked for at the tail; entries are a few hundred bytes, so a longer line is damage."""
_HEX64 = re.compile(r"[0-9a-f]{64}")

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
            entry = _parse_entry(raw)
        except ValueError as exc:
            raise VaultError(f"audit log line {number} {exc}: the entry was edited") from None
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
    """The final line of the file (without its newline), read backwards in small chunks, at most MAX_LINE."""
    pos = os.fstat(fd).st_size
    buf = b""
    while pos > 0 and len(buf) <= MAX_LINE:
        step = min(4096, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1:].rstrip(b"\n")
    return buf.rstrip(b"\n")


def parse_head(data: bytes) -> dict[str, Any]:
    """A head record ``{"seq": N, "hash": HEX}``, or ValueError saying why it is not one."""
    try:
        head = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError("it is not JSON") from None
    if (not isinstance(head, dict) or not isinstance(head.get("seq"), int) or isinstance(head["seq"], bool)
            or head["seq"] < 1 or not isinstance(head.get("hash"), str) or not _HEX64.fullmatch(head["hash"])):
        raise ValueError('it is not {"seq": N, "hash": "<64 hex digits>"}')
    return {"seq": head["seq"], "hash": head["hash"]}


def _parse_entry(raw: bytes) -> dict[str, Any]:
    """One log line as an entry whose hash matches, or ValueError."""
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("is not JSON") from None
    if (not isinstance(entry, dict) or entry.get("hash") != entry_hash(entry) or not isinstance(entry.get("seq"), int)
            or isinstance(entry["seq"], bool)):
        raise ValueError("does not match its hash")
    return entry


def _open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink planted in the vault (ELOOP becomes a clear VaultError)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VaultError(f"{path} is a symbolic link; the vault never follows links: remove it") from None
        raise


class _Damaged(Exception):
    """The log's tail does not check out against its head; the message says how."""


class AuditLog:
    """The hash-chained log in ``directory``; safe across threads and processes."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time,
                 on_damage: Callable[[str], None] | None = None) -> None:
        """``on_damage(message)`` is told when a damaged log is set aside (the daemon raises a notice)."""
        self.dir = directory
        self.path = directory / LOG_FILE
        self.head_path = directory / HEAD_FILE
        self._clock = clock
        self.on_damage = on_damage

    def append(self, kind: str, **fields: Any) -> str:
        """Durably add one entry and return its hash; fields must be JSON metadata, never content."""
        return self.append_pending([(None, kind, fields)])

    def append_pending(self, pending: Sequence[tuple[str | None, str, dict[str, Any]]]) -> str:
        """Durably add ``(id, kind, fields)`` entries in order, skipping those already in the log; return the
        newest hash.

        Entries with an id are appended in order by one writer at a time (the vault holds its index's write
        lock), so if the log's last entry carries the id of one of them, it and those before it were
        appended by a writer that crashed before it could say so: they are not appended again.
        """
        for _, _, fields in pending:
            clash = set(RESERVED) & fields.keys()
            if clash:
                raise ValueError(f"audit fields may not be named {sorted(clash)}")
        restart: dict[str, Any] | None = None
        while True:
            fd = _open_nofollow(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not self._still_the_log(fd):
                    continue  # another process set this file aside while we waited for the lock
                self._repair_torn_tail(fd)
                try:
                    prev, seq, last_id = self._tail(fd)
                except _Damaged as exc:
                    restart = self._set_aside(str(exc))
                    continue
                if restart is not None:
                    prev, seq = self._write(fd, seq, prev, "audit_restarted", restart)
                    last_id = None
                ids = [entry_id for entry_id, _, _ in pending]
                todo = pending[ids.index(last_id) + 1:] if last_id is not None and last_id in ids else pending
                for entry_id, kind, fields in todo:
                    prev, seq = self._write(fd, seq, prev, kind, fields if entry_id is None
                                            else {**fields, "id": entry_id})
                return prev
            finally:
                os.close(fd)  # releases the flock

    def _write(self, fd: int, seq: int, prev: str, kind: str, fields: dict[str, Any]) -> tuple[str, int]:
        entry: dict[str, Any] = {"seq": seq + 1, "t": round(self._clock(), 3), "kind": kind, **fields, "prev": prev}
        entry["hash"] = entry_hash(entry)
        os.write(fd, json.dumps(entry, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        os.fsync(fd)
        self._save_head(entry)
        return str(entry["hash"]), int(entry["seq"])

    def _save_head(self, entry: dict[str, Any]) -> None:
        atomic_write(self.head_path, json.dumps({"seq": entry["seq"], "hash": entry["hash"]}).encode())

    def _still_the_log(self, fd: int) -> bool:
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _tail(self, fd: int) -> tuple[str, int, str | None]:
        """``(hash, seq, id)`` of the last entry, after checking it against the stored head; _Damaged if not."""
        try:
            head = self.head()
        except VaultError as exc:
            raise _Damaged(str(exc)) from None
        last = _last_line(fd)
        if not last:
            if head is not None:
                raise _Damaged(f"the log is empty but its head says entry {head['seq']}: entries were removed")
            return GENESIS, 0, None
        try:
            entry = _parse_entry(last)
        except ValueError as exc:
            raise _Damaged(f"its last line {exc}: it was edited or damaged") from None
        last_id = entry.get("id") if isinstance(entry.get("id"), str) else None
        if head is None:
            if entry["seq"] == 1:  # a crash between the first entry and the first head
                return entry["hash"], 1, last_id
            raise _Damaged(f"{HEAD_FILE} is missing but the log has {entry['seq']} entries")
        if (entry["seq"], entry["hash"]) == (head["seq"], head["hash"]):
            return entry["hash"], entry["seq"], last_id
        if entry["seq"] == head["seq"] + 1 and entry.get("prev") == head["hash"]:
            # A crash between writing the entry and its head: save that head now, so a second crash at the
            # same step cannot leave the log two entries past its head, which reads as damage.
            self._save_head(entry)
            return entry["hash"], entry["seq"], last_id
        raise _Damaged(f"its last entry ({entry['seq']}) is not its recorded head (entry {head['seq']}): "
                       "entries were cut off the end or rewritten")

    def _set_aside(self, problem: str) -> dict[str, Any]:
        """Move the damaged log out of the way, untouched; return the fields of the new chain's first entry."""
        try:
            previous: dict[str, Any] | None = self.head()
        except VaultError:
            previous = None
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.dir / f"{DAMAGED_PREFIX}{stamp}.jsonl"
        n = 1
        while aside.exists():
            n += 1
            aside = self.dir / f"{DAMAGED_PREFIX}{stamp}-{n}.jsonl"
        os.rename(self.path, aside)
        self.head_path.unlink(missing_ok=True)
        fsync_dir(self.dir)
        message = (f"audit log damaged ({problem}); it was set aside as {aside.name} and a new chain started: "
                   "'voxkeep audit verify' says more")
        log.error("%s", message)
        if self.on_damage is not None:
            try:
                self.on_damage(message)
            except Exception:
                log.exception("audit: telling about the damaged log failed")
        return {"problem": problem, "set_aside": aside.name, "previous_head": previous}

    def _repair_torn_tail(self, fd: int) -> None:
        """Cut an incomplete last line (power cut mid-write); it was never acknowledged to anyone."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            last = _last_line(fd)
            os.ftruncate(fd, size - len(last))
            log.warning("audit log: removed an incomplete last entry (%d bytes) left by a crash", len(last))

    def read(self) -> bytes:
        """The whole log as stored (empty if nothing was logged yet)."""
        return _read(self.path)

    def set_aside(self) -> list[Path]:
        """Damaged logs set aside by ``append``, oldest first (the owner removes them once looked at)."""
        return sorted(p for p in self.dir.glob(f"{DAMAGED_PREFIX}*.jsonl") if not p.is_symlink())

    def head(self) -> dict[str, Any] | None:
        """The stored head record, or None before the first entry."""
        try:
            data = _read(self.head_path, missing_ok=False, limit=4096)
        except FileNotFoundError:
            return None
        try:
            return parse_head(data)
        except ValueError as exc:
            raise VaultError(f"audit head file {self.head_path} is damaged ({exc}); the log cannot be checked "
                             "for truncation") from None

    def verify(self, expected_head: str | None = None) -> AuditReport:
        """Verify the chain and that it still reaches the stored head (and ``expected_head`` if given).

        Also fails while a damaged log set aside by ``append`` is still there, naming it and the problem.
        """
        fd = _open_nofollow(self.path, os.O_RDONLY | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
            report = verify_chain(data, self.head(), expected_head)
        finally:
            os.close(fd)
        aside = self.set_aside()
        if aside:
            problems = [e.get("problem") for e in map(json.loads, data.splitlines())
                        if e.get("kind") == "audit_restarted" and e.get("set_aside") == aside[-1].name]
            why = f" ({problems[0]})" if problems else ""
            raise VaultError(f"the audit log was found damaged{why} and set aside as {aside[-1]}"
                             f"{f' (and {len(aside) - 1} earlier)' if len(aside) > 1 else ''}; the "
                             f"{report.entries} entries since are intact. Keep a copy of it if you need it, "
                             "then delete it to clear this")
        return report


def _read(path: Path, *, missing_ok: bool = True, limit: int | None = None) -> bytes:
    """A vault file's bytes without following a symlink; b"" if it does not exist (when ``missing_ok``)."""
    try:
        fd = _open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        if missing_ok:
            return b""
        raise
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit) if limit is not None else fh.read()
