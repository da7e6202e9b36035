"""Several speakers, one answer: on a wake, the speaker that heard it best answers and the others keep nothing.

On a confirmed wake the daemon's loop calls ``Arbiter.claim`` (it never waits: the claim is handed to the
arbiter's own thread). That thread publishes the claim on ``voxkeep/arbitration/<wake_word>`` and
collects the other speakers' claims, which the MQTT thread hands in through ``receive``. ``window_ms``
after its own claim the strongest claim wins, ties going to the smaller device id. A speaker learns it
lost as soon as a stronger claim arrives; it can only know it won when the window has closed.

The strength is the wake phrase's speech-band level with the room's noise floor (the endpointer's)
taken out in power, in dB: how loud the voice itself reached this microphone. A plain signal-to-noise
ratio would hand the request to the far speaker whenever the near one stands by a dishwasher, the very
failure Home Assistant's users complain about; the noise-free level does not. Speakers should have
alike microphones (gain differences shift the strength one-for-one).

Clocks: a claim carries the wall-clock time of its wake. Claims whose wake lies more than
``SKEW_SECONDS`` + window from ours are another wake (or a replay) and are ignored, as are claims more
than that far from our clock when they arrive; so clocks may be off by up to 0.5 s (NTP keeps a home's
devices within milliseconds). A claim that arrives after our window has closed is too late to count.

"Don't record anymore" and "stop sharing" are said to the house: the winner publishes the command on
``voxkeep/arbitration/<wake_word>/command`` naming its claim, and every speaker that lost that very
claim applies it and audits it. Only those two, which can only ever keep and share less, are accepted.

Failing open, never deaf: with the broker unreachable, or nobody else claiming, a speaker answers
alone. Losing changes no privacy state: a muted speaker never claims, and nothing here unmutes.

Every payload is hostile: at most ``MAX_PAYLOAD_BYTES``, a JSON object whose fields are checked and
whose numbers are finite and in range; retained messages are ignored (a retained claim would be replayed
at every connect).
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .capture import speech_dbfs
from .commands import FAIL_SAFE
from .config import ArbitrationSettings
from .events import Arbitration, Event, Handled

log = logging.getLogger(__name__)

TOPIC_PREFIX = "voxkeep/arbitration"
SKEW_SECONDS = 0.5
"""Largest difference between two speakers' clocks under which their claims still meet."""
MAX_PAYLOAD_BYTES = 512
"""Longest accepted arbitration payload; a real claim is about 130 bytes."""
COMMAND_MEMORY_SECONDS = 60.0
"""How long a lost claim can still receive the winner's command (an utterance, then its recognition)."""
_DEVICE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CLAIM_ID = re.compile(r"[0-9a-f]{8,32}")
_WORD = re.compile(r"[A-Za-z0-9_]{1,64}")


class BadPayload(ValueError):
    """An arbitration message that is not one; the text names what is wrong."""


@dataclass(frozen=True)
class Claim:
    """One speaker's bid to answer one wake."""

    device: str
    wake_word: str
    at: float
    """Unix time of the wake on that speaker's clock."""
    strength: float
    """Speech level of the wake phrase with the room's noise taken out, dB full scale."""
    score: float
    claim_id: str

    def to_json(self) -> str:
        return json.dumps({"device": self.device, "at": round(self.at, 3), "strength": round(self.strength, 2),
                           "score": round(self.score, 4), "id": self.claim_id})


def _load(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadPayload(f"{len(payload)} bytes (the limit is {MAX_PAYLOAD_BYTES})")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadPayload("not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("not a JSON object")
    return data


def _text(data: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadPayload(f"{key!r} missing or malformed")
    return value


def _number(data: dict[str, Any], key: str, low: float, high: float) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise BadPayload(f"{key!r} must be a finite number from {low:g} to {high:g}")
    return float(value)


def parse_claim(wake_word: str, payload: bytes) -> Claim:
    """The claim in ``payload`` (from the topic of ``wake_word``), or BadPayload."""
    data = _load(payload)
    return Claim(device=_text(data, "device", _DEVICE), wake_word=wake_word, at=_number(data, "at", 0.0, 1e11),
                 strength=_number(data, "strength", -200.0, 50.0), score=_number(data, "score", 0.0, 1.0),
                 claim_id=_text(data, "id", _CLAIM_ID))


def parse_house_command(payload: bytes) -> tuple[str, str, str]:
    """``(winner device, its claim id, command)`` from a command payload, or BadPayload."""
    data = _load(payload)
    command = data.get("command")
    if command not in FAIL_SAFE:
        raise BadPayload(f"'command' must be one of {', '.join(sorted(FAIL_SAFE))}")
    return _text(data, "device", _DEVICE), _text(data, "id", _CLAIM_ID), str(command)


def strength_of(phrase: Sequence[np.ndarray], floor_dbfs: float) -> float:
    """How loud the voice reached this microphone: the wake phrase's loudest half of frames, speech band,
    with the noise floor's power taken out (at most 20 dB below the raw level, where speech is lost in noise)."""
    if not phrase:
        return -200.0
    levels = sorted((speech_dbfs(f) for f in phrase), reverse=True)
    top = levels[:max(1, len(levels) // 2)]
    power = float(np.mean([10.0 ** (v / 10.0) for v in top]))
    speech = max(power - 10.0 ** (floor_dbfs / 10.0), power / 100.0)
    return round(10.0 * math.log10(speech), 2) if speech > 0 else -200.0


def decide(claims: Sequence[Claim]) -> tuple[Claim, float | None]:
    """The winning claim (strongest; equal strengths: the smaller device id) and its lead over the next."""
    ranked = sorted(claims, key=lambda c: (-c.strength, c.device))
    lead = ranked[0].strength - ranked[1].strength if len(ranked) > 1 else None
    return ranked[0], lead


@dataclass(eq=False)
class Round:
    """One wake being arbitrated; ``lost`` is read by the loop on every frame (a plain attribute read)."""

    own: Claim
    deadline: float
    """``time.monotonic()`` at which the window closes."""
    others: dict[str, Claim] = field(default_factory=dict)
    outcome: str | None = None
    """None while pending, then "won" or "lost"."""
    winner: Claim | None = None
    applied: bool = False
    """A house command from the winner has been applied (once only)."""
    decided_at: float = 0.0
    _done: threading.Event = field(default_factory=threading.Event)
    _arbiter: Arbiter | None = None

    @property
    def lost(self) -> bool:
        return self.outcome == "lost"

    def wait_won(self) -> bool:
        """Block (the utterance worker, never the loop) until decided; True unless another speaker won."""
        self._done.wait(max(0.0, self.deadline - time.monotonic()) + 1.0)
        return self.outcome != "lost"

    def tell(self, command: str) -> None:
        """The winner heard ``command``: pass it on to the speakers that lost this wake, if it is for the house."""
        if self._arbiter is not None and self.outcome == "won" and self.others and command in FAIL_SAFE:
            self._arbiter.send_command(self, command)


class Arbiter:
    """Claims, collects and decides, on its own thread; the loop and the MQTT thread only hand things in."""

    def __init__(self, settings: ArbitrationSettings, device_id: str, *, send: Callable[[str, str], bool],
                 connected: Callable[[], bool], publish: Callable[[Event], None], clock: Callable[[], float],
                 on_house_command: Callable[[str, str], None], wall_clock: Callable[[], float] = time.time) -> None:
        """``send(topic, payload)`` publishes (False if it could not); ``clock`` is the audio clock for events;
        ``on_house_command(command, winner)`` applies a command a winner passed on."""
        self.device_id = device_id
        self.window = settings.window_ms / 1000.0
        self._send = send
        self._connected = connected
        self._publish = publish
        self._clock = clock
        self._on_house_command = on_house_command
        self._wall = wall_clock
        self._inbox: deque[tuple[str, Any]] = deque(maxlen=256)
        self._wakeup = threading.Condition()
        self._recent: deque[Claim] = deque(maxlen=64)
        """Other speakers' claims from the last seconds: theirs may arrive before our own wake."""
        self._open: list[Round] = []
        self._lost: deque[Round] = deque(maxlen=32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voxkeep-arbitration", daemon=True)
        self.ignored = 0
        """Messages ignored as malformed, retained, stale or our own echo (for tests and the log)."""

    # --- handed in by other threads (never block) ----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wakeup:
            self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def claim(self, wake_word: str, strength: float, score: float) -> Round:
        """On the loop, at a confirmed wake: start a round and return it at once."""
        own = Claim(self.device_id, wake_word, self._wall(), strength, score, secrets.token_hex(8))
        now = time.monotonic()
        if not self._connected():
            round_ = Round(own, now)
            self._finish(round_, "broker unreachable")
            return round_
        round_ = Round(own, now + self.window, _arbiter=self)
        self._hand_in("claim", round_)
        return round_

    def receive(self, topic: str, payload: bytes, retained: bool) -> None:
        """On the MQTT thread: a message on ``voxkeep/arbitration/#``."""
        if retained:
            self.ignored += 1  # replayed at every connect: never a live wake
            return
        self._hand_in("message", (topic, payload, time.monotonic()))

    def send_command(self, round_: Round, command: str) -> None:
        self._hand_in("command", (round_, command))

    def _hand_in(self, kind: str, item: Any) -> None:
        self._inbox.append((kind, item))
        with self._wakeup:
            self._wakeup.notify()

    # --- the arbiter's thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._wakeup:
                if not self._inbox:
                    due = min((r.deadline for r in self._open), default=None)
                    self._wakeup.wait(None if due is None else max(0.0, due - time.monotonic()))
            try:
                while self._inbox:
                    kind, item = self._inbox.popleft()
                    if kind == "claim":
                        self._start(item)
                    elif kind == "message":
                        self._message(*item)
                    else:
                        self._pass_on(*item)
                now = time.monotonic()
                for round_ in [r for r in self._open if r.deadline <= now]:
                    self._finish(round_, "")
            except Exception:
                log.exception("arbitration failed; open rounds answer alone")
                for round_ in list(self._open):
                    self._finish(round_, "arbitration failed")

    def _start(self, round_: Round) -> None:
        topic = f"{TOPIC_PREFIX}/{round_.own.wake_word}"
        if not self._send(topic, round_.own.to_json()):
            self._finish(round_, "broker unreachable")
            return
        self._open.append(round_)
        for claim in self._recent:
            self._consider(round_, claim)

    def _message(self, topic: str, payload: bytes, arrived: float) -> None:
        parts = topic.split("/")
        if len(parts) not in (3, 4) or "/".join(parts[:2]) != TOPIC_PREFIX or not _WORD.fullmatch(parts[2]) \
                or (len(parts) == 4 and parts[3] != "command"):
            self.ignored += 1
            return
        try:
            if len(parts) == 4:
                self._house_command(*parse_house_command(payload))
                return
            claim = parse_claim(parts[2], payload)
        except BadPayload as exc:
            self.ignored += 1
            log.debug("ignored an arbitration message on %s: %s", topic, exc)
            return
        if claim.device == self.device_id or abs(claim.at - self._wall()) > SKEW_SECONDS + self.window:
            self.ignored += 1  # our own echo, a replay, or a clock too far off to compare wakes with
            return
        self._recent.append(claim)
        for round_ in list(self._open):
            self._consider(round_, claim)

    def _consider(self, round_: Round, claim: Claim) -> None:
        if claim.wake_word != round_.own.wake_word \
                or abs(claim.at - round_.own.at) > SKEW_SECONDS + self.window:
            return  # another wake (or already decided)
        best = round_.others.get(claim.device)
        if best is None or claim.strength > best.strength:
            round_.others[claim.device] = claim
        if round_.outcome is None and decide([round_.own, claim])[0] is not round_.own:
            self._lose(round_)  # someone heard it better: no later claim can make us win

    def _lose(self, round_: Round) -> None:
        """Lost before the window closed: stop at once (the loop drops the capture on its next frame, the LED
        stops showing a request); the event naming the winner waits for the window, when every claim is in."""
        round_.outcome = "lost"
        round_.decided_at = time.monotonic()
        round_._done.set()
        self._lost.append(round_)
        self._publish(Handled(t=self._clock(), wake_word=round_.own.wake_word, outcome="not_recorded",
                              reason="another speaker answered"))

    def _finish(self, round_: Round, reason: str) -> None:
        """The window has closed (or there is none): decide, and tell."""
        if round_ in self._open:
            self._open.remove(round_)
        # A claim answers one wake of ours: the next wake (back to back) waits for claims of its own.
        counted = set(map(id, round_.others.values()))
        self._recent = deque((c for c in self._recent if id(c) not in counted), maxlen=self._recent.maxlen)
        winner, lead = decide([round_.own, *round_.others.values()])
        round_.winner = winner
        if round_.outcome is None:
            if winner is not round_.own:  # (only a claim that arrived in the window could do this)
                self._lose(round_)
            else:
                round_.outcome = "won"
                round_.decided_at = time.monotonic()
                round_._done.set()
        won = round_.outcome == "won"
        margin = lead if won else winner.strength - round_.own.strength
        self._publish(Arbitration(t=self._clock(), wake_word=round_.own.wake_word, outcome=str(round_.outcome),
                                  winner=winner.device, margin=None if margin is None else round(margin, 2),
                                  claims=1 + len(round_.others), reason=reason))

    def _pass_on(self, round_: Round, command: str) -> None:
        payload = json.dumps({"device": self.device_id, "id": round_.own.claim_id, "command": command})
        if not self._send(f"{TOPIC_PREFIX}/{round_.own.wake_word}/command", payload):
            log.warning("could not pass '%s' on to the other speakers: the broker is unreachable", command)

    def _house_command(self, device: str, claim_id: str, command: str) -> None:
        now = time.monotonic()
        for round_ in self._lost:
            winner = round_.winner
            if winner is not None and (winner.device, winner.claim_id) == (device, claim_id) \
                    and not round_.applied and now - round_.decided_at <= COMMAND_MEMORY_SECONDS:
                round_.applied = True
                self._on_house_command(command, device)
                return
        self.ignored += 1  # not a wake we lost to that speaker: nobody said it to us
