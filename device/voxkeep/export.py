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

import hashlib
import io
import json
import os
import wave
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import SAMPLE_RATE
from .audit import verify_chain
from .durable import fsync_dir, temp_name
from .errors import VaultError
from .owner import new_file_outside
from .vault import SUFFIX, Vault

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
AUDIT_MEMBER = "audit.jsonl"
CONSENT_MEMBER = "consents.json"

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
        except ValueError:
            continue  # a damaged line is reported by the chain check, not here
        if entry.get("kind") == "forwarded":
            dest = totals.setdefault(entry["sink"], {"sink": entry["sink"], "transfers": 0, "bytes": 0})
            dest["transfers"] += 1
            dest["bytes"] += int(entry.get("size", 0))
    return sorted(totals.values(), key=lambda d: d["sink"])


def export_bundle(vault: Vault, out: Path, state_dir: Path) -> ExportSummary:
    """Write the owner's bundle to ``out`` durably (temp -> fsync -> rename -> fsync dir) and audit it."""
    out = new_file_outside(out, state_dir, "the export", "forgetting recordings must not leave copies there")
    recordings = vault.list()
    vault.audit("exported", recordings=len(recordings))
    audit_data = vault.audit_log.read()
    try:
        chain: dict[str, Any] = {"audit_head": verify_chain(audit_data).head}
    except VaultError as exc:  # still export: the owner has a right to the data, and to know it is damaged
        chain = {"audit_head": None, "audit_chain_error": str(exc)}
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
        "files": {AUDIT_MEMBER: _digest(audit_data), CONSENT_MEMBER: _digest(consents)},
        **chain,
    }
    tmp = temp_name(out)
    try:
        with open(tmp, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as bundle:
            for info in recordings:
                try:
                    data = vault.path_of(info.id).read_bytes()
                except FileNotFoundError:  # deleted meanwhile, or reported missing at start-up
                    manifest["missing_files"].append(info.id)
                    continue
                member = f"recordings/{info.id}{SUFFIX}"
                bundle.writestr(member, data)
                manifest["recordings"].append({**info.to_dict(), "file": member})
            for path in sorted(vault.quarantine_dir.iterdir()):
                data = path.read_bytes()
                bundle.writestr(f"quarantine/{path.name}", data)
                manifest["quarantined"].append({"file": f"quarantine/{path.name}", **_digest(data)})
            bundle.writestr(AUDIT_MEMBER, audit_data)
            bundle.writestr(CONSENT_MEMBER, consents)
            bundle.writestr(MANIFEST, json.dumps(manifest, indent=1))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
    return ExportSummary(out, len(manifest["recordings"]), len(manifest["quarantined"]))


def _open_bundle(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise VaultError(f"export bundle {path} does not exist; pass the file 'voxkeep export --out' wrote")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise VaultError(f"{path} is not a voxkeep export bundle ({exc}); pass the .zip 'voxkeep export' wrote") \
            from None


def _check_wav(name: str, wav: bytes, duration: float | None) -> None:
    try:
        with wave.open(io.BytesIO(wav)) as w:
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate())
            frames = w.getnframes()
    except (wave.Error, EOFError) as exc:
        raise VaultError(f"{name} decrypts but is not a WAV file ({exc}): it is not a voxkeep recording") from None
    if shape != (1, 2, SAMPLE_RATE):
        raise VaultError(f"{name} is not 16 kHz mono 16-bit audio: it is not a voxkeep recording")
    if duration is not None and abs(frames / SAMPLE_RATE - duration) > 1 / SAMPLE_RATE:
        raise VaultError(f"{name} lasts {frames / SAMPLE_RATE:.3f} s but the manifest says {duration:.3f} s")


def verify_bundle(path: Path, identities: list[Any]) -> VerifyReport:
    """Check every file of a bundle against its manifest and decrypt every recording; VaultError on any doubt."""
    import pyrage

    with _open_bundle(path) as bundle:
        names = bundle.namelist()
        if MANIFEST not in names:
            raise VaultError(f"{path} has no {MANIFEST}: it is not a voxkeep export bundle")
        try:
            manifest = json.loads(bundle.read(MANIFEST))
        except ValueError:
            raise VaultError(f"{path}: {MANIFEST} is not valid JSON; the bundle was damaged or altered") from None
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise VaultError(f"{path}: manifest schema {manifest.get('schema_version')!r} is not "
                             f"{SCHEMA_VERSION}; use the voxkeep version that wrote it")
        mine = [str(i.to_public()) for i in identities]
        recipient = next((r for r in mine if r in manifest.get("owner_recipients", [])), None)
        if recipient is None:
            raise VaultError(f"this identity ({mine[0]}) is not an owner recipient of {path}: the export is "
                             "not yours, or you passed the wrong key file")
        listed: dict[str, dict[str, Any]] = {name: dict(d) for name, d in manifest.get("files", {}).items()}
        for item in manifest.get("recordings", []) + manifest.get("quarantined", []):
            listed[item["file"]] = item
        if len(names) != len(set(names)):
            raise VaultError(f"{path} holds the same file name twice: the bundle was altered")
        extra = sorted(set(names) - set(listed) - {MANIFEST})
        if extra:
            raise VaultError(f"{path} holds {len(extra)} file(s) its manifest does not list (first: {extra[0]}): "
                             "it is not exactly this owner's export; do not trust it")
        absent = sorted(set(listed) - set(names))
        if absent:
            raise VaultError(f"{path} lacks {len(absent)} listed file(s) (first: {absent[0]}): the bundle is "
                             "incomplete; export again")
        for name, expected in sorted(listed.items()):
            data = bundle.read(name)
            if _digest(data) != {"size": expected.get("size"), "sha256": expected.get("sha256")}:
                raise VaultError(f"{name} in {path} does not match its size/SHA-256 in the manifest: altered or "
                                 "replaced; do not trust this bundle")
            if name.endswith(SUFFIX):
                try:
                    wav = pyrage.decrypt(data, identities)
                except pyrage.DecryptError:
                    raise VaultError(f"{name} in {path} cannot be decrypted with your identity: it is not "
                                     "encrypted to you (not your recording)") from None
                _check_wav(name, wav, expected.get("duration"))
        audit_data = bundle.read(AUDIT_MEMBER)
    if manifest.get("audit_chain_error"):
        raise VaultError(f"the device reported its audit log damaged when exporting: {manifest['audit_chain_error']}")
    report = verify_chain(audit_data)
    if report.head != manifest.get("audit_head"):
        raise VaultError(f"the audit log in {path} does not end at the manifest's audit head: it was altered")
    return VerifyReport(len(manifest["recordings"]), len(manifest["quarantined"]), report.entries, recipient)
