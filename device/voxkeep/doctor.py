"""Checks for ``voxkeep doctor``: microphone, models, pins, speaker, key, broker, disk, clock, service.

Each check returns a ``Check`` (ok or not, and one sentence saying what was found and what to do).
They take the real parts as arguments (an audio source, a pin factory, a PyAudio module, a command
runner) so the same code runs on the Pi and in tests; ``voxkeep doctor`` (voxkeep/cli/doctor.py)
runs them all.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import SAMPLE_RATE
from .audio import AudioSource, open_portaudio
from .config import GpioSettings, MqttSettings, Settings, VaultSettings
from .errors import VoxkeepError


def _output(cmd: list[str]) -> str | None:
    """A command's stdout, or None when the command does not exist here (a laptop, a container)."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


SILENT_DBFS = -70.0
"""Below this the microphone is dead or muted in the mixer: even a quiet room is louder."""
CLIP_FRACTION = 0.001
"""More than 0.1 % of samples at full scale means the input gain is too high for wake words."""


@dataclass(frozen=True)
class Check:
    """One doctor line."""

    name: str
    ok: bool
    message: str

    def line(self) -> str:
        """``[ ok ] microphone: ...`` / ``[FAIL] ...``: what the doctor prints."""
        return f"[{' ok ' if self.ok else 'FAIL'}] {self.name}: {self.message}"


def check_microphone(source: AudioSource, seconds: float = 2.0) -> Check:
    """Open ``source``, listen for ``seconds`` and judge the level and clipping."""
    try:
        source.open()
        try:
            frames = []
            for _ in range(max(1, round(seconds * SAMPLE_RATE / 1280))):
                frame = source.read()
                if frame is None:
                    break
                frames.append(frame)
        finally:
            source.close()
    except VoxkeepError as exc:
        return Check("microphone", False, str(exc))
    if not frames:
        return Check("microphone", False, f"{source.description} opened but gave no audio; check the cable")
    audio = np.concatenate(frames).astype(np.float64)
    clipped = float(np.mean(np.abs(audio) >= 32767))
    audio -= np.mean(audio)  # an offset (DC) is no sound, and the daemon takes it out (audio.DcRemover)
    rms = math.sqrt(float(np.mean(audio**2)))
    level = 20 * math.log10(max(rms, 1e-9) / 32768.0)
    where = source.description
    if level < SILENT_DBFS:
        return Check("microphone", False, f"{where} gives silence ({level:.0f} dBFS); unmute it or raise "
                                          "its capture level in alsamixer")
    if clipped > CLIP_FRACTION:
        return Check("microphone", False, f"{where} clips ({clipped:.1%} of samples at full scale); lower "
                                          "its capture level in alsamixer")
    return Check("microphone", True, f"{where} works, level {level:.0f} dBFS, no clipping")


def sound_cards(cards: Path = Path("/proc/asound/cards")) -> int | None:
    """How many ALSA sound cards the kernel has; None off Linux (no /proc), where nobody can tell."""
    try:
        text = cards.read_text()
    except FileNotFoundError:  # Linux loads no sound driver at all without a card: none
        return 0 if cards.parent.parent.is_dir() else None
    except OSError:
        return None
    return sum(1 for line in text.splitlines() if line[:3].strip().isdigit())


def check_input(spec: str, source: AudioSource | None, cards: int | None) -> Check:
    """A WAV file or stdin instead of a microphone ([audio] input): say so, and that the file plays."""
    hardware = " (this machine has no sound card)" if cards == 0 else ""
    if spec == "-" or source is None:
        return Check("microphone", True, f"not used{hardware}: the service reads raw audio from stdin "
                                         "([audio] input = \"-\")")
    try:
        source.open()
        try:
            frame = source.read()
        finally:
            source.close()
    except VoxkeepError as exc:
        return Check("microphone", False, f"not used, and [audio] input cannot be played: {exc}")
    if frame is None:
        return Check("microphone", False, f"not used, and [audio] input {spec} holds no audio; record it again")
    return Check("microphone", True, f"not used{hardware}: audio comes from the file {spec} ([audio] input; "
                                     "set it to \"mic\" to listen to a microphone)")


def check_gpio(settings: GpioSettings, *, pin_factory: Any = None) -> Check:
    """Claim every configured pin once, as the daemon will, and release it again."""
    from .indicators import MuteButton, MuteSwitch, StatusLight, choose_pin_factory

    if settings.led_pin is None and not settings.rgb_pins and settings.button_pin is None \
            and settings.mute_switch_pin is None:
        return Check("gpio", True, "no LED, button or switch configured (set the pins in [gpio])")
    try:
        factory = pin_factory if pin_factory is not None else choose_pin_factory(settings)
        from gpiozero.pins.mock import MockFactory

        if isinstance(factory, MockFactory) and settings.pin_factory != "mock":
            return Check("gpio", False, "pins are configured but this machine has no usable GPIO; on a Pi, "
                                        "install python3-lgpio and check you are in group gpio")
        opened: list[Any] = [StatusLight(settings, pin_factory=factory)]
        if settings.button_pin is not None:
            opened.append(MuteButton(settings, on_press=_ignore, on_long_press=_ignore, pin_factory=factory))
        switch = ""
        if settings.mute_switch_pin is not None:
            device = MuteSwitch(settings, on_change=_ignore, pin_factory=factory)
            switch = "; mute switch is " + ("ENGAGED (muted)" if device.engaged else "off")
            opened.append(device)
        for device in opened:
            device.close()
    except VoxkeepError as exc:
        return Check("gpio", False, str(exc))
    return Check("gpio", True, f"all configured pins can be used{switch}")


def _ignore(*_: Any) -> None:
    """Doctor only claims the pins; presses during the check mean nothing."""


def check_speaker(output_device: str, *, pa_module: Any = None) -> Check:
    """Whether the speaker for confirmation tones is there."""
    from .tones import find_output

    if not output_device:
        return Check("speaker", True, "none configured: no confirmation tones (set audio.output_device)")
    if pa_module is None:
        import pyaudio as pa_module
    pa = open_portaudio(pa_module)
    try:
        info = find_output(pa, output_device)
    except LookupError as exc:
        return Check("speaker", False, str(exc))
    finally:
        pa.terminate()
    return Check("speaker", True, f"confirmation tones play on '{info['name']}'")


MIN_FREE_BYTES = 200 * 1024 * 1024
"""Below this, recordings start failing within days on a busy household (each is ~100-300 kB)."""


def check_models(models_dir: Path, words: list[str], engine: str = "auto") -> Check:
    """Every model the config needs is installed and matches its pinned hash."""
    from .config import WakeSettings
    from .models import FEATURE_MODELS, verified_path
    from .wake import plan_words

    try:
        for name in FEATURE_MODELS:
            verified_path(models_dir, name)
        plan_words(WakeSettings(words=words, engine=engine), models_dir)
    except VoxkeepError as exc:
        return Check("models", False, str(exc))
    return Check("models", True, f"verified in {models_dir} ({', '.join(words)})")


def check_owner(state_dir: Path, settings: VaultSettings) -> Check:
    """Recordings are only kept when an owner key is registered."""
    from .vault import Vault

    try:
        with Vault(state_dir, settings) as vault:
            why = vault.why_not_recording()
            count = len(vault.recipients())
    except (VoxkeepError, OSError) as exc:
        return Check("owner key", False, f"cannot open the vault in {state_dir} ({exc})")
    if why:
        return Check("owner key", False, why)
    return Check("owner key", True, f"{count} owner key(s) registered; the device holds no private key")


def check_satellite(settings: Settings) -> Check:
    """The Home Assistant satellite: where it listens, who may connect, and whether anything may be sent."""
    from .vault import Vault

    sat = settings.satellite
    if not sat.uri:
        return Check("satellite", True, "not configured (set [satellite] uri to be a Home Assistant voice satellite)")
    try:
        with Vault(settings.state_path, settings.vault) as vault:
            consented = "satellite" in vault.active_consents()
    except (VoxkeepError, OSError) as exc:
        return Check("satellite", False, f"cannot read the consent ledger in {settings.state_path} ({exc})")
    where = f"on {sat.uri} for {', '.join(sat.allow)}"
    speaker = "" if settings.audio.output_device else "; no speaker (audio.output_device): replies are not played"
    if not consented:
        return Check("satellite", True, f"{where}; no consent, so Home Assistant receives nothing ('voxkeep consent "
                                        f"grant satellite'){speaker}")
    return Check("satellite", True, f"{where}; consented: requests after a wake word are sent{speaker}")


def check_broker(settings: MqttSettings) -> Check:
    """Connect once with the configured credentials and TLS."""
    if not settings.host:
        return Check("broker", True, "MQTT not configured (set [mqtt] host to report to Home Assistant)")
    from .mqtt import BrokerSession

    try:
        with BrokerSession(settings, timeout=5.0):
            pass
    except VoxkeepError as exc:
        return Check("broker", False, str(exc))
    return Check("broker", True, f"connected to {settings.host}:{settings.port} as {settings.username or 'anonymous'}")


def check_disk(state_dir: Path) -> Check:
    """Enough free space for recordings and the index."""
    probe = state_dir if state_dir.exists() else state_dir.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    text = f"{free / 1e9:.1f} GB free for {state_dir}"
    if free < MIN_FREE_BYTES:
        return Check("disk", False, f"only {text}; free some space or lower vault.retention_days")
    return Check("disk", True, text)


def check_clock(run: Callable[[list[str]], str | None] = _output) -> Check:
    """Recording times and retention depend on a synchronised clock (a Pi has no battery clock)."""
    answer = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if answer is None:
        return Check("clock", True, "could not ask timedatectl (no systemd here); make sure the time is right")
    if answer.strip() == "yes":
        return Check("clock", True, "synchronised")
    return Check("clock", False, "not synchronised: recording times and retention will be wrong; check the "
                                 "network and 'timedatectl timesync-status'")


def check_service(run: Callable[[list[str]], str | None] = _output) -> Check:
    """The systemd service, if installed, is running."""
    state = run(["systemctl", "is-active", "voxkeep.service"])
    if state is None:
        return Check("service", True, "systemd not available here; run 'voxkeep run' by hand")
    state = state.strip()
    if state == "active":
        return Check("service", True, "voxkeep.service is running")
    enabled = (run(["systemctl", "is-enabled", "voxkeep.service"]) or "").strip()
    if enabled in ("", "not-found"):
        return Check("service", True, "not installed as a service (sudo hw/install.sh installs it)")
    return Check("service", False, f"voxkeep.service is {state}; see 'journalctl -u voxkeep -n 50'")
