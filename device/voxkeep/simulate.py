"""Simulated households: a scenario file drives the real daemon with generated audio and virtual hardware.

``voxkeep simulate SCENARIO.toml`` synthesizes every spoken line (espeak-ng or flite), mixes in seeded
background noise, writes the result to one WAV and runs it through the same ``build_app`` pipeline a real
speaker uses, faster than real time. Button presses, the hardware switch, owner commands and MQTT commands
fire at their exact audio times from the loop's frame hook, on gpiozero mock pins; a fresh state dir and a
throwaway owner key make the vault really store encrypted recordings. Expectations are checked as the audio
plays; the first line of a failed one names the step, the line and what differed.

Why file input and not a fake clock: file input is not live, so the utterance worker and the event bus
apply back-pressure and every run of the same scenario gives the same events at the same audio times.

Scenario format (TOML; the bundled ones are in voxkeep/scenarios/):

    title = "Wake and record"                 # shown in the timeline header
    description = "Alexa hears a question."   # optional, one paragraph
    seed = 1                                  # noise and babble are seeded: same file, same audio
    voice = { voice = "en-us", speed = 150, engine = "espeak-ng" }   # defaults for every `say`
    noise = { kind = "pink", snr_db = 20 }    # optional: white|pink|brown|babble, at snr_db below speech
                                              # (-30 dBFS with no speech), or level_dbfs = -45 instead

    [settings]                                # any voxkeep config keys, e.g.
    wake.words = ["alexa"]                    # default: alexa and hey_jarvis
    gpio.mute_switch_pin = 22                 # default pins: led 17, button 27, no switch; with
                                              # gpio.rgb_pins = [5, 6, 13] the LED reads "on, RGB red"

    rooms = [{ device = "living", gain_db = -9 }]   # optional: other speakers of the home (1-3), hearing
                                              # the same audio gain_db quieter, each a real daemon with its
                                              # own vault; needs [settings] arbitration.enabled = true (a
                                              # loopback Mosquitto joins them if no mqtt.host is set) and
                                              # runs in real time, since they meet in wall-clock windows

    [[step]]                                  # steps run in order; each starts where the last ended
    say = "alexa, what will the weather be tomorrow"   # spoken line (voice/speed/engine/gain_db optional;
                                              # at most 2000 characters, spoken as written, even "-w...")
    pause = 1.5                               # silence after the step (say/play default 1.5 s, others 0),
                                              # rounded up so the next step starts on a frame
    expect = { events = ["wake:alexa", "recorded"], mode = "listening", led = "off", recordings = 1 }

    [[step]]
    play = "clips/kitchen.wav"                # a sound file, relative to the scenario file
    [[step]]
    silence = 3.0                             # seconds, 0-600 (so is pause); gain_db -60 to 40
    [[step]]
    press = "short"                           # the mute button: "short" toggles mute, "long" resumes recording
    [[step]]
    switch = "engaged"                        # the hardware mute switch: "engaged" or "released"
    [[step]]
    owner = "unmute"                          # as `voxkeep mute|unmute|recording on|off`: mute, unmute,
                                              # recording_on, recording_off
    [[step]]
    mqtt = { mute = false }                   # a command on <base>/set (needs [settings] mqtt.host)
    [[step]]
    consent = { grant = "http" }              # as `voxkeep consent grant|revoke SINK` (mqtt, http, wyoming,
                                              # satellite); with no forward.http_url set, http goes to a
                                              # loopback receiver the simulation runs, which counts what
                                              # arrives; "satellite" runs a loopback Home Assistant that
                                              # answers each request with speech (a virtual speaker plays it)
    [[step]]
    expect = { no_events = ["wake"] }         # a step with only `expect` checks at that moment

The wake model needs about two seconds of audio before it can score, so scenarios begin with
``silence = 2.5``. Every step starts on an 80 ms frame boundary (pauses are rounded up), because a
synthetic phrase's wake score depends on where in a frame it begins. espeak-ng's "en+f4" voice at speed 140
reaches the wake verifier's peak at every offset and is understood by the command recogniser; "en-gb" wakes
as reliably but its commands are not understood yet; other voices make good household chatter.

Expectations are judged at the end of their step (after its pause), over the events since the previous
expectation: ``events`` must each be seen, ``no_events`` must not be; an event is named ``type`` or
``type:detail`` (detail = the wake word, command, mode, outcome, cause or sink), e.g. "wake:alexa",
"command:stop_recording", "handled:not_recorded", "state:muted", "wake_rejected". ``mode`` is the privacy
mode, ``led`` what the virtual LED shows (``StatusLight.describe()``: "off", "on", "blinking"; with RGB pins
"red", "amber", ...), ``mic_open`` whether the microphone is open, ``recordings`` how many the vault holds,
``forwarded_bytes`` the bytes that left the device so far (``forwarded`` events); with ``rooms``,
``elsewhere`` lists events every other speaker must have seen since the last check and
``elsewhere_recordings`` how many recordings the other speakers hold together.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import textwrap
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import FRAME_SAMPLES, SAMPLE_RATE
from .config import ForwardSettings
from .errors import ConfigError

DEFAULT_SETTINGS: dict[str, Any] = {
    "wake": {"words": ["alexa", "hey_jarvis"]},
    "gpio": {"led_pin": 17, "button_pin": 27},
}
"""What a scenario runs with unless its [settings] say otherwise: wake words espeak-ng triggers reliably,
and the reference wiring of hw/README.md (one LED, one button)."""

SAY_PAUSE = 1.5
"""Default silence after a spoken line: long enough for the command window or recording to end."""
MAX_SECONDS = 600.0
"""Longest silence or pause of one step: ten minutes (each second is 32 kB of generated audio)."""
MAX_SAY = 2000
"""Longest spoken line, in characters."""
TAIL_SECONDS = 1.0
"""Silence appended after the last step so every expectation is judged before the input ends."""

ACTIONS = ("say", "play", "silence", "press", "switch", "owner", "mqtt", "consent")
SINKS = ForwardSettings.SINKS
OWNER_ACTIONS = ("mute", "unmute", "recording_on", "recording_off")
NOISE_KINDS = ("white", "pink", "brown", "babble")
EXPECT_KEYS = ("events", "no_events", "mode", "led", "mic_open", "recordings", "forwarded_bytes", "elsewhere",
               "elsewhere_recordings")
STEP_KEYS = (*ACTIONS, "pause", "voice", "speed", "engine", "gain_db", "expect")
TOP_KEYS = ("title", "description", "seed", "voice", "noise", "settings", "rooms", "step")

BABBLE_LINES = (
    "did you remember to buy the milk on the way home",
    "the train was late again this morning so I missed the meeting",
    "we could go to the beach on sunday if the weather holds",
    "I think the blue one looks better with the curtains",
    "she said the concert starts at eight but the doors open at seven",
    "can you pass me the bread and the butter please",
    "my brother is coming to visit us next month with the kids",
    "the football match went to extra time and then penalties",
)
"""Household chatter for babble noise: no wake word or privacy command in any of it."""
BABBLE_VOICES = ("en-us", "en-gb", "en+f3", "en-us+m3", "en+f2", "en-gb+m4")


# ------------------------------------------------------------------------------------------- parsing

@dataclass(frozen=True)
class Expect:
    """What must be true at one moment of a scenario."""

    line: int
    events: tuple[str, ...] = ()
    no_events: tuple[str, ...] = ()
    mode: str | None = None
    led: str | None = None
    mic_open: bool | None = None
    recordings: int | None = None
    forwarded_bytes: int | None = None
    elsewhere: tuple[str, ...] = ()
    elsewhere_recordings: int | None = None

    def describe(self) -> str:
        """The expectation in a few words, for the timeline."""
        parts = [f"{', '.join(self.events)} seen"] if self.events else []
        parts += [f"no {', '.join(self.no_events)}"] if self.no_events else []
        parts += [f"{', '.join(self.elsewhere)} seen elsewhere"] if self.elsewhere else []
        for name in ("mode", "led", "mic_open", "recordings", "forwarded_bytes", "elsewhere_recordings"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name.replace('_', ' ')} {json.dumps(value) if isinstance(value, bool) else value}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Step:
    """One line of the timeline: an action (or nothing) and an optional expectation."""

    index: int
    line: int
    action: str | None
    value: Any
    pause: float
    voice: str
    speed: int
    engine: str
    gain_db: float
    expect: Expect | None


@dataclass(frozen=True)
class Noise:
    kind: str
    snr_db: float | None
    level_dbfs: float | None


@dataclass(frozen=True)
class Room:
    """Another speaker of the home, further from whoever speaks."""

    device: str
    gain_db: float


@dataclass(frozen=True)
class Scenario:
    """A parsed, checked scenario file."""

    path: Path
    title: str
    description: str
    seed: int
    settings: dict[str, Any]
    noise: Noise | None
    steps: tuple[Step, ...]
    rooms: tuple[Room, ...] = ()


class _Locator:
    """Finds the line of a key in the TOML text, since tomllib keeps no positions."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._step_lines = [i + 1 for i, ln in enumerate(self._lines) if re.match(r"\s*\[\[\s*step\s*\]\]", ln)]

    def step(self, index: int) -> int:
        return self._step_lines[index] if index < len(self._step_lines) else 1

    def key(self, key: str, step: int | None = None) -> int:
        """The first line assigning ``key`` inside step ``step`` (or anywhere); else the step's first line."""
        start = self.step(step) if step is not None else 1
        return self.find(key, step) or start

    def find(self, key: str, step: int | None = None) -> int | None:
        """The first line assigning ``key`` inside step ``step`` (or anywhere), None if there is none."""
        start = self.step(step) if step is not None else 1
        end = (self._step_lines[step + 1] - 1 if step is not None and step + 1 < len(self._step_lines)
               else len(self._lines))
        pattern = re.compile(rf"(^|[\s{{,.]){re.escape(key)}\s*=")
        return next((n for n in range(start, end + 1) if pattern.search(self._lines[n - 1])), None)


class _Checker:
    """Builds ConfigErrors that name the scenario file, its line and the fix."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, line: int, problem: str) -> ConfigError:
        return ConfigError(f"{self.path} line {line}: {problem}")

    def number(self, value: Any, what: str, line: int, *, minimum: float, maximum: float) -> float:
        """A finite number in [minimum, maximum] (a silence of 1e9 s would need 64 TB of audio)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(line, f"{what} must be a number, not {value!r}")
        if not (math.isfinite(value) and minimum <= value <= maximum):
            raise self.fail(line, f"{what} must be between {minimum:g} and {maximum:g}, not {value!r}")
        return float(value)

    def text(self, value: Any, what: str, line: int, choices: tuple[str, ...] = ()) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(line, f"{what} must be a non-empty string, not {value!r}")
        if choices and value not in choices:
            raise self.fail(line, f"{what} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def table(self, value: Any, what: str, line: int, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(line, f"{what} must be a table like {{ {allowed[0]} = ... }}, not {value!r}")
        for key in value:
            if key not in allowed:
                raise self.fail(line, f"unknown key '{key}' in {what}; allowed: {', '.join(allowed)}")
        return value


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; any problem is a ConfigError naming the line and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"scenario {path} does not exist; give a .toml file or one of the bundled names "
                          f"({', '.join(bundled_scenarios())})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = re.search(r"line (\d+)", str(exc))
        raise ConfigError(f"{path} line {where.group(1) if where else '?'}: {exc}; fix the TOML syntax there") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read; a scenario needs only a few levels") from None
    return parse_scenario(data, path, text)


def parse_scenario(data: dict[str, Any], path: Path, text: str) -> Scenario:
    """Check the parsed TOML of a scenario against the format in the module docstring."""
    at = _Locator(text)
    check = _Checker(path)
    for key in data:
        if key not in TOP_KEYS:
            raise check.fail(at.key(key), f"unknown key '{key}'; allowed at the top: {', '.join(TOP_KEYS)}")
    title = check.text(data.get("title", path.stem), "title", at.key("title"))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise check.fail(at.key("description"), "description must be a string")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise check.fail(at.key("seed"), f"seed must be an integer, not {seed!r}")
    voice = check.table(data.get("voice", {}), "voice", at.key("voice"), ("voice", "speed", "engine"))
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise check.fail(at.key("settings"), "settings must be a table of voxkeep config keys ([settings])")
    noise = _parse_noise(data["noise"], check, at.key("noise")) if "noise" in data else None
    raw_steps = data.get("step", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        raise check.fail(at.key("step") if "step" in data else len(text.splitlines()) or 1,
                         "a scenario needs at least one [[step]], e.g. [[step]] say = \"alexa, hello\"")
    steps = tuple(_parse_step(i, raw, check, at, voice, path.parent) for i, raw in enumerate(raw_steps))
    return Scenario(path, title, description.strip(), seed, settings, noise, steps,
                    _parse_rooms(data.get("rooms", []), check, at.key("rooms") if "rooms" in data else 1))


def _parse_rooms(raw: Any, check: _Checker, line: int) -> tuple[Room, ...]:
    if not isinstance(raw, list) or len(raw) > 3:
        raise check.fail(line, 'rooms must be a list of at most 3 tables, e.g. [{ device = "living", gain_db = -9 }]')
    rooms = []
    for entry in raw:
        table = check.table(entry, "a room", line, ("device", "gain_db"))
        device = check.text(table.get("device"), "a room's device", line)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", device):
            raise check.fail(line, f"a room's device {device[:40]!r} may only hold letters, digits, '_' and '-'")
        rooms.append(Room(device, check.number(table.get("gain_db", -6.0), "a room's gain_db", line,
                                               minimum=-60, maximum=0)))
    return tuple(rooms)


def _parse_noise(raw: Any, check: _Checker, line: int) -> Noise:
    table = check.table(raw, "noise", line, ("kind", "snr_db", "level_dbfs"))
    kind = check.text(table.get("kind", "pink"), "noise kind", line, NOISE_KINDS)
    if ("snr_db" in table) == ("level_dbfs" in table):
        raise check.fail(line, "noise needs exactly one of snr_db (relative to the speech) or level_dbfs")
    snr = check.number(table["snr_db"], "noise snr_db", line, minimum=-30, maximum=80) if "snr_db" in table else None
    level = (check.number(table["level_dbfs"], "noise level_dbfs (0 is full scale)", line, minimum=-120, maximum=0)
             if "level_dbfs" in table else None)
    return Noise(kind, snr, level)


def _parse_step(index: int, raw: Any, check: _Checker, at: _Locator, voice: dict[str, Any], base: Path) -> Step:
    line = at.step(index)
    if not isinstance(raw, dict):
        raise check.fail(line, f"step {index + 1} must be a table ([[step]])")
    for key in raw:
        if key not in STEP_KEYS:
            raise check.fail(at.key(key, index), f"unknown key '{key}' in step {index + 1}; "
                                                 f"allowed: {', '.join(STEP_KEYS)}")
    actions = [k for k in ACTIONS if k in raw]
    if len(actions) > 1:
        raise check.fail(at.key(actions[1], index), f"step {index + 1} has both '{actions[0]}' and "
                                                    f"'{actions[1]}'; put each in its own [[step]]")
    if not actions and "expect" not in raw:
        raise check.fail(line, f"step {index + 1} does nothing; give it one of {', '.join(ACTIONS)} or an expect")
    action = actions[0] if actions else None
    where = at.key(action, index) if action else line
    value = raw.get(action) if action else None
    if action == "say":
        value = check.text(value, "say", where)
        if len(value) > MAX_SAY:
            raise check.fail(where, f"say is {len(value)} characters long; split it into lines of at most {MAX_SAY}")
    elif action == "play":
        file = base / check.text(value, "play", where)
        if not file.is_file():
            raise check.fail(where, f"sound file {file} does not exist; paths are relative to the scenario file")
        value = file
    elif action == "silence":
        value = check.number(value, "silence", where, minimum=0, maximum=MAX_SECONDS)
    elif action == "press":
        value = check.text(value, "press", where, ("short", "long"))
    elif action == "switch":
        value = check.text(value, "switch", where, ("engaged", "released"))
    elif action == "owner":
        value = check.text(value, "owner", where, OWNER_ACTIONS)
    elif action == "mqtt" and (not isinstance(value, dict) or len(value) != 1):
        raise check.fail(where, 'mqtt must be a one-key table, e.g. mqtt = { mute = true }')
    elif action == "consent":
        table = check.table(value, "consent", where, ("grant", "revoke"))
        if len(table) != 1:
            raise check.fail(where, 'consent must be one of { grant = "SINK" } or { revoke = "SINK" }')
        ((verb, sink),) = table.items()
        value = (verb, check.text(sink, f"consent {verb}", where, SINKS))
    default_pause = SAY_PAUSE if action in ("say", "play") else 0.0
    pause = check.number(raw.get("pause", default_pause), "pause", at.key("pause", index), minimum=0,
                         maximum=MAX_SECONDS)
    expect = _parse_expect(raw["expect"], check, at.key("expect", index), index) if "expect" in raw else None
    speed = raw.get("speed", voice.get("speed", 150))
    if not isinstance(speed, int) or isinstance(speed, bool) or not 80 <= speed <= 450:
        raise check.fail(at.key("speed", index), f"speed must be words per minute between 80 and 450, not {speed!r}")
    engine = check.text(raw.get("engine", voice.get("engine", "espeak-ng")), "engine", at.key("engine", index),
                        ("espeak-ng", "flite"))
    default_voice = "" if engine == "flite" else "en-us"
    return Step(index=index, line=line, action=action, value=value, pause=pause,
                voice=check.text(raw.get("voice", voice.get("voice", default_voice)) or "slt", "voice",
                                 at.key("voice", index)),
                speed=speed, engine=engine,
                gain_db=check.number(raw.get("gain_db", 0.0), "gain_db", at.key("gain_db", index), minimum=-60,
                                     maximum=40),
                expect=expect)


def _parse_expect(raw: Any, check: _Checker, line: int, index: int) -> Expect:
    table = check.table(raw, f"step {index + 1}'s expect", line, EXPECT_KEYS)
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("events", "no_events", "elsewhere"):
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise check.fail(line, f"expect.{key} must be a list of event names like [\"wake:alexa\", \"recorded\"]")
        for name in value:
            kind = name.split(":", 1)[0]
            if kind not in _event_types():
                raise check.fail(line, f"expect.{key} names unknown event type '{kind}'; known: "
                                       f"{', '.join(sorted(_event_types()))}")
        lists[key] = tuple(value)
    mode = table.get("mode")
    if mode is not None:
        check.text(mode, "expect.mode", line, ("listening", "not_recording", "muted"))
    led = table.get("led")
    if led is not None:
        check.text(led, "expect.led", line)
    mic_open = table.get("mic_open")
    if mic_open is not None and not isinstance(mic_open, bool):
        raise check.fail(line, f"expect.mic_open must be true or false, not {mic_open!r}")
    counts: dict[str, int | None] = {}
    for key in ("recordings", "forwarded_bytes", "elsewhere_recordings"):
        value = table.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise check.fail(line, f"expect.{key} must be a whole number, 0 or more, not {value!r}")
        counts[key] = value
    return Expect(line=line, events=lists["events"], no_events=lists["no_events"], mode=mode, led=led,
                  mic_open=mic_open, recordings=counts["recordings"], forwarded_bytes=counts["forwarded_bytes"],
                  elsewhere=lists["elsewhere"], elsewhere_recordings=counts["elsewhere_recordings"])


def _event_types() -> set[str]:
    from .events import EVENT_TYPES

    return set(EVENT_TYPES)


def bundled_scenarios() -> dict[str, Path]:
    """The scenarios shipped with voxkeep, by name (file stem)."""
    folder = Path(__file__).with_name("scenarios")
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve_scenario(name: str | None) -> Path:
    """A path as given, or a bundled scenario's name ("tour" when none is given)."""
    name = name or "tour"
    bundled = bundled_scenarios()
    if name in bundled and not Path(name).exists():
        return bundled[name]
    return Path(name)


# ------------------------------------------------------------------------------------------- audio

@dataclass(frozen=True)
class Cue:
    """Where a step sits in the generated audio."""

    step: Step
    start: float
    """Audio seconds where the step begins (its action fires here)."""
    end: float
    """Audio seconds where it ends, after its pause (its expectation is judged here)."""


@dataclass
class Rendered:
    audio: np.ndarray
    cues: list[Cue]
    speech_seconds: float


def render(scenario: Scenario, cache: Path) -> Rendered:
    """The whole scenario's audio (16 kHz int16) and where each step falls in it."""
    from .testing.speech import synthesize

    cache.mkdir(parents=True, exist_ok=True)
    pieces: list[np.ndarray] = []
    cues: list[Cue] = []
    voiced: list[np.ndarray] = []
    cursor = 0
    for step in scenario.steps:
        start = cursor
        clip = np.zeros(0, np.float32)
        if step.action == "say":
            path = synthesize(step.value, cache, voice=step.voice, speed=step.speed, pad=0.0, engine=step.engine)
            clip = _read_mono(path) * 10 ** (step.gain_db / 20)
            voiced.append(clip)
        elif step.action == "play":
            clip = _read_mono(step.value) * 10 ** (step.gain_db / 20)
            voiced.append(clip)
        elif step.action == "silence":
            clip = np.zeros(round(step.value * SAMPLE_RATE), np.float32)
        gap = np.zeros(_to_frame(len(clip) + round(step.pause * SAMPLE_RATE)) - len(clip), np.float32)
        pieces += [clip, gap]
        cursor += len(clip) + len(gap)
        cues.append(Cue(step, start / SAMPLE_RATE, cursor / SAMPLE_RATE))
    pieces.append(np.zeros(round(TAIL_SECONDS * SAMPLE_RATE), np.float32))
    mix = np.concatenate(pieces)
    if scenario.noise is not None:
        noise = make_noise(scenario.noise.kind, len(mix), np.random.default_rng(scenario.seed), cache)
        if scenario.noise.level_dbfs is not None:
            target = 10 ** (scenario.noise.level_dbfs / 20)
        else:
            assert scenario.noise.snr_db is not None
            target = active_rms(np.concatenate(voiced)) if voiced else 10 ** (-30 / 20)
            target /= 10 ** (scenario.noise.snr_db / 20)
        mix = mix + noise * (target / max(float(np.sqrt(np.mean(noise ** 2))), 1e-12))
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    if peak > 0.99:  # loud noise on loud speech: scale down rather than clip
        mix *= 0.99 / peak
    audio = np.round(mix * 32767).astype(np.int16)
    return Rendered(audio, cues, sum(len(v) for v in voiced) / SAMPLE_RATE)


def _to_frame(samples: int) -> int:
    """``samples`` rounded up to whole 80 ms frames.

    Every step then starts on a frame boundary: the timeline's times are the daemon's own frame times,
    and a line's wake score does not depend on where within a frame it happened to begin.
    """
    return -(-samples // FRAME_SAMPLES) * FRAME_SAMPLES


def _read_mono(path: Path) -> np.ndarray:
    """A sound file as float32 mono at 16 kHz, whatever its rate and channels."""
    import soundfile
    import soxr

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise ConfigError(f"cannot read sound file {path} ({exc}); give a WAV or FLAC file") from None
    mono = data.mean(axis=1)
    return np.asarray(soxr.resample(mono, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else mono, np.float32)


def active_rms(x: np.ndarray) -> float:
    """RMS over 80 ms frames within 30 dB of the loudest one, so pauses do not dilute the speech level."""
    n = len(x) // FRAME_SAMPLES
    if n == 0:
        return float(np.sqrt(np.mean(x ** 2))) if x.size else 0.0
    power = np.mean(x[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES) ** 2, axis=1)
    active = power[power >= power.max() / 1000]
    return float(np.sqrt(active.mean()))


def make_noise(kind: str, n: int, rng: np.random.Generator, cache: Path) -> np.ndarray:
    """``n`` samples of seeded noise with unit-free scale: white, pink (1/f), brown (1/f²) or babble."""
    if kind == "babble":
        return _babble(n, rng, cache)
    white = rng.standard_normal(n)
    if kind == "white" or n < 2:
        return white.astype(np.float32)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1]
    exponent = 0.5 if kind == "pink" else 1.0  # amplitude ~ f^-1/2 (pink) or f^-1 (brown)
    shaped = np.fft.irfft(spectrum / freqs ** exponent, n)
    return (shaped / shaped.std()).astype(np.float32)


def _babble(n: int, rng: np.random.Generator, cache: Path, talkers: int = 5) -> np.ndarray:
    """Several synthetic voices chatting at once, each from a random point in its own loop of sentences."""
    from .testing.speech import synthesize

    out = np.zeros(n, np.float32)
    for k in range(talkers):
        voice = BABBLE_VOICES[k % len(BABBLE_VOICES)]
        order = rng.permutation(len(BABBLE_LINES))
        speed = int(rng.integers(140, 175))
        loop = np.concatenate([_read_mono(synthesize(BABBLE_LINES[i], cache, voice=voice, speed=speed, pad=0.3))
                               for i in order])
        reps = -(-(n + len(loop)) // len(loop))
        offset = int(rng.integers(0, len(loop)))
        out += np.tile(loop, reps)[offset:offset + n]
    return out


# ------------------------------------------------------------------------------------------- running

@dataclass
class Line:
    """One row of the printed timeline."""

    t: float
    what: str
    detail: str
    mode: str = ""
    led: str = ""


@dataclass
class Failure:
    step: Step
    t: float
    problem: str

    def __str__(self) -> str:
        line = self.step.expect.line if self.step.expect else self.step.line
        return f"expectation of step {self.step.index + 1} (line {line}, t={self.t:.2f} s) failed: {self.problem}"


@dataclass
class Outcome:
    """What a simulation did: for the summary, the exit status and the tests."""

    scenario: Scenario
    events: list[dict[str, Any]]
    failures: list[Failure]
    leds: list[str]
    audio_seconds: float
    wall_seconds: float
    speech_seconds: float
    recordings: list[Any]
    state_dir: Path
    identity: Path | None
    wav: Path
    checks: int = 0
    said: list[str] = field(default_factory=list)
    received: int | None = None
    """Bytes the loopback receiver got (None when the scenario forwarded nowhere through it)."""
    wake_words: tuple[str, ...] = ()
    satellite: str | None = None
    """What the loopback Home Assistant got and played (None without the satellite)."""

    @property
    def ok(self) -> bool:
        return not self.failures


DETAIL_FIELD = {"wake": "wake_word", "wake_rejected": "wake_word", "command": "command", "state": "mode",
                "recorded": "wake_word", "deleted": "cause", "handled": "outcome", "forwarded": "sink",
                "transcript": "sink", "notice": "level", "arbitration": "outcome", "confirm": "command",
                "not_deleted": "reason"}
"""The field after the colon in an expectation's event name, e.g. "handled:recorded"."""


def event_names(event: dict[str, Any]) -> tuple[str, str]:
    """The names an event answers to in expectations: ``type`` and ``type:detail``."""
    kind = event["type"]
    return kind, f"{kind}:{event.get(DETAIL_FIELD.get(kind, ''), '')}"


class _Collector:
    """Keeps every event for the timeline and expectations (runs on its own bus thread)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events.append(event.to_dict())

    def since(self, index: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.events[index:]


class Simulation:
    """One run of a scenario through the real pipeline; ``run()`` returns its Outcome."""

    def __init__(self, scenario: Scenario, settings: Any, *, wav: Path, rendered: Rendered,
                 identity: Path | None, out: TextIO, events_out: str | None = None) -> None:
        from gpiozero.pins.mock import MockFactory

        self.scenario = scenario
        self.settings = settings
        self.wav = wav
        self.rendered = rendered
        self.identity = identity
        self.out = out
        self.events_out = events_out
        self.factory = MockFactory(pin_class=_wired_pin_class())
        self.collector = _Collector()
        self.failures: list[Failure] = []
        self.leds: list[str] = []
        self.checks = 0
        self._pending = list(rendered.cues)
        self._fired: set[int] = set()
        self._printed = 0
        self._checked = 0
        self._app: Any = None
        self._mqtt: _MqttCommander | None = None
        self.receiver: LoopbackReceiver | None = None
        self.home_assistant: Any = None
        """The loopback Home Assistant (voxkeep.testing.homeassistant), for scenarios with the satellite."""
        self._speaker: Any = None
        self._rooms: _OtherRooms | None = None

    def run(self) -> Outcome:
        """Build the daemon on virtual hardware, play the scenario through it and collect what happened."""
        from .app import build_app
        from .audio import WavFileSource

        if needs_loopback(self.scenario, self.settings):
            self.receiver = LoopbackReceiver()
            self.settings = dataclasses.replace(self.settings, forward=dataclasses.replace(
                self.settings.forward, http_url=self.receiver.url))
        if needs_satellite(self.scenario, self.settings):
            self.settings, self._speaker = satellite_settings(self.settings)
        for cue in self._pending:  # missing wiring is a scenario error, found before anything runs
            step = cue.step
            if step.action in ("press", "switch"):
                self._pin("button_pin" if step.action == "press" else "mute_switch_pin", step)
            if step.action == "mqtt" and not self.settings.mqtt.host:
                raise ConfigError(f"{self.scenario.path} line {step.line}: step {step.index + 1} sends an MQTT "
                                  "command, but no broker is set; add mqtt.host (and port, username, "
                                  "password_file) under [settings]")
        switch = self.settings.gpio.mute_switch_pin
        if switch is not None:  # the switch starts released: its contact holds the line low against the pull-up
            self.factory.pin(switch).grounded = True
        if self.scenario.rooms:
            self._rooms = _OtherRooms(self.scenario, self.settings, self.wav, self.rendered)
            self.settings = self._rooms.settings
        app = build_app(self.settings, source=WavFileSource(self.wav), events_out=self.events_out,
                        extra_observers=[self.collector], on_frame=self._on_frame, pin_factory=self.factory,
                        control=False, pa_module=self._speaker)
        if self._speaker is not None:
            # The microphone is a file: it cannot hear the virtual speaker, and the echo guard (timed on the
            # wall clock) would refuse wakes for seconds of wall time, minutes of this fast audio.
            app.daemon.tone_guard = None
        self._app = app
        started = time.monotonic()
        try:
            if any(c.step.action == "mqtt" for c in self._pending):
                self._mqtt = _MqttCommander(self.settings, app.privacy)
            self._header()
            if self._rooms is not None:
                self._rooms.start(app)
            stats = app.run()
        finally:
            if self._rooms is not None:
                self._rooms.close(self.out)
            if self._mqtt is not None:
                self._mqtt.close()
            if self.receiver is not None:
                self.receiver.close()
            if self.home_assistant is not None:
                self.home_assistant.close()
        wall = time.monotonic() - started
        self._flush(final=True)
        self.failures += [Failure(c.step, c.end, f"never judged: the input ended at {stats.audio_seconds:.2f} s")
                          for c in self._pending if c.step.expect is not None]
        said = [str(c.step.value) for c in self.rendered.cues if c.step.action == "say"]
        return Outcome(self.scenario, list(self.collector.events), self.failures, self.leds, stats.audio_seconds,
                       wall, self.rendered.speech_seconds, _list_vault(self.settings), self.settings.state_path,
                       self.identity, self.wav, self.checks, said,
                       None if self.receiver is None else self.receiver.received, tuple(self.settings.wake.words),
                       self._satellite_line())

    # -- on the audio loop ----------------------------------------------------------------------
    def _on_frame(self, t: float) -> None:
        """Fire the steps due by audio time ``t`` and judge the expectations that have come due."""
        if self._app.satellite is not None and self.home_assistant is None:
            self._connect_home_assistant()
        self._flush()
        while self._pending and self._pending[0].start <= t + 1e-9:
            cue = self._pending[0]
            if cue.step.index not in self._fired:
                self._fired.add(cue.step.index)
                self._fire(cue)
            if cue.end > t + 1e-9:
                return
            self._pending.pop(0)
            if cue.step.expect is not None:
                self._judge(cue, t)

    def _fire(self, cue: Cue) -> None:
        step = cue.step
        if step.action in ("say", "play"):
            said = f'"{step.value}"' if step.action == "say" else f"(sound file {step.value.name})"
            deaf = "" if self._app.privacy.mic_open else " - microphone closed, not heard"
            self._emit(Line(cue.start, "said", said + deaf))
        elif step.action == "silence":
            self._emit(Line(cue.start, "quiet", f"{step.value:g} s of silence"))
        elif step.action == "press":
            self._emit(Line(cue.start, "button", f"{step.value} press on the mute button"))
            self._press(self._pin("button_pin", step), long=step.value == "long")
        elif step.action == "switch":
            self._emit(Line(cue.start, "switch", f"hardware mute switch {step.value}"))
            pin = self.factory.pin(self._pin("mute_switch_pin", step))
            if step.value == "engaged":
                pin.drive_high()  # open contact: the pull-up wins, which reads as "muted"
            else:
                pin.drive_low()
        elif step.action == "owner":
            reply = self._app.control({"action": step.value}, time.monotonic() + 10.0)
            self._emit(Line(cue.start, "owner", f"voxkeep {_owner_command(step.value)}: {reply['message']}"))
        elif step.action == "consent":
            answer = self._consent(*step.value)
            self._emit(Line(cue.start, "owner", f"voxkeep consent {' '.join(step.value)}: {answer}"))
        elif step.action == "mqtt":
            assert self._mqtt is not None
            self._emit(Line(cue.start, "mqtt", f"{json.dumps(step.value)}: {self._mqtt.send(step.value)}"))

    def _consent(self, verb: str, sink: str) -> str:
        """The owner's consent change, through the same vault ledger `voxkeep consent` writes."""
        from .forward import revoke_consent

        vault = self._app.vault
        if verb == "revoke":
            return "revoked" if revoke_consent(vault, [sink], "cli") else "was not granted"
        if sink in vault.active_consents():
            return "already granted"
        vault.consent(sink, "grant", "cli")
        return "granted"

    def _settle_forwarding(self) -> None:
        """Let transfers in flight finish before judging: the forwarder sends on its own threads."""
        self._app.forwarder.drain(self.settings.forward.retry_seconds)
        if self.home_assistant is not None:  # streamed, answered by Home Assistant, its reply played
            ha = self.home_assistant
            self._app.satellite.drain(self.settings.forward.retry_seconds)
            ha.wait_played(sum(1 for p in ha.pipelines if p.stopped and p.end_stage == "tts"), timeout=10)
        self._app.bus.drain()

    def _connect_home_assistant(self) -> None:
        """Before the first frame is heard: Home Assistant adds the speaker and runs the satellite."""
        from .testing.homeassistant import LoopbackHomeAssistant, speech_reply

        satellite = self._app.satellite
        self.home_assistant = LoopbackHomeAssistant("127.0.0.1", satellite.port, reply_audio=speech_reply(
            "Tomorrow will be sunny, with a high of twenty degrees.")).start()
        ready = threading.Event()
        for _ in range(200):
            if satellite.connected:
                break
            ready.wait(0.05)
        self._emit(Line(self._app.daemon.t, "HA", f"Home Assistant connected to the satellite on port "
                                                   f"{satellite.port} (describe, run-satellite)"))

    def _satellite_line(self) -> str | None:
        ha = self.home_assistant
        if ha is None:
            return None
        replies = sum(1 for p in ha.pipelines if p.stopped)
        return (f"(the loopback Home Assistant received {ha.audio_bytes} bytes of audio in "
                f"{_count(len(ha.pipelines), 'request')}, answered {replies} and heard its reply played "
                f"{_times(ha.played)}, {self._speaker.seconds_played:.1f} s on the virtual speaker)")

    def _pin(self, key: str, step: Step) -> int:
        pin = getattr(self.settings.gpio, key)
        if pin is None:
            raise ConfigError(f"{self.scenario.path} line {step.line}: step {step.index + 1} needs gpio.{key}, "
                              f"which is not set; add gpio.{key} = <BCM pin> under [settings]")
        return int(pin)

    def _press(self, number: int, *, long: bool) -> None:
        """Press and release the button; gpiozero times a long press on the wall clock, so hold it that long."""
        from .indicators import BUTTON_BOUNCE_SECONDS

        pin = self.factory.pin(number)
        wait = threading.Event().wait
        pin.drive_low()
        wait(self.settings.gpio.long_press_seconds + 0.2 if long else 2 * BUTTON_BOUNCE_SECONDS)
        pin.drive_high()
        wait(2 * BUTTON_BOUNCE_SECONDS)  # the next edge must not look like contact bounce

    def _judge(self, cue: Cue, t: float) -> None:
        expect = cue.step.expect
        assert expect is not None
        self._settle_forwarding()
        self._flush()
        self.checks += 1
        events = self.collector.since(self._checked)
        self._checked += len(events)
        seen = {name for e in events for name in event_names(e)}
        problems = [f"expected event {name}, not seen" for name in expect.events if name not in seen]
        problems += [f"event {name} happened, but must not" for name in expect.no_events if name in seen]
        if self._rooms is not None:
            problems += self._rooms.judge(expect)
        snap = self._app.privacy.snapshot()
        actual: dict[str, Any] = {"mode": snap["mode"], "led": self._led(), "mic_open": snap["mic_open"]}
        if expect.recordings is not None:
            actual["recordings"] = self._app.vault.count()
        if expect.forwarded_bytes is not None:
            actual["forwarded_bytes"] = forwarded_bytes(self.collector.since(0))
            streamed = sum(int(e["size"]) for e in self.collector.since(0)
                           if e["type"] == "forwarded" and e["sink"] == "satellite")
            if self.home_assistant is not None and self.home_assistant.audio_bytes != streamed:
                problems.append(f"the daemon reported {streamed} bytes sent to Home Assistant, but it got "
                                f"{self.home_assistant.audio_bytes}")
            if self.receiver is not None and self.receiver.received != actual["forwarded_bytes"] - streamed:
                problems.append(f"the daemon reported {actual['forwarded_bytes']} bytes forwarded, but the "
                                f"receiver got {self.receiver.received}")
        for key, value in actual.items():
            wanted = getattr(expect, key)
            if wanted is not None and wanted != value:
                problems.append(f"expected {key.replace('_', ' ')} {json.dumps(wanted)}, got {json.dumps(value)}")
        self.failures += [Failure(cue.step, cue.end, problem) for problem in problems]
        mark = "FAILED: " + "; ".join(problems) if problems else "ok: " + expect.describe()
        self._emit(Line(cue.end, "check", mark))

    # -- printing -------------------------------------------------------------------------------
    def _led(self) -> str:
        light = self._app.light
        return light.describe() if light is not None else "none"

    def _flush(self, *, final: bool = False) -> None:
        """Print the events the observers have handled, each with the mode and LED it left behind."""
        if not final:
            self._app.bus.drain()
        events = self.collector.since(self._printed)
        self._printed += len(events)
        for event in events:
            line = describe_event(event)
            if line is None:
                continue
            mode = str(event.get("mode", "")) if final else self._app.privacy.mode.value
            led = "" if final else self._led()
            if led and self.leds[-1] != led:
                self.leds.append(led)
            self._emit(Line(event["t"], *line, mode=mode, led=led))

    def _header(self) -> None:
        s = self.scenario
        self.out.write(f"\n{s.title}  ({s.path.name}: {len(self.rendered.audio) / SAMPLE_RATE:.0f} s of audio, "
                       f"wake words: {', '.join(w.replace('_', ' ') for w in self.settings.wake.words)})\n")
        if s.description:
            self.out.write(_wrap(s.description, "  ") + "\n")
        self.out.write(f"\n  {'time':>6}  {'':8}{'what happened':<{WIDTH}} {'mode':<14} LED\n")
        self.leds.append(self._led())

    def _emit(self, line: Line) -> None:
        """One timeline row; a long description wraps under itself, with mode and LED on its first line."""
        parts = textwrap.wrap(line.detail, WIDTH) or [""]
        rows = [f"  {line.t:6.2f}  {line.what:<8}{parts[0]:<{WIDTH}} {line.mode.replace('_', ' '):<14} {line.led}"]
        rows += [f"  {'':6}  {'':8}{part}" for part in parts[1:]]
        self.out.write("".join(row.rstrip() + "\n" for row in rows))
        self.out.flush()


WIDTH = 60
LED_MEANING = {"off": "listening, keeping what follows a wake word", "blinking": "handling a wake word",
               "on": "nothing is being kept: recording off, or the microphone closed",
               "red": "microphone closed", "amber": "hearing, but keeping nothing",
               "blinking white": "handling a wake word", "blinking amber": "handling a wake word, keeping nothing"}
"""What each thing the virtual LED can show means, for the summary (see voxkeep.indicators)."""
"""Width of the "what happened" column of the timeline."""


class _OtherRooms:
    """The scenario's other speakers: real daemons hearing the same audio quieter, joined over a broker.

    All of them play their file in real time from one moment, since arbitration happens in wall-clock
    windows; each has its own state dir, vault and throwaway owner beside the scenario's work directory.
    """

    def __init__(self, scenario: Scenario, settings: Any, wav: Path, rendered: Rendered) -> None:
        from .app import build_app
        from .audio import WavFileSource
        from .testing.mosquitto import LoopbackMosquitto
        from .testing.speech import write_wav

        if not settings.arbitration.enabled:
            raise ConfigError(f"{scenario.path}: 'rooms' are other speakers of the home; add "
                              "arbitration.enabled = true under [settings]")
        self.broker = None
        mqtt = settings.mqtt
        if not scenario.settings.get("mqtt", {}).get("host"):  # (scenario_settings put a stand-in there)
            self.broker = LoopbackMosquitto()
            mqtt = dataclasses.replace(mqtt, host="127.0.0.1", port=self.broker.port, tls=False, username="",
                                       password_file="")
        mqtt = dataclasses.replace(mqtt, device_id=mqtt.device_id or "here")
        self.settings = dataclasses.replace(settings, mqtt=mqtt, audio=dataclasses.replace(settings.audio,
                                                                                           realtime=True))
        self.rooms = scenario.rooms
        self.apps: list[Any] = []
        self.collectors: list[_Collector] = []
        self._checked: list[int] = []
        self._threads: list[threading.Thread] = []
        for room in self.rooms:
            home = wav.parent / room.device
            home.mkdir(exist_ok=True)
            own = dataclasses.replace(self.settings, state_dir=str(home / "state"),
                                      mqtt=dataclasses.replace(mqtt, device_id=room.device))
            throwaway_owner(own, home)
            quieter = np.round(rendered.audio * 10 ** (room.gain_db / 20)).astype(np.int16)
            collector = _Collector()
            self.apps.append(build_app(own, source=WavFileSource(write_wav(home / wav.name, quieter)),
                                       extra_observers=[collector], control=False))
            self.collectors.append(collector)
            self._checked.append(0)

    def start(self, main: Any) -> None:
        """Start the other speakers; ``main`` (the scenario's own) is run by the caller."""
        origin = time.monotonic() + 1.0  # every daemon's start-up (broker, vault) is done by then
        main.daemon.pace_origin = origin
        for app in self.apps:
            app.daemon.pace_origin = origin
            self._threads.append(threading.Thread(target=app.run, name="other-room", daemon=True))
            self._threads[-1].start()

    def judge(self, expect: Expect) -> list[str]:
        problems = []
        for i, (room, collector) in enumerate(zip(self.rooms, self.collectors, strict=True)):
            self.apps[i].bus.drain()
            events = collector.since(self._checked[i])
            self._checked[i] += len(events)
            seen = {name for e in events for name in event_names(e)}
            problems += [f"expected event {name} on {room.device}, not seen" for name in expect.elsewhere
                         if name not in seen]
        if expect.elsewhere_recordings is not None:
            held = sum(app.vault.count() for app in self.apps)
            if held != expect.elsewhere_recordings:
                problems.append(f"expected elsewhere recordings {expect.elsewhere_recordings}, got {held}")
        return problems

    def close(self, out: TextIO) -> None:
        for app in self.apps:
            app.daemon.stop.set()
        for thread in self._threads:
            thread.join(30)
        for room, app, collector in zip(self.rooms, self.apps, self.collectors, strict=True):
            events = collector.since(0)
            kept = sum(e["type"] == "recorded" for e in events) - sum(  # (its vault is closed by now)
                int(e["count"]) for e in events if e["type"] == "deleted")
            outcomes = [e["outcome"] for e in events if e["type"] == "arbitration"]
            out.write(f"  {room.device} ({room.gain_db:+.0f} dB): {_count(len(outcomes), 'wake')} heard, answered "
                      f"{outcomes.count('won')}, left {outcomes.count('lost')} to a nearer speaker, "
                      f"{_count(kept, 'recording')} kept, mode "
                      f"{app.privacy.mode.value.replace('_', ' ')}\n")
        if self.broker is not None:
            self.broker.close()


def forwarded_bytes(events: list[dict[str, Any]]) -> int:
    """Bytes that left the device, from ``forwarded`` events (issue 6's sinks publish them)."""
    return sum(int(e["size"]) for e in events if e["type"] == "forwarded")


def describe_event(e: dict[str, Any]) -> tuple[str, str] | None:
    """An event in the owner's words, as (tag, text); None for events the timeline leaves out."""
    kind = e["type"]
    if kind == "wake":
        return "wake", f"woke up: \"{e['wake_word'].replace('_', ' ')}\" (score {e['score']:.2f})"
    if kind == "wake_rejected":
        return "reject", f"ignored a near-miss of \"{e['wake_word']}\" ({e['reason']})"
    if kind == "command":
        return "command", f"understood: {e['command'].replace('_', ' ')}"
    if kind == "recorded":
        return "stored", f"kept {e['duration']:.1f} s of audio, encrypted to the owner"
    if kind == "deleted":
        return "deleted", f"deleted {_count(int(e['count']), 'recording')} ({e['cause']})"
    if kind == "confirm":
        return "confirm", f"asks back (\"confirm?\" tone): say \"yes\" within {e['seconds']:g} s to delete"
    if kind == "not_deleted":
        return "kept", f"deleted nothing ({e['reason']})"
    if kind == "handled" and e["outcome"] == "not_recorded":
        return "dropped", f"kept nothing: {e['reason']}"
    if kind == "state":
        mic = "microphone open" if e["mic_open"] else "microphone closed"
        return "state", f"{e['mode'].replace('_', ' ')}, {mic} ({e['cause']})"
    if kind == "forwarded":
        where = "Home Assistant (the satellite)" if e["sink"] == "satellite" else e["sink"]
        return "sent", f"{e['size']} bytes to {where} (consented)"
    if kind == "transcript":
        who = "Home Assistant" if e["sink"] == "satellite" else e["sink"]
        return "heard", f"{who} understood: \"{e['text']}\"" + (" (its spoken reply is played)" if
                                                                  e["sink"] == "satellite" else "")
    if kind == "notice":
        return "notice", e["message"]
    if kind == "arbitration":
        if e["outcome"] == "lost":
            return "lost", f"{e['winner']} heard it better (by {e['margin']:.1f} dB): kept nothing"
        beat = f"{_count(int(e['claims']) - 1, 'other speaker')} (by {e['margin']:.1f} dB)" if e["claims"] > 1 \
            else f"no other speaker ({e['reason'] or 'nobody else claimed it'})"
        return "won", f"answers: heard it better than {beat}"
    return None


def _owner_command(action: str) -> str:
    return action.replace("_", " ") if action.startswith("recording") else action


def _wrap(text: str, indent: str, width: int = 100) -> str:
    return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent)


def _list_vault(settings: Any) -> list[Any]:
    from .vault import Vault

    with Vault(settings.state_path, settings.vault) as vault:
        return vault.list()


def _wired_pin_class() -> type:
    """gpiozero's PWM mock pin, plus a contact to ground (gpiozero is imported here so --help stays instant)."""
    from gpiozero.pins.mock import MockPWMPin

    class WiredPin(MockPWMPin):
        """A closed contact to ground outweighs the internal pull-up, as on a real board."""

        grounded = False

        def _set_pull(self, value: str) -> None:
            super()._set_pull(value)
            if self.grounded and self.function == "input":
                self.drive_low()

    return WiredPin


class _MqttCommander:
    """Sends a scenario's MQTT commands to the daemon's broker, as Home Assistant would, and waits for the effect."""

    TIMEOUT = 5.0

    def __init__(self, settings: Any, privacy: Any) -> None:
        import os

        from .mqtt import Topics, make_client, resolve_device_id

        self.topics = Topics(f"voxkeep/{resolve_device_id(settings.mqtt)}", settings.mqtt.discovery_prefix.rstrip("/"))
        self._answer: list[str] = []
        self._answered = threading.Event()
        self._online = threading.Event()
        privacy.subscribe(lambda event: self._reply(f"now {event.mode.replace('_', ' ')}"))
        self._client = make_client(settings.mqtt, f"voxkeep-simulate-{os.getpid()}")
        self._client.on_connect = lambda client, *_: client.subscribe([(self.topics.error, 1),
                                                                       (self.topics.availability, 1)])
        self._client.on_message = self._message
        try:
            self._client.connect(settings.mqtt.host, settings.mqtt.port)
        except OSError as exc:
            raise ConfigError(f"scenario MQTT steps cannot reach the broker {settings.mqtt.host}:"
                              f"{settings.mqtt.port} ({exc}); start it or fix [settings] mqtt.host/port") from None
        self._client.loop_start()

    def _message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        if msg.topic == self.topics.availability:  # the daemon's bridge says it is (still) connected
            if msg.payload == b"online":
                self._online.set()
            else:
                self._online.clear()
            return
        self._reply(str(json.loads(msg.payload).get("message", "error")))

    def _reply(self, text: str) -> None:
        self._answer.append(text)
        self._answered.set()

    def send(self, command: dict[str, Any]) -> str:
        """Publish ``command`` on <base>/set; the daemon's answer (a new mode or its error), or a timeout note."""
        if not self._online.wait(self.TIMEOUT):
            return f"not sent: the speaker did not come online on the broker within {self.TIMEOUT:g} s"
        self._answered.clear()
        self._answer.clear()
        self._client.publish(self.topics.set, json.dumps(command), qos=1).wait_for_publish(self.TIMEOUT)
        if not self._answered.wait(self.TIMEOUT):
            return f"no change within {self.TIMEOUT:g} s"
        return self._answer[0]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


# ------------------------------------------------------------------------------------------- setup and summary

def scenario_settings(scenario: Scenario) -> dict[str, Any]:
    """DEFAULT_SETTINGS with the scenario's [settings] on top (section by section)."""
    merged: dict[str, Any] = {k: dict(v) for k, v in DEFAULT_SETTINGS.items()}
    for key, value in scenario.settings.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    if scenario.rooms and not merged.get("mqtt", {}).get("host"):
        merged["mqtt"] = {**merged.get("mqtt", {}), "host": "127.0.0.1"}  # the loopback broker the simulation starts
    return merged


def settings_error(scenario: Scenario, exc: ConfigError) -> ConfigError:
    """A config error pointed at its line in the scenario's [settings]; unchanged if it came from elsewhere."""
    text = scenario.path.read_text(encoding="utf-8")
    match = re.search(r"config key '([^']+)'", str(exc))
    line = _Locator(text).find(match.group(1).split(".")[-1].split("[")[0]) if match else None
    return ConfigError(f"{scenario.path} line {line} ([settings]): {exc}") if line else exc


def throwaway_owner(settings: Any, workdir: Path) -> Path | None:
    """Register a fresh age key as the vault's owner, its secret in ``workdir`` (outside the state dir).

    None when the state dir already has an owner: recordings then go to that owner, as they would on a
    real device, and the simulation never sees a secret key.
    """
    from datetime import UTC, datetime

    from .owner import generate_identity, identity_file_text, write_identity_file
    from .vault import Vault

    with Vault(settings.state_path, settings.vault) as vault:
        if vault.owner_registered():
            return None
        secret, recipient = generate_identity()
        identity = workdir / "owner-identity.txt"
        write_identity_file(identity, identity_file_text(secret, recipient, datetime.now(UTC).isoformat(
            timespec="seconds")), settings.state_path)
        vault.add_recipient(recipient)
    return identity


def summary(o: Outcome, *, workdir: Path) -> str:
    """The story of the run in plain words, and the commands to look at what was stored."""
    events = o.events
    wakes = [e for e in events if e["type"] == "wake"]
    commands = [e["command"].replace("_", " ") for e in events if e["type"] == "command"]
    stored = [e for e in events if e["type"] == "recorded"]
    dropped: dict[str, int] = {}
    for e in events:
        if e["type"] == "handled" and e["outcome"] == "not_recorded":
            dropped[e["reason"]] = dropped.get(e["reason"], 0) + 1
    deleted = sum(int(e["count"]) for e in events if e["type"] == "deleted")
    speed = o.audio_seconds / o.wall_seconds if o.wall_seconds else 0.0
    words = sorted({e["wake_word"].replace("_", " ") for e in wakes})
    did = [f"woke {_times(len(wakes))}" + (f" ({', '.join(words)})" if words else ""),
           f"understood {_count(len(commands), 'spoken command')}" + (f": {', '.join(commands)}" if commands else ""),
           f"kept {_count(len(stored), 'recording')}, deleted {deleted}"]
    did += [f"kept nothing {_times(n)}: {reason}" for reason, n in dropped.items()]
    rejected = sum(1 for e in events if e["type"] == "wake_rejected")
    if rejected:
        did.append(f"ignored {_count(rejected, 'near-miss', 'near-misses')} of a wake word")
    sent = forwarded_bytes(events)
    did.append(f"sent {sent} bytes off the device" if sent else "sent nothing off the device")
    if o.received is not None:
        did.append(f"(the stand-in home server received {o.received} bytes)")
    if o.satellite is not None:
        did.append(o.satellite)
    lines = ["", "What happened",
             f"  said:     {len(o.said)} line(s), {o.speech_seconds:.0f} s of speech in {o.audio_seconds:.0f} s of "
             f"audio (simulated in {o.wall_seconds:.1f} s, {speed:.0f}x real time)",
             "  speaker:  " + "\n            ".join(did)]
    if o.recordings:
        lines.append(f"  stored:   {_count(len(o.recordings), 'recording')} in the vault, each encrypted to the "
                     "owner's age key (the device itself cannot open them):")
        lines += [f"              {r.id}  {r.duration:5.1f} s  wake word {r.wake_word}" for r in o.recordings]
    else:
        lines.append("  stored:   nothing in the vault")
    lines.append(f"  LED:      {' -> '.join(o.leds)}")
    lines += [f"            {led:>8} = {LED_MEANING[led]}" for led in dict.fromkeys(o.leds) if led in LED_MEANING]
    verdict = "all met" if o.ok else f"{len(o.failures)} FAILED"
    lines.append(f"  checks:   {_count(o.checks, 'expectation')}, {verdict}")
    state = f"--state-dir {o.state_dir}"
    lines += ["", "How to look at it",
              f"  voxkeep recordings list {state}",
              f"  voxkeep export {state} --out {workdir / 'export.zip'}"]
    if o.identity is not None:
        lines.append(f"  voxkeep verify-export {workdir / 'export.zip'} --identity {o.identity}")
    words = "".join(f" -w {w}" for w in o.wake_words)
    lines.append(f"  voxkeep run --input {o.wav}{words} --events -     (replay the same audio)")
    if o.identity is not None:
        lines.append(f"  The owner's secret key is {o.identity}; remove {workdir} when done.")
    return "\n".join(lines) + "\n"


def _count(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _times(n: int) -> str:
    return {0: "never", 1: "once", 2: "twice"}.get(n, f"{n} times")


def needs_satellite(scenario: Scenario, settings: Any) -> bool:
    """Whether the scenario uses the Home Assistant satellite (sets its uri or consents to it)."""
    return bool(settings.satellite.uri) or any(s.action == "consent" and s.value[1] == "satellite"
                                               for s in scenario.steps)


def satellite_settings(settings: Any) -> tuple[Any, Any]:
    """The satellite on loopback for the loopback Home Assistant, and a virtual speaker for its replies."""
    from .testing.fakes import FakeSpeaker

    speaker = FakeSpeaker(name=settings.audio.output_device or "virtual speaker")
    sat = dataclasses.replace(settings.satellite, uri="tcp://127.0.0.1:0", allow=["127.0.0.1"])
    audio = dataclasses.replace(settings.audio, output_device=settings.audio.output_device or speaker.name)
    return dataclasses.replace(settings, satellite=sat, audio=audio), speaker


def needs_loopback(scenario: Scenario, settings: Any) -> bool:
    """Whether the scenario consents to http forwarding with no http_url of its own to send to."""
    wants_http = any(s.action == "consent" and s.value == ("grant", "http") for s in scenario.steps)
    return wants_http and not settings.forward.http_url


class LoopbackReceiver:
    """A stand-in for a home server on 127.0.0.1 that accepts utterance WAVs and counts what arrived.

    It lets "bytes forwarded" be measured where they land, not only where the daemon says it sent them.
    """

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.received = 0
        self.requests = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:  # counted before answering, so a drained forwarder means counted
                    receiver.received += len(body)
                    receiver.requests += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass  # the timeline reports transfers; no access log on stderr

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/utterance"
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-sink", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
