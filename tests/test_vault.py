"""The vault with real SQLite, real age encryption and real files: storing, deleting, retention, reconcile."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyrage
import pytest
from pyrage import x25519

from voxkeep.config import VaultSettings
from voxkeep.errors import VaultError
from voxkeep.owner import generate_identity
from voxkeep.vault import KEEPS_NOTHING, NO_OWNER, Vault

NOW = datetime(2024, 3, 14, 12, 0).timestamp()  # local noon, so "today" is unambiguous in any time zone


def _pcm(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-8000, 8000, int(16000 * seconds), dtype=np.int16)


@pytest.fixture
def identity() -> x25519.Identity:
    return x25519.Identity.from_str(generate_identity()[0])


@pytest.fixture
def vault(state_dir: Path, identity: x25519.Identity) -> Iterator[Vault]:
    with Vault(state_dir, VaultSettings(), clock=lambda: NOW) as v:
        v.add_recipient(str(identity.to_public()))
        yield v


def _store(vault: Vault, started_at: float = NOW, seed: int = 0) -> str:
    return vault.store(_pcm(seed=seed), started_at=started_at, wake_word="hey_jarvis", score=0.9, command=None)


def _decrypt_samples(vault: Vault, rid: str, identity: x25519.Identity) -> np.ndarray:
    with wave.open(io.BytesIO(pyrage.decrypt(vault.path_of(rid).read_bytes(), [identity]))) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _files_holding(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``root`` containing any needle: what a thief with the SD card could grep."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n.decode()}" for n in needles if n in data]
    return hits


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real ``voxkeep`` command in its own process, as the owner runs it beside the daemon."""
    return subprocess.run([sys.executable, "-c", "import sys; from voxkeep.cli import main; sys.exit(main())",
                           *argv], capture_output=True, text=True, check=False)


def test_no_owner_means_nothing_is_stored_and_says_why(state_dir: Path) -> None:
    with Vault(state_dir, VaultSettings()) as vault:
        assert not vault.owner_registered()
        assert vault.why_not_recording() == NO_OWNER
        with pytest.raises(VaultError, match="voxkeep owner init"):
            _store(vault)
        assert list(vault.recordings_dir.iterdir()) == []
        assert vault.count() == 0


def test_store_encrypts_to_the_owner_and_round_trips(vault: Vault, identity: x25519.Identity) -> None:
    pcm = _pcm(1.25, seed=3)
    rid = vault.store(pcm, started_at=NOW - 5, wake_word="alexa", score=0.77, command="delete_last")
    assert np.array_equal(_decrypt_samples(vault, rid, identity), pcm)
    assert b"RIFF" not in vault.path_of(rid).read_bytes()  # no plaintext audio on the card
    [info] = vault.list()
    assert (info.id, info.duration, info.wake_word, info.score, info.command) == (rid, 1.25, "alexa", 0.77,
                                                                                 "delete_last")
    assert info.size == vault.path_of(rid).stat().st_size
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(vault.path_of(rid).read_bytes(), [x25519.Identity.generate()])


def test_files_are_private_and_no_secret_key_is_kept(vault: Vault) -> None:
    _store(vault)
    for path in vault.dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {oct(mode)}"
    assert stat.S_IMODE(vault.dir.stat().st_mode) == 0o700
    assert _files_holding(vault.dir, [b"AGE-SECRET-KEY"]) == []


def test_every_registered_owner_can_decrypt(vault: Vault, identity: x25519.Identity) -> None:
    second = x25519.Identity.generate()
    assert vault.add_recipient(str(second.to_public()))
    assert not vault.add_recipient(str(second.to_public()))
    rid = _store(vault)
    assert np.array_equal(_decrypt_samples(vault, rid, identity), _decrypt_samples(vault, rid, second))


def test_store_rejects_audio_in_the_wrong_format(vault: Vault) -> None:
    with pytest.raises(VaultError, match="16 kHz mono int16"):
        vault.store(np.zeros((100, 2), np.int16), started_at=NOW, wake_word="w", score=1.0, command=None)
    with pytest.raises(VaultError, match="int16"):
        vault.store(np.zeros(100, np.float32), started_at=NOW, wake_word="w", score=1.0, command=None)
    assert vault.count() == 0 and list(vault.recordings_dir.iterdir()) == []


def test_delete_last_and_today_follow_the_local_calendar_day(vault: Vault) -> None:
    midnight = datetime.fromtimestamp(NOW).replace(hour=0, minute=0)
    yesterday = _store(vault, (midnight - timedelta(minutes=1)).timestamp(), seed=1)
    early = _store(vault, (midnight + timedelta(minutes=1)).timestamp(), seed=2)
    late = _store(vault, NOW - 60, seed=3)
    assert vault.delete_last("voice") == 1
    assert [r.id for r in vault.list()] == [yesterday, early]
    assert not vault.path_of(late).exists()
    assert vault.delete_today("voice") == 1
    assert [r.id for r in vault.list()] == [yesterday]
    assert vault.delete_today("voice") == 0
    assert vault.delete(yesterday, "cli") and not vault.delete(yesterday, "cli")
    assert vault.count() == 0


def test_retention_deletes_only_what_is_older(state_dir: Path, identity: x25519.Identity) -> None:
    with Vault(state_dir, VaultSettings(retention_days=2), clock=lambda: NOW) as vault:
        vault.add_recipient(str(identity.to_public()))
        old, recent = _store(vault, NOW - 3 * 86400, 1), _store(vault, NOW - 86400, 2)
        assert vault.enforce_retention() == 1
        assert [r.id for r in vault.list()] == [recent]
        assert not vault.path_of(old).exists()
    with Vault(state_dir, VaultSettings(retention_days=0), clock=lambda: NOW) as vault:
        assert vault.why_not_recording() == KEEPS_NOTHING
        with pytest.raises(VaultError, match="retention_days is 0"):
            _store(vault)
        assert vault.enforce_retention() == 1 and vault.count() == 0


def test_a_deleted_recording_leaves_no_trace_while_the_vault_stays_open(vault: Vault) -> None:
    kept = [_store(vault, seed=i) for i in range(5)]
    victim = kept.pop(2)
    victim_hash = next(r.sha256 for r in vault.list() if r.id == victim)
    assert vault.delete(victim, "cli")
    assert _files_holding(vault.dir.parent, [victim.encode(), victim_hash.encode()]) == []
    assert all(_files_holding(vault.dir, [rid.encode()]) for rid in kept)  # the search itself works


def test_forget_all_from_the_cli_while_the_daemon_runs_leaves_no_trace(vault: Vault) -> None:
    ids = [_store(vault, seed=i) for i in range(8)]
    needles = [rid.encode() for rid in ids] + [r.sha256.encode() for r in vault.list()]
    (vault.quarantine_dir / f"{'f' * 24}.wav.age").write_bytes(b"orphan")
    state_dir = vault.dir.parent
    # The daemon's vault stays open (its WAL and -shm exist) while another process forgets everything.
    cli = _cli("recordings", "forget", "--all", "--state-dir", str(state_dir))
    assert cli.returncode == 0, cli.stderr
    assert "deleted 8 recording(s)" in cli.stdout
    assert vault.count() == 0 and list(vault.quarantine_dir.iterdir()) == []
    assert _files_holding(state_dir, needles) == []
    _store(vault, seed=99)  # the daemon keeps working afterwards
    assert vault.count() == 1
    vault.audit_log.verify()


def test_cli_deletes_while_the_daemon_keeps_storing(vault: Vault) -> None:
    stop, stored, errors = threading.Event(), [], []

    def daemon_writer() -> None:
        while not stop.is_set():
            try:
                stored.append(_store(vault, seed=len(stored)))
            except Exception as exc:  # surfaced below: the writer thread must never die
                errors.append(exc)
                return

    writer = threading.Thread(target=daemon_writer)
    writer.start()
    try:
        results = [_cli("recordings", "forget", "--all", "--state-dir", str(vault.dir.parent)) for _ in range(3)]
    finally:
        stop.set()
        writer.join()
    assert errors == [] and all(r.returncode == 0 for r in results), [r.stderr for r in results]
    deleted = sum(int(r.stdout.split()[1]) for r in results)
    assert deleted and vault.count() == len(stored) - deleted
    assert vault.reconcile().clean  # every row has its file and every file its row
    vault.audit_log.verify()


def test_reconcile_reports_and_repairs_without_dropping_anything(vault: Vault) -> None:
    kept, lost, half_deleted = _store(vault, seed=1), _store(vault, seed=2), _store(vault, seed=3)
    partial = vault.recordings_dir / f".{'a' * 24}.wav.age.tmp"
    partial.write_bytes(b"half a recording")
    orphan = vault.recordings_dir / f"{'b' * 24}.wav.age"
    orphan.write_bytes(b"written, then the power went before the index row")
    vault.path_of(lost).unlink()
    with sqlite3.connect(vault.dir / "index.sqlite3") as db:  # a crash right after a deletion was marked
        db.execute("UPDATE recordings SET deleting = 1 WHERE id = ?", (half_deleted,))
    report = vault.reconcile()
    assert report.temp_removed == [partial.name] and not partial.exists()
    assert report.quarantined == [orphan.name] and (vault.quarantine_dir / orphan.name).exists()
    assert report.missing == [lost]
    assert report.deletions_finished == 1 and not vault.path_of(half_deleted).exists()
    assert [r.id for r in vault.list()] == [kept, lost]  # the missing one stays listed, so the owner sees it
    kinds = [line.split(b'"kind":"')[1].split(b'"')[0] for line in vault.audit_log.read().splitlines()]
    assert {b"deletion_resumed", b"orphans_quarantined", b"recording_missing"} <= set(kinds)
    assert vault.reconcile().quarantined == []  # nothing more to do, and the quarantined file is kept


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, check=False).returncode == 0


def test_full_disk_keeps_nothing_partial_and_the_vault_keeps_working(tmp_path: Path, identity: x25519.Identity,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    small = tmp_path / "small"
    mounted = _mount_tmpfs(small, "400k")
    budget = [3]

    def writer_that_fills_up(path: Path, data: bytes) -> None:
        """Without root (no tmpfs), a seam: the disk "fills" after three recordings."""
        from voxkeep.durable import atomic_write

        if budget[0] == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        budget[0] -= 1
        atomic_write(path, data)

    try:
        kwargs = {} if mounted else {"write": writer_that_fills_up}
        with Vault(small / "state", VaultSettings(), **kwargs) as vault:
            vault.add_recipient(str(identity.to_public()))
            stored = []
            with pytest.raises(VaultError, match="disk full") as failure:
                for i in range(100):
                    stored.append(vault.store(_pcm(2.0, seed=i), started_at=NOW + i, wake_word="w", score=1.0,
                                              command=None))
            assert "no partial file" in str(failure.value)
            assert any("disk full" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
            assert stored, "nothing fitted at all; the test proves nothing"
            assert sorted(p.name for p in vault.recordings_dir.iterdir()) == sorted(f"{r}.wav.age" for r in stored)
            assert [r.id for r in vault.list()] == stored
            assert vault.reconcile().clean
            budget[0] = 1
            assert vault.delete(stored[0], "cli")
            stored.append(_store(vault, seed=7))  # space freed: recording works again
            assert vault.count() == len(stored) - 1
            vault.audit_log.verify()
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=True)


def test_consent_ledger_starts_empty_and_follows_the_latest_change(vault: Vault) -> None:
    assert vault.active_consents() == []
    vault.consent("mqtt", "grant", "owner")
    vault.consent("http", "grant", "owner")
    vault.consent("mqtt", "revoke", "voice")
    assert vault.active_consents() == ["http"]
    assert [(c["sink"], c["action"], c["by"]) for c in vault.consent_history()] == [
        ("mqtt", "grant", "owner"), ("http", "grant", "owner"), ("mqtt", "revoke", "voice")]
    assert vault.status()["consents"] == ["http"]


def test_forwarding_is_recorded_on_the_recording_and_audited(vault: Vault) -> None:
    rid = _store(vault)
    assert vault.mark_forwarded(rid, "mqtt", 1234)
    assert vault.list()[0].forwarded_to == ("mqtt",)
    assert vault.delete(rid, "cli")
    assert not vault.mark_forwarded(rid, "mqtt", 1)
    assert b'"kind":"forwarded"' in vault.audit_log.read() and rid.encode() not in vault.audit_log.read()


# --- symbolic links are never followed (issue 14, item 8) ----------------------------------------------------

def test_a_planted_symlink_is_removed_unread_and_never_exported(vault: Vault, state_dir: Path,
                                                                tmp_path: Path) -> None:
    import zipfile

    from voxkeep.export import export_bundle

    secret = tmp_path / "hostname"
    secret.write_bytes(b"the-neighbours-secret\n")
    rid = _store(vault)
    (vault.recordings_dir / "planted.wav.age").symlink_to(secret)
    (vault.quarantine_dir / "q.wav.age").symlink_to(secret)
    os.mkfifo(vault.recordings_dir / "fifo.wav.age")  # would hang any reader that opened it
    report = vault.reconcile()
    assert sorted(report.links_removed) == ["planted.wav.age", "q.wav.age"] and report.not_files == ["fifo.wav.age"]
    assert "symbolic links removed unread" in report.summary() and report.quarantined == []
    assert not any(p.is_symlink() for d in (vault.recordings_dir, vault.quarantine_dir) for p in d.iterdir())
    # An indexed recording whose file was swapped for a link: reported missing, its "file" never bundled.
    vault.path_of(rid).unlink()
    vault.path_of(rid).symlink_to(secret)
    out = tmp_path / "export.zip"
    export_bundle(vault, out, state_dir)
    with zipfile.ZipFile(out) as z:
        assert all(b"the-neighbours-secret" not in z.read(n) for n in z.namelist())
        assert json_of(z.read("manifest.json"))["missing_files"] == [rid]
    assert secret.read_bytes() == b"the-neighbours-secret\n"


def json_of(data: bytes):
    import json

    return json.loads(data)


def test_a_link_planted_as_a_temp_file_is_never_written_through(vault: Vault, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")
    (vault.dir / ".recipients.txt.tmp").symlink_to(victim)
    (vault.dir / ".audit.head.tmp").symlink_to(victim)
    assert vault.add_recipient(generate_identity()[1])
    assert victim.read_bytes() == b"keep me\n" and len(vault.recipients()) == 2


class _Killed(BaseException):
    """Stands in for a SIGKILL at one exact point (the SIGKILL trials in test_vault_crash.py hit them at random)."""


def _kinds(vault: Vault) -> list[str]:
    return [json.loads(line)["kind"] for line in vault.audit_log.read().splitlines()]


def test_a_change_killed_before_its_audit_entry_is_audited_at_the_next_start(
        state_dir: Path, identity: x25519.Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    with Vault(state_dir, VaultSettings(), clock=lambda: NOW) as v:
        v.add_recipient(str(identity.to_public()))
        keep = _store(v)

        def killed(*_: object) -> None:
            raise _Killed

        monkeypatch.setattr(v.audit_log, "append_pending", killed)  # committed, then killed before the append
        for change in (lambda: v.consent("http", "grant", "cli"), lambda: _store(v, seed=1),
                       lambda: v.mark_forwarded(keep, "http", 10), lambda: v.delete(keep, "cli")):
            with pytest.raises(_Killed):
                change()
        monkeypatch.undo()
    with Vault(state_dir, VaultSettings(), clock=lambda: NOW) as v:
        assert v.reconcile().audit_appended == 4
        assert _kinds(v)[-5:] == ["consent_grant", "recording_stored", "forwarded", "recordings_deleted",
                                  "deletion_resumed"]
        assert v.reconcile().clean  # appended once, not again
        v.audit_log.verify()


def test_an_entry_appended_just_before_a_kill_is_not_appended_twice(
        state_dir: Path, identity: x25519.Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    with Vault(state_dir, VaultSettings(), clock=lambda: NOW) as v:
        v.add_recipient(str(identity.to_public()))
        real = v.audit_log.append_pending

        def appended_then_killed(pending: list) -> str:
            real(pending)
            raise _Killed  # before the transaction that takes the entries off the outbox commits

        monkeypatch.setattr(v.audit_log, "append_pending", appended_then_killed)
        with pytest.raises(_Killed):
            v.consent("http", "grant", "cli")
        monkeypatch.undo()
        assert v._query("SELECT count(*) FROM audit_outbox")[0][0] == 1  # still queued, though in the log
    with Vault(state_dir, VaultSettings(), clock=lambda: NOW) as v:
        assert v.reconcile().audit_appended == 1  # dequeued, and found already in the log
        v.consent("http", "revoke", "cli")
        assert [k for k in _kinds(v) if k.startswith("consent_")] == ["consent_grant", "consent_revoke"]
        assert v._query("SELECT count(*) FROM audit_outbox")[0][0] == 0
        v.audit_log.verify()
