"""The event stream: one frozen dataclass per event type, the only definition of each wire form.

Events are written as JSON Lines (``--events``), published on MQTT and asserted by tests, all through
``to_dict`` here. ``t`` is always seconds of audio since the input started, so a replay of
the same audio gives the same stream. Fields are only ever added, never renamed: consumers rely on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import stat
from dataclasses import dataclass
from typing import Any, ClassVar, TextIO

from .errors import VoxkeepError

EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True)
class Event:
    """Base of every event; subclasses set ``TYPE`` and register themselves."""

    TYPE: ClassVar[str] = ""
    t: float

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        EVENT_TYPES[cls.TYPE] = cls

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``type`` first, then the fields, with ``t`` rounded to milliseconds."""
        body = dataclasses.asdict(self)
        body["t"] = round(self.t, 3)
        return {"type": self.TYPE, **body}

    def to_json(self) -> str:
        """One JSON Lines record."""
        return json.dumps(self.to_dict(), separators=(", ", ": "))


@dataclass(frozen=True)
class Wake(Event):
    """A wake word was heard (and, with verification on, confirmed)."""

    TYPE: ClassVar[str] = "wake"
    wake_word: str
    score: float


@dataclass(frozen=True)
class WakeRejected(Event):
    """The wake model fired but the second look said no: nothing is opened, stored or forwarded."""

    TYPE: ClassVar[str] = "wake_rejected"
    wake_word: str
    score: float
    reason: str


@dataclass(frozen=True)
class Command(Event):
    """A privacy command was recognised in the command window after a wake word."""

    TYPE: ClassVar[str] = "command"
    command: str


@dataclass(frozen=True)
class State(Event):
    """The privacy mode or the real microphone state changed; ``cause`` says who or what changed it."""

    TYPE: ClassVar[str] = "state"
    mode: str
    mic_open: bool
    cause: str


@dataclass(frozen=True)
class Recorded(Event):
    """An utterance was stored, encrypted, in the vault."""

    TYPE: ClassVar[str] = "recorded"
    recording_id: str
    duration: float
    wake_word: str


@dataclass(frozen=True)
class Deleted(Event):
    """Recordings were deleted (by voice, CLI, retention); ids are not repeated here on purpose."""

    TYPE: ClassVar[str] = "deleted"
    count: int
    cause: str


@dataclass(frozen=True)
class Confirm(Event):
    """A deleting command was heard and nothing is deleted yet: the speaker asks back ("confirm?" tone) and
    listens ``seconds`` for "yes", without a wake word."""

    TYPE: ClassVar[str] = "confirm"
    command: str
    seconds: float


@dataclass(frozen=True)
class NotDeleted(Event):
    """A deletion that was asked back was not confirmed; nothing was deleted. ``reason``: "no", "no clear
    yes" (silence, or anything else), "muted", "wake word" (a new request came instead) or "stopped"."""

    TYPE: ClassVar[str] = "not_deleted"
    command: str
    reason: str


@dataclass(frozen=True)
class Forwarded(Event):
    """An utterance left the device to a consented sink."""

    TYPE: ClassVar[str] = "forwarded"
    sink: str
    recording_id: str
    size: int


@dataclass(frozen=True)
class Transcript(Event):
    """Text returned by a consented speech-to-text sink (never published on MQTT)."""

    TYPE: ClassVar[str] = "transcript"
    sink: str
    text: str


@dataclass(frozen=True)
class Notice(Event):
    """Something the owner should know that is not an error of theirs (disk full, sink down, ...)."""

    TYPE: ClassVar[str] = "notice"
    level: str
    message: str


@dataclass(frozen=True)
class Handled(Event):
    """The utterance after a wake word has been dealt with; the LED stops blinking.

    ``outcome`` is "command", "recorded" or "not_recorded"; ``reason`` says why nothing was stored.
    """

    TYPE: ClassVar[str] = "handled"
    wake_word: str
    outcome: str
    reason: str


@dataclass(frozen=True)
class Arbitration(Event):
    """Which speaker of the home answers this wake (voxkeep.arbitration); the loser keeps nothing of it.

    ``margin``: by how many dB the winner's strength beat the runner-up (as the winner) or this speaker
    (as a loser); None when no other speaker claimed it. ``claims``: how many speakers' claims were compared
    (1 = this one alone). ``reason`` says why it answered alone ("broker unreachable"), else "".
    """

    TYPE: ClassVar[str] = "arbitration"
    wake_word: str
    outcome: str
    winner: str
    margin: float | None
    claims: int
    reason: str


def _open_private(target: str) -> TextIO:
    """Open ``target`` for writing as 0600: events can hold transcripts. An existing regular file is
    tightened too; a device or FIFO (``/dev/null``, a pipe) is left as it is."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
        return open(fd, "w", encoding="utf-8")  # closed by JsonlWriter.close
    except BaseException:
        os.close(fd)
        raise


class JsonlWriter:
    """Writes events as JSON Lines to stdout or a file, flushing each line so a reader sees it at once."""

    def __init__(self, target: str) -> None:
        import sys

        self._own = target != "-"
        self._target = target
        self._failed = False
        try:
            self._fh = _open_private(target) if self._own else sys.stdout
        except OSError as exc:
            raise VoxkeepError(f"cannot write events to {target} ({exc.strerror}); choose another --events path") \
                from None

    def __call__(self, event: Event) -> None:
        if self._failed:
            return
        try:
            self._fh.write(event.to_json() + "\n")
            self._fh.flush()
        except OSError as exc:  # a full disk (or /dev/full): say so once, keep listening
            self._failed = True
            logging.getLogger(__name__).error("cannot write events to %s (%s); no more events go there. Free "
                                              "space or choose another --events path", self._target, exc.strerror)

    def close(self) -> None:
        if self._own:
            with contextlib.suppress(OSError):  # already reported by __call__ (its last flush failed)
                self._fh.close()
