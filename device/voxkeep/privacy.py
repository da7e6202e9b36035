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

Every change is written atomically to ``state.json``, so after a crash or power cut the daemon comes
back in the same mode. Which comes first depends on the direction, because the owner's mute must win
even on a full or failing disk:

* a change toward privacy (mute, recording off) takes effect at once, in memory and for every observer
  (the stream closes, the LED lights), and is then saved by a background saver; the asker waits for the
  save at most ``save_wait_seconds`` and is then told "not saved yet" (a hung SD card must not make
  ``voxkeep mute`` say the daemon did not answer while the mute is in force). If the save fails it is
  logged, reported through ``on_problem`` (the daemon makes it a ``notice`` event) and retried in the
  background until it succeeds;
* a change away from privacy (unmute, recording on) is saved first and refused, changing nothing, if
  it cannot be saved, since after a restart the speaker would otherwise not do what it said.

Saves are serialised and always write the state in force, so the file never goes back to an older
choice. A state file that cannot be read falls back to ``muted``: the safe side.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
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
        fix = "free some space on it" if exc.errno == errno.ENOSPC else "check the disk (dmesg, voxkeep doctor)"
        raise StateError(f"cannot save the privacy state to {path} ({exc.strerror}); {fix}") from None


Observer = Callable[[State], None]
OnProblem = Callable[[str, str], None]
"""``(level, message)``: something about saving the state the owner should hear of."""

SAVE_WAIT_SECONDS = 1.0
"""How long a mute or recording-off waits for its save before answering "not saved yet" (the control
socket's client gives up after 5 s)."""
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
"""An unsaved change is saved again after 1 s, then at doubling intervals up to this."""


class PrivacyState:
    """Thread-safe owner of the privacy state; observers are called with each ``State`` event.

    Observers run on the thread that made the change and must be quick (hand over to a queue).
    """

    def __init__(self, path: Path, *, allow_voice_resume: bool = False,
                 clock: Callable[[], float] = lambda: 0.0, on_problem: OnProblem | None = None,
                 retry_first_seconds: float = RETRY_FIRST_SECONDS,
                 save_wait_seconds: float = SAVE_WAIT_SECONDS) -> None:
        self._path = path
        self.on_problem = on_problem
        """Told when a change could not be saved, and again when it finally was."""
        self._retry_first = retry_first_seconds
        self._save_lock = threading.Lock()  # one save at a time; taken before ``_lock``, never inside it
        self._unsaved: str | None = None  # why the choices in force are not (yet) what state.json holds
        self._retrying = False
        self._save_wait = save_wait_seconds
        self._save_wanted = 0  # generation of the newest change handed to the saver
        self._save_done = 0  # newest generation whose save attempt finished (saved or failed)
        self._saver_running = False
        self._cause = "startup"
        self._allow_voice_resume = allow_voice_resume
        self.clock = clock
        """Stamps events with audio time; the daemon sets it to its own clock once it exists."""
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._saved = threading.Condition(self._lock)
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
            out = {"mode": self.mode.value, "mic_open": self._mic_open, "recording_enabled": self.recording_enabled,
                   "switch_engaged": self._switch_engaged}
            if self._unsaved:
                out["problem"] = f"{self._unsaved} (the {self.mode.value.replace('_', ' ')} mode is in force; " \
                                 "saving it is retried)"
            elif self._save_done < self._save_wanted:
                out["problem"] = f"not saved yet (the {self.mode.value.replace('_', ' ')} mode is in force; " \
                                 "the disk has not finished saving it)"
            return out

    @property
    def unsaved(self) -> str | None:
        """Why the state in force is not saved yet (None once it is)."""
        with self._lock:
            if self._unsaved is None and self._save_done < self._save_wanted:
                return "not saved yet: the disk has not finished writing it"
            return self._unsaved

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer`` with every future State event."""
        with self._lock:
            self._observers.append(observer)

    def current_event(self, cause: str) -> State:
        """A State event describing now, e.g. to announce the state at start-up."""
        return State(t=self.clock(), mode=self.mode.value, mic_open=self._mic_open, cause=cause)

    # -- changing --------------------------------------------------------------------------------
    def request(self, action: str, cause: str, deadline: float | None = None) -> Outcome:
        """Ask for ``action`` (mute, unmute, recording_off, recording_on) on behalf of ``cause``.

        ``deadline`` (``time.monotonic()``) is when the asker stops waiting: a change away from privacy
        that is only saved after it is not applied, so nobody is told "failed" about a change that
        then happens anyway.
        """
        with self._lock:
            base = self._choices
            new = self._decide(action, cause)
            if isinstance(new, Outcome):
                return new
            if new == base and not self.unsaved:
                return Outcome(True, f"already {base.mode.value.replace('_', ' ')}")
            safer = _safer(base, new)
            if safer:
                if new != base:  # (equal: asked again while unsaved, so try saving again now)
                    self._set(new, cause)  # in force now, whatever the disk does
                generation = self._save_in_background()
                finished = self._saved.wait_for(lambda: self._save_done >= generation, self._save_wait)
                problem = self._unsaved
        if not safer:  # saved first, without holding the lock that a mute meanwhile needs
            return self._save_then_apply(action, cause, base, new, deadline)
        now = f"now {new.mode.value.replace('_', ' ')}"
        if not finished:
            return Outcome(True, f"{now} (but not saved yet: the disk has not finished writing it; saving goes "
                                 "on in the background)")
        if problem is None:
            return Outcome(True, now)
        return Outcome(True, f"{now} (but not saved: {problem}; retrying in the background)")

    def set_switch(self, engaged: bool) -> None:
        """The hardware mute switch moved. Engaging it mutes; releasing it leaves the mute for the owner."""
        with self._lock:
            self._switch_engaged = engaged
            if not engaged or self._choices.muted:
                return
            self._set(Choices(True, self._choices.recording), "switch")
            generation = self._save_in_background()
            self._saved.wait_for(lambda: self._save_done >= generation, self._save_wait)  # as for a request

    def _decide(self, action: str, cause: str) -> Choices | Outcome:
        """The choices ``action`` leads to, or why it is refused (holding ``_lock``)."""
        c = self._choices
        if action == "mute":
            return Choices(True, c.recording)
        if action == "unmute":
            if cause == "voice":
                return Outcome(False, "voice can never unmute; use the button or 'voxkeep unmute'")
            if self._switch_engaged:
                return Outcome(False, "the hardware mute switch is engaged; release it to unmute")
            return Choices(False, c.recording)
        if action == "recording_off":
            return Choices(c.muted, False)
        if action == "recording_on":
            if cause == "voice" and not self._allow_voice_resume:
                return Outcome(False, "resuming recording by voice is turned off (commands.allow_voice_resume); "
                                      "use a long button press or 'voxkeep recording on'")
            return Choices(c.muted, True)
        return Outcome(False, f"unknown action '{action}'; use one of {', '.join(ACTIONS)}")

    def _save_then_apply(self, action: str, cause: str, base: Choices, new: Choices,
                         deadline: float | None) -> Outcome:
        """Unmute or recording on: in force only once saved, and only if nothing safer came meanwhile."""
        verb = action.replace("_", " ")
        with self._save_lock:
            try:
                write_choices(self._path, new, cause)
            except StateError as exc:
                log.error("refused %s (%s): %s", verb, cause, exc)
                self._save_locked()  # the rename may have landed before the failure: put back what is in force
                return Outcome(False, f"cannot {verb}: {exc}. Nothing changed: the speaker stays "
                                      f"{self.mode.value.replace('_', ' ')}")
            with self._lock:
                if self._choices == base and self._decide(action, cause) == new:
                    if deadline is None or time.monotonic() <= deadline:
                        self._set(new, cause)
                        self._unsaved = None
                        return Outcome(True, f"now {new.mode.value.replace('_', ' ')}")
                    why = "it took too long to save, and the request had already timed out"
                else:
                    why = "the state changed while it was being saved"
            # The file holds a change that is not in force: put back the one that is.
            self._save_locked()
        log.warning("did not %s (%s): %s", verb, cause, why)
        return Outcome(False, f"did not {verb}: {why}; try again")

    def _set(self, new: Choices, cause: str) -> None:
        """Put ``new`` in force and tell everyone (holding ``_lock``)."""
        old_mode = self._choices.mode
        self._choices = new
        self._cause = cause
        self.load_problem = None
        log.info("privacy mode %s -> %s (%s)", old_mode.value, new.mode.value, cause)
        self._changed.notify_all()
        self._notify(cause)

    def _save_in_background(self) -> int:
        """Have the saver write the choices in force (holding ``_lock``); return the generation to wait for."""
        self._save_wanted += 1
        if not self._saver_running:
            self._saver_running = True
            threading.Thread(target=self._saver, name="privacy-saver", daemon=True).start()
        return self._save_wanted

    def _saver(self) -> None:
        """Save until every change handed over is saved or has failed (failures go on to ``_retry``)."""
        while True:
            with self._lock:
                if self._save_done >= self._save_wanted:
                    self._saver_running = False
                    return
                generation = self._save_wanted
            self._save()  # writes the choices in force now, which include every change up to ``generation``
            with self._lock:
                self._save_done = generation
                self._saved.notify_all()

    def _save(self) -> bool:
        """Save the choices in force; on failure report it and keep retrying in the background."""
        with self._save_lock:
            return self._save_locked()

    def _save_locked(self) -> bool:
        with self._lock:
            current, cause = self._choices, self._cause
        try:
            write_choices(self._path, current, cause)
        except StateError as exc:
            with self._lock:
                first, self._unsaved = self._unsaved is None, str(exc)
            if first:
                message = (f"the speaker is {current.mode.value.replace('_', ' ')}, but {exc}; it will come back "
                           "in its previous mode after a restart until this is saved (retrying)")
                log.error("%s", message)
                self._problem("error", message)
            self._start_retry()
            return False
        with self._lock:
            was, self._unsaved = self._unsaved, None
        if was:
            log.info("privacy state saved after all (%s)", current.mode.value)
            self._problem("info", f"the {current.mode.value.replace('_', ' ')} mode is saved now")
        return True

    def _start_retry(self) -> None:
        with self._lock:
            if self._retrying:
                return
            self._retrying = True
        threading.Thread(target=self._retry, name="privacy-save", daemon=True).start()

    def _retry(self) -> None:
        delay = self._retry_first
        pause = threading.Event()
        while True:
            pause.wait(delay)
            self._save()
            with self._lock:
                if self._unsaved is None:
                    self._retrying = False
                    return
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    def _problem(self, level: str, message: str) -> None:
        if self.on_problem is not None:
            try:
                self.on_problem(level, message)
            except Exception:
                log.exception("could not report a privacy-state problem")

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

    def _notify(self, cause: str) -> None:
        event = self.current_event(cause)
        for observer in list(self._observers):
            observer(event)


def _safer(old: Choices, new: Choices) -> bool:
    """True if ``new`` only mutes or stops recording compared with ``old`` (never opens anything)."""
    return new.muted >= old.muted and new.recording <= old.recording
