"""`voxkeep simulate`: bundled scenarios pass, failures and bad files are named, recorded runs replay."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from broker import USERS, Broker, broker_fixture, pki_fixture  # noqa: F401 (fixtures are used by name)
from tests.helpers import events_of, of_type, one_error_line, run_cli
from voxkeep.simulate import active_rms, bundled_scenarios, load_scenario, make_noise, render
from voxkeep.testing.speech import speak

BUNDLED = sorted(bundled_scenarios())


def simulate(workdir: Path, *args: str) -> tuple[int, str, str]:
    proc = run_cli("simulate", *args, "--workdir", str(workdir), timeout=300)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def write(tmp_path: Path, text: str, name: str = "scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_scenario_passes(name: str, tmp_path: Path, models_dir: Path) -> None:
    code, out, err = simulate(tmp_path, name)
    assert code == 0, out + err
    assert "FAILED" not in out
    checks = load_scenario(bundled_scenarios()[name]).steps
    assert f"{sum(s.expect is not None for s in checks)} expectation" in out and "all met" in out


def test_the_tour_is_the_default_and_its_recordings_open_with_the_printed_key(tmp_path: Path,
                                                                             models_dir: Path) -> None:
    code, out, err = simulate(tmp_path)
    assert code == 0, out + err
    assert out.lstrip().startswith("The voxkeep tour")
    for story in ('"alexa, don\'t record anymore"', "understood: stop recording", "kept nothing: not recording",
                  "short press on the mute button", "understood: delete last", "How to look at it"):
        assert story in out, story
    # The commands the summary prints really work: list, export, and decrypt with the throwaway key.
    state, identity = tmp_path / "state", tmp_path / "owner-identity.txt"
    assert f"--state-dir {state}" in out and str(identity) in out
    listed = run_cli("recordings", "list", "--json", "--state-dir", str(state))
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1  # two kept, the second deleted by voice
    bundle = tmp_path / "export.zip"
    assert run_cli("export", "--state-dir", str(state), "--out", str(bundle)).returncode == 0
    verified = run_cli("verify-export", str(bundle), "--identity", str(identity))
    assert verified.returncode == 0, verified.stderr
    assert not list(state.rglob("owner-identity*"))  # the secret key never sits in the device's state


def test_a_failed_expectation_exits_non_zero_naming_it(tmp_path: Path, models_dir: Path) -> None:
    path = write(tmp_path, """title = "wrong on purpose"

[[step]]
silence = 2.5

[[step]]
say = "alexa, what will the weather be like tomorrow"
voice = "en+f4"
speed = 140
pause = 2.0
expect = { events = ["wake:alexa"], recordings = 5 }
""")
    code, out, err = simulate(tmp_path / "work", str(path))
    assert code == 1
    line = one_error_line(err.encode())
    assert "step 2 (line 11" in line and "expected recordings 5, got 1" in line
    assert "expected event wake:alexa" not in line  # the wake was seen; only the count is wrong
    assert "FAILED: expected recordings 5, got 1" in out


@pytest.mark.parametrize(("text", "line", "problem"), [
    ('title = "x"\n[[step]]\nsay = "hello\n', 3, "Illegal character"),
    ('[[step]]\nsilence = 1\n\n[[step]]\nsilence = 1\nshout = "hi"\n', 6, "unknown key 'shout' in step 2"),
    ('[[step]]\nsilence = 1\n[[step]]\npress = "double"\n', 4, "press must be one of short, long"),
    ('[[step]]\nsilence = 1\n[[step]]\nsilence = 2\nexpect = { events = ["woke:alexa"] }\n', 5,
     "unknown event type 'woke'"),
    ('[[step]]\nsay = "hi"\nsilence = 2\n', 3, "has both 'say' and 'silence'"),
    ('[[step]]\nsilence = -1\n', 2, "silence must be between 0 and 600"),
    ('[[step]]\nsilence = inf\n', 2, "silence must be between 0 and 600, not inf"),
    ('[[step]]\nsilence = nan\n', 2, "silence must be between 0 and 600, not nan"),
    ('[[step]]\nsilence = 1e9\n', 2, "silence must be between 0 and 600"),
    ('[[step]]\nsay = "hi"\npause = inf\n', 3, "pause must be between"),
    ('[[step]]\nsay = "hi"\ngain_db = nan\n', 3, "gain_db must be between"),
    ('noise = { kind = "pink", snr_db = -inf }\n[[step]]\nsilence = 1\n', 1, "snr_db must be between"),
    ('x = ' + '[' * 3000 + ']' * 3000 + '\n[[step]]\nsilence = 1\n', 1, "nested too deeply"),
    ('[[step]]\npause = 1\n', 1, "step 1 does nothing"),
    ('title = "no steps"\n', 1, "needs at least one [[step]]"),
    ('noise = { kind = "pink" }\n[[step]]\nsilence = 1\n', 1, "exactly one of snr_db"),
    ('[[step]]\nplay = "missing.wav"\n', 2, "does not exist"),
    ('[[step]]\nsilence = 1\nexpect = { mode = "asleep" }\n', 3, "expect.mode must be one of"),
])
def test_a_malformed_scenario_names_the_line_and_the_problem(tmp_path: Path, text: str, line: int,
                                                              problem: str) -> None:
    path = write(tmp_path, text)
    code, out, err = simulate(tmp_path / "work", str(path))
    assert code == 1
    message = one_error_line(err.encode())
    assert (f"line {line}" in message or "nested" in message) and problem in message, message
    assert out == ""  # nothing ran


def test_a_key_holding_a_newline_or_a_terminal_escape_is_shown_escaped_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'voice = { "x\\n\\u001b[2J" = false }\n[[step]]\nsilence = 1\n')
    code, out, err = simulate(tmp_path / "work", str(path))
    message = one_error_line(err.encode())
    assert code == 1 and out == "" and "\x1b" not in err, err  # the terminal is not cleared
    assert "unknown key 'x\\n\\x1b[2J' in voice" in message, message


def test_a_line_that_looks_like_an_option_is_spoken_not_obeyed(tmp_path: Path) -> None:
    from voxkeep.testing.speech import speak

    target = tmp_path / "written-by-espeak.wav"
    samples = speak(f"-w{target}")
    assert not target.exists() and len(samples) > 16000  # spoken aloud, as the scenario said


def test_bad_settings_in_a_scenario_point_at_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[settings]\nwake.words = ["alexa"]\nwake.treshold = 0.6\n\n[[step]]\nsilence = 1\n')
    code, _, err = simulate(tmp_path / "work", str(path))
    assert code == 1
    message = one_error_line(err.encode())
    assert "line 3" in message and "wake.treshold" in message, message


@pytest.mark.parametrize(("step", "key"), [('switch = "engaged"', "gpio.mute_switch_pin"),
                                           ("mqtt = { mute = true }", "mqtt.host")])
def test_a_step_without_its_wiring_says_which_key_to_set(tmp_path: Path, models_dir: Path, step: str,
                                                         key: str) -> None:
    path = write(tmp_path, f'[[step]]\nsilence = 1\n\n[[step]]\n{step}\n')
    code, _, err = simulate(tmp_path / "work", str(path))
    assert code == 1
    message = one_error_line(err.encode())
    assert "line 4" in message and key in message, message


def test_saved_audio_replays_with_the_same_wake_events(tmp_path: Path, models_dir: Path) -> None:
    wav, events = tmp_path / "bug.wav", tmp_path / "bug.jsonl"
    code, out, err = simulate(tmp_path / "work", "delete_what_i_just_said", "--save-audio", str(wav),
                              "--events", str(events))
    assert code == 0, out + err
    recorded = events_of(events.read_text())
    assert [e["type"] for e in of_type(recorded, "command")] == ["command"]
    replay = run_cli("run", "--input", str(wav), "--events", "-", "--state-dir", str(tmp_path / "replay"),
                     "-w", "alexa", "-w", "hey_jarvis")
    assert replay.returncode == 0, replay.stderr
    wakes = [(e["wake_word"], e["t"]) for e in of_type(events_of(replay.stdout), "wake")]
    assert wakes == [(e["wake_word"], e["t"]) for e in of_type(recorded, "wake")]
    assert len(wakes) == 3


def test_events_on_stdout_keep_the_timeline_off_it(tmp_path: Path, models_dir: Path) -> None:
    code, out, err = simulate(tmp_path / "work", "wake_and_record", "--events", "-")
    assert code == 0, err
    events = events_of(out)  # every stdout line is JSON
    assert [e["type"] for e in events if e["type"] in ("wake", "recorded")] == ["wake", "recorded"]
    assert "Wake and record" in err


def test_noise_is_mixed_at_the_requested_snr_and_is_seeded(tmp_path: Path) -> None:
    def noisy(seed: int, snr: float) -> tuple[np.ndarray, float]:
        path = write(tmp_path, f'seed = {seed}\nnoise = {{ kind = "pink", snr_db = {snr} }}\n'
                               '[[step]]\nsay = "the quick brown fox jumps over the lazy dog"\npause = 3.0\n')
        rendered = render(load_scenario(path), tmp_path / "cache")
        cue = rendered.cues[0]
        audio = rendered.audio.astype(np.float64) / 32767
        speech_end = round((cue.end - 3.0) * 16000)
        return audio, 20 * np.log10(active_rms(audio[:speech_end]) / active_rms(audio[speech_end + 1600:]))

    audio, measured = noisy(1, 10.0)
    assert 9.0 < measured < 11.5  # speech (plus a little noise) against noise alone
    assert 19.0 < noisy(1, 20.0)[1] < 21.5
    assert np.array_equal(audio, noisy(1, 10.0)[0])
    assert not np.array_equal(audio, noisy(2, 10.0)[0])


def test_a_breathy_voice_says_a_sentence_the_same_way_every_time(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A scenario replayed, or a test run again, must hear the same audio. espeak-ng's breathy en-us+f3 said the
    same text with different breath noise whenever it ran in a new config dir (as each test does)."""
    def fresh(name: str) -> np.ndarray:
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / name))
        return speak("please don't record anymore", voice="en-us+f3")

    first = fresh("a")
    assert all(np.array_equal(first, fresh(name)) for name in ("b", "c", "d"))


@pytest.mark.parametrize("kind", ["pink", "brown"])
def test_coloured_noise_has_more_low_than_high_frequency_energy(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    spectrum = np.abs(np.fft.rfft(make_noise(kind, 160000, rng, tmp_path))) ** 2
    freqs = np.fft.rfftfreq(160000, 1 / 16000)
    low, high = spectrum[(freqs > 100) & (freqs < 200)].mean(), spectrum[(freqs > 1000) & (freqs < 2000)].mean()
    # pink: power ~ 1/f, so a decade up is ~10x less; brown: ~1/f^2, ~100x less
    assert 5 < low / high < 20 if kind == "pink" else 50 < low / high < 200


def test_mqtt_commands_reach_the_daemon_through_a_real_broker(tmp_path: Path, models_dir: Path,
                                                              broker: Broker) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text(USERS["voxkeep"] + "\n")
    path = write(tmp_path, f"""
[settings]
mqtt = {{ host = "127.0.0.1", port = {broker.port}, username = "voxkeep", password_file = "{password}", \
device_id = "sim-{uuid.uuid4().hex[:8]}" }}

[[step]]
silence = 1.0

[[step]]
mqtt = {{ mute = true }}
pause = 1.0
expect = {{ events = ["state:muted"], mode = "muted", mic_open = false, led = "on" }}

[[step]]
mqtt = {{ mute = false }}
pause = 1.0
expect = {{ mode = "listening", mic_open = true, led = "off" }}
""")
    code, out, err = simulate(tmp_path / "work", str(path))
    assert code == 0, out + err
    assert "mqtt" in out and '{"mute": true}: now muted' in out


def test_a_played_sound_file_and_an_rgb_led(tmp_path: Path, models_dir: Path, speech) -> None:
    clip = tmp_path / "clips" / "kitchen.wav"
    clip.parent.mkdir()
    clip.write_bytes(speech("alexa, what is on the radio", voice="en+f4", speed=140).read_bytes())
    path = write(tmp_path, """
[settings]
gpio = { rgb_pins = [5, 6, 13], mute_switch_pin = 22 }

[[step]]
silence = 2.5
expect = { led = "off, RGB off" }

[[step]]
play = "clips/kitchen.wav"
pause = 2.0
expect = { events = ["wake:alexa", "recorded"], led = "off, RGB off", recordings = 1 }

[[step]]
switch = "engaged"
pause = 1.0
expect = { mode = "muted", led = "on, RGB red" }
""")
    code, out, err = simulate(tmp_path / "work", str(path))
    assert code == 0, out + err
    assert "(sound file kitchen.wav)" in out


def test_an_unwritable_save_audio_path_is_one_clear_line(tmp_path: Path) -> None:
    code, out, err = simulate(tmp_path / "work", "wake_and_record", "--save-audio", str(tmp_path / "no" / "x.wav"))
    assert code == 1 and out == ""
    assert "choose a writable --save-audio path" in one_error_line(err.encode())
