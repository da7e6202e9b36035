"""Confirmation tones: the owner *hears* that a privacy command was carried out.

Tones are generated with numpy (no sound files to ship) and played by one worker thread fed by a
small bounded queue, so ``TonePlayer.play`` returns at once and the audio loop never waits on the
speaker. Each tone has a different shape so it can be told apart without looking:

- ``stopped_recording``: two falling beeps; ``resumed``: two rising beeps;
- ``deleted``: three quick high beeps; ``muted``: one low long beep;
- ``confirm``: a rising question ("delete? say yes") before a voice deletion, which waits for the answer.

The microphone hears the speaker. ``playing_until()`` is the monotonic time until which the tone (plus
output latency and the wake model's memory of it) may be in captured audio; the daemon drops wake
hits on frames captured before then. The tones are also pure beeps, far from any wake phrase, and a
test runs them through the real wake detector.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import SAMPLE_RATE
from .audio import open_portaudio

log = logging.getLogger(__name__)

# (frequency Hz, seconds) per beep; 0 Hz is a gap.
TONES: dict[str, tuple[tuple[float, float], ...]] = {
    "stopped_recording": ((880.0, 0.12), (0.0, 0.06), (660.0, 0.16)),
    "resumed": ((660.0, 0.12), (0.0, 0.06), (880.0, 0.16)),
    "deleted": ((1200.0, 0.07), (0.0, 0.05), (1200.0, 0.07), (0.0, 0.05), (1200.0, 0.07)),
    "muted": ((440.0, 0.30),),
    "confirm": ((600.0, 0.10), (0.0, 0.04), (900.0, 0.22)),
    # Home Assistant timers (voxkeep.satellite): a soft rising pair when set, a falling one when cancelled,
    # and a bright triple chime, played three times, when one finishes.
    "timer_started": ((523.0, 0.10), (0.0, 0.04), (784.0, 0.10)),
    "timer_cancelled": ((784.0, 0.10), (0.0, 0.04), (523.0, 0.10)),
    "timer_finished": ((988.0, 0.15), (0.0, 0.08), (1319.0, 0.15), (0.0, 0.08), (988.0, 0.15), (0.0, 0.4)),
}
LEVEL = 0.3
"""Peak amplitude (of full scale): clearly audible on a small speaker without clipping its amplifier."""
FADE_SECONDS = 0.005
"""Raised-cosine fade at each beep's ends, so the speaker does not click."""
ECHO_MARGIN_SECONDS = 1.0
"""Added to the tone's end for output latency and the ~1 s window openWakeWord scores over."""
QUEUE_TONES = 4
"""Tones waiting to play; more than this in a row is a bug upstream, and extra tones are dropped."""


@dataclass(frozen=True)
class Clip:
    """Speech to play (Home Assistant's spoken reply): mono int16 ``samples`` at ``rate``; ``done`` is called
    on the player's thread once it has been played (or could not be)."""

    samples: np.ndarray
    rate: int
    done: Callable[[], None]


def tone_seconds(kind: str) -> float:
    """How long ``kind`` sounds."""
    return sum(seconds for _, seconds in _tone(kind))


def tone_samples(kind: str, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The tone ``kind`` as mono int16 samples at ``rate`` (16 kHz by default, the pipeline's rate)."""
    parts = []
    fade = max(1, int(FADE_SECONDS * rate))
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade))
    for freq, seconds in _tone(kind):
        n = round(seconds * rate)
        if freq == 0.0:
            parts.append(np.zeros(n))
            continue
        beep = np.sin(2 * np.pi * freq * np.arange(n) / rate)
        beep[:fade] *= ramp
        beep[-fade:] *= ramp[::-1]
        parts.append(beep)
    return np.round(np.concatenate(parts) * LEVEL * 32767).astype(np.int16)


def _tone(kind: str) -> tuple[tuple[float, float], ...]:
    try:
        return TONES[kind]
    except KeyError:
        raise ValueError(f"unknown tone {kind!r}; known tones: {', '.join(TONES)}") from None


def resample(samples: np.ndarray, rate: int, to: int) -> np.ndarray:
    """Mono int16 ``samples`` from ``rate`` to ``to`` Hz (soxr, the resampler the microphone path uses)."""
    if rate == to:
        return samples
    import soxr

    out = soxr.resample(samples.astype(np.float32) / 32768.0, rate, to)
    return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)


def find_output(pa: Any, device: str) -> dict[str, Any]:
    """The output device named by ``device``: an index, or a case-insensitive name substring."""
    outputs = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
    outputs = [d for d in outputs if int(d.get("maxOutputChannels", 0)) > 0]
    for info in outputs:
        if str(info["index"]) == device or device.lower() in str(info["name"]).lower():
            return dict(info)
    names = "; ".join(f"{d['index']}: {d['name']}" for d in outputs) or "none"
    raise LookupError(f"no audio output matches audio.output_device '{device}' (outputs: {names}); "
                      "fix audio.output_device or plug the speaker in")


class TonePlayer:
    """Plays confirmation tones on ``output_device`` from its own thread; "" disables tones."""

    def __init__(self, output_device: str, *, pa_module: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.output_device = output_device
        self._pa_module = pa_module
        self._clock = clock
        self._lock = threading.Lock()
        self._until = 0.0
        self._queue: queue.Queue[str | Clip | None] = queue.Queue(maxsize=QUEUE_TONES)
        self.played: list[str] = []
        """Tones that were written to the device, in order (for status and tests)."""
        self._thread: threading.Thread | None = None
        if output_device:
            self._thread = threading.Thread(target=self._run, name="voxkeep-tones", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        """Whether an output device is configured."""
        return self._thread is not None

    def play(self, kind: str) -> bool:
        """Queue ``kind``; never blocks. False if tones are off or the queue is full (tone dropped)."""
        seconds = tone_seconds(kind)  # unknown kinds fail here, in the caller, not in the worker
        if self._thread is None:
            return False
        with self._lock:
            # Tones play one after another: this one ends after whatever is already queued.
            start = max(self._clock(), self._until - ECHO_MARGIN_SECONDS)
            self._until = start + seconds + ECHO_MARGIN_SECONDS
        try:
            self._queue.put_nowait(kind)
        except queue.Full:
            log.warning("confirmation tone '%s' dropped: %d tones already waiting", kind, QUEUE_TONES)
            return False
        return True

    def play_clip(self, clip: Clip) -> bool:
        """Queue speech; never blocks. False (and ``clip.done`` called at once) if there is no speaker or the
        queue is full. The wake guard covers it like a tone: a reply saying the wake word wakes nothing."""
        if self._thread is not None:
            seconds = clip.samples.size / clip.rate
            with self._lock:
                start = max(self._clock(), self._until - ECHO_MARGIN_SECONDS)
                self._until = start + seconds + ECHO_MARGIN_SECONDS
            try:
                self._queue.put_nowait(clip)
                return True
            except queue.Full:
                log.warning("a spoken reply was dropped: %d sounds already waiting", QUEUE_TONES)
        clip.done()
        return False

    def playing_until(self) -> float:
        """Monotonic time before which captured audio may contain a tone; wake hits then are ignored."""
        with self._lock:
            return self._until

    def close(self, timeout: float = 2.0) -> None:
        """Let waiting tones finish (a "muted" tone at shutdown should still be heard), then stop."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("tone worker is stuck on the speaker; leaving it behind")
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._play_now(item)
            except Exception as exc:  # a missing speaker must never take the daemon down
                what = f"the '{item}' tone" if isinstance(item, str) else "a spoken reply"
                log.warning("cannot play %s: %s", what, exc)
            finally:
                if isinstance(item, Clip):
                    item.done()

    def _play_now(self, item: str | Clip) -> None:
        pa_module = self._pa_module
        if pa_module is None:
            import pyaudio as pa_module
        # A fresh PortAudio session per tone: tones are rare, and a USB speaker plugged in later is found.
        pa = open_portaudio(pa_module)
        try:
            info = find_output(pa, self.output_device)
            stream, rate = None, SAMPLE_RATE
            last: Exception | None = None
            first = SAMPLE_RATE if isinstance(item, str) else item.rate
            for rate in dict.fromkeys((first, int(info["defaultSampleRate"]))):
                try:
                    stream = pa.open(format=pa_module.paInt16, channels=1, rate=rate, output=True,
                                     output_device_index=int(info["index"]))
                    break
                except (OSError, ValueError) as exc:
                    last = exc
            if stream is None:
                raise OSError(f"output '{info['name']}' refused {first} Hz and {rate} Hz mono ({last})")
            try:
                samples = tone_samples(item, rate) if isinstance(item, str) else resample(item.samples, item.rate, rate)
                with self._lock:
                    self._until = max(self._until, self._clock() + samples.size / rate + ECHO_MARGIN_SECONDS)
                stream.write(samples.tobytes())
                self.played.append(item if isinstance(item, str) else "speech")
            finally:
                stream.stop_stream()
                stream.close()
        finally:
            pa.terminate()
