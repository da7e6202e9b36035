"""The privacy state machine: the single source of truth for muting and recording.

Two owner choices make the state: ``muted`` (the microphone is closed) and ``recording`` (audio may be
stored or forwarded). The mode people see follows from them: ``muted``, else ``listening`` if recording
is on, else ``not_recording``. Keeping them apart means unmuting returns to what the owner chose before,
never silently to recording. Who may do what is decided here and nowhere else:

* voice can stop recording but can never unmute, and can resume recording only if the owner allowed it;
* while the hardware mute switch is engaged, nothing in software can unmute (a latch, not a flag that a
  reconnect or a timeout could reset);
* the button, the CLI and MQTT can mute and unmute.

``mic_open`` is not a choice but a fact reported by the audio loop once the stream has really opened
or closed, so observers (the LED) show what the hardware does, not what was asked.

Every change of mode is written atomically to ``state.json`` before observers hear of it, so after a
crash or power cut the daemon comes back in the same mode. A state file that cannot be read falls back
to ``muted``: the safe side.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from .durable import atomic_write
from .errors import StateError
from .events import State

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
ACTIONS = ("mute", "unmute", "recording_off", "recording_on")


class Mode(StrEnum):
    """What the speaker is doing, as a person would describe it."""

    LISTENING = "listening"
    NOT_RECORDING = "not_recording"
    MUTED = "muted"


@dataclass(frozen=True)
class Outcome:
    """The answer to a request: whether it was carried out, and a sentence for the person who asked."""

    ok: bool
    message: str


@dataclass(frozen=True)
class Choices:
    """The persisted part of the state."""

    muted: bool = False
    recording: bool = True

    @property
    def mode(self) -> Mode:
        if self.muted:
            return Mode.MUTED
        return Mode.LISTENING if self.recording else Mode.NOT_RECORDING


def read_choices(path: Path) -> tuple[Choices, str | None]:
    """Load the persisted choices; on a bad file return the safest state and a message saying why."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Choices(), None
    except OSError as exc:
        return Choices(muted=True), f"cannot read {path} ({exc.strerror}); starting muted to be safe"
    try:
        data = json.loads(raw)
        muted, recording = data["muted"], data["recording"]
        if not isinstance(muted, bool) or not isinstance(recording, bool):
            raise TypeError("muted and recording must be true or false")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        return Choices(muted=True, recording=False), (
            f"state file {path} is damaged ({exc.__class__.__name__}: {exc}); starting muted to be safe. "
            "Unmute with the button or 'voxkeep unmute' once you have checked the device")
    return Choices(muted=muted, recording=recording), None


def write_choices(path: Path, choices: Choices, cause: str) -> None:
    """Persist the choices durably (temp, fsync, rename)."""
    body = {"muted": choices.muted, "recording": choices.recording, "mode": choices.mode.value,
            "cause": cause, "changed_at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        atomic_write(path, (json.dumps(body, indent=1) + "\n").encode())
    except OSError as exc:
        raise StateError(f"cannot save the privacy state to {path} ({exc.strerror}); check the disk") from None


Observer = Callable[[State], None]


class PrivacyState:
    """Thread-safe owner of the privacy state; observers are called with each ``State`` event.

    Observers run on the thread that made the change and must be quick (hand over to a queue).
    """

    def __init__(self, path: Path, *, allow_voice_resume: bool = False,
                 clock: Callable[[], float] = lambda: 0.0) -> None:
        self._path = path
        self._allow_voice_resume = allow_voice_resume
        self.clock = clock
        """Stamps events with audio time; the daemon sets it to its own clock once it exists."""
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._observers: list[Observer] = []
        self._choices, problem = read_choices(path)
        self.load_problem = problem
        """Why the persisted state could not be used (None if it could): the daemon logs it."""
        self._switch_engaged = False
        self._mic_open = False

    # -- reading ---------------------------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self._choices.mode

    @property
    def muted(self) -> bool:
        return self._choices.muted

    @property
    def recording_enabled(self) -> bool:
        return self._choices.recording

    @property
    def mic_open(self) -> bool:
        return self._mic_open

    def snapshot(self) -> dict[str, Any]:
        """The state as plain data, for status, MQTT and the control socket."""
        with self._lock:
            return {"mode": self.mode.value, "mic_open": self._mic_open, "recording_enabled": self.recording_enabled,
                    "switch_engaged": self._switch_engaged}

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer`` with every future State event."""
        with self._lock:
            self._observers.append(observer)

    def current_event(self, cause: str) -> State:
        """A State event describing now, e.g. to announce the state at start-up."""
        return State(t=self.clock(), mode=self.mode.value, mic_open=self._mic_open, cause=cause)

    # -- changing --------------------------------------------------------------------------------
    def request(self, action: str, cause: str) -> Outcome:
        """Ask for ``action`` (mute, unmute, recording_off, recording_on) on behalf of ``cause``."""
        with self._lock:
            c = self._choices
            if action == "mute":
                new = Choices(True, c.recording)
            elif action == "unmute":
                if cause == "voice":
                    return Outcome(False, "voice can never unmute; use the button or 'voxkeep unmute'")
                if self._switch_engaged:
                    return Outcome(False, "the hardware mute switch is engaged; release it to unmute")
                new = Choices(False, c.recording)
            elif action == "recording_off":
                new = Choices(c.muted, False)
            elif action == "recording_on":
                if cause == "voice" and not self._allow_voice_resume:
                    return Outcome(False, "resuming recording by voice is turned off "
                                          "(commands.allow_voice_resume); use a long button press or "
                                          "'voxkeep recording on'")
                new = Choices(c.muted, True)
            else:
                return Outcome(False, f"unknown action '{action}'; use one of {', '.join(ACTIONS)}")
            if new == c:
                return Outcome(True, f"already {c.mode.value.replace('_', ' ')}")
            self._apply(new, cause)
            return Outcome(True, f"now {new.mode.value.replace('_', ' ')}")

    def set_switch(self, engaged: bool) -> None:
        """The hardware mute switch moved. Engaging it mutes; releasing it leaves the mute for the owner."""
        with self._lock:
            self._switch_engaged = engaged
            if engaged and not self._choices.muted:
                self._apply(Choices(True, self._choices.recording), "switch")

    def set_mic_open(self, is_open: bool, cause: str) -> None:
        """The audio loop reports the real stream state; never persisted, since it is a fact, not a choice."""
        with self._lock:
            if is_open == self._mic_open:
                return
            self._mic_open = is_open
            self._notify(cause)

    def wait_until_unmuted(self, timeout: float) -> bool:
        """Block (the audio thread, while its stream is closed) up to ``timeout``; True once unmuted."""
        with self._changed:
            if self._choices.muted:
                self._changed.wait(timeout)
            return not self._choices.muted

    def _apply(self, new: Choices, cause: str) -> None:
        old_mode = self._choices.mode
        write_choices(self._path, new, cause)  # persisted before anyone is told
        self._choices = new
        self.load_problem = None
        log.info("privacy mode %s -> %s (%s)", old_mode.value, new.mode.value, cause)
        self._changed.notify_all()
        self._notify(cause)

    def _notify(self, cause: str) -> None:
        event = self.current_event(cause)
        for observer in list(self._observers):
            observer(event)
