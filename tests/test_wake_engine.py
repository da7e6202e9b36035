"""The lean wake engine against openWakeWord itself: same audio in, same scores out, gate or no gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from voxkeep import FRAME_SAMPLES, SAMPLE_RATE
from voxkeep.config import WakeSettings
from voxkeep.engine import EnergyGate, WakeEngine
from voxkeep.errors import ModelError
from voxkeep.wake import WakeDetector

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


def test_the_audio_really_wakes_openwakeword(reference: np.ndarray) -> None:
    """Guards the parity tests below against comparing two flat lines."""
    assert reference[:, WORDS.index("hey_jarvis_v0.1.onnx")].max() > 0.9
    assert reference[:, WORDS.index("hey_mycroft_v0.1.onnx")].max() > 0.5


def test_ungated_engine_matches_openwakeword_on_every_frame(models_dir: Path, audio: np.ndarray,
                                                             reference: np.ndarray) -> None:
    scores, _ = _run(_engine(models_dir, gate=None), audio)
    assert scores.shape == reference.shape
    assert np.abs(scores - reference).max() <= TOLERANCE


def test_gated_engine_gives_the_same_scores_whenever_it_listens(models_dir: Path, audio: np.ndarray,
                                                                reference: np.ndarray) -> None:
    engine = _engine(models_dir, gate=EnergyGate())
    scores, open_ = _run(engine, audio)
    assert np.abs(scores[open_] - reference[open_]).max() <= TOLERANCE
    # What it skipped, openWakeWord scored as nothing: the saving lost no wake.
    assert reference[~open_].max() < 0.1
    assert (scores[~open_] == 0).all()
    # And it did skip the quiet stretches (about a third of this clip).
    assert 0.2 < (~open_).mean() < 0.6
    assert engine.frames_scored == open_.sum()


def test_reset_starts_over_like_openwakeword(models_dir: Path, audio: np.ndarray, reference: np.ndarray) -> None:
    """After reset the engine scores as a fresh one would: no audio from before leaks in."""
    engine = _engine(models_dir, gate=None)
    _run(engine, audio[: 40 * FRAME_SAMPLES])
    engine.reset()
    scores, _ = _run(engine, audio)
    assert np.abs(scores - reference).max() <= TOLERANCE


def test_detector_wakes_on_the_same_frames_with_and_without_the_gate(models_dir: Path, audio: np.ndarray) -> None:
    settings = WakeSettings(words=["hey_jarvis", "hey_mycroft"])
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


def test_a_multi_class_model_is_refused_with_the_fix(models_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"not a wake-word model.*single wake-word"):
        WakeEngine(models_dir / "melspectrogram.onnx", models_dir / "embedding_model.onnx",
                   [models_dir / "timer_v0.1.onnx"])
