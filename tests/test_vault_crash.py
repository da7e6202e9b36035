"""SIGKILL at random points while recording and deleting: nothing acknowledged is lost or resurrected.

A forked child stores and deletes recordings in a loop and writes an acknowledgement line to a pipe
after each call returns. The parent kills it with SIGKILL at a random point, then reconciles the
vault as the daemon does at start-up and checks every acknowledgement made so far (across all trials,
which share one vault, as reboots of one device would). The vault lives in RAM (/dev/shm) when it can:
a SIGKILL does not lose what the kernel already has, so fsync latency would only thin out the trials.
A deletion is announced before it starts: from then on the recording may rightly be gone, but once
acknowledged it must never come back.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyrage  # noqa: F401  imported before forking, as in the daemon, so children start at once
import pytest

from voxkeep.config import VaultSettings
from voxkeep.owner import generate_identity
from voxkeep.vault import Vault

TRIALS = 200


def _child(state_dir: Path, ack_fd: int, seed: int) -> None:
    """Store and delete forever, acknowledging each completed call on ``ack_fd``."""
    rng = random.Random(seed)
    vault = Vault(state_dir, VaultSettings())
    pcm = np.random.default_rng(seed).integers(-3000, 3000, 4000, dtype=np.int16)
    while True:
        kept = vault.list()
        if kept and rng.random() < 0.4:
            last = rng.random() < 0.5
            victim = kept[-1].id if last else rng.choice(kept).id
            # Announced first: once a deletion has begun, the recording may rightly be gone after a crash.
            os.write(ack_fd, f"deleting {victim}\n".encode())
            assert (vault.delete_last("test") == 1) if last else vault.delete(victim, "test")
            os.write(ack_fd, f"deleted {victim}\n".encode())
        else:
            rid = vault.store(pcm, started_at=float(rng.randrange(10**9)), wake_word="w", score=0.9, command=None)
            os.write(ack_fd, f"stored {rid}\n".encode())


def _run_and_kill(state_dir: Path, seed: int, after_acks: int, delay: float) -> list[tuple[str, str]]:
    """Fork a child; SIGKILL it ``delay`` seconds after its ``after_acks``-th acknowledgement; return them all.

    Counting acknowledgements first makes every trial do real work however loaded the machine is; the
    random delay then lands the kill anywhere inside a following store or deletion.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_fd)
            _child(state_dir, write_fd, seed)
        finally:
            os._exit(1)
    os.close(write_fd)
    data = b""
    while data.count(b"\n") < after_acks:
        ready, _, _ = select.select([read_fd], [], [], 30.0)
        chunk = os.read(read_fd, 65536) if ready else b""
        assert chunk, "the child stopped acknowledging (it crashed or hung) before being killed"
        data += chunk
    select.select([], [], [], delay)  # an interruptible wait that needs no thread
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(read_fd, 65536):
        data += chunk
    os.close(read_fd)
    lines = data.decode().split("\n")[:-1]  # a torn last line was never a complete acknowledgement
    return [tuple(line.split(" ", 1)) for line in lines]  # type: ignore[misc]


@pytest.fixture
def ram_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir on tmpfs if there is one, else on disk."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as path:
        yield Path(path)


@pytest.mark.slow
def test_sigkill_while_recording_and_deleting_loses_nothing_acknowledged(ram_state_dir: Path) -> None:
    state_dir = ram_state_dir
    _, recipient = generate_identity()
    with Vault(state_dir, VaultSettings()) as vault:
        vault.add_recipient(recipient)
    rng = random.Random(1234)
    acks: dict[str, set[str]] = {"stored": set(), "deleting": set(), "deleted": set()}
    repaired = 0
    for trial in range(TRIALS):
        for kind, rid in _run_and_kill(state_dir, trial, rng.randrange(4), rng.uniform(0.0, 0.01)):
            acks[kind].add(rid)
        stored, deleted = acks["stored"], acks["deleted"]
        with Vault(state_dir, VaultSettings()) as vault:
            report = vault.reconcile()
            repaired += not report.clean
            present = {r.id: r for r in vault.list()}
            assert report.missing == [], f"trial {trial}: indexed recordings lost their file"
            assert stored - acks["deleting"] <= present.keys(), f"trial {trial}: acknowledged recordings lost"
            assert not deleted & present.keys(), f"trial {trial}: acknowledged deletions came back"
            quarantined = " ".join(report.quarantined)
            assert not any(rid in quarantined for rid in stored | deleted), \
                f"trial {trial}: an acknowledged recording was treated as an orphan"
            for rid, info in present.items():
                assert hashlib.sha256(vault.path_of(rid).read_bytes()).hexdigest() == info.sha256
            vault.audit_log.verify()
            leftovers = [p.name for p in vault.recordings_dir.iterdir() if not p.name.endswith(".wav.age")]
            assert leftovers == []
    print(f"{TRIALS} trials: {len(stored)} stores and {len(deleted)} deletions acknowledged, "
          f"{repaired} start-ups had something to reconcile")
    assert len(stored) >= TRIALS and deleted, "the child barely ran; the trials tested nothing"
    assert repaired, "no kill ever landed mid-operation; lengthen the delays"
