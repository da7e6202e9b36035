"""The lean wake engine against openWakeWord itself (same audio in, same scores out, gate or no gate), and
microWakeWord beside it: engine selection, agreement, custom and damaged models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import events_of, one_error_line, reverberant, run_cli
from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.config import WakeSettings
from voxkeep.engine import EnergyGate, WakeEngine
from voxkeep.errors import ModelError
from voxkeep.microwake import MicroEngine, load_description
from voxkeep.testing.speech import speak, write_wav
from voxkeep.wake import WakeDetector, second_look

WORDS = ("alexa_v0.1.onnx", "hey_jarvis_v0.1.onnx", "hey_mycroft_v0.1.onnx", "weather_v0.1.onnx")
SEED = 1234
TOLERANCE = 1e-4


def _wav(path: Path) -> np.ndarray:
    data, _ = soundfile.read(str(path), dtype="int16")
    return data


def _room(seconds: float, rms: float, rng: np.random.Generator) -> np.ndarray:
    """Room noise: low-passed (brownish) noise at ``rms`` int16 units."""
    white = rng.normal(0.0, 1.0, int(seconds * SAMPLE_RATE))
    brown = np.convolve(white, np.ones(16) / 16, mode="same")
    return (brown * rms / brown.std()).astype(np.int16)


@pytest.fixture(scope="module")
def audio(speech) -> np.ndarray:
    """Wake phrases, ordinary speech, digital silence, quiet room noise and a loud clatter."""
    rng = np.random.default_rng(5)
    quiet = _room(2.5, 40, rng)
    parts = [
        _wav(speech("hey jarvis")), quiet, np.zeros(3 * SAMPLE_RATE, np.int16),
        _wav(speech("hey my croft")), _room(5.0, 60, rng),
        (_wav(speech("hey jarvis, turn on the lights", voice="en-gb", speed=130)) * 0.3).astype(np.int16),
        _room(3.5, 30, rng), _wav(speech("what is the weather like tomorrow")),
        _room(1.0, 40, rng), _room(0.15, 8000, rng), _room(3.0, 40, rng),
    ]
    data = np.concatenate(parts)
    return data[: len(data) // FRAME_SAMPLES * FRAME_SAMPLES]


def _frames(audio: np.ndarray):
    return audio.reshape(-1, FRAME_SAMPLES)


@pytest.fixture(scope="module")
def reference(models_dir: Path, audio: np.ndarray) -> np.ndarray:
    """openWakeWord 0.6's own scores for every frame, one column per model (the yardstick)."""
    from openwakeword.model import Model

    np.random.seed(SEED)  # openWakeWord seeds its feature history from the global generator
    model = Model(wakeword_models=[str(models_dir / w) for w in WORDS], inference_framework="onnx",
                  melspec_model_path=str(models_dir / "melspectrogram.onnx"),
                  embedding_model_path=str(models_dir / "embedding_model.onnx"))
    keys = [Path(w).stem for w in WORDS]
    rows = (model.predict(f) for f in _frames(audio))
    return np.array([[row[k] for k in keys] for row in rows])


def _openwakeword_noise() -> np.ndarray:
    np.random.seed(SEED)
    return np.random.randint(-1000, 1000, 16000 * 4).astype(np.int16)


def _engine(models_dir: Path, gate: EnergyGate | None) -> WakeEngine:
    return WakeEngine(models_dir / "melspectrogram.onnx", models_dir / "embedding_model.onnx",
                      [models_dir / w for w in WORDS], gate=gate, warmup=_openwakeword_noise())


def _run(engine: WakeEngine, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, open_ = [], []
    for frame in _frames(audio):
        scores.append(engine.process(frame).copy())
        open_.append(engine.gate_open)
    return np.array(scores), np.array(open_)


@pytest.mark.scene
def test_the_audio_really_wakes_openwakeword(reference: np.ndarray) -> None:
    """Guards the parity tests below against comparing two flat lines."""
    assert reference[:, WORDS.index("hey_jarvis_v0.1.onnx")].max() > 0.9
    assert reference[:, WORDS.index("hey_mycroft_v0.1.onnx")].max() > 0.5


@pytest.mark.scene
def test_ungated_engine_matches_openwakeword_on_every_frame(models_dir: Path, audio: np.ndarray,
                                                             reference: np.ndarray) -> None:
    scores, _ = _run(_engine(models_dir, gate=None), audio)
    assert scores.shape == reference.shape
    assert np.abs(scores - reference).max() <= TOLERANCE


@pytest.mark.scene
def test_gated_engine_gives_the_same_scores_whenever_it_listens(models_dir: Path, audio: np.ndarray,
                                                                reference: np.ndarray) -> None:
    engine = _engine(models_dir, gate=EnergyGate())
    scores, open_ = _run(engine, audio)
    assert np.abs(scores[open_] - reference[open_]).max() <= TOLERANCE
    # What it skipped, openWakeWord scored as nothing: the saving lost no wake.
    assert reference[~open_].max() < 0.1
    assert (scores[~open_] == 0).all()
    # And it did skip the quiet stretches (about a third of this clip).
    assert 0.2 < (~open_).mean() < 0.75
    assert engine.frames_scored == open_.sum()


@pytest.mark.scene
def test_reset_starts_over_like_openwakeword(models_dir: Path, audio: np.ndarray, reference: np.ndarray) -> None:
    """After reset the engine scores as a fresh one would: no audio from before leaks in."""
    engine = _engine(models_dir, gate=None)
    _run(engine, audio[: 40 * FRAME_SAMPLES])
    engine.reset()
    scores, _ = _run(engine, audio)
    assert np.abs(scores - reference).max() <= TOLERANCE


@pytest.mark.scene
def test_detector_wakes_on_the_same_frames_with_and_without_the_gate(models_dir: Path, audio: np.ndarray) -> None:
    settings = WakeSettings(words=["hey_jarvis", "hey_mycroft"], engine="openwakeword")
    runs = {}
    for gate in (True, False):
        detector = WakeDetector(settings, models_dir, gate=gate)
        runs[gate] = [(i, h.wake_word, round(h.score, 4)) for i, f in enumerate(_frames(audio))
                      for h in detector.process(f)]
    assert runs[True] == runs[False]
    assert [w for _, w, _ in runs[True]] == ["hey_jarvis", "hey_mycroft", "hey_jarvis"]


def test_gate_learns_a_steady_noise_but_always_opens_for_loud_sound() -> None:
    gate = EnergyGate()
    rng = np.random.default_rng(3)
    fan = [f.astype(np.float32) for f in _frames(_room(60.0, 400, rng))]  # about -38 dBFS
    loud = [gate.loud(f) for f in fan]
    assert loud[0] and not any(loud[-100:])  # a new fan opens the gate, then it is learnt
    speech_level = _room(0.08, 3000, rng).astype(np.float32)  # about -21 dBFS
    assert gate.loud(speech_level)
    assert not gate.loud(np.zeros(FRAME_SAMPLES, np.float32))


def test_digital_silence_does_not_make_the_gate_forget_the_room() -> None:
    """A dropout of exact zeros is not the room: afterwards the room's own noise must not hold the networks on
    (with the floor learnt from the zeros, a quiet room kept them running for most of a minute)."""
    gate = EnergyGate()
    rng = np.random.default_rng(4)
    room = [f.astype(np.float32) for f in _frames(_room(20.0, 40, rng))]  # about -58 dBFS
    for frame in room[:50]:
        gate.loud(frame)
    for _ in range(40):  # 3.2 s of dropout
        assert not gate.loud(np.zeros(FRAME_SAMPLES, np.float32))
    assert not any(gate.loud(f) for f in room[50:])
    assert gate.loud(_room(0.08, 200, rng).astype(np.float32))  # a soft voice at -44 dBFS still opens it


def _loudest_frame_dbfs(audio: np.ndarray) -> float:
    frames = _frames(audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES]).astype(np.float64)
    return float(10 * np.log10(np.mean(frames**2, axis=1).max() / 32768**2))


def test_a_soft_spoken_request_across_the_room_is_heard_through_the_gate(tmp_path: Path, models_dir: Path) -> None:
    """A quiet talker, or a microphone set low: the request's loudest 80 ms frame is at -54 dBFS over a room at
    about -66 dBFS. openWakeWord hears it; the gate once required -50 dBFS whatever the room and slept through
    it. Now the gated detector wakes where the ungated one does, and the request is obeyed."""
    audio = _soft_request()
    assert _loudest_frame_dbfs(audio) < -50.0
    assert _heard_with_and_without_the_gate(models_dir, audio) == (["hey_jarvis"], ["hey_jarvis"])
    assert _commands_run(tmp_path, models_dir, audio) == ["stop_recording"]


def test_a_soft_request_over_mains_hum_is_heard_through_the_gate(models_dir: Path) -> None:
    """A ground loop puts 50 Hz hum (and its third harmonic) into the microphone, at -52 dBFS here: louder than the
    soft request's room, and it carries no word. Measured broadband, it set the gate's floor and the gated detector
    slept through the request the ungated models heard; the gate now measures the speech band."""
    audio = _soft_request()
    t = np.arange(len(audio)) / SAMPLE_RATE
    hum = 100 * np.sin(2 * np.pi * 50 * t) + 50 * np.sin(2 * np.pi * 150 * t)
    audio = np.clip(np.round(audio + hum), -32768, 32767).astype(np.int16)
    assert _heard_with_and_without_the_gate(models_dir, audio) == (["hey_jarvis"], ["hey_jarvis"])


def _heard_with_and_without_the_gate(models_dir: Path, audio: np.ndarray) -> tuple[list[str], list[str]]:
    """The words hey_jarvis's openWakeWord detector wakes for in ``audio`` (faint hits aside), gated and ungated."""
    def heard(gate: bool) -> list[str]:
        detector = WakeDetector(WakeSettings(words=["hey_jarvis"], engine="openwakeword"), models_dir, gate=gate)
        return [h.wake_word for f in _frames(audio) for h in detector.process(f) if not h.faint]

    return heard(True), heard(False)


def _soft_request() -> np.ndarray:
    """"hey jarvis, please don't record anymore", its loudest 80 ms at -54 dBFS, over a room at about -66 dBFS."""
    rng = np.random.default_rng(8)
    request = speak("hey jarvis, please don't record anymore").astype(np.float64)
    request *= 10 ** ((-54.0 - _loudest_frame_dbfs(request.astype(np.int16))) / 20)
    spoken = np.round(request).astype(np.int16) + _room(len(request) / SAMPLE_RATE, 16, rng)
    audio = np.concatenate([_room(1.0, 16, rng), spoken, _room(3.0, 16, rng)])
    return audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES]


def _commands_run(tmp_path: Path, models_dir: Path, audio: np.ndarray) -> list[str]:
    """The commands ``voxkeep run`` carries out on ``audio``, with the default config."""
    wav = write_wav(tmp_path / "soft.wav", audio)
    (tmp_path / "empty.toml").write_text("")
    events = events_of(run_cli("run", "--input", str(wav), "--events", "-", "--models-dir", str(models_dir),
                               "--state-dir", str(tmp_path / "state"), "--config", str(tmp_path / "empty.toml")).stdout)
    return [e["command"] for e in events if e["type"] == "command"]


def test_a_soft_request_through_a_microphone_with_an_offset_is_heard(tmp_path: Path, models_dir: Path) -> None:
    """Many microphones add a constant offset to every sample (300 here, -41 dBFS). The energy gate took it for the
    room's level and slept through a soft talker the same microphone without the offset was obeyed for; the
    daemon now takes the offset out before anything listens (``audio.DcRemover``)."""
    audio = np.clip(_soft_request().astype(np.int32) + 300, -32768, 32767).astype(np.int16)
    assert _commands_run(tmp_path, models_dir, audio) == ["stop_recording"]


def test_a_multi_class_model_is_refused_with_the_fix(models_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"not a wake-word model.*single wake-word"):
        WakeEngine(models_dir / "melspectrogram.onnx", models_dir / "embedding_model.onnx",
                   [models_dir / "timer_v0.1.onnx"])


# -- microWakeWord, and the engines behind one detector ---------------------------------------------------


def _request(text: str, **voice) -> np.ndarray:
    """A spoken request in a quiet room: 1 s before, 3 s after (real microphones never give exact zeros)."""
    rng = np.random.default_rng(11)
    return np.concatenate([_room(1.0, 30, rng), speak(text, **voice), _room(3.0, 30, rng)])


def _wakes(tmp_path: Path, models_dir: Path, audio: np.ndarray, *args: str) -> list[dict]:
    wav = write_wav(tmp_path / "in.wav", audio)
    config = tmp_path / "empty.toml"
    config.write_text("")
    proc = run_cli("run", "--config", str(config), "--input", str(wav), "--events", "-", "--models-dir",
                   str(models_dir), "--state-dir", str(tmp_path / "state"), *args)
    assert proc.returncode == 0, proc.stderr.decode()
    return [e for e in events_of(proc.stdout) if e["type"] in ("wake", "wake_rejected")]


def test_microwakeword_wakes_on_generated_speech_through_voxkeep_run(tmp_path: Path, models_dir: Path) -> None:
    audio = np.concatenate([_request("okay nabu, what time is it"),
                            _request("hey jarvis, turn on the light", engine="flite", voice="awb")])
    wakes = _wakes(tmp_path, models_dir, audio, "--engine", "microwakeword", "-w", "okay_nabu", "-w", "hey_jarvis")
    assert [(e["type"], e["wake_word"]) for e in wakes] == [("wake", "okay_nabu"), ("wake", "hey_jarvis")]
    first_end = 1.0 + len(speak("okay nabu")) / SAMPLE_RATE
    assert 1.0 < wakes[0]["t"] < first_end + 0.5  # during or just after "okay nabu", not the sentence after


def test_each_word_streams_on_the_engine_asked_for_or_the_one_that_has_it(models_dir: Path) -> None:
    settings = WakeSettings(words=["alexa", "okay_nabu", "hey_marvin", "hey_jarvis"], engine="both",
                            engines={"alexa": "openwakeword"})
    plans = {p.name: p for p in WakeDetector(settings, models_dir).plans}
    assert (plans["alexa"].engine, plans["alexa"].agree) == ("openwakeword", False)
    assert (plans["okay_nabu"].engine, plans["okay_nabu"].agree) == ("microwakeword", False)
    assert (plans["hey_marvin"].engine, plans["hey_marvin"].agree) == ("openwakeword", False)
    assert (plans["hey_jarvis"].engine, plans["hey_jarvis"].agree) == ("microwakeword", True)
    # microWakeWord words default to their model's own cutoff, openWakeWord words to wake.threshold.
    assert plans["okay_nabu"].threshold == pytest.approx(0.85) and plans["alexa"].threshold == 0.5


def test_by_default_each_word_runs_on_the_engine_that_hears_it_best(models_dir: Path) -> None:
    """engine "auto" (the default): hey_mycroft on microWakeWord, whose model heard twice as many TUNE phrases
    (openWakeWord's hardly any in reverberation), the other words on openWakeWord, with no second look for
    hey_mycroft (its wake is reported on the frame it crosses) and the classifier still judging alexa."""
    settings = WakeSettings(words=["hey_jarvis", "alexa", "hey_mycroft", "okay_nabu", "hey_marvin"])
    detector = WakeDetector(settings, models_dir)
    assert {p.name: p.engine for p in detector.plans} == {
        "hey_jarvis": "openwakeword", "alexa": "openwakeword", "hey_mycroft": "microwakeword",
        "okay_nabu": "microwakeword", "hey_marvin": "openwakeword"}
    look = second_look(settings, models_dir, detector.plans)
    assert look.look_ahead("hey_mycroft") == 0 and look.look_ahead("alexa") > 0
    # "hey mycroft" in a quiet room (flite slt): openWakeWord's model stays silent, the default wakes.
    audio = _request("hey mycroft, what time is it", engine="flite", voice="slt")
    frames = audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    for engine, wakes in (("auto", True), ("openwakeword", False)):
        alone = WakeDetector(WakeSettings(words=["hey_mycroft"], engine=engine), models_dir)
        assert any(alone.process(f) for f in frames) is wakes, engine


def test_microwakeword_overturns_a_classifier_refusal_of_a_phrase_it_hears(models_dir: Path) -> None:
    """alexa's classifier, trained on synthesized voices, refuses many voices unlike them, most of all in
    reverberation: "alexa, what time is it" (flite slt, RT60 0.6 s) is refused by it, heard by
    microWakeWord's alexa over the same buffered audio, and kept. Silence is still refused, and
    ``verify_witness = 0`` brings the refusal back."""
    rng = np.random.default_rng(11)
    audio = np.concatenate([_room(1.0, 30, rng), reverberant(speak("alexa, what time is it", voice="slt",
                                                                     engine="flite"), 0.6), _room(3.0, 30, rng)])
    frames = audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    silence = np.zeros(32000, dtype=np.int16)
    for witness, expected in ((0.5, "micro_agrees"), (0.0, "classifier_rejects")):
        settings = WakeSettings(words=["alexa"], engine="openwakeword", verify_witness=witness)
        detector = WakeDetector(settings, models_dir)
        look = second_look(settings, models_dir, detector.plans)
        verdicts = []
        for i, frame in enumerate(frames):
            for hit in detector.process(frame):
                end = (i + 1 + look.look_ahead("alexa")) * FRAME_SAMPLES
                verdicts.append(look.check("alexa", hit.score, audio[max(0, end - 32000):end], [hit.score]).reason)
        assert verdicts == [expected], witness
        assert look.check("alexa", 0.9, silence, [0.9, 0.8]).reason == "classifier_rejects"


def test_without_microwakeword_files_the_default_falls_back_to_openwakeword(models_dir: Path, tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """An install that has only openWakeWord's models (or an altered microWakeWord file) still hears
    hey_mycroft and alexa: "auto" runs hey_mycroft on openWakeWord and alexa's classifier judges alone, each
    with a warning that names the file. Asking for microwakeword outright is still one clear error."""
    only_oww = tmp_path / "models"
    only_oww.mkdir()
    for path in models_dir.iterdir():
        if path.suffix != ".tflite":
            shutil.copy(path, only_oww / path.name)
    settings = WakeSettings(words=["hey_mycroft", "alexa"])
    with caplog.at_level("WARNING", logger="voxkeep.wake"):
        detector = WakeDetector(settings, only_oww)
        look = second_look(settings, only_oww, detector.plans)
    assert [p.engine for p in detector.plans] == ["openwakeword", "openwakeword"]
    assert "hey_mycroft.tflite" in caplog.text and "witness" in caplog.text
    silence = np.zeros(32000, dtype=np.int16)
    assert look.check("alexa", 0.9, silence, [0.9, 0.8]).reason == "classifier_rejects"
    with pytest.raises(ModelError, match=r"hey_mycroft\.tflite"):
        WakeDetector(WakeSettings(words=["hey_mycroft"], engine="microwakeword"), only_oww)


def test_both_keeps_a_wake_openwakeword_agrees_with_and_refuses_one_it_does_not(models_dir: Path) -> None:
    settings = WakeSettings(words=["hey_jarvis"], engine="both")
    detector = WakeDetector(settings, models_dir)
    look = second_look(settings, models_dir, detector.plans)
    audio = _request("hey jarvis, turn on the light", engine="flite", voice="awb")
    frames = audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    hit_at = next(i for i, f in enumerate(frames) if detector.process(f))
    buffered = frames[max(0, hit_at + 1 - 25):hit_at + 1].reshape(-1)
    assert look.check("hey_jarvis", 0.98, buffered, []).reason == "confirmed"
    # The same claim over audio without the phrase (another request) is refused by the other engine.
    other = _request("okay nabu, what time is it")[: 25 * FRAME_SAMPLES * 2][-25 * FRAME_SAMPLES:]
    verdict = look.check("hey_jarvis", 0.98, other, [])
    assert (verdict.ok, verdict.reason) == (False, "engines_disagree")


def _custom_copy(models_dir: Path, folder: Path, name: str = "kitchen_helper") -> Path:
    """A microWakeWord model as a maker would ship their own: a .tflite and its .json under a new name."""
    folder.mkdir(parents=True, exist_ok=True)
    description = json.loads((models_dir / "hey_jarvis.json").read_text())
    description["model"] = f"{name}.tflite"
    (folder / f"{name}.json").write_text(json.dumps(description))
    shutil.copy(models_dir / "hey_jarvis.tflite", folder / f"{name}.tflite")
    return folder / f"{name}.tflite"


def test_a_custom_microwakeword_model_loads_by_path(tmp_path: Path, models_dir: Path) -> None:
    custom = _custom_copy(models_dir, tmp_path / "mine")
    audio = _request("hey jarvis, turn on the light", engine="flite", voice="awb")
    wakes = _wakes(tmp_path, models_dir, audio, "-w", str(custom))
    assert [(e["type"], e["wake_word"]) for e in wakes] == [("wake", "kitchen_helper")]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_json"])
def test_a_damaged_custom_tflite_is_named_with_its_fix(tmp_path: Path, models_dir: Path, damage: str) -> None:
    custom = _custom_copy(models_dir, tmp_path / "mine")
    if damage == "truncate":
        custom.write_bytes(custom.read_bytes()[:20000])
    elif damage == "garbage":
        custom.write_bytes(b"this is not a model\n" * 50)
    else:
        custom.with_suffix(".json").unlink()
    proc = run_cli("run", "--input", "-", "--models-dir", str(models_dir), "--state-dir", str(tmp_path / "s"),
                   "-w", str(custom), stdin=b"")
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and str(custom) in line
    fix = "kitchen_helper.json" if damage == "no_json" else "export the model again from microWakeWord training"
    assert fix in line


def test_a_damaged_bundled_tflite_stops_the_daemon_with_the_fix(tmp_path: Path, models_dir: Path) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    target = copy / "okay_nabu.tflite"
    target.write_bytes(target.read_bytes()[:5000])
    proc = run_cli("run", "--input", "-", "--models-dir", str(copy), "--state-dir", str(tmp_path / "s"),
                   "-w", "okay_nabu", stdin=b"")
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and str(target) in line and "voxkeep models fetch" in line


def _micro_reference(models_dir: Path, audio: np.ndarray, words: tuple[str, ...]) -> np.ndarray:
    """pymicro-wakeword's own probabilities, the highest per 80 ms frame, used as its README shows."""
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures

    features = MicroWakeWordFeatures()
    models = [MicroWakeWord.from_config(models_dir / f"{w}.json") for w in words]
    out = np.zeros((len(_frames(audio)), len(words)))
    for i, frame in enumerate(_frames(audio)):
        for row in features.process_streaming(frame.tobytes()):
            for k, model in enumerate(models):
                out[i, k] = max(out[i, k], model.process_streaming_prob(row))
    return out


MICRO_WORDS = ("hey_jarvis", "hey_mycroft", "alexa")


def test_micro_engine_matches_pymicro_wakeword_and_its_gate_keeps_the_wakes(models_dir: Path,
                                                                            audio: np.ndarray) -> None:
    reference = _micro_reference(models_dir, audio, MICRO_WORDS)
    descriptions = [load_description(models_dir / f"{w}.json", "") for w in MICRO_WORDS]
    cutoffs = np.array([d.cutoff for d in descriptions])
    assert (reference >= cutoffs).any()  # the clip really wakes microWakeWord (hey_mycroft; its jarvis is espeak)
    ungated = MicroEngine(descriptions, [""] * 3)
    scores = np.array([ungated.process(f).copy() for f in _frames(audio)])
    assert np.abs(scores - reference).max() <= 1e-6
    gated = MicroEngine(descriptions, [""] * 3, gate=EnergyGate())
    rows, open_ = [], []
    for f in _frames(audio):
        rows.append(gated.process(f).copy())
        open_.append(gated.gate_open)
    gated_scores, open_ = np.array(rows), np.array(open_)
    # The same wakes (the frame each run over a cutoff starts on), and the quiet stretches skipped. The replay
    # is close, not exact (the front end's noise estimate adapts slowly), so a run may end a frame apart.
    def onsets(s: np.ndarray) -> list[tuple[int, int]]:
        over = s >= cutoffs
        return [(int(i), int(k)) for i, k in zip(*np.nonzero(over[1:] & ~over[:-1]), strict=True)]

    assert onsets(gated_scores) == onsets(reference) != []
    # Skipped: the quiet stretches (a fifth of the clip: the gate opens for a sound 6 dB over the room, and the
    # room noise rising 3.5 dB after "hey my croft" holds it open while the floor learns it).
    assert 0.15 < (~open_).mean() < 0.6 and gated.frames_scored == open_.sum()


def test_an_unknown_engine_in_the_config_is_one_line_naming_the_choices(tmp_path: Path, models_dir: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[wake]\nengine = "porcupine"\n')
    proc = run_cli("run", "--config", str(config), "--input", "-", "--models-dir", str(models_dir),
                   "--state-dir", str(tmp_path / "s"), stdin=b"")
    line = one_error_line(proc.stderr)
    assert proc.returncode != 0 and "wake.engine" in line and "auto, openwakeword, microwakeword, both" in line


def test_a_model_file_is_loaded_once_and_a_replaced_one_again(models_dir: Path, tmp_path: Path) -> None:
    """The detector and the second look share one session per file (memory), but never a stale one: a
    custom model replaced on disk scores with the new file."""
    from voxkeep.engine import session

    custom = tmp_path / "custom.onnx"
    shutil.copy(models_dir / "hey_jarvis_v0.1.onnx", custom)
    first = session(custom)
    assert session(custom) is first
    assert session(models_dir / "embedding_model.onnx") is session(models_dir / "embedding_model.onnx")
    shutil.copy(models_dir / "alexa_v0.1.onnx", custom)
    replaced = session(custom)
    assert replaced is not first
    window = np.random.default_rng(0).standard_normal((1, 16, 96)).astype(np.float32)
    alexa = session(models_dir / "alexa_v0.1.onnx")
    assert np.array_equal(replaced.run(None, {replaced.get_inputs()[0].name: window})[0],
                          alexa.run(None, {alexa.get_inputs()[0].name: window})[0])


def _hits(detector: WakeDetector, audio: np.ndarray) -> tuple[list[tuple[int, str]], np.ndarray, np.ndarray]:
    """Hits (frame, word), every frame's scores, and whether openWakeWord's networks ran on it."""
    hits, scores, ran = [], [], []
    for i, frame in enumerate(_frames(audio)):
        hits += [(i, h.wake_word) for h in detector.process(frame)]
        scores.append([detector.last_scores[w] for w in detector.words])
        ran.append(detector._oww.gate_open)
    return hits, np.array(scores), np.array(ran)


@pytest.mark.scene
def test_cascade_wakes_where_microwakeword_stirs_and_skips_openwakeword_through_ordinary_speech(
        models_dir: Path, audio: np.ndarray, speech) -> None:
    """wake.cascade_threshold: openWakeWord's own scores wherever it ran, no wake openWakeWord alone would not
    give (at most a frame later: microWakeWord rises a little after openWakeWord crosses), and its networks
    skipped through ordinary speech that the energy gate would have let through. The quiet third phrase shows
    the price: microWakeWord does not stir for it, so the cascade misses it."""
    talk = np.concatenate([_wav(speech(s)) for s in ("what is the weather like tomorrow",
                                                     "I put the kettle on and read the paper")])
    stream = np.concatenate([audio, talk[: len(talk) // FRAME_SAMPLES * FRAME_SAMPLES]])
    words = ["hey_jarvis", "hey_mycroft"]
    plain = WakeDetector(WakeSettings(words=words, engine="openwakeword"), models_dir)
    cascade = WakeDetector(WakeSettings(words=words, engine="openwakeword", cascade_threshold=0.01), models_dir)
    plain_hits, _, plain_ran = _hits(plain, stream)
    cascade_hits, cascade_scores, cascade_ran = _hits(cascade, stream)
    _, exact, _ = _hits(WakeDetector(WakeSettings(words=words, engine="openwakeword"), models_dir, gate=False), stream)
    assert [w for _, w in plain_hits] == ["hey_jarvis", "hey_mycroft", "hey_jarvis"]
    assert [w for _, w in cascade_hits] == ["hey_jarvis", "hey_mycroft"]
    assert all(0 <= c - p <= 1 for (c, _), (p, _) in zip(cascade_hits, plain_hits, strict=False))
    assert np.abs(cascade_scores[cascade_ran] - exact[cascade_ran]).max() <= TOLERANCE
    chatter = slice(len(audio) // FRAME_SAMPLES, None)
    assert cascade_ran[chatter].mean() < 0.6 * plain_ran[chatter].mean()


def test_cascade_is_ignored_with_a_warning_for_a_word_microwakeword_lacks(models_dir: Path, caplog) -> None:
    detector = WakeDetector(WakeSettings(words=["hey_jarvis", "hey_marvin"], cascade_threshold=0.01), models_dir)
    assert isinstance(detector._oww.gate, EnergyGate)
    assert "microWakeWord has no model for hey_marvin" in caplog.text


def test_a_faint_wake_that_microwakeword_also_hears_wakes_and_a_faint_rise_alone_does_not(
        tmp_path: Path, models_dir: Path) -> None:
    """The default word in a reverberant room (flite awb, RT60 0.6 s): openWakeWord's score only reaches about
    0.4, so bare it never wakes; microWakeWord's hey_jarvis, run over the same buffered audio, is sure of the
    word, and voxkeep wakes and obeys "please don't record anymore" (``wake.faint_floor``, on by default).
    With the floor at 0, or a threshold the owner set, it stays asleep, as before. A faint rise that
    microWakeWord does not hear (silence, a near miss) is refused."""
    rng = np.random.default_rng(11)
    request = speak("hey jarvis, please don't record anymore", voice="awb", engine="flite")
    audio = np.concatenate([_room(1.0, 30, rng), reverberant(request, 0.6), _room(3.0, 30, rng)])
    frames = audio[: len(audio) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    bare = WakeDetector(WakeSettings(words=["hey_jarvis"], verify=False), models_dir)
    peak = 0.0
    for frame in frames:
        assert not bare.process(frame), "this phrase must be one bare openWakeWord misses"
        peak = max(peak, bare.last_scores["hey_jarvis"])
    assert 0.1 < peak < 0.5

    wakes = _wakes(tmp_path, models_dir, audio)
    assert [(e["type"], e["wake_word"]) for e in wakes] == [("wake", "hey_jarvis")]
    assert 1.0 < wakes[0]["t"] < 1.0 + len(speak("hey jarvis", voice="awb", engine="flite")) / SAMPLE_RATE + 1.0
    events = events_of(run_cli("run", "--input", str(tmp_path / "in.wav"), "--events", "-", "--models-dir",
                               str(models_dir), "--state-dir", str(tmp_path / "s1"), "--config",
                               str(tmp_path / "empty.toml")).stdout)
    assert [e["command"] for e in events if e["type"] == "command"] == ["stop_recording"]
    off = tmp_path / "off"
    off.mkdir()
    (off / "floor.toml").write_text("[wake]\nfaint_floor = 0\n")
    assert _wakes(off, models_dir, audio, "--config", str(off / "floor.toml")) == []
    (off / "own.toml").write_text("[wake]\nthresholds = { hey_jarvis = 0.45 }\n")  # a bar the owner set is kept
    assert _wakes(off, models_dir, audio, "--config", str(off / "own.toml"), "--state-dir", str(off / "s2")) == []

    # Near misses whose openWakeWord score rises faintly (0.3-0.4) are not wakes, and a refused faint rise was
    # never a wake attempt: no event at all, not even a wake_rejected.
    near = tmp_path / "near"
    near.mkdir()
    misses = np.concatenate([_request("hey jasper, come here", voice="en+m3"),
                             _request("hey travis, pass the salt", voice="en+m3")])
    assert _wakes(near, models_dir, misses) == []
    look = second_look(WakeSettings(words=["hey_jarvis"]), models_dir)
    for quiet in (np.zeros(32000, dtype=np.int16), _room(2.0, 30, rng)):
        assert look.check("hey_jarvis", 0.4, quiet, [0.4]).reason == "faint_unconfirmed"
