"""The second look at a wake (voxkeep.verify), with the real models and synthesized speech.

Each test runs the product's WakeDetector over espeak-ng audio and hands its hits to WakeVerifier the way
the daemon does: with the last 2 s of audio and the word's score history, ending ``look_ahead(word)`` frames
after the frame that fired.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from voxkeep import FRAME_SAMPLES
from voxkeep import verify as verify_module
from voxkeep.config import WakeSettings, load_settings
from voxkeep.errors import ConfigError, ModelError
from voxkeep.models import bundled_wake_words, verified_path
from voxkeep.verify import AUDIO_SECONDS, REASONS, SCORE_FRAMES, Verdict, WakeVerifier
from voxkeep.wake import WakeDetector

WORDS = ["hey_jarvis", "hey_marvin"]


@pytest.fixture(scope="module")
def verifier(models_dir: Path) -> WakeVerifier:
    """The strict operating point, where the score must confirm the wake."""
    return WakeVerifier(WakeSettings(words=WORDS, verify_peak=0.95), models_dir)


def wakes(wav: Path, models_dir: Path, verifier: WakeVerifier,
          words: list[str] = WORDS) -> list[tuple[str, float, Verdict]]:
    """Every hit of the bare detector on ``wav`` (plus 1 s of silence), with the verifier's verdict."""
    audio, _ = soundfile.read(str(wav), dtype="int16")
    audio = np.concatenate([audio, np.zeros(16000, dtype=np.int16)])
    detector = WakeDetector(WakeSettings(words=words, verify=False), models_dir)
    history: dict[str, list[float]] = {w: [] for w in words}
    pending: list[tuple[int, str, float]] = []
    out = []
    for i in range(len(audio) // FRAME_SAMPLES):
        hits = detector.process(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
        for w in words:
            history[w] = (history[w] + [detector.last_scores[w]])[-SCORE_FRAMES:]
        pending += [(i + verifier.look_ahead(h.wake_word), h.wake_word, h.score) for h in hits]
        for _, word, score in [p for p in pending if p[0] == i]:
            end = (i + 1) * FRAME_SAMPLES
            clip = audio[max(0, end - int(AUDIO_SECONDS * 16000)):end]
            out.append((word, score, verifier.check(word, score, clip, history[word])))
    return out


def test_clear_wake_phrase_is_confirmed(speech, models_dir: Path, verifier: WakeVerifier) -> None:
    results = [r for r in wakes(speech("hey marvin"), models_dir, verifier) if r[0] == "hey_marvin"]
    assert results, "the bare detector should wake on a clear 'hey marvin'"
    assert all(v == Verdict(True, "confirmed") for _, _, v in results)


def test_near_miss_that_fools_the_bare_model_is_rejected(speech, models_dir: Path,
                                                         verifier: WakeVerifier) -> None:
    # Found in the tune split's synthesized negatives: bare openWakeWord hears "hey marvin" here.
    results = [r for r in wakes(speech("hey mike, roughly ten minutes"), models_dir, verifier) if r[0] == "hey_marvin"]
    assert results, "this near-miss should still fool the bare detector, else the test proves nothing"
    assert all(score >= 0.5 for _, score, _ in results)
    assert all(not v.ok and v.reason in REASONS and v.reason != "confirmed" for _, _, v in results)


def test_every_reason_is_documented() -> None:
    doc = verify_module.__doc__ or ""
    for reason in REASONS:
        assert f"``{reason}``" in doc, f"reason {reason} missing from the module docstring"


def test_silence_is_rejected_by_the_classifier_or_without_it_by_the_rescore(models_dir: Path,
                                                                          verifier: WakeVerifier) -> None:
    # A streaming score with nothing like the word in the buffer: the fresh look must say no.
    silence = np.zeros(int(AUDIO_SECONDS * 16000), dtype=np.int16)
    assert verifier.check("hey_marvin", 0.96, silence, [0.96, 0.96]) == Verdict(False, "classifier_rejects")
    rescore_only = WakeVerifier(WakeSettings(words=WORDS, verify_classifier=False), models_dir)
    assert rescore_only.check("hey_jarvis", 0.9, silence, [0.9]) == Verdict(False, "rescore_disagrees")


def test_a_word_whose_bare_model_meets_the_false_wake_bar_is_not_second_guessed(models_dir: Path) -> None:
    """hey_jarvis (the default word) and hey_mycroft wake less than once an hour on real speech bare, so
    their classifiers, which refused 13-39 % of the wakes of voices from outside the corpus, are off: the
    wake stands on openWakeWord's score. An owner who gives such a word a threshold turns its classifier
    on; alexa, which bare wakes about twelve times an hour, keeps its classifier by default; and a model
    file of the owner's own is not trusted because it shares a bundled word's name."""
    silence = np.zeros(int(AUDIO_SECONDS * 16000), dtype=np.int16)  # what no classifier would accept
    default = WakeVerifier(WakeSettings(words=["hey_jarvis", "hey_mycroft", "alexa"]), models_dir)
    assert default.check("hey_jarvis", 0.9, silence, [0.9, 0.8]) == Verdict(True, "confirmed")
    assert default.check("hey_mycroft", 0.9, silence, [0.9, 0.8]) == Verdict(True, "confirmed")
    assert default.check("alexa", 0.9, silence, [0.9, 0.8]) == Verdict(False, "classifier_rejects")
    assert default.check("hey_jarvis", 0.55, silence, [0.55, 0.3]).ok  # nor is it re-scored
    chosen = WakeVerifier(WakeSettings(words=["hey_jarvis"], verify_classifier_thresholds={"hey_jarvis": 0.27}),
                          models_dir)
    assert chosen.check("hey_jarvis", 0.9, silence, [0.9, 0.8]) == Verdict(False, "classifier_rejects")
    own = WakeVerifier(WakeSettings(words=[str(verified_path(models_dir, bundled_wake_words()["hey_jarvis"]))]),
                       models_dir)
    assert not own.check("hey_jarvis", 0.9, silence, [0.9, 0.8]).ok
    # The peak check still applies to such a word.
    strict = WakeVerifier(WakeSettings(words=["hey_jarvis"], verify_peak=0.95), models_dir)
    assert strict.check("hey_jarvis", 0.6, silence, [0.6, 0.5]) == Verdict(False, "weak_peak")


def test_a_sure_wake_in_rumbling_noise_is_kept(models_dir: Path) -> None:
    """A clear wake over a dishwasher's rumble (brown noise at 20 dB, running before the phrase too) is kept.

    The classifier once refused it (probability 0.03): it had heard white noise and chatter only, and
    digital silence before every wake phrase. It is now trained over brown and pink noise as well.
    """
    from voxkeep.testing.speech import silence, speak

    verifier = WakeVerifier(WakeSettings(words=["alexa"]), models_dir)
    rng = np.random.default_rng(3)
    speech = np.concatenate([silence(2.0), speak("alexa", voice="en+f4", speed=140), silence(1.0)])
    brown = np.cumsum(rng.normal(0, 1, len(speech)))
    brown -= np.convolve(brown, np.ones(400) / 400, mode="same")  # no DC drift, like a real microphone
    brown *= 0.1 * np.sqrt(np.mean(speech.astype(float) ** 2) / np.mean(brown ** 2))  # 20 dB SNR
    audio = np.clip(speech + brown, -32768, 32767).astype(np.int16)
    detector = WakeDetector(WakeSettings(words=["alexa"]), models_dir)
    scores: list[float] = []
    verdicts = []
    windows = []
    due = None
    for i in range(len(audio) // 1280):
        hits = detector.process(audio[i * 1280:(i + 1) * 1280])
        scores.append(detector.last_scores["alexa"])
        if hits and due is None:
            due = i + verifier.look_ahead("alexa")
        if i == due:
            end = (i + 1) * 1280
            windows.append(audio[end - 32000:end])
            verdicts.append(verifier.check("alexa", scores[due - verifier.look_ahead("alexa")], windows[-1],
                                          scores[-25:]))
    assert max(scores) >= 0.98
    assert verdicts == [Verdict(True, "confirmed")]
    # Kept by the classifier's own look, not by a bypass for sure wakes.
    classifier = verify_module.load_classifiers()["alexa"]
    assert classifier.probability(verifier.features(windows[0])) >= classifier.threshold


def _over_babble(text: str, voice: str, snr_db: float) -> np.ndarray:
    """``text`` after 2 s of three other people talking, who go on under it at ``snr_db`` (issue 13)."""
    from voxkeep.testing.speech import speak

    rng = np.random.default_rng(5)
    phrase = speak(text, voice=voice, speed=150).astype(np.float64)
    x = np.concatenate([np.zeros(32000), phrase, np.zeros(16000)])
    babble = np.zeros(len(x))
    for talker, line in zip(("en-gb", "en-us+f2", "en+m3"), BABBLE, strict=True):
        speech = speak(line, voice=talker, speed=160).astype(np.float64)
        speech = np.tile(speech, len(x) // len(speech) + 2)
        start = int(rng.integers(0, len(speech) - len(x)))
        babble += speech[start:start + len(x)]
    active = phrase[np.abs(phrase) > 0.05 * np.abs(phrase).max()]
    babble *= np.sqrt(np.mean(active ** 2) / 10 ** (snr_db / 10) / np.mean(babble ** 2))
    return np.clip(x + babble, -32768, 32767).astype(np.int16)


BABBLE = ("the weather in the hills was cold and wet all week", "she said the train leaves at seven from the "
          "north platform", "we bought bread, cheese and two bottles of milk on the way home")


@pytest.mark.parametrize(("text", "word", "voice"), [("hey jarvis", "hey_jarvis", "en"),
                                                     ("hey marvin", "hey_marvin", "en-us")])
def test_a_wake_while_other_people_talk_is_kept(models_dir: Path, text: str, word: str, voice: str) -> None:
    """Other people talking at 10 dB under a clear wake phrase: the default second look keeps the wake.

    The classifier trained on few such phrases refused nearly every wake over babble (REPORT: 2 of 23
    that bare openWakeWord heard); it is now trained with babble under every wake phrase too.
    """
    audio = _over_babble(text, voice, 10.0)
    default = WakeVerifier(WakeSettings(words=[word]), models_dir)
    detector = WakeDetector(WakeSettings(words=[word], verify=False), models_dir)
    scores: list[float] = []
    due = None
    verdicts = []
    for i in range(len(audio) // FRAME_SAMPLES):
        hits = detector.process(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
        scores.append(detector.last_scores[word])
        if hits and due is None:
            due = i + default.look_ahead(word)
        if i == due:
            end = (i + 1) * FRAME_SAMPLES
            verdicts.append(default.check(word, scores[i - default.look_ahead(word)], audio[end - 32000:end],
                                          scores[-SCORE_FRAMES:]))
    assert verdicts, f"bare openWakeWord should hear {text!r} over the babble, else the test proves nothing"
    assert verdicts == [Verdict(True, "confirmed")]


@pytest.mark.parametrize(("text", "word", "voice"), [("alexa", "alexa", "en-us"), ("hey jarvis", "hey_jarvis", "en"),
                                                     ("hey marvin", "hey_marvin", "en+f4")])
def test_default_confirms_wake_phrases_said_alone(speech, models_dir: Path, text: str, word: str,
                                                  voice: str) -> None:
    # A wake phrase on its own after silence, as a user says it and as the daemon-level tests do.
    default = WakeVerifier(WakeSettings(words=[word]), models_dir)
    results = [r for r in wakes(speech(text, voice=voice), models_dir, default, [word]) if r[0] == word]
    assert results, f"the bare detector should wake on {text!r}"
    assert any(v == Verdict(True, "confirmed") for _, _, v in results)


def test_default_classifier_rejects_a_near_miss_the_score_confirms(speech, models_dir: Path) -> None:
    default = WakeVerifier(WakeSettings(words=WORDS), models_dir)
    results = [r for r in wakes(speech("hey mike, roughly ten minutes"), models_dir, default) if r[0] == "hey_marvin"]
    assert results and all(v == Verdict(False, "classifier_rejects") for _, _, v in results)


def test_per_word_classifier_threshold_overrides_the_shipped_one(speech, models_dir: Path) -> None:
    audio, _ = soundfile.read(str(speech("hey jarvis", voice="en")), dtype="int16")
    settings = WakeSettings(words=WORDS, verify_classifier_thresholds={"hey_jarvis": 1.0})
    assert WakeVerifier(settings, models_dir).check("hey_jarvis", 0.9, audio, [0.9]) == Verdict(
        False, "classifier_rejects")


def test_a_wake_the_detector_stays_sure_of_skips_the_classifier(speech, models_dir: Path) -> None:
    """A score held at verify_sure (0.98) from the hit to the look is kept whatever the classifier says; one
    that touches it once, or a setting of 1.0, still goes to the classifier (here set to refuse everything)."""
    audio, _ = soundfile.read(str(speech("hey jarvis", voice="en")), dtype="int16")
    refuse = {"verify_classifier_thresholds": {"hey_jarvis": 1.0}}
    default = WakeVerifier(WakeSettings(words=WORDS, **refuse), models_dir)
    assert default.check("hey_jarvis", 0.99, audio, [0.2, 0.99, 0.999, 0.995]) == Verdict(True, "confirmed")
    assert default.check("hey_jarvis", 0.99, audio, [0.2, 0.99, 0.9, 0.999]) == Verdict(False, "classifier_rejects")
    never = WakeVerifier(WakeSettings(words=WORDS, verify_sure=1.0, **refuse), models_dir)
    assert never.check("hey_jarvis", 0.99, audio, [0.2, 0.99, 0.999, 0.995]) == Verdict(False, "classifier_rejects")


def test_shipped_classifiers_cover_the_bundled_words_and_say_where_they_come_from() -> None:
    classifiers = verify_module.load_classifiers()
    assert set(classifiers) == {"alexa", "hey_jarvis", "hey_mycroft", "hey_marvin"}
    assert all(0 < c.threshold < 1 and c.weights.shape == (16 * 96,) for c in classifiers.values())
    with np.load(verify_module.CLASSIFIERS_PATH) as data:
        assert "bench/train_verifier.py" in str(data["provenance"])
    assert verify_module.CLASSIFIERS_PATH.stat().st_size < 100_000


def test_score_that_falls_back_is_rejected(speech, verifier: WakeVerifier) -> None:
    audio, _ = soundfile.read(str(speech("hey jarvis")), dtype="int16")
    verdict = verifier.check("hey_jarvis", 0.55, audio, [0.1, 0.3, 0.55, 0.4, 0.2])
    assert verdict == Verdict(False, "weak_peak")


def test_per_word_peak_overrides_the_default(speech, models_dir: Path) -> None:
    lenient = WakeVerifier(WakeSettings(words=WORDS, verify_peak=0.95, verify_peaks={"hey_jarvis": 0.5}),
                           models_dir)
    audio, _ = soundfile.read(str(speech("hey jarvis")), dtype="int16")
    assert lenient.check("hey_jarvis", 0.55, audio[:-8000], [0.3, 0.55, 0.4]).reason != "weak_peak"


def test_default_keeps_a_falling_score_for_the_rescore_to_judge(speech, models_dir: Path) -> None:
    default = WakeVerifier(WakeSettings(words=WORDS), models_dir)
    audio, _ = soundfile.read(str(speech("hey jarvis")), dtype="int16")
    assert default.check("hey_jarvis", 0.55, audio[:-8000], [0.3, 0.55, 0.4]) == Verdict(True, "confirmed")


def test_verification_off_accepts_without_loading_models(tmp_path: Path) -> None:
    # An empty models dir fails any model load; with verify off nothing is loaded and every wake is kept.
    with pytest.raises(ModelError):
        WakeVerifier(WakeSettings(words=["hey_jarvis"]), tmp_path)
    off = WakeVerifier(WakeSettings(words=["hey_jarvis"], verify=False), tmp_path)
    assert off.look_ahead("hey_jarvis") == 0
    assert off.check("hey_jarvis", 0.51, np.zeros(100, dtype=np.int16), [0.51]) == Verdict(True, "verification_off")


def test_unconfigured_word_is_a_caller_bug(verifier: WakeVerifier) -> None:
    with pytest.raises(ValueError, match="alexa"):
        verifier.check("alexa", 0.9, np.zeros(32000, dtype=np.int16), [0.9])


@pytest.mark.parametrize(("key", "value"), [("verify_peak", 1.5), ("verify_rescore", -0.1),
                                            ("verify_frames_after", -1), ("verify_classifier_thresholds", 2.0)])
def test_bad_verifier_settings_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"wake.{key}"):
        load_settings(overrides={"wake": {key: value}})


def test_a_wake_with_nothing_to_judge_is_reported_without_waiting(speech, tmp_path: Path) -> None:
    """The default word has no classifier, so its wake is reported on the frame it fired (160 ms sooner):
    the same moment as with the second look off, also while alexa, which has one, listens beside it.
    Turning its classifier on brings the wait back."""
    from tests.helpers import events_of, of_type, run_cli

    wav = speech("hey jarvis", voice="en", pad=1.0)

    def wake_time(config: str) -> float:
        (tmp_path / "c.toml").write_text(config)
        proc = run_cli("run", "--input", str(wav), "--events", "-", "--state-dir", str(tmp_path / "state"),
                       "--config", str(tmp_path / "c.toml"))
        assert proc.returncode == 0, proc.stderr.decode()
        (wake,) = of_type(events_of(proc.stdout), "wake")
        return float(wake["t"])

    default = wake_time("[wake]\nwords = ['hey_jarvis']\n")
    assert default == wake_time("[wake]\nwords = ['hey_jarvis']\nverify = false\n")
    assert default == wake_time("[wake]\nwords = ['hey_jarvis', 'alexa']\n")
    judged = wake_time("[wake]\nwords = ['hey_jarvis']\nverify_sure = 1.0\n"
                       "verify_classifier_thresholds = { hey_jarvis = 0.0 }\n")
    assert judged == pytest.approx(default + 0.16, abs=1e-6)
