"""Opt-in sharing against real servers on loopback: a spy MQTT subscriber on Mosquitto, an HTTP(S) server
and a Wyoming speech-to-text server. What each receives is compared byte for byte with what was said."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import ssl
import threading
import wave
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.asr import Transcript as WyomingTranscript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event as WyomingEvent
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from broker import (  # noqa: F401 (the fixtures are used by name)
    USERS,
    Broker,
    Listener,
    broker_fixture,
    free_port,
    password_file_fixture,
    pki_fixture,
)
from voxkeep.config import ForwardSettings, MqttSettings, Settings, VaultSettings
from voxkeep.errors import ConfigError
from voxkeep.events import Event, Forwarded, Notice, Transcript
from voxkeep.export import export_bundle
from voxkeep.forward import QUEUE_SIZE, Forwarder, revoke_consent
from voxkeep.owner import generate_identity
from voxkeep.privacy import STATE_FILE, Mode, PrivacyState
from voxkeep.testing.speech import speak
from voxkeep.vault import Vault

TOPIC = "voxkeep/fwdtest/utterance"
TRANSCRIPT = "turn on the kitchen light"
UTTERANCES = ("turn on the kitchen light", "what is the weather tomorrow", "play some music")


def listening() -> bool:
    return True


# ------------------------------------------------------------------------------------------ spy servers


class HttpSpy:
    """A loopback HTTP(S) server keeping every POST body; ``hold`` can keep a request in flight."""

    def __init__(self, status: int = 200, tls: tuple[Path, Path] | None = None) -> None:
        self.bodies: list[bytes] = []
        self.status = status
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        spy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                spy.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                spy.entered.set()
                spy.hold.wait(30)
                self.send_response(spy.status)
                if 300 <= spy.status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/voice"

    def close(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


class WyomingSpy:
    """A Wyoming ASR server (wyoming's own AsyncTcpServer) that keeps the audio of each session and
    answers every one with the same transcript."""

    def __init__(self) -> None:
        self.sessions: list[bytes] = []
        self.formats: list[dict[str, Any]] = []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = AsyncTcpServer("127.0.0.1", self.port)
        asyncio.run_coroutine_threadsafe(self.server.start(partial(_AsrHandler, self)), self.loop).result(10)

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class _AsrHandler(AsyncEventHandler):
    def __init__(self, spy: WyomingSpy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.spy = spy
        self.audio = bytearray()

    async def handle_event(self, event: WyomingEvent) -> bool:
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self.spy.formats.append({"rate": start.rate, "width": start.width, "channels": start.channels})
        elif AudioChunk.is_type(event.type):
            self.audio += AudioChunk.from_event(event).audio
        elif AudioStop.is_type(event.type):
            self.spy.sessions.append(bytes(self.audio))
            await self.write_event(WyomingTranscript(text=TRANSCRIPT).event())
            return False
        return True


@pytest.fixture
def http_spy() -> Iterator[HttpSpy]:
    spy = HttpSpy()
    yield spy
    spy.close()


@pytest.fixture(scope="module")
def wyoming_spy() -> Iterator[WyomingSpy]:
    spy = WyomingSpy()
    yield spy
    spy.close()


@pytest.fixture
def mqtt_spy(broker: Broker) -> Iterator[Listener]:
    sub = Listener(broker, topics=(TOPIC,))
    yield sub
    sub.close()


@pytest.fixture(scope="module")
def said() -> list[np.ndarray]:
    """Three different utterances, as the microphone would have captured them."""
    return [speak(text) for text in UTTERANCES]


# ------------------------------------------------------------------------------------------ the device side


@pytest.fixture
def vault(state_dir: Path) -> Iterator[Vault]:
    with Vault(state_dir, VaultSettings()) as v:
        v.add_recipient(generate_identity()[1])
        yield v


def settings_for(state_dir: Path, *, http: str = "", wyoming: str = "", broker: Broker | None = None,
                 password_file: Path | None = None, **forward: Any) -> Settings:
    mqtt = MqttSettings()
    if broker is not None:
        mqtt = MqttSettings(host="127.0.0.1", port=broker.port, username="voxkeep",
                            password_file=str(password_file), device_id="fwdtest")
    return Settings(state_dir=str(state_dir), mqtt=mqtt,
                    forward=ForwardSettings(mqtt_topic=TOPIC if broker else "", http_url=http, wyoming_uri=wyoming,
                                            **{"timeout_seconds": 5.0, "retry_seconds": 0.4, **forward}))


class Device:
    """A Forwarder as the daemon runs it, with the events it published and the LED calls it made."""

    def __init__(self, settings: Settings, vault: Vault) -> None:
        self.vault = vault
        self.events: list[Event] = []
        self.led: list[bool] = []
        self.forwarder = Forwarder(settings, vault, self.events.append, on_transfer=self.led.append)
        self.forwarder.start()

    def say(self, pcm: np.ndarray, mode: Callable[[], bool] = listening) -> tuple[str, bool]:
        rid = self.vault.store(pcm, started_at=0.0, wake_word="alexa", score=0.9, command=None)
        return rid, self.forwarder.submit(rid, pcm, 1.0, mode)

    def settle(self) -> None:
        assert self.forwarder.drain(60), "forwarding did not settle"

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def audit(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in map(json.loads, self.vault.audit_log.read().splitlines()) if e["kind"] == kind]

    def close(self) -> None:
        self.forwarder.stop()


@pytest.fixture
def all_sinks(state_dir: Path, vault: Vault, broker: Broker, password_file: Path, http_spy: HttpSpy,
              wyoming_spy: WyomingSpy) -> Iterator[Device]:
    wyoming_spy.sessions.clear()
    device = Device(settings_for(state_dir, http=http_spy.url, wyoming=wyoming_spy.uri, broker=broker,
                                 password_file=password_file), vault)
    yield device
    device.close()


def mqtt_payloads(spy: Listener) -> list[bytes]:
    """Every WAV the subscriber got. The broker may still be passing on what was acknowledged, so a marker
    is published last on the same topic: MQTT keeps order, so once it arrives everything before it has."""
    spy.publish(TOPIC, b"marker")
    seen = spy.collect_until(TOPIC, lambda p: p == b"marker")
    return [payload for topic, payload, _ in seen if topic == TOPIC and payload != b"marker"]


def pcm_of(wav: bytes) -> bytes:
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


# ------------------------------------------------------------------------------------------ consent


def test_without_consent_no_sink_receives_a_byte(all_sinks: Device, said: list[np.ndarray], http_spy: HttpSpy,
                                                wyoming_spy: WyomingSpy, mqtt_spy: Listener) -> None:
    assert all_sinks.vault.active_consents() == []  # nothing is consented by default
    for pcm in said:
        all_sinks.say(pcm)
    all_sinks.settle()
    assert http_spy.bodies == [] and wyoming_spy.sessions == [] and mqtt_payloads(mqtt_spy) == []
    assert all_sinks.of(Forwarded) == [] and all_sinks.led == []
    assert all_sinks.audit("forwarded") == [] and all(r.forwarded_to == () for r in all_sinks.vault.list())


def test_with_consent_each_sink_gets_exactly_the_utterances_and_revoke_stops_it(
        all_sinks: Device, said: list[np.ndarray], http_spy: HttpSpy, wyoming_spy: WyomingSpy,
        mqtt_spy: Listener, state_dir: Path) -> None:
    vault = all_sinks.vault
    for sink in ("mqtt", "http", "wyoming"):
        vault.consent(sink, "grant", "cli")
    ids = [all_sinks.say(pcm)[0] for pcm in said[:2]]
    all_sinks.settle()

    expected = [pcm.astype("<i2").tobytes() for pcm in said[:2]]
    assert [pcm_of(b) for b in http_spy.bodies] == expected
    assert [pcm_of(b) for b in mqtt_payloads(mqtt_spy)] == expected
    assert wyoming_spy.sessions == expected
    assert wyoming_spy.formats[-1] == {"rate": 16000, "width": 2, "channels": 1}
    # The transcript comes back as an event, once per utterance, from the Wyoming sink only.
    assert [(e.sink, e.text) for e in all_sinks.of(Transcript)] == [("wyoming", TRANSCRIPT)] * 2
    assert sorted((e.sink, e.recording_id) for e in all_sinks.of(Forwarded)) == sorted(
        (s, rid) for s in ("mqtt", "http", "wyoming") for rid in ids)
    # Accountable: the index says where each went, the audit log has sink, size and a reference, no content.
    assert {r.id: sorted(r.forwarded_to) for r in vault.list()} == {rid: ["http", "mqtt", "wyoming"] for rid in ids}
    entries = all_sinks.audit("forwarded")
    assert len(entries) == 6 and all(e["ref"] and e["size"] > 0 for e in entries)
    assert not any(rid in json.dumps(e) for e in entries for rid in ids)
    assert TRANSCRIPT.encode() not in vault.audit_log.read()
    # The LED was told when audio started leaving and that it ended.
    assert all_sinks.led[0] is True and all_sinks.led[-1] is False

    revoked = revoke_consent(vault, ["http"], "mqtt")
    assert revoked == ["http"] and vault.active_consents() == ["mqtt", "wyoming"]
    all_sinks.say(said[2])
    all_sinks.settle()
    assert len(http_spy.bodies) == 2  # nothing more after the revoke
    assert len(wyoming_spy.sessions) == 3 and len(mqtt_payloads(mqtt_spy)) == 1

    # The export lists every recipient and what each received.
    manifest_path = export_bundle(vault, state_dir.parent / "export.zip", state_dir).path
    with zipfile.ZipFile(manifest_path) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
    assert {d["sink"]: d["transfers"] for d in manifest["forward_destinations"]} == {"http": 2, "mqtt": 3,
                                                                                     "wyoming": 3}
    assert [(c["sink"], c["action"], c["by"]) for c in json.loads(bundle_member(manifest_path, "consents.json"))][-1] \
        == ("http", "revoke", "mqtt")


def bundle_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as bundle:
        return bundle.read(name)


@pytest.mark.parametrize("action", ["recording_off", "mute"])
def test_not_recording_and_muted_send_nothing_even_with_consent(
        all_sinks: Device, said: list[np.ndarray], http_spy: HttpSpy, wyoming_spy: WyomingSpy,
        mqtt_spy: Listener, state_dir: Path, action: str) -> None:
    privacy = PrivacyState(state_dir / STATE_FILE)
    for sink in ("mqtt", "http", "wyoming"):
        all_sinks.vault.consent(sink, "grant", "cli")
    assert privacy.request(action, "cli").ok

    _rid, queued = all_sinks.say(said[0], lambda: privacy.mode is Mode.LISTENING)
    all_sinks.settle()
    assert not queued
    assert http_spy.bodies == [] and wyoming_spy.sessions == [] and mqtt_payloads(mqtt_spy) == []


def test_a_mode_change_after_capture_stops_what_is_still_waiting(state_dir: Path, vault: Vault,
                                                                 said: list[np.ndarray], http_spy: HttpSpy) -> None:
    device = Device(settings_for(state_dir, http=http_spy.url), vault)
    vault.consent("http", "grant", "cli")
    privacy = PrivacyState(state_dir / STATE_FILE)
    http_spy.hold.clear()
    device.say(said[0])  # in flight, held by the server
    assert http_spy.entered.wait(10)
    assert device.led == [True]  # the LED shows forwarding while the transfer is under way
    _rid, queued = device.say(said[1], lambda: privacy.mode is Mode.LISTENING)
    assert queued
    privacy.request("recording_off", "voice")
    http_spy.hold.set()
    device.settle()
    device.close()
    assert len(http_spy.bodies) == 1 and device.led == [True, False]


def test_a_revoke_between_capture_and_send_means_nothing_is_sent(state_dir: Path, vault: Vault,
                                                                said: list[np.ndarray], http_spy: HttpSpy) -> None:
    device = Device(settings_for(state_dir, http=http_spy.url), vault)
    vault.consent("http", "grant", "cli")
    http_spy.hold.clear()
    device.say(said[0])
    assert http_spy.entered.wait(10)
    device.say(said[1])  # captured while consent was still given
    assert revoke_consent(vault, None, "voice") == ["http"]
    http_spy.hold.set()
    device.settle()
    device.close()
    assert [pcm_of(b) for b in http_spy.bodies] == [said[0].astype("<i2").tobytes()]


def test_a_recording_deleted_while_in_flight_is_still_on_record(state_dir: Path, vault: Vault,
                                                               said: list[np.ndarray], http_spy: HttpSpy) -> None:
    device = Device(settings_for(state_dir, http=http_spy.url), vault)
    vault.consent("http", "grant", "cli")
    http_spy.hold.clear()
    rid, _ = device.say(said[0])
    assert http_spy.entered.wait(10)
    assert vault.delete(rid, "voice")
    http_spy.hold.set()
    device.settle()
    device.close()
    (entry,) = device.audit("forwarded")
    assert entry["sink"] == "http" and entry["size"] == len(http_spy.bodies[0]) and "ref" not in entry
    assert vault.list() == []


# ------------------------------------------------------------------------------------------ failures


def test_a_dead_sink_never_holds_back_a_live_one_and_its_failure_is_audited(
        state_dir: Path, vault: Vault, said: list[np.ndarray], broker: Broker, password_file: Path,
        mqtt_spy: Listener) -> None:
    dead_http = f"http://127.0.0.1:{free_port()}/voice"
    dead_wyoming = f"tcp://127.0.0.1:{free_port()}"
    device = Device(settings_for(state_dir, http=dead_http, wyoming=dead_wyoming, broker=broker,
                                 password_file=password_file), vault)
    for sink in ("mqtt", "http", "wyoming"):
        vault.consent(sink, "grant", "cli")
    for i in range(4):
        device.say(said[i % 3])
    device.settle()
    device.close()
    # The live sink got every utterance, in order, while the dead ones were failing.
    assert [pcm_of(b) for b in mqtt_payloads(mqtt_spy)] == [said[i % 3].astype("<i2").tobytes()
                                                                    for i in range(4)]
    failed = device.audit("forward_failed")
    assert sorted(e["sink"] for e in failed) == ["http"] * 4 + ["wyoming"] * 4
    assert all(e["attempts"] >= 2 for e in failed)  # retried within the window before giving up
    assert all(dead_http in e["error"] for e in failed if e["sink"] == "http")
    assert len([n for n in device.of(Notice) if "failed" in n.message]) == 8
    assert all(r.forwarded_to == ("mqtt",) for r in vault.list())


def test_a_sink_that_cannot_keep_up_drops_the_newest_and_says_so(state_dir: Path, vault: Vault,
                                                                  said: list[np.ndarray]) -> None:
    device = Device(settings_for(state_dir, http=f"http://127.0.0.1:{free_port()}/voice"), vault)
    vault.consent("http", "grant", "cli")
    rid = vault.store(said[0], started_at=0.0, wake_word="alexa", score=0.9, command=None)
    # Faster than one failing delivery (several attempts over the retry window) takes.
    results = [device.forwarder.submit(rid, said[0], 1.0, listening) for _ in range(QUEUE_SIZE + 3)]
    device.settle()
    device.close()
    assert sum(results) >= QUEUE_SIZE and results[:QUEUE_SIZE] == [True] * QUEUE_SIZE
    assert sum(e["count"] for e in device.audit("forward_dropped")) == results.count(False) >= 2
    assert len([n for n in device.of(Notice) if "not keeping up" in n.message]) == results.count(False)
    assert len(device.audit("forward_failed")) == sum(results)


def test_submit_returns_while_a_sink_hangs(state_dir: Path, vault: Vault, said: list[np.ndarray],
                                           http_spy: HttpSpy) -> None:
    device = Device(settings_for(state_dir, http=http_spy.url, timeout_seconds=60.0), vault)
    vault.consent("http", "grant", "cli")
    http_spy.hold.clear()
    device.say(said[0])
    assert http_spy.entered.wait(10)
    rid = vault.store(said[1], started_at=0.0, wake_word="alexa", score=0.9, command=None)
    submitted = threading.Thread(target=lambda: [device.forwarder.submit(rid, said[1], 1.0, listening)
                                                 for _ in range(QUEUE_SIZE * 2)])
    submitted.start()
    submitted.join(30)  # a guard against a hang, not a speed limit: the sink is held until released below
    hung = submitted.is_alive()
    http_spy.hold.set()
    device.settle()
    device.close()
    assert not hung


@pytest.mark.parametrize(("status", "attempts"), [(404, 1), (302, 1), (503, None)])
def test_http_errors_are_retried_only_when_it_can_help(state_dir: Path, vault: Vault, said: list[np.ndarray],
                                                       status: int, attempts: int | None) -> None:
    spy = HttpSpy(status=status)
    try:
        device = Device(settings_for(state_dir, http=spy.url), vault)
        vault.consent("http", "grant", "cli")
        device.say(said[0])
        device.settle()
        device.close()
    finally:
        spy.close()
    (entry,) = device.audit("forward_failed")
    assert str(status) in entry["error"]
    assert entry["attempts"] == attempts if attempts else entry["attempts"] >= 2
    assert device.of(Forwarded) == []
    # The body was sent before the answer came, so the audio did reach the server: that is on record.
    reached = device.audit("forwarded")
    assert len(reached) == entry["attempts"] == len(spy.bodies)
    assert all(str(status) in e["unconfirmed"] for e in reached)
    assert vault.list()[0].forwarded_to == ("http",) * entry["attempts"]
    assert any("reached http" in n.message for n in device.of(Notice))


def _http_request(conn: Any) -> None:
    """Read one HTTP request (head and Content-Length body)."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(65536)
    length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += conn.recv(65536)


def _wyoming_request(conn: Any) -> None:
    """Read a Wyoming client's events up to its audio-stop (the point where a server answers)."""
    seen = b""
    while b'"audio-stop"' not in seen:
        chunk = conn.recv(65536)
        if not chunk:
            return
        seen = seen[-64:] + chunk


class RawServer:
    """A loopback server that reads one request and then answers with ``reply(conn)``: drips, floods, holds."""

    def __init__(self, reply: Callable[[Any], None], request: Callable[[Any], None] = _http_request) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.reply = reply
        self.request = request
        self.requests = 0
        self.written = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/voice"

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # the client hung up on us: what the tests want to see
                self.request(conn)
                self.requests += 1
                self.reply(conn)

    def close(self) -> None:
        self.sock.close()


def test_a_sink_dripping_its_answer_is_cut_at_a_total_deadline(state_dir: Path, vault: Vault,
                                                                said: list[np.ndarray]) -> None:
    stop = threading.Event()

    def drip(conn: Any) -> None:  # one byte every 0.3 s: never idle for a whole 1 s timeout
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            if stop.wait(0.3):
                return
            conn.sendall(bytes([byte]))

    server = RawServer(drip)
    try:
        device = Device(settings_for(state_dir, http=server.url, timeout_seconds=1.0, retry_seconds=0.0), vault)
        vault.consent("http", "grant", "cli")
        device.say(said[0])
        device.settle()
        device.close()
    finally:
        stop.set()
        server.close()
    assert device.of(Forwarded) == []
    (failed,) = device.audit("forward_failed")
    assert "longer than forward.timeout_seconds = 1 s in all" in failed["error"]
    (reached,) = device.audit("forwarded")  # the whole body had gone before the answer stalled
    assert "after the audio was sent" in reached["unconfirmed"]


def test_a_revoke_during_a_transfer_ends_it_and_nothing_reports_success(state_dir: Path, vault: Vault,
                                                                       said: list[np.ndarray],
                                                                       http_spy: HttpSpy) -> None:
    device = Device(settings_for(state_dir, http=http_spy.url, timeout_seconds=60.0), vault)
    vault.consent("http", "grant", "cli")
    http_spy.hold.clear()
    device.say(said[0])
    assert http_spy.entered.wait(10)
    revoke_consent(vault, None, "voice")
    device.settle()  # ends without the server answering: the revoke stopped the transfer
    http_spy.hold.set()
    device.close()
    assert device.of(Forwarded) == []
    (reached,) = device.audit("forwarded")
    assert "consent was withdrawn" in reached["unconfirmed"]
    assert any("reached http" in n.message for n in device.of(Notice))


def test_a_flood_of_an_answer_is_read_only_so_far(state_dir: Path, vault: Vault, said: list[np.ndarray]) -> None:
    total = 256 * 1024 * 1024

    def flood(conn: Any) -> None:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        block = b"x" * 65536
        for _ in range(total // len(block)):
            conn.sendall(block)
            server.written += len(block)

    server = RawServer(flood)
    try:
        device = Device(settings_for(state_dir, http=server.url), vault)
        vault.consent("http", "grant", "cli")
        device.say(said[0])
        device.settle()
        device.close()
        server.thread.join(30)
    finally:
        server.close()
    assert len(device.of(Forwarded)) == 1  # a 2xx is delivery; the rest of the answer is not our business
    assert server.written < 16 * 1024 * 1024, f"the sink read {server.written} bytes of the answer"


@pytest.mark.parametrize(("answer", "named"), [
    (b'{"type": "transcript", "data": {"text": "hi"}, "payload_length": 268435456}\n', "payload_length"),
    (b'{"type": "transcript", "data_length": 268435456}\n', "data_length"),
    (b'{"type": "transcript", "data": {"text": "', "header longer than"),
])
def test_a_wyoming_server_announcing_a_flood_is_cut_off_at_the_bound(state_dir: Path, vault: Vault,
                                                                      said: list[np.ndarray], answer: bytes,
                                                                      named: str) -> None:
    """A hostile speech-to-text server says its answer is 256 MB (or sends a header without end) and floods:
    the speaker reads at most the bound, the transfer is on record as failed, the recording stays."""
    total = 256 * 1024 * 1024

    def flood(conn: Any) -> None:
        conn.sendall(answer)
        block = b"x" * 65536
        for _ in range(total // len(block)):
            conn.sendall(block)
            server.written += len(block)

    server = RawServer(flood, _wyoming_request)
    try:
        device = Device(settings_for(state_dir, wyoming=server.uri, retry_seconds=0.0), vault)
        vault.consent("wyoming", "grant", "cli")
        rid, _ = device.say(said[0])
        device.settle()
        device.close()
    finally:
        server.close()
    assert server.requests >= 1  # the audio did go out: the answer is what was refused
    assert server.written < 16 * 1024 * 1024, f"the sink read {server.written} bytes of the answer"
    assert device.of(Transcript) == [] and device.of(Forwarded) == []
    (failed,) = device.audit("forward_failed")
    assert named in failed["error"] and "Wyoming server" in failed["error"]
    assert [r.id for r in vault.list()] == [rid]


def test_https_is_verified_against_the_configured_ca(state_dir: Path, vault: Vault, said: list[np.ndarray],
                                                     pki: dict[str, Path]) -> None:
    spy = HttpSpy(tls=(pki["cert"], pki["key"]))
    try:
        vault.consent("http", "grant", "cli")
        untrusted = Device(settings_for(state_dir, http=spy.url, retry_seconds=0.0), vault)
        untrusted.say(said[0])
        untrusted.settle()
        untrusted.close()
        trusted = Device(settings_for(state_dir, http=spy.url, http_ca_file=str(pki["ca"])), vault)
        trusted.say(said[1])
        trusted.settle()
        trusted.close()
    finally:
        spy.close()
    (entry,) = untrusted.audit("forward_failed")
    assert "CERTIFICATE_VERIFY_FAILED" in entry["error"]
    assert [pcm_of(b) for b in spy.bodies] == [said[1].astype("<i2").tobytes()]


def test_a_consent_for_an_unconfigured_sink_is_reported(state_dir: Path, vault: Vault) -> None:
    vault.consent("wyoming", "grant", "cli")
    device = Device(settings_for(state_dir), vault)
    device.close()
    assert any("forward.wyoming_uri" in n.message for n in device.of(Notice))


@pytest.mark.parametrize(("forward", "mqtt_host", "key"), [
    ({"mqtt_topic": TOPIC}, "", "mqtt.host"),
    ({"mqtt_topic": "voxkeep/#"}, "127.0.0.1", "wildcards"),
    ({"http_url": "ftp://example.lan/x"}, "", "forward.http_url"),
    ({"http_url": "https://h.lan/", "http_ca_file": "/nonexistent/ca.crt"}, "", "forward.http_ca_file"),
    ({"wyoming_uri": "tcp://h.lan"}, "", "forward.wyoming_uri"),
    ({"timeout_seconds": 0.0}, "", "forward.timeout_seconds"),
])
def test_bad_forward_settings_are_one_clear_error(state_dir: Path, vault: Vault, forward: dict[str, Any],
                                                  mqtt_host: str, key: str) -> None:
    settings = Settings(state_dir=str(state_dir), mqtt=MqttSettings(host=mqtt_host),
                        forward=ForwardSettings(**forward))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        Forwarder(settings, vault, lambda _e: None)
    assert "\n" not in str(info.value)
