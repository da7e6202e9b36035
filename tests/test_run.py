"""`voxkeep run` end to end: audio in every supported form in, wake events out."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import events_of, of_type, one_error_line, run_cli, scene
from voxkeep.testing.speech import silence, speak


@pytest.fixture(scope="module")
def two_wakes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """'alexa' at ~1.5 s, then unrelated talk, then 'hey jarvis' at ~9 s."""
    path = tmp_path_factory.mktemp("audio") / "two_wakes.wav"
    return scene(path, 1.5, "alexa", 1.5, "the weather will be cloudy with some rain in the afternoon", 1.0,
                 "hey jarvis", 2.0)


def _run(wav: Path, state_dir: Path, *extra: str) -> list[dict]:
    proc = run_cli("run", "--input", str(wav), "--events", "-", "--state-dir", str(state_dir),
                   "-w", "alexa", "-w", "hey_jarvis", *extra)
    assert proc.returncode == 0, proc.stderr.decode()
    return events_of(proc.stdout)


def _wake_times(events: list[dict]) -> list[tuple[str, float]]:
    return [(e["wake_word"], e["t"]) for e in of_type(events, "wake")]


@pytest.mark.scene
def test_wake_words_detected_with_the_right_word_at_the_right_time(two_wakes: Path, state_dir: Path) -> None:
    events = _run(two_wakes, state_dir)
    wakes = _wake_times(events)
    assert [w for w, _ in wakes] == ["alexa", "hey_jarvis"]
    alexa_end = 1.5 + len(speak("alexa")) / 16000
    assert 1.5 + 0.2 <= wakes[0][1] <= alexa_end + 0.5  # while or just after it is said
    assert wakes[1][1] > 7.0
    for e in of_type(events, "wake"):
        assert 0.5 <= e["score"] <= 1.0
        assert set(e) == {"type", "t", "wake_word", "score"}


@pytest.mark.scene
def test_ordinary_speech_gives_no_wake(tmp_path: Path, state_dir: Path) -> None:
    wav = scene(tmp_path / "talk.wav", 0.5, "could you pass me the salt please", 0.5,
                "we are going to the cinema on saturday evening", 1.0)
    events = _run(wav, state_dir)
    assert of_type(events, "wake") == []


@pytest.mark.scene
def test_summary_line_and_clean_exit(two_wakes: Path, state_dir: Path) -> None:
    proc = run_cli("run", "--input", str(two_wakes), "--state-dir", str(state_dir), "-w", "alexa")
    assert proc.returncode == 0
    summary = proc.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith(f"voxkeep: {two_wakes}:") and "1 wake(s)" in summary


@pytest.mark.parametrize("sox_args", [
    ["-r", "8000"],                       # telephone rate
    ["-r", "44100", "-c", "2"],           # CD stereo
    ["-b", "24"],                         # 24-bit (WAVE_FORMAT_EXTENSIBLE)
    ["-r", "48000", "-b", "32", "-e", "floating-point"],
])
@pytest.mark.scene
def test_wav_variants_are_mixed_down_and_resampled(two_wakes: Path, tmp_path: Path, state_dir: Path,
                                                   sox_args: list[str]) -> None:
    variant = tmp_path / "variant.wav"
    subprocess.run(["sox", str(two_wakes), *sox_args, str(variant)], check=True)
    wakes = _wake_times(_run(variant, state_dir))
    reference = _wake_times(_run(two_wakes, state_dir))
    assert [w for w, _ in wakes] == [w for w, _ in reference]
    for (_, t), (_, t_ref) in zip(wakes, reference, strict=True):
        assert abs(t - t_ref) <= 0.25  # resampling shifts the score curve by a frame or two


@pytest.mark.scene
def test_raw_pcm_on_stdin(two_wakes: Path, state_dir: Path) -> None:
    data, _ = soundfile.read(str(two_wakes), dtype="int16")
    proc = run_cli("run", "--input", "-", "--events", "-", "--state-dir", str(state_dir), "-w", "alexa",
                   "-w", "hey_jarvis", stdin=data.astype("<i2").tobytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert [w for w, _ in _wake_times(events_of(proc.stdout))] == ["alexa", "hey_jarvis"]


def test_stdin_ending_mid_frame_is_padded_not_lost(state_dir: Path) -> None:
    audio = np.concatenate([silence(1.0), speak("alexa"), silence(0.3)])
    raw = audio.astype("<i2").tobytes() + b"\x01"  # an odd trailing byte, as from a cut pipe
    proc = run_cli("run", "--input", "-", "--events", "-", "--state-dir", str(state_dir), "-w", "alexa",
                   stdin=raw)
    assert proc.returncode == 0
    assert len(of_type(events_of(proc.stdout), "wake")) == 1


@pytest.mark.scene
def test_events_to_file(two_wakes: Path, tmp_path: Path, state_dir: Path) -> None:
    out = tmp_path / "events.jsonl"
    proc = run_cli("run", "--input", str(two_wakes), "--events", str(out), "--state-dir", str(state_dir))
    assert proc.returncode == 0
    assert proc.stdout == b""
    assert of_type(events_of(out.read_text()), "state")
    assert out.stat().st_mode & 0o777 == 0o600  # events can hold transcripts: only the owner reads them
    out.chmod(0o644)  # a file left readable by an older version is tightened, not trusted
    again = run_cli("run", "--input", str(two_wakes), "--events", str(out), "--state-dir", str(state_dir))
    assert again.returncode == 0
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "missing", "header_only", "no_samples"])
def test_bad_audio_files_give_one_clear_line(two_wakes: Path, tmp_path: Path, state_dir: Path, kind: str) -> None:
    bad = tmp_path / f"{kind}.wav"
    data = two_wakes.read_bytes()
    if kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        bad.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "header_only":
        bad.write_bytes(data[:44])
    elif kind == "no_samples":
        soundfile.write(str(bad), np.zeros(0, np.int16), 16000)
    proc = run_cli("run", "--input", str(bad), "--state-dir", str(state_dir))
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert str(bad) in line
    word = {"truncated": "truncated", "garbage": "not a readable", "empty": "not a readable",
            "missing": "does not exist", "header_only": "truncated", "no_samples": "no audio"}[kind]
    assert word in line


def _wav_header(rate: int, channels: int = 1, frames: int = 16000) -> bytes:
    import struct

    data = b"\0\1" * frames * channels
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16) + b"data"
            + struct.pack("<I", len(data)) + data)


@pytest.mark.parametrize(("rate", "channels", "word"), [(1, 1, "sample rate of 1 Hz"), (3999, 1, "3999 Hz"),
                                                        (400000, 1, "400000 Hz"), (16000, 200, "200 channels")])
def test_a_file_declaring_an_absurd_rate_is_refused_before_decoding(tmp_path: Path, state_dir: Path, rate: int,
                                                                   channels: int, word: str) -> None:
    bad = tmp_path / "absurd.wav"
    bad.write_bytes(_wav_header(rate, channels, frames=1000))  # 1 Hz: 4 GB once resampled, before the fix
    proc = run_cli("run", "--input", str(bad), "--state-dir", str(state_dir))
    assert proc.returncode == 1 and word in one_error_line(proc.stderr)


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_an_input_that_is_not_a_file_says_so(tmp_path: Path, state_dir: Path, kind: str) -> None:
    import os

    path = {"directory": tmp_path, "fifo": tmp_path / "fifo", "device": Path("/dev/zero")}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    proc = run_cli("run", "--input", str(path), "--state-dir", str(state_dir))
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and "is not a regular file" in line and "does not exist" not in line


def test_a_closed_stdin_says_it_is_closed(state_dir: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os, sys; os.close(0); sys.stdin = None; "
                           "from voxkeep.cli import main; sys.exit(main())", "run", "--input", "-",
                           "--state-dir", str(state_dir)], capture_output=True, timeout=120, check=False)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 1 and "stdin is closed" in line and "terminal" not in line


@pytest.mark.scene
def test_custom_wake_word_by_path_uses_the_file_stem(two_wakes: Path, tmp_path: Path, models_dir: Path,
                                                     state_dir: Path) -> None:
    custom = tmp_path / "kitchen_v2.onnx"
    custom.write_bytes((models_dir / "alexa_v0.1.onnx").read_bytes())
    proc = run_cli("run", "--input", str(two_wakes), "--events", "-", "--state-dir", str(state_dir),
                   "-w", str(custom))
    assert proc.returncode == 0, proc.stderr.decode()
    assert [e["wake_word"] for e in of_type(events_of(proc.stdout), "wake")] == ["kitchen"]


def test_a_broken_custom_model_is_named(tmp_path: Path, two_wakes: Path, state_dir: Path) -> None:
    custom = tmp_path / "broken.onnx"
    custom.write_bytes(b"not a model")
    proc = run_cli("run", "--input", str(two_wakes), "--state-dir", str(state_dir), "-w", str(custom))
    assert proc.returncode == 1
    assert str(custom) in one_error_line(proc.stderr)


@pytest.mark.scene
def test_threshold_flag_and_config_thresholds(two_wakes: Path, tmp_path: Path, state_dir: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[wake]\nwords = ["alexa", "hey_jarvis"]\nthresholds = { alexa = 0.999 }\n')
    proc = run_cli("run", "--config", str(config), "--input", str(two_wakes), "--events", "-",
                   "--state-dir", str(state_dir))
    assert [e["wake_word"] for e in of_type(events_of(proc.stdout), "wake")] == ["hey_jarvis"]


@pytest.mark.scene
def test_one_utterance_gives_one_event(tmp_path: Path, state_dir: Path) -> None:
    wav = scene(tmp_path / "slow.wav", 1.0, "alexa", 0.1, "alexa", 2.0)  # said twice in one breath
    events = _run(wav, state_dir)
    assert len(of_type(events, "wake")) == 1


@pytest.mark.parametrize(("audio", "wall", "shown"), [
    (3.0, 10.0, "(0.3x real time)"), (3.4, 82.3, "(0.041x real time)"), (120.0, 4.0, "(30x real time)")])
def test_summary_says_how_fast_even_when_slower_than_real_time(audio: float, wall: float, shown: str) -> None:
    """On a slow machine (or under qemu) a run is slower than real time; the summary must not claim "0x"."""
    from voxkeep.daemon import RunStats

    assert shown in RunStats(audio_seconds=audio, wall_seconds=wall).summary("x.wav")
