"""Crash-safe file writes: temp file -> fsync -> rename -> fsync directory.

Used for everything voxkeep must find intact after a power cut: models, the privacy state, vault
files. After ``atomic_write`` returns, the new content is on disk under its final name; before that,
readers see the old content (or nothing). The temp name starts with a dot and ends in ``.tmp`` so
start-up reconciliation can recognise and remove leftovers.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import StateError

TMP_SUFFIX = ".tmp"


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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
