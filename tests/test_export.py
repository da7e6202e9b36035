"""Export bundles: two households on two vaults, planted files, the age CLI, and one-line CLI errors."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from voxkeep.cli import main
from voxkeep.config import VaultSettings
from voxkeep.errors import VaultError
from voxkeep.export import verify_bundle
from voxkeep.owner import read_identities
from voxkeep.vault import Vault


@dataclass
class Household:
    state: Path
    key: Path
    ids: list[str]
    pcm: list[np.ndarray]
    recipient: str


def _household(root: Path, name: str, count: int) -> Household:
    """A vault whose owner ran ``voxkeep owner init --identity-out`` and then spoke ``count`` times."""
    state, key = root / name / "state", root / name / "owner.key"
    key.parent.mkdir(parents=True)
    assert main(["owner", "init", "--identity-out", str(key), "--state-dir", str(state)]) == 0
    rng = np.random.default_rng(len(name) * 100 + count)
    pcm = [rng.integers(-9000, 9000, 4000 + 800 * i, dtype=np.int16) for i in range(count)]
    with Vault(state, VaultSettings()) as vault:
        ids = [vault.store(p, started_at=1.7e9 + i, wake_word="alexa", score=0.8, command=None)
               for i, p in enumerate(pcm)]
        vault.mark_forwarded(ids[0], "wyoming", 4242)
        vault.consent("wyoming", "grant", "owner")
        recipient = vault.recipients()[0]
    return Household(state, key, ids, pcm, recipient)


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Household, Household, Path]:
    """Households A (3 recordings) and B (2), and A's export."""
    a, b = _household(tmp_path, "a", 3), _household(tmp_path, "b", 2)
    bundle = tmp_path / "a-export.zip"
    assert main(["export", "--out", str(bundle), "--state-dir", str(a.state)]) == 0
    return a, b, bundle


def _rewrite(bundle: Path, out: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None,
             manifest_edit=None) -> Path:
    """A copy of ``bundle`` with members replaced or added (what a mix-up or an attacker would do)."""
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = (replace or {}).get(name, src.read(name))
            if name == "manifest.json" and manifest_edit:
                manifest = json.loads(data)
                manifest_edit(manifest)
                data = json.dumps(manifest).encode()
            dst.writestr(name, data)
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return out


def test_an_export_holds_everything_of_its_owner_and_verifies(homes) -> None:
    a, _, bundle = homes
    report = verify_bundle(bundle, read_identities(a.key))
    assert (report.recordings, report.recipient) == (3, a.recipient)
    with zipfile.ZipFile(bundle) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert sorted(z.namelist()) == sorted(["manifest.json", "audit.jsonl", "consents.json",
                                               *(f"recordings/{rid}.wav.age" for rid in a.ids)])
        assert json.loads(z.read("consents.json"))[0]["sink"] == "wyoming"
    assert manifest["schema_version"] == 2 and manifest["owner_recipients"] == [a.recipient]
    assert manifest["forward_destinations"] == [{"sink": "wyoming", "transfers": 1, "bytes": 4242}]
    assert manifest["retention"]["retention_days"] == 30 and manifest["data_kept"]
    assert [r["id"] for r in manifest["recordings"]] == a.ids
    assert [r["duration"] for r in manifest["recordings"]] == [len(p) / 16000 for p in a.pcm]
    assert b'"kind":"exported"' in zipfile.ZipFile(bundle).read("audit.jsonl")


def test_an_export_holds_nothing_of_the_other_household(homes) -> None:
    _, b, bundle = homes
    raw = bundle.read_bytes()
    with zipfile.ZipFile(bundle) as z:
        contents = raw + b"".join(z.read(n) for n in z.namelist())
    for needle in [b.recipient, *b.ids]:
        assert needle.encode() not in contents
    with pytest.raises(VaultError, match="not an owner recipient"):
        verify_bundle(bundle, read_identities(b.key))


def test_a_foreign_recording_planted_in_a_bundle_fails_verification(homes, tmp_path: Path) -> None:
    a, b, bundle = homes
    foreign = (b.state / "vault" / "recordings" / f"{b.ids[0]}.wav.age").read_bytes()
    mine = f"recordings/{a.ids[1]}.wav.age"
    planted = _rewrite(bundle, tmp_path / "planted.zip", add={f"recordings/{b.ids[0]}.wav.age": foreign})
    with pytest.raises(VaultError, match="does not list"):
        verify_bundle(planted, read_identities(a.key))
    swapped = _rewrite(bundle, tmp_path / "swapped.zip", replace={mine: foreign})
    with pytest.raises(VaultError, match="SHA-256"):
        verify_bundle(swapped, read_identities(a.key))

    def list_foreign_hash(manifest: dict) -> None:  # the forger also fixes the manifest's size and hash
        entry = next(r for r in manifest["recordings"] if r["file"] == mine)
        entry.update(size=len(foreign), sha256=hashlib.sha256(foreign).hexdigest())

    forged = _rewrite(bundle, tmp_path / "forged.zip", replace={mine: foreign}, manifest_edit=list_foreign_hash)
    with pytest.raises(VaultError, match="not encrypted to you"):
        verify_bundle(forged, read_identities(a.key))


def test_an_edited_audit_log_in_a_bundle_fails_verification(homes, tmp_path: Path) -> None:
    a, _, bundle = homes
    with zipfile.ZipFile(bundle) as z:
        audit = z.read("audit.jsonl")
    edited = _rewrite(bundle, tmp_path / "edited.zip", replace={"audit.jsonl": audit.replace(b"wyoming", b"nowhere")})
    with pytest.raises(VaultError, match=r"audit\.jsonl"):
        verify_bundle(edited, read_identities(a.key))


def test_the_age_cli_alone_decrypts_a_recording_from_the_bundle(homes, tmp_path: Path) -> None:
    assert shutil.which("age"), "the age command-line tool is missing: apt-get install age"
    a, _, bundle = homes
    member = tmp_path / "one.wav.age"
    with zipfile.ZipFile(bundle) as z:
        member.write_bytes(z.read(f"recordings/{a.ids[2]}.wav.age"))
    wav = subprocess.run(["age", "--decrypt", "--identity", str(a.key), str(member)], capture_output=True,
                         check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2"), a.pcm[2])


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("voxkeep: error: "), err
    return err


def test_cli_errors_are_one_clear_line(homes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, bundle = homes
    assert "does not exist" in _one_line_error(capsys, ["verify-export", str(tmp_path / "nope.zip"),
                                                        "--identity", str(a.key)])
    assert "not yours" in _one_line_error(capsys, ["verify-export", str(bundle), "--identity", str(b.key)])
    assert "identity file" in _one_line_error(capsys, ["verify-export", str(bundle), "--identity",
                                                       str(tmp_path / "missing.key")])
    not_a_key = tmp_path / "not-a-key.txt"
    not_a_key.write_text("hello\n")
    assert "not an age secret key" in _one_line_error(capsys, ["verify-export", str(bundle), "--identity",
                                                               str(not_a_key)])
    assert "not a voxkeep export" in _one_line_error(capsys, ["verify-export", str(a.key), "--identity", str(a.key)])
    assert "already exists" in _one_line_error(capsys, ["export", "--out", str(bundle), "--state-dir", str(a.state)])
    assert "inside the state directory" in _one_line_error(
        capsys, ["export", "--out", str(a.state / "x.zip"), "--state-dir", str(a.state)])
    with pytest.raises(SystemExit) as usage:
        main(["verify-export", str(bundle)])  # --identity missing: argparse's usage error
    assert usage.value.code == 2
    capsys.readouterr()
    assert main(["verify-export", str(bundle), "--identity", str(a.key)]) == 0
    assert "3 recording(s)" in capsys.readouterr().out


# --- foreign and hostile content (issue 14, item 5) ---------------------------------------------------------

def _plant(bundle: Path, out: Path, name: str, data: bytes, section: str, **entry) -> Path:
    """Add ``name`` to a copy of the bundle and list it in the manifest as a forger would (hash and all)."""
    def edit(manifest: dict) -> None:
        described = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **entry}
        if section == "files":
            manifest["files"][name] = described
        else:
            manifest[section].append({"file": name, **described})

    return _rewrite(bundle, out, add={name: data}, manifest_edit=edit)


def test_foreign_content_listed_in_the_manifest_fails_verification(homes, tmp_path: Path) -> None:
    a, b, bundle = homes
    identity = read_identities(a.key)
    stranger = io.BytesIO()
    with wave.open(stranger, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0\1" * 1600)
    foreign = (b.state / "vault" / "recordings" / f"{b.ids[0]}.wav.age").read_bytes()
    cases = [
        ("recordings/stranger.wav", stranger.getvalue(), "files", {"kind": "audit_log"}, "no file an export holds"),
        ("recordings/stranger.wav", stranger.getvalue(), "files", {}, "no file an export holds"),
        ("quarantine/x.bin", foreign, "quarantined", {"kind": "quarantined_recording"}, "not encrypted to you"),
        ("quarantine/x.wav", stranger.getvalue(), "quarantined", {"kind": "quarantined_recording"},
         "not encrypted to you"),
        ("quarantine/x.bin", foreign, "quarantined", {"kind": "consent_history"}, "must be a quarantined"),
        ("recordings/stranger.wav", stranger.getvalue(), "recordings", {"kind": "recording", "id": "stranger",
                                                                        "duration": 0.1}, "id and file"),
    ]
    for i, (name, data, section, entry, message) in enumerate(cases):
        planted = _plant(bundle, tmp_path / f"planted{i}.zip", name, data, section, **entry)
        with pytest.raises(VaultError, match=message):
            verify_bundle(planted, identity)


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "..\\x", "recordings/../../x", "C:/x", "a//b", "./x"])
def test_unsafe_member_names_fail_the_bundle(homes, tmp_path: Path, name: str) -> None:
    a, _, bundle = homes
    planted = _plant(bundle, tmp_path / "unsafe.zip", name, b"x", "files", kind="audit_log")
    with pytest.raises(VaultError, match="outside its folder"):
        verify_bundle(planted, read_identities(a.key))


def test_a_symlink_member_fails_the_bundle(homes, tmp_path: Path) -> None:
    a, _, bundle = homes
    out = tmp_path / "link.zip"
    shutil.copy(bundle, out)
    with zipfile.ZipFile(out, "a") as z:
        info = zipfile.ZipInfo("recordings/link")
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/hostname")
    with pytest.raises(VaultError, match="symbolic link"):
        verify_bundle(out, read_identities(a.key))


def _central(path: Path, name: str, offset: int, fmt: str, value: int) -> Path:
    """Overwrite one field of ``name``'s central-directory entry (what a crafted zip changes)."""
    import struct

    raw = bytearray(path.read_bytes())
    pos = raw.find(b"PK\x01\x02")
    while pos >= 0:
        length = struct.unpack_from("<H", raw, pos + 28)[0]
        if raw[pos + 46:pos + 46 + length] == name.encode():
            struct.pack_into(fmt, raw, pos + offset, value)
            path.write_bytes(bytes(raw))
            return path
        pos = raw.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{name} not in {path}")


def test_a_zip_bomb_is_refused_from_its_directory_before_reading(homes, tmp_path: Path) -> None:
    a, _, bundle = homes
    bomb = tmp_path / "bomb.zip"
    shutil.copy(bundle, bomb)
    with zipfile.ZipFile(bomb, "a", zipfile.ZIP_DEFLATED) as z, z.open("audit.jsonl.bomb", "w") as fh:
        block = b"\0" * (1 << 20)
        for _ in range(300):  # 300 MB of zeros, about 300 kB deflated
            fh.write(block)
    assert bomb.stat().st_size < 2 * 1024 * 1024
    with pytest.raises(VaultError, match="zip bomb"):
        verify_bundle(bomb, read_identities(a.key))
    # A member that lies about its size unpacks no further than it says, and then fails its CRC.
    liar = tmp_path / "liar.zip"
    _rewrite(bundle, liar)
    member = f"recordings/{a.ids[0]}.wav.age"
    _central(liar, member, 24, "<I", 100)
    with pytest.raises(VaultError, match=r"cannot be read|does not match"):
        verify_bundle(liar, read_identities(a.key))


def test_crafted_zips_are_one_clear_line(homes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _, bundle = homes
    member = f"recordings/{a.ids[0]}.wav.age"
    crafted: dict[str, tuple[Path, str]] = {}
    bad_crc = tmp_path / "crc.zip"
    raw = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as z:
        info = z.getinfo(member)
    raw[info.header_offset + 30 + len(member) + 200] ^= 0xFF  # a byte of the member's data
    bad_crc.write_bytes(bytes(raw))
    crafted["crc"] = (bad_crc, "cannot be read")
    for label, offset, fmt, value, words in [("encrypted", 8, "<H", 1, "password-encrypted"),
                                             ("method99", 10, "<H", 99, "compression method 99")]:
        path = tmp_path / f"{label}.zip"
        shutil.copy(bundle, path)
        crafted[label] = (_central(path, member, offset, fmt, value), words)
    edits = {
        "not_object": lambda m: m.clear() or m.update({"x": 1}),
        "recordings_str": lambda m: m.update(recordings="x"),
        "files_list": lambda m: m.update(files=[]),
        "recipients_int": lambda m: m.update(owner_recipients=5),
        "size_str": lambda m: m["recordings"][0].update(size="12"),
        "duration_nan": lambda m: m["recordings"][0].update(duration="nan"),
        "kind_missing": lambda m: m["recordings"][0].pop("kind"),
        "entry_list": lambda m: m["recordings"].append([1]),
        "schema_str": lambda m: m.update(schema_version="2"),
        "head_int": lambda m: m.update(audit_head=5),
    }
    for label, edit in edits.items():
        crafted[label] = (_rewrite(bundle, tmp_path / f"{label}.zip", manifest_edit=edit), "")
    deep = tmp_path / "deep.zip"
    crafted["deep"] = (_rewrite(bundle, deep, replace={"manifest.json": b"[" * 100000}), "not valid JSON")
    for label, (path, words) in crafted.items():
        err = _one_line_error(capsys, ["verify-export", str(path), "--identity", str(a.key)])
        assert words in err, (label, err)


def test_without_unnamed_files_a_partial_export_left_by_a_crash_goes_at_the_next_export(
        homes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the destination cannot hold O_TMPFILE files (a FAT stick), the bundle has a temporary name."""
    a, _, _ = homes
    out_dir = tmp_path / "stick"
    out_dir.mkdir()
    crashed = out_dir / ".voxkeep-export-0123456789abcdef.tmp"  # what a kill mid-export leaves there
    crashed.write_bytes(b"PK\x03\x04 partial ciphertext")
    elsewhere = tmp_path / "not-ours.tmp"
    elsewhere.write_bytes(b"keep me")
    (out_dir / ".voxkeep-export-link.tmp").symlink_to(elsewhere)  # never followed, never removed through
    (out_dir / "notes.tmp").write_bytes(b"the owner's")
    monkeypatch.delattr("os.O_TMPFILE")  # the open then fails as on a kernel or filesystem without it
    assert main(["export", "--out", str(out_dir / "again.zip"), "--state-dir", str(a.state)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [".voxkeep-export-link.tmp", "again.zip", "notes.tmp"]
    assert elsewhere.read_bytes() == b"keep me"
    assert verify_bundle(out_dir / "again.zip", read_identities(a.key)).recordings == 3
    assert (out_dir / "again.zip").stat().st_mode & 0o777 == 0o600
