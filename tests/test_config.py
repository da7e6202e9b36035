"""The config file: documented defaults, and one clear line for every mistake."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.helpers import one_error_line, run_cli
from voxkeep.config import Settings, example_toml, load_settings
from voxkeep.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "device" / "config.example.toml"


def test_the_committed_example_is_current() -> None:
    assert EXAMPLE.read_text() == example_toml(), "run: voxkeep config example > device/config.example.toml"


def test_uncommenting_every_example_line_gives_the_defaults() -> None:
    setting = re.compile(r"^# [a-z_]+ = ")
    text = "\n".join(line[2:] if setting.match(line) and "(unset)" not in line else line
                     for line in EXAMPLE.read_text().splitlines())
    assert load_settings(None, tomllib.loads(text)) == Settings()


@pytest.mark.parametrize("toml,words", [
    ("[wake]\nthreshhold = 0.3", ["unknown config key 'wake.threshhold'", "threshold"]),
    ("[wake]\nthreshold = 'high'", ["wake.threshold", "number"]),
    ("[wake]\nthreshold = 1.5", ["wake.threshold", "between 0 and 1"]),
    ("[wake]\nwords = 'alexa'", ["wake.words", "list"]),
    ("[gpio]\nled_pin = true", ["gpio.led_pin", "integer"]),
    ("[gpio]\nrgb_pins = [1, 2]", ["gpio.rgb_pins", "three"]),
    ("[vault]\nretention_days = -1", ["vault.retention_days"]),
    ("[mqtt]\nport = 70000", ["mqtt.port"]),
    ("audio = 3", ["'audio'", "table"]),
    ("[wake\n", ["TOML syntax"]),
])
def test_mistakes_name_the_key_and_what_is_allowed(tmp_path: Path, toml: str, words: list[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        from voxkeep.config import find_config

        load_settings(find_config(str(path)))
    for word in words:
        assert word in str(err.value)


def _numeric_keys() -> list[str]:
    """Every number key of the config, as the TOML dotted name (tables and lists get one example entry)."""
    import dataclasses
    import typing

    keys = []
    for section in dataclasses.fields(Settings):
        cls = section.type if dataclasses.is_dataclass(section.type) else None
        if cls is None:
            cls = typing.get_type_hints(Settings)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        for f, tp in typing.get_type_hints(cls).items():
            inner = typing.get_args(tp)
            if tp in (int, float) or set(inner) & {int, float}:
                keys.append(f"{section.name}.{f}" + (".alexa" if typing.get_origin(tp) is dict else ""))
    return keys


@pytest.mark.parametrize("key", _numeric_keys())
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300"])
def test_every_number_has_a_finite_range(tmp_path: Path, key: str, value: str) -> None:
    section, rest = key.split(".", 1)
    path = tmp_path / "config.toml"
    name, _, sub = rest.partition(".")
    path.write_text(f"[{section}]\n{name} = {{ {sub} = {value} }}\n" if sub else f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    if "must be an integer" not in str(err.value):  # integer keys refuse a float before any range check
        assert key.replace(".alexa", "") in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("toml,words", [
    ('[mqtt]\ndiscovery_prefix = "home/#"', ["mqtt.discovery_prefix", "wildcards"]),
    ('[mqtt]\ndiscovery_prefix = "home/+/x"', ["mqtt.discovery_prefix", "wildcards"]),
    ('[mqtt]\nhost = "b"\n[forward]\nmqtt_topic = "voxkeep/#"', ["forward.mqtt_topic", "wildcards"]),
    ("[commands]\nmax_seconds = 1e9", ["commands.max_seconds", "between"]),
    ("[wake]\nthresholds = { alexa = nan }", ["wake.thresholds.alexa", "finite"]),
    ("[wake]\nverify_peaks = { alexa = 2 }", ["wake.verify_peaks.alexa", "between 0 and 1"]),
    ("[forward]\ntimeout_seconds = 0", ["forward.timeout_seconds"]),
    ('[forward]\nhttp_url = "ftp://x/"', ["forward.http_url"]),
    ("[wake]\nthreshold = 1" + "0" * 400, ["wake.threshold", "large"]),
    ("a = " + "[" * 3000 + "]" * 3000, ["nested too deeply"]),
])
def test_values_run_used_to_crash_on_are_refused_by_config_check_and_run_alike(tmp_path: Path, toml: str,
                                                                              words: list[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    for argv in (("config", "check"), ("run", "--input", str(tmp_path / "x.wav"))):
        proc = run_cli(*argv, "--config", str(path), "--state-dir", str(tmp_path / "state"))
        line = one_error_line(proc.stderr)
        assert proc.returncode == 1 and all(w in line for w in words), line


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[wake]\nwords = ["alexa"]\nthreshold = 0.6\n')
    s = load_settings(path, {"wake": {"threshold": 0.7}})
    assert (s.wake.words, s.wake.threshold) == (["alexa"], 0.7)


def test_cli_reports_a_bad_config_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[wake]\nthreshold = 'high'\n")
    proc = run_cli("run", "--config", str(path), "--input", "nothing.wav")
    assert proc.returncode == 1
    assert "wake.threshold" in one_error_line(proc.stderr)
    missing = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert "does not exist" in one_error_line(missing.stderr)


def test_bad_cli_arguments_are_usage_errors() -> None:
    proc = run_cli("run", "--threshold", "loud")
    assert proc.returncode == 2
    assert b"invalid float value" in proc.stderr and b"Traceback" not in proc.stderr
