"""Wake-word detection with either engine, and the second look that fits the engine of each word.

``WakeDetector.process`` takes one 80 ms frame and returns the wake words that crossed their threshold on
it. A refractory period per word turns the run of high scores one utterance gives into one hit. Each word
streams on one engine (``wake.engine``, per word ``wake.engines``):

- ``openwakeword``: openWakeWord's ONNX networks in ``engine.WakeEngine``, behind an energy gate that skips
  them in a quiet room;
- ``microwakeword``: microWakeWord's streaming TFLite model in ``microwake.MicroEngine``, a fraction of the
  CPU and memory;
- ``both``: microWakeWord streams, and a hit counts only if openWakeWord, run over the buffered audio when
  the hit comes, agrees (``Agreement``). Two detectors trained apart rarely make the same mistake, and the
  expensive one runs only on the few frames around a hit.

With ``wake.cascade_threshold`` above 0, microWakeWord's models of the openWakeWord words open openWakeWord's
gate instead of the energy of the room (``CascadeGate``): openWakeWord still decides, on its own scores.

A word both engines have that streams on openWakeWord (hey_jarvis, alexa) also wakes on a faint rise: a score
that peaks between ``wake.faint_floor`` and its threshold is a faint hit, a wake only if microWakeWord, run
over the buffered audio, is sure of the word too (``wake.faint_witness``, ``SecondLook``).

A word only one engine has (okay_nabu: microWakeWord; hey_marvin, timer, weather: openWakeWord) runs on
that engine whatever is asked. Scores are 0-1 either way; the threshold of a microWakeWord word defaults
to its model's own ``probability_cutoff`` (openWakeWord words: ``wake.threshold``), ``wake.thresholds``
overrides both. The daemon, events and the verifier see hits alike from both engines.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import FRAME_SAMPLES, SAMPLE_RATE
from .config import WakeSettings
from .engine import EnergyGate, WakeEngine
from .errors import ModelError
from .microwake import MicroEngine, MicroModel
from .models import (
    FEATURE_MODELS,
    MICROWAKEWORD,
    OPENWAKEWORD,
    bundled_micro_words,
    bundled_wake_words,
    is_micro_path,
    is_path,
    resolve_micro_word,
    resolve_wake_word,
    verified_path,
    wake_word_name,
)
from .verify import Verdict, WakeVerifier

log = logging.getLogger(__name__)

BOTH = "both"
AUTO = "auto"

BEST_ENGINE = {"hey_mycroft": MICROWAKEWORD}
"""Where ``wake.engine = "auto"`` (the default) puts a bundled word that both engines have; every other word
runs on openWakeWord. Chosen on bench/eval_wake.py's TUNE split, bare, each word alone: hey_mycroft 0.205
recall on openWakeWord against 0.462 on microWakeWord (reverb 0.00 against 0.46, far field 0.15 against
0.54), neither waking once in 2.2 h of real speech. hey_jarvis (0.658 against 0.410) and alexa (0.624 against
0.573; docs/wake-engines.md) hear more on openWakeWord."""

WITNESS_FRAMES = 9
"""Frames at the end of the buffered audio where microWakeWord's score may overturn a classifier refusal: the
look-ahead (2), the hit and the 6 before it, as microWakeWord crosses a little before or after openWakeWord."""

REASONS = {
    "engines_disagree": "openWakeWord, run over the buffered audio, did not find the word microWakeWord heard",
    "micro_agrees": "the classifier refused it, but microWakeWord, run over the buffered audio, heard the word",
    "faint_micro_agrees": "openWakeWord's score only rose to wake.faint_floor, and microWakeWord, run over the "
                          "buffered audio, was sure of the word (wake.faint_witness)",
    "faint_unconfirmed": "openWakeWord's score stayed below the threshold and microWakeWord did not hear the word",
    "no_second_look": "accepted on microWakeWord's own cutoff (engine microwakeword: no second look)",
}
"""Verdict reasons this module adds to ``verify.REASONS``."""


@dataclass(frozen=True)
class WakeHit:
    """One wake word crossing its threshold on one frame."""

    wake_word: str
    score: float
    faint: bool = False
    """The score peaked between the word's ``floor`` and its threshold: a wake only if the witness agrees."""


@dataclass(frozen=True)
class WordPlan:
    """How one configured wake word is detected and checked."""

    name: str
    spec: str
    """What the config said (a bundled name or a path); the classifier resolves it again."""
    engine: str
    """The engine that streams it: openwakeword or microwakeword."""
    threshold: float
    onnx: Path | None = None
    """The verified openWakeWord model: streams it, or confirms it (``agree``)."""
    micro: MicroModel | None = None
    micro_fix: str = ""
    agree: bool = False
    """``both``: openWakeWord must agree with each microWakeWord hit."""
    witness: tuple[MicroModel, str] | None = None
    """microWakeWord's model of an openWakeWord word (and its fix line), to judge what openWakeWord is unsure of:
    faint rises, and for alexa the classifier's refusals (``SecondLook``)."""
    floor: float = 0.0
    """With a witness: a score peaking between this and ``threshold`` is a faint hit (0: none)."""


def _pick(name: str, asked: str, has_oww: bool, has_mww: bool) -> tuple[str, bool]:
    """(streaming engine, agreement) for a bundled word, falling back to the engine that has it."""
    if asked == BOTH and has_oww and has_mww:
        return MICROWAKEWORD, True
    available = {OPENWAKEWORD: has_oww, MICROWAKEWORD: has_mww}
    if asked == AUTO:
        preferred = BEST_ENGINE.get(name, OPENWAKEWORD)
    else:
        preferred = OPENWAKEWORD if asked == OPENWAKEWORD else MICROWAKEWORD
    engine = preferred if available[preferred] else next(e for e, ok in available.items() if ok)
    if asked not in (engine, AUTO):  # "auto" asked for no engine in particular: nothing to explain
        log.info("wake word %s: only %s has a model for it, so it runs there (asked: %s)", name, engine, asked)
    return engine, False


def plan_words(settings: WakeSettings, models_dir: Path) -> list[WordPlan]:
    """Resolve and verify every configured word's models; ModelError naming the fix on any problem."""
    oww_words, mww_words = bundled_wake_words(), bundled_micro_words()
    plans = []
    for spec in settings.words:
        if is_path(spec):
            if is_micro_path(spec):
                name, micro, fix = resolve_micro_word(spec, models_dir)
                plan = WordPlan(name, spec, MICROWAKEWORD, settings.thresholds.get(name, micro.cutoff),
                                micro=micro, micro_fix=fix)
            else:
                name, path = resolve_wake_word(spec, models_dir)
                plan = WordPlan(name, spec, OPENWAKEWORD, settings.thresholds.get(name, settings.threshold),
                                onnx=path)
            plans.append(plan)
            continue
        name = wake_word_name(spec)
        has_oww, has_mww = name in oww_words, name in mww_words
        if not (has_oww or has_mww):
            known = ", ".join(sorted(set(oww_words) | set(mww_words)))
            raise ModelError(f"unknown wake word '{spec}'; use one of {known}, or a path to a .onnx or .tflite model")
        asked = settings.engines.get(name, settings.engine)
        engine, agree = _pick(name, asked, has_oww, has_mww)
        micro, fix = None, ""
        if engine == MICROWAKEWORD:
            try:
                micro, fix = resolve_micro_word(spec, models_dir)[1:]
            except ModelError as exc:
                if asked != AUTO or not has_oww:
                    raise
                # "auto" only preferred microWakeWord: a missing or altered file must not leave the word unheard.
                log.warning("wake word %s runs on openWakeWord: %s", name, exc)
                engine = OPENWAKEWORD
        onnx = resolve_wake_word(spec, models_dir)[1] if engine == OPENWAKEWORD or agree else None
        default = (settings.agree_micro_threshold if agree else micro.cutoff if micro is not None
                   else settings.threshold)
        threshold = settings.thresholds.get(name, default)
        witness = _witness(name, spec, models_dir) if (
            engine == OPENWAKEWORD and has_mww and settings.verify and settings.verify_witness > 0) else None
        # A threshold the owner set (for this word or all) is theirs to keep: no faint wakes below it.
        own = name in settings.thresholds or settings.threshold != WakeSettings.threshold
        faint = witness is not None and not own and settings.faint_floor < threshold
        floor = settings.faint_floor if faint else 0.0
        plans.append(WordPlan(name, spec, engine, threshold, onnx=onnx, micro=micro, micro_fix=fix, agree=agree,
                              witness=witness, floor=floor))
    names = [p.name for p in plans]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ModelError(f"wake word {sorted(dupes)[0]} is configured twice; list each word once")
    for key, what in ((settings.thresholds, "thresholds"), (settings.engines, "engines")):
        unknown = set(key) - set(names)
        if unknown:
            log.warning("%s given for wake words that are not enabled: %s", what, ", ".join(sorted(unknown)))
    return plans


def _witness(name: str, spec: str, models_dir: Path) -> tuple[MicroModel, str] | None:
    """microWakeWord's verified model of a bundled word, or None (logged): without it openWakeWord's own
    threshold and the classifier alone decide, so the word wakes less, never more."""
    try:
        return resolve_micro_word(spec, models_dir)[1:]
    except ModelError as exc:
        log.warning("wake word %s: no microWakeWord witness (faint wakes and classifier refusals stay refused): %s",
                    name, exc)
        return None


def _feature_models(models_dir: Path) -> tuple[Path, Path]:
    melspec, embedding = (verified_path(models_dir, name) for name in FEATURE_MODELS)
    return melspec, embedding


class CascadeGate:
    """Opens openWakeWord's gate (``engine.WakeEngine``) on frames where microWakeWord's score reaches ``threshold``.

    microWakeWord costs a fraction of openWakeWord's networks, and its own energy gate skips even that in a
    quiet room. The engine replays the 2 s before an opening, so while open the scores are exactly
    openWakeWord's; a wake is lost only where microWakeWord never rose to ``threshold`` in the 2 s before
    openWakeWord's crossing.
    """

    hold_frames = MicroEngine.REPLAY_FRAMES
    """openWakeWord may cross well after microWakeWord last stirred: keep running for the whole 2 s of context."""

    def __init__(self, trigger: MicroEngine, threshold: float) -> None:
        self.trigger = trigger
        self.threshold = threshold

    def loud(self, samples: np.ndarray) -> bool:
        """Feed one frame (float32, int16 scale) to microWakeWord; True if any of its scores reached the threshold."""
        return float(self.trigger.process(samples).max()) >= self.threshold


def _cascade(plans: Sequence[WordPlan], oww_index: Sequence[int], settings: WakeSettings,
             models_dir: Path) -> CascadeGate | None:
    """The cascade gate for the openWakeWord words, or None if it is off or a word has no microWakeWord model."""
    if settings.cascade_threshold <= 0 or not oww_index:
        return None
    streamed = [plans[i] for i in oww_index]
    lacking = [p.name for p in streamed if is_path(p.spec) or p.name not in bundled_micro_words()]
    if lacking:
        log.warning("wake.cascade_threshold is ignored: microWakeWord has no model for %s, so the room's energy "
                    "opens openWakeWord's gate", ", ".join(lacking))
        return None
    micro = [resolve_micro_word(p.spec, models_dir)[1:] for p in streamed]
    trigger = MicroEngine([m for m, _ in micro], [fix for _, fix in micro], gate=EnergyGate())
    return CascadeGate(trigger, settings.cascade_threshold)


class WakeDetector:
    """Scores frames with each word's engine and applies per-word thresholds and the refractory period.

    ``gate=False`` runs the models on every frame (for comparisons); the default skips them while the
    room is quiet, which gives the same wakes (see ``engine`` and ``microwake``).
    """

    def __init__(self, settings: WakeSettings, models_dir: Path, *, gate: bool = True) -> None:
        self.plans = plan_words(settings, models_dir)
        self.words = [p.name for p in self.plans]
        self._thresholds = np.array([p.threshold for p in self.plans], dtype=np.float32)
        self._oww_index = [i for i, p in enumerate(self.plans) if p.engine == OPENWAKEWORD]
        self._mww_index = [i for i, p in enumerate(self.plans) if p.engine == MICROWAKEWORD]
        self._oww = self._mww = None
        self._cascade = _cascade(self.plans, self._oww_index, settings, models_dir) if gate else None
        if self._oww_index:
            self._oww = WakeEngine(*_feature_models(models_dir), [self.plans[i].onnx for i in self._oww_index],
                                   gate=self._cascade or (EnergyGate() if gate else None))
        if self._mww_index:
            micro = [self.plans[i] for i in self._mww_index]
            self._mww = MicroEngine([p.micro for p in micro], [p.micro_fix for p in micro],
                                    gate=EnergyGate() if gate else None)
        self._scores = np.zeros(len(self.plans), dtype=np.float32)
        self._floors = [p.floor for p in self.plans]
        self._rise = [0.0] * len(self.plans)
        """Per word, the highest score of the current faint rise (since it passed the floor); 0 while none."""
        self._reported = [0.0] * len(self.plans)
        """Per word, the highest peak of the current rise already given as a faint hit."""
        self._refractory_frames = round(settings.refractory_seconds * SAMPLE_RATE / FRAME_SAMPLES)
        self._quiet_until = [-1] * len(self.plans)
        self._frame = 0
        self.last_scores: dict[str, float] = dict.fromkeys(self.words, 0.0)

    def process(self, frame: np.ndarray) -> list[WakeHit]:
        """Score one frame; return the words that woke on it."""
        if self._oww is not None:
            self._scores[self._oww_index] = self._oww.process(frame)
        if self._mww is not None:
            self._scores[self._mww_index] = self._mww.process(frame)
        hits = []
        for k, word in enumerate(self.words):
            value = float(self._scores[k])
            self.last_scores[word] = value
            if self._frame <= self._quiet_until[k]:
                self._rise[k] = self._reported[k] = 0.0
            elif value >= self._thresholds[k]:
                self._quiet_until[k] = self._frame + self._refractory_frames
                self._rise[k] = self._reported[k] = 0.0
                hits.append(WakeHit(word, value))
            elif self._floors[k] > 0:
                hits += self._faint(k, value)
        self._frame += 1
        return hits

    def _faint(self, k: int, value: float) -> list[WakeHit]:
        """A faint hit on the first frame after word ``k``'s score turns down from a peak between its floor and
        threshold that is higher than any given for this rise yet.

        Reported once the score turns, so the witness hears the phrase so far; a higher peak later in the same
        rise is judged again (a wobble on the way up must not use up the rise). It spends no refractory period,
        so a score that then climbs to the threshold after all is still a wake of its own.
        """
        hits = []
        peak = self._rise[k]
        if value < peak and peak > self._reported[k]:
            hits.append(WakeHit(self.words[k], peak, faint=True))
            self._reported[k] = peak
        if value < self._floors[k]:
            self._rise[k] = self._reported[k] = 0.0
        else:
            self._rise[k] = max(peak, value)
        return hits

    def reset(self) -> None:
        """Forget buffered audio, e.g. after the microphone was closed and reopened."""
        for engine in (self._oww, self._mww, self._cascade and self._cascade.trigger):
            if engine is not None:
                engine.reset()
        # A rise heard before the microphone closed must not turn into a faint hit on the first frame after.
        self._rise = [0.0] * len(self.plans)
        self._reported = [0.0] * len(self.plans)

    @property
    def frames_scored(self) -> int:
        """Frames some model ran on since start, for the summary line and the benchmark."""
        return max(e.frames_scored for e in (self._oww, self._mww) if e is not None)


class Agreement:
    """The other engine's opinion of the buffered audio: openWakeWord's for words microWakeWord streams
    (``both``), microWakeWord's for classifier refusals of words openWakeWord streams (``wake.verify_witness``).

    The engine is reset and fed the 2 s the daemon keeps, ending ``look_ahead`` frames after the hit: the last
    frames' scores are then the streaming scores that engine would have given (its score on a frame depends
    on the 2 s before it). The hit is kept if any of the last ``frames`` reaches ``threshold``: the two
    engines cross at slightly different moments of the same phrase.
    """

    def __init__(self, engine: WakeEngine | MicroEngine, words: Sequence[str], threshold: float,
                 frames: int) -> None:
        self._index = {w: k for k, w in enumerate(words)}
        self._engine = engine
        self._threshold = threshold
        self._frames = frames

    def __contains__(self, word: str) -> bool:
        return word in self._index

    def score(self, word: str, audio: np.ndarray) -> float:
        """The engine's best score for ``word`` over the last ``frames`` frames of ``audio``."""
        k = self._index[word]
        frames = np.asarray(audio, dtype=np.int16)
        frames = frames[len(frames) % FRAME_SAMPLES:].reshape(-1, FRAME_SAMPLES)
        self._engine.reset()
        best = 0.0
        for i, frame in enumerate(frames):
            value = float(self._engine.process(frame)[k])
            if i >= len(frames) - self._frames:
                best = max(best, value)
        return best

    def agrees(self, word: str, audio: np.ndarray) -> bool:
        return self.score(word, audio) >= self._threshold

    def check(self, word: str, audio: np.ndarray) -> Verdict:
        ok = self.agrees(word, audio)
        return Verdict(ok, "confirmed" if ok else "engines_disagree")


class SecondLook:
    """The daemon's verifier for any engine setting: agreement, the classifier, or nothing, per word.

    - ``both`` words: ``Agreement`` (openWakeWord must agree with microWakeWord);
    - words openWakeWord streams: ``verify.WakeVerifier``, the shipped per-word classifier on openWakeWord's
      embeddings of the buffered audio (or its re-score for custom ``.onnx`` words); a classifier refusal of
      a word microWakeWord also has is overturned if microWakeWord, run over the same audio, hears it, and a
      faint hit of such a word (``WakeDetector._faint``) is judged by microWakeWord alone;
    - words microWakeWord streams alone: none. Its model's own cutoff over a 150 ms mean is its check; the
      classifier, trained on where openWakeWord fires, refused two in five of microWakeWord's wakes on
      the REPORT split (docs/wake-engines.md), and loading onnxruntime for it would double the memory.
    """

    def __init__(self, settings: WakeSettings, models_dir: Path, plans: Sequence[WordPlan]) -> None:
        # microWakeWord crosses its cutoff later in a phrase than openWakeWord crosses 0.5 (its score is a
        # mean over 150 ms), by when the phrase is already in the buffer: waiting longer would only add
        # latency. openWakeWord words wait, so the look sees how the phrase ends, if it has anything to judge.
        agree = [p for p in plans if p.agree]
        checked = [p for p in plans if p.engine == OPENWAKEWORD]
        self._agreement = (Agreement(WakeEngine(*_feature_models(models_dir), [p.onnx for p in agree], gate=None),
                                     [p.name for p in agree], settings.agree_threshold, settings.agree_frames)
                           if agree else None)
        self._verifier = (WakeVerifier(replace(settings, words=[p.spec for p in checked]), models_dir)
                          if checked else None)
        # plan_words gives a witness only to openWakeWord words, and only with verify_witness above 0; it is
        # loaded where it has something to judge: faint rises, or the refusals of a word's classifier.
        witnessed = [p for p in checked if p.witness is not None and self._verifier is not None
                     and (p.floor > 0 or self._verifier.judges(p.name))]
        self._witness = (Agreement(MicroEngine([p.witness[0] for p in witnessed], [p.witness[1] for p in witnessed]),
                                   [p.name for p in witnessed], settings.verify_witness, WITNESS_FRAMES)
                         if witnessed else None)
        self._faint_witness = settings.faint_witness
        self._checked = {p.name for p in checked}
        self._thresholds = {p.name: p.threshold for p in checked}
        """Below its word's threshold a hit is faint (``WakeDetector._faint``)."""
        self._faint = {p.name for p in witnessed if p.floor > 0}
        """Words whose faint hits the witness judges; any other faint hit is refused."""

    def look_ahead(self, word: str) -> int:
        """Frames the daemon waits after a hit of ``word`` before ``check``."""
        if word in self._checked and self._verifier is not None:
            return self._verifier.look_ahead(word)
        return 0

    def check(self, word: str, score: float, audio: np.ndarray, scores: Sequence[float]) -> Verdict:
        """Judge a hit of ``word`` (same arguments as ``WakeVerifier.check``)."""
        if self._agreement is not None and word in self._agreement:
            return self._agreement.check(word, audio)
        if score < self._thresholds.get(word, 0.0):
            # A faint hit: openWakeWord alone is unsure, so microWakeWord's opinion decides (not the classifier,
            # which was tuned on wakes above the threshold).
            ok = word in self._faint and self._witness.score(word, audio) >= self._faint_witness
            return Verdict(ok, "faint_micro_agrees" if ok else "faint_unconfirmed")
        if word in self._checked and self._verifier is not None:
            verdict = self._verifier.check(word, score, audio, scores)
            if (verdict.reason == "classifier_rejects" and self._witness is not None and word in self._witness
                    and self._witness.agrees(word, audio)):
                return Verdict(True, "micro_agrees")
            return verdict
        return Verdict(True, "no_second_look")


def second_look(settings: WakeSettings, models_dir: Path, plans: Sequence[WordPlan] | None = None) -> SecondLook:
    """The verifier for ``settings`` (pass the detector's ``plans`` to skip resolving the words again)."""
    return SecondLook(settings, models_dir, plans if plans is not None else plan_words(settings, models_dir))
