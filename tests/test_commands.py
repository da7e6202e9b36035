"""Privacy commands through the real pocketsphinx recogniser, on synthesized speech.

What a user notices: each command is obeyed, near-miss sentences are not, silence and noise do
nothing, and bad audio gives one clear error instead of a crash. bench/commands_eval.py has the
full recall/false-accept figures; these are the cases that must never regress.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import reverberant
from voxkeep import SAMPLE_RATE
from voxkeep.commands import PHRASES, AnswerRecognizer, CommandRecognizer
from voxkeep.config import CommandSettings
from voxkeep.errors import AudioInputError
from voxkeep.testing.speech import silence, speak

COMMAND_CASES = [("please don't record anymore", "stop_recording"),
                 ("stop recording", "stop_recording"), ("start recording again", "start_recording"),
                 ("delete what I just said", "delete_last"), ("delete everything I said today", "delete_today"),
                 ("stop sharing my recordings", "stop_sharing"), ("please stop sharing", "stop_sharing")]

CONFUSABLES = ["record my favourite show tonight", "I don't want any more coffee", "delete the last email",
               "what did I say today", "stop the music", "stop recording the football",
               "start the timer again", "the quick brown fox jumps over the lazy dog", "stop showing the pictures"]

STRICT = CommandSettings(min_score=-4.65, delete_min_score=-4.15, confirm_deletes=False)
"""The bar that rejects near-miss sentences (bench/commands_eval.py), for voices closer to a person."""


@pytest.fixture(scope="module")
def recognizer() -> CommandRecognizer:
    """One decoder for the whole module: the daemon also builds it once and reuses it."""
    return CommandRecognizer(CommandSettings())


def window_of(sentence: np.ndarray) -> np.ndarray:
    """A command window as the daemon hands it over: the tail of "hey jarvis", then the sentence."""
    wake = speak("hey jarvis")
    loud = np.nonzero(np.abs(wake) > 0.05 * np.abs(wake).max())[0]
    tail = wake[loud[-1] - SAMPLE_RATE // 4:loud[-1] + 1]
    return np.concatenate([tail, sentence.astype(np.int16)])


def window(path: Path) -> np.ndarray:
    """``window_of`` a synthesized sentence file."""
    data, _ = soundfile.read(str(path), dtype="int16")
    return window_of(np.asarray(data, dtype=np.int16))


@pytest.mark.parametrize(("text", "command"), COMMAND_CASES)
def test_each_command_is_recognised(recognizer: CommandRecognizer, speech, text: str, command: str) -> None:
    pcm = window(speech(text))
    got = recognizer.recognize(pcm)
    assert got is not None, f"{text!r} was not recognised"
    assert got.command == command
    assert got.phrase in PHRASES[command]
    assert 0 <= got.start < got.end <= len(pcm) / SAMPLE_RATE


def _in_quiet_room(pcm: np.ndarray, rms: float = 12.0, seed: int = 2) -> np.ndarray:
    """``pcm`` over a room's self-noise (``rms`` 12: about -69 dBFS, a quiet room): a microphone never sends zeros."""
    return np.clip(pcm + np.random.default_rng(seed).normal(0.0, rms, len(pcm)), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("voice", ["en-gb", "en+f3"])
def test_other_voices_are_recognised(recognizer: CommandRecognizer, speech, voice: str) -> None:
    """Over a quiet room's tone, as a microphone hears them: ``window`` alone joins the wake tail to the file's
    exact digital silence, which the decoder now hears as a gating microphone's (see the next test)."""
    got = recognizer.recognize(_in_quiet_room(window(speech("please don't record anymore", voice=voice))))
    assert got is not None and got.command == "stop_recording"


def _gated(samples: np.ndarray, gate_dbfs: float = -60.0) -> np.ndarray:
    """``samples`` as a gating microphone sends them: every 10 ms quieter than ``gate_dbfs`` becomes exact zeros."""
    x = samples.astype(np.float64)
    blocks = x[:len(x) // 160 * 160].reshape(-1, 160)
    blocks[np.sqrt(np.mean(blocks ** 2, axis=1)) < 10 ** (gate_dbfs / 20) * 32768] = 0.0
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize(("text", "command"), COMMAND_CASES)
def test_commands_are_understood_from_a_gating_microphone(recognizer: CommandRecognizer, text: str,
                                                          command: str) -> None:
    """Some microphones send exact zeros below a gate, in the pauses between words too. Decoded as they came,
    four of these seven were refused in this voice (the acoustic model never heard a zero frame); the decoder
    now hears a quiet room's tone in the gated runs."""
    quiet = np.concatenate([silence(0.3), window_of(speak(text, voice="en-gb-x-rp")), silence(0.5)])
    pcm = _gated(quiet + np.random.default_rng(2).normal(0.0, 12.0, len(quiet)))
    assert np.count_nonzero(pcm == 0) > len(pcm) // 5  # the pauses really are digital silence
    got = recognizer.recognize(pcm)
    assert got is not None and got.command == command, f"{text!r} through a gate -> {got}"


def _said_over_room_tone(text: str, voice: str, engine: str = "espeak-ng") -> np.ndarray:
    """A command window of ``text`` (wake tail, sentence, 0.5 s after it) over a room's tone of about -64 dBFS."""
    return _in_quiet_room(np.concatenate([window_of(speak(text, voice=voice, engine=engine)), silence(0.5)]), 20.0, 1)


@pytest.mark.parametrize(("voice", "engine"), [("en-us", "espeak-ng"), ("slt", "flite")])
@pytest.mark.parametrize(("text", "command"), [
    ("please delete what I just said", "delete_last"), ("delete what I just said please", "delete_last"),
    ("please delete everything I said today", "delete_today"),
    ("delete everything I said today please", "delete_today"),
    ("please start recording again", "start_recording"), ("start recording again please", "start_recording")])
def test_please_before_or_after_any_command_is_understood(recognizer: CommandRecognizer, voice: str, engine: str,
                                                          text: str, command: str) -> None:
    """People say "please". Only the stop commands allowed it once: "please delete what I just said" found
    no grammar path in any of 6 voices, "please start recording again" was heard as stop_recording, and a
    "please" after a deletion was taken for a sentence going on past the command."""
    got = recognizer.recognize(_said_over_room_tone(text, voice, engine))
    assert got is not None and got.command == command, f"{text!r} ({voice}) -> {got}"


@pytest.mark.parametrize("voice", ["en-gb", "en-gb+f4", "en-gb-x-gbclan", "en-us"])
def test_start_recording_again_please_in_an_echoing_room_is_not_heard_as_stop(recognizer: CommandRecognizer,
                                                                              voice: str) -> None:
    """"start recording again please" used to be searched with its "please" only after the first search refused it;
    in a reverberant room the first search found "stop recording please" closest, and the speaker obeyed the
    opposite command (or nothing). Three of these four voices failed so."""
    got = recognizer.recognize(reverberant(_said_over_room_tone("start recording again please", voice), 0.6))
    assert got is not None and got.command == "start_recording", f"{voice} -> {got}"


@pytest.mark.parametrize("text", CONFUSABLES)
def test_confusable_sentences_are_rejected(recognizer: CommandRecognizer, speech, text: str) -> None:
    assert recognizer.recognize(window(speech(text))) is None


def test_stricter_threshold_rejects_a_real_command(recognizer: CommandRecognizer, speech) -> None:
    """min_score is what decides: a command that passes the default fails a bar above a perfect fit (0)."""
    pcm = window(speech("stop recording"))
    assert recognizer.recognize(pcm) is not None
    assert CommandRecognizer(CommandSettings(min_score=0.01)).recognize(pcm) is None


def test_a_one_shot_deletion_needs_the_stricter_bar(speech) -> None:
    """Deletions not asked back are held to delete_min_score, and only they: stop is obeyed, delete is not."""
    split = CommandRecognizer(CommandSettings(min_score=-100.0, delete_min_score=0.01, confirm_deletes=False))
    got = split.recognize(window(speech("stop recording")))
    assert got is not None and got.command == "stop_recording"
    assert split.score(window(speech("delete what I just said"))) is not None
    assert split.recognize(window(speech("delete what I just said"))) is None


def test_a_deletion_asked_back_needs_the_common_bar_and_its_yes_the_stricter(speech) -> None:
    """Asked back (the default), the owner's "yes" is a deletion's second check: the deletion is heard at
    min_score, and it is the "yes" that must clear delete_min_score."""
    asked = CommandSettings(min_score=-100.0, delete_min_score=0.01)
    got = CommandRecognizer(asked).recognize(window(speech("delete what I just said")))
    assert got is not None and got.command == "delete_last"
    yes = np.concatenate([silence(0.4), speak("yes"), silence(0.4)])
    heard = AnswerRecognizer(CommandSettings()).recognize(yes)
    assert heard is not None and heard.command == "yes"
    assert AnswerRecognizer(asked).recognize(yes) is None


@pytest.fixture(scope="module")
def jarvis_then_command() -> tuple[np.ndarray, int, np.ndarray]:
    """"hey jarvis", where its last loud sample is, and "please do not record anymore", in a voice whose window
    starts used to matter (espeak-ng en-gb-x-gbcwmd+f5)."""
    voice = "en-gb-x-gbcwmd+f5"
    wake = speak("hey jarvis", voice=voice)
    end = int(np.nonzero(np.abs(wake) > 0.05 * np.abs(wake).max())[0][-1])
    return wake, end, speak("please do not record anymore", voice=voice)


@pytest.mark.parametrize("start_ms", range(120, 520, 40))
def test_a_command_is_heard_wherever_inside_the_wake_word_its_window_starts(
        recognizer: CommandRecognizer, jarvis_then_command: tuple[np.ndarray, int, np.ndarray], start_ms: int) -> None:
    """The window starts inside the wake word, wherever the wake model fired. Started 0.28-0.36 s before the end of
    "jarvis", no grammar path survived the first frames in this voice, so the command after it was lost."""
    wake, end, command = jarvis_then_command
    pcm = np.concatenate([wake[end - start_ms * SAMPLE_RATE // 1000:end + 1], silence(0.05), command, silence(0.4)])
    tone = np.round(np.random.default_rng(1).normal(0, 16, pcm.size)).astype(np.int16)  # a quiet room, not zeros
    got = recognizer.recognize((pcm.astype(np.int32) + tone).clip(-32768, 32767).astype(np.int16))
    assert got is not None and got.command == "stop_recording"


def flite_window(text: str, voice: str = "slt") -> np.ndarray:
    """A command window in a flite voice, which fits the acoustic model more like a person does."""
    wake = speak("hey jarvis", voice=voice, engine="flite")
    loud = np.nonzero(np.abs(wake) > 0.05 * np.abs(wake).max())[0]
    tail = wake[loud[-1] - SAMPLE_RATE // 4:loud[-1] + 1]
    return np.concatenate([tail, silence(0.1), speak(text, voice=voice, engine="flite"), silence(0.4)])


@pytest.fixture(scope="module")
def strict() -> CommandRecognizer:
    return CommandRecognizer(STRICT)


@pytest.mark.parametrize(("text", "command"), [("don't record anymore", "stop_recording"),
                                               ("delete what I just said", "delete_last"),
                                               ("stop sharing", "stop_sharing")])
def test_strict_bar_still_obeys_commands(strict: CommandRecognizer, text: str, command: str) -> None:
    got = strict.recognize(flite_window(text))
    assert got is not None and got.command == command


@pytest.mark.parametrize(("text", "voice"), [("I don't remember anymore", "awb"),
                                           ("delete what you just wrote", "slt"),
                                           ("do not play that song anymore", "kal")])
def test_strict_bar_rejects_one_word_near_misses(strict: CommandRecognizer, text: str, voice: str) -> None:
    """Each was obeyed in this voice under the old whole-sentence score; the worst-word term rejects it."""
    assert strict.recognize(flite_window(text, voice)) is None


def test_silence_and_noise_are_not_commands(recognizer: CommandRecognizer) -> None:
    rng = np.random.default_rng(7)
    assert recognizer.recognize(np.zeros(3 * SAMPLE_RATE, dtype=np.int16)) is None
    noise = (rng.standard_normal(3 * SAMPLE_RATE) * 2000).astype(np.int16)
    assert recognizer.recognize(noise) is None
    hum = (3000 * np.sin(2 * np.pi * 120 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.int16)
    assert recognizer.recognize(hum) is None


def test_empty_and_tiny_windows_are_not_commands(recognizer: CommandRecognizer) -> None:
    assert recognizer.recognize(np.zeros(0, dtype=np.int16)) is None
    assert recognizer.recognize(np.array([32767, -32768, 5], dtype=np.int16)) is None


def test_single_channel_column_is_accepted(recognizer: CommandRecognizer, speech) -> None:
    pcm = window(speech("stop recording"))
    got = recognizer.recognize(pcm.reshape(-1, 1))
    assert got is not None and got.command == "stop_recording"


@pytest.mark.parametrize(("pcm", "words"), [
    (np.zeros((SAMPLE_RATE, 2), dtype=np.int16), "mono"),
    (np.zeros(SAMPLE_RATE, dtype=np.float32), "int16"),
    (np.zeros((2, 2, 2), dtype=np.int16), "mono"),
])
def test_wrong_audio_format_is_one_clear_error(recognizer: CommandRecognizer, pcm: np.ndarray, words: str) -> None:
    with pytest.raises(AudioInputError, match=words) as info:
        recognizer.recognize(pcm)
    assert "16 kHz mono int16" in str(info.value)


def test_audio_past_the_window_is_ignored(recognizer: CommandRecognizer, speech) -> None:
    """A command spoken after max_seconds (+1 s of wake tail) is outside the window and not obeyed."""
    late = np.concatenate([np.zeros(6 * SAMPLE_RATE, dtype=np.int16), window(speech("stop recording"))])
    assert recognizer.recognize(late) is None


def test_reusable_and_independent_of_history(recognizer: CommandRecognizer, speech) -> None:
    """Many calls, in any order and from several threads, give the same answer for the same audio."""
    command = window(speech("delete what I just said"))
    other = window(speech("stop the music"))
    first = recognizer.score(command)
    results: list[tuple[str, object]] = []

    def work() -> None:
        for name, pcm in (("other", other), ("command", command), ("other", other), ("command", command)):
            results.append((name, recognizer.score(pcm)))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first is not None and first.command == "delete_last"
    assert [r for name, r in results if name == "command"] == [first] * 6


@pytest.fixture(scope="module")
def open_vocabulary() -> CommandRecognizer:
    """The recogniser with the open-vocabulary check on (commands.filler_words)."""
    return CommandRecognizer(CommandSettings(filler_words=1000))


@pytest.mark.parametrize(("text", "command"), [("delete what I just said", "delete_last"),
                                               ("stop recording", "stop_recording"),
                                               ("don't record anymore", "stop_recording")])
def test_open_vocabulary_still_obeys_commands(open_vocabulary: CommandRecognizer, text: str, command: str) -> None:
    got = open_vocabulary.recognize(flite_window(text))
    assert got is not None and got.command == command


@pytest.mark.parametrize("text", ["delete what I just sent", "stop snoring", "I don't like it anymore"])
def test_open_vocabulary_rejects_near_misses_the_score_cannot(recognizer: CommandRecognizer,
                                                              open_vocabulary: CommandRecognizer,
                                                              text: str) -> None:
    """"delete what I just sent" fits the command acoustically better than many true commands do;
    only a search free to hear "sent" rejects it: the default recogniser obeys each of these."""
    pcm = flite_window(text)
    assert recognizer.recognize(pcm) is not None
    assert open_vocabulary.recognize(pcm) is None


# -- through the daemon ----------------------------------------------------------------------------

def _in_noise(clean: np.ndarray, snr_db: float, seed: int = 1, colour: str = "brown") -> np.ndarray:
    """``clean`` in steady noise at ``snr_db`` against its voiced part: brown is a dishwasher's rumble,
    pink a fan or traffic (it covers the whole speech band)."""
    from voxkeep.simulate import make_noise

    x = clean.astype(np.float64)
    voiced = x[np.abs(x) > 0.05 * np.abs(x).max()]
    noise = make_noise(colour, len(x), np.random.default_rng(seed), Path()) * np.sqrt(
        np.mean(voiced ** 2) / 10 ** (snr_db / 10))
    return np.clip(x + noise, -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-rp", "en-us+f3", "en+m3", "en-029", "en-gb+f4"])
@pytest.mark.parametrize(("text", "command"), COMMAND_CASES)
def test_commands_are_understood_with_a_fan_running(recognizer: CommandRecognizer, voice: str, text: str,
                                                    command: str) -> None:
    """Pink noise at 10 dB SNR (a fan, traffic) hid consonants from the acoustic model; the window is
    now denoised first, and a quiet room's windows are left as they are."""
    quiet = np.concatenate([silence(0.5), window_of(speak(text, voice=voice)), silence(0.5)])
    got = recognizer.recognize(_in_noise(quiet, 10.0, seed=7, colour="pink"))
    assert got is not None and got.command == command, f"{text!r} ({voice}) in pink noise -> {got}"


@pytest.mark.parametrize("voice", ["rms", "slt", "awb", "kal16"])
@pytest.mark.parametrize(("text", "command"), COMMAND_CASES)
def test_commands_are_understood_in_flite_voices(recognizer: CommandRecognizer, voice: str, text: str,
                                                 command: str) -> None:
    """flite's rms voice lets "recording" fade out slowly; the phone loop heard that fading tail as a
    word after the command and "stop recording" was refused. Only speech at a talker's level counts now."""
    got = recognizer.recognize(_in_quiet_room(np.concatenate([window_of(speak(text, voice=voice, engine="flite")),
                                                              silence(0.5)])))
    assert got is not None and got.command == command, f"{text!r} ({voice}) -> {got}"


def _far(sentence: np.ndarray) -> np.ndarray:
    """``sentence`` from across a larger room: reverberant (RT60 0.6 s), its voice at -46 dBFS (20 dB under a
    talker near the speaker) over a quiet room's pink tone at -66 dBFS. Such windows measure 24-28 dB from
    floor to peak, as noise at 20 dB SNR does."""
    from voxkeep.simulate import make_noise

    wet = reverberant(np.concatenate([silence(0.5), sentence, silence(0.5)]), 0.6).astype(np.float64)
    voiced = wet[np.abs(wet) > 0.05 * np.abs(wet).max()]
    wet *= 32768 * 10 ** (-46 / 20) / np.sqrt(np.mean(voiced ** 2))
    room = make_noise("pink", len(wet), np.random.default_rng(6), Path()) * 32768 * 10 ** (-66 / 20)
    return np.clip(np.round(wet + room), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize(("voice", "engine", "text", "command"), [
    ("en-us+f3", "espeak-ng", "please don't record anymore", "stop_recording"),
    ("en-gb", "espeak-ng", "please stop sharing", "stop_sharing"),
    ("en-us", "espeak-ng", "delete everything I said today", "delete_today"),
    ("slt", "flite", "please don't record anymore", "stop_recording"),
    ("rms", "flite", "please don't record anymore", "stop_recording"),
    ("awb", "flite", "please don't record anymore", "stop_recording"),
    ("awb", "flite", "stop recording", "stop_recording")])
def test_a_command_from_across_the_room_is_understood(recognizer: CommandRecognizer, voice: str, engine: str,
                                                      text: str, command: str) -> None:
    """A talker far off was judged as the audio came in, because only a window in noise (under 20 dB from floor to
    peak) was denoised, and the decoder lost the words in the room's reverberant tail. A refused window between
    20 and 30 dB is now judged again, denoised: five of these seven were refused before (35 of 42 commands
    in six voices are now understood in this room, against 30). (The first was refused at random in CI while
    espeak-ng's breath noise changed from run to run: voxkeep.testing.speech.NO_SOUND_SERVER.)"""
    got = recognizer.recognize(_far(window_of(speak(text, voice=voice, engine=engine))))
    assert got is not None and got.command == command, f"{text!r} ({voice}) from across the room -> {got}"


@pytest.fixture(scope="module")
def television() -> np.ndarray:
    """A newsreader who keeps talking (espeak-ng en-gb): a television in the room."""
    return speak("good evening and welcome to the news at ten. tonight the government has announced new plans for "
                 "the railways, and the weather will be cloudy tomorrow with some rain in the afternoon",
                 voice="en-gb", speed=175).astype(np.float64)


def _over(sentence: np.ndarray, background: np.ndarray, below_db: float) -> np.ndarray:
    """``sentence`` with ``background`` ``below_db`` under it (active parts), running on 2 s after it ends."""
    def active_rms(x: np.ndarray) -> float:
        return float(np.sqrt(np.mean(x[np.abs(x) > 0.05 * np.abs(x).max()] ** 2)))

    x = np.concatenate([sentence.astype(np.float64), np.zeros(2 * SAMPLE_RATE)])
    bg = background[SAMPLE_RATE // 2:SAMPLE_RATE // 2 + len(x)]
    x += bg * active_rms(x) / active_rms(bg) / 10 ** (below_db / 20)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize(("voice", "text", "command"), [
    ("en-us", "please don't record anymore", "stop_recording"), ("en-us+f3", "stop recording", "stop_recording"),
    ("en-us+f3", "stop sharing my recordings", "stop_sharing"), ("en-us+f3", "please stop sharing", "stop_sharing")])
def test_a_command_is_understood_with_the_television_on(recognizer: CommandRecognizer, television: np.ndarray,
                                                        voice: str, text: str, command: str) -> None:
    """The television 20 dB under the owner talks on after the command. Words after a command make it a longer
    sentence ("stop recording the football"), and its words were counted as the owner's, so these were refused;
    only words near the command's own level count now."""
    pcm = _over(np.concatenate([window_of(speak(text, voice=voice)), silence(0.3)]), television, 20.0)
    got = recognizer.recognize(pcm)
    assert got is not None and got.command == command, f"{text!r} ({voice}) with the television on -> {got}"


@pytest.mark.parametrize("voice", ["en-us", "en-us+f3"])
def test_the_owners_own_longer_sentence_is_still_refused_with_the_television_on(
        recognizer: CommandRecognizer, television: np.ndarray, voice: str) -> None:
    pcm = _over(np.concatenate([window_of(speak("stop recording the football", voice=voice)), silence(0.3)]),
                television, 20.0)
    assert recognizer.recognize(pcm) is None


@pytest.mark.parametrize(("phrase", "talk_runs_on", "obeyed"), [
    ("stop recording", True, True), ("stop recording", False, False),
    ("delete what i just said", True, False), ("delete what i just said", False, False)])
def test_only_a_command_that_fails_safe_is_obeyed_while_others_talk_on(
        recognizer: CommandRecognizer, phrase: str, talk_runs_on: bool, obeyed: bool) -> None:
    """The decision, on a decoded path: the command, then 1.5 s the grammar calls silence in which the phone loop
    hears words at the owner's level. Whose words cannot be told, so it stays a longer sentence ("stop recording
    the football"), unless the talk runs on to the window's end (people talking, a radio): then refusing "stop
    recording" would keep the microphone recording, and it is obeyed. A deletion never is. (With real babble,
    bench/commands_eval.py: docs/commands.md, tenth round.)"""
    words = [(w, 10 + 30 * i, 39 + 30 * i, -150.0) for i, w in enumerate(phrase.split())]
    end = words[-1][2]
    grammar = [("<s>", 0, 0, 0.0), ("<sil>", 1, 9, -5.0), *words, ("<sil>", end + 1, end + 150, -50.0)]
    phones = [("SIL", 0, 9, 0.0), *((f"AH{i}", 10 + 10 * i, 19 + 10 * i, 0.0) for i in range(end // 10 + 15))]
    talk = np.where(np.arange(150) % 20 < 15, 66.0, 36.0)  # words at the owner's level, short gaps between
    if not talk_runs_on:
        talk[80:] = 30.0  # the sentence ended: the room is quiet to the window's end
    levels = np.concatenate([np.full(10, 30.0), np.full(end - 9, 70.0), talk])
    found = recognizer._compare(grammar, lambda: phones, levels)
    assert (found is not None) == obeyed


def _daemon_events(tmp_path: Path, audio: np.ndarray, *words: str, config: str = "") -> list[dict]:
    """Run ``voxkeep run`` on ``audio`` with an owner key registered (and ``config``); its JSON events."""
    from tests.helpers import events_of, run_cli
    from voxkeep.owner import generate_identity
    from voxkeep.testing.speech import write_wav

    tmp_path.mkdir(exist_ok=True)
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    _, recipient = generate_identity()
    assert run_cli("owner", "add", recipient, "--state-dir", str(state)).returncode == 0
    wav = write_wav(tmp_path / "scene.wav", audio)
    args = [a for w in words or ("alexa",) for a in ("-w", w)]
    if config:
        (tmp_path / "config.toml").write_text(config)
        args += ["--config", str(tmp_path / "config.toml")]
    proc = run_cli("run", "--input", str(wav), "--events", "-", "--state-dir", str(state), *args)
    assert proc.returncode == 0, proc.stderr.decode()
    return events_of(proc.stdout)


def _flite(text: str, voice: str = "slt") -> np.ndarray:
    """``text`` in a flite voice without the quiet flite puts around it, so pauses are what the test says."""
    pcm = speak(text, voice=voice, engine="flite")
    loud = np.nonzero(np.abs(pcm) > 0.02 * np.abs(pcm).max())[0]
    return pcm[loud[0]:loud[-1] + 1]


@pytest.mark.parametrize("snr_db", [5.0, 10.0])
@pytest.mark.scene
def test_back_to_back_requests_in_steady_noise_are_each_handled(tmp_path: Path, snr_db: float) -> None:
    """Requests 3-4 s apart, each begun before the last one's window could close: every wake word is
    heard, each request is stored whole and on its own, and the last one's command is obeyed. With the
    default second look: its classifier refused the second and third "alexa", whose 2 s window holds the
    previous request, until a wake the detector stays sure of (wake.verify_sure) skipped it."""
    requests = ["what will the weather be like tomorrow", "turn on the kitchen lights", "stop recording"]
    parts: list[np.ndarray] = [silence(2.0)]
    ends: list[float] = []
    for text in requests:
        parts += [_flite("alexa"), silence(0.25), _flite(text)]
        ends.append(sum(map(len, parts)) / SAMPLE_RATE)
        parts.append(silence(0.4))
    parts.append(silence(2.5))
    events = _daemon_events(tmp_path, _in_noise(np.concatenate(parts), snr_db))
    kinds = [e["type"] for e in events if e["type"] in ("wake", "recorded", "command")]
    assert kinds == ["wake", "recorded", "wake", "recorded", "wake", "command"], kinds
    assert [e["command"] for e in events if e["type"] == "command"] == ["stop_recording"]
    wakes = [e["t"] for e in events if e["type"] == "wake"]
    recorded = [e["t"] for e in events if e["type"] == "recorded"]
    for end, stored, next_wake in zip(ends, recorded, wakes[1:], strict=False):
        assert end - 0.1 <= stored < next_wake - 0.5, (end, stored, next_wake)  # whole, and only its own


@pytest.mark.scene
def test_back_to_back_privacy_commands_are_both_obeyed(tmp_path: Path) -> None:
    """"alexa, stop sharing" then at once "alexa, stop recording" (2 s apart): both obeyed, in order. The
    second was lost while the refractory period ran from the second look, 160 ms after the first hit."""
    clean = np.concatenate([silence(2.0), _flite("alexa"), silence(0.25), _flite("stop sharing"), silence(0.4),
                            _flite("alexa"), silence(0.25), _flite("please don't record anymore"), silence(2.0)])
    events = _daemon_events(tmp_path, _in_noise(clean, 10.0))
    assert [e["type"] for e in events if e["type"] == "wake"] == ["wake", "wake"]
    assert [e["command"] for e in events if e["type"] == "command"] == ["stop_sharing", "stop_recording"]


@pytest.mark.scene
def test_a_slow_command_with_a_fan_running_is_not_cut_short(tmp_path: Path) -> None:
    """At 10 dB SNR in pink noise a slow talker's soft syllables fall under the speech threshold; the
    window used to end after 0.7 s of them, mid-sentence, and no command fitted what was left."""
    audio = np.concatenate([silence(2.5), speak("hey jarvis, please don't record anymore", speed=100), silence(2.0)])
    events = _daemon_events(tmp_path, _in_noise(audio, 10.0, seed=5, colour="pink"), "hey_jarvis")
    assert [e["type"] for e in events if e["type"] in ("wake", "command")] == ["wake", "command"]
    assert [e["command"] for e in events if e["type"] == "command"] == ["stop_recording"]


@pytest.mark.scene
def test_one_wake_phrase_opens_one_window_even_when_two_models_fire(tmp_path: Path) -> None:
    """"hey jarvis" also scores on hey_marvin's model a few frames later: still one wake, one command."""
    clean = np.concatenate([silence(1.5), speak("hey jarvis"), silence(0.2), speak("stop recording"),
                            silence(2.0)])
    events = _daemon_events(tmp_path, clean, "hey_jarvis", "hey_marvin")
    assert len([e for e in events if e["type"] == "wake"]) == 1
    assert [e["command"] for e in events if e["type"] == "command"] == ["stop_recording"]


@pytest.mark.parametrize(("voice", "text"), [("en-gb+f4", "don't record anymore"),
                                             ("en-gb-x-rp+f1", "don't record anymore")])
@pytest.mark.scene
def test_a_command_said_straight_after_alexa_is_obeyed(tmp_path: Path, voice: str, text: str) -> None:
    """Issue 13's report (espeak-ng's own speed): "Alexa, don't record anymore." in one breath gave a
    wake and no command, because the window began after the second look, 0.3-0.5 s past the wake word,
    inside "don't"; what was left fitted no command (scores -8.0 and -8.5, or none at all)."""
    clean = np.concatenate([silence(1.0), speak(f"Alexa, {text}.", voice=voice, speed=175), silence(2.0)])
    events = _daemon_events(tmp_path, clean)
    assert [e["type"] for e in events if e["type"] == "wake"] == ["wake"]
    assert [e["command"] for e in events if e["type"] == "command"] == ["stop_recording"]


@pytest.mark.parametrize(("voice", "text"), [("en-us", "please don't record anymore"), ("en-gb", "stop recording")])
def test_quiet_after_a_command_does_not_change_its_fate(recognizer: CommandRecognizer, voice: str,
                                                        text: str) -> None:
    """How long the window runs on after the command (the endpointer's doing, so the room heard before
    the wake word) must not matter: pocketsphinx normalised over the whole window, and 3 s of a quiet
    room after "please don't record anymore" turned an obeyed command into a rejected one."""
    from voxkeep.simulate import make_noise

    wake = speak("hey jarvis", voice=voice)
    loud = np.nonzero(np.abs(wake) > 0.05 * np.abs(wake).max())[0]
    command = np.concatenate([wake[loud[-1] - SAMPLE_RATE // 4:loud[-1] + 1], silence(0.1), speak(text, voice=voice)])
    results = []
    for quiet in (0.4, 1.5, 3.0):
        x = np.concatenate([command, silence(quiet)]).astype(np.float64)
        room = make_noise("pink", len(x), np.random.default_rng(3), Path()) * 32768 * 10 ** (-70 / 20)
        got = recognizer.score(np.clip(x + room, -32768, 32767).astype(np.int16))
        assert got is not None, f"rejected with {quiet} s of quiet after it"
        results.append(got)
    assert {r.command for r in results} == {"stop_recording"}
    assert max(r.score for r in results) - min(r.score for r in results) < 0.2, [r.score for r in results]


@pytest.mark.scene
def test_a_command_after_12_s_of_room_background_fares_as_one_alone(tmp_path: Path) -> None:
    """The same request, alone and after 12 s of a quiet room: the same command, the same wake."""
    from voxkeep.simulate import make_noise

    clip = np.concatenate([speak("hey jarvis"), silence(0.2), speak("please don't record anymore"), silence(1.5)])
    outcomes = []
    for lead in (0.0, 12.0):
        x = np.concatenate([silence(lead), clip]).astype(np.float64)
        room = make_noise("pink", len(x), np.random.default_rng(5), Path()) * 32768 * 10 ** (-62 / 20)
        room *= 10 ** (6 * np.sin(2 * np.pi * 0.3 * np.arange(len(x)) / SAMPLE_RATE) / 20)  # a room breathes
        events = _daemon_events(tmp_path / f"lead{lead:.0f}", np.clip(x + room, -32768, 32767).astype(np.int16),
                                "hey_jarvis")
        outcomes.append([(e["type"], e.get("command")) for e in events if e["type"] in ("wake", "command")])
    assert outcomes[0] == outcomes[1] == [("wake", None), ("command", "stop_recording")]


def test_the_delete_only_check_guards_deletions_and_leaves_other_commands_alone(recognizer: CommandRecognizer) -> None:
    """commands.delete_filler_words: the open search judges only what would delete; "delete everything
    I saved today" deletes by default (it fits the command as well as the command does), not with it."""
    guarded = CommandRecognizer(CommandSettings(delete_filler_words=1000))
    near_miss = flite_window("delete everything I saved today", "awb")
    plain = recognizer.recognize(near_miss)
    assert plain is not None and plain.command == "delete_today"
    assert guarded.recognize(near_miss) is None
    got = guarded.recognize(flite_window("delete what I just said"))
    assert got is not None and got.command == "delete_last"
    got = guarded.recognize(flite_window("don't record anymore"))
    assert got is not None and got.command == "stop_recording"


@pytest.mark.parametrize(("voice", "engine", "text"), [("en-us", "espeak-ng", "stop recording"),
                                                       ("en-gb", "espeak-ng", "please don't record anymore"),
                                                       ("slt", "flite", "stop recording")])
@pytest.mark.scene
def test_a_command_after_waiting_for_the_led_is_obeyed_in_a_reverberant_room(tmp_path: Path, voice: str,
                                                                              engine: str, text: str) -> None:
    """"Alexa", 2.5 s of waiting, then the command, in a room with RT60 0.6 s. The end of "alexa" (the wake
    model fires before it ends) and its echo were taken for the request beginning; 0.7 s of quiet then closed
    the window before the owner spoke. The espeak-ng cases got a wake and no command."""
    audio = np.concatenate([silence(1.0), speak("alexa", voice=voice, engine=engine), silence(2.5),
                            speak(text, voice=voice, engine=engine), silence(2.0)])
    wet = reverberant(audio, 0.6).astype(np.float64)
    room = np.random.default_rng(3).normal(0.0, 12.0, len(wet))  # a quiet room, never exact zeros
    events = _daemon_events(tmp_path, np.clip(wet + room, -32768, 32767).astype(np.int16))
    heard = [(e["type"], e.get("command")) for e in events if e["type"] in ("wake", "command")]
    assert heard == [("wake", None), ("command", "stop_recording")], heard
