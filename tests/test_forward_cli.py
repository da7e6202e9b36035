"""``voxkeep consent``: the owner's ledger as they use it, and who may change it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli
from voxkeep.cli import main
from voxkeep.config import VaultSettings
from voxkeep.mqtt import CommandRejected, parse_command
from voxkeep.vault import Vault


def consent(capsys: pytest.CaptureFixture[str], state_dir: Path, *args: str) -> tuple[int, str]:
    code = main(["consent", *args, "--state-dir", str(state_dir)])
    return code, capsys.readouterr().out


def audit_kinds(state_dir: Path) -> list[tuple[str, str, str]]:
    with Vault(state_dir, VaultSettings()) as vault:
        entries = [json.loads(line) for line in vault.audit_log.read().splitlines()]
    return [(e["kind"], e.get("sink", ""), e.get("by", "")) for e in entries]


def test_nothing_is_consented_by_default(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    code, out = consent(capsys, state_dir, "list")
    assert code == 0 and "none (nothing leaves this device)" in out


def test_grant_list_revoke_are_recorded_with_time_and_who(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    assert consent(capsys, state_dir, "grant", "wyoming")[0] == 0
    code, out = consent(capsys, state_dir, "grant", "http")
    assert code == 0 and "'forward.http_url' is not set" in out  # says why nothing will be sent yet
    code, out = consent(capsys, state_dir, "list", "--json")
    listed = json.loads(out)
    assert listed["active"] == ["http", "wyoming"]
    assert [(h["sink"], h["action"], h["by"]) for h in listed["history"]] == [("wyoming", "grant", "cli"),
                                                                               ("http", "grant", "cli")]
    assert all(h["at"] > 1.6e9 for h in listed["history"])

    code, out = consent(capsys, state_dir, "grant", "http")
    assert "already granted" in out
    code, out = consent(capsys, state_dir, "revoke", "http")
    assert code == 0 and "revoked for http" in out
    code, out = consent(capsys, state_dir, "revoke", "http")
    assert "nothing changed" in out
    code, out = consent(capsys, state_dir, "revoke", "--all")
    assert "revoked for wyoming" in out
    code, out = consent(capsys, state_dir, "list")
    assert "none" in out.splitlines()[0] and len(out.splitlines()) == 5  # the header and four real changes
    assert [k for k in audit_kinds(state_dir) if k[0].startswith("consent_")] == [
        ("consent_grant", "wyoming", "cli"), ("consent_grant", "http", "cli"),
        ("consent_revoke", "http", "cli"), ("consent_revoke", "wyoming", "cli")]


def test_an_unknown_sink_is_refused_with_the_choices(state_dir: Path) -> None:
    proc = run_cli("consent", "grant", "dropbox", "--state-dir", str(state_dir))
    assert proc.returncode == 2
    assert "invalid choice: 'dropbox' (choose from 'mqtt', 'http', 'wyoming', 'satellite')" in proc.stderr.decode()
    with Vault(state_dir, VaultSettings()) as vault:
        assert vault.consent_history() == []


@pytest.mark.parametrize("payload", [b'{"consent": "http"}', b'{"forward": true}', b'{"consent_grant": "mqtt"}'])
def test_mqtt_can_never_grant(payload: bytes) -> None:
    with pytest.raises(CommandRejected) as info:
        parse_command(payload)
    assert info.value.code == "consent_refused"
