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
    ctx = multiprocessing.get_context("fork")
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
