"""The owner's export (GDPR Art. 15 and 20) and its verification.

A bundle is one zip: ``manifest.json`` (what is kept and why, retention, recipients, forward
destinations, per-file size and SHA-256), the encrypted recordings exactly as stored, the audit log and
the consent history. Recordings stay encrypted inside the bundle: whoever intercepts it learns metadata
at most, and the owner's ``verify-export`` (or plain ``age -d``) is what opens them.

``verify_bundle`` is strict on purpose: every member must be listed, every listed file present with its
hash, every recording decryptable by the owner's identity. A bundle that holds anything else (another
household's recording, say) fails loudly rather than being "mostly fine".
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import stat
import struct
import wave
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import SAMPLE_RATE
from .audit import verify_chain
from .durable import TMP_SUFFIX, fsync_dir
from .errors import VaultError
from .owner import new_file_outside
from .vault import SUFFIX, Vault, read_regular

SCHEMA_VERSION = 2
"""2: every file in the manifest names its kind (1 had none)."""
MANIFEST = "manifest.json"
AUDIT_MEMBER = "audit.jsonl"
CONSENT_MEMBER = "consents.json"
DAMAGED_DIR = "audit-damaged"
"""Where the bundle holds audit logs the device found damaged and set aside (see audit.py)."""
FILE_KINDS = {AUDIT_MEMBER: "audit_log", CONSENT_MEMBER: "consent_history"}
MAX_MEMBER_BYTES = 256 * 1024 * 1024
"""No export file is larger: a recording is at most 10 MB (300 s), an audit log grows a few MB a year."""
MAX_BUNDLE_BYTES = 16 * 1024 * 1024 * 1024
"""Bound on what a whole bundle may unpack to, checked from the zip's directory before anything is read."""
MAX_MEMBERS = 1_000_000
_RECORDING_ID = re.compile(r"[0-9a-f]{8,64}")
_QUARANTINE_NAME = re.compile(r"quarantine/[^/]+")
_DAMAGED_NAME = re.compile(rf"{DAMAGED_DIR}/audit-damaged-[0-9TZ-]+\.jsonl")

DATA_KEPT = [
    {"what": "utterances after a wake word, as age-encrypted WAV files",
     "why": "so the owner can review what the speaker heard and why it woke; only the owner's key opens them"},
    {"what": "per recording: time, duration, wake word and score, recognised privacy command, ciphertext size "
             "and SHA-256, where it was forwarded",
     "why": "to list, delete, export and account for each recording without decrypting it"},
    {"what": "the owner's public keys (age recipients)", "why": "to encrypt recordings; no private key is kept"},
    {"what": "the consent ledger", "why": "nothing leaves the device without the owner's recorded consent"},
    {"what": "a hash-chained audit log of state changes, consents, deletions, exports and forwards "
             "(metadata only)", "why": "so the owner can check what the device did and that the record is intact"},
]


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    recordings: int
    quarantined: int


@dataclass(frozen=True)
class VerifyReport:
    recordings: int
    quarantined: int
    audit_entries: int
    recipient: str


def _digest(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _forward_destinations(audit_data: bytes) -> list[dict[str, Any]]:
    """Every sink data went to, from the audit log (it outlives the deleted recordings' index rows)."""
    totals: dict[str, dict[str, Any]] = {}
    for line in audit_data.splitlines():
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a damaged line is reported by the chain check, not here
        if isinstance(entry, dict) and entry.get("kind") == "forwarded" and isinstance(entry.get("sink"), str):
            dest = totals.setdefault(entry["sink"], {"sink": entry["sink"], "transfers": 0, "bytes": 0})
            dest["transfers"] += 1
            size = entry.get("size", 0)
            dest["bytes"] += size if isinstance(size, int) and not isinstance(size, bool) else 0
    return sorted(totals.values(), key=lambda d: d["sink"])


TEMP_PREFIX = ".voxkeep-export-"
"""Name of a bundle being written where the destination cannot hold unnamed files (see ``_open_unnamed``)."""


def _open_unnamed(directory: Path) -> tuple[int, Path | None]:
    """A new file in ``directory`` to write the bundle into, and its temporary name (None if it has none).

    The bundle is ciphertext outside the state dir, so ``forget --all`` cannot reach a copy a crash left
    behind: where the filesystem allows (Linux O_TMPFILE: ext4, tmpfs, btrfs, xfs) the file has no name
    until it is whole and linked in. Elsewhere (a FAT USB stick, NFS) it gets a temporary name of ours,
    and any such name a crash left in that directory is removed here, by the next export.
    """
    try:
        return os.open(directory, getattr(os, "O_TMPFILE", 0) | os.O_WRONLY | os.O_CLOEXEC, 0o600), None
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            raise  # EISDIR: a kernel without O_TMPFILE; EOPNOTSUPP/EINVAL: a filesystem without it
    for stale in directory.glob(f"{TEMP_PREFIX}*{TMP_SUFFIX}"):
        try:
            st = stale.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():  # ours: never a link, never another's
                stale.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to remove
    tmp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TMP_SUFFIX}"
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600), tmp


def _link_in(fd: int, out: Path) -> None:
    """Give the unnamed file ``fd`` the name ``out`` (which must not exist).

    linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N; os.link only makes that call, rather than link(2), which
    would link the /proc symlink itself, when it is given a directory fd.
    """
    directory = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", out.name, dst_dir_fd=directory, follow_symlinks=True)
    finally:
        os.close(directory)


def export_bundle(vault: Vault, out: Path, state_dir: Path) -> ExportSummary:
    """Write the owner's bundle to ``out`` durably (fsync, then linked in under its name, fsync dir), audited.

    Nothing carries ``out``'s name, or any other, until the bundle is whole (see ``_open_unnamed``)."""
    out = new_file_outside(out, state_dir, "the export", "forgetting recordings must not leave copies there")
    recordings = vault.list()
    vault.audit("exported", recordings=len(recordings))
    audit_data = vault.audit_log.read()
    chain: dict[str, Any] = {"audit_head": None}
    try:
        chain["audit_head"] = verify_chain(audit_data).head
        if vault.audit_log.set_aside():
            vault.audit_log.verify()  # raises, saying what was set aside and why
    except VaultError as exc:  # still export: the owner has a right to the data, and to know it is damaged
        chain["audit_chain_error"] = str(exc)
    consents = json.dumps(vault.consent_history(), indent=1).encode()
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "device_id": vault.device_id,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "owner_recipients": vault.recipients(),
        "data_kept": DATA_KEPT,
        "retention": {"retention_days": vault.settings.retention_days,
                      "enforced": "at daemon start-up and on a timer; 0 keeps nothing past command recognition"},
        "forward_destinations": _forward_destinations(audit_data),
        "active_consents": vault.active_consents(),
        "recordings": [], "quarantined": [], "missing_files": [],
        "files": {AUDIT_MEMBER: {"kind": "audit_log", **_digest(audit_data)},
                  CONSENT_MEMBER: {"kind": "consent_history", **_digest(consents)}},
        **chain,
    }
    fd, tmp = _open_unnamed(out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as bundle:
                for info in recordings:
                    data = read_regular(vault.path_of(info.id))
                    if data is None:  # deleted meanwhile, reported missing at start-up, or not a plain file
                        manifest["missing_files"].append(info.id)
                        continue
                    member = f"recordings/{info.id}{SUFFIX}"
                    bundle.writestr(member, data)
                    manifest["recordings"].append({**info.to_dict(), "kind": "recording", "file": member})
                for path in sorted(vault.quarantine_dir.iterdir()):
                    data = read_regular(path)
                    if data is not None:  # a link or a directory planted there is never followed into
                        bundle.writestr(f"quarantine/{path.name}", data)
                        manifest["quarantined"].append({"file": f"quarantine/{path.name}",
                                                        "kind": "quarantined_recording", **_digest(data)})
                for path in vault.audit_log.set_aside():
                    data = read_regular(path)
                    if data is not None:
                        bundle.writestr(f"{DAMAGED_DIR}/{path.name}", data)
                        manifest["files"][f"{DAMAGED_DIR}/{path.name}"] = {"kind": "damaged_audit_log", **_digest(data)}
                bundle.writestr(AUDIT_MEMBER, audit_data)
                bundle.writestr(CONSENT_MEMBER, consents)
                bundle.writestr(MANIFEST, json.dumps(manifest, indent=1))
            fh.flush()
            os.fchmod(fh.fileno(), 0o600)
            os.fsync(fh.fileno())
            if tmp is None:  # give the finished file its name; it never existed under any other
                _link_in(fh.fileno(), out)
        if tmp is not None:
            os.replace(tmp, out)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, VaultError):
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise VaultError(f"cannot write the export to {out.parent}: " + (
                "the disk is full; free some space or choose another --out" if full else
                f"{exc.strerror or exc}; choose another --out")) from None
        raise
    fsync_dir(out.parent)
    return ExportSummary(out, len(manifest["recordings"]), len(manifest["quarantined"]))


# ------------------------------------------------------------------------------------------------ verifying

def _check_wav(name: str, wav: bytes, duration: float | None) -> None:
    try:
        with wave.open(io.BytesIO(wav)) as w:
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            frames = w.getnframes()
    except (wave.Error, EOFError, ValueError, struct.error, OverflowError) as exc:
        raise VaultError(f"{name} decrypts but is not a WAV file ({exc}): it is not a voxkeep recording") from None
    if shape != (1, 2, SAMPLE_RATE):
        raise VaultError(f"{name} is not 16 kHz mono 16-bit audio: it is not a voxkeep recording")
    if duration is not None and abs(frames / SAMPLE_RATE - duration) > 1 / SAMPLE_RATE:
        raise VaultError(f"{name} lasts {frames / SAMPLE_RATE:.3f} s but the manifest says {duration:.3f} s")



def _open_bundle(path: Path) -> zipfile.ZipFile:
    if not path.exists():
        raise VaultError(f"export bundle {path} does not exist; pass the file 'voxkeep export --out' wrote")
    if not path.is_file():
        raise VaultError(f"{path} is not a regular file; pass the .zip 'voxkeep export --out' wrote")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error,
            NotImplementedError) as exc:
        raise VaultError(f"{path} is not a voxkeep export bundle ({exc}); pass the .zip 'voxkeep export' wrote") \
            from None


def _unsafe_name(name: str) -> str | None:
    """Why a member name could write outside the folder it is unpacked in (or hide what it is); None if safe."""
    if not name or name.startswith("/") or "\\" in name or ":" in name[:3]:
        return "an absolute or Windows path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "a '..' or empty path part"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "control characters"
    return None


def _check_members(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a hostile zip before any member is read: names, links, encryption, methods and sizes."""
    if len(infos) > MAX_MEMBERS:
        raise VaultError(f"{path} holds {len(infos)} files, more than any export ({MAX_MEMBERS}); do not trust it")
    total = 0
    for info in infos:
        name = info.filename
        why = _unsafe_name(name)
        if why:
            raise VaultError(f"{path} holds a file named {name[:80]!r} ({why}): unpacking it could write outside "
                             "its folder; this is not a voxkeep export, do not unpack it")
        kind = (info.external_attr >> 16) & 0o170000
        if info.is_dir() or (info.create_system == 3 and kind not in (0, stat.S_IFREG)):
            what = "a symbolic link" if kind == stat.S_IFLNK else "not a plain file"
            raise VaultError(f"{path}: member {name[:80]!r} is {what}; an export holds plain files only, "
                             "do not unpack it")
        if info.flag_bits & 0x1:
            raise VaultError(f"{path}: member {name[:80]!r} is password-encrypted; a voxkeep export never is "
                             "(its recordings are age-encrypted inside): it was altered")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise VaultError(f"{path}: member {name[:80]!r} uses compression method {info.compress_type}, which "
                             "voxkeep never writes: the bundle was altered")
        if info.file_size > MAX_MEMBER_BYTES:
            raise VaultError(f"{path}: member {name[:80]!r} unpacks to {info.file_size} bytes, more than any "
                             f"export file ({MAX_MEMBER_BYTES}); refusing to read it (a zip bomb?)")
        total += info.file_size
    if total > MAX_BUNDLE_BYTES:
        raise VaultError(f"{path} unpacks to {total} bytes, more than the limit of {MAX_BUNDLE_BYTES}; refusing "
                         "to read it (a zip bomb?)")


def _read_member(bundle: zipfile.ZipFile, path: Path, name: str) -> bytes:
    try:
        with bundle.open(name) as fh:
            data = fh.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise VaultError(f"{name} in {path} cannot be read ({exc}): the bundle is damaged or altered; "
                         "export again") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise VaultError(f"{name} in {path} unpacks to more than its stated size: the bundle was altered")
    return data


def _manifest_files(path: Path, manifest: Any) -> dict[str, dict[str, Any]]:
    """Every member the manifest lists, by name, each with a kind allowed where it sits; VaultError if not."""
    def bad(what: str) -> VaultError:
        return VaultError(f"{path}: {MANIFEST} {what}; the bundle was damaged or altered")

    if not isinstance(manifest, dict):
        raise bad("is not a JSON object")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise VaultError(f"{path}: manifest schema {str(manifest.get('schema_version'))[:20]!r} is not "
                         f"{SCHEMA_VERSION}; use the voxkeep version that wrote it")
    for key, tp in (("owner_recipients", list), ("files", dict), ("recordings", list), ("quarantined", list)):
        if not isinstance(manifest.get(key), tp):
            raise bad(f"lacks '{key}' or it is not a {tp.__name__}")
    if not all(isinstance(r, str) for r in manifest["owner_recipients"]):
        raise bad("lists an owner recipient that is not a string")
    for key in ("audit_head", "audit_chain_error"):
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise bad(f"has a '{key}' that is not a string")
    listed: dict[str, dict[str, Any]] = {}

    def add(name: Any, entry: Any, kind: str) -> None:
        if not isinstance(entry, dict) or not isinstance(name, str):
            raise bad(f"lists a file that is not described by a JSON object ({str(name)[:80]!r})")
        if entry.get("kind") != kind:
            raise bad(f"gives {name[:80]!r} the kind {str(entry.get('kind'))[:40]!r}, but a file there must be "
                      f"a {kind}")
        size, sha = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(sha, str):
            raise bad(f"gives {name[:80]!r} no integer size or string sha256")
        if name in listed:
            raise bad(f"lists {name[:80]!r} twice")
        listed[name] = entry

    for name, entry in manifest["files"].items():
        kind = FILE_KINDS.get(name) or ("damaged_audit_log" if _DAMAGED_NAME.fullmatch(name) else None)
        if kind is None:
            raise VaultError(f"{path}: {MANIFEST} lists {name[:80]!r}, which is no file an export holds; "
                             "the bundle was altered, do not trust it")
        add(name, entry, kind)
    for name in FILE_KINDS:
        if name not in listed:
            raise bad(f"does not list {name}")
    for entry in manifest["recordings"]:
        rid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(rid, str) or not _RECORDING_ID.fullmatch(rid) or entry.get("file") != \
                f"recordings/{rid}{SUFFIX}":
            raise bad(f"lists a recording whose id and file do not match ({str(entry)[:80]})")
        duration = entry.get("duration")
        if not isinstance(duration, int | float) or isinstance(duration, bool) or not math.isfinite(duration):
            raise bad(f"gives recording {rid} no duration")
        add(entry["file"], entry, "recording")
    for entry in manifest["quarantined"]:
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _QUARANTINE_NAME.fullmatch(name):
            raise bad(f"lists a quarantined file outside quarantine/ ({str(entry)[:80]})")
        add(name, entry, "quarantined_recording")
    return listed


def verify_bundle(path: Path, identities: list[Any]) -> VerifyReport:
    """Check every file of a bundle against its manifest and decrypt every recording; VaultError on any doubt.

    Nothing is read before the zip's structure passed ``_check_members`` (names, links, encryption,
    compression, sizes), and nothing unlisted, or listed under a kind it cannot have, is accepted.
    """
    import pyrage

    with _open_bundle(path) as bundle:
        infos = bundle.infolist()
        _check_members(path, infos)
        names = [i.filename for i in infos]
        if len(names) != len(set(names)):
            raise VaultError(f"{path} holds the same file name twice: the bundle was altered")
        if MANIFEST not in names:
            raise VaultError(f"{path} has no {MANIFEST}: it is not a voxkeep export bundle")
        try:
            manifest = json.loads(_read_member(bundle, path, MANIFEST))
        except (ValueError, RecursionError):
            raise VaultError(f"{path}: {MANIFEST} is not valid JSON; the bundle was damaged or altered") from None
        listed = _manifest_files(path, manifest)
        mine = [str(i.to_public()) for i in identities]
        recipient = next((r for r in mine if r in manifest["owner_recipients"]), None)
        if recipient is None:
            raise VaultError(f"this identity ({mine[0]}) is not an owner recipient of {path}: the export is "
                             "not yours, or you passed the wrong key file")
        extra = sorted(set(names) - set(listed) - {MANIFEST})
        if extra:
            raise VaultError(f"{path} holds {len(extra)} file(s) its manifest does not list (first: {extra[0]}): "
                             "it is not exactly this owner's export; do not trust it")
        absent = sorted(set(listed) - set(names))
        if absent:
            raise VaultError(f"{path} lacks {len(absent)} listed file(s) (first: {absent[0]}): the bundle is "
                             "incomplete; export again")
        for name, expected in sorted(listed.items()):
            data = _read_member(bundle, path, name)
            if _digest(data) != {"size": expected["size"], "sha256": expected["sha256"]}:
                raise VaultError(f"{name} in {path} does not match its size/SHA-256 in the manifest: altered or "
                                 "replaced; do not trust this bundle")
            if expected["kind"] in ("recording", "quarantined_recording"):
                try:
                    wav = pyrage.decrypt(data, identities)
                except Exception:  # pyrage.DecryptError, or a malformed age header
                    raise VaultError(f"{name} in {path} cannot be decrypted with your identity: it is not "
                                     "encrypted to you (not your recording)") from None
                _check_wav(name, wav, expected.get("duration"))
        audit_data = _read_member(bundle, path, AUDIT_MEMBER)
    if manifest.get("audit_chain_error"):
        raise VaultError(f"the device reported its audit log damaged when exporting: {manifest['audit_chain_error']}")
    report = verify_chain(audit_data)
    if report.head != manifest.get("audit_head"):
        raise VaultError(f"the audit log in {path} does not end at the manifest's audit head: it was altered")
    return VerifyReport(len(manifest["recordings"]), len(manifest["quarantined"]), report.entries, recipient)
