"""Confirmation tones: what reaches the speaker (through a recording fake PyAudio), and that the
speaker's own tone never wakes the real wake-word detector."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.audio import WavFileSource
from voxkeep.config import WakeSettings
from voxkeep.tones import ECHO_MARGIN_SECONDS, QUEUE_TONES, TONES, TonePlayer, tone_samples, tone_seconds
from voxkeep.wake import WakeDetector

WAKE_WORDS = ["alexa", "hey_jarvis", "hey_mycroft", "hey_marvin"]


class FakeStream:
    def __init__(self, owner: FakePyAudio, rate: int, kwargs: dict[str, Any]) -> None:
        self.owner, self.rate, self.kwargs = owner, rate, kwargs
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.owner.writing.set()
        self.owner.release.wait(5)
        self.written += data

    def stop_stream(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        self.owner.done.release()


class FakePyAudio:
    """Stands in for the pyaudio module: two output devices, records every stream it opens."""

    paInt16 = 8

    def __init__(self, refuse_rates: tuple[int, ...] = ()) -> None:
        self.devices = [
            {"index": 0, "name": "USB Microphone", "maxInputChannels": 1, "maxOutputChannels": 0,
             "defaultSampleRate": 48000.0},
            {"index": 1, "name": "bcm2835 Headphones", "maxInputChannels": 0, "maxOutputChannels": 2,
             "defaultSampleRate": 48000.0},
        ]
        self.refuse_rates = refuse_rates
        self.streams: list[FakeStream] = []
        self.sessions_open = 0
        self.writing = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.done = threading.Semaphore(0)

    def PyAudio(self) -> FakePyAudio:
        self.sessions_open += 1
        return self

    def terminate(self) -> None:
        self.sessions_open -= 1

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        return self.devices[i]

    def open(self, *, rate: int, **kwargs: Any) -> FakeStream:
        if rate in self.refuse_rates:
            raise OSError(-9997, "Invalid sample rate")
        stream = FakeStream(self, rate, kwargs)
        self.streams.append(stream)
        return stream

    def wait_streams(self, n: int) -> None:
        for _ in range(n):
            assert self.done.acquire(timeout=5), "the tone worker never finished a tone"


def test_tone_reaches_the_named_speaker_whole_and_the_device_is_released():
    fake = FakePyAudio()
    player = TonePlayer("headphones", pa_module=fake)
    assert player.play("stopped_recording") is True
    fake.wait_streams(1)
    player.close()
    (stream,) = fake.streams
    assert stream.kwargs["output"] is True and stream.kwargs["output_device_index"] == 1
    assert stream.kwargs["channels"] == 1 and stream.kwargs["format"] == fake.paInt16
    assert stream.written == tone_samples("stopped_recording", stream.rate).tobytes()
    assert stream.closed and fake.sessions_open == 0
    assert player.played == ["stopped_recording"]


def test_speaker_that_refuses_16k_gets_the_tone_at_its_own_rate():
    fake = FakePyAudio(refuse_rates=(SAMPLE_RATE,))
    player = TonePlayer("1", pa_module=fake)
    player.play("muted")
    fake.wait_streams(1)
    player.close()
    (stream,) = fake.streams
    assert stream.rate == 48000
    assert len(stream.written) // 2 == round(tone_seconds("muted") * 48000)


def test_no_output_device_configured_plays_nothing():
    fake = FakePyAudio()
    player = TonePlayer("", pa_module=fake)
    assert player.enabled is False
    assert player.play("deleted") is False
    assert fake.streams == [] and fake.sessions_open == 0
    assert player.playing_until() == 0.0


def test_missing_speaker_is_a_warning_naming_the_fix_and_the_daemon_goes_on(caplog):
    fake = FakePyAudio()
    player = TonePlayer("hdmi", pa_module=fake)
    with caplog.at_level(logging.WARNING, logger="voxkeep.tones"):
        player.play("deleted")
        player.close()  # joins the worker, so the warning has been logged
    assert fake.streams == []
    assert "audio.output_device 'hdmi'" in caplog.text and "bcm2835 Headphones" in caplog.text


def test_play_never_blocks_even_when_the_speaker_hangs():
    fake = FakePyAudio()
    fake.release.clear()  # the device accepts no audio until released
    player = TonePlayer("headphones", pa_module=fake)
    player.play("muted")
    assert fake.writing.wait(5)
    results = [player.play("deleted") for _ in range(QUEUE_TONES + 2)]
    assert results == [True] * QUEUE_TONES + [False, False]
    fake.release.set()
    fake.wait_streams(1 + QUEUE_TONES)
    player.close()
    assert player.played == ["muted"] + ["deleted"] * QUEUE_TONES


def test_playing_until_covers_queued_tones_back_to_back():
    now = [100.0]
    player = TonePlayer("headphones", pa_module=FakePyAudio(), clock=lambda: now[0])
    player.play("muted")
    first = 100.0 + tone_seconds("muted") + ECHO_MARGIN_SECONDS
    assert player.playing_until() >= first
    player.play("deleted")
    assert player.playing_until() >= first + tone_seconds("deleted")
    player.close()


def test_unknown_tone_fails_in_the_caller():
    player = TonePlayer("", pa_module=FakePyAudio())
    with pytest.raises(ValueError, match=r"unknown tone 'beep'.*stopped_recording"):
        player.play("beep")


def dominant_frequencies(samples: np.ndarray) -> list[int]:
    """The loudest frequency of each beep, in order: beeps are runs of loud 10 ms blocks."""
    block = SAMPLE_RATE // 100
    blocks = samples[: samples.size // block * block].reshape(-1, block).astype(float)
    loud = np.sqrt((blocks**2).mean(axis=1)) > 300
    out, start = [], None
    for i, is_loud in enumerate([*loud, False]):
        if is_loud and start is None:
            start = i
        elif not is_loud and start is not None:
            run = blocks[start:i].ravel()
            out.append(int(np.argmax(np.abs(np.fft.rfft(run))) * SAMPLE_RATE / run.size))
            start = None
    return out


def test_each_confirmation_sounds_different():
    shapes = {kind: (dominant_frequencies(tone_samples(kind)), tone_samples(kind).size) for kind in TONES}
    assert len(set(map(str, shapes.values()))) == len(TONES)
    # Falling for "stopped", rising for "resumed": the direction is the message.
    stopped, resumed = shapes["stopped_recording"][0], shapes["resumed"][0]
    assert stopped[0] > stopped[1] and resumed[0] < resumed[1]
    assert len(shapes["deleted"][0]) == 3 and len(shapes["muted"][0]) == 1
    for kind in TONES:
        samples = tone_samples(kind)
        assert samples.dtype == np.int16 and np.abs(samples).max() < 32767  # no clipping


def wake_hits(detector: WakeDetector, audio: np.ndarray) -> list[str]:
    padded = np.concatenate([audio, np.zeros((-audio.size) % FRAME_SAMPLES, dtype=np.int16)])
    hits = []
    for frame in padded.reshape(-1, FRAME_SAMPLES):
        hits += [h.wake_word for h in detector.process(frame)]
    return hits


@pytest.fixture(scope="module")
def detector(models_dir: Path) -> WakeDetector:
    return WakeDetector(WakeSettings(words=WAKE_WORDS, refractory_seconds=0.0), models_dir)


def test_the_speakers_own_tones_never_wake_the_detector(detector):
    silence = np.zeros(2 * SAMPLE_RATE, dtype=np.int16)
    rng = np.random.default_rng(7)
    for kind in TONES:
        detector.reset()
        # As the microphone hears it: quieter, over a little room noise, followed by silence.
        tone = (tone_samples(kind) * 0.5).astype(np.int16)
        noise = rng.normal(0, 60, tone.size).astype(np.int16)
        assert wake_hits(detector, np.concatenate([silence, tone + noise, tone, silence])) == [], kind


def test_the_same_detector_does_wake_on_a_spoken_wake_word(detector, speech):
    """Control: the path above can fail; a real wake phrase through it does wake."""
    source = WavFileSource(speech("hey jarvis", pad=1.0))
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    detector.reset()
    assert "hey_jarvis" in wake_hits(detector, np.concatenate(frames))
