"""The MQTT bridge against a real Mosquitto: what Home Assistant sees, what it may command, and failures."""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import (  # noqa: F401 (the fixtures are used by name)
    USERS,
    Broker,
    Listener,
    broker_fixture,
    listener_fixture,
    own_broker_fixture,
    password_file_fixture,
    pki_fixture,
)
from tests.helpers import wait_until
from voxkeep.cli import main
from voxkeep.config import MqttSettings
from voxkeep.errors import ConfigError
from voxkeep.events import EVENT_TYPES, Command, Wake
from voxkeep.mqtt import MAX_COMMAND_BYTES, REMIND_SECONDS, MqttBridge

SNAPSHOT: dict[str, Any] = {
    "mode": "listening", "mic_open": True, "recording_enabled": True, "switch_engaged": False,
    "last_wake": {"t": 12.5, "wake_word": "hey_jarvis", "at": "2024-05-01T10:00:00+00:00"},
    "recordings_stored": 3, "retention_days": 30, "consents": [], "audit_head": "ab12", "version": "0.1.0",
}


class FakeDaemon:
    """Stands in for the privacy state machine's ``request``: records calls, refuses unmute while 'switched'."""

    def __init__(self, calls: queue.Queue[tuple[str, bytes, bool]] | None = None) -> None:
        self.calls = calls if calls is not None else queue.Queue()
        self.switch_engaged = False
        self.fail_next = False
        self.threads: set[str] = set()

    def __call__(self, action: str, cause: str) -> tuple[bool, str]:
        self.threads.add(threading.current_thread().name)
        self.calls.put(("call", f"{action}:{cause}".encode(), False))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("bug in the daemon")
        if action == "unmute" and self.switch_engaged:
            return False, "the hardware mute switch is engaged"
        return True, "ok"

    def next_call(self, timeout: float = 10.0) -> str:
        return self.calls.get(timeout=timeout)[1].decode()


def bridge_settings(b: Broker, pw: Path, **over: Any) -> MqttSettings:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": b.port, "username": "voxkeep", "password_file": str(pw),
                              "device_id": f"test-{uuid.uuid4().hex[:8]}", "reconnect_min_seconds": 0.05,
                              "reconnect_max_seconds": 0.5, **over}
    return MqttSettings(**values)


@pytest.fixture
def make_bridge() -> Iterator[Callable[..., MqttBridge]]:
    """``make_bridge(settings, on_command)`` -> a started bridge, stopped after the test."""
    made: list[MqttBridge] = []

    def make(s: MqttSettings, on_command: FakeDaemon | None = None) -> MqttBridge:
        bridge = MqttBridge(s, on_command=on_command or FakeDaemon(), version="0.1.0-test")
        bridge.start()
        made.append(bridge)
        return bridge

    yield make
    for bridge in made:
        bridge.stop()


@pytest.fixture
def running(broker: Broker, password_file: Path,
            make_bridge: Callable[..., MqttBridge]) -> tuple[MqttBridge, FakeDaemon]:
    """A connected bridge on the shared broker with a FakeDaemon behind it."""
    daemon = FakeDaemon()
    bridge = make_bridge(bridge_settings(broker, password_file), daemon)
    assert bridge.wait_connected(10), "bridge did not connect to the test broker"
    return bridge, daemon


def messages(log: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in log.records if needle in r.getMessage()]


# --- what a subscriber sees ----------------------------------------------------------------------------

def test_state_discovery_and_availability_as_home_assistant_sees_them(running, listener: Listener) -> None:
    bridge, daemon = running
    bridge.publish_state({**SNAPSHOT, "transcript": "turn off the lights", "audio": "UklGRg=="})
    state = listener.wait_json(bridge.topics.state)
    assert state == SNAPSHOT  # the extra keys never leave the device

    late = Listener(listener.broker)  # a subscriber that arrives later gets the retained copies
    try:
        late.publish(f"{bridge.topics.base}/marker", "end")  # live, so it arrives after the retained burst
        retained = {t: (p, r) for t, p, r in late.collect_until(f"{bridge.topics.base}/marker")}
    finally:
        late.close()
    configs = {t: json.loads(p) for t, (p, r) in retained.items() if t.endswith("/config") and bridge.device_id in t}
    assert retained[bridge.topics.state][1] is True
    assert retained[bridge.topics.availability] == (b"online", True)
    assert sorted(c["name"] for c in configs.values()) == [
        "Last wake word", "Microphone", "Mute", "Recording", "Recordings stored"]
    for topic, config in configs.items():
        assert topic.startswith(f"homeassistant/{topic.split('/')[1]}/{bridge.device_id}/")
        assert config["availability_topic"] == bridge.topics.availability
        assert config["state_topic"] == bridge.topics.state
        assert config["device"]["identifiers"] == [f"voxkeep_{bridge.device_id}"]
        assert config["device"]["sw_version"] == "0.1.0-test"
    assert len({c["unique_id"] for c in configs.values()}) == 5

    # What Home Assistant sends when the owner flips each switch is a command the bridge obeys.
    switches = [c for c in configs.values() if "command_topic" in c]
    for switch in sorted(switches, key=lambda c: c["name"]):
        for payload in (switch["payload_on"], switch["payload_off"]):
            listener.publish(switch["command_topic"], payload)
            assert daemon.next_call().endswith(":mqtt")


def test_only_wake_and_command_events_are_published(running, listener: Listener) -> None:
    bridge, _ = running
    samples = [cls(**{f.name: 1 for f in dataclasses.fields(cls)}) for cls in EVENT_TYPES.values()]
    for event in samples:
        if event.TYPE != Command.TYPE:
            bridge.publish_event(event)
    bridge.publish_event(Command(t=2.0, command="stop_recording"))  # the last one: everything before arrived
    received = listener.collect_until(bridge.topics.event, lambda p: json.loads(p)["type"] == "command")
    assert [json.loads(p)["type"] for t, p, _ in received if t == bridge.topics.event] == [Wake.TYPE, Command.TYPE]
    assert len(samples) > 2 and "transcript" in EVENT_TYPES  # the filter was really exercised


def test_home_assistant_restart_gets_discovery_again(running, listener: Listener) -> None:
    bridge, _ = running
    listener.wait_for(bridge.topics.availability)
    listener.drain()
    listener.publish("homeassistant/status", "online")
    for topic in bridge.discovery:
        assert json.loads(listener.wait_for(topic))["unique_id"]


def test_stop_publishes_retained_offline(broker: Broker, password_file: Path, listener: Listener) -> None:
    bridge = MqttBridge(bridge_settings(broker, password_file), on_command=FakeDaemon(), version="t")
    bridge.start()
    assert bridge.wait_connected(10)
    listener.wait_for(bridge.topics.availability, lambda p: p == b"online")
    bridge.stop()
    assert listener.wait_for(bridge.topics.availability) == b"offline"
    assert not bridge.connected


# --- commands --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "action"), [
    ('{"mute": true}', "mute"), ('{"mute": false}', "unmute"),
    ('{"recording": false}', "recording_off"), ('{"recording": true}', "recording_on"),
])
def test_commands_reach_the_daemon(running, listener: Listener, payload: str, action: str) -> None:
    bridge, daemon = running
    listener.publish(bridge.topics.set, payload)
    assert daemon.next_call() == f"{action}:mqtt"
    assert daemon.threads == {"voxkeep-mqtt"}  # the bridge's own thread, never the caller's or paho's


def test_refused_unmute_is_answered_with_the_reason(running, listener: Listener) -> None:
    bridge, daemon = running
    daemon.switch_engaged = True
    listener.publish(bridge.topics.set, '{"mute": false}')
    reply = listener.wait_json(bridge.topics.error)
    assert reply == {"error": "refused", "message": "the hardware mute switch is engaged", "command": "unmute"}


@pytest.mark.parametrize("payload", ['{"consent": "http"}', '{"grant_consent": {"sink": "mqtt"}}',
                                     '{"forward": true}'])
def test_consent_cannot_be_granted_over_mqtt(running, listener: Listener, payload: str) -> None:
    bridge, daemon = running
    listener.publish(bridge.topics.set, payload)
    reply = listener.wait_json(bridge.topics.error)
    assert reply["error"] == "consent_refused"
    assert "voxkeep consent grant" in reply["message"]
    assert daemon.calls.empty()


@pytest.mark.parametrize(("payload", "code"), [
    (b"{" + b" " * MAX_COMMAND_BYTES + b'"mute": true}', "too_large"),
    (b"mute", "not_json"), (b"\xff\xfe", "not_json"), (b"", "not_json"),
    (b'{"mute": true, "recording": true}', "not_one_key"), (b"[true]", "not_one_key"),
    (b'{"reboot": true}', "unknown_command"), (b'{"mute": "yes"}', "bad_value"), (b'{"mute": 1}', "bad_value"),
])
def test_bad_commands_are_answered_on_error(running, listener: Listener, payload: bytes, code: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    bridge, daemon = running
    with caplog.at_level(logging.WARNING, logger="voxkeep.mqtt"):
        listener.publish(bridge.topics.set, payload)
        reply = listener.wait_json(bridge.topics.error)
    assert reply["error"] == code
    assert "e.g." in reply["message"] or "known:" in reply["message"]
    assert daemon.calls.empty()
    assert messages(caplog, "ignored an MQTT command")


def test_a_failing_daemon_handler_does_not_end_mqtt(running, listener: Listener) -> None:
    bridge, daemon = running
    daemon.fail_next = True
    listener.publish(bridge.topics.set, '{"mute": true}')
    assert listener.wait_json(bridge.topics.error)["error"] == "refused"
    listener.publish(bridge.topics.set, '{"mute": true}')
    daemon.next_call()
    assert daemon.next_call() == "mute:mqtt"


_EXPECTED = {"mute": {True: "mute", False: "unmute"}, "recording": {True: "recording_on", False: "recording_off"}}


def oracle(payload: bytes) -> str | None:
    """The action a payload should trigger per the documented schema, else None (must get an error reply)."""
    if len(payload) > MAX_COMMAND_BYTES:
        return None
    try:
        data = json.loads(payload.decode("utf-8"))
    except ValueError:
        return None
    if isinstance(data, dict) and len(data) == 1:
        ((key, value),) = data.items()
        if isinstance(value, bool):
            return _EXPECTED.get(key, {}).get(value)
    return None


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                     max_leaves=8)
_payloads = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(str.encode),
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["mute", "recording", "consent", "Mute", "forward_to", ""]), _json,
                    max_size=3).map(lambda d: json.dumps(d).encode()),
    st.integers(MAX_COMMAND_BYTES - 14, 5000).map(lambda n: b'{"mute": true' + b" " * n + b"}"),
)


def test_a_thousand_malformed_payloads_then_a_valid_command(broker: Broker, password_file: Path,
                                                           make_bridge: Callable[..., MqttBridge]) -> None:
    """Every payload gets exactly the documented outcome (a command or an error reply); none stops the bridge."""
    outcomes: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
    daemon = FakeDaemon(outcomes)
    bridge = make_bridge(bridge_settings(broker, password_file), daemon)
    assert bridge.wait_connected(10)
    sub = Listener(broker, topics=(bridge.topics.error,), messages=outcomes)
    try:
        @settings(max_examples=1000, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(_payloads)
        def one(payload: bytes) -> None:
            sub.publish(bridge.topics.set, payload)
            kind, body, _ = outcomes.get(timeout=10)
            expected = oracle(payload)
            if expected is None:
                assert kind == bridge.topics.error, f"{payload!r} was obeyed as {body!r}"
                assert json.loads(body)["error"]
            else:
                assert body.decode() == f"{expected}:mqtt", f"{payload!r} gave {body!r}"

        one()
        sub.publish(bridge.topics.set, '{"recording": false}')
        assert outcomes.get(timeout=10)[1] == b"recording_off:mqtt"
        assert bridge.connected
    finally:
        sub.close()


# --- connection failures -----------------------------------------------------------------------------------

def test_broker_killed_and_restarted_mid_run(own_broker: Broker, password_file: Path,
                                             make_bridge: Callable[..., MqttBridge],
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="voxkeep.mqtt")
    daemon = FakeDaemon()
    bridge = make_bridge(bridge_settings(own_broker, password_file), daemon)
    assert bridge.wait_connected(10)
    bridge.publish_state(SNAPSHOT)
    first = Listener(own_broker)
    first.wait_json(bridge.topics.state)
    first.close()

    own_broker.kill()
    assert wait_until(lambda: not bridge.connected)
    muted = {**SNAPSHOT, "mode": "muted", "mic_open": False}
    bridge.publish_state(muted)  # while the broker is down: queued, not lost, and the caller is not held up
    assert wait_until(lambda: len(messages(caplog, "cannot connect")) >= 1)
    own_broker.start()  # no persistence: the new broker knows nothing retained

    after = Listener(own_broker)
    try:
        held = after.latest(lambda h: h.get(bridge.topics.state, b"").startswith(b'{"mode": "muted"')
                            and all(t in h for t in [bridge.topics.availability, *bridge.discovery]))
        assert json.loads(held[bridge.topics.state]) == muted
        assert held[bridge.topics.availability] == b"online"
        after.publish(bridge.topics.set, '{"mute": false}')
        assert daemon.next_call() == "unmute:mqtt"
    finally:
        after.close()
    assert len(messages(caplog, "lost the MQTT broker")) == 1
    assert len(messages(caplog, "cannot connect")) == 1, "one log line per failure, not one per retry"


def test_wrong_password_is_refused_with_one_clear_log_line(broker: Broker, tmp_path: Path,
                                                         make_bridge: Callable[..., MqttBridge],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    before = broker.log().count("not authorised")
    bridge = make_bridge(bridge_settings(broker, wrong))
    assert wait_until(lambda: broker.log().count("not authorised") >= before + 3), "bridge stopped retrying"
    lines = messages(caplog, "refused the connection")
    assert len(lines) == 1
    assert "Not authorized" in lines[0] and "mqtt.password_file" in lines[0] and str(wrong) in lines[0]
    assert not bridge.connected
    bridge.publish_state(SNAPSHOT)  # still accepted without blocking


def test_a_lasting_failure_is_logged_again_after_the_reminder_interval(broker: Broker, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    now = [0.0]
    bridge = MqttBridge(bridge_settings(broker, wrong), on_command=FakeDaemon(), version="t", clock=lambda: now[0])
    bridge.start()
    try:
        assert wait_until(lambda: len(messages(caplog, "refused the connection")) == 1)
        now[0] = REMIND_SECONDS - 1
        attempts = broker.log().count("not authorised")
        assert wait_until(lambda: broker.log().count("not authorised") >= attempts + 2)
        assert len(messages(caplog, "refused the connection")) == 1
        now[0] = REMIND_SECONDS + 1
        assert wait_until(lambda: len(messages(caplog, "refused the connection")) == 2)
    finally:
        bridge.stop()


def test_a_crashed_daemon_is_marked_offline_by_the_last_will(broker: Broker, password_file: Path,
                                                             listener: Listener) -> None:
    s = bridge_settings(broker, password_file)
    code = ("import sys, threading; from voxkeep.config import MqttSettings; from voxkeep.mqtt import MqttBridge; "
            f"b = MqttBridge(MqttSettings(**{dataclasses.asdict(s)!r}), on_command=lambda a, c: (True, ''), "
            "version='t'); b.start(); assert b.wait_connected(10); print('up', flush=True); threading.Event().wait()")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        listener.wait_for(f"voxkeep/{s.device_id}/availability", lambda p: p == b"online")
    finally:
        child.kill()
        child.wait()
    assert listener.wait_for(f"voxkeep/{s.device_id}/availability") == b"offline"


def test_broker_acl_forbidding_the_topics_is_logged(broker: Broker, make_bridge: Callable[..., MqttBridge],
                                                    listener: Listener, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    walled = tmp_path / "walled"
    walled.write_text(USERS["walled"])
    bridge = make_bridge(bridge_settings(broker, walled, username="walled"))
    assert bridge.wait_connected(10)
    bridge.publish_state(SNAPSHOT)
    assert wait_until(lambda: messages(caplog, f"refused our publish to {bridge.topics.state}"))
    line = messages(caplog, f"refused our publish to {bridge.topics.state}")[0]
    assert "Not authorized" in line and f"'{bridge.topics.base}/#'" in line and "ACL" in line
    bridge.publish_state({**SNAPSHOT, "recordings_stored": 4})
    assert wait_until(lambda: len(messages(caplog, "refused our publish")) >= 2)
    assert len(messages(caplog, f"refused our publish to {bridge.topics.state}")) == 1
    assert not [t for t, _, _ in listener.drain() if t.startswith(bridge.topics.base)]
    assert bridge.connected


def test_tls_with_a_generated_ca(broker: Broker, password_file: Path, pki: dict[str, Path],
                                 make_bridge: Callable[..., MqttBridge], listener: Listener) -> None:
    bridge = make_bridge(bridge_settings(broker, password_file, host="localhost", port=broker.tls_port, tls=True,
                                         ca_file=str(pki["ca"])))
    assert bridge.wait_connected(10)
    bridge.publish_state(SNAPSHOT)
    assert listener.wait_json(bridge.topics.state) == SNAPSHOT


def test_tls_client_certificate(broker: Broker, password_file: Path, pki: dict[str, Path],
                                make_bridge: Callable[..., MqttBridge], listener: Listener,
                                caplog: pytest.LogCaptureFixture) -> None:
    tls = {"host": "localhost", "port": broker.mtls_port, "tls": True, "ca_file": str(pki["ca"])}
    without = make_bridge(bridge_settings(broker, password_file, **tls))
    with_cert = make_bridge(bridge_settings(broker, password_file, **tls, cert_file=str(pki["client_cert"]),
                                            key_file=str(pki["client_key"])))
    assert with_cert.wait_connected(10)
    with_cert.publish_state(SNAPSHOT)
    assert listener.wait_json(with_cert.topics.state) == SNAPSHOT
    assert wait_until(lambda: messages(caplog, "closed the connection before accepting it"))
    assert "mqtt.cert_file" in messages(caplog, "closed the connection")[0]
    assert not without.connected


def test_tls_with_the_wrong_ca_is_refused_clearly(broker: Broker, password_file: Path, pki: dict[str, Path],
                                                  make_bridge: Callable[..., MqttBridge],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    bridge = make_bridge(bridge_settings(broker, password_file, host="localhost", port=broker.tls_port, tls=True,
                                         ca_file=str(pki["other_ca"])))
    assert wait_until(lambda: messages(caplog, "TLS handshake"))
    line = messages(caplog, "TLS handshake")[0]
    assert "certificate verify failed" in line and "mqtt.ca_file" in line
    assert not bridge.connected


# --- configuration and the CLI -------------------------------------------------------------------------------

@pytest.mark.parametrize(("over", "needle"), [
    ({"device_id": "kitchen/#"}, "mqtt.device_id"),
    ({"password_file": "/nonexistent/pw"}, "/nonexistent/pw"),
    ({"ca_file": "/etc/ssl/certs/ca-certificates.crt"}, "tls = true"),
    ({"tls": True, "ca_file": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"),
    ({"host": ""}, "mqtt.host"),
    ({"reconnect_min_seconds": 0.0}, "reconnect_min_seconds"),
])
def test_bad_settings_fail_at_construction_with_one_line(broker: Broker, password_file: Path,
                                                         over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        MqttBridge(bridge_settings(broker, password_file, **over), on_command=FakeDaemon(), version="t")
    assert needle in str(err.value) and "\n" not in str(err.value)


def write_config(path: Path, s: MqttSettings) -> Path:
    lines = ["[mqtt]"] + [f"{k} = {json.dumps(getattr(s, k))}" for k in
                          ("host", "port", "username", "password_file", "device_id")]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_check_and_forget(running, listener: Listener, tmp_path: Path, password_file: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    bridge, _ = running
    bridge.publish_state(SNAPSHOT)
    listener.wait_json(bridge.topics.state)
    config = write_config(tmp_path / "config.toml", bridge.settings)

    assert main(["mqtt", "check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"{bridge.topics.availability}: online" in out and '"recordings_stored": 3' in out
    assert bridge.connected, "the CLI's own client id must not knock the daemon off the broker"

    bridge.stop()
    assert main(["mqtt", "forget", "--config", str(config)]) == 0
    assert "cleared 7 retained topics" in capsys.readouterr().out
    fresh = Listener(listener.broker, topics=(f"{bridge.topics.base}/#", f"homeassistant/+/{bridge.device_id}/#"))
    try:
        fresh.publish(f"{bridge.topics.base}/marker", "end")  # live, so it arrives after any retained copies
        left = [(t, p) for t, p, r in fresh.collect_until(f"{bridge.topics.base}/marker") if r]
    finally:
        fresh.close()
    assert left == []


def test_cli_wrong_password_is_one_line(broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    config = write_config(tmp_path / "config.toml", bridge_settings(broker, wrong))
    assert main(["mqtt", "check", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("voxkeep: error: MQTT broker") and "Not authorized" in err and "\n" not in err


# --- hostile brokers and clients -------------------------------------------------------------------------

def test_a_retained_command_is_never_obeyed_and_the_session_cannot_be_kicked(
        broker: Broker, password_file: Path, listener: Listener, make_bridge: Callable[..., MqttBridge],
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    caplog.set_level(logging.INFO, logger="voxkeep.mqtt")
    s = bridge_settings(broker, password_file)
    set_topic = f"voxkeep/{s.device_id}/set"
    listener.publish(set_topic, '{"mute": false}', retain=True)  # left behind by someone, or by an attacker
    try:
        daemon = FakeDaemon()
        bridge = MqttBridge(s, on_command=daemon, version="0.1.0-test", state_dir=tmp_path)
        assert bridge.client_id != f"voxkeep-{s.device_id}" and bridge.client_id.startswith(f"voxkeep-{s.device_id}-")
        again = MqttBridge(s, on_command=daemon, version="0.1.0-test", state_dir=tmp_path)
        assert again.client_id == bridge.client_id  # persistent, so broker logs stay readable
        bridge.start()
        try:
            assert bridge.wait_connected(10)
            # Anyone guessing the id from the topic connects with it: the speaker's session must survive.
            intruder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"voxkeep-{s.device_id}",
                                   protocol=mqtt.MQTTv5)
            intruder.username_pw_set("ha", USERS["ha"])
            intruder.connect("127.0.0.1", broker.port)
            intruder.loop(timeout=0.5)
            intruder.disconnect()
            listener.publish(set_topic, '{"mute": true}')  # a live command still works
            assert daemon.next_call() == "mute:mqtt", "a retained command was obeyed"
            assert daemon.calls.empty()
        finally:
            bridge.stop()
    finally:
        listener.publish(set_topic, b"", retain=True)
    assert len(messages(caplog, "ignored a retained command")) == 1
    assert messages(caplog, "lost the MQTT broker") == []


def test_an_oversized_payload_never_reaches_the_speaker(running, broker: Broker, listener: Listener) -> None:
    bridge, daemon = running
    replies: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
    errors = Listener(broker, topics=(bridge.topics.error,), messages=replies)
    try:
        listener.publish(bridge.topics.set, b'{"mute": true' + b" " * (8 << 20) + b"}")  # 8 MB
        listener.publish(bridge.topics.set, '{"mute": true}')
        assert daemon.next_call() == "mute:mqtt"
        listener.publish(bridge.topics.set, b"mute")  # answered on error, after anything the big one caused
        _topic, body, _ = replies.get(timeout=10)
        assert json.loads(body)["error"] == "not_json", "the 8 MB payload was delivered to the speaker"
        assert bridge.connected and daemon.calls.empty()
    finally:
        errors.close()
