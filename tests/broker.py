"""A real Mosquitto for the MQTT tests: free loopback ports, passwords, an ACL and TLS from a test CA.

Import the fixtures into a test module (``from broker import broker_fixture, ...``; each is registered
under the name without ``_fixture``, so test parameters do not shadow the imports). Each broker runs from the
Debian ``mosquitto`` binary with a generated config in a temp dir, never the system service, so tests
see exactly the authentication and ACL rules a household broker would enforce.
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

USERS = {"voxkeep": "speaker-secret", "ha": "home-assistant-secret", "walled": "walled-secret"}
"""Broker accounts: the speaker, a Home Assistant stand-in allowed everything, one shut out by the ACL."""

ACL = """\
user ha
topic readwrite #

user voxkeep
topic readwrite voxkeep/#
topic readwrite homeassistant/#

user walled
topic readwrite somewhere-else/#
"""


def free_port() -> int:
    """A loopback port nobody listens on right now (Mosquitto binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Path:
    """A throwaway CA (EC keys: fast to make) in ``directory``; returns its certificate.

    Its extensions satisfy the strict X.509 checks Python 3.13 turns on by default, as a real CA's do.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return directory / f"{name}.crt"


def sign_cert(directory: Path, ca: str, name: str, alt_names: str) -> tuple[Path, Path]:
    """A certificate for ``name`` signed by the CA ``ca`` made with make_ca; returns (cert, key)."""
    (directory / f"{name}.ext").write_text(f"subjectAltName={alt_names}\nauthorityKeyIdentifier=keyid\n"
                                          "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=directory)
    return directory / f"{name}.crt", directory / f"{name}.key"


@dataclass
class Broker:
    """One Mosquitto process on loopback: plain, TLS, and TLS requiring a client certificate."""

    directory: Path
    ca_file: Path
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    mtls_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def write_config(self, server_cert: Path, server_key: Path) -> None:
        passwd = self.directory / "passwd"
        passwd.write_text("")
        for user, password in USERS.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
        (self.directory / "acl").write_text(ACL)
        (self.directory / "mosquitto.conf").write_text(
            # As root, Mosquitto would drop to user 'mosquitto' and lose access to pytest's 0700 dirs.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"  # answers go out at once, not after a 40 ms delayed ACK
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            f"acl_file {self.directory / 'acl'}\n"
            f"log_dest file {self.directory / 'mosquitto.log'}\n"
            "log_type all\n"
            f"listener {self.port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {self.ca_file}\ncertfile {server_cert}\nkeyfile {server_key}\n"
            f"listener {self.mtls_port} 127.0.0.1\n"  # TLS that also demands a client certificate
            f"cafile {self.ca_file}\ncertfile {server_cert}\nkeyfile {server_key}\nrequire_certificate true\n"
        )

    def start(self) -> None:
        """Start (or restart, on the same ports) and return once it accepts connections."""
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.directory / "mosquitto.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {err} {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                threading.Event().wait(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def kill(self) -> None:
        """Kill it without a clean shutdown, as a crash or power cut of the broker host would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Listener:
    """A test MQTT client (the 'Home Assistant' user by default) that records what it receives."""

    def __init__(self, broker: Broker, user: str = "ha", topics: tuple[str, ...] = ("#",),
                 messages: queue.Queue[tuple[str, bytes, bool]] | None = None) -> None:
        self.broker = broker
        self.messages = messages if messages is not None else queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, USERS[user])
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload, bool(m.retain)))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        # paho leaves Nagle on: an ack followed by a publish would wait ~40 ms for the broker's delayed ACK.
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.subscribe([(t, 1) for t in topics])
        self.client.loop_start()
        if not subscribed.wait(5):
            raise RuntimeError("test listener could not subscribe")

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def collect_until(self, topic: str, predicate: Any = None, timeout: float = 10.0) -> list[tuple[str, bytes, bool]]:
        """Messages received up to and including the next on ``topic`` for which ``predicate(payload)`` holds."""
        seen: list[tuple[str, bytes, bool]] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
            if seen[-1][0] == topic and (predicate is None or predicate(seen[-1][1])):
                return seen
        raise AssertionError(f"nothing matching on {topic} within {timeout} s")

    def wait_for(self, topic: str, predicate: Any = None, timeout: float = 10.0) -> bytes:
        """The next payload on ``topic`` for which ``predicate(payload)`` holds; fails after ``timeout``."""
        return self.collect_until(topic, predicate, timeout)[-1][1]

    def wait_json(self, topic: str, predicate: Any = None, timeout: float = 10.0) -> Any:
        """Like wait_for, decoding JSON, with ``predicate`` applied to the decoded value."""
        raw = self.wait_for(topic, lambda p: bool(p) and (predicate is None or predicate(json.loads(p))), timeout)
        return json.loads(raw)

    def latest(self, done: Any, timeout: float = 10.0) -> dict[str, bytes]:
        """Collect messages, keeping the last payload per topic, until ``done(that dict)`` holds."""
        held: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout
        while not done(held):
            left = deadline - time.monotonic()
            try:
                topic, payload, _retain = self.messages.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"gave up after {timeout} s; last payloads: {held}") from None
            held[topic] = payload
        return held

    def drain(self) -> list[tuple[str, bytes, bool]]:
        """Everything received so far (and not yet consumed)."""
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="session", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test CA, the broker's and a client certificate from it, and an unrelated CA that must not be trusted."""
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "test-ca")
    cert, key = sign_cert(directory, "test-ca", "broker", "DNS:localhost,IP:127.0.0.1")
    client_cert, client_key = sign_cert(directory, "test-ca", "speaker", "DNS:speaker")
    other = make_ca(directory, "other-ca")
    return {"ca": ca, "cert": cert, "key": key, "other_ca": other, "client_cert": client_cert,
            "client_key": client_key}


def _start_broker(directory: Path, pki: dict[str, Path]) -> Broker:
    directory.mkdir(parents=True, exist_ok=True)
    broker = Broker(directory, pki["ca"])
    broker.write_config(pki["cert"], pki["key"])
    broker.start()
    return broker


@pytest.fixture(scope="session", name="broker")
def broker_fixture(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]) -> Iterator[Broker]:
    """A broker shared by the tests that neither kill nor reconfigure it."""
    b = _start_broker(tmp_path_factory.mktemp("broker"), pki)
    yield b
    b.kill()


@pytest.fixture(name="own_broker")
def own_broker_fixture(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Broker]:
    """A broker for one test, which may kill and restart it."""
    b = _start_broker(tmp_path / "own-broker", pki)
    yield b
    b.kill()


@pytest.fixture(name="listener")
def listener_fixture(broker: Broker) -> Iterator[Listener]:
    """A subscriber to everything on the shared broker, as Home Assistant's account."""
    sub = Listener(broker)
    yield sub
    sub.close()


@pytest.fixture(name="password_file")
def password_file_fixture(tmp_path: Path) -> Path:
    """The speaker's broker password in a file, the way a systemd credential supplies it."""
    path = tmp_path / "mqtt-password"
    path.write_text(USERS["voxkeep"] + "\n")
    path.chmod(0o600)
    return path
