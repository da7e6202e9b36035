"""Hardware checks for ``voxkeep doctor``: microphone, GPIO pins and speaker, in a maker's words.

Each check returns a ``Check`` (ok or not, and one sentence saying what was found and what to do).
They take the real parts as arguments (an audio source, a pin factory, a PyAudio module) so the
same code runs on the Pi and in tests. The CLI command itself (and the model, key, broker, disk,
clock and service checks) belong to ``voxkeep/cli``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import SAMPLE_RATE
from .audio import AudioSource
from .config import GpioSettings
from .errors import VoxkeepError

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
    rms = math.sqrt(float(np.mean(audio**2)))
    level = 20 * math.log10(max(rms, 1e-9) / 32768.0)
    clipped = float(np.mean(np.abs(audio) >= 32767))
    where = source.description
    if level < SILENT_DBFS:
        return Check("microphone", False, f"{where} gives silence ({level:.0f} dBFS); unmute it or raise "
                                          "its capture level in alsamixer")
    if clipped > CLIP_FRACTION:
        return Check("microphone", False, f"{where} clips ({clipped:.1%} of samples at full scale); lower "
                                          "its capture level in alsamixer")
    return Check("microphone", True, f"{where} works, level {level:.0f} dBFS, no clipping")


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
    pa = pa_module.PyAudio()
    try:
        info = find_output(pa, output_device)
    except LookupError as exc:
        return Check("speaker", False, str(exc))
    finally:
        pa.terminate()
    return Check("speaker", True, f"confirmation tones play on '{info['name']}'")
