"""Assembling the daemon from settings: real parts for a real speaker, the same parts for simulations.

``build_app`` constructs every edge (audio source, detector, privacy state, vault, recogniser, LED,
button, MQTT, control socket) and connects them through the event bus; ``App.run`` starts the edges,
runs the loop and shuts everything down in the right order. Tests and ``voxkeep simulate`` pass their
own source, pin factory and clock through the same function.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .audio import AudioSource, make_source
from .bus import EventBus
from .config import Settings
from .control import ControlServer
from .daemon import Daemon, FrameHook, RunStats
from .durable import private_dir
from .events import Event, JsonlWriter, Wake
from .handling import UtteranceWorker
from .privacy import STATE_FILE, PrivacyState
from .wake import WakeDetector

log = logging.getLogger(__name__)


@dataclass
class App:
    """A wired daemon and the edges to start before and stop after its loop."""

    settings: Settings
    daemon: Daemon
    privacy: PrivacyState
    bus: EventBus
    vault: Any = None
    starters: list[Callable[[], None]] = field(default_factory=list)
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    last_wake: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        """Everything ``voxkeep status`` and MQTT report; metadata only, never audio or words."""
        out = self.privacy.snapshot()
        out["last_wake"] = self.last_wake
        out["version"] = __version__
        if self.vault is not None:
            out.update(self.vault.status())
        return out

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control-socket request (on the control thread)."""
        action = request.get("action")
        if action == "status":
            return {"ok": True, "message": "", "status": self.status()}
        outcome = self.privacy.request(str(action), "cli")
        return {"ok": outcome.ok, "message": outcome.message, "status": self.status()}

    def observe(self, event: Event) -> None:
        """Keep what status reports about recent events (runs on the bus's thread)."""
        if isinstance(event, Wake):
            self.last_wake = {"t": event.t, "wake_word": event.wake_word,
                              "at": datetime.now(UTC).isoformat(timespec="seconds")}

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
            for stop in reversed(self.stoppers):
                try:
                    stop()
                except Exception:
                    log.exception("error while shutting down")
            self.bus.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def build_app(settings: Settings, *, source: AudioSource | None = None, events_out: str | None = None,
              extra_observers: list[Callable[[Event], None]] | None = None, on_frame: FrameHook | None = None,
              pa_module: Any = None, pin_factory: Any = None, stop: threading.Event | None = None,
              wall_clock: Callable[[], float] | None = None, control: bool = True) -> App:
    """Wire a daemon from ``settings``; every keyword is a seam for tests and simulations."""
    state_dir = private_dir(settings.state_path)
    source = source or make_source(settings.audio.input, settings.audio.device, pa_module=pa_module)
    detector = WakeDetector(settings.wake, settings.models_path)
    holder: dict[str, Daemon] = {}
    privacy = PrivacyState(state_dir / STATE_FILE, allow_voice_resume=settings.commands.allow_voice_resume,
                           clock=lambda: holder["daemon"].clock() if holder else 0.0)
    if privacy.load_problem:
        log.error("%s", privacy.load_problem)
    bus = EventBus(live=source.live)
    privacy.subscribe(bus.publish)
    app_stoppers: list[Callable[[], None]] = []
    if events_out:
        writer = JsonlWriter(events_out)
        bus.subscribe("events", writer, maxsize=1024)
        app_stoppers.append(writer.close)
    for i, observer in enumerate(extra_observers or []):
        bus.subscribe(f"extra{i}", observer)
    vault = _build_vault(settings, state_dir)
    recognizer = _build_recognizer(settings)
    worker = UtteranceWorker(settings, privacy, bus.publish, recognizer=recognizer, vault=vault)
    verifier = _build_verifier(settings)
    daemon = Daemon(settings, source, detector, privacy, bus, worker, verifier=verifier, on_frame=on_frame,
                    stop=stop, **({"wall_clock": wall_clock} if wall_clock else {}))
    holder["daemon"] = daemon
    app = App(settings, daemon, privacy, bus, vault=vault, stoppers=app_stoppers)
    bus.subscribe("status", app.observe)
    if control:
        server = ControlServer(state_dir, app.control)
        app.starters.append(server.start)
        app.stoppers.append(server.stop)
    log.info("voxkeep %s: wake words %s, mode %s, state in %s", __version__, ", ".join(detector.words),
             privacy.mode.value, state_dir)
    return app


def _build_vault(settings: Settings, state_dir: Path) -> Any:
    try:
        from .vault import Vault
    except ModuleNotFoundError:  # TODO(lead): remove once the vault lands
        return None
    vault = Vault(state_dir, settings.vault)
    return vault


def _build_recognizer(settings: Settings) -> Any:
    try:
        from .commands import CommandRecognizer
    except ModuleNotFoundError:  # TODO(lead): remove once commands land
        return None
    return CommandRecognizer(settings.commands)


def _build_verifier(settings: Settings) -> Any:
    if not settings.wake.verify:
        return None
    try:
        from .verify import WakeVerifier
    except ModuleNotFoundError:  # TODO(lead): remove once the verifier lands
        return None
    return WakeVerifier(settings.wake, settings.models_path)
