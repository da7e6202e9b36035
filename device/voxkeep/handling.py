"""Handling an utterance, beside the audio loop: recognise a privacy command, obey it, keep or drop audio.

One worker thread takes finished utterances from a small bounded queue, in order, so a command in one
utterance is in force before the next utterance is judged. Audio is stored only if the mode allowed it
both when the wake word was heard and now, the utterance was not itself a privacy command, an owner
key exists and retention keeps anything at all.

A deletion by voice is asked back first (``commands.confirm_deletes``): the worker plays "confirm?",
asks the audio loop for an answer window (``take_answer_request``, polled by the loop, one at a time)
and deletes only if that window's ``Answer`` is a clear "yes". An Answer is not an Utterance: it is
never stored, forwarded or handed to ``on_request``.

A capture still waiting for a request may hand over its early window (``peek``; voxkeep.capture.WAKE_TAIL_SECONDS):
it is only judged, and the verdict goes back to the loop (``take_peek_verdict``). The command found in it stands
for the utterance of that wake, so it is decoded once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import SAMPLE_RATE
from .capture import Utterance
from .config import Settings
from .errors import VoxkeepError
from .events import Command, Confirm, Deleted, Event, Handled, NotDeleted, Notice, Recorded
from .forward import revoke_consent
from .privacy import Mode, PrivacyState

log = logging.getLogger(__name__)

QUEUE_SIZE = 4
"""Utterances waiting to be handled; more than this while live means the device is overloaded."""

VOICE_ACTIONS = {"stop_recording": "recording_off", "start_recording": "recording_on"}

ASKED_BACK = frozenset({"delete_last", "delete_today"})
"""Commands that are asked back before they are carried out: they cannot be undone."""


@dataclass(frozen=True)
class _Peek:
    """An early window to judge and report on, never to obey, store or forward by itself."""

    utterance: Utterance


@dataclass(frozen=True)
class Answer:
    """What the answer window after "confirm?" heard, or why there was none (``cancelled``: "muted",
    "wake word", "stopped"; then ``pcm`` is None). Judged for "yes"/"no" and dropped, never kept."""

    t_end: float
    pcm: np.ndarray | None = None
    cancelled: str = ""


class Recognizer(Protocol):
    """What the worker needs of a command recogniser (voxkeep.commands)."""

    def recognize(self, pcm: Any) -> Any: ...


class VaultLike(Protocol):
    """What the worker needs of the vault (voxkeep.vault)."""

    def why_not_recording(self) -> str | None: ...
    def store(self, pcm: Any, *, started_at: float, wake_word: str, score: float, command: str | None) -> str: ...
    def delete_last(self, cause: str) -> int: ...
    def delete_today(self, cause: str) -> int: ...
    def active_consents(self) -> list[str]: ...
    def consent(self, sink: str, action: str, by: str) -> None: ...


class UtteranceWorker:
    """The thread that turns utterances into commands, recordings and events."""

    def __init__(self, settings: Settings, privacy: PrivacyState, publish: Callable[[Event], None], *,
                 recognizer: Recognizer | None, vault: VaultLike | None,
                 on_command: Callable[[str], None] | None = None,
                 on_recorded: Callable[[Utterance, str], None] | None = None,
                 on_request: Callable[[Utterance], Callable[[str | None], None] | None] | None = None,
                 answers: Callable[[], Recognizer] | None = None, on_ask: Callable[[], None] | None = None) -> None:
        """``on_request`` gets each utterance judged not to be a privacy command, before it is stored (the
        Home Assistant satellite streams it); what it returns is told the recording id, or None if none.
        ``answers`` builds what hears "yes"/"no" in an answer window (voxkeep.commands.AnswerRecognizer), on the
        first deletion asked back: most speakers never delete by voice, and it holds 9 MB. Without it no answer is
        ever heard, so with ``commands.confirm_deletes`` nothing is deleted by voice (a deletion asked back is heard
        at the common bar, ``commands.min_score_for``). ``on_ask`` plays the "confirm?" tone."""
        self._settings = settings
        self._privacy = privacy
        self._publish = publish
        self._recognizer = recognizer
        self._vault = vault
        self._on_command = on_command
        self._on_recorded = on_recorded
        self._on_request = on_request
        self._make_answers = answers
        self._answers: Recognizer | None = None
        self._on_ask = on_ask
        self._queue: queue.Queue[Utterance | Answer | _Peek | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._peeked: tuple[float, str | None] | None = None
        """(wake time, command or None) of the last early window judged; only the worker thread touches it."""
        self._verdict: tuple[float, bool] | None = None
        """(wake time, whether it held a command) of the last early window judged, until the loop takes it: no
        audio, so nothing of a window outlives its capture here."""
        self._pending: tuple[str, str] | None = None
        """(command, wake word) waiting for its answer; only the worker thread touches it."""
        self._loop_lock = threading.Lock()
        """Guards what the worker hands the audio loop: ``_asked`` and ``_verdict``."""
        self._asked: float | None = None
        """Seconds of answer window the loop should open, until it takes the request."""
        self._thread = threading.Thread(target=self._run, name="utterances", daemon=True)
        self.dropped = 0
        self.stats = {"commands": 0, "recorded": 0}

    def start(self) -> None:
        self._thread.start()

    def take_answer_request(self) -> float | None:
        """For the audio loop, each frame: how long an answer window to open now, or None. Never blocks long."""
        if self._asked is None:  # the common case, without the lock
            return None
        with self._loop_lock:
            seconds, self._asked = self._asked, None
        return seconds

    def peek(self, early: Utterance, *, wait: bool) -> None:
        """For the audio loop: judge ``early`` (a capture's early window) beside it; the verdict comes back through
        ``take_peek_verdict``. Live, it is not queued behind other work: the whole utterance is judged anyway, and
        a queue slot taken by it could drop a request."""
        if wait or self._queue.empty():
            self._put(_Peek(early), wait=wait)

    def take_peek_verdict(self) -> tuple[float, bool] | None:
        """For the audio loop, each frame: (wake time, whether the early window held a command) once judged."""
        if self._verdict is None:  # the common case, without the lock
            return None
        with self._loop_lock:
            verdict, self._verdict = self._verdict, None
        return verdict

    def cancel_answer(self, reason: str, t: float, *, wait: bool) -> None:
        """For the audio loop: a mute or a new wake word ends any answer window asked for or open."""
        self.take_answer_request()
        self.submit(Answer(t_end=t, cancelled=reason), wait=wait)

    def submit(self, utterance: Utterance | Answer, *, wait: bool) -> bool:
        """Queue an utterance; with ``wait`` (file input) block until it has been handled."""
        if self._put(utterance, wait=wait):
            return True
        self.dropped += 1
        self._publish(Notice(t=utterance.t_end, level="warning",
                             message="busy: an utterance was dropped unhandled (nothing stored)"))
        return False

    def _put(self, item: Utterance | Answer | _Peek, *, wait: bool) -> bool:
        """Queue ``item``; with ``wait`` block until it has been handled; False if the queue was full."""
        if wait:
            self._queue.put(item)
            self._queue.join()
            return True
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if isinstance(item, Answer):
                    self._settle(item)
                elif isinstance(item, _Peek):
                    self._judge_early(item.utterance)
                else:
                    self._handle(item)
            except Exception:
                log.exception("failed to handle an utterance")
            finally:
                self._queue.task_done()

    def _handle(self, u: Utterance) -> None:
        if u.arbitration is not None and not u.arbitration.wait_won():
            return  # another speaker answered this wake: nothing obeyed, stored or sent (the arbiter said so)
        self._settle(Answer(t_end=u.t_wake, cancelled="wake word"))  # a new request: the old question lapses
        command = self._recognise(u)
        t_cmd = u.t_wake + (len(u.pcm) - u.command_start) / SAMPLE_RATE
        if command is not None:
            self.stats["commands"] += 1
            self._publish(Command(t=min(t_cmd, u.t_end), command=command))
            if u.arbitration is not None:
                u.arbitration.tell(command)  # "don't record anymore" was said to the whole house
            if command in ASKED_BACK and self._settings.commands.confirm_deletes:
                self._ask(command, u)  # handled once answered: the LED keeps blinking while it listens
                return
            self._carry_out(command, u.t_end)
            self._publish(Handled(t=u.t_end, wake_word=u.wake_word, outcome="command", reason=""))
            return
        told = self._on_request(u) if self._on_request is not None else None
        rec_id = None
        try:
            rec_id = self._keep(u)
        finally:
            if told is not None:
                told(rec_id)

    def _ask(self, command: str, u: Utterance) -> None:
        """Ask back before deleting: "confirm?" tone, an event, and an answer window from the loop."""
        seconds = self._settings.commands.confirm_seconds
        self._pending = (command, u.wake_word)
        if self._on_ask is not None:
            self._on_ask()
        self._publish(Confirm(t=u.t_end, command=command, seconds=seconds))
        with self._loop_lock:
            self._asked = seconds
        if self._answers is None and self._make_answers is not None:
            try:  # while the answer window is open: it is judged once it ends
                self._answers = self._make_answers()
            except VoxkeepError as exc:
                log.error("cannot hear the answer, so nothing will be deleted: %s", exc)

    def _settle(self, answer: Answer) -> None:
        """Carry out the deletion waiting for ``answer`` if it is a clear "yes"; else say it was not deleted."""
        if self._pending is None:
            return  # nothing asked (a late cancel, or an ordinary request)
        (command, wake_word), self._pending = self._pending, None
        with self._loop_lock:
            self._asked = None  # not taken yet (stopped, muted): no window opens for a lapsed question
        reason = answer.cancelled
        if not reason:
            assert answer.pcm is not None
            heard = self._answers.recognize(answer.pcm) if self._answers is not None else None
            said = None if heard is None else str(heard.command)
            if said == "yes":
                self._carry_out(command, answer.t_end)
            else:
                reason = "no" if said == "no" else "no clear yes"
        if reason:
            self._publish(NotDeleted(t=answer.t_end, command=command, reason=reason))
        self._publish(Handled(t=answer.t_end, wake_word=wake_word, outcome="command", reason=""))

    def _carry_out(self, command: str, t: float) -> None:
        self._obey(command, t)
        if self._on_command is not None:
            self._on_command(command)

    def _keep(self, u: Utterance) -> str | None:
        """Store ``u`` if everything allows it; publish what happened; the recording id or None."""
        reason = self._why_not_store(u)
        if reason is None:
            assert self._vault is not None
            try:
                rec_id = self._vault.store(u.pcm, started_at=u.wall_time, wake_word=u.wake_word, score=u.score,
                                           command=None)
            except VoxkeepError as exc:
                log.error("recording not stored: %s", exc)
                self._publish(Notice(t=u.t_end, level="error", message=f"recording not stored: {exc}"))
                reason = "storage failed"
            else:
                self.stats["recorded"] += 1
                duration = len(u.pcm) / SAMPLE_RATE
                self._publish(Recorded(t=u.t_end, recording_id=rec_id, duration=round(duration, 2),
                                       wake_word=u.wake_word))
                if self._on_recorded is not None:
                    self._on_recorded(u, rec_id)
                self._publish(Handled(t=u.t_end, wake_word=u.wake_word, outcome="recorded", reason=""))
                return rec_id
        self._publish(Handled(t=u.t_end, wake_word=u.wake_word, outcome="not_recorded", reason=reason))
        return None

    def _judge_early(self, early: Utterance) -> None:
        if self._privacy.muted:
            return  # muted since: its capture was dropped, and nothing of it is judged
        command = self._recognise(early)
        self._peeked = (early.t_wake, command)
        with self._loop_lock:
            self._verdict = (early.t_wake, command is not None)

    def _recognise(self, u: Utterance) -> str | None:
        if self._recognizer is None:
            return None
        if self._peeked is not None and self._peeked[0] == u.t_wake and self._peeked[1] is not None:
            # Said at once, in the early window. Live, the capture may have ended before the verdict reached the
            # loop: what followed is dropped with the command, as from a file, where the capture ends at the verdict.
            return self._peeked[1]
        result = self._recognizer.recognize(u.command_window(self._settings.commands.max_seconds))
        return None if result is None else str(result.command)

    def _obey(self, command: str, t: float) -> None:
        action = VOICE_ACTIONS.get(command)
        if action is not None:
            outcome = self._privacy.request(action, "voice")
            if not outcome.ok:
                self._publish(Notice(t=t, level="info", message=outcome.message))
            return
        if self._vault is None:
            self._publish(Notice(t=t, level="info", message=f"{command}: there is no vault, nothing to delete"))
            return
        if command == "stop_sharing":  # voice may revoke forwarding consent, never grant it
            revoked = revoke_consent(self._vault, None, "voice")
            self._publish(Notice(t=t, level="info", message=f"stopped sharing with {', '.join(revoked)}"
                                 if revoked else "nothing was being shared"))
            return
        count = self._vault.delete_last("voice") if command == "delete_last" else self._vault.delete_today("voice")
        self._publish(Deleted(t=t, count=count, cause=f"voice:{command}"))

    def _why_not_store(self, u: Utterance) -> str | None:
        if not u.store_allowed or self._privacy.mode is not Mode.LISTENING:
            return "not recording"
        if self._settings.vault.retention_days == 0:
            return "retention_days is 0"
        if self._vault is None:
            return "no vault"
        return self._vault.why_not_recording()
