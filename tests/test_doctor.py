"""`voxkeep doctor`: models, owner key, broker, disk, clock and service checks, in words a maker reads."""

from __future__ import annotations

import shutil
from pathlib import Path

from broker import USERS, Broker, broker_fixture, pki_fixture  # noqa: F401 (fixtures are used by name)
from tests.helpers import run_cli
from voxkeep import doctor
from voxkeep.config import MqttSettings, VaultSettings
from voxkeep.owner import generate_identity
from voxkeep.vault import Vault


def test_models_missing_or_altered_name_the_fix(tmp_path: Path, models_dir: Path) -> None:
    assert doctor.check_models(models_dir, ["alexa"]).ok
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    (copy / "alexa_v0.1.onnx").write_bytes(b"truncated")
    check = doctor.check_models(copy, ["alexa"])
    assert not check.ok and "alexa_v0.1.onnx" in check.message and "voxkeep models fetch" in check.message


def test_owner_key(state_dir: Path) -> None:
    check = doctor.check_owner(state_dir, VaultSettings())
    assert not check.ok and "voxkeep owner init" in check.message
    with Vault(state_dir, VaultSettings()) as vault:
        vault.add_recipient(generate_identity()[1])
    assert doctor.check_owner(state_dir, VaultSettings()).ok


def test_broker_credentials(broker: Broker, tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text(USERS["voxkeep"])
    good = MqttSettings(host="127.0.0.1", port=broker.port, username="voxkeep", password_file=str(password))
    assert doctor.check_broker(good).ok
    password.write_text("wrong")
    bad = doctor.check_broker(good)
    assert not bad.ok and "voxkeep" in bad.message and str(password) in bad.message
    assert doctor.check_broker(MqttSettings()).ok  # not configured is fine


def test_clock_and_service_read_systemd() -> None:
    assert doctor.check_clock(lambda cmd: "yes\n").ok
    unsynced = doctor.check_clock(lambda cmd: "no\n")
    assert not unsynced.ok and "timedatectl" in unsynced.message
    assert doctor.check_clock(lambda cmd: None).ok  # no systemd: said, not failed

    def systemctl(state: str, enabled: str):
        return lambda cmd: state if cmd[1] == "is-active" else enabled

    assert doctor.check_service(systemctl("active\n", "enabled\n")).ok
    failed = doctor.check_service(systemctl("failed\n", "enabled\n"))
    assert not failed.ok and "journalctl -u voxkeep" in failed.message
    assert doctor.check_service(systemctl("inactive\n", "not-found\n")).ok


def test_disk(state_dir: Path, monkeypatch) -> None:
    assert doctor.check_disk(state_dir).ok
    monkeypatch.setattr(doctor, "MIN_FREE_BYTES", 1 << 60)
    low = doctor.check_disk(state_dir)
    assert not low.ok and "retention" in low.message


def test_cli_lists_every_check_and_fails_when_something_is_wrong(tmp_path: Path, state_dir: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[audio]\ninput = "-"\n')  # no microphone on CI: skip that check
    proc = run_cli("doctor", "--config", str(config), "--state-dir", str(state_dir))
    out = proc.stdout.decode()
    assert proc.returncode == 1
    for name in ("models", "gpio", "speaker", "owner key", "broker", "disk", "clock", "service"):
        assert f"] {name}:" in out
    assert "[FAIL] owner key: no owner key registered; run 'voxkeep owner init'" in out
    assert "Traceback" not in proc.stderr.decode()


def test_a_file_or_stdin_instead_of_a_microphone_is_named(tmp_path: Path, state_dir: Path) -> None:
    """A speaker (or VM) without a sound card runs on a WAV file or stdin: doctor says so, not "no microphone"."""
    import numpy as np
    import soundfile

    wav = tmp_path / "room.wav"
    soundfile.write(wav, (np.random.default_rng(1).normal(0, 300, 16000)).astype(np.int16), 16000)
    config = tmp_path / "c.toml"
    config.write_text(f'[audio]\ninput = "{wav}"\n')
    out = run_cli("doctor", "--config", str(config), "--state-dir", str(state_dir)).stdout.decode()
    assert "[ ok ] microphone: not used" in out and f"audio comes from the file {wav}" in out
    wav.unlink()
    out = run_cli("doctor", "--config", str(config), "--state-dir", str(state_dir)).stdout.decode()
    assert "[FAIL] microphone: not used, and [audio] input cannot be played" in out and "does not exist" in out


def test_sound_cards_are_counted_from_alsa(tmp_path: Path) -> None:
    cards = tmp_path / "cards"
    cards.write_text("--- no soundcards ---\n")
    assert doctor.sound_cards(cards) == 0
    cards.write_text(" 0 [PCH            ]: HDA-Intel - HDA Intel PCH\n                      HDA Intel PCH at 0xf\n"
                     " 1 [Device         ]: USB-Audio - USB PnP Sound Device\n")
    assert doctor.sound_cards(cards) == 2
    (tmp_path / "proc").mkdir()
    assert doctor.sound_cards(tmp_path / "proc" / "asound" / "cards") == 0  # Linux with no sound driver loaded
    assert doctor.sound_cards(tmp_path / "no-proc" / "asound" / "cards") is None  # not Linux: unknown
    check = doctor.check_input("-", None, 0)  # stdin is not opened by the doctor: the service owns it
    assert check.ok and "no sound card" in check.message and "stdin" in check.message
