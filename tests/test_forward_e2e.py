"""Forwarding through the whole daemon: synthesized speech in, wake word, vault, then the consented sinks.

``build_app`` submits each stored recording to the ``Forwarder``. The test decrypts the stored file with the
owner's key, so it also shows that what leaves the device is exactly what was kept, and that the audio
loop's mode decides.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pyrage
import pytest
import soundfile
from pyrage import x25519

from broker import (  # noqa: F401 (the fixtures are used by name)
    Broker,
    Listener,
    broker_fixture,
    password_file_fixture,
    pki_fixture,
)
from tests.helpers import scene
from tests.test_forward import TOPIC, TRANSCRIPT, HttpSpy, WyomingSpy, mqtt_payloads, pcm_of, settings_for
from voxkeep.app import build_app
from voxkeep.audio import make_source
from voxkeep.config import WakeSettings
from voxkeep.events import Event, Forwarded, Recorded, Transcript
from voxkeep.owner import generate_identity
from voxkeep.privacy import STATE_FILE, PrivacyState
from voxkeep.vault import Vault


@pytest.fixture(scope="module")
def alexa_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "alexa.wav"
    return scene(path, 1.0, "alexa", 0.2, "what is the weather tomorrow", 2.5)


@pytest.mark.parametrize("mode", ["listening", "not_recording", "muted"])
def test_a_full_run_forwards_exactly_the_stored_utterance_and_only_while_listening(
        mode: str, alexa_scene: Path, state_dir: Path, models_dir: Path, broker: Broker, password_file: Path,
        tmp_path: Path) -> None:
    secret, recipient = generate_identity()
    with Vault(state_dir, settings_for(state_dir).vault) as vault:
        vault.add_recipient(recipient)
        for sink in ("mqtt", "http", "wyoming"):
            vault.consent(sink, "grant", "cli")
    if mode != "listening":
        PrivacyState(state_dir / STATE_FILE).request("mute" if mode == "muted" else "recording_off", "cli")

    http, wyoming, spy = HttpSpy(), WyomingSpy(), Listener(broker, topics=(TOPIC,))
    try:
        base = settings_for(state_dir, http=http.url, wyoming=wyoming.uri, broker=broker,
                            password_file=password_file)
        settings = dataclasses.replace(base, models_dir=str(models_dir), wake=WakeSettings(words=["alexa"]))
        events: list[Event] = []
        app = build_app(settings, source=make_source(str(alexa_scene), ""), control=False,
                        extra_observers=[events.append])
        app.run()
        identity = x25519.Identity.from_str(secret)
        stored: dict[str, np.ndarray] = {}
        with Vault(state_dir, settings.vault) as vault:
            for event in events:
                if isinstance(event, Recorded):
                    wav = pyrage.decrypt(vault.path_of(event.recording_id).read_bytes(), [identity])
                    stored[event.recording_id] = soundfile.read(io.BytesIO(wav), dtype="int16")[0]
        received = mqtt_payloads(spy)
    finally:
        spy.close()
        http.close()
        wyoming.close()

    if mode != "listening":
        assert stored == {} and http.bodies == [] and wyoming.sessions == [] and received == []
        return
    ((rid, pcm),) = stored.items()  # one wake, one stored utterance
    expected = pcm.astype("<i2").tobytes()
    assert [pcm_of(b) for b in http.bodies] == [expected] and [pcm_of(b) for b in received] == [expected]
    assert wyoming.sessions == [expected]
    assert sorted(e.sink for e in events if isinstance(e, Forwarded) and e.recording_id == rid) == [
        "http", "mqtt", "wyoming"]
    assert [e.text for e in events if isinstance(e, Transcript)] == [TRANSCRIPT]
