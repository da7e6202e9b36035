"""The whole daemon on a real broker: what Home Assistant sees, and owner commands that close the mic."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import numpy as np

from broker import (  # noqa: F401 (fixtures are used by name)
    USERS,
    Broker,
    Listener,
    broker_fixture,
    listener_fixture,
    own_broker_fixture,
    pki_fixture,
)
from voxkeep.app import build_app
from voxkeep.audio import MicSource
from voxkeep.config import load_settings
from voxkeep.testing.fakes import FakePyAudio
from voxkeep.testing.speech import silence, speak
from voxkeep.vault import Vault


def test_home_assistant_sees_the_speaker_and_can_mute_it(broker: Broker, listener: Listener, state_dir: Path,
                                                         tmp_path: Path) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text(USERS["voxkeep"])
    device = f"kitchen-{uuid.uuid4().hex[:6]}"
    settings = load_settings(None, {
        "state_dir": str(state_dir), "wake": {"words": ["alexa"]},
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "username": "voxkeep", "password_file": str(password),
                 "device_id": device}})
    with Vault(state_dir, settings.vault) as vault:
        vault.consent("http", "grant", "cli")  # the owner shared with a home server, on the device
    room = np.concatenate([silence(6.0), speak("alexa"), silence(30.0)])  # speaks once the bridge is up
    mic = FakePyAudio(room, accepts_16k=True, speed=2.0)
    app = build_app(settings, source=MicSource(pa_module=mic))
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    base = f"voxkeep/{device}"
    try:
        assert listener.wait_for(f"{base}/availability", lambda p: p == b"online")
        config = listener.wait_json(f"homeassistant/switch/{device}/mute/config")
        assert config["availability_topic"] == f"{base}/availability"
        wake = listener.wait_json(f"{base}/event", lambda e: e["type"] == "wake", timeout=20)
        assert wake["wake_word"] == "alexa"
        state = listener.wait_json(f"{base}/state", lambda s: s.get("last_wake"))
        assert state["mode"] == "listening" and state["mic_open"] is True
        assert "audio" not in state and "transcript" not in state
        assert state["audit_head"] and state["audit_head"] == app.vault.audit_head()  # as the README promises

        listener.publish(f"{base}/set", json.dumps({"mute": True}))
        muted = listener.wait_json(f"{base}/state", lambda s: not s["mic_open"])
        assert muted["mode"] == "muted"
        assert mic.open_streams == []  # the microphone itself is closed

        listener.publish(f"{base}/set", json.dumps({"mute": False}))
        listener.wait_json(f"{base}/state", lambda s: s["mic_open"])
        assert len(mic.open_streams) == 1

        # MQTT can revoke forwarding consent, never grant it.
        assert state["consents"] == ["http"]
        listener.publish(f"{base}/set", json.dumps({"forwarding": True}))
        assert listener.wait_json(f"{base}/error")["error"] == "consent_refused"
        listener.publish(f"{base}/set", json.dumps({"forwarding": False}))
        listener.wait_json(f"{base}/state", lambda s: s["consents"] == [])
        assert app.vault.active_consents() == []
    finally:
        app.daemon.stop.set()
        thread.join(15)
    assert listener.wait_for(f"{base}/availability", lambda p: p == b"offline")


def test_a_stopped_then_killed_broker_never_holds_up_a_mute(own_broker: Broker, state_dir: Path,
                                                             tmp_path: Path) -> None:
    """Broker SIGSTOPped (a hung host), then SIGKILLed and restarted: the owner's mute works throughout,
    and the broker learns the truth once it is back."""
    import signal

    from tests.helpers import run_cli, running_daemon, wait_until

    password = tmp_path / "mqtt-password"
    password.write_text(USERS["voxkeep"])
    device = f"hall-{uuid.uuid4().hex[:6]}"
    mqtt = {"host": "127.0.0.1", "port": own_broker.port, "username": "voxkeep", "password_file": str(password),
            "device_id": device, "reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.5}
    sd = ["--state-dir", str(state_dir)]
    with running_daemon(state_dir, settings={"mqtt": mqtt}) as (app, mic):
        listener = Listener(own_broker)
        try:
            listener.wait_json(f"voxkeep/{device}/state", lambda s: s["mic_open"])
            assert own_broker.process is not None
            own_broker.process.send_signal(signal.SIGSTOP)
            try:
                assert run_cli("mute", *sd).stdout.strip() == b"now muted"
                assert wait_until(lambda: mic.open_streams == [])
            finally:
                own_broker.process.send_signal(signal.SIGCONT)
            assert listener.wait_json(f"voxkeep/{device}/state", lambda s: s["mode"] == "muted")
        finally:
            listener.close()
        own_broker.kill()
        assert run_cli("recording", "off", *sd).returncode == 0
        own_broker.start()
        after = Listener(own_broker)
        try:
            state = after.wait_json(f"voxkeep/{device}/state", lambda s: not s["recording_enabled"], timeout=20)
            assert state["mode"] == "muted" and state["mic_open"] is False
        finally:
            after.close()
    assert app.privacy.muted
