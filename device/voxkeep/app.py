"""Assembling the daemon from settings: real parts for a real speaker, the same parts for simulations.

``build_app`` constructs every edge (audio source, detector, privacy state, vault, recogniser, LED,
button, MQTT, control socket) and connects them through the event bus; ``App.run`` starts the edges,
runs the loop and shuts everything down in the right order. Tests and ``voxkeep simulate`` pass their
own source, pin factory and clock through the same function.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__, sdnotify
from .audio import AudioSource, make_source
from .bus import EventBus
from .commands import AnswerRecognizer, CommandRecognizer
from .config import Settings
from .control import ControlServer
from .daemon import Daemon, FrameHook, RunStats
from .durable import private_dir
from .errors import VoxkeepError
from .events import Command, Deleted, Event, Forwarded, Handled, JsonlWriter, Notice, Recorded, State, Wake
from .forward import Forwarder, revoke_consent
from .handling import UtteranceWorker
from .indicators import LightView, MuteButton, MuteSwitch, StatusLight, choose_pin_factory
from .privacy import STATE_FILE, Mode, PrivacyState
from .statelock import StateDirBusy, StateLock
from .tones import TonePlayer
from .vault import Vault
from .wake import WakeDetector, second_look

log = logging.getLogger(__name__)


@dataclass
class App:
    """A wired daemon and the edges to start before and stop after its loop."""

    settings: Settings
    privacy: PrivacyState
    bus: EventBus
    vault: Vault
    daemon: Daemon = field(init=False)
    forwarder: Forwarder = field(init=False)
    light: StatusLight | None = None
    satellite: Any = None
    """The Home Assistant satellite (voxkeep.satellite), when ``[satellite] uri`` is set."""
    starters: list[Callable[[], None]] = field(default_factory=list)
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    """Edges that produce events, stopped (last started, first stopped) before the bus delivers the rest."""
    closers: list[Callable[[], None]] = field(default_factory=list)
    """Resources observers use (event file, LED, vault), closed after the bus has delivered everything."""

    last_wake: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        """Everything ``voxkeep status`` and MQTT report; metadata only, never audio or words."""
        out = self.privacy.snapshot()
        out["last_wake"] = self.last_wake
        out["version"] = __version__
        out.update(self.vault.status())
        try:
            out["audit_head"] = self.vault.audit_head()
        except VoxkeepError as exc:  # a damaged head file: say so rather than stop reporting
            out["audit_head"] = None
            log.warning("%s", exc)
        return out

    def control(self, request: dict[str, Any], deadline: float) -> dict[str, Any]:
        """Answer one control-socket request (on a control worker); not applied if not done by ``deadline``."""
        action = request.get("action")
        if action == "status":
            return {"ok": True, "message": "", "status": self.status()}
        outcome = self.privacy.request(str(action)[:40], "cli", deadline=deadline)
        return {"ok": outcome.ok, "message": outcome.message, "status": self.status()}

    def observe(self, event: Event) -> None:
        """Keep what status reports about recent events (runs on the bus's thread)."""
        if isinstance(event, Wake):
            self.last_wake = {"t": event.t, "wake_word": event.wake_word,
                              "at": datetime.fromtimestamp(self.daemon.wall_clock(), UTC).isoformat(timespec="seconds")}

    def run(self, *, handle_signals: bool = False) -> RunStats:
        """Start the edges, run the loop to the end of input (or a signal), stop everything."""
        previous = {}
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self.daemon.stop.set())
        try:
            for start in self.starters:
                start()
            self.bus.publish(self.privacy.current_event("startup"))
            return self.daemon.run()
        finally:
            self.daemon.stop.set()  # also ends the timers (retention, MQTT refresh) that wait on it
            for stop in reversed(self.stoppers):
                _quietly(stop)
            self.bus.close()
            for close in reversed(self.closers):
                _quietly(close)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _quietly(step: Callable[[], None]) -> None:
    """Run one shutdown step; a failure is logged and the others still run."""
    try:
        step()
    except Exception:
        log.exception("error while shutting down")


def build_app(settings: Settings, *, source: AudioSource | None = None, events_out: str | None = None,
              extra_observers: list[Callable[[Event], None]] | None = None, on_frame: FrameHook | None = None,
              pa_module: Any = None, pin_factory: Any = None, stop: threading.Event | None = None,
              wall_clock: Callable[[], float] | None = None, control: bool = True,
              vault: Vault | None = None) -> App:
    """Wire a daemon from ``settings``; every keyword is a seam for tests and simulations."""
    state_dir = private_dir(settings.state_path)
    # Before anything else touches the state dir: a second daemon must not reconcile (and so delete the
    # temporary files of) a vault the first one is writing. A CLI holds it for milliseconds: wait that out.
    try:
        lock = StateLock.acquire(state_dir, "daemon", wait=LOCK_WAIT_SECONDS)
    except StateDirBusy as busy:
        raise VoxkeepError(f"another voxkeep daemon is already running with state in {state_dir} ({busy.holder}); "
                           "stop it, or give this one its own --state-dir") from None
    try:
        return _build(settings, state_dir, lock, source=source, events_out=events_out,
                      extra_observers=extra_observers, on_frame=on_frame, pa_module=pa_module,
                      pin_factory=pin_factory, stop=stop, wall_clock=wall_clock, control=control, vault=vault)
    except BaseException:
        lock.release()
        raise


LOCK_WAIT_SECONDS = 3.0
"""How long a starting daemon waits for the state-dir lock (a CLI changing state.json holds it briefly)."""


def _build(settings: Settings, state_dir: Path, lock: StateLock, *, source: AudioSource | None,
           events_out: str | None, extra_observers: list[Callable[[Event], None]] | None,
           on_frame: FrameHook | None, pa_module: Any, pin_factory: Any, stop: threading.Event | None,
           wall_clock: Callable[[], float] | None, control: bool, vault: Vault | None) -> App:
    source = source or make_source(settings.audio.input, settings.audio.device, pa_module=pa_module)
    detector = WakeDetector(settings.wake, settings.models_path)
    privacy = PrivacyState(state_dir / STATE_FILE, allow_voice_resume=settings.commands.allow_voice_resume)
    if privacy.load_problem:
        log.error("%s", privacy.load_problem)
    bus = EventBus(live=source.live)
    privacy.subscribe(bus.publish)
    if sdnotify.enabled():  # `systemctl status voxkeep` shows e.g. "Status: muted (cli), microphone closed"
        def show(s: State) -> None:
            sdnotify.status(f"{s.mode.replace('_', ' ')} ({s.cause}), microphone {'open' if s.mic_open else 'closed'}")
        privacy.subscribe(show)
        show(privacy.current_event("startup"))
    privacy.on_problem = lambda level, message: bus.publish(Notice(t=privacy.clock(), level=level, message=message))
    vault = vault or Vault(state_dir, settings.vault, **({"clock": wall_clock} if wall_clock else {}))
    # A damaged audit log is set aside by whichever thread appends next; tell the owner from a thread of its
    # own, since that may be the bus's audit observer itself.
    vault.audit_log.on_damage = lambda message: threading.Thread(
        target=bus.publish, args=(Notice(t=0.0, level="error", message=message),), daemon=True).start()
    app = App(settings, privacy, bus, vault)
    app.closers.append(lock.release)  # closers run last first: the lock is dropped after everything else
    app.closers.append(vault.close)
    if events_out:
        writer = JsonlWriter(events_out)
        bus.subscribe("events", writer, maxsize=1024)
        app.closers.append(writer.close)
    for i, observer in enumerate(extra_observers or []):
        bus.subscribe(f"extra{i}", observer)
    bus.subscribe("status", app.observe)
    bus.subscribe("audit", _Auditor(vault))

    # What a person sees and hears. The light shows the saved mode before the microphone opens.
    # One pin factory for every device: gpiozero's mock pins only exist within one factory.
    g = settings.gpio
    if pin_factory is None and (g.led_pin is not None or g.rgb_pins or g.button_pin is not None
                                or g.mute_switch_pin is not None):
        pin_factory = choose_pin_factory(g)
    light = StatusLight(settings.gpio, pin_factory=pin_factory)
    app.light = light
    app.closers.append(light.close)
    light_feed = _LightFeed(light, privacy)
    light_feed.refresh()
    bus.subscribe("light", light_feed)
    _wire_inputs(app, settings, pin_factory)
    tones = TonePlayer(settings.audio.output_device, pa_module=pa_module)
    app.closers.append(tones.close)

    forwarder = app.forwarder = Forwarder(settings, vault, bus.publish, on_transfer=light_feed.set_forwarding)
    if settings.satellite.uri:
        from .satellite import Satellite

        app.satellite = Satellite(settings, privacy, vault, bus.publish, wake_words=detector.words, player=tones,
                                  on_streaming=lambda busy: light_feed.set_forwarding(busy, "satellite"),
                                  on_timer=light_feed.set_timer)
    recognizer = CommandRecognizer(settings.commands, detector.words)
    worker = UtteranceWorker(
        settings, privacy, bus.publish, recognizer=recognizer, vault=vault,
        on_command=lambda command: tones.play(TONE_FOR[command]),
        answers=functools.partial(AnswerRecognizer, settings.commands) if settings.commands.confirm_deletes else None,
        on_ask=lambda: tones.play("confirm"),
        on_recorded=lambda u, rec_id: forwarder.submit(rec_id, u.pcm, u.t_end,
                                                       lambda: privacy.mode is Mode.LISTENING),
        on_request=app.satellite.request if app.satellite is not None else None)
    verifier = second_look(settings.wake, settings.models_path, detector.plans) if settings.wake.verify else None
    daemon = Daemon(settings, source, detector, privacy, bus, worker, verifier=verifier, on_frame=on_frame,
                    stop=stop, tone_guard=(lambda: time.monotonic() < tones.playing_until()) if tones.enabled
                    else None, watchdog=_Watchdog() if sdnotify.enabled() else None,
                    **({"wall_clock": wall_clock} if wall_clock else {}))
    app.daemon = daemon
    privacy.clock = daemon.clock

    app.starters.append(lambda: _vault_startup(vault, bus, daemon))
    app.starters.append(forwarder.start)
    if app.satellite is not None:
        satellite = app.satellite
        app.starters.append(satellite.start)
        app.stoppers.append(lambda: (None if source.live else satellite.drain(settings.forward.retry_seconds),
                                     satellite.stop()))
    # File input: let what was consented arrive before the run ends (bounded by the retry window).
    app.stoppers.append(lambda: (None if source.live else forwarder.drain(settings.forward.retry_seconds),
                                 forwarder.stop()))
    retention = _RetentionTimer(vault, daemon.stop)
    app.starters.append(retention.start)
    if settings.mqtt.host:
        _wire_mqtt(app, settings)
    if control:
        server = ControlServer(state_dir, app.control)
        app.starters.append(server.start)
        app.stoppers.append(server.stop)
    app.stoppers.append(sdnotify.stopping)  # appended last, so it runs first at shutdown
    log.info("voxkeep %s: wake words %s, mode %s, state in %s", __version__, ", ".join(detector.words),
             privacy.mode.value, state_dir)
    return app


STATE_REFRESH_SECONDS = 60.0

TONE_FOR = {"stop_recording": "stopped_recording", "start_recording": "resumed", "delete_last": "deleted",
            "delete_today": "deleted", "stop_sharing": "stopped_recording"}
"""Which confirmation tone each privacy command plays."""


def _wire_inputs(app: App, settings: Settings, pin_factory: Any) -> None:
    """The mute button and the hardware switch, if wired. The switch is read before the mic opens."""
    privacy = app.privacy
    if settings.gpio.button_pin is not None:
        button = MuteButton(settings.gpio, pin_factory=pin_factory,
                            on_press=lambda: privacy.request("unmute" if privacy.muted else "mute", "button"),
                            on_long_press=lambda: privacy.request("recording_on", "button"))
        app.closers.append(button.close)
    if settings.gpio.mute_switch_pin is not None:
        switch = MuteSwitch(settings.gpio, on_change=privacy.set_switch, pin_factory=pin_factory)
        privacy.set_switch(switch.engaged)
        app.closers.append(switch.close)


def _wire_mqtt(app: App, settings: Settings) -> None:
    from .mqtt import MqttBridge

    def on_command(action: str, cause: str) -> tuple[bool, str]:
        if action == "forwarding_off":
            revoked = revoke_consent(app.vault, None, cause)
            bridge.publish_state(app.status())
            return True, f"revoked forwarding to {', '.join(revoked)}" if revoked else "nothing was being forwarded"
        outcome = app.privacy.request(action, cause)
        return outcome.ok, outcome.message

    arbiter = None
    if settings.arbitration.enabled:
        arbiter = _arbiter(app, settings, lambda: bridge)
    bridge = MqttBridge(settings.mqtt, on_command=on_command, version=__version__, state_dir=settings.state_path,
                        on_arbitration=arbiter.receive if arbiter else None)

    def observe(event: Event) -> None:
        bridge.publish_event(event)
        app.observe(event)  # idempotent; the status observer's thread may not have seen it yet
        if isinstance(event, State | Wake | Recorded | Deleted | Forwarded):
            bridge.publish_state(app.status())

    def refresh() -> None:
        """Consents and deletions made by the CLI in another process show up within a minute."""
        while not app.daemon.stop.wait(STATE_REFRESH_SECONDS):
            bridge.publish_state(app.status())

    app.bus.subscribe("mqtt", observe)
    app.starters.append(lambda: (bridge.start(), bridge.publish_state(app.status()),
                                 threading.Thread(target=refresh, name="mqtt-refresh", daemon=True).start()))
    app.stoppers.append(bridge.stop)
    if arbiter is not None:
        app.daemon.arbiter = arbiter
        app.starters.append(arbiter.start)
        app.stoppers.append(arbiter.stop)


def _arbiter(app: App, settings: Settings, bridge: Callable[[], Any]) -> Any:
    """The speaker's part in the home's arbitration (voxkeep.arbitration), speaking through the MQTT bridge."""
    from .arbitration import Arbiter
    from .mqtt import resolve_device_id

    def house_command(command: str, winner: str) -> None:
        """A speaker that won a wake we also heard was told "don't record anymore" or "stop sharing"."""
        cause = f"house:{winner}"
        try:
            app.vault.audit("house_command", command=command, winner=winner)
        except (VoxkeepError, OSError) as exc:  # in force all the same; say it is unaudited
            log.error("the house command %s from %s is not in the audit log: %s", command, winner, exc)
        if command == "stop_recording":
            app.privacy.request("recording_off", cause)
        else:
            revoke_consent(app.vault, None, cause)
        app.bus.publish(Command(t=app.daemon.clock(), command=command))
        app.bus.publish(Notice(t=app.daemon.clock(), level="info", message=f"{command}: said to {winner}, "
                                                                            "applied here too"))

    return Arbiter(settings.arbitration, resolve_device_id(settings.mqtt), send=lambda t, p: bridge().send(t, p),
                   connected=lambda: bridge().connected, publish=app.bus.publish, clock=app.daemon.clock,
                   on_house_command=house_command)


class _LightFeed:
    """Turns events into what the light shows; runs on its own bus thread, so GPIO never slows the loop."""

    def __init__(self, light: StatusLight, privacy: PrivacyState) -> None:
        self._light = light
        self._privacy = privacy
        self._handling = False
        self._sending: set[str] = set()
        self._timer = False

    def refresh(self) -> None:
        snap = self._privacy.snapshot()
        self._light.show(LightView(mode=snap["mode"], mic_open=snap["mic_open"], handling_wake=self._handling,
                                   forwarding=bool(self._sending), timer=self._timer))

    def set_forwarding(self, busy: bool, source: str = "forward") -> None:
        """Called by the forwarder's and the satellite's threads when audio starts or stops leaving; quick."""
        if busy:
            self._sending.add(source)
        else:
            self._sending.discard(source)
        self.refresh()

    def set_timer(self, shown: bool) -> None:
        """A Home Assistant timer is running or ringing (the satellite's thread)."""
        self._timer = shown
        self.refresh()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Wake):
            self._handling = True
        elif isinstance(event, Handled):
            self._handling = False
        elif not isinstance(event, State):
            return
        self.refresh()


class _Auditor:
    """Every change of privacy mode goes into the audit log (metadata only), off the audio loop."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self._mode: str | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, State) and event.mode != self._mode:
            self._mode = event.mode
            try:
                self._vault.audit("state", mode=event.mode, cause=event.cause)
            except (VoxkeepError, OSError) as exc:  # a full disk: the change is in force, say it is unaudited
                log.error("the change to %s (%s) is not in the audit log: %s", event.mode, event.cause, exc)


class _Watchdog:
    """Tells systemd the loop runs: READY=1 on its first call, then watchdog pings (if WatchdogSec is
    set) at most twice per interval."""

    def __init__(self) -> None:
        self._interval = sdnotify.watchdog_interval()
        self._every = (self._interval or 10.0) / 2
        self._next = 0.0
        self._ready = False

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every
        if not self._ready:
            self._ready = sdnotify.ready()
        if self._interval:
            sdnotify.watchdog()


class _RetentionTimer:
    """Deletes recordings past retention once an hour, on its own thread."""

    PERIOD = 3600.0

    def __init__(self, vault: Vault, stop: threading.Event) -> None:
        self._vault = vault
        self._stop = stop

    def start(self) -> None:
        threading.Thread(target=self._run, name="retention", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(self.PERIOD):
            try:
                self._vault.enforce_retention()
            except Exception:
                # A locked or damaged index must not end retention for the rest of the run.
                log.exception("retention could not run; will try again in an hour")


def _vault_startup(vault: Vault, bus: EventBus, daemon: Daemon) -> None:
    """Reconcile index and files, then enforce retention, before the first frame."""
    report = vault.reconcile()  # logs its own summary
    if not report.clean:
        bus.publish(Notice(t=0.0, level="warning", message=report.summary()))
    removed = vault.enforce_retention()
    if removed:
        bus.publish(Deleted(t=0.0, count=removed, cause="retention"))
    why = vault.why_not_recording()
    if why:
        log.warning("recordings will not be kept: %s", why)
