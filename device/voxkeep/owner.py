"""Owner keys: age X25519 identities (kept by the owner) and recipients (kept by the device).

The device only ever stores recipients (public keys), so a stolen SD card holds nothing that can
decrypt a recording. ``owner init`` generates an identity, hands it to the owner (stdout, or a file
outside the state directory) and keeps only its recipient. Recipients live in ``recipients.txt`` in the
format ``age -R`` reads, so the owner can inspect it with ordinary tools.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pyrage import x25519

from .durable import atomic_write
from .errors import VaultError

RECIPIENTS_FILE = "recipients.txt"
MAX_RECIPIENTS_BYTES = 64 * 1024
"""A few hundred public keys; anything larger is not a recipients file."""


def _read_small(path: Path, limit: int, *, follow: bool = True) -> bytes:
    """A small key file's bytes: a plain file of at most ``limit`` bytes, else ValueError (or OSError).

    A FIFO or ``/dev/zero`` given as a key file must not hang the CLI or fill its memory; in the vault
    (``follow=False``) a symbolic link is refused as well.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("it is not a plain file (a directory, pipe or device)")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than a key file can be ({limit} bytes)")
    return data


def parse_recipient(text: str) -> x25519.Recipient:
    """An age X25519 recipient (``age1...``), or VaultError saying what a valid one looks like."""
    if text.strip().upper().startswith("AGE-SECRET-KEY-"):  # never echo a pasted secret key
        raise VaultError("that is an age SECRET key; give the device only its public key ('age1...', from "
                         "'age-keygen -y KEYFILE') and keep the secret key off the device")
    try:
        return x25519.Recipient.from_str(text.strip())
    except Exception:  # pyrage raises its own RecipientError/ValueError variants
        raise VaultError(f"{text.strip()[:80]!r} is not an age X25519 recipient; it must look like "
                         "'age1...' (the public key printed by 'voxkeep owner init' or 'age-keygen -y')") from None


def generate_identity() -> tuple[str, str]:
    """A fresh identity as ``(secret 'AGE-SECRET-KEY-1...', recipient 'age1...')``."""
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def identity_file_text(secret: str, recipient: str, created: str) -> str:
    """The same layout age-keygen writes, so ``age -d -i FILE`` accepts it."""
    return f"# created: {created}\n# public key: {recipient}\n{secret}\n"


def read_identities(path: Path) -> list[x25519.Identity]:
    """Every identity in an age identity file (comments and blank lines skipped)."""
    try:
        text = _read_small(path, MAX_RECIPIENTS_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise VaultError(f"identity file {path} does not exist; pass the file 'voxkeep owner init "
                         "--identity-out' wrote") from None
    except (OSError, ValueError) as exc:
        raise VaultError(f"cannot read identity file {path}: {exc}; check the path and its permissions") from None
    identities = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(x25519.Identity.from_str(line))
        except Exception:
            raise VaultError(f"identity file {path} holds a line that is not an age secret key; it must "
                             "contain 'AGE-SECRET-KEY-1...' lines as written by 'voxkeep owner init'") from None
    if not identities:
        raise VaultError(f"identity file {path} holds no 'AGE-SECRET-KEY-1...' line; pass the owner's identity file")
    return identities


def new_file_outside(path: Path, state_dir: Path, what: str, why: str) -> Path:
    """``path`` resolved, if it is a new file in an existing directory outside the state directory.

    Keys and exports must never land in the state directory: a secret key there defeats the encryption,
    and an export there would survive ``forget --all``.
    """
    target = path.expanduser().resolve()
    if target.is_relative_to(state_dir.expanduser().resolve()):
        raise VaultError(f"refusing to write {what} inside the state directory ({state_dir}): {why}; "
                         "choose a path outside it")
    if target.exists():
        raise VaultError(f"{target} already exists; choose a new file name so nothing is overwritten")
    if not target.parent.is_dir():
        raise VaultError(f"directory {target.parent} does not exist; create it or choose another path")
    return target


def write_identity_file(path: Path, text: str, state_dir: Path) -> None:
    """Write the owner's identity durably with mode 0600, never inside the device's state directory."""
    target = new_file_outside(path, state_dir, "the owner's secret key", "the device must never hold it")
    atomic_write(target, text.encode("ascii"), mode=0o600)


def read_recipients(vault_dir: Path) -> list[str]:
    """The registered recipients, in the order they were added (empty when no owner is registered)."""
    path = vault_dir / RECIPIENTS_FILE
    try:
        data = _read_small(path, MAX_RECIPIENTS_BYTES, follow=False)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise VaultError(f"cannot read the owner's keys in {path} ({exc.strerror}); it must be a plain file") \
            from None
    try:
        text = data.decode("ascii")
    except ValueError:
        raise VaultError(f"{path} is damaged (it is not a short text file of 'age1...' public keys); move it "
                         "aside and register the owner's public key again with 'voxkeep owner add'") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def write_recipients(vault_dir: Path, recipients: list[str]) -> None:
    """Replace the recipient list durably (age ``-R`` format: one public key a line)."""
    header = "# voxkeep owner recipients: every recording is encrypted to each of these public keys\n"
    atomic_write(vault_dir / RECIPIENTS_FILE, (header + "".join(f"{r}\n" for r in recipients)).encode("ascii"))
