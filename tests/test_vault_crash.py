"""SIGKILL at random points of store, delete, consent, export and mute: nothing acknowledged is lost.

A child process repeats one kind of operation in a loop and writes an acknowledgement line to a pipe
after each call returns (and, for anything that may rightly be half-done after a crash, an announcement
before it starts). The parent kills it with SIGKILL at a random point, then opens the state as the
daemon does at start-up and checks every acknowledgement made so far (across all trials of a test,
which share one state dir, as reboots of one device would). The state lives in RAM (/dev/shm) when it
can: a SIGKILL does not lose what the kernel already has, so fsync latency would only thin out the trials.

Trials: 200 store/delete, 60 consent, 60 export, 80 mute (400 in all); each test prints its count.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import select
import signal
import tempfile
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest

from voxkeep.config import VaultSettings
from voxkeep.export import verify_bundle
from voxkeep.owner import generate_identity
from voxkeep.privacy import ACTIONS, STATE_FILE, Choices, PrivacyState, read_choices
from voxkeep.vault import Vault, _ref

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


_CHILDREN = multiprocessing.get_context("forkserver")
"""Children come from a fork server, a clean single-threaded process: forking pytest itself, which has threads
by then, can leave a lock held in the child for ever (Python 3.12 and later warn at every fork)."""
# The test module's own imports, by their installed names, load once in the server (a child still imports this
# module itself, which then costs little).
_CHILDREN.set_forkserver_preload(["numpy", "pyrage", "voxkeep.config", "voxkeep.export", "voxkeep.owner",
                                  "voxkeep.privacy", "voxkeep.vault"])


def _child_main(child: Callable[[Path, int, int], None], state_dir: Path, ack: Connection, seed: int) -> None:
    """The child: run ``child`` with the pipe's write end; never returns normally."""
    try:
        child(state_dir, ack.fileno(), seed)
    finally:
        os._exit(1)


def _run_and_kill(state_dir: Path, seed: int, after_acks: int, delay: float,
                  child: Callable[[Path, int, int], None] | None = None) -> list[tuple[str, str]]:
    """Start ``child`` (default: store and delete); SIGKILL it ``delay`` seconds after its ``after_acks``-th
    acknowledgement; return them all.

    Counting acknowledgements first makes every trial do real work however loaded the machine is; the
    random delay then lands the kill anywhere inside a following store or deletion.
    """
    reader, writer = _CHILDREN.Pipe(duplex=False)
    process = _CHILDREN.Process(target=_child_main, args=(child or _child, state_dir, writer, seed))
    process.start()
    writer.close()
    read_fd = reader.fileno()  # raw bytes both ends: the child writes lines with os.write
    data = b""
    while data.count(b"\n") < after_acks:
        ready, _, _ = select.select([read_fd], [], [], 30.0)
        chunk = os.read(read_fd, 65536) if ready else b""
        assert chunk, "the child stopped acknowledging (it crashed or hung) before being killed"
        data += chunk
    select.select([], [], [], delay)  # an interruptible wait that needs no thread
    os.kill(process.pid, signal.SIGKILL)  # type: ignore[arg-type]
    process.join()
    while chunk := os.read(read_fd, 65536):
        data += chunk
    reader.close()
    lines = data.decode().split("\n")[:-1]  # a torn last line was never a complete acknowledgement
    return [tuple(line.split(" ", 1)) for line in lines]  # type: ignore[misc]


@pytest.fixture
def ram_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir on tmpfs if there is one, else on disk."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as path:
        yield Path(path)


def _audit_entries(vault: Vault) -> list[dict]:
    """The log's entries, after checking that none was appended twice (each carries its own id)."""
    entries = [json.loads(line) for line in vault.audit_log.read().splitlines()]
    ids = [e["id"] for e in entries if "id" in e]
    assert len(ids) == len(set(ids)), "an audit entry was appended twice"
    return entries


@pytest.mark.slow
def test_sigkill_while_recording_and_deleting_loses_nothing_acknowledged(ram_state_dir: Path) -> None:
    state_dir = ram_state_dir
    _, recipient = generate_identity()
    with Vault(state_dir, VaultSettings()) as vault:
        vault.add_recipient(recipient)
    rng = random.Random(1234)
    acks: dict[str, set[str]] = {"stored": set(), "deleting": set(), "deleted": set()}
    repaired = 0
    refs: dict[str, str] = {}  # every recording seen in the index -> its audit ref (its salt goes with it)
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
            # Every recording the index holds was audited as stored, and every one seen before that is gone
            # now was audited as deleted: a kill between the commit and the append loses no entry.
            refs.update({rid: _ref(salt, rid) for rid, salt in vault._query("SELECT id, salt FROM recordings")})
            entries = _audit_entries(vault)
            stored_refs = [e["ref"] for e in entries if e["kind"] == "recording_stored"]
            deleted_refs = [r for e in entries if e["kind"] == "recordings_deleted" for r in e["refs"]]
            gone = refs.keys() - present.keys()
            unaudited_stores = sum(refs[rid] not in stored_refs for rid in present)
            unaudited_deletions = sum(refs[rid] not in deleted_refs for rid in gone)
            assert (unaudited_stores, unaudited_deletions) == (0, 0), \
                f"trial {trial}: {unaudited_stores} stores, {unaudited_deletions} deletions missing from the audit log"
            assert len(stored_refs) == len(set(stored_refs)) and len(deleted_refs) == len(set(deleted_refs))
    print(f"{TRIALS} trials: {len(stored)} stores and {len(deleted)} deletions acknowledged, "
          f"{repaired} start-ups had something to reconcile, {len(refs)} stores and {len(gone)} deletions "
          "checked in the audit log, none missing")
    assert len(stored) >= TRIALS and deleted, "the child barely ran; the trials tested nothing"
    assert repaired, "no kill ever landed mid-operation; lengthen the delays"


def _start_up(vault: Vault):
    """What the daemon does at start-up: reconcile, then its first audit entry (which cuts a torn tail)."""
    report = vault.reconcile()
    vault.audit("state", mode="listening", cause="startup")
    return report


# --- consent ----------------------------------------------------------------------------------------------

SINKS = ("http", "mqtt", "wyoming")


def _consent_child(state_dir: Path, ack_fd: int, seed: int) -> None:
    """Grant and revoke forwarding consents forever; announce each change, acknowledge it once recorded."""
    rng = random.Random(seed)
    vault = Vault(state_dir, VaultSettings())
    while True:
        sink, action = rng.choice(SINKS), rng.choice(("grant", "revoke"))
        os.write(ack_fd, f"changing {sink}:{action}\n".encode())
        vault.consent(sink, action, "test")
        os.write(ack_fd, f"changed {sink}:{action}\n".encode())


@pytest.mark.slow
def test_sigkill_while_granting_and_revoking_consent(ram_state_dir: Path) -> None:
    rng = random.Random(77)
    last: dict[str, str] = {}  # sink -> the last acknowledged action
    trials = unaudited = 0
    for trial in range(60):
        acks = _run_and_kill(ram_state_dir, trial, rng.randrange(1, 6), rng.uniform(0.0, 0.005), _consent_child)
        pending = None
        for kind, what in acks:
            sink, action = what.split(":")
            if kind == "changed":
                last[sink], pending = action, None
            else:
                pending = (sink, action)
        trials += 1
        with Vault(ram_state_dir, VaultSettings()) as vault:
            _start_up(vault)
            active = set(vault.active_consents())
            for sink in SINKS:
                want = {last.get(sink) == "grant"}
                if pending and pending[0] == sink:
                    want.add(pending[1] == "grant")  # cut off mid-change: either is right
                    last[sink] = "grant" if sink in active else "revoke"
                assert (sink in active) in want, f"trial {trial}: consent for {sink} is not what was acknowledged"
            vault.audit_log.verify()
            history = vault.consent_history()
            audited = [(e["sink"], e["kind"].removeprefix("consent_")) for e in _audit_entries(vault)
                       if str(e.get("kind", "")).startswith("consent_")]
            unaudited = len(history) - len(audited)
            assert audited == [(h["sink"], h["action"]) for h in history], \
                f"trial {trial}: {unaudited} consent changes missing from the audit log (or out of order)"
    print(f"consent: {trials} SIGKILL trials, {len(history)} consent changes recorded, {unaudited} of them "
          "missing from the audit log")
    assert history, "the child never changed a consent; the trials tested nothing"


# --- export -----------------------------------------------------------------------------------------------

def _export_child(state_dir: Path, ack_fd: int, seed: int) -> None:
    """Export bundles forever into the out dir beside the state dir, acknowledging each finished one."""
    from voxkeep.export import export_bundle

    vault = Vault(state_dir, VaultSettings())
    out_dir = state_dir.parent / "exports"
    n = 0
    while True:
        out = out_dir / f"export-{seed}-{n}.zip"
        os.write(ack_fd, f"exporting {out.name}\n".encode())
        export_bundle(vault, out, state_dir)
        os.write(ack_fd, f"exported {out.name}\n".encode())
        n += 1


@pytest.mark.slow
def test_sigkill_while_exporting_leaves_only_whole_bundles(ram_state_dir: Path, tmp_path: Path) -> None:
    from voxkeep.owner import read_identities

    root = ram_state_dir / "device"
    state_dir = root / "state"
    (root / "exports").mkdir(parents=True)
    secret, recipient = generate_identity()
    key = tmp_path / "owner.key"
    key.write_text(secret + "\n")
    identities = read_identities(key)
    pcm = np.random.default_rng(5).integers(-3000, 3000, 8000, dtype=np.int16)
    with Vault(state_dir, VaultSettings()) as vault:
        vault.add_recipient(recipient)
        for i in range(3):
            vault.store(pcm, started_at=1e9 + i, wake_word="w", score=0.9, command=None)
    rng = random.Random(99)
    finished: set[str] = set()
    checked: set[str] = set()
    verified = left_behind = 0
    for trial in range(60):
        for kind, name in _run_and_kill(state_dir, trial, rng.randrange(1, 3), rng.uniform(0.0, 0.02),
                                        _export_child):
            if kind == "exported":
                finished.add(name)
        bundles = {p.name for p in (root / "exports").iterdir() if p.name.endswith(".zip")}
        assert finished <= bundles, f"trial {trial}: an acknowledged export is gone"
        # A partial bundle is ciphertext outside the state dir, out of reach of 'forget --all': none may stay.
        partial = [p.name for p in (root / "exports").iterdir() if p.name not in bundles]
        left_behind += bool(partial)
        assert not partial, f"trial {trial}: a killed export left {partial}"
        for name in bundles - checked:
            verify_bundle(root / "exports" / name, identities)  # only whole bundles carry the final name
            verified += 1
        checked |= bundles
        with Vault(state_dir, VaultSettings()) as vault:
            report = _start_up(vault)  # a kill inside the export's audit entry may leave its temp file
            assert not (report.quarantined or report.missing) and set(report.temp_removed) <= {".audit.head.tmp"}, \
                f"trial {trial}: an export left the vault needing repair: {report}"
            vault.audit_log.verify()
            assert len(vault.list()) == 3
    print(f"export: 60 SIGKILL trials, {len(finished)} exports acknowledged, {verified} bundles verified, "
          f"{left_behind} kills left a partial file beside them")
    assert finished, "no export ever finished; the trials tested nothing"


# --- mute -------------------------------------------------------------------------------------------------

def _mute_child(state_dir: Path, ack_fd: int, seed: int) -> None:
    """Change the privacy state forever (as button, CLI and voice would), acknowledging each change."""
    rng = random.Random(seed)
    privacy = PrivacyState(state_dir / STATE_FILE)
    while True:
        action = rng.choice(ACTIONS)
        os.write(ack_fd, f"asking {action}\n".encode())
        outcome = privacy.request(action, "cli")
        assert outcome.ok and privacy.unsaved is None, outcome.message
        os.write(ack_fd, f"now {int(privacy.muted)}{int(privacy.recording_enabled)}\n".encode())


def _applied(choices: Choices, action: str) -> Choices:
    muted = {"mute": True, "unmute": False}.get(action, choices.muted)
    return Choices(muted, {"recording_on": True, "recording_off": False}.get(action, choices.recording))


@pytest.mark.slow
def test_sigkill_while_muting_comes_back_in_the_acknowledged_mode(ram_state_dir: Path) -> None:
    rng = random.Random(4321)
    modes: dict[str, int] = {}
    acknowledged = mid_change = 0
    known = Choices()
    for trial in range(80):
        acks = _run_and_kill(ram_state_dir, trial, rng.randrange(1, 8), rng.uniform(0.0, 0.003), _mute_child)
        for kind, what in acks:
            if kind == "now":
                known = Choices(what[0] == "1", what[1] == "1")
                acknowledged += 1
        came_back, problem = read_choices(ram_state_dir / STATE_FILE)
        assert problem is None, f"trial {trial}: a kill damaged the state file: {problem}"
        modes[came_back.mode.value] = modes.get(came_back.mode.value, 0) + 1
        if acks and acks[-1][0] == "asking":  # killed mid-change: before it or after it, nothing else
            mid_change += 1
            assert came_back in (known, _applied(known, acks[-1][1])), f"trial {trial}: came back {came_back}"
            known = came_back
        else:
            assert came_back == known, f"trial {trial}: came back {came_back}, acknowledged {known}"
    print(f"mute: 80 SIGKILL trials ({mid_change} mid-change), {acknowledged} changes acknowledged, "
          f"came back {modes}")
    assert acknowledged >= 80 and mid_change
