"""The vault: recordings stored only on the device, encrypted to the owner, indexed in SQLite, erasable.

Layout under ``<state_dir>/vault/`` (directories 0700, files 0600)::

    index.sqlite3      recordings, consent ledger, device id (WAL, secure_delete, synchronous=FULL)
    recordings/        <id>.wav.age: age-encrypted 16 kHz mono WAV, one per utterance
    quarantine/        files found without an index row at start-up (reported, never silently dropped)
    recipients.txt     the owner's public keys (see owner.py); the device holds no private key
    audit.jsonl/.head  the hash-chained audit log (see audit.py)

Crash safety comes from ordering. A recording's file is written durably before its index row, so a
crash leaves at worst an orphan file (quarantined by ``reconcile``), never a row without audio. A
deletion first marks its rows ``deleting`` (committed with synchronous=FULL), then audits, then removes
files and rows; ``reconcile`` finishes any marked deletion, so an acknowledged deletion never comes back.
Every audit entry is first queued in the index's ``audit_outbox``, in the same transaction as the change it
describes, and appended to the log after the commit; ``reconcile`` appends whatever a crash left queued, in
order and exactly once (see audit.py), so no change that happened goes unaudited.

Deletion leaves no trace: secure_delete zeroes freed SQLite content, the WAL is checkpointed and
truncated, ``forget_all`` also vacuums. Audit entries never name a recording id; they carry ``ref``, an
HMAC of the id under a per-recording salt that lives only in the index row, so once the row is gone the
entry can no longer be linked to anything.

One ``Vault`` may be shared by the daemon's threads (an RLock serialises them); other processes (the
CLI) coordinate through SQLite's write lock (BEGIN IMMEDIATE) and the audit log's flock.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import SAMPLE_RATE
from .audit import AuditLog
from .config import VaultSettings
from .durable import TMP_SUFFIX, atomic_write, fsync_dir, private_dir
from .errors import VaultError
from .owner import parse_recipient, read_recipients, write_recipients

log = logging.getLogger(__name__)

SUFFIX = ".wav.age"
INDEX_FILE = "index.sqlite3"
SCHEMA_VERSION = 1
NO_OWNER = "no owner key registered; run 'voxkeep owner init'"
KEEPS_NOTHING = "vault.retention_days is 0, so nothing is kept past command recognition; raise it to keep recordings"

SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    duration REAL NOT NULL,
    wake_word TEXT NOT NULL,
    score REAL NOT NULL,
    command TEXT,
    sha256 TEXT NOT NULL,      -- of the ciphertext, so an export can be checked without the key
    size INTEGER NOT NULL,
    salt BLOB NOT NULL,        -- keys the audit 'ref'; gone with the row, which unlinks old entries
    deleting INTEGER NOT NULL DEFAULT 0  -- set before the file goes: a crash then finishes the deletion
);
CREATE INDEX IF NOT EXISTS recordings_started ON recordings (started_at);
-- Issue 6: where each utterance went; rows go with their recording (the audit log keeps sink and size).
CREATE TABLE IF NOT EXISTS forwards (
    recording_id TEXT NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    size INTEGER NOT NULL,
    at REAL NOT NULL
);
-- Issue 6: the consent ledger, append-only; the latest row per sink decides.
CREATE TABLE IF NOT EXISTS consents (
    seq INTEGER PRIMARY KEY,
    sink TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('grant', 'revoke')),
    at REAL NOT NULL,
    by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Audit entries committed with the change they describe, appended to audit.jsonl after the commit and
-- then removed; start-up appends what a crash left here. Same metadata as the log: refs, never ids.
CREATE TABLE IF NOT EXISTS audit_outbox (
    n INTEGER PRIMARY KEY,
    id TEXT NOT NULL,          -- the entry's own random id, so it is appended exactly once
    kind TEXT NOT NULL,
    fields TEXT NOT NULL       -- JSON
);
"""


@dataclass(frozen=True)
class RecordingInfo:
    """One stored recording as the owner sees it (no audio, no transcript)."""

    id: str
    started_at: float
    duration: float
    wake_word: str
    score: float
    command: str | None
    sha256: str
    size: int
    forwarded_to: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (the export manifest and ``recordings list --json``)."""
        return {"id": self.id, "started_at": self.started_at, "duration": self.duration,
                "wake_word": self.wake_word, "score": self.score, "command": self.command,
                "sha256": self.sha256, "size": self.size, "forwarded_to": list(self.forwarded_to)}


@dataclass
class ReconcileReport:
    """What start-up reconciliation found and did; nothing in it was dropped silently."""

    temp_removed: list[str] = field(default_factory=list)
    """Names of partial files (never acknowledged) that were removed."""
    quarantined: list[str] = field(default_factory=list)
    """Names of files without an index row, moved to vault/quarantine/."""
    missing: list[str] = field(default_factory=list)
    """Ids of indexed recordings whose file is gone (the row is kept, so the owner sees it)."""
    audit_appended: int = 0
    """Audit entries of changes committed just before a crash, appended to the log now."""
    deletions_finished: int = 0
    """Recordings whose deletion was interrupted by a crash and has now been completed."""
    links_removed: list[str] = field(default_factory=list)
    """Symbolic links found in recordings/ or quarantine/, removed without reading what they point at."""
    not_files: list[str] = field(default_factory=list)
    """Directories, FIFOs and the like found there: left alone (never read or exported); remove them."""

    @property
    def clean(self) -> bool:
        return not (self.temp_removed or self.quarantined or self.missing or self.deletions_finished
                    or self.links_removed or self.not_files or self.audit_appended)

    def summary(self) -> str:
        """One log line."""
        if self.clean:
            return "vault consistent"
        odd = (f", {len(self.links_removed)} symbolic links removed unread" if self.links_removed else "") + (
            f", {len(self.not_files)} entries that are not files left alone (remove them: {self.not_files[0]})"
            if self.not_files else "")
        return (f"vault reconciled: {len(self.temp_removed)} partial files removed, {len(self.quarantined)} orphan "
                f"files quarantined, {len(self.missing)} recordings missing their file, "
                f"{self.deletions_finished} interrupted deletions finished, {self.audit_appended} audit entries "
                f"of changes committed before a crash appended{odd}")


def wav_bytes(pcm: np.ndarray) -> bytes:
    """A 16 kHz mono int16 WAV of ``pcm``, in memory (it is encrypted before anything touches disk)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.astype("<i2", copy=False).tobytes())
    return buf.getvalue()


def read_regular(path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a plain file; None if it is missing, a symlink, a FIFO or a directory.

    The vault never follows a symbolic link (O_NOFOLLOW) and never blocks on a planted FIFO (O_NONBLOCK):
    whatever a link points at, ``/etc/shadow`` or another household's files, is never read or exported.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO, errno.EISDIR):
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fh.read()


def _ref(salt: bytes, recording_id: str) -> str:
    return hmac.new(salt, recording_id.encode(), hashlib.sha256).hexdigest()[:32]


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


LOW_SPACE_BYTES = 256 * 1024
"""Below this much free space, SQLite cannot even create its WAL: an open that fails is the disk's fault."""


def _space_left(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return LOW_SPACE_BYTES  # unknown: do not blame the disk
    return st.f_bavail * st.f_frsize


class Vault:
    """The recordings vault of one device; see the module docstring for layout and guarantees."""

    def __init__(self, state_dir: Path, settings: VaultSettings, *, clock: Callable[[], float] = time.time,
                 write: Callable[[Path, bytes], None] = atomic_write) -> None:
        """Open (creating if needed) ``<state_dir>/vault``; ``write`` is the durable file writer (a test seam)."""
        self.dir = private_dir(Path(state_dir) / "vault")
        self.recordings_dir = private_dir(self.dir / "recordings")
        self.quarantine_dir = private_dir(self.dir / "quarantine")
        self.settings = settings
        self.audit_log = AuditLog(self.dir, clock)
        self._clock = clock
        self._write = write
        self._lock = threading.RLock()
        self._db = self._open_index()

    # ----------------------------------------------------------------- index plumbing

    def _open_index(self) -> sqlite3.Connection:
        path = self.dir / INDEX_FILE
        try:  # create it 0600 ourselves: SQLite would honour the umask, and its -wal/-shm copy this mode
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
        except OSError as exc:
            if _is_disk_full(exc):
                raise VaultError(f"the disk holding {self.dir} is full; free some space, then start again") \
                    from None
            what = {errno.EISDIR: "is a directory", errno.ELOOP: "is a symbolic link"}.get(exc.errno or 0,
                                                                                        f"cannot be opened ({exc})")
            raise VaultError(f"vault index {path} {what}; move it aside to start an empty vault (start-up "
                             "then quarantines the recordings it no longer knows)") from None
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            for pragma in ("journal_mode=WAL", "secure_delete=ON", "synchronous=FULL", "temp_store=MEMORY",
                           "foreign_keys=ON"):
                db.execute(f"PRAGMA {pragma}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise VaultError(f"vault index {path} was written by a newer voxkeep (schema {version}); "
                                 "upgrade voxkeep")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('device_id', ?)", (uuid.uuid4().hex,))
        except sqlite3.DatabaseError as exc:
            if _is_disk_full(exc) or _space_left(self.dir) < LOW_SPACE_BYTES:  # a full disk is often "I/O error"
                raise VaultError(f"the disk holding {self.dir} is full, so the vault index cannot be opened; "
                                 "free some space, then start again") from None
            raise VaultError(f"vault index {path} cannot be opened ({exc}); restore it from an export or move "
                             "it aside to start an empty vault") from None
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock across processes from the start."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # "database is locked" after the busy timeout
                raise VaultError(f"the vault index is busy ({exc}): another voxkeep process holds it; "
                                 "try again in a moment") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _truncate_wal(self) -> None:
        """Move everything into the main file and cut the WAL to zero, so old page images are gone."""
        stop = threading.Event()
        for _ in range(40):
            with self._lock:
                busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return
            stop.wait(0.05)  # another process is mid-transaction; it finishes within milliseconds
        log.warning("vault: could not truncate the index WAL (another process keeps it busy); it will be "
                    "truncated after the next deletion or on close")

    def close(self) -> None:
        """Close the index (SQLite checkpoints and removes the WAL when the last connection closes)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def device_id(self) -> str:
        """A random id made when the vault was created; names this device in exports."""
        return str(self._query("SELECT value FROM meta WHERE key = 'device_id'")[0][0])

    def path_of(self, recording_id: str) -> Path:
        """Where the encrypted file of ``recording_id`` lives."""
        return self.recordings_dir / f"{recording_id}{SUFFIX}"

    # ----------------------------------------------------------------- owner and audit

    def recipients(self) -> list[str]:
        """The owner's registered public keys."""
        return read_recipients(self.dir)

    def owner_registered(self) -> bool:
        return bool(self.recipients())

    def add_recipient(self, recipient: str) -> bool:
        """Register another owner public key; False if it was already registered."""
        key = str(parse_recipient(recipient))
        with self._tx() as db:  # the index write lock also serialises recipients.txt between processes
            current = self.recipients()
            if key in current:
                return False
            write_recipients(self.dir, [*current, key])
            self._queue(db, "owner_recipient_added", recipient=key)
        self._flush_audit()
        return True

    def why_not_recording(self) -> str | None:
        """Why ``store`` would refuse, for ``voxkeep status``; None when recordings are kept."""
        if not self.owner_registered():
            return NO_OWNER
        if self.settings.retention_days == 0:
            return KEEPS_NOTHING
        return None

    def audit(self, kind: str, **fields: Any) -> str:
        """Append an audit entry (metadata only) and return the newest hash (this entry's, or a later one's)."""
        with self._tx() as db:
            self._queue(db, kind, **fields)
            return self._append_queued(db)

    def _queue(self, db: sqlite3.Connection, kind: str, **fields: Any) -> str:
        """Queue an audit entry inside the caller's transaction; return its id."""
        entry_id = secrets.token_hex(12)
        db.execute("INSERT INTO audit_outbox (id, kind, fields) VALUES (?, ?, ?)",
                   (entry_id, kind, json.dumps(fields, sort_keys=True)))
        return entry_id

    def _flush_audit(self) -> int:
        """Append every queued entry to the log, oldest first; return how many were queued."""
        with self._tx() as db:
            queued = int(db.execute("SELECT count(*) FROM audit_outbox").fetchone()[0])
            if queued:
                self._append_queued(db)
        return queued

    def _append_queued(self, db: sqlite3.Connection) -> str:
        """Inside a write transaction: append the queued entries and dequeue them, committed together.

        A crash after the append but before the commit leaves them queued, and the log ends with the last
        of them: ``append_pending`` then skips them by id instead of appending them twice.
        """
        rows = db.execute("SELECT n, id, kind, fields FROM audit_outbox ORDER BY n").fetchall()
        head = self.audit_log.append_pending([(entry_id, kind, json.loads(fields)) for _, entry_id, kind, fields
                                              in rows])
        db.execute("DELETE FROM audit_outbox WHERE n <= ?", (rows[-1][0],))
        return head

    def audit_head(self) -> str:
        """Hash of the newest audit entry (the owner may note it to detect later truncation)."""
        head = self.audit_log.head()
        return str(head["hash"]) if head else ""

    def status(self) -> dict[str, Any]:
        """The vault's part of ``voxkeep status`` and the MQTT state (metadata only)."""
        return {"owner_registered": self.owner_registered(), "why_not_recording": self.why_not_recording(),
                "recordings_stored": self.count(), "retention_days": self.settings.retention_days,
                "consents": self.active_consents()}

    # ----------------------------------------------------------------- storing

    def store(self, pcm: np.ndarray, *, started_at: float, wake_word: str, score: float,
              command: str | None) -> str:
        """Encrypt ``pcm`` (16 kHz mono int16) to the owner, write it durably, index and audit it.

        Returns the new recording id. Raises VaultError (no owner, retention 0, disk full, ...) and then
        leaves no file, row or audit entry behind.
        """
        reason = self.why_not_recording()
        if reason:
            raise VaultError(reason)
        samples = np.asarray(pcm)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise VaultError(f"a recording must be 16 kHz mono int16 samples, not {samples.dtype} "
                             f"with shape {samples.shape}")
        import pyrage  # the CLI's list/delete commands never need it

        ciphertext = pyrage.encrypt(wav_bytes(samples), [parse_recipient(r) for r in self.recipients()])
        recording_id = secrets.token_hex(12)
        path = self.path_of(recording_id)
        salt = os.urandom(16)
        entry_id: str | None = None
        try:
            self._write(path, ciphertext)
            with self._tx() as db:
                db.execute("INSERT INTO recordings (id, started_at, duration, wake_word, score, command, sha256, "
                           "size, salt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (recording_id, float(started_at), len(samples) / SAMPLE_RATE, wake_word, float(score),
                            command, hashlib.sha256(ciphertext).hexdigest(), len(ciphertext), salt))
                queued = self._queue(db, "recording_stored", ref=_ref(salt, recording_id))
            entry_id = queued
            self._flush_audit()
        except (OSError, sqlite3.Error) as exc:
            self._undo_store(recording_id, entry_id)
            if _is_disk_full(exc):
                log.error("vault: disk full while storing a recording; nothing was kept. Free space in %s "
                          "or lower vault.retention_days", self.dir)
                raise VaultError(f"disk full: the recording was not kept (no partial file left); free space in "
                                 f"{self.dir} or lower vault.retention_days") from None
            raise VaultError(f"cannot store a recording in {self.dir}: {exc}; check the disk and permissions "
                             "of the state directory") from None
        log.info("vault: stored a %.1f s recording (%d bytes encrypted)", len(samples) / SAMPLE_RATE,
                 len(ciphertext))
        return recording_id

    def _undo_store(self, recording_id: str, entry_id: str | None) -> None:
        """Take back a store that failed half-way (indexed and its entry queued if ``entry_id``); it was never
        acknowledged."""
        try:
            if entry_id is not None:
                with self._tx() as db:
                    db.execute("DELETE FROM recordings WHERE id = ?", (recording_id,))
                    db.execute("DELETE FROM audit_outbox WHERE id = ?", (entry_id,))
            self.path_of(recording_id).unlink(missing_ok=True)
            fsync_dir(self.recordings_dir)
        except (OSError, sqlite3.Error) as exc:  # the file goes only after its row, so nothing dangles
            log.error("vault: could not take back a half-stored recording (%s); it stays whole in the vault "
                      "but has no audit entry", exc)

    # ----------------------------------------------------------------- reading

    def list(self) -> list[RecordingInfo]:
        """Every kept recording, oldest first."""
        rows = self._query("SELECT id, started_at, duration, wake_word, score, command, sha256, size "
                           "FROM recordings WHERE deleting = 0 ORDER BY started_at, rowid")
        sinks: dict[str, list[str]] = {}
        for rid, sink in self._query("SELECT recording_id, sink FROM forwards ORDER BY at"):
            sinks.setdefault(rid, []).append(sink)
        return [RecordingInfo(*row, forwarded_to=tuple(sinks.get(row[0], ()))) for row in rows]

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM recordings WHERE deleting = 0")[0][0])

    # ----------------------------------------------------------------- deleting

    def delete(self, recording_id: str, cause: str) -> bool:
        """Delete one recording; False if there is no such recording."""
        return self._delete("id = ?", (recording_id,), cause) == 1

    def delete_last(self, cause: str) -> int:
        """Delete the most recent recording ("delete what I just said")."""
        return self._delete("id = (SELECT id FROM recordings WHERE deleting = 0 "
                            "ORDER BY started_at DESC, rowid DESC LIMIT 1)", (), cause)

    def delete_today(self, cause: str) -> int:
        """Delete every recording started since local midnight of the device's calendar day."""
        midnight = datetime.fromtimestamp(self._clock()).replace(hour=0, minute=0, second=0, microsecond=0)
        return self._delete("started_at >= ?", (midnight.timestamp(),), cause)

    def enforce_retention(self) -> int:
        """Delete recordings older than ``retention_days`` (all of them when it is 0)."""
        if self.settings.retention_days == 0:
            return self._delete("1", (), "retention")
        cutoff = self._clock() - self.settings.retention_days * 86400
        return self._delete("started_at < ?", (cutoff,), "retention")

    def forget_all(self, cause: str) -> int:
        """Delete every recording and quarantined file, then vacuum so no freed page survives."""
        count = self._delete("1", (), cause)
        quarantined = sorted(self.quarantine_dir.iterdir())
        for path in quarantined:
            path.unlink()
        if quarantined:
            fsync_dir(self.quarantine_dir)
            self.audit("quarantine_emptied", cause=cause, count=len(quarantined))
        try:  # secure_delete already zeroed the rows; VACUUM also drops the freed pages themselves
            with self._lock:
                self._db.execute("VACUUM")
        except sqlite3.OperationalError as exc:
            log.warning("vault: could not vacuum the index after forgetting everything (%s)", exc)
        self._truncate_wal()
        return count

    def _delete(self, where: str, params: tuple[Any, ...], cause: str) -> int:
        with self._tx() as db:
            rows = db.execute(f"SELECT id, salt FROM recordings WHERE deleting = 0 AND ({where})", params).fetchall()
            db.executemany("UPDATE recordings SET deleting = 1 WHERE id = ?", [(r[0],) for r in rows])
            if rows:
                self._queue(db, "recordings_deleted", cause=cause, count=len(rows),
                            refs=[_ref(salt, rid) for rid, salt in rows])
        if not rows:
            return 0
        self._flush_audit()
        self._finish_deletions()
        log.info("vault: deleted %d recording(s) (%s)", len(rows), cause)
        return len(rows)

    def _finish_deletions(self) -> int:
        """Remove files and rows of every recording marked ``deleting``; safe to repeat after a crash."""
        marked = [r[0] for r in self._query("SELECT id FROM recordings WHERE deleting = 1")]
        for rid in marked:
            self.path_of(rid).unlink(missing_ok=True)
        if marked:
            fsync_dir(self.recordings_dir)
            with self._tx() as db:
                db.executemany("DELETE FROM recordings WHERE id = ? AND deleting = 1", [(r,) for r in marked])
            self._truncate_wal()
        return len(marked)

    # ----------------------------------------------------------------- start-up

    def reconcile(self) -> ReconcileReport:
        """Make index and files agree after a crash; report everything (call once at daemon start)."""
        report = ReconcileReport()
        report.audit_appended = self._flush_audit()  # before anything below adds entries of its own
        for directory in (self.dir, self.recordings_dir, self.quarantine_dir):
            for path in directory.iterdir():
                if path.name.startswith(".") and path.name.endswith(TMP_SUFFIX):
                    path.unlink()
                    report.temp_removed.append(path.name)
            fsync_dir(directory)
        report.deletions_finished = self._finish_deletions()
        if report.deletions_finished:
            self.audit("deletion_resumed", count=report.deletions_finished)
        indexed = {r[0]: r[1] for r in self._query("SELECT id, salt FROM recordings")}
        for directory in (self.recordings_dir, self.quarantine_dir):
            for path in sorted(directory.iterdir()):
                mode = path.lstat().st_mode
                if stat.S_ISLNK(mode):  # planted: removed unread, whatever it points at
                    path.unlink()
                    report.links_removed.append(path.name)
                elif not stat.S_ISREG(mode):
                    report.not_files.append(path.name)
        for path in sorted(self.recordings_dir.iterdir()):
            rid = path.name.removesuffix(SUFFIX)
            if (path.name.endswith(SUFFIX) and rid in indexed) or path.name in report.not_files:
                continue
            os.replace(path, self.quarantine_dir / path.name)
            report.quarantined.append(path.name)
        if report.links_removed:
            fsync_dir(self.recordings_dir)
            fsync_dir(self.quarantine_dir)
            self.audit("links_removed", count=len(report.links_removed))
        if report.quarantined:
            fsync_dir(self.quarantine_dir)
            fsync_dir(self.recordings_dir)
            self.audit("orphans_quarantined", count=len(report.quarantined))
        for rid, salt in indexed.items():
            if not self.path_of(rid).is_file() or self.path_of(rid).is_symlink():
                report.missing.append(rid)
                self.audit("recording_missing", ref=_ref(salt, rid))
        (log.info if report.clean else log.warning)("%s", report.summary())
        return report

    # ----------------------------------------------------------------- issue 6: consent and forwarding

    def consent(self, sink: str, action: str, by: str) -> None:
        """Record a consent change ("grant" or "revoke") for ``sink`` by ``by``; durable and audited."""
        if action not in ("grant", "revoke"):
            raise ValueError(f"consent action must be grant or revoke, not {action!r}")
        with self._tx() as db:
            db.execute("INSERT INTO consents (sink, action, at, by) VALUES (?, ?, ?, ?)",
                       (sink, action, self._clock(), by))
            self._queue(db, f"consent_{action}", sink=sink, by=by)
        self._flush_audit()

    def active_consents(self) -> list[str]:
        """Sinks whose latest ledger entry is a grant (none by default)."""
        rows = self._query("SELECT sink FROM consents AS c WHERE action = 'grant' AND seq = "
                           "(SELECT max(seq) FROM consents WHERE sink = c.sink) ORDER BY sink")
        return [r[0] for r in rows]

    def consent_history(self) -> list[dict[str, Any]]:
        """Every consent change, oldest first (part of every export)."""
        rows = self._query("SELECT sink, action, at, by FROM consents ORDER BY seq")
        return [{"sink": s, "action": a, "at": t, "by": b} for s, a, t, b in rows]

    def mark_forwarded(self, recording_id: str, sink: str, size: int, **detail: str) -> bool:
        """Note that ``size`` bytes of a recording went to ``sink``; False if the recording is gone.

        ``detail`` goes into the audit entry: what was odd about the transfer (an error answer, a revoke)."""
        with self._tx() as db:
            row = db.execute("SELECT salt FROM recordings WHERE id = ? AND deleting = 0", (recording_id,)).fetchone()
            if row is None:
                return False
            db.execute("INSERT INTO forwards (recording_id, sink, size, at) VALUES (?, ?, ?, ?)",
                       (recording_id, sink, int(size), self._clock()))
            self._queue(db, "forwarded", sink=sink, size=int(size), ref=_ref(row[0], recording_id), **detail)
        self._flush_audit()
        return True
