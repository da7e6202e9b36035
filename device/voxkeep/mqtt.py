"""The MQTT bridge: report state to the household broker, appear in Home Assistant, take owner commands.

Why a bridge thread: the audio loop must never wait on a network. ``publish_state`` and ``publish_event``
only put an item into a bounded deque (the oldest state is dropped, since only the latest matters) and
return; one thread, ``voxkeep-mqtt``, owns the paho client, drives its network loop, reconnects with
backoff and calls the daemon's ``on_command``. paho's callbacks (run by that same thread inside
``client.loop``) only append to an inbox, so a slow ``on_command`` never runs inside paho's code.

Topics, with ``base = voxkeep/<device_id>`` (device_id defaults to the host name):

* ``<base>/availability``  retained ``online`` / ``offline`` (``offline`` is also the last will).
* ``<base>/state``         retained JSON snapshot after every change (keys in ``STATE_KEYS`` only).
* ``<base>/event``         JSON of ``wake`` and ``command`` events only; never audio or transcripts.
* ``<base>/set``           commands, see below.
* ``<base>/error``         JSON ``{"error": code, "message": text[, "command": action]}`` answering a
  command that was malformed, unknown or refused.
* ``<prefix>/<component>/<device_id>/<entity>/config``  retained Home Assistant discovery, republished
  when Home Assistant announces ``online`` on ``<prefix>/status``.

Commands on ``<base>/set`` are a JSON object with exactly one key (at most ``MAX_COMMAND_BYTES``)::

    {"mute": true}        close the microphone
    {"mute": false}       open it again (refused while the hardware mute switch is engaged)
    {"recording": false}  keep listening for wake words and commands, store nothing
    {"recording": true}   store utterances again

A retained message on ``<base>/set`` is never obeyed (it is logged once): it would be replayed at every
start and reconnect and undo the owner's later choices. Forwarding consent is never accepted here:
anyone on the broker could send it, so it can only be granted on the device itself (``voxkeep consent
grant``). Packets over ``MAX_PACKET_BYTES`` are never sent to the speaker (MQTT 5 Maximum Packet Size).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .arbitration import TOPIC_PREFIX as ARBITRATION_TOPICS
from .config import MqttSettings
from .durable import atomic_write
from .errors import ConfigError
from .events import Command, Event, Wake

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 256
"""Longest accepted command payload; every valid command is under 30 bytes."""
MAX_PACKET_BYTES = 16384
"""Largest MQTT packet the speaker accepts, announced to the broker in CONNECT (MQTT 5 Maximum Packet
Size): the broker drops anything bigger for us instead of sending it, so a 200 MB payload on the set
topic never reaches the speaker's memory."""
CLIENT_ID_FILE = "mqtt-client-id"
"""In the state dir: the random part of the speaker's client id, kept so broker logs stay readable."""
PUBLISHED_EVENTS = frozenset({Wake.TYPE, Command.TYPE})
"""The only event types that ever leave the device over MQTT."""
STATE_KEYS = ("mode", "mic_open", "recording_enabled", "switch_engaged", "last_wake", "recordings_stored",
              "retention_days", "consents", "audit_head", "version")
"""Snapshot keys published on ``<base>/state``; anything else the daemon passes stays on the device."""
COMMANDS = {("mute", True): "mute", ("mute", False): "unmute",
            ("recording", True): "recording_on", ("recording", False): "recording_off",
            ("forwarding", False): "forwarding_off"}
"""JSON ``{key: value}`` on ``<base>/set`` -> action passed to ``on_command``."""
POLL_SECONDS = 0.1
"""Longest a queued state waits before the bridge thread sends it (the thread sleeps in select)."""
KEEPALIVE_SECONDS = 30
REMIND_SECONDS = 600.0
"""A failure that persists is logged again this often, so the log shows it is still happening."""
_AUTH_REASONS = {"Bad user name or password", "Not authorized"}

OnCommand = Callable[[str, str], tuple[bool, str]]


class CommandRejected(Exception):
    """A payload on ``<base>/set`` that is not a command; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_command(payload: bytes) -> str:
    """The action a ``<base>/set`` payload asks for, or CommandRejected saying what is wrong and how to fix it."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRejected("too_large", f"command is {len(payload)} bytes; the limit is {MAX_COMMAND_BYTES}; "
                                           'send e.g. {"mute": true}')
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CommandRejected("not_json", 'command is not UTF-8 JSON; send e.g. {"mute": true}') from None
    if not isinstance(data, dict) or len(data) != 1:
        raise CommandRejected("not_one_key", 'command must be a JSON object with exactly one key, '
                                             'e.g. {"mute": true} or {"recording": false}')
    ((key, value),) = data.items()
    if (key, value) == ("forwarding", False):
        return COMMANDS[(key, value)]  # revoking every forwarding consent is always allowed
    if "consent" in key.lower() or "forward" in key.lower():
        raise CommandRejected("consent_refused", "forwarding consent cannot be granted over MQTT; grant it on "
                                                 "the device itself with 'voxkeep consent grant'")
    if key not in {k for k, _ in COMMANDS}:
        raise CommandRejected("unknown_command", f"unknown command {key[:40]!r}; known: mute, recording, "
                                                 "forwarding (false only)")
    if not isinstance(value, bool):
        raise CommandRejected("bad_value", f"{key!r} takes true or false, e.g. {{\"{key}\": true}}")
    return COMMANDS[(key, value)]


def resolve_device_id(settings: MqttSettings) -> str:
    """The topic-safe device id: the configured one (checked), else the short host name (cleaned)."""
    if settings.device_id:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", settings.device_id):
            raise ConfigError(f"config key 'mqtt.device_id' may only hold letters, digits, '_' and '-' (it is "
                              f"used in MQTT topics and Home Assistant ids), not {settings.device_id!r}")
        return settings.device_id
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "voxkeep"


@dataclass(frozen=True)
class Topics:
    """Every topic the bridge uses, derived once from the settings."""

    base: str
    discovery_prefix: str

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def set(self) -> str:
        return f"{self.base}/set"

    @property
    def error(self) -> str:
        return f"{self.base}/error"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"


def discovery_configs(topics: Topics, device_id: str, version: str) -> dict[str, dict[str, Any]]:
    """Home Assistant discovery: config topic -> payload, for the five entities of one speaker."""
    device = {"identifiers": [f"voxkeep_{device_id}"], "name": f"voxkeep {device_id}", "manufacturer": "voxkeep",
              "model": "privacy-first smart speaker", "sw_version": version}
    common = {"availability_topic": topics.availability, "device": device, "state_topic": topics.state}

    def on_off(expr: str) -> str:
        return "{{ 'ON' if " + expr + " else 'OFF' }}"

    entities: list[tuple[str, str, dict[str, Any]]] = [
        ("switch", "mute", {"name": "Mute", "icon": "mdi:microphone-off", "command_topic": topics.set,
                            "payload_on": '{"mute": true}', "payload_off": '{"mute": false}',
                            "value_template": on_off("value_json.mode == 'muted'")}),
        ("switch", "recording", {"name": "Recording", "icon": "mdi:record-rec", "command_topic": topics.set,
                                 "payload_on": '{"recording": true}', "payload_off": '{"recording": false}',
                                 "value_template": on_off("value_json.recording_enabled")}),
        ("binary_sensor", "microphone", {"name": "Microphone", "icon": "mdi:microphone",
                                         "value_template": on_off("value_json.mic_open")}),
        ("sensor", "recordings_stored", {"name": "Recordings stored", "icon": "mdi:database-lock",
                                         "state_class": "measurement",
                                         "value_template": "{{ value_json.recordings_stored }}"}),
        ("sensor", "last_wake_word", {"name": "Last wake word", "icon": "mdi:account-voice",
                                      "value_template": "{{ value_json.last_wake.wake_word "
                                                        "if value_json.last_wake else 'none' }}",
                                      "json_attributes_topic": topics.state,
                                      "json_attributes_template": "{{ (value_json.last_wake or {}) | tojson }}"}),
    ]
    return {f"{topics.discovery_prefix}/{component}/{device_id}/{name}/config":
            {**common, **body, "unique_id": f"voxkeep_{device_id}_{name}", "object_id": f"voxkeep_{device_id}_{name}"}
            for component, name, body in entities}


def read_password(settings: MqttSettings) -> str | None:
    """The broker password from ``password_file`` (trailing newline dropped), or None without one.

    An empty file also means "no password": hw/install.sh creates the systemd credential file empty,
    because a missing credential stops the service from starting.
    """
    if not settings.password_file:
        return None
    path = Path(settings.password_file).expanduser()
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n") or None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the MQTT password file {path} ({exc}); fix 'mqtt.password_file' or "
                          "the systemd credential that provides it") from None


def client_id_for(settings: MqttSettings, device_id: str, state_dir: Path | None) -> str:
    """The daemon's client id: ``mqtt.client_id`` if set, else ``voxkeep-<device_id>-<random>``.

    Not guessable from the topic: a broker drops a session when another client connects with its id,
    so a guessable id would let anyone on the broker knock the speaker offline at will. The random
    part is kept in ``state_dir`` (when it can be written; else it lasts one run).
    """
    if settings.client_id:
        return settings.client_id
    suffix = ""
    path = state_dir / CLIENT_ID_FILE if state_dir else None
    if path is not None:
        try:
            suffix = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            suffix = ""
    if not re.fullmatch(r"[0-9a-f]{16}", suffix):
        suffix = secrets.token_hex(8)
        if path is not None:
            try:
                atomic_write(path, (suffix + "\n").encode())
            except OSError as exc:  # a full disk: this run's id is random all the same
                log.warning("cannot save the MQTT client id to %s (%s); using a new one each start", path,
                            exc.strerror)
    return f"voxkeep-{device_id}-{suffix}"


def make_client(settings: MqttSettings, client_id: str) -> mqtt.Client:
    """A configured, unconnected paho client (MQTT 5, so the broker can tell us when its ACL refuses a publish)."""
    if not settings.host:
        raise ConfigError("MQTT is not configured; set 'mqtt.host' to the broker's host name")
    if not settings.tls and (settings.ca_file or settings.cert_file or settings.key_file):
        raise ConfigError("'mqtt.ca_file', 'cert_file' or 'key_file' is set but 'mqtt.tls' is false; "
                          "set tls = true (and usually port = 8883)")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if settings.username:
        client.username_pw_set(settings.username, read_password(settings))
    if settings.tls:
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(settings, key)
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"'mqtt.{key}' file {value} does not exist; fix the path")
        try:
            client.tls_set(ca_certs=settings.ca_file or None, certfile=settings.cert_file or None,
                           keyfile=settings.key_file or None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the MQTT TLS files ({exc}); check 'mqtt.ca_file', 'cert_file' "
                              "and 'key_file'") from None
    return client


def connect_failure(settings: MqttSettings, exc: OSError) -> str:
    """One line naming why a connection attempt failed and what to change."""
    where = f"MQTT broker {settings.host}:{settings.port}"
    if isinstance(exc, ssl.SSLError):
        return (f"TLS handshake with {where} failed ({exc}); check 'mqtt.ca_file' is the CA that signed the "
                "broker's certificate, and that 'mqtt.port' is its TLS port")
    return f"cannot connect to {where} ({exc}); check 'mqtt.host' and 'mqtt.port' and that the broker is running"


def refusal(settings: MqttSettings, reason: ReasonCode) -> str:
    """One line for a broker that answered CONNECT with a failure."""
    text = f"MQTT broker {settings.host}:{settings.port} refused the connection: {reason}"
    if str(reason) in _AUTH_REASONS:
        return (f"{text}; check 'mqtt.username' ({settings.username or 'none set'}) and the password in "
                f"'mqtt.password_file' ({settings.password_file or 'none set'})")
    return f"{text}; check the broker's log"


def acl_refusal(settings: MqttSettings, topics: Topics, topic: str, reason: ReasonCode) -> str:
    """One line for a publish the broker refused, naming the ACL entries the speaker needs."""
    return (f"MQTT broker refused our publish to {topic} ({reason}); allow user '{settings.username}' to write "
            f"'{topics.base}/#' and '{topics.discovery_prefix}/#' in the broker's ACL")


class _Quiet:
    """Log each distinct failure once (and again every REMIND_SECONDS while it lasts), not on every retry."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[str, tuple[str, float]] = {}

    def warn(self, key: str, message: str) -> None:
        seen = self._last.get(key)
        now = self._clock()
        if seen is None or seen[0] != message or now - seen[1] >= REMIND_SECONDS:
            log.warning("%s", message)
            self._last[key] = (message, now)

    def clear(self, key: str) -> None:
        self._last.pop(key, None)


def _connect_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = MAX_PACKET_BYTES
    return props


class MqttBridge:
    """Publishes state, events and discovery; hands ``<base>/set`` commands to ``on_command``."""

    def __init__(self, settings: MqttSettings, *, on_command: OnCommand, version: str,
                 clock: Callable[[], float] = time.monotonic, state_dir: Path | None = None,
                 on_arbitration: Callable[[str, bytes, bool], None] | None = None) -> None:
        """``on_arbitration(topic, payload, retained)`` gets every message on ``voxkeep/arbitration/#``
        (subscribed only when given), on the bridge thread; it must return at once."""
        if not 0 < settings.reconnect_min_seconds <= settings.reconnect_max_seconds:
            raise ConfigError("'mqtt.reconnect_min_seconds' must be above 0 and at most 'reconnect_max_seconds'")
        self.settings = settings
        self.device_id = resolve_device_id(settings)
        self.topics = Topics(f"voxkeep/{self.device_id}", settings.discovery_prefix.rstrip("/"))
        self.discovery = discovery_configs(self.topics, self.device_id, version)
        self._on_command = on_command
        self._on_arbitration = on_arbitration
        self._quiet = _Quiet(clock)
        self._inbox: deque[tuple[Any, ...]] = deque(maxlen=256)
        self.client_id = client_id_for(settings, self.device_id, state_dir)
        self._client = make_client(settings, self.client_id)
        self._client.will_set(self.topics.availability, "offline", qos=1, retain=True)
        self._client.on_connect = lambda _c, _u, _f, rc, _p: self._inbox.append(("connack", rc))
        self._client.on_message = lambda _c, _u, msg: self._inbox.append(("message", msg.topic, msg.payload,
                                                                           bool(msg.retain)))
        self._client.on_publish = lambda _c, _u, mid, rc, _p: self._inbox.append(("puback", mid, rc))
        self._states: deque[dict[str, Any]] = deque(maxlen=1)
        self._events: deque[Event] = deque(maxlen=64)
        self._inflight: dict[int, str] = {}
        self._state_payload: str | None = None
        self._session_open = False
        self._answered = False  # a CONNACK came in this session (else a closed session gets its own log line)
        self._backoff = settings.reconnect_min_seconds
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voxkeep-mqtt", daemon=True)

    # --- called by the daemon (any thread, never blocks) -------------------------------------------

    def start(self) -> None:
        """Connect in the background; a broker that is down or refuses us is retried with backoff."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish retained ``offline``, disconnect and end the bridge thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def publish_state(self, snapshot: dict[str, Any]) -> None:
        """Queue the latest snapshot (a newer one replaces an unsent older one); pass a fresh dict each time,
        since it is serialised later on the bridge thread."""
        self._states.append(snapshot)

    def publish_event(self, event: Event) -> None:
        """Queue a wake or command event; every other type, and anything while offline, is dropped."""
        if event.TYPE in PUBLISHED_EVENTS and self._connected.is_set():
            self._events.append(event)

    def send(self, topic: str, payload: str) -> bool:
        """Publish now at QoS 0 from any thread but the audio loop (paho queues it and wakes its loop);
        False while offline. For messages that are worthless late, such as arbitration claims."""
        if not self._connected.is_set():
            return False
        return self._client.publish(topic, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the session."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block (not from the audio loop) until connected; for start-up checks and tests."""
        return self._connected.wait(timeout)

    # --- the bridge thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._session_open and not self._open_session():
                self._stop.wait(self._backoff)
                self._backoff = min(self._backoff * 2, self.settings.reconnect_max_seconds)
                continue
            rc = self._client.loop(timeout=POLL_SECONDS)
            self._handle_inbox()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._session_lost(rc)
            elif self._connected.is_set():
                self._flush()
        self._shutdown()

    def _open_session(self) -> bool:
        try:
            self._client.connect(self.settings.host, self.settings.port, keepalive=KEEPALIVE_SECONDS,
                                 properties=_connect_properties())
        except OSError as exc:
            self._quiet.warn("connection", connect_failure(self.settings, exc))
            return False
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            # Without this, a command's ack and its error reply sit ~40 ms in Nagle's buffer.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._session_open = True
        self._answered = False
        return True

    def _session_lost(self, rc: mqtt.MQTTErrorCode) -> None:
        where = f"MQTT broker {self.settings.host}:{self.settings.port}"
        if self._connected.is_set():
            self._quiet.warn("connection", f"lost the {where} ({mqtt.error_string(rc)}); reconnecting")
        elif not self._answered:  # (a refusing CONNACK was logged when it arrived)
            self._quiet.warn("connection", f"the {where} closed the connection before accepting it "
                                           f"({mqtt.error_string(rc)}); if it requires a client certificate, "
                                           "set 'mqtt.cert_file' and 'key_file', else see the broker's log")
        self._connected.clear()
        self._session_open = False
        self._inflight.clear()
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.settings.reconnect_max_seconds)

    def _handle_inbox(self) -> None:
        while self._inbox:
            kind, *rest = self._inbox.popleft()
            if kind == "connack":
                self._connack(rest[0])
            elif kind == "message":
                self._message(rest[0], rest[1], rest[2])
            else:
                self._puback(rest[0], rest[1])

    def _connack(self, reason: ReasonCode) -> None:
        self._answered = True
        if reason.is_failure:
            self._quiet.warn("connection", refusal(self.settings, reason))
            return
        self._quiet.clear("connection")
        self._backoff = self.settings.reconnect_min_seconds
        log.info("connected to MQTT broker %s:%s as %s", self.settings.host, self.settings.port, self.topics.base)
        self._client.subscribe([(self.topics.set, 1), (self.topics.ha_status, 1)]
                               + ([(f"{ARBITRATION_TOPICS}/#", 0)] if self._on_arbitration else []))
        self._publish(self.topics.availability, "online", retain=True)
        self._announce()
        self._connected.set()

    def _announce(self) -> None:
        """Discovery configs, then the last known state, both retained."""
        for topic, config in self.discovery.items():
            self._publish(topic, json.dumps(config), retain=True)
        if self._state_payload is not None:
            self._publish(self.topics.state, self._state_payload, retain=True)

    def _message(self, topic: str, payload: bytes, retained: bool) -> None:
        if self._on_arbitration is not None and topic.startswith(f"{ARBITRATION_TOPICS}/"):
            self._on_arbitration(topic, payload, retained)
            return
        if topic == self.topics.ha_status:
            if payload.strip() == b"online":
                self._announce()
            return
        if retained:
            # A retained command would be obeyed again at every start and reconnect, undoing the owner's
            # later choices (a retained unmute after every 'voxkeep mute'). Commands are live or nothing.
            self._quiet.warn("retained", f"ignored a retained command on {topic}: commands must not be retained; "
                                         f"clear it with: mosquitto_pub -r -n -t {topic}")
            return
        try:
            action = parse_command(payload)
        except CommandRejected as exc:
            self._quiet.warn(f"command:{exc.code}", f"ignored an MQTT command on {topic}: {exc.message}")
            self._reply_error(exc.code, exc.message)
            return
        try:
            ok, message = self._on_command(action, "mqtt")
        except Exception:
            # A bug in the daemon's handler must not end MQTT for the rest of the run.
            log.exception("on_command(%r) failed", action)
            ok, message = False, "the speaker failed to apply the command; see its log"
        if not ok:
            log.info("refused MQTT command %s: %s", action, message)
            self._reply_error("refused", message, command=action)

    def _reply_error(self, code: str, message: str, **extra: str) -> None:
        self._publish(self.topics.error, json.dumps({"error": code, "message": message, **extra}))

    def _puback(self, mid: int, reason: ReasonCode) -> None:
        topic = self._inflight.pop(mid, "?")
        if reason.is_failure:
            self._quiet.warn(f"acl:{topic}", acl_refusal(self.settings, self.topics, topic, reason))

    def _flush(self) -> None:
        while self._events:
            self._publish(self.topics.event, self._events.popleft().to_json())
        if self._states:
            snapshot = self._states.pop()
            self._state_payload = json.dumps({k: snapshot[k] for k in STATE_KEYS if k in snapshot}, default=str)
            self._publish(self.topics.state, self._state_payload, retain=True)

    def _publish(self, topic: str, payload: str, retain: bool = False) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        self._inflight[info.mid] = topic
        return info

    def _shutdown(self) -> None:
        if self._connected.is_set():
            info = self._publish(self.topics.availability, "offline", retain=True)
            deadline = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < deadline:
                if self._client.loop(timeout=POLL_SECONDS) != mqtt.MQTT_ERR_SUCCESS:
                    break
            self._client.disconnect()
            self._client.loop(timeout=POLL_SECONDS)
        self._connected.clear()
        log.info("MQTT bridge stopped")


class BrokerSession:
    """A short synchronous connection for ``voxkeep mqtt check|forget``.

    It uses its own client id (``<client_id>-cli``): a broker drops an existing session when a second
    client connects with the same id, which would knock the running daemon offline.
    """

    def __init__(self, settings: MqttSettings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.device_id = resolve_device_id(settings)
        self.topics = Topics(f"voxkeep/{self.device_id}", settings.discovery_prefix.rstrip("/"))
        self.received: dict[str, bytes] = {}
        self._timeout = timeout
        self._acks: dict[Any, ReasonCode] = {}
        self._client = make_client(settings, f"{settings.client_id or 'voxkeep-' + self.device_id}-cli")
        self._client.on_connect = lambda _c, _u, _f, rc, _p: self._acks.__setitem__("connack", rc)
        self._client.on_publish = lambda _c, _u, mid, rc, _p: self._acks.__setitem__(mid, rc)
        self._client.on_subscribe = lambda _c, _u, mid, rcs, _p: self._acks.__setitem__(mid, rcs[0])
        self._client.on_message = lambda _c, _u, msg: self.received.__setitem__(msg.topic, msg.payload)

    def __enter__(self) -> BrokerSession:
        try:
            self._client.connect(self.settings.host, self.settings.port, keepalive=KEEPALIVE_SECONDS)
        except OSError as exc:
            raise ConfigError(connect_failure(self.settings, exc)) from None
        reason = self._wait("connack")
        if reason.is_failure:
            raise ConfigError(refusal(self.settings, reason))
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.disconnect()
        self._client.loop(timeout=POLL_SECONDS)

    def _wait(self, key: Any) -> ReasonCode:
        deadline = time.monotonic() + self._timeout
        while key not in self._acks:
            # A refused CONNECT both acks and closes in one loop() call, so look at the ack first.
            rc = self._client.loop(timeout=POLL_SECONDS)
            if key not in self._acks and (rc != mqtt.MQTT_ERR_SUCCESS or time.monotonic() > deadline):
                raise ConfigError(f"MQTT broker {self.settings.host}:{self.settings.port} stopped answering; "
                                  "check that it is running and reachable")
        return self._acks.pop(key)

    def publish(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement; ConfigError if its ACL refuses."""
        reason = self._wait(self._client.publish(topic, payload, qos=1, retain=retain).mid)
        if reason.is_failure:
            raise ConfigError(acl_refusal(self.settings, self.topics, topic, reason))

    def collect_retained(self, topic_filter: str, seconds: float) -> dict[str, bytes]:
        """Subscribe to ``topic_filter`` and return the retained messages that arrive within ``seconds``."""
        _result, mid = self._client.subscribe(topic_filter, qos=1)
        self._wait(mid)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._client.loop(timeout=POLL_SECONDS)
        return dict(self.received)


def forget(settings: MqttSettings) -> list[str]:
    """Clear this speaker's retained discovery configs, state and availability; returns the topics cleared."""
    with BrokerSession(settings) as session:
        topics = [*discovery_configs(session.topics, session.device_id, "").keys(),
                  session.topics.state, session.topics.availability]
        for topic in topics:
            session.publish(topic, b"", retain=True)
    return topics
