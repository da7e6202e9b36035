"""``voxkeep owner init|add|list``: the secret key goes to the owner, only public keys stay on the device."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from pyrage import x25519

from voxkeep.cli import main
from voxkeep.owner import read_identities, read_recipients


def _device_holds_secret(state: Path) -> bool:
    return any(b"AGE-SECRET-KEY" in p.read_bytes() for p in state.rglob("*") if p.is_file())


def test_init_writes_the_identity_outside_and_registers_only_its_public_key(
        tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "owner.key"
    assert main(["owner", "init", "--identity-out", str(key), "--state-dir", str(state_dir)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    [identity] = read_identities(key)
    assert read_recipients(state_dir / "vault") == [str(identity.to_public())]
    assert not _device_holds_secret(state_dir)
    assert str(identity.to_public()) in capsys.readouterr().out
    assert shutil.which("age-keygen"), "age-keygen is missing: apt-get install age"
    public = subprocess.run(["age-keygen", "-y", str(key)], capture_output=True, text=True, check=True).stdout
    assert public.strip() == str(identity.to_public())  # the file is a standard age identity file


def test_init_without_a_file_prints_the_identity_and_keeps_none(state_dir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["owner", "init", "--state-dir", str(state_dir)]) == 0
    secret = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("AGE-SECRET-KEY-"))
    assert read_recipients(state_dir / "vault") == [str(x25519.Identity.from_str(secret).to_public())]
    assert not _device_holds_secret(state_dir)


@pytest.mark.parametrize(("where", "message"), [
    (lambda tmp, state: state / "owner.key", "inside the state directory"),
    (lambda tmp, state: state / "vault" / ".." / "owner.key", "inside the state directory"),
    (lambda tmp, state: tmp / "no-such-dir" / "owner.key", "does not exist"),
])
def test_init_refuses_bad_identity_paths(tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str],
                                         where, message: str) -> None:
    assert main(["owner", "init", "--identity-out", str(where(tmp_path, state_dir)),
                 "--state-dir", str(state_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert read_recipients(state_dir / "vault") == [] and not _device_holds_secret(state_dir)


def test_init_never_overwrites_a_key_nor_replaces_the_owner(tmp_path: Path, state_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "owner.key"
    key.write_text("precious\n")
    assert main(["owner", "init", "--identity-out", str(key), "--state-dir", str(state_dir)]) == 1
    assert key.read_text() == "precious\n" and "already exists" in capsys.readouterr().err
    assert main(["owner", "init", "--identity-out", str(tmp_path / "k2"), "--state-dir", str(state_dir)]) == 0
    assert main(["owner", "init", "--identity-out", str(tmp_path / "k3"), "--state-dir", str(state_dir)]) == 1
    assert "owner add" in capsys.readouterr().err and not (tmp_path / "k3").exists()


def test_add_and_list_recipients(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["owner", "list", "--state-dir", str(state_dir)]) == 1
    assert "voxkeep owner init" in capsys.readouterr().out
    keys = [str(x25519.Identity.generate().to_public()) for _ in range(2)]
    for k in keys:
        assert main(["owner", "add", k, "--state-dir", str(state_dir)]) == 0
    assert main(["owner", "add", keys[0], "--state-dir", str(state_dir)]) == 0
    assert "already registered" in capsys.readouterr().out
    assert main(["owner", "list", "--state-dir", str(state_dir)]) == 0
    assert capsys.readouterr().out.split() == keys
    assert main(["owner", "add", "age1notakey", "--state-dir", str(state_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an age X25519 recipient" in err
    secret = str(x25519.Identity.generate())
    assert main(["owner", "add", secret, "--state-dir", str(state_dir)]) == 1
    err = capsys.readouterr().err
    assert "SECRET key" in err and secret not in err  # a pasted secret is never echoed
    assert read_recipients(state_dir / "vault") == keys
