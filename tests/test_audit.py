"""The hash-chained audit log: tampering of every kind is detected, concurrent writers keep the chain."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from voxkeep.audit import AuditLog
from voxkeep.cli import main
from voxkeep.errors import VaultError


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path, clock=lambda: 1700000000.0)
    for i in range(6):
        audit.append("state", mode=f"mode{i}", cause="test")
    return audit


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def test_an_untouched_chain_verifies(log: AuditLog) -> None:
    report = log.verify()
    assert report.entries == 6
    assert report.head == json.loads(_lines(log)[-1])["hash"] == log.head()["hash"]


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda ls: [ls[0], ls[1].replace(b"mode1", b"mode9"), *ls[2:]], "edited"),
    (lambda ls: ls[:2] + ls[3:], "removed"),
    (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "reordered"),
    (lambda ls: ls[:-1], "cut off"),
    (lambda ls: [], "cut off"),
    (lambda ls: [*ls[:-1], ls[-1][:-1]], "incomplete"),
    (lambda ls: [b"{not json\n", *ls[1:]], "not JSON"),
])
def test_tampering_is_detected(log: AuditLog, tamper, message: str) -> None:
    log.path.write_bytes(b"".join(tamper(_lines(log))))
    with pytest.raises(VaultError, match=message):
        log.verify()


def test_rewriting_the_whole_chain_is_caught_by_a_head_noted_earlier(log: AuditLog, tmp_path: Path) -> None:
    noted = log.verify().head
    (tmp_path / "forged").mkdir()
    forged = AuditLog(tmp_path / "forged")
    for i in range(6):
        forged.append("state", mode=f"other{i}", cause="test")
    log.path.write_bytes(forged.path.read_bytes())
    log.head_path.write_bytes(forged.head_path.read_bytes())
    log.verify()  # self-consistent forgery: only the owner's noted head can tell
    with pytest.raises(VaultError, match="head"):
        log.verify(expected_head=noted)


def test_a_torn_last_line_is_repaired_by_the_next_append(log: AuditLog) -> None:
    with open(log.path, "ab") as fh:
        fh.write(b'{"seq":7,"half an entry')
    with pytest.raises(VaultError, match="incomplete"):
        log.verify()
    log.append("daemon_started")
    assert log.verify().entries == 7


def test_fields_cannot_overwrite_the_chain(log: AuditLog) -> None:
    with pytest.raises(ValueError, match="prev"):
        log.append("state", prev="0" * 64)


def _append_many(directory: str, tag: str) -> None:
    audit = AuditLog(Path(directory))
    for i in range(60):
        audit.append("concurrent", writer=tag, n=i)


def test_two_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("forkserver")  # not fork: pytest has threads by now (Python 3.13 warns)
    writers = [ctx.Process(target=_append_many, args=(str(tmp_path), tag)) for tag in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
        assert w.exitcode == 0
    audit = AuditLog(tmp_path)
    assert audit.verify().entries == 120
    entries = [json.loads(line) for line in audit.read().splitlines()]
    assert sorted((e["writer"], e["n"]) for e in entries) == sorted((t, i) for t in "ab" for i in range(60))


def test_cli_audit_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert main(["owner", "add", "age1ft2npjjrvpq90hgh7guxzsr98mf8wvju8r727nu3n66ynh2lcvjsamaqld",
                 "--state-dir", str(state)]) == 0
    assert main(["audit", "verify", "--state-dir", str(state)]) == 0
    head = capsys.readouterr().out.split("head ")[1].strip()
    assert main(["audit", "verify", "--head", head, "--state-dir", str(state)]) == 0
    log_path = state / "vault" / "audit.jsonl"
    log_path.write_bytes(log_path.read_bytes().replace(b"owner_recipient_added", b"owner_recipient_removed"))
    capsys.readouterr()
    assert main(["audit", "verify", "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 1" in err and "edited" in err


# --- a damaged log is never extended (issue 14, item 7) ------------------------------------------------------

def test_two_crashes_each_before_the_head_was_saved_leave_a_sound_log(log: AuditLog,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill between writing an entry and saving its head, twice in a row, left the log two entries past
    its head; the next append called that damage and set the whole log aside (found by test_vault_crash)."""
    import voxkeep.audit as audit

    real = audit.atomic_write

    def killed(path: Path, data: bytes) -> None:
        if path == log.head_path:
            raise KeyboardInterrupt  # the process dies here: the entry is on disk, its head is not
        real(path, data)

    monkeypatch.setattr(audit, "atomic_write", killed)
    for _ in range(2):  # killed, restarted, killed again at the same step
        with pytest.raises(KeyboardInterrupt):
            log.append("state", mode="muted", cause="button")
    monkeypatch.setattr(audit, "atomic_write", real)
    log.append("state", mode="listening", cause="button")
    assert log.verify().entries >= 8  # 6, the first killed entry, the last; nothing lost or set aside
    assert log.set_aside() == []
    assert json.loads(_lines(log)[-1])["mode"] == "listening"


def test_a_log_cut_off_at_the_end_is_not_extended_and_stays_reported(log: AuditLog) -> None:
    lines = _lines(log)
    log.path.write_bytes(b"".join(lines[:-2]))
    log.append("exported", recordings=0)  # used to chain onto the cut log, which then verified OK
    with pytest.raises(VaultError, match="set aside as") as err:
        log.verify()
    assert "cut off" in str(err.value) and "the 2 entries since are intact" in str(err.value)
    (aside,) = log.set_aside()
    assert aside.read_bytes() == b"".join(lines[:-2])  # kept exactly as found
    first, second = (json.loads(x) for x in _lines(log))
    assert first["kind"] == "audit_restarted" and first["set_aside"] == aside.name
    assert first["previous_head"] == {"seq": 6, "hash": json.loads(lines[-1])["hash"]}
    assert second["kind"] == "exported" and second["seq"] == 2
    aside.unlink()  # the owner has looked at it
    assert log.verify().entries == 2


@pytest.mark.parametrize("garbage", [b"garbage\n", b"[" * 5000 + b"\n", b'{"seq": 7}\n', b"\xff\xfe\n"])
def test_a_garbage_last_line_does_not_stop_auditing(tmp_path: Path, garbage: bytes) -> None:
    from voxkeep.config import VaultSettings
    from voxkeep.owner import generate_identity
    from voxkeep.vault import Vault

    with Vault(tmp_path, VaultSettings()) as vault:
        vault.add_recipient(generate_identity()[1])
        with open(vault.audit_log.path, "ab") as fh:
            fh.write(garbage)
        import numpy as np

        told: list[str] = []
        vault.audit_log.on_damage = told.append
        rid = vault.store(np.zeros(1600, np.int16), started_at=0.0, wake_word="alexa", score=0.9, command=None)
        entries = [json.loads(x) for x in vault.audit_log.read().splitlines()]
        assert [e["kind"] for e in entries] == ["audit_restarted", "recording_stored"]
        assert "last line" in entries[0]["problem"] and told and "set aside" in told[0]
        assert [r.id for r in vault.list()] == [rid]


@pytest.mark.parametrize("head", [b"[1]", b"", b"{}", b'{"seq": "1", "hash": "x"}', b"\x00" * 10, b"{" * 5000])
def test_a_damaged_head_is_one_clear_line_and_the_next_entry_restarts_the_chain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], head: bytes) -> None:
    state = tmp_path / "state"
    assert main(["owner", "add", "age1ft2npjjrvpq90hgh7guxzsr98mf8wvju8r727nu3n66ynh2lcvjsamaqld",
                 "--state-dir", str(state)]) == 0
    audit = AuditLog(state / "vault")
    audit.head_path.write_bytes(head)
    capsys.readouterr()
    assert main(["audit", "verify", "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "audit head file" in err and "damaged" in err, err
    audit.append("state", mode="muted", cause="test")
    assert main(["audit", "verify", "--state-dir", str(state)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set aside" in err and "audit head file" in err, err


def test_a_symlink_in_place_of_the_log_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious\n")
    (tmp_path / "vault").mkdir()
    audit = AuditLog(tmp_path / "vault")
    audit.path.symlink_to(target)
    with pytest.raises(VaultError, match="symbolic link"):
        audit.append("state", mode="muted", cause="test")
    with pytest.raises(VaultError, match="symbolic link"):
        audit.verify()
    assert target.read_bytes() == b"precious\n"
