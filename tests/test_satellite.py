"""The Home Assistant voice satellite over the real Wyoming protocol (issue 17).

A loopback Home Assistant built on ``wyoming``'s async client (voxkeep.testing.homeassistant) walks the flow
its wyoming integration uses against the whole daemon: describe, run-satellite, a request in generated speech,
audio chunks, a transcript and a spoken reply, played. The daemon reads a WAV file, so every run is the same;
a frame hook holds the audio until Home Assistant is connected, as a speaker would be before anyone speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import scene, wait_until
from voxkeep.app import build_app
from voxkeep.audio import WavFileSource
from voxkeep.config import GpioSettings, load_settings
from voxkeep.errors import ConfigError
from voxkeep.events import Event
from voxkeep.export import export_bundle
from voxkeep.owner import generate_identity
from voxkeep.privacy import STATE_FILE, PrivacyState
from voxkeep.testing.fakes import FakeSpeaker
from voxkeep.testing.homeassistant import REPLY_RATE, LoopbackHomeAssistant, speech_reply
from voxkeep.vault import Vault

REQUEST = "what will the weather be like tomorrow"


@pytest.fixture(scope="module")
def request_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scene(tmp_path_factory.mktemp("sat") / "request.wav", 1.0, "alexa", 0.2, REQUEST, 3.0)


@pytest.fixture(scope="module")
def command_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scene(tmp_path_factory.mktemp("sat") / "command.wav", 1.0, "alexa", 0.3, "please don't record anymore",
                 3.0)


def settings_for(state_dir: Path, models_dir: Path, **satellite: Any) -> Any:
    sat = {"uri": "tcp://127.0.0.1:0", "allow": ["127.0.0.1"], "name": "Kitchen speaker", "area": "Kitchen",
           **satellite}
    return load_settings(None, {"state_dir": str(state_dir), "models_dir": str(models_dir),
                                "wake": {"words": ["alexa"]}, "audio": {"output_device": "USB Speaker"},
                                "satellite": sat})


def grant(state_dir: Path, settings: Any, *, owner: bool = True) -> None:
    with Vault(state_dir, settings.vault) as vault:
        if owner:
            vault.add_recipient(generate_identity()[1])
        vault.consent("satellite", "grant", "cli")


class Run:
    """The daemon on a WAV file with a loopback Home Assistant connected before the first frame is heard."""

    def __init__(self, settings: Any, wav: Path, *, hold_for_reply: bool = False, pin_factory: Any = None,
                 **ha: Any) -> None:
        self.speaker = FakeSpeaker()
        self.events: list[Event] = []
        self.ha: LoopbackHomeAssistant | None = None
        self._ha_args = ha
        self._hold = hold_for_reply
        self._end = _seconds(wav) - 0.3
        self._gated = False
        self.app = build_app(settings, source=WavFileSource(wav), control=False, pa_module=self.speaker,
                             extra_observers=[self.events.append], on_frame=self._frame, pin_factory=pin_factory)
        self.stats: Any = None

    def _frame(self, t: float) -> None:
        if not self._gated:
            self._gated = True
            sat = self.app.satellite
            self.ha = LoopbackHomeAssistant("127.0.0.1", sat.port, **self._ha_args).start()
            assert wait_until(lambda: sat.connected), "HA never ran the satellite"
        if self._hold and t >= self._end and self.ha is not None:
            self.ha.wait_played(1, timeout=30)
            self._hold = False

    def __enter__(self) -> Run:
        self.stats = self.app.run()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ha is not None:
            self.ha.close()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.events if kind == e.TYPE]


def _seconds(wav: Path) -> float:
    import soundfile

    return float(soundfile.info(str(wav)).duration)


# ------------------------------------------------------------------------------------------- the flow


def test_home_assistant_walks_describe_run_satellite_a_spoken_request_and_the_played_reply(
        request_wav: Path, state_dir: Path, models_dir: Path, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    caplog.set_level(logging.INFO, logger="voxkeep.indicators")
    settings = dataclasses.replace(settings_for(state_dir, models_dir), gpio=GpioSettings(rgb_pins=[5, 6, 13]))
    grant(state_dir, settings)
    with Run(settings, request_wav, hold_for_reply=True, pin_factory=MockFactory(pin_class=MockPWMPin),
             reply_audio=speech_reply("Tomorrow will be sunny, with a high of twenty degrees.")) as run:
        ha = run.ha
    assert ha is not None
    # describe -> info with a satellite section, on the config flow's probe and on the satellite connection
    for info in (ha.probe_info, ha.info):
        assert info.satellite is not None and info.satellite.name == "Kitchen speaker"
        assert info.satellite.area == "Kitchen" and info.satellite.has_vad is True
        assert info.satellite.active_wake_words == ["alexa"]
        assert [m.name for m in info.wake[0].models] == ["alexa"]
    # detection (so HA knows the phrase before the pipeline starts), then run-pipeline from ASR, then audio
    sequence = [t for t in ha.types if t in ("detection", "run-pipeline", "audio-start", "audio-stop")]
    assert sequence == ["detection", "run-pipeline", "audio-start", "audio-stop"]
    (pipeline,) = ha.pipelines
    assert (pipeline.wake_word, pipeline.start_stage, pipeline.end_stage) == ("alexa", "asr", "tts")
    assert pipeline.chunks > 10 and len(pipeline.audio) > 32000  # more than a second of the request
    assert "LED: pulsing blue" in caplog.text and "sending audio" in caplog.text  # the forwarding pulse
    # what HA received is the utterance the vault kept, after the wake phrase
    (recorded,) = run.of_type("recorded")
    (forwarded,) = run.of_type("forwarded")
    assert forwarded == {**forwarded, "sink": "satellite", "recording_id": recorded["recording_id"],
                         "size": len(pipeline.audio)}
    # the transcript is an event; the reply was played through the speaker, resampled to the rate it takes
    assert [e["text"] for e in run.of_type("transcript")] == [ha.transcript]
    assert ha.played == 1
    played = b"".join(data for rate, data in run.speaker.written if rate == 48000)
    reply_seconds = len(ha.reply_audio) / REPLY_RATE
    assert abs(len(played) / 2 / 48000 - reply_seconds) < 0.05
    # the transfer is on the recording's row, in the audit log and so in every export
    with Vault(state_dir, settings.vault) as vault:
        (row,) = vault.list()
        assert row.forwarded_to == ("satellite",)
        entries = [json.loads(line) for line in (vault.dir / "audit.jsonl").read_text().splitlines()]
    assert any(e.get("kind") == "forwarded" and e.get("sink") == "satellite" and e.get("size") == len(pipeline.audio)
               for e in entries), entries[-5:]
    with Vault(state_dir, settings.vault) as vault:
        export_bundle(vault, tmp_path / "export.zip", state_dir)
    with zipfile.ZipFile(tmp_path / "export.zip") as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
    assert {"sink": "satellite", "transfers": 1, "bytes": len(pipeline.audio)} in manifest["forward_destinations"]


def test_without_an_owner_key_the_request_still_goes_and_is_audited(request_wav: Path, state_dir: Path,
                                                                    models_dir: Path) -> None:
    settings = settings_for(state_dir, models_dir)
    grant(state_dir, settings, owner=False)
    with Run(settings, request_wav) as run:
        ha = run.ha
    assert ha is not None and ha.audio_bytes > 32000
    with Vault(state_dir, settings.vault) as vault:
        assert vault.list() == []
        entries = [json.loads(line) for line in (vault.dir / "audit.jsonl").read_text().splitlines()]
    assert any(e.get("kind") == "forwarded" and e.get("sink") == "satellite" and e.get("stored") == "no"
               for e in entries)


# ------------------------------------------------------------------------------------------- nothing leaves


@pytest.mark.parametrize("case", ["no_consent", "revoked", "not_recording", "muted"])
def test_home_assistant_receives_no_audio_and_no_detection(case: str, request_wav: Path, state_dir: Path,
                                                           models_dir: Path) -> None:
    settings = settings_for(state_dir, models_dir)
    if case != "no_consent":
        grant(state_dir, settings)
    if case == "revoked":
        from voxkeep.forward import revoke_consent

        with Vault(state_dir, settings.vault) as vault:
            assert revoke_consent(vault, None, "voice") == ["satellite"]
    if case in ("not_recording", "muted"):
        PrivacyState(state_dir / STATE_FILE).request("recording_off" if case == "not_recording" else "mute", "cli")
    with Run(settings, request_wav) as run:
        ha = run.ha
    assert ha is not None and ha.info is not None  # connected and described all along
    assert ha.audio_bytes == 0 and ha.detections == [] and ha.pipelines == []
    assert not [t for t in ha.types if t.startswith("audio") or t in ("detection", "run-pipeline")]
    assert run.of_type("forwarded") == []
    if case != "muted":
        assert [e["wake_word"] for e in run.of_type("wake")] == ["alexa"]  # it did hear the request


def test_a_privacy_command_is_obeyed_on_the_device_and_never_streamed(command_wav: Path, state_dir: Path,
                                                                      models_dir: Path) -> None:
    settings = settings_for(state_dir, models_dir)
    grant(state_dir, settings)
    with Run(settings, command_wav) as run:
        ha = run.ha
    assert [e["command"] for e in run.of_type("command")] == ["stop_recording"]
    assert ha is not None and ha.audio_bytes == 0 and ha.detections == [] and ha.pipelines == []
    assert run.app.privacy.mode.value == "not_recording"


# ------------------------------------------------------------------------------------------- who gets in


class Daemonless:
    """The satellite server alone (no audio), for the connection rules."""

    def __init__(self, state_dir: Path, models_dir: Path, **satellite: Any) -> None:
        from voxkeep.satellite import Satellite
        from voxkeep.tones import TonePlayer

        self.settings = settings_for(state_dir, models_dir, **satellite)
        self.privacy = PrivacyState(state_dir / STATE_FILE)
        self.vault = Vault(state_dir, self.settings.vault)
        self.events: list[Event] = []
        self.sat = Satellite(self.settings, self.privacy, self.vault, self.events.append, wake_words=["alexa"],
                             player=TonePlayer(""))

    def __enter__(self) -> Daemonless:
        self.sat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sat.stop()
        self.vault.close()


def test_work_that_arrives_while_the_satellite_stops_is_stopped_too(state_dir: Path, models_dir: Path) -> None:
    """A reply that finishes playing as the satellite stops spawns its "played" write during the shutdown: that
    task is cancelled and awaited like the rest, not left pending on a closed loop (where, on Python 3.11, its
    write was reported as never awaited)."""
    started, outcome = threading.Event(), []

    async def late() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    with Daemonless(state_dir, models_dir) as d:
        async def spawns_when_cancelled() -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            finally:
                d.sat._spawn(late())

        assert d.sat._loop is not None
        d.sat._loop.call_soon_threadsafe(lambda: d.sat._spawn(spawns_when_cancelled()))
        assert started.wait(5)
    # late() takes its first step while the first round's tasks are awaited, so the next round cancels it inside
    # its try; a task left pending on the closed loop would never see CancelledError at all.
    assert outcome == ["cancelled"]


def test_a_peer_not_in_the_allow_list_is_refused_at_connect_and_logged(state_dir: Path, models_dir: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voxkeep.satellite")
    with Daemonless(state_dir, models_dir, allow=["192.168.1.10"]) as d, \
            socket.create_connection(("127.0.0.1", d.sat.port), timeout=5) as sock:
        answer = b"?"
        with contextlib.suppress(ConnectionResetError):  # closed without an answer (a reset if bytes were unread)
            sock.sendall(b'{"type": "describe"}\n')
            answer = sock.recv(4096)
        assert answer in (b"", b"?")
    assert "refused a connection from 127.0.0.1: it is not in satellite.allow" in caplog.text


def test_one_home_assistant_at_a_time(state_dir: Path, models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voxkeep.satellite")
    with Daemonless(state_dir, models_dir) as d:
        first = LoopbackHomeAssistant("127.0.0.1", d.sat.port).start()
        try:
            assert wait_until(lambda: d.sat.connected)
            second = LoopbackHomeAssistant("127.0.0.1", d.sat.port, probe=False).start()
            try:
                assert second.closed_by_peer.wait(5)
                assert not first.closed_by_peer.is_set()
            finally:
                second.close()
        finally:
            first.close()
    assert "refused a second Home Assistant connection" in caplog.text


def test_a_silent_client_is_dropped_within_the_ping_timeout(state_dir: Path, models_dir: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from voxkeep import satellite

    caplog.set_level(logging.WARNING, logger="voxkeep.satellite")
    with Daemonless(state_dir, models_dir) as d, socket.create_connection(("127.0.0.1", d.sat.port)) as sock:
        sock.sendall(b'{"type": "run-satellite"}\n')
        sock.settimeout(satellite.PING_SEND_DELAY + satellite.PING_TIMEOUT + 3)
        got = b""
        while chunk := sock.recv(4096):  # a ping arrives; never answered, the connection is closed
            got += chunk
        assert b'"ping"' in got
        assert wait_until(lambda: not d.sat.connected)
    assert "no answer to a ping" in caplog.text


@pytest.mark.parametrize("garbage, logged", [
    (b"this is not json\n", "not JSON"),
    (b'{"type": "audio-chunk", "payload_length": 100000000}\n', "payload_length of 100000000 bytes"),
    (b'{"data": {}}\n', "without a type"),
    (b"x" * 40000, "longer than"),
    (b"[" * 10000 + b"\n", "not JSON"),  # nested past the JSON parser's recursion limit
    (b'{"type": "info", "data_length": -1}\n', "data_length of -1"),
])
def test_malformed_or_oversized_events_get_a_log_line_and_the_daemon_goes_on(
        garbage: bytes, logged: str, state_dir: Path, models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voxkeep.satellite")
    with Daemonless(state_dir, models_dir) as d:
        with socket.create_connection(("127.0.0.1", d.sat.port), timeout=5) as sock:
            sock.sendall(garbage)
            with contextlib.suppress(ConnectionResetError):  # closed with our bytes unread: a reset
                while sock.recv(4096):
                    pass
        assert logged in caplog.text
        # a well-formed event with bad fields is ignored, and the same connection still answers
        ha = LoopbackHomeAssistant("127.0.0.1", d.sat.port).start()
        try:
            ha.send(_event("timer-started", {"id": "t1", "total_seconds": "soon"}))
            ha.send(_event("describe", {}))
            assert wait_until(lambda: ha.types.count("info") >= 2)
            assert not ha.closed_by_peer.is_set()
        finally:
            ha.close()
    assert "ignored a malformed 'timer-started' event" in caplog.text


def _event(kind: str, data: dict[str, Any]) -> Any:
    from wyoming.event import Event as WyomingEvent

    return WyomingEvent(type=kind, data=data)


# ------------------------------------------------------------------------------------------- pause, timers


def test_pause_satellite_mutes_voice_cannot_undo_it_and_run_satellite_lifts_only_its_own_mute(
        state_dir: Path, models_dir: Path) -> None:
    from wyoming.satellite import PauseSatellite, RunSatellite

    with Daemonless(state_dir, models_dir) as d:
        ha = LoopbackHomeAssistant("127.0.0.1", d.sat.port).start()
        try:
            assert wait_until(lambda: d.sat.connected)
            ha.send(PauseSatellite().event())
            assert wait_until(lambda: d.privacy.muted)
            assert wait_until(lambda: PrivacyState(state_dir / STATE_FILE).muted)  # persisted: survives a restart
            assert not d.privacy.request("unmute", "voice").ok
            assert d.privacy.muted
            ha.send(RunSatellite().event())  # Home Assistant's own mute switch turned off again
            assert wait_until(lambda: not d.privacy.muted)
            # a mute by the owner is never lifted by Home Assistant
            d.privacy.request("mute", "button")
            ha.send(PauseSatellite().event())
            ha.send(RunSatellite().event())
            ha.send(_event("describe", {}))
            assert wait_until(lambda: ha.types.count("info") >= 2)
            assert d.privacy.muted
        finally:
            ha.close()


def test_timers_play_tones_and_pulse_the_rgb_led(state_dir: Path, models_dir: Path) -> None:
    from voxkeep.satellite import RING_TIMES, Satellite
    from voxkeep.tones import TonePlayer

    speaker = FakeSpeaker()
    settings = settings_for(state_dir, models_dir)
    privacy = PrivacyState(state_dir / STATE_FILE)
    shown: list[bool] = []
    player = TonePlayer("USB Speaker", pa_module=speaker)
    with Vault(state_dir, settings.vault) as vault:
        sat = Satellite(settings, privacy, vault, lambda e: None, wake_words=["alexa"], player=player,
                        on_timer=shown.append)
        sat.start()
        ha = LoopbackHomeAssistant("127.0.0.1", sat.port).start()
        try:
            ha.send(_event("timer-started", {"id": "pasta", "total_seconds": 600, "name": "pasta"}))
            assert wait_until(lambda: shown == [True])
            ha.send(_event("timer-finished", {"id": "pasta"}))
            assert wait_until(lambda: player.played.count("timer_finished") == RING_TIMES)
        finally:
            ha.close()
            sat.stop()
            player.close()
    assert player.played[0] == "timer_started"

    from voxkeep.indicators import LightView, rgb_led_pattern

    assert rgb_led_pattern(LightView("listening", True, timer=True)).describe(False) == "pulsing green"
    assert rgb_led_pattern(LightView("muted", False, timer=True)).describe(False) == "pulsing green over red"


# ------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("satellite, problem", [
    ({"uri": "tcp://0.0.0.0:10700"}, "'satellite.allow' is empty"),
    ({"uri": "http://0.0.0.0:10700", "allow": ["10.0.0.2"]}, "must be tcp://address:port"),
    ({"uri": "tcp://0.0.0.0:10700", "allow": ["homeassistant.local"]}, "not an IP address or network"),
])
def test_a_bad_satellite_config_is_one_line_naming_the_fix(satellite: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(None, {"satellite": satellite})


def test_satellite_uri_on_the_command_line_needs_an_allow_list(tmp_path: Path, state_dir: Path) -> None:
    from tests.helpers import one_error_line, run_cli

    proc = run_cli("run", "--satellite-uri", "tcp://0.0.0.0:10700", "--input", str(tmp_path / "none.wav"),
                   "--state-dir", str(state_dir))
    assert proc.returncode == 1
    assert "'satellite.allow' is empty; list your Home Assistant's address" in one_error_line(proc.stderr)


def test_a_port_in_use_is_one_error_line(state_dir: Path, models_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Daemonless(state_dir, models_dir, uri=f"tcp://127.0.0.1:{port}")
        with pytest.raises(ConfigError, match="cannot listen on"):
            d.sat.start()
        d.vault.close()


def test_bounded_reader_refuses_lengths_beyond_its_bounds() -> None:
    from voxkeep.wyoming_wire import MAX_DATA_BYTES, ProtocolError, read_event

    async def read(raw: bytes) -> Any:
        reader = asyncio.StreamReader(limit=1024)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_event(reader)

    with pytest.raises(ProtocolError, match="data_length"):
        asyncio.run(read(json.dumps({"type": "x", "data_length": MAX_DATA_BYTES + 1}).encode() + b"\n"))
    event = asyncio.run(read(b'{"type": "audio-chunk", "data_length": 2, "payload_length": 4}\n{}abcd'))
    assert event.type == "audio-chunk" and event.payload == b"abcd"
    assert asyncio.run(read(b'{"type": "ping"')) is None  # closed mid-line: the end, not an error


def test_zeroconf_announces_the_wyoming_service_and_says_what_to_install_without_it(
        state_dir: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voxkeep.satellite import service_info

    info = service_info("voxkeep kitchen", "192.168.1.20", 10700)
    assert (info.type, info.name, info.port) == ("_wyoming._tcp.local.", "voxkeep-kitchen._wyoming._tcp.local.",
                                                 10700)
    assert info.parsed_addresses() == ["192.168.1.20"]
    monkeypatch.setitem(sys.modules, "zeroconf.asyncio", None)  # as if python-zeroconf were not installed
    d = Daemonless(state_dir, models_dir, zeroconf=True)
    try:
        with pytest.raises(ConfigError, match="needs the python-zeroconf package: install it with 'pip install"):
            d.sat.start()
    finally:
        d.vault.close()


def test_doctor_says_where_the_satellite_listens_and_whether_anything_may_be_sent(tmp_path: Path,
                                                                                 state_dir: Path) -> None:
    from tests.helpers import run_cli

    config = tmp_path / "c.toml"
    config.write_text('[audio]\ninput = "-"\n[satellite]\nuri = "tcp://0.0.0.0:10700"\nallow = ["192.168.1.10"]\n')
    out = run_cli("doctor", "--config", str(config), "--state-dir", str(state_dir)).stdout.decode()
    assert ("[ ok ] satellite: on tcp://0.0.0.0:10700 for 192.168.1.10; no consent, so Home Assistant receives "
            "nothing") in out
    assert "no speaker (audio.output_device): replies are not played" in out
    with Vault(state_dir, load_settings(None).vault) as vault:
        vault.consent("satellite", "grant", "cli")
    out = run_cli("doctor", "--config", str(config), "--state-dir", str(state_dir)).stdout.decode()
    assert "consented: requests after a wake word are sent" in out


@contextlib.contextmanager
def _consented_home_assistant(d: Daemonless) -> Iterator[LoopbackHomeAssistant]:
    """A Home Assistant connected to a satellite the owner has consented to."""
    d.vault.consent("satellite", "grant", "cli")
    ha = LoopbackHomeAssistant("127.0.0.1", d.sat.port).start()
    try:
        assert wait_until(lambda: d.sat.connected)
        yield ha
    finally:
        ha.close()


def _stream(d: Daemonless, ha: LoopbackHomeAssistant, pcm: Any, request_start: int = 0) -> None:
    """Hand the satellite one utterance after an "alexa" wake and wait until its audio has stopped."""
    from voxkeep.capture import Utterance

    tell = d.sat.request(Utterance(t_wake=1.0, t_end=6.0, wake_word="alexa", score=0.9, pcm=pcm, command_start=0,
                                   window_start=0, request_start=request_start, store_allowed=True, wall_time=0.0))
    assert tell is not None
    tell(None)
    assert d.sat.drain(10)
    assert wait_until(lambda: ha.pipelines and ha.pipelines[0].stopped)


def test_a_pause_before_the_request_is_not_sent(state_dir: Path, models_dir: Path) -> None:
    """The owner waited 3 s for the LED before speaking: Home Assistant gets the request, not the wait."""
    import numpy as np

    with Daemonless(state_dir, models_dir) as d, _consented_home_assistant(d) as ha:
        pcm = np.concatenate([np.full(3 * 16000, 7, np.int16), np.full(2 * 16000, 300, np.int16)])
        _stream(d, ha, pcm, request_start=3 * 16000)
    sent = np.frombuffer(bytes(ha.pipelines[0].audio), "<i2")
    assert len(sent) == 2 * 16000 and set(sent.tolist()) == {300}


def test_a_revoke_while_streaming_stops_the_audio_before_the_next_chunk(state_dir: Path, models_dir: Path) -> None:
    import numpy as np

    from voxkeep.wyoming_wire import CHUNK_SAMPLES

    with Daemonless(state_dir, models_dir) as d:
        with _consented_home_assistant(d) as ha:
            asked = 0
            ledger = d.vault.active_consents

            def revoked_after_five_looks() -> list[str]:  # the hand-over, the start, then three chunks
                nonlocal asked
                asked += 1
                return ledger() if asked <= 5 else []

            d.vault.active_consents = revoked_after_five_looks  # type: ignore[method-assign]
            _stream(d, ha, np.full(5 * 16000, 300, np.int16))
        assert len(ha.pipelines[0].audio) == 3 * CHUNK_SAMPLES * 2  # not one chunk after the revoke
        entries = [json.loads(line) for line in (d.vault.dir / "audit.jsonl").read_text().splitlines()]
    (sent,) = [e for e in entries if e.get("kind") == "forwarded"]
    assert sent["size"] == 3 * CHUNK_SAMPLES * 2 and "no consent" in sent["stopped"]
