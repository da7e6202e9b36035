"""Opt-in sharing: utterances leave the device only to sinks the owner consented to, visibly and on record.

Three sinks, each configured in ``[forward]`` and used only while the consent ledger in the vault says so:

* ``mqtt``     the utterance WAV on ``forward.mqtt_topic`` through the ``[mqtt]`` broker;
* ``http``     a POST of the WAV to ``forward.http_url`` (TLS verified, redirects refused);
* ``wyoming``  the audio streamed to a Wyoming speech-to-text server; its transcript becomes a
  ``Transcript`` event (never published on MQTT, never stored).

Why one thread and one small queue per sink: the audio loop and the utterance worker must never wait on
a network, and a dead sink must not hold back the others. ``Forwarder.submit`` only puts the utterance in
memory queues and returns. Each sink's thread checks mode and consent again right before every attempt
(a revoke between capture and send means nothing is sent), retries failures with doubling waits for at
most ``forward.retry_seconds`` and then drops the audio; it is never written to disk for a later try.

Accountability: each transfer is marked on the recording's index row and audited with sink, size and the
recording's reference (``Vault.mark_forwarded``); each drop is audited too. Neither holds any content.
Consent can be granted only by the owner on the device (``voxkeep consent grant``); ``revoke_consent`` is
what voice and MQTT may call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse, urlsplit

import numpy as np

from .config import ForwardSettings, MqttSettings, Settings, validate
from .errors import ConfigError, VoxkeepError
from .events import Event, Forwarded, Notice, Transcript
from .vault import Vault, wav_bytes
from .wyoming_wire import MAX_LINE_BYTES, MAX_TRANSCRIPT_CHARS, ProtocolError, audio_events, printable, read_event

log = logging.getLogger(__name__)

SINKS = ForwardSettings.SINKS
"""Every sink a consent can name (kept in config.py so the CLI can list them without loading numpy)."""
QUEUE_SIZE = 8
"""Utterances waiting per sink; more means the sink has been down a while, and the newest is dropped."""
FIRST_RETRY_SECONDS = 1.0
"""First wait after a failed attempt (doubling after each), at most a quarter of the retry window."""
MAX_RESPONSE_BYTES = 65536
"""How much of an HTTP sink's answer is read: its status decides, so a body is only drained this far."""
WATCH_SECONDS = 0.1
"""How often a transfer under way checks its deadline and that consent still stands."""


class DeliveryError(Exception):
    """One attempt failed; the message names the cause (never content). ``permanent`` means retrying is futile."""

    def __init__(self, message: str, *, permanent: bool = False, reached: int = 0) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.reached = reached
        """Bytes known to have reached the destination anyway (all the audio was sent, the answer was bad)."""


@dataclass(frozen=True)
class Sent:
    """What one successful attempt delivered: ``size`` bytes, and for speech-to-text the text it returned."""

    size: int
    transcript: str | None = None


class Sink(Protocol):
    """One destination; ``send`` blocks for at most about the configured timeout."""

    name: str

    def send(self, pcm: np.ndarray, allowed: Callable[[], bool] = ...) -> Sent:
        """Deliver ``pcm``; may stop early once ``allowed()`` turns false (consent revoked, muted)."""
        ...


# ------------------------------------------------------------------------------------------------- sinks


class MqttSink:
    """The WAV as one QoS 1 message, acknowledged by the broker, over a short connection of its own."""

    name = "mqtt"

    def __init__(self, mqtt_settings: MqttSettings, topic: str, timeout: float) -> None:
        from .mqtt import resolve_device_id

        # Its own client id: sharing the bridge's (or the CLI's) would make the broker drop that session.
        client_id = f"{mqtt_settings.client_id or 'voxkeep-' + resolve_device_id(mqtt_settings)}-forward"
        self._settings = dataclasses.replace(mqtt_settings, client_id=client_id)
        self._topic = topic
        self._timeout = timeout

    def send(self, pcm: np.ndarray, allowed: Callable[[], bool] = lambda: True) -> Sent:
        from .mqtt import BrokerSession

        payload = wav_bytes(pcm)
        try:
            with BrokerSession(self._settings, timeout=self._timeout) as session:
                session.publish(self._topic, payload)
        except (ConfigError, OSError) as exc:
            raise DeliveryError(str(exc)) from None
        return Sent(len(payload))


class HttpSink:
    """A POST of the WAV; any 2xx answer is delivery. TLS certificates and host names are always verified.

    ``http.client`` rather than urllib: it follows no redirect (a redirect must not carry audio somewhere the
    owner did not name) and reads no proxy from the environment, and its socket is ours, so a watcher thread
    can end the transfer at a total deadline or the moment consent goes (a per-read timeout lets a sink
    dripping one byte a second hold a transfer for ever).
    """

    name = "http"

    def __init__(self, url: str, ca_file: str, timeout: float) -> None:
        if ca_file and not Path(ca_file).expanduser().is_file():
            raise ConfigError(f"'forward.http_ca_file' {ca_file} does not exist; fix the path or clear it to use "
                              "the system's certificate store")
        self._url = url
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "", parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._context = (ssl.create_default_context(cafile=str(Path(ca_file).expanduser()) if ca_file else None)
                         if parts.scheme == "https" else None)

    def send(self, pcm: np.ndarray, allowed: Callable[[], bool] = lambda: True) -> Sent:
        payload = wav_bytes(pcm)
        conn = (http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._context)
                if self._context is not None else
                http.client.HTTPConnection(self._host, self._port, timeout=self._timeout))
        done = threading.Event()
        why: list[str] = []
        watcher = threading.Thread(target=self._watch, args=(conn, done, allowed, why), name="forward-http-watch",
                                   daemon=True)
        body_sent = False
        watcher.start()
        try:
            conn.request("POST", self._target, body=payload, headers={"Content-Type": "audio/wav"})
            body_sent = True
            response = conn.getresponse()
            response.read(MAX_RESPONSE_BYTES)  # the status decides; a body is read this far, never more
            status, reason = response.status, response.reason
        except (OSError, http.client.HTTPException) as exc:
            cause = why[0] if why else (str(exc) or type(exc).__name__)
            where = "after the audio was sent" if body_sent else "before all the audio was sent"
            raise DeliveryError(f"{self._url} failed {where} ({cause})",
                                reached=len(payload) if body_sent else 0) from None
        finally:
            done.set()
            watcher.join()
            conn.close()
        if 200 <= status < 300:
            return Sent(len(payload))
        # A redirect or a 4xx (but timeouts and rate limits) will not change by sending the same again.
        permanent = 300 <= status < 500 and status not in (408, 429)
        hint = "; point 'forward.http_url' at the final URL" if status < 400 else ""
        raise DeliveryError(f"{self._url} answered {status} {reason}{hint}", permanent=permanent,
                            reached=len(payload))

    def _watch(self, conn: http.client.HTTPConnection, done: threading.Event, allowed: Callable[[], bool],
               why: list[str]) -> None:
        """End the transfer (shut its socket down) at the deadline or once ``allowed()`` turns false."""
        deadline = time.monotonic() + self._timeout
        while not done.wait(min(WATCH_SECONDS, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                why.append(f"it took longer than forward.timeout_seconds = {self._timeout:g} s in all")
            elif not allowed():
                why.append("stopped: consent was withdrawn or recording stopped during the transfer")
            else:
                continue
            while not done.is_set():  # the socket may not exist yet while connecting: keep trying
                sock = conn.sock
                if sock is not None:  # the plain socket's shutdown: it wakes a blocked read, also under TLS
                    with contextlib.suppress(OSError):
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                done.wait(WATCH_SECONDS)
            return


class WyomingSink:
    """Speech-to-text the way Home Assistant asks it: transcribe, audio-start, chunks, audio-stop, transcript."""

    name = "wyoming"

    def __init__(self, uri: str, timeout: float) -> None:
        parts = urlparse(uri)
        self._host, self._port = parts.hostname, parts.port
        self._uri = uri
        self._timeout = timeout

    def send(self, pcm: np.ndarray, allowed: Callable[[], bool] = lambda: True) -> Sent:
        try:
            text = asyncio.run(self._transcribe(np.asarray(pcm, dtype="<i2").tobytes()))
        except (OSError, TimeoutError, EOFError, ValueError, ProtocolError) as exc:
            raise DeliveryError(f"Wyoming server {self._uri} failed ({exc or type(exc).__name__})") from None
        return Sent(len(pcm) * 2, text)

    async def _transcribe(self, audio: bytes) -> str:
        from wyoming.asr import Transcribe
        from wyoming.asr import Transcript as WyomingTranscript
        from wyoming.error import Error
        from wyoming.event import async_write_event

        async with asyncio.timeout(self._timeout):
            reader, writer = await asyncio.open_connection(self._host, self._port, limit=MAX_LINE_BYTES)
        try:
            # One deadline for the whole exchange: a server that stops reading, or answers a byte at a time,
            # must not hold the sink. Its answers are read with every length bounded (voxkeep.wyoming_wire).
            async with asyncio.timeout(self._timeout):
                await async_write_event(Transcribe().event(), writer)
                for event in audio_events(audio):
                    await async_write_event(event, writer)
                while True:
                    event = await read_event(reader)
                    if event is None:
                        raise EOFError("it closed the connection without a transcript")
                    if WyomingTranscript.is_type(event.type):
                        return printable(WyomingTranscript.from_event(event).text, MAX_TRANSCRIPT_CHARS)
                    if Error.is_type(event.type):
                        raise ValueError(f"it answered with an error: {printable(Error.from_event(event).text, 200)}")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def make_sinks(settings: Settings) -> list[Sink]:
    """The sinks ``[forward]`` configures (whether consented or not); ConfigError names a bad key."""
    validate(settings)  # the same checks as 'voxkeep config check', for settings built in code
    fwd = settings.forward
    sinks: list[Sink] = []
    if fwd.mqtt_topic:
        sinks.append(MqttSink(settings.mqtt, fwd.mqtt_topic, fwd.timeout_seconds))
    if fwd.http_url:
        sinks.append(HttpSink(fwd.http_url, fwd.http_ca_file, fwd.timeout_seconds))
    if fwd.wyoming_uri:
        sinks.append(WyomingSink(fwd.wyoming_uri, fwd.timeout_seconds))
    return sinks


def setting_of(sink: str) -> str:
    """The config key that must be set for ``sink`` to be used."""
    return {"mqtt": "forward.mqtt_topic", "http": "forward.http_url", "wyoming": "forward.wyoming_uri",
            "satellite": "satellite.uri"}[sink]


def is_configured(settings: Settings, sink: str) -> bool:
    section, key = setting_of(sink).split(".")
    return bool(getattr(getattr(settings, section), key))


# ------------------------------------------------------------------------------------------------- consent


def revoke_consent(vault: Any, sinks: Iterable[str] | None, by: str) -> list[str]:
    """Revoke consent for ``sinks`` (None: every active one) on behalf of ``by``; return those revoked.

    This is the only consent change voice and MQTT may make: revoking can never share more than before.
    Sinks without an active consent are left alone, so the ledger records real changes only.
    """
    active = vault.active_consents()
    revoked = [s for s in (active if sinks is None else sinks) if s in active]
    for sink in revoked:
        vault.consent(sink, "revoke", by)
    return revoked


# ------------------------------------------------------------------------------------------------- delivery


@dataclass(frozen=True)
class _Item:
    recording_id: str
    pcm: np.ndarray
    t: float
    mode_is_listening: Callable[[], bool]


class _Lane:
    """One sink's queue and thread."""

    def __init__(self, sink: Sink, run: Callable[[_Lane], None]) -> None:
        self.sink = sink
        self.queue: queue.Queue[_Item | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self.overflowed = 0
        """Utterances refused because the queue was full; audited by the lane's own thread."""
        self.thread = threading.Thread(target=run, args=(self,), name=f"forward-{sink.name}", daemon=True)


class Forwarder:
    """Sends stored utterances to consented sinks beside the audio loop; see the module docstring."""

    def __init__(self, settings: Settings, vault: Vault, publish: Callable[[Event], None], *,
                 on_transfer: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``on_transfer(True)`` when audio starts leaving the device, ``(False)`` when no transfer is left
        (for the LED's forwarding pattern); ``clock`` times the retry window."""
        self._settings = settings.forward
        self._all_settings = settings
        self._vault = vault
        self._publish = publish
        self._on_transfer = on_transfer
        self._clock = clock
        self._lanes = [_Lane(sink, self._run) for sink in make_sinks(settings)]
        self._stop = threading.Event()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._pending = 0
        self._settled = threading.Condition()

    @property
    def sinks(self) -> list[str]:
        """Names of the configured sinks (each still needs consent)."""
        return [lane.sink.name for lane in self._lanes]

    def start(self) -> None:
        """Start one thread per configured sink; say so if a consented sink is not configured."""
        for sink in self._vault.active_consents():
            if not is_configured(self._all_settings, sink):
                message = (f"forwarding to {sink} is consented but '{setting_of(sink)}' is not set, so nothing "
                           f"is sent there; set it, or 'voxkeep consent revoke {sink}'")
                log.warning("%s", message)
                self._publish(Notice(t=0.0, level="warning", message=message))
        for lane in self._lanes:
            lane.thread.start()

    def stop(self) -> None:
        """Stop after the transfers under way (each bounded by the timeout); queued audio is dropped unsent."""
        self._stop.set()
        for lane in self._lanes:
            unsent = 0
            while True:
                try:
                    item = lane.queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    unsent += 1
                    self._settle()
            if unsent:
                log.info("forward: %d utterance(s) for %s dropped unsent at shutdown", unsent, lane.sink.name)
            lane.queue.put(None)
        for lane in self._lanes:
            if lane.thread.is_alive():
                lane.thread.join(self._settings.timeout_seconds + 1.0)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted utterance was sent, dropped or skipped; False on timeout.

        For file input and tests, where what happens next depends on what has been forwarded.
        """
        with self._settled:
            return self._settled.wait_for(lambda: self._pending == 0, timeout)

    def submit(self, recording_id: str, pcm: np.ndarray, t: float, mode_is_listening: Callable[[], bool]) -> bool:
        """Queue a stored utterance for every configured sink and return at once; False if nothing was queued.

        ``pcm`` (16 kHz mono int16) is only read, never changed. ``mode_is_listening`` is asked now and again
        before every attempt, so muting or stopping recording also stops what is still waiting.
        """
        if self._stop.is_set() or not self._lanes or not mode_is_listening():
            return False
        item = _Item(recording_id, pcm, t, mode_is_listening)
        queued = False
        for lane in self._lanes:
            with self._settled:
                self._pending += 1
            try:
                lane.queue.put_nowait(item)
                queued = True
            except queue.Full:
                self._settle()
                lane.overflowed += 1
                self._publish(Notice(t=t, level="warning", message=f"forward: {lane.sink.name} is not keeping up; "
                                                                   "an utterance was not sent there"))
        return queued

    # --- one thread per sink ---------------------------------------------------------------------------

    def _run(self, lane: _Lane) -> None:
        while True:
            item = lane.queue.get()
            if item is None:
                return
            try:
                self._deliver(lane.sink, item)
                if lane.overflowed:
                    count, lane.overflowed = lane.overflowed, 0
                    self._vault.audit("forward_dropped", sink=lane.sink.name, count=count, reason="queue full")
            except Exception:
                # A bug or a vault failure must not end forwarding for the rest of the run.
                log.exception("forward: delivering to %s failed", lane.sink.name)
            finally:
                self._settle()

    def _settle(self) -> None:
        with self._settled:
            self._pending -= 1
            self._settled.notify_all()

    def _why_not(self, sink: str, item: _Item) -> str | None:
        if self._stop.is_set():
            return "shutting down"
        if not item.mode_is_listening():
            return "not in listening mode"
        if sink not in self._vault.active_consents():
            return "no consent"
        return None

    def _deliver(self, sink: Sink, item: _Item) -> None:
        deadline = self._clock() + self._settings.retry_seconds
        wait = min(FIRST_RETRY_SECONDS, self._settings.retry_seconds / 4)
        attempts = 0
        while True:
            why = self._why_not(sink.name, item)
            if why is not None:
                log.debug("forward: nothing sent to %s (%s)", sink.name, why)
                return
            attempts += 1
            self._transfer(True)
            try:
                sent = sink.send(item.pcm, lambda: self._why_not(sink.name, item) is None)
            except DeliveryError as exc:
                error = exc
            except Exception as exc:  # a bug, but the attempt still failed and must be accounted for
                log.exception("forward: unexpected failure sending to %s", sink.name)
                error = DeliveryError(f"unexpected {type(exc).__name__}: {exc}")
            else:
                self._delivered(sink.name, item, sent)
                return
            finally:
                self._transfer(False)
            if error.reached:  # a bad answer, but the audio is there now: that must be on record
                self._record(sink.name, item, error.reached, unconfirmed=str(error))
                self._publish(Notice(t=item.t, level="warning", message=f"forward: the audio reached {sink.name} "
                                     f"but the transfer did not succeed ({error}); it is in the audit log"))
            if error.permanent or wait <= 0 or self._clock() + wait > deadline or self._stop.wait(wait):
                break
            wait *= 2
        log.warning("forward: gave up on %s after %d attempt(s): %s", sink.name, attempts, error)
        self._vault.audit("forward_failed", sink=sink.name, attempts=attempts, error=str(error))
        self._publish(Notice(t=item.t, level="warning", message=f"forward to {sink.name} failed: {error}"))

    def _record(self, sink: str, item: _Item, size: int, **detail: Any) -> None:
        """Put a transfer on the recording's row and in the audit log (``detail``: what was odd about it)."""
        try:
            if not self._vault.mark_forwarded(item.recording_id, sink, size, **detail):
                # Deleted while in flight: the transfer still happened, so it is still on record.
                self._vault.audit("forwarded", sink=sink, size=size, **detail)
        except VoxkeepError as exc:
            log.error("forward: sent %d bytes to %s but could not record it: %s", size, sink, exc)

    def _delivered(self, sink: str, item: _Item, sent: Sent) -> None:
        why = self._why_not(sink, item)
        if why is not None:  # consent went (or recording stopped) while the answer was on its way
            self._record(sink, item, sent.size, after=why)
            self._publish(Notice(t=item.t, level="warning", message=f"forward: an utterance reached {sink} just "
                                 f"before it was stopped ({why}); it is in the audit log"))
            return
        self._record(sink, item, sent.size)
        self._publish(Forwarded(t=item.t, sink=sink, recording_id=item.recording_id, size=sent.size))
        if sent.transcript is not None:
            self._publish(Transcript(t=item.t, sink=sink, text=sent.transcript))

    def _transfer(self, started: bool) -> None:
        """Count transfers across sinks; tell ``on_transfer`` only when the first starts or the last ends."""
        with self._busy_lock:
            self._busy += 1 if started else -1
            edge = self._busy == (1 if started else 0)
            if edge and self._on_transfer is not None:
                try:
                    self._on_transfer(started)
                except Exception:
                    log.exception("forward: on_transfer failed")
