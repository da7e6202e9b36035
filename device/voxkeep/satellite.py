"""A private Home Assistant voice satellite (Wyoming protocol): the assistant answers, only consented audio leaves.

Home Assistant's ``wyoming`` integration is the client: it connects to ``[satellite] uri``, asks ``describe``
(answered with ``info`` holding a satellite section: name, area, active wake words, ``has_vad``), sends
``run-satellite`` and then pings every couple of seconds. When a wake word is confirmed on the device and the
utterance after it has been judged on the device and is *not* a privacy command, voxkeep sends ``detection``
(first, so Home Assistant knows the wake phrase before the pipeline starts and can answer once when several
speakers heard it), ``run-pipeline`` (start at ASR, end at TTS when there is a speaker), then the utterance as
``audio-start``, 100 ms ``audio-chunk``\\ s and ``audio-stop``. Home Assistant's ``transcript`` becomes a
``transcript`` event (never published on MQTT, never stored); its spoken reply (``audio-start/chunk/stop`` at
whatever format it chose) is resampled and played through the confirmation tones' output, then answered with
``played``. ``timer-*`` events play tones and pulse the RGB LED green; ``pause-satellite`` mutes the
microphone (voice can never unmute), and a later ``run-satellite`` lifts that mute only if nothing else muted
since.

What may leave, checked when the utterance is handed over and again before every chunk: consent ``satellite``
in the vault's ledger, mode ``listening`` now and when the wake was heard (so ``not_recording`` and ``muted``
send no audio and no detection at all), and a connection that sent ``run-satellite`` and has not paused. Every
utterance sent goes on the recording's row (the forwards table) or, if it was not stored, into the audit log
alone, with its size; the export carries both.

Who gets in: peers whose address is in ``[satellite] allow`` (others are refused at connect and logged); one
Home Assistant connection at a time (a second ``run-satellite`` is refused while the first is alive); at most
``MAX_CONNECTIONS`` sockets at once; a peer silent for ``PING_TIMEOUT`` after a ping is dropped. Events are
read with a bounded header line, data and payload: a malformed event gets a log line and is ignored; one that
breaks the framing or exceeds a bound gets a log line and its connection is closed.

Threads: the server, its connections and the streaming run on one asyncio loop in the ``satellite`` thread. The
utterance worker hands an utterance over with a non-blocking put into a bounded queue; the audio loop never
touches any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from . import __version__
from .capture import Utterance
from .config import Settings
from .errors import ConfigError
from .events import Event, Forwarded, Notice, Transcript
from .privacy import Mode, PrivacyState
from .tones import Clip, TonePlayer
from .wyoming_wire import MAX_LINE_BYTES, MAX_TRANSCRIPT_CHARS, ProtocolError, audio_events, printable, read_event

log = logging.getLogger(__name__)

SINK = "satellite"
"""The consent this needs: ``voxkeep consent grant satellite``."""
MAX_CONNECTIONS = 4
"""Sockets open at once (one satellite connection, Home Assistant's describe probes); more are refused."""
PING_SEND_DELAY = 2.0
"""Seconds of silence from the peer after which voxkeep pings it (Home Assistant's own ping delay)."""
PING_TIMEOUT = 5.0
"""Seconds a peer may stay silent after a ping before it is dropped (Home Assistant's own ping timeout)."""
WRITE_TIMEOUT = 5.0
"""Longest one write may wait on a peer that stopped reading before the connection is closed."""
QUEUE_SIZE = 2
"""Utterances waiting to be streamed; more while one streams means the link is too slow, and the newest waits
for nothing: it is dropped (and so never leaves the device)."""
RECEIPT_SECONDS = 30.0
"""How long a streamed utterance waits for the vault to say whether it was stored, to put it on record."""
MAX_TIMERS = 32
"""Timers tracked at once; a peer naming more is ignored beyond this."""
RING_SECONDS = 10.0
"""How long the LED keeps pulsing green after a timer finished."""
RING_TIMES = 3
"""How many times the finished-timer chime plays."""


def service_info(name: str, address: str, port: int) -> Any:
    """The mDNS record Home Assistant's zeroconf discovery looks for: ``_wyoming._tcp`` at ``address:port``."""
    from zeroconf.asyncio import AsyncServiceInfo

    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:60] or "voxkeep"
    packed = socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    return AsyncServiceInfo("_wyoming._tcp.local.", f"{label}._wyoming._tcp.local.", addresses=[packed], port=port)


async def announce(name: str, host: str, port: int) -> Any:
    """Announce the satellite on the local network; returns the AsyncZeroconf to close at shutdown.

    The address announced is the one the satellite listens on, or for 0.0.0.0 the address of the interface
    that carries the default route (a UDP socket "connected" to the mDNS group sends nothing).
    """
    try:
        from zeroconf.asyncio import AsyncZeroconf
    except ImportError:
        raise ConfigError("satellite.zeroconf needs the python-zeroconf package: install it with "
                          "'pip install zeroconf' (in voxkeep's virtual environment), or set satellite.zeroconf = "
                          "false and add the speaker in Home Assistant by host and port") from None
    address = host
    if host in ("0.0.0.0", "::", ""):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("224.0.0.251", 5353))
            address = probe.getsockname()[0]
    zc = AsyncZeroconf()
    await zc.async_register_service(service_info(name, address, port))
    log.info("satellite: announced as %s on %s:%d (mDNS _wyoming._tcp)", name, address, port)
    return zc


def pcm16_mono(audio: bytes, width: int, channels: int) -> np.ndarray:
    """Raw PCM of ``width`` bytes per sample and ``channels`` channels as mono int16; ValueError if unusable."""
    if width not in (1, 2, 4) or not 1 <= channels <= 8:
        raise ValueError(f"{width}-byte samples in {channels} channels")
    usable = len(audio) - len(audio) % (width * channels)
    if width == 1:  # 8-bit WAV samples are unsigned
        x = (np.frombuffer(audio[:usable], np.uint8).astype(np.float32) - 128.0) * 256.0
    else:
        x = np.frombuffer(audio[:usable], "<i2" if width == 2 else "<i4").astype(np.float32)
        if width == 4:
            x /= 65536.0
    mono = x.reshape(-1, channels).mean(axis=1)
    return np.clip(np.round(mono), -32768, 32767).astype(np.int16)


class _Receipt:
    """Tells the streaming side whether the worker stored the utterance, and as which recording."""

    def __init__(self) -> None:
        self._told = threading.Event()
        self.recording_id: str | None = None

    def tell(self, recording_id: str | None) -> None:
        self.recording_id = recording_id
        self._told.set()

    def wait(self, timeout: float) -> str | None:
        self._told.wait(timeout)
        return self.recording_id


class _Reply:
    """Home Assistant's spoken reply being received: its format and the samples so far (bounded)."""

    def __init__(self, rate: int, width: int, channels: int, max_samples: int) -> None:
        self.rate, self.width, self.channels = rate, width, channels
        self.parts: list[np.ndarray] = []
        self.samples = 0
        self.max_samples = max_samples
        self.cut = False


class _Connection:
    """One peer's socket; writes are serialised and bounded in time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        self.reader, self.writer, self.peer = reader, writer, peer
        self.heard = time.monotonic()
        self.pinged: float | None = None
        self.running = False
        """This connection sent run-satellite and has not paused: utterances may go to it."""
        self.reply: _Reply | None = None
        self._lock = asyncio.Lock()

    async def send(self, event: Any) -> None:
        from wyoming.event import async_write_event

        async with self._lock:
            try:
                await asyncio.wait_for(async_write_event(event, self.writer), WRITE_TIMEOUT)
            except TimeoutError:
                self.close()
                raise ConnectionError(f"Home Assistant at {self.peer} stopped reading") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Satellite:
    """The Wyoming satellite server and its thread; see the module docstring."""

    def __init__(self, settings: Settings, privacy: PrivacyState, vault: Any, publish: Callable[[Event], None], *,
                 wake_words: list[str], player: TonePlayer, on_streaming: Callable[[bool], None] | None = None,
                 on_timer: Callable[[bool], None] | None = None) -> None:
        sat = settings.satellite
        parts = urlsplit(sat.uri)
        if not parts.hostname or parts.port is None:
            raise ConfigError(f"'satellite.uri' {sat.uri!r} must be tcp://address:port, e.g. tcp://0.0.0.0:10700")
        self._host, self._port = parts.hostname, parts.port
        self._settings = sat
        self._allow = [ipaddress.ip_network(a, strict=False) for a in sat.allow]
        self._name = sat.name or f"voxkeep {socket.gethostname()}"
        self._privacy = privacy
        self._vault = vault
        self._publish = publish
        self._words = list(wake_words)
        self._player = player
        self._on_streaming = on_streaming
        self._on_timer = on_timer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._zeroconf: Any = None
        self._thread: threading.Thread | None = None
        self._requests: asyncio.Queue[tuple[Utterance, _Receipt]] | None = None
        self._connections: set[_Connection] = set()
        self._active: _Connection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, float] = {}
        self._ringing_until = 0.0
        self._paused_mute = False
        """We muted on pause-satellite and nothing else has muted or unmuted since."""
        self._last_mode = privacy.mode.value
        self.port: int | None = None
        """The bound port (the configured one, or the one the system chose for port 0)."""
        self.stats = {"streamed": 0, "refused": 0, "dropped": 0}
        self._pending = 0
        self._settled = threading.Condition()
        privacy.subscribe(self._on_state)

    # ------------------------------------------------------------------ lifecycle (daemon thread)

    def start(self) -> None:
        """Bind and serve on the satellite thread; a port that cannot be bound is one error line."""
        bound = threading.Event()
        problem: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except (OSError, ConfigError) as exc:
                problem.append(exc)
                loop.run_until_complete(self._shutdown())
                loop.close()
                self._loop = None
                bound.set()
                return
            bound.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="satellite", daemon=True)
        self._thread.start()
        bound.wait()
        if problem:
            self._thread.join()
            if isinstance(problem[0], ConfigError):
                raise problem[0]
            error = problem[0]
            raise ConfigError(f"the Home Assistant satellite cannot listen on {self._settings.uri} "
                              f"({getattr(error, 'strerror', None) or error}); free the port or change satellite.uri")
        log.info("satellite: waiting for Home Assistant on %s:%d (allowed: %s)", self._host, self.port,
                 ", ".join(self._settings.allow))

    def stop(self) -> None:
        """Close every connection and the server; utterances still waiting are dropped unsent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)

    @property
    def connected(self) -> bool:
        """Whether a Home Assistant connection has sent run-satellite and not paused."""
        active = self._active
        return active is not None and active.running

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every utterance handed over was streamed and put on record, or dropped; False on timeout.

        For file input and simulations, where what happens next depends on what has been sent.
        """
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout)

    def _settle(self) -> None:
        with self._settled:
            self._pending -= 1
            self._settled.notify_all()

    async def _bind(self) -> None:
        self._requests = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._server = await asyncio.start_server(self._on_connect, self._host, self._port, limit=MAX_LINE_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        self._spawn(self._streamer())
        self._spawn(self._watchdog())
        if self._settings.zeroconf:
            self._zeroconf = await announce(self._name, self._host, self.port)

    async def _shutdown(self) -> None:
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                await self._zeroconf.async_close()  # unregisters the service first
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        # Connections too, and in rounds: a reply that finishes playing as the satellite stops spawns its
        # "played" write meanwhile, and a task left pending on the closed loop never ends (never awaited).
        def others() -> list[asyncio.Task[Any]]:
            return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        for _ in range(10):
            if not (tasks := others()):
                break
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if left := others():
            log.warning("satellite: %d tasks still spawning new ones at shutdown; they are dropped", len(left))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ the utterance worker's side

    def request(self, u: Utterance) -> Callable[[str | None], None] | None:
        """Offer an utterance judged not to be a privacy command; returns at once.

        Returns the callable the worker tells the recording id (or None), or None when nothing will be sent.
        """
        try:
            why = self._why_not(u.store_allowed)
        except Exception as exc:  # a vault that cannot be read: nothing is sent, and the utterance is still kept
            log.error("satellite: nothing sent, consent could not be checked (%s)", exc)
            return None
        loop = self._loop
        if why is not None or loop is None:
            log.debug("satellite: nothing sent (%s)", why or "not running")
            return None
        receipt = _Receipt()
        with self._settled:
            self._pending += 1
        try:
            loop.call_soon_threadsafe(self._enqueue, u, receipt)
        except RuntimeError:  # the satellite has stopped
            self._settle()
            return None
        return receipt.tell

    def _why_not(self, woke_listening: bool = True) -> str | None:
        """Why nothing may be sent now (None: it may). Safe from any thread."""
        active = self._active
        if active is None or not active.running:
            return "no Home Assistant connected" if active is None else "paused by Home Assistant"
        if not woke_listening or self._privacy.mode is not Mode.LISTENING:
            return "not in listening mode"
        if SINK not in self._vault.active_consents():
            return "no consent (voxkeep consent grant satellite)"
        return None

    def _enqueue(self, u: Utterance, receipt: _Receipt) -> None:
        assert self._requests is not None
        try:
            self._requests.put_nowait((u, receipt))
        except asyncio.QueueFull:
            self._settle()
            self.stats["dropped"] += 1
            self._publish(Notice(t=u.t_end, level="warning", message="satellite: Home Assistant is not keeping "
                                 "up; an utterance was not sent (it never left the device)"))

    # ------------------------------------------------------------------ streaming (loop thread)

    async def _streamer(self) -> None:
        while True:
            assert self._requests is not None
            u, receipt = await self._requests.get()
            try:
                await self._stream(u, receipt)
            except Exception:
                log.exception("satellite: streaming an utterance failed")
            finally:
                self._settle()

    async def _stream(self, u: Utterance, receipt: _Receipt) -> None:
        from wyoming.audio import AudioChunk, AudioStop
        from wyoming.pipeline import PipelineStage, RunPipeline
        from wyoming.wake import Detection


        conn = self._active
        why = self._why_not(u.store_allowed)
        if conn is None or why is not None:
            log.info("satellite: an utterance was not sent (%s)", why or "Home Assistant went away")
            return
        # From where the request began: a pause before it (the owner waiting for the LED) stays on the device.
        audio = np.asarray(u.pcm[u.request_start:], dtype="<i2").tobytes()
        sent = 0
        stopped = ""
        self._streaming(True)
        try:
            await conn.send(Detection(name=u.wake_word, timestamp=0).event())
            end = PipelineStage.TTS if self._player.enabled else PipelineStage.HANDLE
            await conn.send(RunPipeline(start_stage=PipelineStage.ASR, end_stage=end,
                                        wake_word_name=u.wake_word).event())
            for event in audio_events(audio):
                if AudioChunk.is_type(event.type):
                    try:
                        why = self._why_not()
                    except Exception as exc:
                        why = f"consent could not be checked ({exc})"
                    if why is not None or conn is not self._active:
                        stopped = why or "Home Assistant went away"
                        break
                await conn.send(event)
                sent += len(event.payload or b"")
            if stopped:
                with contextlib.suppress(ConnectionError, OSError):
                    await conn.send(AudioStop().event())
        except (ConnectionError, OSError) as exc:
            stopped = f"the connection failed ({exc})"
        finally:
            self._streaming(False)
        if stopped:
            log.info("satellite: streaming stopped after %d bytes: %s", sent, stopped)
        if sent:
            self.stats["streamed"] += 1
            await self._record(u, receipt, sent, stopped)

    async def _record(self, u: Utterance, receipt: _Receipt, size: int, stopped: str) -> None:
        """Put what reached Home Assistant on record: the recording's row if it was kept, the audit log always."""
        recording_id = await asyncio.to_thread(receipt.wait, RECEIPT_SECONDS)
        detail = {"stopped": stopped} if stopped else {}

        def write() -> None:
            if recording_id is None or not self._vault.mark_forwarded(recording_id, SINK, size, **detail):
                self._vault.audit("forwarded", sink=SINK, size=size, stored="no", **detail)

        try:
            await asyncio.to_thread(write)
        except Exception as exc:
            log.error("satellite: sent %d bytes to Home Assistant but could not record it: %s", size, exc)
        self._publish(Forwarded(t=u.t_end, sink=SINK, recording_id=recording_id or "", size=size))

    def _streaming(self, busy: bool) -> None:
        if self._on_streaming is not None:
            try:
                self._on_streaming(busy)
            except Exception:
                log.exception("satellite: on_streaming failed")

    # ------------------------------------------------------------------ connections (loop thread)

    def _allowed(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._allow)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if peername else "?"
        if not self._allowed(peer):
            self.stats["refused"] += 1
            log.warning("satellite: refused a connection from %s: it is not in satellite.allow", peer)
            writer.close()
            return
        if len(self._connections) >= MAX_CONNECTIONS:
            log.warning("satellite: refused a connection from %s: %d are open already", peer, MAX_CONNECTIONS)
            writer.close()
            return
        conn = _Connection(reader, writer, peer)
        self._connections.add(conn)
        log.info("satellite: Home Assistant connected from %s", peer)
        try:
            while True:
                try:
                    event = await read_event(reader)
                except ProtocolError as exc:
                    log.warning("satellite: closed the connection from %s: it sent %s", peer, exc)
                    break
                if event is None:
                    break
                conn.heard, conn.pinged = time.monotonic(), None
                try:
                    if not await self._handle(conn, event):
                        break
                except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                    log.warning("satellite: ignored a malformed '%s' event from %s (%s: %s)",
                                printable(event.type, 40), peer, type(exc).__name__, printable(exc, 200))
        except (ConnectionError, OSError) as exc:
            log.info("satellite: the connection from %s failed (%s)", peer, exc)
        except Exception:  # a bug must end only this connection, never the satellite or the daemon
            log.exception("satellite: the connection from %s ended on an unexpected error", peer)
        finally:
            self._connections.discard(conn)
            if self._active is conn:
                self._active = None
                log.info("satellite: Home Assistant at %s disconnected", peer)
            conn.close()

    async def _watchdog(self) -> None:
        """Ping quiet peers; drop those that stay silent for PING_TIMEOUT after a ping."""
        from wyoming.ping import Ping

        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for conn in list(self._connections):
                if conn.pinged is not None and now - conn.pinged > PING_TIMEOUT:
                    log.warning("satellite: dropped Home Assistant at %s: no answer to a ping for %.0f s", conn.peer,
                                PING_TIMEOUT)
                    conn.close()
                    conn.reader.feed_eof()
                elif conn.pinged is None and now - conn.heard > PING_SEND_DELAY:
                    conn.pinged = now
                    self._spawn(self._quietly(conn.send(Ping().event())))

    @staticmethod
    async def _quietly(coro: Any) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await coro

    async def _handle(self, conn: _Connection, event: Any) -> bool:
        """One event from Home Assistant; False closes the connection."""
        from wyoming.asr import Transcript as WyomingTranscript
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.error import Error
        from wyoming.info import Describe
        from wyoming.ping import Ping, Pong
        from wyoming.satellite import PauseSatellite, RunSatellite

        kind = event.type
        if Describe.is_type(kind):
            await conn.send(self.info().event())
        elif Ping.is_type(kind):
            await conn.send(Pong(text=Ping.from_event(event).text).event())
        elif Pong.is_type(kind):
            pass
        elif RunSatellite.is_type(kind):
            return self._run_satellite(conn)
        elif PauseSatellite.is_type(kind):
            self._pause(conn)
        elif WyomingTranscript.is_type(kind):
            text = printable(WyomingTranscript.from_event(event).text, MAX_TRANSCRIPT_CHARS)
            self._publish(Transcript(t=self._privacy.clock(), sink=SINK, text=text))
        elif Error.is_type(kind):
            error = Error.from_event(event)
            message = f"Home Assistant: {printable(error.text, 200)}"
            log.warning("satellite: %s", message)
            self._publish(Notice(t=self._privacy.clock(), level="warning", message=message))
        elif AudioStart.is_type(kind):
            start = AudioStart.from_event(event)
            rate, width, channels = int(start.rate), int(start.width), int(start.channels)
            if not (8000 <= rate <= 192_000 and width in (1, 2, 4) and 1 <= channels <= 8):
                raise ValueError(f"unplayable audio format {rate} Hz, {width} bytes, {channels} channels")
            conn.reply = _Reply(rate, width, channels, int(self._settings.max_reply_seconds * rate))
        elif AudioChunk.is_type(kind):
            self._reply_chunk(conn, AudioChunk.from_event(event).audio)
        elif AudioStop.is_type(kind):
            self._reply_done(conn)
        elif kind.startswith("timer-"):
            self._timer(kind, event.data)
        else:  # synthesize, transcribe, voice-started/stopped, ...: nothing to do on the device
            log.debug("satellite: %s from Home Assistant", printable(kind, 40))
        return True

    def _run_satellite(self, conn: _Connection) -> bool:
        if self._active is not None and self._active is not conn:
            log.warning("satellite: refused a second Home Assistant connection from %s: one at a time, and %s is "
                        "connected", conn.peer, self._active.peer)
            return False
        self._active = conn
        conn.running = True
        log.info("satellite: Home Assistant at %s runs the satellite", conn.peer)
        if self._paused_mute and self._privacy.muted:
            outcome = self._privacy.request("unmute", SINK)
            log.info("satellite: Home Assistant resumed the satellite it had paused: %s", outcome.message)
        return True

    def _pause(self, conn: _Connection) -> None:
        conn.running = False
        conn.reply = None
        outcome = self._privacy.request("mute", SINK)
        log.info("satellite: Home Assistant paused the satellite: %s", outcome.message)

    def _on_state(self, event: Any) -> None:
        """Remember whether the current mute is the one pause-satellite asked for (any thread)."""
        if event.mode == self._last_mode:
            return
        self._last_mode = event.mode
        self._paused_mute = event.mode == Mode.MUTED.value and event.cause == SINK

    # ------------------------------------------------------------------ the spoken reply

    def _reply_chunk(self, conn: _Connection, audio: bytes) -> None:
        reply = conn.reply
        if reply is None or reply.cut:
            return
        samples = pcm16_mono(audio, reply.width, reply.channels)
        room = reply.max_samples - reply.samples
        if samples.size > room:
            samples = samples[:room]
            reply.cut = True
            log.warning("satellite: Home Assistant's reply is longer than satellite.max_reply_seconds = %g s; "
                        "the rest is not played", self._settings.max_reply_seconds)
        reply.parts.append(samples)
        reply.samples += samples.size

    def _reply_done(self, conn: _Connection) -> None:
        from wyoming.snd import Played

        reply, conn.reply = conn.reply, None
        loop = self._loop
        assert loop is not None

        def played() -> None:  # on the player's thread
            with contextlib.suppress(RuntimeError):  # the satellite stopped while it played: nobody to tell
                loop.call_soon_threadsafe(lambda: self._spawn(self._quietly(conn.send(Played().event()))))

        if reply is None or not reply.samples:
            played()
            return
        self._player.play_clip(Clip(np.concatenate(reply.parts), reply.rate, played))

    # ------------------------------------------------------------------ timers

    def _timer(self, kind: str, data: dict[str, Any]) -> None:
        timer_id = str(data["id"])[:100]
        now = time.monotonic()
        if kind in ("timer-started", "timer-updated"):
            total = float(data["total_seconds"])
            if not 0 <= total <= 7 * 86400:
                raise ValueError(f"a timer of {total} s")
            if timer_id not in self._timers and len(self._timers) >= MAX_TIMERS:
                log.warning("satellite: more than %d timers; this one is not shown", MAX_TIMERS)
                return
            if kind == "timer-started":
                self._player.play("timer_started")
            self._timers[timer_id] = now + total
        elif kind == "timer-cancelled":
            if self._timers.pop(timer_id, None) is not None:
                self._player.play("timer_cancelled")
        elif kind == "timer-finished":
            self._timers.pop(timer_id, None)
            self._ringing_until = now + RING_SECONDS
            for _ in range(RING_TIMES):
                self._player.play("timer_finished")
            assert self._loop is not None
            self._loop.call_later(RING_SECONDS + 0.1, self._show_timers)
        else:
            log.debug("satellite: %s from Home Assistant", printable(kind, 40))
            return
        self._show_timers()

    def _show_timers(self) -> None:
        if self._on_timer is not None:
            self._on_timer(bool(self._timers) or time.monotonic() < self._ringing_until)

    # ------------------------------------------------------------------ describe

    def info(self) -> Any:
        """What ``describe`` is answered with: a satellite section and the wake words heard on the device."""
        from wyoming.info import Attribution, Info, WakeModel, WakeProgram
        from wyoming.info import Satellite as SatelliteInfo

        by = Attribution(name="voxkeep", url="")
        models = [WakeModel(name=w, attribution=by, installed=True, description=w.replace("_", " "),
                            version=__version__, languages=["en"], phrase=w.replace("_", " ")) for w in self._words]
        return Info(
            satellite=SatelliteInfo(name=self._name, attribution=by, installed=True,
                                    description="voxkeep: privacy-first speaker (wake words and privacy commands on "
                                                "the device)", version=__version__, area=self._settings.area or None,
                                    has_vad=True, active_wake_words=self._words,
                                    max_active_wake_words=len(self._words), supports_trigger=False),
            wake=[WakeProgram(name="voxkeep", attribution=by, installed=True, description="on-device wake words",
                              version=__version__, models=models)])

