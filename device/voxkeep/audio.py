"""Audio sources: the microphone, a WAV file or a raw stdin pipe, all as 80 ms int16 frames at 16 kHz.

Every source has the same small interface (``open``, ``read``, ``close``, ``is_open``) so the daemon
loop never knows which it has. ``read`` returns one frame of exactly ``FRAME_SAMPLES`` samples, or
``None`` at the end of the input. Files of any rate, width and channel count are mixed down and
resampled with soxr; a microphone that cannot open 16 kHz mono is opened at its native rate and
resampled the same way.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import sys
import threading
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soxr

from . import FRAME_SAMPLES, SAMPLE_RATE
from .errors import AudioInputError

log = logging.getLogger(__name__)

FRAME_BYTES = FRAME_SAMPLES * 2
MIC_QUEUE_FRAMES = 64
"""About 5 s of audio buffered between the PortAudio thread and the loop before frames are dropped."""
MIN_RATE, MAX_RATE = 4000, 192000
"""Sample rates a sound file may declare: below telephone quality or above studio rates is a damaged header
(a 1 Hz file resampled to 16 kHz turns each 16384-frame block into 262 million samples)."""
MAX_CHANNELS = 32
"""Channels a sound file may declare; each decoded block holds BLOCK frames of every channel."""


DC_FRAMES = 125
"""Frames (10 s) ``DcRemover`` remembers. An offset is steady, so it can be learnt slowly."""
DC_QUIET_SHARE = 3
"""``DcRemover`` estimates the offset from the quietest third of those frames only: the means of speech frames
stray by hundreds of steps (an 80 ms frame of a vowel or a breath is not symmetric), those of a pause do not, and
even a television leaves its softest third of frames."""
DC_IGNORED = 4.0
"""Offsets smaller than this (int16 steps, -78 dBFS) are left in: far under any room's tone, and a microphone without
an offset then passes through bit for bit, the exact zeros of a gating one included (``commands.ungated``)."""


class DcRemover:
    """Takes a microphone's constant offset (DC) out of its frames, before anything listens to them.

    Why: many microphones, the I2S MEMS boards makers wire to a Pi above all, add an offset of hundreds of steps to
    every sample, and real recordings carry them too (bench corpus: up to 4,600 in the Debian packages' speech).
    An offset carries no sound but counts as level. With 300 added to every sample of bench/commands_eval.py's
    streams, the wake word's energy gate took the offset for the room and never woke for a talker across the room
    (REPORT: 0 of 84 requests, against 68 without the offset), and the command recogniser understood fewer
    requests (REPORT, a gating microphone: 49 of 75 woken requests, against 61 of 73). With the offset out, every
    figure of both splits is what it is without one.
    The offset (the median mean of the quietest recent frames, DC_QUIET_SHARE) is subtracted as a whole number of
    steps: a shift, not a filter, so the wake models hear the same waveform. Recordings keep no offset either.
    """

    def __init__(self) -> None:
        self._frames: deque[tuple[float, float]] = deque(maxlen=DC_FRAMES)
        """(RMS about the mean, mean) of each recent frame."""

    @property
    def offset(self) -> float:
        """The current estimate of the microphone's offset, in int16 steps (0 before the first frame)."""
        if not self._frames:
            return 0.0
        quiet = sorted(self._frames)[:-(-len(self._frames) // DC_QUIET_SHARE)]
        return float(np.median([mean for _, mean in quiet]))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` (int16) without the offset; the same array when there is none worth removing."""
        x = frame.astype(np.float64)
        mean = float(np.mean(x))
        self._frames.append((float(np.sqrt(np.mean((x - mean) ** 2))), mean))
        offset = self.offset
        if abs(offset) < DC_IGNORED:
            return frame
        return np.clip(frame.astype(np.int32) - round(offset), -32768, 32767).astype(np.int16)


class AudioSource(ABC):
    """Frames in: the one thing the daemon loop asks of any input."""

    live: bool = False
    """True for a microphone: time passes while it is closed, and it must be closed when muted."""

    def __init__(self) -> None:
        self._open = False

    @property
    def is_open(self) -> bool:
        """Whether audio is really being captured right now (the LED reflects this)."""
        return self._open

    def open(self) -> None:
        """Start capturing."""
        self._open = True

    def close(self) -> None:
        """Stop capturing and release the device."""
        self._open = False

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame (int16, FRAME_SAMPLES long), or None at end of input."""

    @property
    @abstractmethod
    def description(self) -> str:
        """What this source is, for logs and the summary line."""


class _Framer:
    """Cuts a stream of int16 chunks into exact frames, resampling to 16 kHz on the way."""

    def __init__(self, rate: int) -> None:
        self._resampler = (
            soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if rate != SAMPLE_RATE
            else None
        )
        self._pending = np.zeros(0, dtype=np.int16)

    def push(self, mono: np.ndarray, last: bool = False) -> list[np.ndarray]:
        """Add mono samples (float32 in [-1, 1] or int16); return the complete frames now available."""
        if self._resampler is not None:
            f32 = mono.astype(np.float32) / 32768.0 if mono.dtype == np.int16 else mono
            out = self._resampler.resample_chunk(f32, last=last)
            mono = np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)
        elif mono.dtype != np.int16:
            mono = np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
        buf = np.concatenate([self._pending, mono]) if self._pending.size else mono
        n = len(buf) // FRAME_SAMPLES
        frames = [buf[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES].copy() for i in range(n)]
        self._pending = buf[n * FRAME_SAMPLES:]
        if last and self._pending.size:
            tail = np.zeros(FRAME_SAMPLES, dtype=np.int16)
            tail[: self._pending.size] = self._pending
            frames.append(tail)
            self._pending = np.zeros(0, dtype=np.int16)
        return frames


def _check_riff_length(path: Path) -> None:
    """Reject a WAV whose data chunk is shorter than its header promises (a cut-off copy).

    libsndfile quietly reads what is there; a user replaying a bug report needs to know the file is
    incomplete. Streaming placeholders (0 or 0xFFFFFFFF sizes, as written by ``arecord`` to a pipe)
    are accepted.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return
            size = path.stat().st_size
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                cid, clen = struct.unpack("<4sI", fh.read(8))
                if cid == b"data":
                    if clen in (0, 0xFFFFFFFF, 0x7FFFFFFF) or clen > 0x7FFFFFFF:
                        return
                    have = size - pos - 8
                    if have < clen:
                        raise AudioInputError(
                            f"{path} is truncated: its header promises {clen} bytes of audio but only "
                            f"{have} are there; use a complete copy of the file")
                    return
                pos += 8 + clen + (clen & 1)
    except AudioInputError:
        raise
    except OSError as exc:
        raise AudioInputError(f"cannot read {path}: {exc.strerror}") from None


class WavFileSource(AudioSource):
    """A sound file (WAV, FLAC, ...) of any rate, sample width and channel count."""

    BLOCK = 16384

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._file: Any = None
        self._framer: _Framer | None = None
        self._ready: list[np.ndarray] = []
        self._eof = False

    @property
    def description(self) -> str:
        return str(self.path)

    def open(self) -> None:
        import soundfile

        if not self.path.exists():
            raise AudioInputError(f"audio file {self.path} does not exist; check the --input path")
        if not self.path.is_file():  # a directory, FIFO or device (/dev/zero) would hang or never end
            raise AudioInputError(f"{self.path} is not a regular file (a directory, pipe or device); give a sound "
                                  "file, or pipe raw audio in with --input -")
        _check_riff_length(self.path)
        try:
            self._file = soundfile.SoundFile(str(self.path))
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise AudioInputError(f"{self.path} is not a readable audio file ({reason}); "
                                  "give a WAV, FLAC or OGG file") from None
        rate, channels = self._file.samplerate, self._file.channels
        problem = ("contains no audio" if self._file.frames == 0 else
                   f"declares a sample rate of {rate} Hz, outside {MIN_RATE}-{MAX_RATE} Hz"
                   if not MIN_RATE <= rate <= MAX_RATE else
                   f"declares {channels} channels, more than {MAX_CHANNELS}" if not 1 <= channels <= MAX_CHANNELS
                   else "")
        if problem:  # an absurd header would make resampling allocate gigabytes per block
            self._file.close()
            raise AudioInputError(f"{self.path} {problem}; it is damaged or not a recording: record or export "
                                  "it again")
        self._framer = _Framer(int(rate))
        super().open()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()

    def read(self) -> np.ndarray | None:
        while not self._ready and not self._eof:
            assert self._file is not None and self._framer is not None, "read() before open()"
            try:
                block = self._file.read(self.BLOCK, dtype="float32", always_2d=True)
            except RuntimeError as exc:
                raise AudioInputError(f"{self.path} is damaged ({exc}); use a complete copy") from None
            self._eof = len(block) < self.BLOCK
            self._ready.extend(self._framer.push(block.mean(axis=1), last=self._eof))
        return self._ready.pop(0) if self._ready else None


def _closed(stream: Any) -> bool:
    """Whether a standard stream has no open file behind it (started with ``<&-``)."""
    try:
        os.fstat(stream.fileno())
    except (OSError, ValueError):
        return True
    return False


class StdinSource(AudioSource):
    """Raw S16_LE 16 kHz mono PCM on a pipe, e.g. from ``arecord -r 16000 -f S16_LE -c 1 -t raw``."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        super().__init__()
        self._stream = stream
        self._done = False

    @property
    def description(self) -> str:
        return "stdin (raw S16_LE 16 kHz mono)"

    def open(self) -> None:
        if self._stream is None:
            if sys.stdin is None or _closed(sys.stdin):
                raise AudioInputError(
                    "--input - reads raw audio from a pipe, but stdin is closed; pipe audio in, e.g. "
                    "arecord -r 16000 -f S16_LE -c 1 -t raw | voxkeep run --input -")
            if sys.stdin.isatty():
                raise AudioInputError(
                    "--input - reads raw audio from a pipe, but stdin is a terminal; "
                    "pipe audio in, e.g. arecord -r 16000 -f S16_LE -c 1 -t raw | voxkeep run --input -")
            self._stream = sys.stdin.buffer
        super().open()

    def read(self) -> np.ndarray | None:
        if self._done or self._stream is None:
            return None
        chunks = []
        need = FRAME_BYTES
        while need:
            chunk = self._stream.read(need)
            if not chunk:
                break
            chunks.append(chunk)
            need -= len(chunk)
        data = b"".join(chunks)
        if need:
            self._done = True
            if not data:
                return None
            if len(data) % 2:
                log.warning("stdin ended in the middle of a sample; the last byte was ignored")
                data = data[:-1]
                if not data:
                    return None
            data = data + b"\0" * (FRAME_BYTES - len(data))
        return np.frombuffer(data, dtype="<i2").astype(np.int16)


def open_portaudio(pa_module: Any) -> Any:
    """``pa_module.PyAudio()`` without the dozens of ALSA/JACK probe messages it writes to stderr.

    PortAudio probes every ALSA plugin and JACK at start-up and the C libraries print each miss
    straight to file descriptor 2; real failures still reach us as PortAudio errors, so the probe
    chatter is hidden for the duration of the call only.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            try:
                return pa_module.PyAudio()
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _load_pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise AudioInputError(f"PyAudio is not usable ({exc}); install portaudio19-dev and pyaudio") from None
    return pyaudio


def list_input_devices(pa_module: Any = None) -> list[dict[str, Any]]:
    """Every PortAudio device with input channels: index, name, channels, native rate."""
    pa_module = pa_module or _load_pyaudio()
    pa = open_portaudio(pa_module)
    try:
        out = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                out.append({"index": i, "name": str(info["name"]),
                            "channels": int(info["maxInputChannels"]),
                            "rate": int(info["defaultSampleRate"])})
        return out
    finally:
        pa.terminate()


class MicSource(AudioSource):
    """A PortAudio microphone, opened in callback mode so capture never waits on the loop.

    The PortAudio thread only copies bytes into a bounded queue; the loop's ``read`` takes them out.
    If the loop falls more than ``MIC_QUEUE_FRAMES`` behind, the oldest audio is dropped and counted.
    """

    live = True

    def __init__(self, device: str = "", *, pa_module: Any = None, read_timeout: float = 2.0) -> None:
        super().__init__()
        self.device = device
        self._pa_module = pa_module
        self._pa: Any = None
        self._stream: Any = None
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=MIC_QUEUE_FRAMES)
        self._framer: _Framer | None = None
        self._channels = 1
        self._lock = threading.Lock()
        self.read_timeout = read_timeout
        self.dropped_frames = 0
        self.device_name = ""
        self.native_rate = SAMPLE_RATE

    @property
    def description(self) -> str:
        rate = "" if self.native_rate == SAMPLE_RATE else f", resampled from {self.native_rate} Hz"
        return f"microphone '{self.device_name}'{rate}"

    def _pick_device(self, pa: Any) -> dict[str, Any]:
        devices = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                devices.append(info)
        if not devices:
            raise AudioInputError("no microphone found; plug one in, or use --input FILE.wav")
        if self.device == "":
            try:
                return dict(pa.get_default_input_device_info())
            except OSError:
                return dict(devices[0])
        if self.device.isdigit():
            for info in devices:
                if int(info["index"]) == int(self.device):
                    return dict(info)
            raise AudioInputError(f"no input device with index {self.device}; see 'voxkeep devices'")
        matches = [d for d in devices if self.device.lower() in str(d["name"]).lower()]
        if not matches:
            raise AudioInputError(f"no input device named like '{self.device}'; see 'voxkeep devices'")
        return dict(matches[0])

    def open(self) -> None:
        pa_module = self._pa_module or _load_pyaudio()
        self._pa_module = pa_module
        self._pa = open_portaudio(pa_module)
        try:
            info = self._pick_device(self._pa)
            self.device_name = str(info["name"])
            index = int(info["index"])
            attempts = [(SAMPLE_RATE, 1), (int(info["defaultSampleRate"]), 1),
                        (int(info["defaultSampleRate"]), max(1, int(info["maxInputChannels"])))]
            last_error: Exception | None = None
            for rate, channels in attempts:
                try:
                    self._stream = self._pa.open(
                        format=pa_module.paInt16, channels=channels, rate=rate, input=True,
                        input_device_index=index, frames_per_buffer=int(rate * 0.08),
                        stream_callback=self._callback)
                except (OSError, ValueError) as exc:
                    last_error = exc
                    continue
                self.native_rate, self._channels = rate, channels
                break
            else:
                raise AudioInputError(
                    f"cannot open microphone '{self.device_name}' ({last_error}); "
                    "check it is not in use and that you are in the 'audio' group")
        except BaseException:
            self._pa.terminate()
            self._pa = None
            raise
        self._framer = _Framer(self.native_rate)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._stream.start_stream()
        super().open()
        log.info("listening on %s", self.description)

    def _callback(self, data: bytes, frame_count: int, time_info: Any, status: int) -> tuple[None, int]:
        """PortAudio's thread: copy, mix down, hand over. Never blocks."""
        samples = np.frombuffer(data, dtype="<i2")
        if self._channels > 1:
            samples = samples.reshape(-1, self._channels).mean(axis=1).astype(np.int16)
        assert self._framer is not None
        with self._lock:
            frames = self._framer.push(samples)
        for frame in frames:
            try:
                self._queue.put_nowait(frame)
            except queue.Full:
                self.dropped_frames += 1
        return None, self._pa_module.paContinue

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()
                self._stream.close()
            finally:
                self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None
        super().close()

    def read(self) -> np.ndarray | None:
        try:
            return self._queue.get(timeout=self.read_timeout)
        except queue.Empty:
            raise AudioInputError(
                f"microphone '{self.device_name}' delivered no audio for {self.read_timeout:.0f} s; "
                "check the cable and 'voxkeep devices'") from None


def make_source(spec: str, device: str = "", *, pa_module: Any = None) -> AudioSource:
    """The source named by ``--input``: "mic", "-" (stdin) or a file path."""
    if spec == "mic":
        return MicSource(device, pa_module=pa_module)
    if spec == "-":
        return StdinSource()
    return WavFileSource(spec)
