"""A loopback Home Assistant that drives a Wyoming satellite the way its ``wyoming`` integration does.

Built on ``wyoming``'s own async client, in a thread with its own event loop, for the tests, the
``voxkeep simulate`` satellite scenario and the latency benchmark. The flow follows Home Assistant's
assist_satellite: a config-flow probe (its own connection: describe, info, close), then the satellite
connection: run-satellite, describe, a ping every ``PING_SECONDS`` (each pong answered); detection and
run-pipeline start a pipeline, audio-chunks feed it and audio-stop ends it; it answers with a transcript,
synthesize and a spoken reply (audio-start/chunk/stop at 22050 Hz, 2 kB chunks), and waits for played.
Timers and pause-satellite are sent on request. Everything received is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

REPLY_RATE = 22050
"""Home Assistant asks its TTS for 22050 Hz, 16-bit mono for Wyoming satellites."""
CHUNK_BYTES = 2048
PING_SECONDS = 2.0


@dataclass
class Pipeline:
    """One pipeline run as Home Assistant saw it."""

    wake_word: str | None
    start_stage: str
    end_stage: str
    audio: bytearray = field(default_factory=bytearray)
    chunks: int = 0
    first_chunk_at: float | None = None
    """time.monotonic() when the first audio-chunk arrived."""
    stopped: bool = False


class LoopbackHomeAssistant:
    """See the module docstring; ``start()`` connects, ``close()`` disconnects."""

    def __init__(self, host: str, port: int, *, transcript: str = "what will the weather be like tomorrow",
                 reply_text: str = "Tomorrow will be sunny.", reply_audio: np.ndarray | None = None,
                 probe: bool = True) -> None:
        self.host, self.port = host, port
        self.transcript = transcript
        self.reply_text = reply_text
        self.reply_audio = reply_audio if reply_audio is not None else _chime()
        self.probe = probe
        self.info: Any = None
        self.probe_info: Any = None
        self.types: list[str] = []
        """Every event type received on the satellite connection, in order."""
        self.detections: list[str | None] = []
        self.pipelines: list[Pipeline] = []
        self.played = 0
        self.pongs = 0
        self.closed_by_peer = threading.Event()
        self._played = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._client: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="loopback-home-assistant", daemon=True)

    # -- the test's side ---------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> LoopbackHomeAssistant:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the loopback Home Assistant could not connect")
        if self._error is not None:
            raise self._error
        return self

    def send(self, event: Any, timeout: float = 5.0) -> None:
        """Send a Wyoming event (e.g. PauseSatellite().event()) on the satellite connection."""
        asyncio.run_coroutine_threadsafe(self._client.write_event(event), self._loop).result(timeout)

    def wait_played(self, count: int = 1, timeout: float = 30.0) -> bool:
        with self._played:
            return self._played.wait_for(lambda: self.played >= count, timeout)

    @property
    def audio_bytes(self) -> int:
        return sum(len(p.audio) for p in self.pipelines)

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # -- Home Assistant's side ---------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._connect())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        reader = self._loop.create_task(self._read())
        pinger = self._loop.create_task(self._ping())
        try:
            self._loop.run_forever()
        finally:
            for task in (reader, pinger):
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(reader, pinger, return_exceptions=True))
            with contextlib.suppress(ConnectionError):  # the satellite may have reset it already
                self._loop.run_until_complete(self._client.disconnect())
            self._loop.close()

    async def _connect(self) -> None:
        from wyoming.client import AsyncTcpClient
        from wyoming.info import Describe, Info
        from wyoming.satellite import RunSatellite

        if self.probe:  # the config flow's look at the device, on its own connection
            async with AsyncTcpClient(self.host, self.port) as probe:
                await probe.write_event(Describe().event())
                while True:
                    event = await asyncio.wait_for(probe.read_event(), 10)
                    if event is None:
                        raise ConnectionError("the satellite closed the describe probe")
                    if Info.is_type(event.type):
                        self.probe_info = Info.from_event(event)
                        break
        self._client = AsyncTcpClient(self.host, self.port)
        await self._client.connect()
        await self._client.write_event(RunSatellite().event())
        await self._client.write_event(Describe().event())

    async def _ping(self) -> None:
        from wyoming.ping import Ping

        while True:
            await asyncio.sleep(PING_SECONDS)
            await self._client.write_event(Ping().event())

    async def _read(self) -> None:
        from wyoming.audio import AudioChunk, AudioStop
        from wyoming.info import Info
        from wyoming.ping import Ping, Pong
        from wyoming.pipeline import RunPipeline
        from wyoming.snd import Played
        from wyoming.wake import Detection

        while True:
            try:
                event = await self._client.read_event()
            except ConnectionError:  # closed with our events unread: the kernel sends a reset, not an end
                event = None
            if event is None:
                self.closed_by_peer.set()
                return
            self.types.append(event.type)
            if Ping.is_type(event.type):
                await self._client.write_event(Pong(text=Ping.from_event(event).text).event())
            elif Pong.is_type(event.type):
                self.pongs += 1
            elif Info.is_type(event.type):
                self.info = Info.from_event(event)
            elif Detection.is_type(event.type):
                self.detections.append(Detection.from_event(event).name)
            elif RunPipeline.is_type(event.type):
                run = RunPipeline.from_event(event)
                wake = self.detections[-1] if self.detections else None
                self.pipelines.append(Pipeline(wake, run.start_stage.value, run.end_stage.value))
            elif AudioChunk.is_type(event.type) and self.pipelines and not self.pipelines[-1].stopped:
                pipeline = self.pipelines[-1]
                if pipeline.first_chunk_at is None:
                    pipeline.first_chunk_at = time.monotonic()
                pipeline.audio += AudioChunk.from_event(event).audio
                pipeline.chunks += 1
            elif AudioStop.is_type(event.type) and self.pipelines and not self.pipelines[-1].stopped:
                self.pipelines[-1].stopped = True
                await self._answer(self.pipelines[-1])
            elif Played.is_type(event.type):
                with self._played:
                    self.played += 1
                    self._played.notify_all()

    async def _answer(self, pipeline: Pipeline) -> None:
        """What Home Assistant sends once speech-to-text, the intent and text-to-speech have run."""
        from wyoming.asr import Transcript
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.tts import Synthesize

        fmt = {"rate": REPLY_RATE, "width": 2, "channels": 1}
        await self._client.write_event(Transcript(text=self.transcript).event())
        if pipeline.end_stage != "tts":
            return
        await self._client.write_event(Synthesize(text=self.reply_text).event())
        await self._client.write_event(AudioStart(**fmt, timestamp=0).event())
        audio = np.asarray(self.reply_audio, dtype="<i2").tobytes()
        for offset in range(0, len(audio), CHUNK_BYTES):
            await self._client.write_event(AudioChunk(**fmt, audio=audio[offset:offset + CHUNK_BYTES]).event())
        await self._client.write_event(AudioStop().event())


def _chime(seconds: float = 0.6) -> np.ndarray:
    """A stand-in spoken reply: a soft two-note chime at 22050 Hz (tests may pass real synthesized speech)."""
    t = np.arange(int(seconds * REPLY_RATE)) / REPLY_RATE
    wave = np.where(t < seconds / 2, np.sin(2 * np.pi * 660 * t), np.sin(2 * np.pi * 880 * t))
    return np.round(wave * 0.2 * 32767).astype(np.int16)


def speech_reply(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, at Home Assistant's 22050 Hz."""
    import soxr

    from .speech import speak

    pcm = speak(text).astype(np.float32) / 32768.0
    return np.round(soxr.resample(pcm, 16000, REPLY_RATE) * 32767).astype(np.int16)
