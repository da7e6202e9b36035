"""Property-based fuzzing of every parser that takes outside input (issue 14): 0 tracebacks.

Each test feeds generated hostile input to one parser, the way it reaches the device, and holds it to the
project's rule: either a result that obeys the parser's contract, or a ``VoxkeepError`` whose message is
one line. Any other exception (a traceback for the user) fails the test with the input that caused it.

Two hypothesis profiles: ``fuzz-ci`` (the default, 300 examples per parser) and ``fuzz-slow`` (1,000 per
parser), selected with ``VOXKEEP_FUZZ=slow``::

    VOXKEEP_FUZZ=slow .venv/bin/python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics

MQTT payloads are fuzzed against a real broker in tests/test_mqtt.py (1,000 payloads).
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from voxkeep import FRAME_SAMPLES
from voxkeep.audio import StdinSource, WavFileSource
from voxkeep.audit import AuditLog, verify_chain
from voxkeep.config import Settings, load_settings
from voxkeep.control import ControlServer
from voxkeep.errors import VoxkeepError
from voxkeep.export import export_bundle, verify_bundle
from voxkeep.owner import parse_recipient, read_identities, read_recipients
from voxkeep.privacy import read_choices
from voxkeep.simulate import load_scenario

_common = {"deadline": None, "database": None, "derandomize": False,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture]}
settings.register_profile("fuzz-ci", max_examples=300, **_common)
settings.register_profile("fuzz-slow", max_examples=1000, **_common)
FUZZ = settings.get_profile("fuzz-slow" if os.environ.get("VOXKEEP_FUZZ") == "slow" else "fuzz-ci")


def one_line(exc: VoxkeepError) -> None:
    """What the CLI prints must be one line that says something."""
    text = str(exc)
    assert text.strip() and "\n" not in text, repr(text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _file(scratch: Path, name: str, data: bytes) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------ sound files, stdin

def _wav(rate: int = 16000, channels: int = 1, bits: int = 16, frames: int = 4000, fmt: int = 1) -> bytes:
    width = bits // 8
    data = bytes(frames * channels * width)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, fmt, channels, rate, (rate * width * channels) % 2**32, width * channels,
                          bits)
            + b"data" + struct.pack("<I", len(data)) + data)


def _flac() -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(4000, np.int16), 16000, format="FLAC")
    return buf.getvalue()


_u32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2, 3999, 4000, 192000, 192001, 2**31, 2**32 - 1]))
_u16 = st.one_of(st.integers(0, 2**16 - 1), st.sampled_from([0, 1, 2, 8, 16, 24, 32, 64, 200, 65535]))
_BASES = {"wav": _wav(), "flac": _flac()}
_base = st.sampled_from(sorted(_BASES)).map(_BASES.__getitem__)
_headers = st.one_of(
    st.builds(lambda r, c, b, f: _wav(r % 2**32, c, b, 500, f),
              _u32, st.integers(1, 40), st.sampled_from([8, 16, 24, 32]), st.sampled_from([1, 3, 0xFFFE, 0, 2])),
    st.builds(lambda base, edits: _mutate(base, edits, 64), _base,
              st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=12)),
    st.builds(lambda base, at, field, value: base[:at] + struct.pack("<I", value) + base[at + 4:],
              _base, st.integers(0, 60), st.just(0), _u32),
    st.builds(lambda base, n: base[:n], _base, st.integers(0, 200)),
    st.binary(max_size=300),
)


def _mutate(data: bytes, edits: list[tuple[int, int]], within: int) -> bytes:
    raw = bytearray(data)
    for pos, value in edits:
        raw[pos % min(within, len(raw))] = value
    return bytes(raw)


@FUZZ
@given(data=_headers)
def test_sound_file_headers(scratch: Path, data: bytes) -> None:
    path = _file(scratch, "input.wav", data)
    source = WavFileSource(path)
    try:
        source.open()
        for _ in range(400):  # 32 s of audio at most: the inputs here are short
            frame = source.read()
            if frame is None:
                break
            assert frame.dtype == np.int16 and frame.shape == (FRAME_SAMPLES,)
    except VoxkeepError as exc:
        one_line(exc)
    finally:
        source.close()


class _Trickle(io.RawIOBase):
    """A pipe that hands out its bytes in the chunk sizes given (short reads, as pipes do)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data, self._sizes = data, sizes or [1]
        self._i = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        size = min(n, self._sizes[self._i % len(self._sizes)]) if n >= 0 else len(self._data)
        self._i += 1
        out, self._data = self._data[:max(size, 1)], self._data[max(size, 1):]
        return out


@FUZZ
@given(data=st.binary(max_size=20000), sizes=st.lists(st.integers(1, 5000), max_size=5))
def test_raw_stdin(data: bytes, sizes: list[int]) -> None:
    source = StdinSource(_Trickle(data, sizes))  # type: ignore[arg-type]
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        assert frame.dtype == np.int16 and frame.shape == (FRAME_SAMPLES,)
        frames.append(frame)
    usable = len(data) - len(data) % 2
    assert len(frames) == math.ceil(usable / (FRAME_SAMPLES * 2))
    if frames:
        assert np.concatenate(frames)[: usable // 2].tobytes() == data[:usable]


# ------------------------------------------------------------------------------------ TOML: config, scenario

def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_literal(v)}" for k, v in value.items()) + " }"


_scalars = st.one_of(st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=30), st.sampled_from([0, 1, -1, 0.5, 1e9, 1e300, "", "alexa", "home/#", "+"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                       max_leaves=8)
_SECTIONS = {f.name: [g.name for g in __import__("dataclasses").fields(f.default_factory())]
             for f in __import__("dataclasses").fields(Settings) if f.default_factory is not __import__(
                 "dataclasses").MISSING}


@st.composite
def _config_text(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=300))
    lines = []
    for section in draw(st.lists(st.sampled_from([*_SECTIONS, "bogus"]), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys = [*_SECTIONS.get(section, ["x"]), "unknown_key"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            lines.append(f"{key} = {_toml_literal(draw(_values))}")
    if draw(st.booleans()):
        depth = draw(st.integers(1, 3000))
        lines.append("deep = " + "[" * depth + "]" * depth)
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=_config_text())
@example(text='[wake]\nengines = { "\\n" = false }\n')  # a key with a newline in it: still one line
@example(text='[wake]\nthresholds = { "a\\nb" = 5.0 }\n"x\\ty" = 1\n')
def test_config_toml(scratch: Path, text: str) -> None:
    path = _file(scratch, "config.toml", text.encode("utf-8", "surrogatepass"))
    try:
        result = load_settings(path)
    except VoxkeepError as exc:
        one_line(exc)
        return
    from voxkeep.config import _numbers

    assert all(math.isfinite(v) for _, _, v in _numbers(result, ""))


_STEP_KEYS = ["say", "play", "silence", "press", "switch", "owner", "mqtt", "consent", "pause", "voice", "speed",
              "engine", "gain_db", "expect", "bogus"]
_step_values = st.one_of(_values, st.sampled_from(["short", "long", "engaged", "mute", "-w/tmp/x.wav", "x.wav"]),
                         st.fixed_dictionaries({}, optional={"events": st.lists(st.sampled_from(
                             ["wake", "wake:alexa", "recorded", "woke", ""]), max_size=3), "mode": _scalars,
                             "recordings": _scalars, "led": _scalars, "mic_open": _scalars}))


@st.composite
def _scenario_text(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=300))
    lines = [f"{k} = {_toml_literal(draw(_values))}" for k in draw(st.lists(st.sampled_from(
        ["title", "description", "seed", "voice", "noise", "bogus"]), max_size=3, unique=True))]
    for _ in range(draw(st.integers(0, 4))):
        lines.append("[[step]]")
        for key in draw(st.lists(st.sampled_from(_STEP_KEYS), min_size=1, max_size=3, unique=True)):
            lines.append(f"{key} = {_toml_literal(draw(_step_values))}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=_scenario_text())
@example(text='voice = { "\\n" = false }\n')  # found by CI: a key with a newline in it, in a scenario
def test_scenario_toml(scratch: Path, text: str) -> None:
    path = _file(scratch, "scenario.toml", text.encode("utf-8", "surrogatepass"))
    try:
        scenario = load_scenario(path)
    except VoxkeepError as exc:
        one_line(exc)
        return
    for step in scenario.steps:
        assert math.isfinite(step.pause) and 0 <= step.pause <= 600
        if step.action == "silence":
            assert 0 <= step.value <= 600


# ------------------------------------------------------------------------------------ control socket

@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    server = ControlServer(tmp_path_factory.mktemp("ctl"), lambda request, *_: {"ok": True, "message": "obeyed"})
    server.start()
    yield server.path
    server.stop()


_lines = st.one_of(
    st.binary(max_size=5000),
    _values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda n: b"[" * n),
    st.dictionaries(st.sampled_from(["action", "mute", ""]), _values, max_size=3).map(lambda d: json.dumps(d).encode()),
)


@FUZZ
@given(line=_lines)
def test_control_socket_lines(control: Path, line: bytes) -> None:
    line = line.replace(b"\n", b" ")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(control))
        sock.sendall(line + b"\n")
        reply = json.loads(sock.makefile("rb").readline())
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        request = None
    valid = isinstance(request, dict) and len(line) + 1 <= 4096
    assert reply == {"ok": True, "message": "obeyed"} if valid else reply["ok"] is False, (line[:100], reply)


# ------------------------------------------------------------------------------------ export bundles

@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    from voxkeep.cli import main
    from voxkeep.config import VaultSettings
    from voxkeep.vault import Vault

    root = tmp_path_factory.mktemp("export")
    state, key = root / "state", root / "owner.key"
    assert main(["owner", "init", "--identity-out", str(key), "--state-dir", str(state)]) == 0
    with Vault(state, VaultSettings()) as vault:
        for i in range(2):
            vault.store(np.full(1600 * (i + 1), i, np.int16), started_at=1.7e9 + i, wake_word="alexa", score=0.8,
                        command=None)
        out = root / "bundle.zip"
        export_bundle(vault, out, state)
    return out, read_identities(key)


def _json_mutation(manifest: Any, path: list[int], value: Any) -> Any:
    """Replace the node reached by following ``path`` (indices into dict values / list items) with ``value``."""
    if not path or not isinstance(manifest, dict | list) or not manifest:
        return value
    keys = list(manifest) if isinstance(manifest, dict) else list(range(len(manifest)))
    key = keys[path[0] % len(keys)]
    manifest[key] = _json_mutation(manifest[key], path[1:], value)
    return manifest


_zip_edits = st.one_of(
    st.tuples(st.just("manifest"), st.lists(st.integers(0, 50), max_size=4), _values),
    st.tuples(st.just("bytes"), st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), min_size=1,
                                         max_size=8), st.none()),
    st.tuples(st.just("member"), st.tuples(st.text(max_size=20), st.integers(0, 0xFFFF), st.binary(max_size=64),
                                           st.booleans()), st.none()),
    st.tuples(st.just("truncate"), st.integers(0, 5000), st.none()),
)


@FUZZ
@given(edit=_zip_edits)
def test_export_bundles(bundle: tuple[Path, list[Any]], scratch: Path, edit: tuple[str, Any, Any]) -> None:
    original, identities = bundle
    raw = original.read_bytes()
    kind, arg, value = edit
    if kind == "manifest":
        with zipfile.ZipFile(original) as src:
            manifest = _json_mutation(json.loads(src.read("manifest.json")), arg, value)
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as dst:
                for name in src.namelist():
                    dst.writestr(name, json.dumps(manifest) if name == "manifest.json" else src.read(name))
        raw = out.getvalue()
    elif kind == "bytes":
        raw = _mutate(raw, [(p % len(raw), v) for p, v in arg], len(raw))
    elif kind == "member":
        name, attr, data, deflate = arg
        out = io.BytesIO(raw)
        with zipfile.ZipFile(out, "a") as z:
            info = zipfile.ZipInfo(name or "x")
            info.create_system, info.external_attr = 3, attr << 16
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            z.writestr(info, data)
        raw = out.getvalue()
    else:
        raw = raw[:arg]
    path = _file(scratch, "bundle.zip", raw)
    try:
        report = verify_bundle(path, identities)
    except VoxkeepError as exc:
        one_line(exc)
        return
    assert report.recordings == 2  # what passes is still exactly the owner's two recordings


# ------------------------------------------------------------------------------------ vault files

@FUZZ
@given(data=st.one_of(st.binary(max_size=400), st.lists(st.sampled_from([
    "age1ft2npjjrvpq90hgh7guxzsr98mf8wvju8r727nu3n66ynh2lcvjsamaqld", "# comment", "", "AGE-SECRET-KEY-1XYZ",
    "age1", "\x00", "age1" + "q" * 5000]), max_size=5).map(lambda ls: "\n".join(ls).encode())))
def test_recipients_txt(scratch: Path, data: bytes) -> None:
    folder = scratch / "recipients"
    folder.mkdir(exist_ok=True)
    (folder / "recipients.txt").write_bytes(data)
    try:
        for line in read_recipients(folder):
            parse_recipient(line)
    except VoxkeepError as exc:
        one_line(exc)


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), st.lists(st.sampled_from([
    "AGE-SECRET-KEY-1QQQ", "# created", "", "age1ft2npjjrvpq90hgh7guxzsr98mf8wvju8r727nu3n66ynh2lcvjsamaqld",
    "AGE-SECRET-KEY-1" + "Q" * 58, "\x00"]), max_size=5).map(lambda ls: "\n".join(ls).encode())))
def test_identity_files(scratch: Path, data: bytes) -> None:
    try:
        identities = read_identities(_file(scratch, "owner.key", data))
    except VoxkeepError as exc:
        one_line(exc)
        return
    assert identities and all(str(i.to_public()).startswith("age1") for i in identities)


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), _values.map(lambda v: json.dumps(v).encode()),
                      st.fixed_dictionaries({"muted": _scalars, "recording": _scalars}).map(
                          lambda d: json.dumps(d).encode()),
                      st.integers(1, 5000).map(lambda n: b"[" * n)))
def test_state_json(scratch: Path, data: bytes) -> None:
    choices, problem = read_choices(_file(scratch, "state.json", data))
    try:
        body = json.loads(data)
        clean = (isinstance(body, dict) and isinstance(body.get("muted"), bool)
                 and isinstance(body.get("recording"), bool))
    except (ValueError, RecursionError):
        clean = False
    if clean:
        assert problem is None and (choices.muted, choices.recording) == (body["muted"], body["recording"])
    else:  # any damage: muted, and a message saying why
        assert problem and choices.muted and "\n" not in problem


_log_edits = st.lists(st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 20), st.none()),
    st.tuples(st.just("swap"), st.integers(0, 20), st.integers(0, 20)),
    st.tuples(st.just("flip"), st.integers(0, 5000), st.integers(0, 255)),
    st.tuples(st.just("append"), st.binary(max_size=60), st.none()),
    st.tuples(st.just("cut"), st.integers(0, 5000), st.none()),
    st.tuples(st.just("head"), st.one_of(st.binary(max_size=80), _values.map(lambda v: json.dumps(v).encode())),
              st.none()),
), max_size=4)


@FUZZ
@given(edits=_log_edits)
def test_audit_log_and_head(edits: list[tuple[str, Any, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(Path(tmp), clock=lambda: 1.7e9)
        for i in range(6):
            audit.append("state", mode=f"m{i}", cause="fuzz")
        lines = audit.path.read_bytes().splitlines(keepends=True)
        for kind, a, b in edits:
            if kind == "drop" and lines:
                del lines[a % len(lines)]
            elif kind == "swap" and lines:
                i, j = a % len(lines), b % len(lines)
                lines[i], lines[j] = lines[j], lines[i]
            elif kind == "flip" and b"".join(lines):
                raw = bytearray(b"".join(lines))
                raw[a % len(raw)] = b
                lines = bytes(raw).splitlines(keepends=True)
            elif kind == "append":
                lines.append(a)
            elif kind == "cut":
                lines = b"".join(lines)[:a].splitlines(keepends=True)
            elif kind == "head":
                audit.head_path.write_bytes(a)
        audit.path.write_bytes(b"".join(lines))
        try:
            audit.verify()
            damaged = False
        except VoxkeepError as exc:
            one_line(exc)
            # A torn last line (a crash mid-write, never acknowledged) is the one damage an append repairs.
            damaged = "is incomplete" not in str(exc)
        audit.append("after", n=1)  # whatever was done to it, auditing goes on
        data = audit.read()
        assert json.loads(data.splitlines()[-1])["kind"] == "after"
        if audit.set_aside():  # the tail failed its head: a new chain, whole, that says why
            report = verify_chain(data, audit.head())
            assert json.loads(data.splitlines()[0])["kind"] == "audit_restarted" and report.entries == 2
        try:
            audit.verify()
            healed = damaged
        except VoxkeepError as exc:
            one_line(exc)
            healed = False
        assert not healed, "an append made a damaged log look intact"
