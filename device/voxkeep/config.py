"""Settings: parsed once from one TOML file at start-up, frozen, and passed down.

Each section is a frozen dataclass; the docstring under each field is the documentation of that key
(``device/config.example.toml`` shows every key with its default, and a test keeps the
two in step). Command-line flags are applied on top as overrides of the same shape as the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

SYSTEM_CONFIG = Path("/etc/voxkeep/config.toml")


def user_config_path() -> Path:
    """The per-user config file, used when the system one does not exist."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "voxkeep" / "config.toml"


def default_state_dir() -> Path:
    """systemd's StateDirectory when run as a service, else the user's XDG state dir."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "voxkeep"


def default_models_dir() -> Path:
    """Where ``voxkeep models fetch`` installs models unless told otherwise."""
    if os.environ.get("VOXKEEP_MODELS_DIR"):
        return Path(os.environ["VOXKEEP_MODELS_DIR"])
    if os.environ.get("STATE_DIRECTORY"):
        return default_state_dir() / "models"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voxkeep" / "models"


@dataclass(frozen=True)
class AudioSettings:
    input: str = "mic"
    """Where audio comes from: "mic", a path to a WAV file, or "-" for raw S16_LE 16 kHz mono on stdin."""
    device: str = ""
    """Microphone: an input device index, or a substring of its name; "" for the system default."""
    realtime: bool = False
    """Pace file and stdin input at real time instead of as fast as the CPU allows."""
    output_device: str = ""
    """Speaker for confirmation tones: device index or name substring; "" plays no tones."""


@dataclass(frozen=True)
class WakeSettings:
    words: list[str] = field(default_factory=lambda: ["hey_jarvis"])
    """Wake words: bundled names (alexa, hey_jarvis, hey_mycroft, okay_nabu, ...) or paths to .onnx (openWakeWord)
    or .tflite (microWakeWord, with its .json beside it) models."""
    engine: str = "auto"
    """Which engine hears the words: "auto" (each bundled word on the engine that heard it best: hey_mycroft on
    microWakeWord, the others on openWakeWord), "openwakeword", "microwakeword" (a fraction of the CPU;
    Apache-2.0 words) or "both" (microWakeWord listens, openWakeWord must agree). A word only one engine has
    runs on that one."""
    engines: dict[str, str] = field(default_factory=dict)
    """Per-word override of engine, e.g. { alexa = "both" }."""
    threshold: float = 0.5
    """Score (0-1) above which an openWakeWord word counts, for every word without its own threshold.
    microWakeWord words default to their model's own cutoff (hey_jarvis 0.97, okay_nabu 0.85, alexa 0.9)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Per-word thresholds, e.g. { alexa = 0.7 }."""
    refractory_seconds: float = 2.0
    """After a wake, the same word is ignored this long, so one utterance gives one event."""
    verify: bool = True
    """Check each wake a second time before anything is kept (see README, false wakes)."""
    verify_frames_after: int = 2
    """Frames (80 ms each) the second look waits after a wake for the score to confirm it."""
    verify_peak: float = 0.5
    """Score the wake word must reach within those frames, else "weak_peak"; 0.5 (the default) checks nothing more."""
    verify_sure: float = 0.98
    """A wake whose score stays at or above this on every frame from the wake to the second look is kept
    without the classifier (1.0: never). On the tune split no real-speech false wake held 0.9 for those
    frames; a request said right after the last one did, where the classifier refused it."""
    verify_peaks: dict[str, float] = field(default_factory=dict)
    """Per-word override of verify_peak, e.g. { hey_jarvis = 0.9 }."""
    verify_rescore: float = 0.1
    """Least score on a fresh re-run of the model over the buffered 2 s; below it: "rescore_disagrees".
    Applies to words without a classifier (custom models, or verify_classifier = false)."""
    verify_classifier: bool = True
    """Ask the shipped per-word classifier where its word needs one (alexa, hey_marvin: bare, they wake more
    than once an hour on real speech); no: "classifier_rejects". hey_jarvis and hey_mycroft meet that bar
    bare, so their wakes stand on the score unless given a threshold below."""
    verify_classifier_thresholds: dict[str, float] = field(default_factory=dict)
    """Per-word override of the classifier's tuned threshold (0-1, higher rejects more), e.g. { alexa = 0.7 };
    naming hey_jarvis or hey_mycroft here turns their classifier on (tuned: 0.27, 0.72)."""
    verify_witness: float = 0.5
    """When the classifier refuses an openWakeWord wake of a word microWakeWord also has (alexa by default), the
    wake is kept if microWakeWord's model, run over the same buffered audio, scores this (0-1) or more: two
    engines trained apart seldom share a mistake, and the classifier refuses voices unlike its training.
    0 turns this off, and faint wakes too. Chosen on the TUNE split: 0.5 is above every synthesized near miss
    there (0.49 at most) and every refused real-speech wake but one (0.92), so alexa wakes falsely 0.45 times an
    hour there."""
    faint_floor: float = 0.1
    """An openWakeWord score that peaks between this and the word's threshold is a wake too when microWakeWord's
    model of the word, run over the buffered audio, scores faint_witness: a voice or room the network hears
    only faintly is still the owner's, and the independent engine tells it from a near miss. For words both
    engines have (hey_jarvis, alexa), with verify on, at the default threshold (a threshold you set, in threshold
    or thresholds, is kept: no faint wakes below it); 0 turns it off."""
    faint_witness: float = 0.95
    """microWakeWord's score (0-1) over the buffered audio that a faint rise needs to be a wake. Chosen on the
    TUNE split: at 0.95 faint wakes added no false wake in 2.2 h of real speech and none of the synthesized near
    misses ("hey travis", "hey jasper"; 0.5 let 7 through) while hey_jarvis heard 0.769 of the phrases against
    bare openWakeWord's 0.726 (docs/wake.md, sixth round)."""
    agree_micro_threshold: float = 0.7
    """engine "both": microWakeWord score that proposes a wake for openWakeWord to confirm (below the models' own
    cutoffs: the agreement removes the false ones; tuned on the TUNE split, docs/wake-engines.md)."""
    agree_threshold: float = 0.05
    """engine "both": openWakeWord's score over the buffered audio must reach this to keep a microWakeWord wake."""
    agree_frames: int = 20
    """engine "both": how many of the last frames (80 ms each) of the buffered audio may show that score."""
    cascade_threshold: float = 0.0
    """Above 0, openWakeWord words that microWakeWord also has (hey_jarvis, alexa, hey_mycroft) are listened for
    by microWakeWord's cheap model first, and openWakeWord's networks run only within 2 s of a frame where its
    score reached this (replaying the 2 s before, so the scores are openWakeWord's own). Far less CPU wherever
    people talk, but it misses the phrases microWakeWord does not stir for at all: at 0.01 on the REPORT split
    recall 0.521 against 0.553 (espeak-ng voices 0.333 against 0.400), for fewer false wakes
    (docs/wake-engines.md), so it is off (0) by default."""


@dataclass(frozen=True)
class CommandSettings:
    max_seconds: float = 4.0
    """Longest request after a wake word, counted from where it begins."""
    wait_seconds: float = 4.0
    """How long after a wake word the speaker waits for the request to begin. People often say the wake
    word, wait for the LED, then speak: with 2 s, a request after a pause of 2 s or more was never heard."""
    silence_seconds: float = 0.7
    """Silence that ends the command window early (twice as long in a noisy room, where soft syllables
    sound like silence)."""
    allow_voice_resume: bool = False
    """Obey "start recording again" by voice. Off: anyone in the room could say it."""
    min_score: float = -6.75
    """How closely speech must fit a command to be obeyed: mean per-frame acoustic fit of the command plus
    half that of its worst word, in nats per frame (0 is perfect). Raise it toward 0 to reject more;
    bench/commands_eval.py measures both sides. -4.65 rejects near-miss sentences far better but also
    most espeak-ng speech, which the test suites speak; the default still accepts it."""
    delete_min_score: float = -6.0
    """The same bar for "delete what I just said" and "delete everything I said today" when they are not asked
    back (confirm_deletes = false), and for the "yes" that confirms one: higher than min_score because a false
    delete destroys recordings and cannot be undone (-4.15 goes with -4.65)."""
    filler_words: int = 0
    """How many common English words (from pocketsphinx's own language model) a second, open search may
    hear instead of a command; 0 turns it off. With it on, a command is obeyed only if that search hears
    the same command words, which rejects near misses like "delete what I just sent"; it costs one
    more decode per window and misses more commands from voices that fit the model poorly (espeak-ng)."""
    command_weight: float = 8.0
    """Head start of the command words over the common words in the open search, in log10 of unigram
    probability: higher obeys more unclear commands and rejects fewer near misses."""
    delete_filler_words: int = 0
    """The same open search for the commands that delete only (when filler_words is 0), e.g. 1000: a
    deletion the owner did not ask for cannot be undone, and no score bar tells "delete everything I saved
    today" from the command. On TUNE it stopped every false deletion but obeyed only a quarter of the real
    ones (docs/commands.md), so it is off by default; costs about 0.8 s at start-up."""
    confirm_deletes: bool = True
    """Ask back before a voice deletion: a "confirm?" tone, then only a clear "yes" (said within
    confirm_seconds, no wake word needed) deletes; "no", silence or anything else keeps the recordings.
    Near misses ("delete what I just sent") fit the command as well as the command does, so without this
    a sentence the owner never meant as a command can destroy recordings. Off: deletions are one-shot."""
    confirm_seconds: float = 4.0
    """How long the speaker listens for the "yes" after the confirmation tone; the answer is never stored."""


@dataclass(frozen=True)
class GpioSettings:
    led_pin: int | None = None
    """BCM pin of the single status LED (on = not recording or muted; blinks while handling a wake)."""
    rgb_pins: list[int] = field(default_factory=list)
    """BCM pins [red, green, blue] of an optional RGB LED."""
    rgb_common_anode: bool = False
    """True for a common-anode RGB LED (common leg to 3.3 V); false for common cathode (to GND)."""
    button_pin: int | None = None
    """BCM pin of the mute button (press toggles mute; long press re-enables recording)."""
    mute_switch_pin: int | None = None
    """BCM pin of a hardware mute switch; while engaged, no software path can unmute."""
    long_press_seconds: float = 2.0
    """How long a press must be to count as a long press."""
    pin_factory: str = ""
    """gpiozero pin factory ("lgpio", "mock", ...); "" picks the real one, or mock with no GPIO."""


@dataclass(frozen=True)
class VaultSettings:
    retention_days: int = 30
    """Days recordings are kept; 0 keeps nothing past command recognition."""
    max_utterance_seconds: float = 10.0
    """Longest recording after a wake word, counted from where the request begins (up to commands.wait_seconds in)."""
    preroll_seconds: float = 1.5
    """Audio kept from before the wake event: the wake phrase itself, not more."""


@dataclass(frozen=True)
class MqttSettings:
    host: str = ""
    """Broker host name; "" disables MQTT."""
    port: int = 1883
    """Broker port (usually 8883 with TLS)."""
    tls: bool = False
    """Connect with TLS."""
    ca_file: str = ""
    """CA certificate that signed the broker's certificate; "" uses the system store."""
    cert_file: str = ""
    """Client certificate for TLS client authentication (optional)."""
    key_file: str = ""
    """Private key of the client certificate."""
    username: str = ""
    """Broker user name; "" for none."""
    password_file: str = ""
    """File holding the broker password (e.g. a systemd credential); never put it in this file."""
    client_id: str = ""
    """MQTT client id; "" uses voxkeep-<device_id>-<random, kept in the state dir>. A broker drops a session
    when another client connects with its id, so choose one nobody can guess."""
    device_id: str = ""
    """Name of this speaker in topics; "" uses the host name."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant discovery prefix."""
    reconnect_min_seconds: float = 1.0
    """First wait before reconnecting to a broker that is down; doubles on each failure."""
    reconnect_max_seconds: float = 60.0
    """Longest wait between reconnection attempts."""


@dataclass(frozen=True)
class ForwardSettings:
    SINKS = ("mqtt", "http", "wyoming", "satellite")  # not a key: every sink a consent can name (voxkeep.forward)

    mqtt_topic: str = ""
    """Topic that receives utterance WAVs when the "mqtt" sink is consented."""
    http_url: str = ""
    """URL that receives a POST of each utterance WAV when the "http" sink is consented (https:// is verified)."""
    http_ca_file: str = ""
    """CA certificate that signed the HTTPS server's certificate (a home server's own CA); "" uses the system
    store. Verification is never switched off."""
    wyoming_uri: str = ""
    """tcp://host:port of a Wyoming speech-to-text server for the "wyoming" sink."""
    timeout_seconds: float = 10.0
    """Longest one attempt may take in all (connect, send, answer), however slowly the sink trickles."""
    retry_seconds: float = 60.0
    """How long a failed delivery is retried (with doubling waits) before it is dropped and audited; the audio
    waits only in memory, never on disk."""


@dataclass(frozen=True)
class SatelliteSettings:
    uri: str = ""
    """tcp://address:port on which Home Assistant's Wyoming integration reaches this speaker as a voice
    satellite, e.g. "tcp://0.0.0.0:10700"; "" (the default) turns the satellite off. Audio is sent only with
    'voxkeep consent grant satellite'."""
    name: str = ""
    """Name Home Assistant shows for this satellite; "" uses "voxkeep <host name>"."""
    area: str = ""
    """Area Home Assistant suggests for the satellite (e.g. "Kitchen"); "" for none."""
    allow: list[str] = field(default_factory=list)
    """Addresses (or networks like "192.168.1.0/24") of the Home Assistant that may connect; every other peer
    is refused and logged. Required when uri is set."""
    zeroconf: bool = False
    """Announce the satellite on the local network (mDNS _wyoming._tcp) so Home Assistant discovers it; needs
    the python-zeroconf package (pip install zeroconf). Off by default: it tells every device on the network that
    a voice satellite is here; add it in Home Assistant by host and port instead."""
    max_reply_seconds: float = 60.0
    """Longest spoken reply from Home Assistant that is played; the rest is cut off (the reply waits in memory)."""


@dataclass(frozen=True)
class ArbitrationSettings:
    enabled: bool = False
    """Several speakers in one home answer once: on a wake each claims it on the broker and only the one
    that heard it loudest (its room's noise taken out) answers; the others keep nothing. Needs [mqtt]; with
    the broker down each speaker answers alone."""
    window_ms: int = 150
    """How long a speaker waits for the other speakers' claims after its wake, in milliseconds. Clocks may
    differ by up to 500 ms (use NTP); a claim arriving after this window is too late to count."""


@dataclass(frozen=True)
class Settings:
    state_dir: str = ""
    """Where state, the vault and the control socket live; "" for the default (see README)."""
    models_dir: str = ""
    """Where verified models are installed; "" for the default (see README)."""
    log_level: str = "info"
    """debug, info, warning or error."""
    audio: AudioSettings = field(default_factory=AudioSettings)
    wake: WakeSettings = field(default_factory=WakeSettings)
    commands: CommandSettings = field(default_factory=CommandSettings)
    gpio: GpioSettings = field(default_factory=GpioSettings)
    vault: VaultSettings = field(default_factory=VaultSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    satellite: SatelliteSettings = field(default_factory=SatelliteSettings)
    arbitration: ArbitrationSettings = field(default_factory=ArbitrationSettings)

    @property
    def state_path(self) -> Path:
        """The resolved state directory."""
        return Path(self.state_dir).expanduser() if self.state_dir else default_state_dir()

    @property
    def models_path(self) -> Path:
        """The resolved models directory."""
        return Path(self.models_dir).expanduser() if self.models_dir else default_models_dir()


def _type_name(tp: Any) -> str:
    if isinstance(tp, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    if origin is dict:
        return f"a table of {_type_name(typing.get_args(tp)[1])}s"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _check(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp``, or raise ConfigError naming the key and what is allowed."""
    if isinstance(tp, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check(value, inner[0], key)
    origin = typing.get_origin(tp)
    ok: bool
    if origin is list:
        ok = isinstance(value, list)
        if ok:
            return [_check(v, typing.get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        ok = isinstance(value, dict)
        if ok:
            return {str(k): _check(v, typing.get_args(tp)[1], f"{key}.{k}") for k, v in value.items()}
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"config key '{key}' is far too large a number; use a sensible value") from None
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, not {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            allowed = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{full}'; allowed here: {allowed}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' must be a table ([{full}])")
            kwargs[key] = _build(tp, value, f"{full}.")
        else:
            kwargs[key] = _check(value, tp, full)
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "thresholds":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def find_config(explicit: str | None) -> Path | None:
    """The config file to read: --config, else /etc/voxkeep/config.toml, else the user's; None if none."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; fix the --config path")
        return path
    for candidate in (SYSTEM_CONFIG, user_config_path()):
        if candidate.is_file():
            return candidate
    return None


def parse_config(text: str, source: str = "config") -> dict[str, Any]:
    """Parse TOML text, turning syntax errors into one line that names the file and line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}; fix the TOML syntax there") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read; a config needs only a few levels") from None


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``path`` (if any), apply command-line ``overrides`` and validate everything once."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        data = parse_config(text, str(path))
    data = _merge(data, overrides or {})
    settings: Settings = _build(Settings, data, "")
    validate(settings)
    return settings


NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "wake.threshold": (0.0, 1.0), "wake.thresholds.*": (0.0, 1.0), "wake.refractory_seconds": (0.0, 60.0),
    "wake.verify_frames_after": (0, 25), "wake.verify_peak": (0.0, 1.0), "wake.verify_sure": (0.0, 1.0),
    "wake.verify_peaks.*": (0.0, 1.0), "wake.verify_rescore": (0.0, 1.0),
    "wake.verify_classifier_thresholds.*": (0.0, 1.0), "wake.verify_witness": (0.0, 1.0),
    "wake.faint_floor": (0.0, 1.0), "wake.faint_witness": (0.0, 1.0),
    "wake.agree_threshold": (0.0, 1.0), "wake.agree_frames": (1, 20),
    "wake.agree_micro_threshold": (0.0, 1.0), "wake.cascade_threshold": (0.0, 1.0),
    "commands.max_seconds": (0.5, 30.0), "commands.wait_seconds": (0.5, 10.0),
    "commands.silence_seconds": (0.08, 10.0),
    "commands.min_score": (-100.0, 0.0), "commands.delete_min_score": (-100.0, 0.0),
    "commands.confirm_seconds": (1.0, 15.0),
    "commands.filler_words": (0, 100_000), "commands.command_weight": (0.0, 50.0),
    "commands.delete_filler_words": (0, 100_000),
    "gpio.led_pin": (0, 53), "gpio.rgb_pins.*": (0, 53), "gpio.button_pin": (0, 53), "gpio.mute_switch_pin": (0, 53),
    "gpio.long_press_seconds": (0.1, 60.0),
    "vault.retention_days": (0, 36_500), "vault.max_utterance_seconds": (0.5, 300.0),
    "vault.preroll_seconds": (0.0, 10.0),
    "mqtt.port": (1, 65_535), "mqtt.reconnect_min_seconds": (0.01, 3600.0),
    "mqtt.reconnect_max_seconds": (0.01, 86_400.0),
    "forward.timeout_seconds": (0.1, 600.0), "forward.retry_seconds": (0.0, 86_400.0),
    "satellite.max_reply_seconds": (1.0, 600.0),
    "arbitration.window_ms": (20, 2000),
}
"""The finite range (inclusive) of every number a config may hold; ``*`` is any key of a table or list."""
OTHER_NUMBER_LIMIT = 1e9
"""Bound on a number without an entry above (a key added later): finite and at most this in size."""
EXCLUSIVE = {"wake.threshold", "wake.thresholds.*", "wake.agree_threshold", "wake.agree_micro_threshold"}
"""Ranges whose ends are themselves refused (a wake threshold of 0 or 1 accepts or refuses everything)."""


def _numbers(obj: Any, prefix: str) -> typing.Iterator[tuple[str, str, float]]:
    """Every number in the settings as ``(full key, range key, value)``."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _numbers(value, f"{key}.")
        elif isinstance(value, dict):
            yield from ((f"{key}.{k}", f"{key}.*", v) for k, v in value.items() if isinstance(v, int | float))
        elif isinstance(value, list):
            yield from ((f"{key}[{i}]", f"{key}.*", v) for i, v in enumerate(value) if isinstance(v, int | float))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield key, key, value


def _check_ranges(s: Settings) -> None:
    for key, rule, value in _numbers(s, ""):
        if not math.isfinite(value):
            raise ConfigError(f"config key '{key}' must be a finite number, not {value!r}")
        if rule not in NUMBER_RANGES:
            if abs(value) > OTHER_NUMBER_LIMIT:
                raise ConfigError(f"config key '{key}' is out of range ({value!r}); use a sensible value")
            continue
        low, high = NUMBER_RANGES[rule]
        inside = low < value < high if rule in EXCLUSIVE else low <= value <= high
        if not inside:
            ends = "exclusive" if rule in EXCLUSIVE else "inclusive"
            raise ConfigError(f"config key '{key}' must be between {low:g} and {high:g} ({ends}), not {value!r}")


def _check_topic(key: str, topic: str) -> None:
    """An MQTT topic we publish to: one concrete topic, never a filter."""
    if any(c in topic for c in "+#\0") or not topic.strip("/") or "//" in topic.strip("/"):
        raise ConfigError(f"config key '{key}' {topic!r} must be one MQTT topic without the wildcards + or # "
                          "and without empty levels, e.g. \"homeassistant\"")


def validate(s: Settings) -> None:
    """Every check the type system cannot express. ``config check`` and ``run`` both come through here."""
    _check_ranges(s)
    if not s.wake.words:
        raise ConfigError("config key 'wake.words' must name at least one wake word")
    engines = ("auto", "openwakeword", "microwakeword", "both")
    for key, value in [("engine", s.wake.engine), *((f"engines.{w}", v) for w, v in s.wake.engines.items())]:
        if value not in engines:
            raise ConfigError(f"config key 'wake.{key}' must be one of {', '.join(engines)}, not {value!r}")
    if s.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("config key 'log_level' must be one of debug, info, warning, error")
    if s.gpio.rgb_pins and len(s.gpio.rgb_pins) != 3:
        raise ConfigError("config key 'gpio.rgb_pins' must list exactly three pins: [red, green, blue]")
    if s.mqtt.reconnect_min_seconds > s.mqtt.reconnect_max_seconds:
        raise ConfigError("config key 'mqtt.reconnect_min_seconds' must be at most 'mqtt.reconnect_max_seconds'")
    _check_topic("mqtt.discovery_prefix", s.mqtt.discovery_prefix)
    if s.mqtt.device_id and not re.fullmatch(r"[A-Za-z0-9_-]+", s.mqtt.device_id):
        raise ConfigError(f"config key 'mqtt.device_id' may only hold letters, digits, '_' and '-' (it is "
                          f"used in MQTT topics and Home Assistant ids), not {s.mqtt.device_id!r}")
    fwd = s.forward
    if fwd.mqtt_topic:
        _check_topic("forward.mqtt_topic", fwd.mqtt_topic)
        if not s.mqtt.host:
            raise ConfigError("'forward.mqtt_topic' is set but 'mqtt.host' is empty; set the broker in [mqtt] "
                              "or clear forward.mqtt_topic")
    if fwd.http_url:
        parts = urlsplit(fwd.http_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"'forward.http_url' {fwd.http_url!r} is not an http:// or https:// URL with a "
                              "host; fix it, e.g. https://homeserver.lan:8443/voice")
    if fwd.wyoming_uri:
        _check_tcp_uri("forward.wyoming_uri", fwd.wyoming_uri, "tcp://host:port, e.g. tcp://homeassistant.lan:10300")
    _check_satellite(s.satellite)
    if s.arbitration.enabled and not s.mqtt.host:
        raise ConfigError("'arbitration.enabled' needs the household broker: set 'mqtt.host' in [mqtt], or set "
                          "arbitration.enabled = false")


def _check_tcp_uri(key: str, uri: str, form: str) -> None:
    """A Wyoming tcp://host:port URI, or a ConfigError saying which ``form`` it must take."""
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tcp" or not parts.hostname or port is None:
        raise ConfigError(f"'{key}' {uri!r} must be {form}")


def _check_satellite(sat: SatelliteSettings) -> None:
    import ipaddress

    if not sat.uri:
        return
    _check_tcp_uri("satellite.uri", sat.uri, "tcp://address:port, e.g. tcp://0.0.0.0:10700")
    if not sat.allow:
        raise ConfigError("'satellite.uri' is set but 'satellite.allow' is empty; list your Home Assistant's "
                          "address, e.g. allow = [\"192.168.1.10\"], so no other machine can connect")
    for i, entry in enumerate(sat.allow):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(f"config key 'satellite.allow[{i}]' {entry!r} is not an IP address or network; "
                              "use e.g. \"192.168.1.10\" or \"192.168.1.0/24\" (host names are not accepted)") from None
    for key in ("name", "area"):
        value = getattr(sat, key)
        if len(value) > 64 or any(ord(c) < 32 for c in value):
            raise ConfigError(f"config key 'satellite.{key}' must be at most 64 printable characters")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    return repr(value)


def example_toml() -> str:
    """Every key with its default and its documentation, as a commented TOML file.

    Generated from the dataclasses and the docstrings under their fields, so the example in the
    repository (``device/config.example.toml``) cannot drift from what the loader accepts.
    """
    import ast
    import inspect
    import sys

    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    docs: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            body = node.body
            for i, stmt in enumerate(body[:-1]):
                nxt = body[i + 1]
                if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                        and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
                    docs[(node.name, stmt.target.id)] = " ".join(str(nxt.value.value).split())
    lines = ["# voxkeep configuration: every key, with its default. Uncomment what you change.",
             "# Read from --config, else /etc/voxkeep/config.toml, else ~/.config/voxkeep/config.toml.",
             "# Generated by `voxkeep config example`; a test keeps it in step with the code.", ""]

    def emit(cls: type, obj: Any, prefix: str = "") -> None:
        for f in dataclasses.fields(cls):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                continue
            doc = docs.get((cls.__name__, f.name), "")
            key = next((k for k in (f"{prefix}{f.name}", f"{prefix}{f.name}.*") if k in NUMBER_RANGES), None)
            if key is not None:  # the range every number of this key must lie in (see validate)
                low, high = NUMBER_RANGES[key]
                doc += f" ({low:g} to {high:g}{', both excluded' if key in EXCLUSIVE else ''})"
            if doc:
                lines.append(f"# {doc.strip()}")
            shown = "(unset)" if value is None else _toml_value(value)
            lines.append(f"# {f.name} = {shown}")
        lines.append("")

    defaults = Settings()
    emit(Settings, defaults)
    for f in dataclasses.fields(Settings):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"[{f.name}]")
            emit(type(value), value, f"{f.name}.")
    return "\n".join(lines).rstrip() + "\n"
