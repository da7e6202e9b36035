"""A fake PyAudio module that behaves like a real USB microphone, for tests and benchmarks without one.

It has the device table, the stream lifecycle and the callback thread of PortAudio, so the real
``MicSource`` code runs unchanged; tests look at ``stream.closed`` to see what a user's hardware
would do (the LED and the mute promise depend on it).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np


class FakeStream:
    def __init__(self, pa: FakePyAudio, *, rate: int, channels: int, frames_per_buffer: int,
                 stream_callback: Any, **_: Any) -> None:
        self.pa = pa
        self.rate = rate
        self.channels = channels
        self.chunk = frames_per_buffer
        self.callback = stream_callback
        self.closed = False
        self.active = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)

    def start_stream(self) -> None:
        self.active = True
        self._thread.start()

    def _pump(self) -> None:
        """Deliver the device's audio in chunks, at ``pa.speed`` times real time (0 = as fast as taken)."""
        # Paced from the room's start, so microphones that opened a little apart still hear it together.
        started, chunks = (time.monotonic() if self.pa.start_at is None else self.pa.start_at), 0
        self._stop.wait(max(0.0, started - time.monotonic()))
        while not self._stop.is_set():
            data = self.pa.take(self.chunk, self.rate, self.channels)
            if data is None:
                self._stop.wait(0.01)
                continue
            self.callback(data, self.chunk, {}, 0)
            chunks += 1
            if self.pa.speed:  # paced against the start, like a sound card's clock: no drift
                due = started + chunks * self.chunk / self.rate / self.pa.speed
                self._stop.wait(max(0.0, due - time.monotonic()))

    def stop_stream(self) -> None:
        self.active = False
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def close(self) -> None:
        self.closed = True

    def is_active(self) -> bool:
        return self.active


class FakePyAudio:
    """One input device; ``audio`` (16 kHz int16) is what the room 'says', replayed at the device's rate."""

    paInt16 = 8
    paContinue = 0

    def __init__(self, audio: np.ndarray, *, name: str = "USB PnP Sound Device", native_rate: int = 44100,
                 channels: int = 2, accepts_16k: bool = False, speed: float = 0.0) -> None:
        self.audio = audio
        self.name = name
        self.native_rate = native_rate
        self.channels = channels
        self.accepts_16k = accepts_16k
        self.speed = speed
        self.start_at: float | None = None
        """``time.monotonic()`` at which the room starts talking (set before the streams open): several speakers
        in one home hear it together."""
        self.streams: list[FakeStream] = []
        self._pos = 0.0  # seconds of audio delivered so far
        self._lock = threading.Lock()

    # The module-level constructor: `pa_module.PyAudio()` returns the same fake so tests see all streams.
    def PyAudio(self) -> FakePyAudio:
        return self

    def terminate(self) -> None:
        pass

    def get_device_count(self) -> int:
        return 2

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        if i == 0:
            return {"index": 0, "name": "HDMI output", "maxInputChannels": 0, "defaultSampleRate": 48000.0}
        return {"index": 1, "name": self.name, "maxInputChannels": self.channels,
                "defaultSampleRate": float(self.native_rate)}

    def get_default_input_device_info(self) -> dict[str, Any]:
        return self.get_device_info_by_index(1)

    def open(self, *, rate: int, channels: int, **kw: Any) -> FakeStream:
        if (rate == 16000 and not self.accepts_16k) or rate not in (16000, self.native_rate):
            raise OSError(-9997, "Invalid sample rate")
        if channels not in (1, self.channels) or (channels == 1 and rate != 16000 and self.channels != 1):
            raise OSError(-9998, "Invalid number of channels")
        stream = FakeStream(self, rate=rate, channels=channels, **kw)
        self.streams.append(stream)
        return stream

    @property
    def open_streams(self) -> list[FakeStream]:
        return [s for s in self.streams if not s.closed]

    def take(self, n: int, rate: int, channels: int) -> bytes | None:
        """The next ``n`` samples of the room at ``rate``; silence once the scripted audio is over."""
        with self._lock:
            start = self._pos
            self._pos += n / rate
        idx = (start + np.arange(n) / rate) * 16000
        # Only the stretch of the room this chunk covers: interpolating over all of a long scene for every
        # chunk cost more CPU than the daemon listening to it.
        lo = max(0, int(idx[0]) - 1)
        part = self.audio[lo:int(idx[-1]) + 2].astype(np.float64)
        mono = np.interp(idx, lo + np.arange(len(part)), part, left=0, right=0) if len(part) else np.zeros(n)
        samples = np.repeat(mono.astype(np.int16)[:, None], channels, axis=1)
        return samples.astype("<i2").tobytes()

    @property
    def seconds_delivered(self) -> float:
        return self._pos


class FakeSpeaker:
    """A pyaudio stand-in with one output device that accepts only ``rates``; records what it is given.

    For the tone player and Home Assistant's spoken replies in tests and simulations: ``seconds_played``
    says how much was played, ``written`` holds (rate, bytes) per write.
    """

    paInt16 = 8

    def __init__(self, name: str = "USB Speaker", rates: tuple[int, ...] = (48000,)) -> None:
        self.name = name
        self.rates = rates
        self.written: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    def PyAudio(self) -> FakeSpeaker:
        return self

    def terminate(self) -> None:
        pass

    def get_device_count(self) -> int:
        return 1

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        return {"index": 0, "name": self.name, "maxInputChannels": 0, "maxOutputChannels": 2,
                "defaultSampleRate": float(self.rates[0])}

    def open(self, *, rate: int, **_: Any) -> _SpeakerStream:
        if rate not in self.rates:
            raise OSError(-9997, "Invalid sample rate")
        return _SpeakerStream(self, rate)

    @property
    def seconds_played(self) -> float:
        with self._lock:
            return sum(len(data) / 2 / rate for rate, data in self.written)


class _SpeakerStream:
    def __init__(self, speaker: FakeSpeaker, rate: int) -> None:
        self._speaker, self._rate = speaker, rate

    def write(self, data: bytes) -> None:
        with self._speaker._lock:
            self._speaker.written.append((self._rate, data))

    def stop_stream(self) -> None:
        pass

    def close(self) -> None:
        pass
