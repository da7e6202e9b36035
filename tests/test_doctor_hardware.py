"""voxkeep doctor's hardware checks on real audio files, simulated pins and a fake PyAudio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from gpiozero.pins.mock import MockFactory, MockPWMPin

from test_tones import FakePyAudio
from voxkeep import SAMPLE_RATE
from voxkeep.audio import WavFileSource
from voxkeep.config import GpioSettings
from voxkeep.doctor import check_gpio, check_microphone, check_speaker


def wav(tmp_path: Path, samples: np.ndarray) -> WavFileSource:
    path = tmp_path / "mic.wav"
    soundfile.write(path, samples.astype(np.int16), SAMPLE_RATE, subtype="PCM_16")
    return WavFileSource(path)


def test_speech_passes_with_its_level(speech):
    check = check_microphone(WavFileSource(speech("hey jarvis, stop recording")))
    assert check.ok and "dBFS" in check.message
    assert check.line().startswith("[ ok ] microphone:")


def test_dead_microphone_is_reported_with_the_fix(tmp_path):
    check = check_microphone(wav(tmp_path, np.zeros(2 * SAMPLE_RATE)))
    assert not check.ok and "silence" in check.message and "alsamixer" in check.message


def test_a_dead_microphone_with_an_offset_is_still_silence(tmp_path):
    hiss = np.random.default_rng(1).normal(0.0, 2.0, 2 * SAMPLE_RATE)  # -84 dBFS: nothing a room makes
    check = check_microphone(wav(tmp_path, np.round(hiss) - 600))
    assert not check.ok and "silence" in check.message, check.message


def test_clipping_microphone_is_reported(tmp_path, speech):
    samples, _ = soundfile.read(speech("hey jarvis"), dtype="int16")
    loud = np.clip(samples.astype(np.int32) * 40, -32768, 32767)
    check = check_microphone(wav(tmp_path, loud))
    assert not check.ok and "clips" in check.message


def test_unreadable_audio_is_one_line(tmp_path):
    check = check_microphone(WavFileSource(tmp_path / "nothing.wav"))
    assert not check.ok and "does not exist" in check.message


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory(pin_class=MockPWMPin)


def test_configured_pins_are_claimed_and_released(factory):
    settings = GpioSettings(led_pin=23, button_pin=24, mute_switch_pin=25, pin_factory="mock")
    check = check_gpio(settings, pin_factory=factory)
    assert check.ok and "ENGAGED" in check.message  # nothing wired to the switch pin reads as muted
    assert check_gpio(settings, pin_factory=factory).ok  # released: a second claim works


def test_pin_clash_fails(factory):
    check = check_gpio(GpioSettings(led_pin=23, button_pin=23, pin_factory="mock"), pin_factory=factory)
    assert not check.ok and "gpio.button_pin" in check.message


def test_pins_configured_without_gpio_fails():
    check = check_gpio(GpioSettings(led_pin=23))  # this machine has no GPIO: simulated pins
    assert not check.ok and "python3-lgpio" in check.message


def test_speaker_found_or_named_missing():
    assert check_speaker("headphones", pa_module=FakePyAudio()).ok
    missing = check_speaker("hdmi", pa_module=FakePyAudio())
    assert not missing.ok and "audio.output_device 'hdmi'" in missing.message
    assert check_speaker("").ok
