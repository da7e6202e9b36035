"""Privacy commands given a wake, per condition and per voice family, through the daemon's own window.

    python bench/commands_eval.py [--split report|tune] [--min-score X --delete-min-score Y] [--sweep]
                                  [--delete-filler-words N] [--confirm] [--outside-voices] [--pause S]
                                  [--offset STEPS]

Each request is a wake phrase and a command (or a confusable sentence) in one voice, heard in one room
(bench/corpus.py's voices and rooms: clean, brown or pink noise at 10 and 20 dB SNR, a simulated
reverberant room, far field, other people talking, a gating microphone's digital silence, and two requests
in a row), with ``alexa``, ``hey_jarvis`` or a custom wake word (a model given by path, as a
user's own would be). All requests of a wake word play as one stream through the real ``Daemon``: its
wake detector and second look as shipped (faint wakes included; the figures are "given a wake"), its
endpointer and its command window; the recogniser then scores the exact window the utterance worker would hand it. So a
cause in the loop (a window cut short, a clipped onset, state carried from one request to the next)
shows here as it would on a speaker.

``--confirm`` measures the answer to a deletion asked back instead: every voice of the split says each
"yes" and "no" the answer grammar accepts, and other speech, in each room (and once over the speaker's own
"confirm?" tone), and a silent answer window is tried in each room; AnswerRecognizer judges the window as
the utterance worker would. A deletion happens only on "yes", so "false yes" is the figure that matters.

Voices are split by voice (corpus.VOICES): ``--split report`` (the default) is what README quotes;
thresholds are chosen on ``--split tune``. Confusable sentences are split too: TUNE's list was used to
choose the score bars, REPORT's never.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus
from voxkeep import SAMPLE_RATE
from voxkeep.audio import WavFileSource
from voxkeep.bus import EventBus
from voxkeep.capture import Utterance
from voxkeep.commands import (
    ANSWERS,
    DELETING,
    PHRASES,
    AnswerRecognizer,
    CommandRecognizer,
    Recognition,
    min_score_for,
)
from voxkeep.config import CommandSettings, load_settings
from voxkeep.daemon import Daemon
from voxkeep.privacy import PrivacyState
from voxkeep.testing.speech import write_wav
from voxkeep.wake import WakeDetector, second_look

CONFUSABLE = {
    "tune": (
        "record my favourite show tonight", "I don't want any more coffee", "delete the last email",
        "what did I say today", "stop the music", "start the timer again", "don't forget to record the game",
        "I just said hello", "delete my alarm", "do not disturb", "I don't like it anymore",
        "please stop", "what did I just say", "delete everything on my calendar", "the quick brown fox",
        "tell me a joke", "what time is it", "turn the lights off please", "delete everything I saved today",
        "don't worry anymore", "I can't hear you anymore", "start recording the game",
        "start sharing my recordings", "stop snoring",
        # Added in the fourteenth round, near misses of every command like REPORT's (none of them REPORT's), so
        # that what a change costs in false commands shows on TUNE before REPORT is run.
        "delete what I just typed", "delete what he just said", "delete what they just said",
        "delete everything I wrote today", "delete everything she said today", "delete everything I said last week",
        "delete the video I just made", "delete that playlist", "delete the file I just saved",
        "delete everything I bought today", "delete the note I made today", "delete everything in my inbox",
        "don't ring me anymore", "please don't email me anymore", "don't wait anymore", "I don't cook anymore",
        "don't record the news", "please do not call anymore", "they don't sell records anymore",
        "I don't want to work anymore", "please don't shout anymore", "do not feed the cat anymore",
        "don't remind me anymore", "stop recording the concert", "stop recording the lecture please",
        "stop reporting the news", "stop the record player", "stop rewarding him", "stop reading",
        "stop the podcast", "stop repeating yourself", "please stop snoring", "stop sharpening the knife",
        "stop sharing the pizza", "stop sharing your toys", "stop showering", "stop staring at me",
        "stop scaring the dog", "stop showing the slides", "stop shopping online", "we should stop sharing passwords",
        "start recording the concert", "start recording again later", "start reading the book again",
        "start cooking again", "start recording the lecture", "start sharing my photos", "start the music again",
        "start rewinding again", "start recording my voice", "I said that already today", "everything I said was wrong",
        "what did she just say", "what did I say yesterday", "repeat what I just said", "I just said goodbye",
        "turn on the radio", "set an alarm for seven", "what's the news today", "how old is the moon",
        "play my workout playlist", "stop the oven timer", "pause the podcast", "skip this song",
        "lower the volume please", "open the garage", "good afternoon", "are you recording",
        "record the game for me", "thanks a lot", "see you later"),
    "report": (
        # The issue's own examples first; then near misses of every command, then ordinary requests.
        "delete what I just sent", "please don't call me anymore", "stop recording the football",
        "delete everything I sent today", "delete what you just said", "delete what I just read",
        "delete what she just said", "delete everything he said today", "delete everything I said yesterday",
        "delete the photo I just took", "delete that song", "delete my last message",
        "delete everything in the basket", "delete the reminder I set today", "don't call anymore",
        "please don't text me anymore", "don't worry about it anymore", "I don't record anything",
        "don't remember anymore", "do not ring anymore", "please do not disturb me anymore",
        "they don't make records anymore", "I don't read anymore", "stop recording the match",
        "stop recording the show please", "stop reporting", "stop according to the plan", "stop the recording",
        "stop rewinding", "please stop recording the band", "we should stop recording soon",
        "stop sharing the screen", "stop staring", "stop shaving", "please stop sharing your food",
        "stop sharing the cake", "stop showing my recordings", "keep sharing my recordings",
        "start sharing my recordings", "start recording again tomorrow", "start reading again",
        "start the recording again", "can you start recording", "start recording the game again",
        "I said it again today", "everything I said was true", "what did I just say",
        "what did I say today", "I just said hello", "delete the shopping list", "do not play that song anymore",
        "start again from the beginning", "remind me to stop at the store", "I don't remember anymore",
        "what's the weather today", "set a timer for ten minutes", "add milk to the shopping list",
        "play some jazz please", "how tall is mount everest", "delete what you just wrote",
        "we should start recording the band", "good morning", "read me the news", "stop showing the recordings",
        "I love sharing recipes", "turn on the kitchen lights", "what time is it in tokyo",
        "call my mother", "please record the film tonight", "I recorded it yesterday",
        "what did you just say", "say that again", "tell me what I said", "I never said that",
        "do you record everything", "is it recording", "how long have you been recording",
        "record a note for me", "remind me to call dad", "play the news", "what's on the radio",
        "turn up the volume", "turn it down please", "stop the alarm", "stop the timer",
        "stop playing", "pause the music", "next song please", "I don't want any more calls",
        "don't play that anymore", "don't do that anymore", "not anymore", "no more coffee for me",
        "delete it", "clear the list", "erase the board", "forget about it", "never mind",
        "thank you", "good night", "how are you today"),
}
"""Sentences that must not be taken for a command, split like the voices."""

WAKES = {"alexa": "alexa", "hey_jarvis": "hey jarvis", "custom": "hey marvin"}
"""Wake words: two bundled ones by name, and a model given by path (the custom case: its tails come
only from its file name, as for a user's own word)."""
ISSUE_ROOMS = ("clean", "noise20", "noise10", "reverb")
"""The rooms issue 13 sets its command bar in; the yes/no answers (--confirm) are measured in these."""
CONDITIONS = (*ISSUE_ROOMS, "far", "babble", "silence", "back-to-back")
"""ISSUE_ROOMS, then the rest of bench/corpus.py's (far field at -20 dB, three other people talking
at 5 or 10 dB SNR, a gating microphone's exact digital silence) and two requests in a row (``BACK_TO_BACK``).
The later four draw from their own random stream and play after the first four in each wake word's stream, so
the first four's audio and figures are as before they were added."""
BACK_TO_BACK = "back-to-back"
BACK_TO_BACK_GAP = (0.5, 1.5)
"""Seconds between the end of one request and the next wake phrase, said by the same voice, in a quiet room (half
the pairs) or in brown or pink noise at 10 dB SNR: "alexa, stop recording. alexa, delete what I just said"."""
COMMAND_STRIDE = 3
"""Each voice says every third phrase of PHRASES (rotating by voice), so every phrase is said in every
condition by several voices of each family."""


@dataclass(frozen=True)
class Request:
    """One clip in a stream: who said what, where it starts, and the command it should give (None: none)."""

    family: str
    voice: str
    text: str
    expect: str | None
    condition: str
    detail: str
    wake: str
    start: float
    end: float
    pair: int = 0
    """0 alone; 1 or 2: the first or second of two requests in a row (BACK_TO_BACK)."""


def _noisy(clip: np.ndarray, snr_db: float, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``clip`` (room tone, lead, speech) with brown or pink noise at ``snr_db`` against its speech."""
    colour = ("brown", "pink")[int(rng.integers(2))]
    x = corpus._with_background(clip.astype(np.float32), corpus.coloured_noise(colour, len(clip), rng), snr_db)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16), f"{colour}{snr_db:g}"


@functools.cache
def _backgrounds(split: str) -> corpus.Backgrounds:
    return corpus.Backgrounds(split)


def _room(audio: np.ndarray, condition: str, split: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if condition.startswith("noise"):
        clean, _ = corpus.apply_condition(audio, "clean", split, rng, None)  # type: ignore[arg-type]
        return _noisy(clean, float(condition.removeprefix("noise")), rng)
    return corpus.apply_condition(audio, condition, split, rng,
                                  _backgrounds(split) if condition == "babble" else None)  # type: ignore[arg-type]


def requests(split: str, quick: bool, voices: tuple[corpus.Voice, ...]) -> list[tuple[Request, str]]:
    """(request, text to synthesize) for every clip of the split, said by ``voices``, before audio exists."""
    phrases = [(p, c) for c, ps in PHRASES.items() for p in ps]
    confusable = CONFUSABLE[split][:30] if quick else CONFUSABLE[split]
    out: list[tuple[Request, str]] = []
    k = 0
    for condition in CONDITIONS:
        items: list[tuple[corpus.Voice, str, str | None]] = []
        for v, voice in enumerate(voices):
            stride = COMMAND_STRIDE * (2 if quick else 1)
            items += [(voice, p, c) for i, (p, c) in enumerate(phrases) if (i + v) % stride == 0]
        items += [(voices[(i + CONDITIONS.index(condition)) % len(voices)], t, None)
                  for i, t in enumerate(confusable)]
        pairs = condition == BACK_TO_BACK
        if pairs and len(items) % 2:
            items.pop()
        for j, (voice, text, expect) in enumerate(items):
            if pairs and j % 2:  # the second of a pair: the same voice and wake word as the first
                voice, wake = items[j - 1][0], out[-1][0].wake
            else:
                # Wake words take turns; with as many voices as wake words (or a multiple) the turns are shifted
                # every round, or each voice would only ever say one wake word.
                turn = k + (k // len(WAKES) if len(voices) % len(WAKES) == 0 else 0)
                wake = list(WAKES)[turn % len(WAKES)]
                k += 1
            out.append((Request(voice.engine, voice.label, text, expect, condition, "", wake, 0.0, 0.0,
                                pair=1 + j % 2 if pairs else 0), f"{WAKES[wake]}, {text}"))
    return out


class _Collector:
    """Stands in for the utterance worker: keeps each finished utterance for scoring, and judges early windows
    as the worker does (the capture waits on for a request when one holds no command)."""

    def __init__(self, recognizer: CommandRecognizer, max_seconds: float) -> None:
        self.utterances: list[Utterance] = []
        self.stats: dict[str, int] = {}
        self._recognizer = recognizer
        self._max_seconds = max_seconds
        self._verdict: tuple[float, bool] | None = None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def submit(self, utterance: Utterance, *, wait: bool) -> bool:
        self.utterances.append(utterance)
        return True

    def peek(self, early: Utterance, *, wait: bool) -> None:
        self._verdict = early.t_wake, self._recognizer.recognize(early.command_window(self._max_seconds)) is not None

    def take_peek_verdict(self) -> tuple[float, bool] | None:
        verdict, self._verdict = self._verdict, None
        return verdict

    def take_answer_request(self) -> float | None:
        return None  # nothing is asked back here: deletions are judged as recognised

    def cancel_answer(self, reason: str, t: float, *, wait: bool) -> None:
        pass


def play(stream: np.ndarray, wake_spec: str, models: Path, tmp: Path, recognizer: CommandRecognizer,
         max_seconds: float) -> list[Utterance]:
    """Every utterance the daemon's loop captures in ``stream``, woken as the daemon wakes by default (its
    second look, faint wakes included): the figures are "given a wake" of the product as shipped."""
    settings = load_settings(None, {"state_dir": str(tmp / "state"), "wake": {"words": [wake_spec]}})
    (tmp / "state").mkdir(mode=0o700, exist_ok=True)
    wav = write_wav(tmp / "stream.wav", stream)
    collector = _Collector(recognizer, max_seconds)
    privacy = PrivacyState(tmp / "state" / "privacy.json")
    detector = WakeDetector(settings.wake, models)
    daemon = Daemon(settings, WavFileSource(wav), detector, privacy, EventBus(live=False), collector,  # type: ignore[arg-type]
                    verifier=second_look(settings.wake, models, detector.plans), stop=threading.Event())
    daemon.run()
    return collector.utterances


Result = tuple[Request, Recognition | None, bool]


def evaluate(split: str, quick: bool, settings: CommandSettings, models: Path,
             outside: bool = False, pause: float = 0.0, offset: int = 0) -> list[Result]:
    """(request, best grammar match in its window or None, woken?) for every request of the split; said by
    ``corpus.OUTSIDE_VOICES`` instead of the split's own voices if ``outside``; with ``pause`` seconds of
    silence between the wake phrase and the rest (the owner waiting for the LED), before the room; through a
    microphone that adds ``offset`` to every sample."""
    rng = np.random.default_rng(13 if split == "report" else 12)
    specs = {"alexa": "alexa", "hey_jarvis": "hey_jarvis", "custom": str(models / "hey_marvin_v0.1.onnx")}
    recognizers = {w: CommandRecognizer(settings, [Path(s).stem.rsplit("_v", 1)[0]]) for w, s in specs.items()}
    spoken_by = corpus.OUTSIDE_VOICES if outside else corpus.VOICES[split]
    plan = requests(split, quick, spoken_by)
    results: list[Result] = []
    voices = {v.label: v for v in spoken_by}
    later = np.random.default_rng(113 if split == "report" else 112)  # CONDITIONS' later four
    for wake in WAKES:
        parts: list[np.ndarray] = []
        placed: list[Request] = []
        t = 0.0
        first: tuple[Request, np.ndarray] | None = None  # of a pair, until its second is said
        pairs = sum(req.wake == wake and req.pair == 2 for req, _ in plan)
        paired = 0
        for req, text in plan:
            if req.wake != wake:
                continue
            r = rng if req.condition in ISSUE_ROOMS else later
            speed = int(r.choice(corpus.SPEEDS))
            if pause:  # said apart: the wake phrase, a wait, then the request
                audio = np.concatenate([corpus.say(WAKES[wake], voices[req.voice], speed=speed),
                                        np.zeros(round(pause * SAMPLE_RATE), np.int16),
                                        corpus.say(req.text, voices[req.voice], speed=speed)])
            else:
                audio = corpus.say(text, voices[req.voice], speed=speed)
            if req.pair == 1:
                first = req, audio
                continue
            room, start = req.condition, t
            if req.pair == 2:  # one clip: the first request, a short gap, this one
                assert first is not None  # requests() puts the first of a pair just before its second
                gap = np.zeros(round(float(r.uniform(*BACK_TO_BACK_GAP)) * SAMPLE_RATE), np.int16)
                # The first half in a quiet room, the rest in noise: noise that starts right after a quiet
                # room's request would run into its window, which no room does.
                room = "clean" if 2 * paired < pairs else "noise10"
                paired += 1
                start = t + corpus.LEAD + (len(first[1]) + len(gap) / 2) / SAMPLE_RATE
                audio = np.concatenate([first[1], gap, audio])
            clip, detail = _room(audio, room, split, r)
            end = t + len(clip) / SAMPLE_RATE
            if req.pair == 2:
                placed.append(dataclasses.replace(first[0], detail=detail, start=t, end=start))  # type: ignore[index]
            placed.append(dataclasses.replace(req, detail=detail, start=start, end=end))
            parts.append(clip)
            t = end
        with tempfile.TemporaryDirectory(prefix="voxkeep-cmdeval-") as tmp:
            utterances = play(corpus.with_offset(np.concatenate(parts), offset), specs[wake], models, Path(tmp),
                              recognizers[wake], settings.max_seconds)
        for req in placed:
            mine = [u for u in utterances if req.start <= u.t_wake < req.end]
            if not mine:
                results.append((req, None, False))
                continue
            u = mine[0]
            got = recognizers[wake].score(u.command_window(settings.max_seconds))
            results.append((req, got, True))
    return results


def _accepted(got: Recognition | None, settings: CommandSettings) -> bool:
    return got is not None and got.score >= min_score_for(settings, got.command)


def table(results: list[Result], settings: CommandSettings, key: str) -> None:
    """Recall given a wake and false commands on confusables, grouped by ``key`` (condition, family, wake)."""
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0, 0])
    for req, got, woke in results:
        r = rows[getattr(req, key)]
        ok = _accepted(got, settings)
        if req.expect is not None:
            r[0] += 1
            r[1] += woke
            r[2] += woke and ok and got is not None and got.command == req.expect
        elif woke:
            r[3] += 1
            r[4] += ok
            r[5] += ok and got is not None and got.command in DELETING
        r[6] += woke and ok and req.expect is not None and got is not None and got.command != req.expect
    print(f"\n| {key} | commands woken | understood, given a wake | recall | confusables woken | false commands "
          "| of them deletions | wrong command |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(rows):
        n, w, ok, cw, fa, dl, wrong = rows[name]
        print(f"| {name} | {w}/{n} | {ok}/{w} | {ok / max(w, 1):.3f} | {cw} | {fa} "
              f"({100 * fa / max(cw, 1):.1f} per 100) | {dl} | {wrong} |")


def misses(results: list[Result], settings: CommandSettings) -> None:
    print("\nfalse commands (confusable taken for a command):")
    for req, got, woke in results:
        if req.expect is None and woke and _accepted(got, settings) and got is not None:
            print(f"  {req.voice} {req.condition}/{req.detail} {req.wake}: {req.text!r} -> {got.command} "
                  f"({got.score:+.2f})")


def sweep(results: list[Result]) -> None:
    """Recall given a wake and false commands over a range of bars (all commands; deleting ones alone)."""
    woken = [(r, g) for r, g, w in results if w]
    pos = np.array([g.score if g and g.command == r.expect else -np.inf for r, g in woken if r.expect])
    neg = np.array([g.score if g else -np.inf for r, g in woken if r.expect is None])
    dpos = np.array([g.score if g and g.command == r.expect else -np.inf for r, g in woken if r.expect in DELETING])
    dneg = np.array([g.score if g and g.command in DELETING else -np.inf for r, g in woken if r.expect is None])
    print("\n  bar      recall  false | delete: recall  false")
    for thr in np.arange(-8.0, -1.99, 0.25):
        print(f"  {thr:+6.2f}  {np.mean(pos >= thr):6.3f}  {int(np.sum(neg >= thr)):4d}/{len(neg)}"
              f" |        {np.mean(dpos >= thr):6.3f}  {int(np.sum(dneg >= thr)):4d}/{len(dneg)}")


NOT_ANSWERS = ("what time is it", "yesterday", "I said it", "turn on the lights", "never mind that", "hello there")
"""Speech in the answer window that is neither yes nor no (someone else talking, a second thought)."""
ANSWER_LEAD_SECONDS = 0.4
"""Room heard in the answer window before the owner answers the tone (the window opens with the tone)."""
ECHO_DB = -6.0
"""The "confirm?" tone as the microphone hears it in the ``echo`` room, relative to the speech level."""


def _frac(row: list[int], i: int) -> str:
    return f"{row[i]}/{sum(row)} ({row[i] / max(sum(row), 1):.2f})"


def confirm_eval(split: str, settings: CommandSettings) -> None:
    """How often "yes", "no", other speech and silence are understood in the answer window, per room and family."""
    from voxkeep.tones import tone_samples

    recognizer = AnswerRecognizer(settings)
    rng = np.random.default_rng(31 if split == "report" else 30)
    trials = [(t, "yes") for t in ANSWERS["yes"]] + [(t, "no") for t in ANSWERS["no"]] + \
        [(t, "other") for t in NOT_ANSWERS] + [("", "silence")]
    # (condition, family) -> kind -> [heard yes, heard no, heard nothing/unclear]
    counts: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    false_yes: list[str] = []
    lead = int(ANSWER_LEAD_SECONDS * SAMPLE_RATE)
    tone = tone_samples("confirm").astype(np.float32)
    for voice in corpus.VOICES[split]:
        for text, kind in trials:
            audio = corpus.say(text, voice, speed=int(rng.choice(corpus.SPEEDS))) if text else \
                np.zeros(SAMPLE_RATE, np.int16)
            for condition in (*ISSUE_ROOMS, "echo"):
                clip, _ = _room(audio, "clean" if condition == "echo" else condition, split, rng)
                window = clip[int(corpus.LEAD * SAMPLE_RATE) - lead:].astype(np.float32)
                if condition == "echo":  # the speaker's own tone, at the window's start
                    level = 10 ** ((corpus.SPEECH_DBFS + ECHO_DB) / 20) * 32768 / max(1.0, float(
                        np.sqrt(np.mean(tone ** 2))))
                    window[:len(tone)] += tone * level
                got = recognizer.recognize(np.clip(np.round(window), -32768, 32767).astype(np.int16))
                said = None if got is None else got.command
                row = counts[(condition, voice.engine)][kind]
                row[0 if said == "yes" else 1 if said == "no" else 2] += 1
                if said == "yes" and kind != "yes":
                    false_yes.append(f"{voice.label} {condition}: {text or '(silence)'!r}")
    for axis, name in ((0, "room"), (1, "family")):
        keys = sorted({k[axis] for k in counts})
        print(f"\n| {name} | \"yes\" deletes | \"no\" heard as no | \"no\" deletes | other speech deletes "
              "| silence deletes |")
        print("| --- | --- | --- | --- | --- | --- |")
        for key in keys:
            tot: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for k, rows in counts.items():
                if k[axis] == key:
                    for kind, r in rows.items():
                        tot[kind] = [a + b for a, b in zip(tot[kind], r, strict=True)]
            print(f"| {key} | {_frac(tot['yes'], 0)} | {_frac(tot['no'], 1)} | {_frac(tot['no'], 0)} "
                  f"| {_frac(tot['other'], 0)} | {_frac(tot['silence'], 0)} |")
    print("\nfalse yes (would delete):" + ("".join(f"\n  {f}" for f in false_yes) or " none"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=corpus.SPLITS, default="report", help="voices and sentences to use")
    parser.add_argument("--quick", action="store_true", help="half the phrases and 30 confusables (a smoke run)")
    parser.add_argument("--sweep", action="store_true", help="also print recall/false commands per score bar")
    parser.add_argument("--min-score", type=float, help="commands.min_score to report at (default: the config's)")
    parser.add_argument("--delete-min-score", type=float, help="commands.delete_min_score to report at (the bar "
                        "for the \"yes\" with --confirm, and for the deletions only with --one-shot-deletes)")
    parser.add_argument("--one-shot-deletes", action="store_true", help="deletions not asked back "
                        "(commands.confirm_deletes = false), so held to delete_min_score")
    parser.add_argument("--filler-words", type=int, help="commands.filler_words (default: the config's)")
    parser.add_argument("--delete-filler-words", type=int, help="commands.delete_filler_words (default: the config's)")
    parser.add_argument("--outside-voices", action="store_true", help="the split's sentences and rooms said by "
                        "Festival voices no split has (corpus.OUTSIDE_VOICES; needs the festival packages)")
    parser.add_argument("--pause", type=float, default=0.0, metavar="SECONDS",
                        help="silence between the wake phrase and the request, 0-8 s (default 0: said in one breath)")
    parser.add_argument("--offset", type=corpus.sample_offset, default=0, metavar="STEPS",
                        help="add STEPS (int16, e.g. 300) to every sample: a microphone with a DC offset")
    parser.add_argument("--confirm", action="store_true", help="measure the yes/no answer to a deletion asked back "
                        "(commands.confirm_deletes) instead")
    args = parser.parse_args()
    from voxkeep.config import default_models_dir

    base = CommandSettings()
    settings = dataclasses.replace(
        base, min_score=base.min_score if args.min_score is None else args.min_score,
        delete_min_score=base.delete_min_score if args.delete_min_score is None else args.delete_min_score,
        filler_words=base.filler_words if args.filler_words is None else args.filler_words,
        delete_filler_words=base.delete_filler_words if args.delete_filler_words is None
        else args.delete_filler_words, confirm_deletes=not args.one_shot_deletes)
    print(f"split {args.split}; min_score {settings.min_score:+.2f}, delete_min_score "
          f"{settings.delete_min_score:+.2f}, filler_words {settings.filler_words}, "
          f"delete_filler_words {settings.delete_filler_words}, confirm_deletes {settings.confirm_deletes}")
    t0 = time.perf_counter()
    if args.confirm:
        confirm_eval(args.split, settings)
        print(f"\nin {time.perf_counter() - t0:.0f} s")
        return 0
    if not 0.0 <= args.pause <= 8.0:
        parser.error(f"--pause must be 0 to 8 seconds, not {args.pause}")
    results = evaluate(args.split, args.quick, settings, default_models_dir(), args.outside_voices, args.pause,
                       args.offset)
    for key in ("condition", "family", "wake", *(("voice",) if args.outside_voices else ())):
        table(results, settings, key)
    table([r for r in results if r[0].pair], settings, "pair")  # back-to-back: the first request, the second
    misses(results, settings)
    if args.sweep:
        sweep(results)
    woke = sum(w for _, _, w in results)
    print(f"\n{len(results)} requests, {woke} woken, in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
