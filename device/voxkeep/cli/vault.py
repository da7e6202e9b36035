"""``voxkeep owner init|add|list``, ``recordings list|delete|forget``, ``export``, ``verify-export``, ``audit verify``.

These open the vault directly, also while the daemon runs: SQLite transactions and the audit log's
file lock keep the two processes from stepping on each other.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .common import common_parent, settings_from_args

if TYPE_CHECKING:
    from ..config import Settings
    from ..vault import Vault


def register(sub: argparse._SubParsersAction) -> None:
    parent = common_parent()

    owner = sub.add_parser("owner", help="the owner's keys: recordings are encrypted to them",
                           description="Manage the age keys recordings are encrypted to. The device keeps only "
                                       "public keys; the secret key stays with the owner.")
    osub = owner.add_subparsers(dest="owner_command", metavar="ACTION", required=True)
    init = osub.add_parser("init", parents=[parent], help="create the owner's key pair and register its public key",
                           description="Create an age X25519 identity for the owner. The secret key is printed "
                                       "(or written to --identity-out); only the public key stays on the device.")
    init.add_argument("--identity-out", metavar="FILE",
                      help="write the secret key to this new file (0600), outside the state directory")
    init.set_defaults(handler=_owner_init)
    add = osub.add_parser("add", parents=[parent], help="register another public key (age1...)",
                          description="Register an existing age public key, e.g. from 'age-keygen -y KEY'.")
    add.add_argument("recipient", metavar="RECIPIENT")
    add.set_defaults(handler=_owner_add)
    osub.add_parser("list", parents=[parent], help="show the registered public keys").set_defaults(
        handler=_owner_list)

    rec = sub.add_parser("recordings", help="list and delete kept recordings",
                         description="List and delete the encrypted recordings kept on this device.")
    rsub = rec.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)
    lst = rsub.add_parser("list", parents=[parent], help="show every kept recording (metadata only)")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(handler=_list)
    delete = rsub.add_parser("delete", parents=[parent], help="delete one recording by id")
    delete.add_argument("id", metavar="ID", help="a recording id from 'voxkeep recordings list'")
    delete.set_defaults(handler=_delete)
    forget = rsub.add_parser("forget", parents=[parent], help="delete today's or all recordings",
                             description="Delete recordings so no trace of them remains on the device; only "
                                         "an audit entry says that something was deleted, when and by what.")
    which = forget.add_mutually_exclusive_group(required=True)
    which.add_argument("--today", action="store_true", help="everything since local midnight")
    which.add_argument("--all", action="store_true", help="every recording and quarantined file")
    forget.set_defaults(handler=_forget)

    export = sub.add_parser("export", parents=[parent], help="write all your data to one verifiable bundle",
                            description="Write a zip with a manifest, the encrypted recordings, the audit log "
                                        "and the consent history (GDPR Art. 15 and 20).")
    export.add_argument("--out", metavar="FILE.zip", required=True, help="the new bundle file")
    export.set_defaults(handler=_export)
    verify = sub.add_parser("verify-export", parents=[parent], help="check a bundle with your secret key",
                            description="Decrypt every recording in a bundle with your identity, check every "
                                        "hash, and fail if any file is not yours or does not match.")
    verify.add_argument("bundle", metavar="FILE.zip")
    verify.add_argument("--identity", metavar="KEY", required=True,
                        help="your age identity file (from 'voxkeep owner init --identity-out')")
    verify.set_defaults(handler=_verify_export)

    audit = sub.add_parser("audit", help="check the hash-chained audit log",
                           description="Check the audit log for edited, removed, reordered or cut-off entries.")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    averify = asub.add_parser("verify", parents=[parent], help="verify the chain and its last head")
    averify.add_argument("--head", metavar="HASH", help="a head hash you noted earlier; it must still be there")
    averify.set_defaults(handler=_audit_verify)


def _open(args: argparse.Namespace) -> tuple[Vault, Settings]:
    """The vault named by the flags; imported lazily so --help never loads numpy."""
    from ..vault import Vault

    settings = settings_from_args(args)
    return Vault(settings.state_path, settings.vault), settings


def _owner_init(args: argparse.Namespace) -> int:
    from ..errors import VaultError
    from ..owner import generate_identity, identity_file_text, write_identity_file

    vault, settings = _open(args)
    with vault:
        if vault.owner_registered():
            raise VaultError(f"an owner key is already registered ({vault.recipients()[0]}); use 'voxkeep owner "
                             "add RECIPIENT' to register another public key")
        secret, recipient = generate_identity()
        text = identity_file_text(secret, recipient, datetime.now(UTC).isoformat(timespec="seconds"))
        if args.identity_out:
            write_identity_file(Path(args.identity_out), text, settings.state_path)
        vault.add_recipient(recipient)
    if args.identity_out:
        print(f"owner key written to {Path(args.identity_out).expanduser()}; public key {recipient} registered.")
        print("Keep that file off this device: it is the only way to open your recordings.")
    else:
        print("Store this secret key somewhere safe, off this device; it is the only way to open your recordings:",
              file=sys.stderr)
        print(text, end="")
        print(f"public key {recipient} registered.", file=sys.stderr)
    return 0


def _owner_add(args: argparse.Namespace) -> int:
    vault, _ = _open(args)
    with vault:
        added = vault.add_recipient(args.recipient)
    print(f"public key {args.recipient.strip()} {'registered' if added else 'was already registered'}.")
    return 0


def _owner_list(args: argparse.Namespace) -> int:
    vault, _ = _open(args)
    with vault:
        keys = vault.recipients()
    if not keys:
        print("no owner key registered; run 'voxkeep owner init'")
        return 1
    print("\n".join(keys))
    return 0


def _list(args: argparse.Namespace) -> int:
    vault, _ = _open(args)
    with vault:
        rows = vault.list()
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return 0
    for r in rows:
        when = datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M:%S")
        sent = f"  sent to {', '.join(r.forwarded_to)}" if r.forwarded_to else ""
        print(f"{r.id}  {when}  {r.duration:5.1f} s  {r.wake_word} ({r.score:.2f})  {r.size} bytes{sent}")
    print(f"{len(rows)} recording(s)")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from ..errors import VaultError

    vault, _ = _open(args)
    with vault:
        if not vault.delete(args.id, "cli"):
            raise VaultError(f"no recording with id {args.id!r}; 'voxkeep recordings list' shows the ids")
    print("deleted 1 recording")
    return 0


def _forget(args: argparse.Namespace) -> int:
    vault, _ = _open(args)
    with vault:
        count = vault.forget_all("cli") if args.all else vault.delete_today("cli")
    print(f"deleted {count} recording(s)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from ..export import export_bundle

    vault, settings = _open(args)
    with vault:
        summary = export_bundle(vault, Path(args.out), settings.state_path)
    print(f"wrote {summary.path}: {summary.recordings} recording(s), {summary.quarantined} quarantined file(s); "
          "check it with 'voxkeep verify-export FILE --identity KEY'")
    return 0


def _verify_export(args: argparse.Namespace) -> int:
    from ..export import verify_bundle
    from ..owner import read_identities

    report = verify_bundle(Path(args.bundle), read_identities(Path(args.identity)))
    print(f"OK: {report.recordings} recording(s) and {report.quarantined} quarantined file(s) decrypted with "
          f"{report.recipient}; every hash matches; audit chain of {report.audit_entries} entries intact")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    vault, _ = _open(args)
    with vault:
        report = vault.audit_log.verify(args.head)
    print(f"OK: {report.entries} audit entries, chain intact; head {report.head}")
    return 0
