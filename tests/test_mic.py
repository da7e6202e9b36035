"""The microphone path, through PortAudio's interface (a fake USB microphone) and the whole daemon."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np
import pytest

from voxkeep import FRAME_SAMPLES
from voxkeep.app import build_app
from voxkeep.audio import DcRemover, MicSource, list_input_devices
from voxkeep.config import load_settings
from voxkeep.errors import AudioInputError
from voxkeep.events import Event, State, Wake
from voxkeep.testing.fakes import FakePyAudio
from voxkeep.testing.speech import silence, speak


class Running:
    """A daemon on a fake microphone in a background thread, with its events in a queue."""

    def __init__(self, state_dir: Path, mic: FakePyAudio, **overrides) -> None:
        settings = load_settings(None, {"state_dir": str(state_dir), "wake": {"words": ["alexa"]}, **overrides})
        self.events: queue.Queue[Event] = queue.Queue()
        self.mic = mic
        self.app = build_app(settings, source=MicSource(pa_module=mic), extra_observers=[self.events.put])
        self.thread = threading.Thread(target=self.app.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.app.daemon.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def wait_for(self, pred, timeout: float = 20.0) -> Event:
        while True:
            event = self.events.get(timeout=timeout)
            if pred(event):
                return event


def _room(*parts) -> np.ndarray:
    return np.concatenate([silence(p) if isinstance(p, float) else speak(p) for p in parts])


def test_devices_are_listed_and_chosen_by_name_or_index() -> None:
    mic = FakePyAudio(silence(0.1))
    assert [d["name"] for d in list_input_devices(mic)] == ["USB PnP Sound Device"]
    for spec in ("usb pnp", "1", ""):
        src = MicSource(spec, pa_module=mic)
        src.open()
        assert src.device_name == "USB PnP Sound Device"
        src.close()
    with pytest.raises(AudioInputError, match="voxkeep devices"):
        MicSource("webcam", pa_module=mic).open()
    with pytest.raises(AudioInputError, match="index 7"):
        MicSource("7", pa_module=mic).open()


@pytest.mark.scene
def test_a_44k_stereo_mic_is_resampled_and_hears_the_wake_word(state_dir: Path) -> None:
    mic = FakePyAudio(_room(1.5, "alexa", 3.0), native_rate=44100, channels=2, speed=8.0)
    with Running(state_dir, mic) as run:
        wake = run.wait_for(lambda e: isinstance(e, Wake))
        assert wake.wake_word == "alexa"
        assert 1.5 <= wake.t <= 3.0
        stream = mic.open_streams[0]
        assert (stream.rate, stream.channels) == (44100, 2)
        assert "resampled from 44100 Hz" in run.app.daemon.source.description


def test_mute_closes_the_stream_and_only_the_owner_reopens_it(state_dir: Path) -> None:
    mic = FakePyAudio(_room(1.0, "alexa", 1.0, "alexa", 2.0), accepts_16k=True, speed=4.0)
    with Running(state_dir, mic) as run:
        run.wait_for(lambda e: isinstance(e, State) and e.mic_open)
        assert run.app.privacy.request("mute", "button").ok
        closed = run.wait_for(lambda e: isinstance(e, State) and not e.mic_open)
        assert closed.mode == "muted"
        assert mic.open_streams == []  # the hardware stream itself is closed, not just ignored
        assert not run.app.privacy.request("unmute", "voice").ok
        assert mic.open_streams == []
        assert run.app.privacy.request("unmute", "button").ok
        reopened = run.wait_for(lambda e: isinstance(e, State) and e.mic_open)
        assert reopened.mode == "listening"
        assert len(mic.open_streams) == 1 and len(mic.streams) == 2


def test_a_restart_comes_back_muted_without_opening_the_mic(state_dir: Path) -> None:
    mic = FakePyAudio(_room(1.0, "alexa", 1.0), accepts_16k=True, speed=4.0)
    with Running(state_dir, mic) as run:
        run.app.privacy.request("mute", "cli")
        run.wait_for(lambda e: isinstance(e, State) and not e.mic_open)
    mic2 = FakePyAudio(_room(1.0, "alexa", 1.0), accepts_16k=True, speed=4.0)
    with Running(state_dir, mic2) as run:
        first = run.wait_for(lambda e: isinstance(e, State))
        assert (first.mode, first.mic_open, first.cause) == ("muted", False, "startup")
        assert run.events.empty() or not any(isinstance(e, Wake) for e in list(run.events.queue))
        assert mic2.streams == []  # never opened


def test_a_microphone_that_stops_delivering_is_an_error_not_a_hang(state_dir: Path) -> None:
    mic = FakePyAudio(silence(0.5), accepts_16k=True)
    src = MicSource(pa_module=mic, read_timeout=0.3)
    mic.take = lambda *a: None  # the USB cable was pulled
    src.open()
    with pytest.raises(AudioInputError, match="delivered no audio"):
        src.read()
    src.close()


def _frames(samples: np.ndarray) -> list[np.ndarray]:
    return [samples[i:i + FRAME_SAMPLES] for i in range(0, len(samples) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]


def test_a_microphone_offset_is_taken_out_and_the_sound_kept() -> None:
    said = _room(2.0, "alexa, stop recording", 1.0).astype(np.int32)
    remover = DcRemover()
    out = [remover(np.clip(f + 300, -32768, 32767).astype(np.int16)) for f in _frames(said)]
    for before, after in zip(_frames(said), out, strict=True):
        shift = after.astype(np.int32) - before
        assert np.all(shift == shift[0])  # moved, not filtered: the wake models hear the same waveform
        assert abs(shift[0]) <= 1  # the 300 (-40 dBFS of "sound" that is none) is gone from the first frame on


def test_a_microphone_without_an_offset_passes_bit_for_bit() -> None:
    said = _room(1.0, "alexa, stop recording", 1.0)
    said[np.abs(said) < 40] = 0  # a gating microphone: exact zeros between words too
    remover = DcRemover()
    assert all(remover(f) is f for f in _frames(said))
