"""Deployment on the Pi: the systemd unit, the install/uninstall scripts, the pi-gen stage and sd_notify.

The scripts run for real in a scratch root with ``--dry-run``: files are written there and checked;
only the commands that would change this machine (apt-get, useradd, systemctl, pip) are printed.
systemd-analyze and shellcheck are required tools (.ci/run installs them): missing means FAIL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli
from voxkeep import sdnotify

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "voxkeep.service"
HW = REPO / "hw"
STAGE = HW / "pi-gen" / "stage-voxkeep"
EXAMPLE_KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; apt-get install {package}")
    return path


def unit_value(key: str) -> str:
    values = re.findall(rf"^{key}=(.*)$", UNIT.read_text(), flags=re.M)
    assert values, f"{key}= missing from {UNIT.name}"
    return values[-1]


INSTALLED_UNIT = "/etc/systemd/system/voxkeep.service"


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root with systemd's own units and the installed command, so verify checks ExecStart too."""
    root = tmp_path / "root"
    system_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    exe = root / unit_value("ExecStart").split()[0].lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / INSTALLED_UNIT.lstrip("/")).parent.mkdir(parents=True)
    return root


def verify(root: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of ``unit_text`` installed where install.sh puts it, inside ``root``."""
    (root / INSTALLED_UNIT.lstrip("/")).write_text(unit_text)
    return subprocess.run([tool("systemd-analyze", "systemd"), "verify", f"--root={root}", INSTALLED_UNIT],
                          capture_output=True, text=True)


def test_unit_passes_systemd_analyze_verify(unit_root):
    result = verify(unit_root, UNIT.read_text())
    # Unknown keys and bad values are only warnings to systemd; any output at all is a defect here.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_verify_would_catch_a_broken_unit(unit_root):
    result = verify(unit_root, UNIT.read_text().replace("ExecStart=/opt/voxkeep", "ExecStart=/nonexistent"))
    assert result.returncode != 0 and "not executable" in result.stderr
    typo = verify(unit_root, UNIT.read_text().replace("ProtectHome=", "ProtectHomes="))
    assert "Unknown key" in typo.stderr


def test_unit_exposure_is_at_most_2(tmp_path):
    result = subprocess.run([tool("systemd-analyze", "systemd"), "security", "--offline=true", str(UNIT)],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for voxkeep\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_restarts_on_failure_and_is_watched():
    assert unit_value("Type") == "notify"
    assert unit_value("Restart") == "on-failure"
    assert 0 < int(unit_value("WatchdogSec")) <= 60
    assert unit_value("DevicePolicy") == "closed"
    assert {line.split()[0] for line in re.findall(r"^DeviceAllow=(.*)$", UNIT.read_text(), flags=re.M)} == {
        "char-alsa", "char-gpiochip"}


def test_memory_deny_write_execute_is_tolerated_by_the_audio_stack(models_dir):
    """The unit sets MemoryDenyWriteExecute=yes; the same kernel rule (PR_SET_MDWE) in a child process
    must not break onnxruntime wake detection, pocketsphinx, age encryption or ctypes callbacks."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(66, 0, 0, 0, 0) < 0:  # PR_GET_MDWE: Linux 6.3+
        pytest.skip("this kernel cannot enforce MemoryDenyWriteExecute (PR_SET_MDWE needs Linux 6.3)")
    code = textwrap.dedent(f"""
        import ctypes, numpy as np
        from pathlib import Path
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(65, 1, 0, 0, 0) == 0, ctypes.get_errno()
        from voxkeep.config import WakeSettings
        from voxkeep.wake import WakeDetector
        detector = WakeDetector(WakeSettings(words=["hey_jarvis"]), Path({str(models_dir)!r}))
        for _ in range(20):
            detector.process(np.zeros(1280, np.int16))
        from pocketsphinx import Decoder
        Decoder()
        import pyrage
        ident = pyrage.x25519.Identity.generate()
        assert pyrage.decrypt(pyrage.encrypt(b"x", [ident.to_public()]), [ident]) == b"x"
        assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def shell_scripts() -> list[Path]:
    """Every script under hw/: *.sh files and anything with a shell shebang."""
    found = []
    for path in sorted(p for p in HW.rglob("*") if p.is_file()):
        first_line = path.read_bytes().split(b"\n", 1)[0]
        if path.suffix == ".sh" or (first_line.startswith(b"#!") and first_line.endswith(b"sh")):
            found.append(path)
    return found


def test_shellcheck_passes_on_every_script_under_hw():
    scripts = shell_scripts()
    assert {"install.sh", "uninstall.sh", "voxkeep-firstboot", "00-run.sh"} <= {p.name for p in scripts}
    result = subprocess.run([tool("shellcheck", "shellcheck"), "-x", "--severity=style", *map(str, scripts)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout


def test_scripts_are_executable():
    for path in shell_scripts():
        if not path.read_text().startswith("# shellcheck shell="):  # sourced libraries (lib.sh, layout.sh)
            assert path.stat().st_mode & stat.S_IXUSR, f"{path} is not executable"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the parts of the checkout the installer reads, so tests can alter it."""
    src = tmp_path / "src"
    for name in ("hw", "systemd"):
        shutil.copytree(REPO / name, src / name)
    shutil.copy(REPO / "pyproject.toml", src)
    example = REPO / "device" / "config.example.toml"
    assert example.is_file(), "device/config.example.toml is missing; install.sh ships it"
    (src / "device").mkdir()
    shutil.copy(example, src / "device")
    return src


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    root = tmp_path / "scratch"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "os-release").write_text('ID=debian\nVERSION_CODENAME=bookworm\n')
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\naudio:x:29:\n")
    return root


def run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)


def test_install_in_a_scratch_root(source, scratch):
    result = run(source / "hw" / "install.sh", "--root", str(scratch), "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # Files really written under the scratch root, with the modes the service relies on.
    unit = scratch / "etc/systemd/system/voxkeep.service"
    assert unit.read_text() == UNIT.read_text()
    assert (scratch / "etc/voxkeep/config.toml").read_text() == (source / "device" / "config.example.toml").read_text()
    assert stat.S_IMODE((scratch / "etc/voxkeep/mqtt-password").stat().st_mode) == 0o600
    assert "gpiochip" in (scratch / "etc/udev/rules.d/60-voxkeep-gpio.rules").read_text()
    assert (scratch / "opt/voxkeep/hw/wiring.svg").is_file()
    # System changes are only shown, and the missing gpio group and voxkeep user would be created.
    apt = next(line for line in out.splitlines() if "DEBIAN_FRONTEND=noninteractive apt-get install" in line)
    # gpiozero's pin library comes from apt where the archive has it (Raspberry Pi OS), else pip builds it.
    built = "PYPI=1 /opt/voxkeep/venv/bin/pip install --no-cache-dir --no-binary lgpio lgpio" in out
    assert ("python3-lgpio" in apt) != built
    assert "would run: groupadd --system gpio" in out and "groupadd --system audio" not in out
    assert re.search(r"would run: useradd --system .* voxkeep", out)
    assert "would run: python3 -m venv --system-site-packages /opt/voxkeep/venv" in out
    assert f"would run: /opt/voxkeep/venv/bin/pip install --no-cache-dir --upgrade {source}" in out
    # The models go where the unit tells the daemon to look.
    env = dict(v.split("=", 1) for line in re.findall(r"^Environment=(.*)$", UNIT.read_text(), flags=re.M)
               for v in line.split())
    models = env["VOXKEEP_MODELS_DIR"]
    assert f"would run: /opt/voxkeep/venv/bin/voxkeep models fetch --models-dir {models}" in out
    # The owner's `voxkeep doctor` etc. on PATH look where the service looks.
    wrapper = scratch / "usr/local/bin/voxkeep"
    assert os.access(wrapper, os.X_OK) and f"VOXKEEP_MODELS_DIR:={models}" in wrapper.read_text()
    assert env["LG_WD"] == unit_value("RuntimeDirectory").join(["/run/", ""])  # lgpio's pipes: writable
    assert f"would run: systemctl --root={scratch} enable voxkeep.service" in out


def test_reinstall_keeps_the_owners_config_and_skips_what_exists(source, scratch):
    assert run(source / "hw" / "install.sh", "--root", str(scratch), "--dry-run").returncode == 0
    config = scratch / "etc/voxkeep/config.toml"
    config.write_text('[gpio]\nled_pin = 23\n')
    (scratch / "etc/voxkeep/mqtt-password").write_text("s3cret\n")
    with (scratch / "etc/passwd").open("a") as fh:
        fh.write("voxkeep:x:999:999::/var/lib/voxkeep:/usr/sbin/nologin\n")
    (scratch / "opt/voxkeep/venv/bin").mkdir(parents=True)
    (scratch / "opt/voxkeep/venv/bin/python").write_text("")
    (scratch / "opt/voxkeep/venv/bin/python").chmod(0o755)
    example = source / "device" / "config.example.toml"
    example.write_text(example.read_text() + "\n# new\n")

    result = run(source / "hw" / "install.sh", "--root", str(scratch), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert config.read_text() == '[gpio]\nled_pin = 23\n'
    assert (scratch / "etc/voxkeep/mqtt-password").read_text() == "s3cret\n"
    assert (scratch / "etc/voxkeep/config.example.toml").read_text().endswith("# new\n")
    assert "keeping your /etc/voxkeep/config.toml" in result.stdout
    assert "useradd" not in result.stdout and "-m venv" not in result.stdout
    assert "pip install --no-cache-dir --upgrade" in result.stdout  # the upgrade itself still happens


def test_install_refuses_bad_use_with_one_clear_line(source, scratch):
    bad = run(source / "hw" / "install.sh", "--root", str(scratch), "--dry-run", "--colour")
    assert bad.returncode == 1 and bad.stderr == "voxkeep: error: unknown option '--colour'; " \
        "use --no-start, --root DIR or --dry-run\n"
    real_into_root = run(source / "hw" / "install.sh", "--root", str(scratch))
    assert real_into_root.returncode == 1 and "--dry-run" in real_into_root.stderr
    (source / "device" / "config.example.toml").unlink()
    incomplete = run(source / "hw" / "install.sh", "--root", str(scratch), "--dry-run")
    assert incomplete.returncode == 1 and "config.example.toml is missing" in incomplete.stderr
    assert not (scratch / "etc/systemd").exists()  # stopped before touching anything


def test_uninstall_keeps_recordings_unless_purged(source, scratch):
    assert run(source / "hw" / "install.sh", "--root", str(scratch), "--dry-run").returncode == 0
    recording = scratch / "var/lib/voxkeep/vault/rec.age"
    recording.parent.mkdir(parents=True)
    recording.write_bytes(b"age-encrypted")
    with (scratch / "etc/passwd").open("a") as fh:
        fh.write("voxkeep:x:999:999::/var/lib/voxkeep:/usr/sbin/nologin\n")

    kept = run(source / "hw" / "uninstall.sh", "--root", str(scratch), "--dry-run")
    assert kept.returncode == 0, kept.stderr
    assert not (scratch / "etc/systemd/system/voxkeep.service").exists()
    assert not (scratch / "opt/voxkeep").exists() and not (scratch / "usr/local/bin/voxkeep").exists()
    assert recording.read_bytes() == b"age-encrypted" and (scratch / "etc/voxkeep/config.toml").is_file()
    assert "kept your recordings" in kept.stdout

    purged = run(source / "hw" / "uninstall.sh", "--root", str(scratch), "--dry-run", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (scratch / "var/lib/voxkeep").exists() and not (scratch / "etc/voxkeep").exists()
    assert "would run: userdel voxkeep" in purged.stdout


def fake_pi_gen(tmp_path: Path) -> tuple[Path, Path]:
    """A pi-gen checkout as far as the stage needs: build.sh, stage2, and a recording on_chroot."""
    pi_gen = tmp_path / "pi-gen"
    (pi_gen / "stage2").mkdir(parents=True)
    (pi_gen / "build.sh").write_text("#!/bin/bash\n")
    log = tmp_path / "chroot.log"
    return pi_gen, log


def run_stage_script(script: Path, rootfs: Path, log: Path) -> subprocess.CompletedProcess[str]:
    """Run a stage script the way pi-gen does: from its directory, with on_chroot exported."""
    wrapper = f'on_chroot() {{ cat >> "{log}"; }}; export -f on_chroot; cd "{script.parent}"; ./{script.name}'
    return subprocess.run(["bash", "-c", wrapper], capture_output=True, text=True,
                          env={**os.environ, "ROOTFS_DIR": str(rootfs)})


def test_pi_gen_stage_installs_voxkeep_from_the_packed_commit(tmp_path):
    pi_gen, log = fake_pi_gen(tmp_path)
    prepared = subprocess.run(["bash", str(HW / "pi-gen" / "prepare.sh"), str(pi_gen)],
                              capture_output=True, text=True)
    assert prepared.returncode == 0, prepared.stderr
    stage = pi_gen / "stage-voxkeep"
    assert (stage / "EXPORT_IMAGE").exists() and (pi_gen / "stage2" / "SKIP_IMAGES").exists()
    assert 'STAGE_LIST="stage0 stage1 stage2 stage-voxkeep"' in (pi_gen / "config").read_text()

    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    install = run_stage_script(stage / "00-install" / "00-run.sh", rootfs, log)
    assert install.returncode == 0, install.stderr
    assert "/tmp/voxkeep-src/hw/install.sh --no-start" in log.read_text()
    assert not (rootfs / "tmp/voxkeep-src").exists()  # the source does not stay in the image
    listing = subprocess.run(["tar", "-tzf", str(stage / "00-install/files/voxkeep.tar.gz")],
                             capture_output=True, text=True, check=True).stdout.split()
    assert {"voxkeep/hw/install.sh", "voxkeep/systemd/voxkeep.service", "voxkeep/pyproject.toml"} <= set(listing)

    firstboot = run_stage_script(stage / "01-firstboot" / "00-run.sh", rootfs, log)
    assert firstboot.returncode == 0, firstboot.stderr
    assert os.access(rootfs / "usr/local/sbin/voxkeep-firstboot", os.X_OK)
    assert "Before=voxkeep.service" in (rootfs / "etc/systemd/system/voxkeep-firstboot.service").read_text()
    assert "systemctl enable voxkeep-firstboot.service" in log.read_text()


VOXKEEP = Path(sys.executable).with_name("voxkeep")
"""The entry point of the environment running the tests, whether or not it is on PATH."""


def firstboot(tmp_path: Path, key_text: str | None) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    boot, state = tmp_path / "boot", tmp_path / "state"
    boot.mkdir()
    if key_text is not None:
        (boot / "voxkeep-owner.txt").write_text(key_text)
    env = {**os.environ, "VOXKEEP_BOOT": str(boot), "VOXKEEP_STATE": str(state), "VOXKEEP_RUNAS": "",
           "VOXKEEP_BIN": str(VOXKEEP)}
    result = subprocess.run(["bash", str(STAGE / "01-firstboot/files/voxkeep-firstboot")],
                            capture_output=True, text=True, env=env)
    return result, boot, state


def test_first_boot_registers_the_owner_key_from_the_boot_partition(tmp_path):
    result, boot, state = firstboot(tmp_path, f"# from age-keygen -y\r\n{EXAMPLE_KEY}\r\n")
    assert result.returncode == 0, result.stderr
    assert not (boot / "voxkeep-owner.txt").exists()
    listed = subprocess.run([str(VOXKEEP), "owner", "list", "--state-dir", str(state)], capture_output=True, text=True)
    assert EXAMPLE_KEY in listed.stdout, listed.stdout + listed.stderr


def test_first_boot_rejects_a_secret_key_and_keeps_the_file(tmp_path):
    secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ"
    result, boot, state = firstboot(tmp_path, secret + "\n")
    assert result.returncode == 1
    assert "does not hold an age public key" in result.stderr and "age-keygen -y" in result.stderr
    assert (boot / "voxkeep-owner.txt").exists() and not state.exists()


def test_first_boot_without_a_key_file_says_what_to_do(tmp_path):
    result, _, state = firstboot(tmp_path, None)
    assert result.returncode == 0 and "voxkeep owner init" in result.stdout and not state.exists()


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_sd_notify_messages_reach_systemd(notify_socket):
    assert sdnotify.ready() and sdnotify.watchdog() and sdnotify.status("muted by\nbutton") and sdnotify.stopping()
    got = [notify_socket.recv(256).decode() for _ in range(4)]
    assert got == ["READY=1", "WATCHDOG=1", "STATUS=muted by button", "STOPPING=1"]


def test_sd_notify_abstract_socket(monkeypatch):
    name = f"voxkeep-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.watchdog()
        assert sock.recv(64) == b"WATCHDOG=1"


def test_sd_notify_is_a_no_op_outside_systemd(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.watchdog() is False  # systemd went away: no exception into the audio loop


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert sdnotify.watchdog_interval() is None


def run_notified(sock: socket.socket, *args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``voxkeep ARGS`` with systemd's notify socket read while it runs (the kernel queues only ~10 datagrams)."""
    got: list[str] = []
    done = threading.Event()

    def receive() -> None:
        sock.settimeout(0.05)
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                got.append(sock.recv(256).decode())

    reader = threading.Thread(target=receive)
    reader.start()
    try:
        result = run_cli(*args, env=env)
    finally:
        time.sleep(0.2)
        done.set()
        reader.join()
    return result, got


@pytest.mark.parametrize("muted", [False, True])
def test_a_run_under_systemd_reports_ready_and_pings_while_frames_flow(notify_socket, tmp_path, state_dir,
                                                                       models_dir, muted):
    """Type=notify: READY=1 once the loop runs and WATCHDOG=1 as frames arrive, also when the speaker
    starts muted on a file source (which still delivers frames) and systemd would otherwise kill it."""
    import numpy as np
    import soundfile

    wav = tmp_path / "room.wav"
    soundfile.write(wav, np.random.default_rng(2).normal(0, 200, 16000 * 3).astype(np.int16), 16000)
    if muted:
        assert run_cli("mute", "--state-dir", str(state_dir)).returncode == 0
    env = {"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"], "WATCHDOG_USEC": "200000"}  # pings every 50 ms
    result, got = run_notified(notify_socket, "run", "--input", str(wav), "--state-dir", str(state_dir),
                               "--models-dir", str(models_dir), "--realtime", env=env)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert got.count("READY=1") == 1 and got.index("READY=1") < got.index("WATCHDOG=1")
    assert got.count("WATCHDOG=1") >= 10, got  # 3 s of frames, a ping at most every 50 ms
    statuses = [m for m in got if m.startswith("STATUS=")]  # what `systemctl status` shows
    assert statuses and statuses[-1].startswith("STATUS=muted" if muted else "STATUS=listening"), statuses
    assert "STOPPING=1" in got


def test_ready_is_sent_when_the_watchdog_is_switched_off(notify_socket, tmp_path, state_dir, models_dir,
                                                          monkeypatch):
    """WatchdogSec=0 in a drop-in: no pings, but READY=1 still comes, or `systemctl start` would hang."""
    import numpy as np
    import soundfile

    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    wav = tmp_path / "room.wav"
    soundfile.write(wav, np.random.default_rng(3).normal(0, 200, 16000).astype(np.int16), 16000)
    result, got = run_notified(notify_socket, "run", "--input", str(wav), "--state-dir", str(state_dir),
                               "--models-dir", str(models_dir), env={"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert "READY=1" in got and "WATCHDOG=1" not in got


IMAGE = HW / "image"


def test_image_partitions_are_what_the_pi_firmware_boots(tmp_path):
    """hw/image/layout.sh on a tiny root: an MBR label, FAT32 first (firmware, config.txt) at an aligned
    start, ext4 root second, the labels fstab and cmdline.txt use, and the boot files only on the FAT side."""
    for name, package in (("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"), ("sfdisk", "fdisk"),
                          ("mke2fs", "e2fsprogs"), ("debugfs", "e2fsprogs"), ("blkid", "util-linux")):
        tool(name, package)
    root = tmp_path / "rootfs"
    (root / "boot/firmware/overlays").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text("arm_64bit=1\n")
    (root / "boot/firmware/overlays/x.dtbo").write_bytes(b"\xd0\x0d")
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("voxkeep\n")
    image = tmp_path / "card.img"
    built = subprocess.run(["bash", "-c", f'set -e; . "{IMAGE}/layout.sh"; make_image "$1" "$2"', "_", root, image],
                           capture_output=True, text=True)
    assert built.returncode == 0 and not built.stderr, built.stderr
    table = json_of(["sfdisk", "--json", str(image)])["partitiontable"]
    boot, rootpart = table["partitions"]
    assert table["label"] == "dos"  # the Pi 3 boot ROM reads MBR only
    assert boot["type"] == "c" and boot["start"] % 8192 == 0  # FAT32 (LBA), 4 MiB aligned
    assert rootpart["type"] == "83" and rootpart["start"] == boot["start"] + boot["size"]
    sector = 512
    fat = f"{image}@@{boot['start'] * sector}"
    listing = subprocess.run(["mdir", "-b", "-i", fat, "::/"], capture_output=True, text=True).stdout
    assert "::/config.txt" in listing and "::/overlays/" in listing
    offset = rootpart["start"] * sector
    probe = subprocess.run(["blkid", "-p", "-O", str(boot["start"] * sector), "-o", "export", str(image)],
                           capture_output=True, text=True).stdout
    assert "TYPE=vfat" in probe and "LABEL=bootfs" in probe and "VERSION=FAT32" in probe
    probe = subprocess.run(["blkid", "-p", "-O", str(offset), "-o", "export", str(image)],
                           capture_output=True, text=True).stdout
    assert "TYPE=ext4" in probe and "LABEL=rootfs" in probe
    debugfs = subprocess.run(["debugfs", "-R", "ls -p /boot/firmware", f"{image}?offset={offset}"],
                             capture_output=True, text=True).stdout
    assert "config.txt" not in debugfs  # hidden under the FAT mount otherwise, and stale after upgrades
    assert (root / "boot/firmware/config.txt").is_file()  # the tree itself is left as it was
    layout = (IMAGE / "layout.sh").read_text()
    fstab = (IMAGE / "customize.sh").read_text()
    assert "BOOT_LABEL=bootfs" in layout and "LABEL=$BOOT_LABEL  /boot/firmware  vfat" in fstab


def json_of(cmd: list[str]) -> dict:
    import json

    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def test_image_recipe_refuses_bad_use_with_one_clear_line():
    bad_arch = run(IMAGE / "build.sh", "--arch", "riscv64")
    assert bad_arch.returncode == 1
    assert bad_arch.stderr == "voxkeep: error: --arch riscv64: the image is built for arm64 (Raspberry Pi) " \
                              "or amd64 (PC, VM)\n"
    bad_suite = run(IMAGE / "build.sh", "--suite", "buster")
    assert bad_suite.returncode == 1 and "use trixie (Debian 13) or bookworm" in bad_suite.stderr
    assert "--arch arm64|amd64" in run(IMAGE / "build.sh", "--help").stdout


def test_image_wiring_defaults_match_the_example_config_and_the_wiring_guide():
    """customize.sh sets the LED and button pins by editing these example-config lines; hw/README.md wires
    the LED to GPIO 23 and the button to GPIO 24."""
    example = (REPO / "device" / "config.example.toml").read_text()
    customize = (IMAGE / "customize.sh").read_text()
    for key, pin in (("led_pin", 23), ("button_pin", 24)):
        assert f"\n# {key} = (unset)\n" in example
        assert f"s/^# {key} = (unset)$/{key} = {pin}/" in customize
        assert f"GPIO {pin} (pin" in (HW / "README.md").read_text()
    # The owner-key step of the image is the pi-gen stage's own script, not a copy.
    assert "pi-gen/stage-voxkeep/01-firstboot/files" in customize


@pytest.mark.parametrize("command", [["mute"], ["unmute"], ["recording", "off"], ["status"]])
def test_a_user_outside_group_voxkeep_gets_one_line_not_a_traceback(monkeypatch, tmp_path, capsys, command):
    """/run/voxkeep is 0750 voxkeep:voxkeep: for anyone else even looking for the socket is refused (found in
    the VM: `voxkeep mute` as such a user died with a PermissionError traceback, twice: once in the control
    client, then in the CLI's own look for the service)."""
    from voxkeep import control
    from voxkeep.cli import main

    class Hidden(type(Path())):
        def exists(self, **_kw):
            raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(control, "SERVICE_SOCKET", Hidden("/run/voxkeep/control.sock"))
    monkeypatch.setenv("HOME", str(tmp_path))  # the CLI's own state dir, were it (wrongly) used
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert main(command) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "only members of group voxkeep may use the speaker's service; " \
        "sudo usermod -a -G voxkeep $USER" in err
    assert not list(tmp_path.rglob("*.json")), "the CLI changed some other state dir instead"
