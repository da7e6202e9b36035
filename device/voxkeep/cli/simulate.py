"""``voxkeep simulate``: a household on a laptop, through the real daemon, with a virtual LED and button."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
import tempfile
from pathlib import Path

from .common import common_parent

INTRO = """\
Play a scenario (spoken lines, noise, button presses, owner and MQTT commands, expectations) through
the real daemon on virtual hardware, faster than real time, and tell what the speaker did. With no
SCENARIO it runs the bundled tour. Bundled scenarios (by name): see --list.

Each run gets a work directory (--workdir, else a new temp dir) with a fresh state dir, a throwaway
owner key and the generated audio, so recordings are really stored, encrypted, and can be looked at
afterwards. Exit status 1 names the first failed expectation.
"""


def _format_help() -> str:
    """The scenario format, from voxkeep.simulate's docstring, read without importing numpy and gpiozero."""
    spec = importlib.util.find_spec("voxkeep.simulate")
    if spec is None or spec.origin is None:
        return ""
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    return doc[doc.find("Scenario format"):] if "Scenario format" in doc else ""


def register(sub: argparse._SubParsersAction) -> None:
    sim = sub.add_parser("simulate", parents=[common_parent()], help="play a household scenario through the daemon",
                         description=INTRO + "\n" + _format_help(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    sim.add_argument("scenario", nargs="?", metavar="SCENARIO",
                     help="a scenario .toml file, or a bundled scenario's name (default: tour)")
    sim.add_argument("--list", action="store_true", help="list the bundled scenarios and exit")
    sim.add_argument("--save-audio", metavar="FILE.wav",
                     help="write the generated audio here (replay it with 'voxkeep run --input FILE.wav')")
    sim.add_argument("--events", "-e", metavar="FILE", help='write the JSON Lines event stream to FILE ("-": stdout)')
    sim.add_argument("--workdir", metavar="DIR",
                     help="where the state dir, owner key and audio go (default: a new temp dir, kept)")
    sim.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from .. import simulate
    from ..config import find_config, load_settings
    from ..errors import ConfigError
    from . import setup_logging

    if args.list:
        for name, path in simulate.bundled_scenarios().items():
            print(f"{name:<24} {simulate.load_scenario(path).title}")
        return 0
    scenario = simulate.load_scenario(simulate.resolve_scenario(args.scenario))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="voxkeep-simulate-"))
    workdir.mkdir(parents=True, exist_ok=True)
    wav = Path(args.save_audio) if args.save_audio else workdir / f"{scenario.path.stem}.wav"
    overrides = simulate.scenario_settings(scenario)
    overrides["state_dir"] = str(workdir / "state")
    overrides["log_level"] = "warning"  # the timeline is the output; --log-level info shows the daemon's log too
    overrides.setdefault("audio", {}).update({"input": str(wav), "realtime": False, "output_device": ""})
    overrides.setdefault("gpio", {})["pin_factory"] = "mock"
    for flag in ("state_dir", "models_dir", "log_level"):
        if getattr(args, flag, None) is not None:
            overrides[flag] = getattr(args, flag)
    try:
        # Only an explicit --config is read: a scenario must run the same on every machine.
        settings = load_settings(find_config(args.config) if args.config else None, overrides)
    except ConfigError as exc:
        raise simulate.settings_error(scenario, exc) from None
    setup_logging(settings.log_level)
    rendered = simulate.render(scenario, _speech_cache())
    from ..testing.speech import write_wav

    try:
        write_wav(wav, rendered.audio)
    except (OSError, RuntimeError) as exc:  # soundfile reports an unwritable path as a RuntimeError subclass
        raise ConfigError(f"cannot write the audio to {wav} ({exc}); choose a writable --save-audio path") from None
    identity = simulate.throwaway_owner(settings, workdir)
    stdout = sys.stderr if args.events == "-" else sys.stdout  # keep stdout a clean event stream
    outcome = simulate.Simulation(scenario, settings, wav=wav, rendered=rendered, identity=identity, out=stdout,
                                  events_out=args.events).run()
    stdout.write(simulate.summary(outcome, workdir=workdir))
    if outcome.failures:
        print(f"voxkeep: error: {scenario.path.name}: {outcome.failures[0]}", file=sys.stderr)
        return 1
    return 0


def _speech_cache() -> Path:
    """Synthesized lines are cached by content, so a re-run of a scenario starts at once."""
    import os

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "voxkeep" / "speech"
    path.mkdir(parents=True, exist_ok=True)
    return path
