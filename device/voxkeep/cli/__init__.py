"""The ``voxkeep`` command: one sub-module per group of subcommands, each with ``register(sub)``.

Every user error (``VoxkeepError``) becomes one line on stderr and exit status 1; argparse's own
usage errors exit 2. Heavy libraries are imported inside the handlers so ``voxkeep --help`` and the
owner commands start instantly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import VoxkeepError

COMMAND_MODULES = ("run", "owner", "vault", "consent", "models", "mqtt", "doctor", "config", "simulate")
"""Sub-modules of voxkeep.cli that add subcommands, in --help order."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests and the README check)."""
    parser = argparse.ArgumentParser(
        prog="voxkeep",
        description="A privacy-first smart-speaker daemon: wake words and privacy commands on the device, "
                    "recordings encrypted to the owner, nothing leaves without consent.")
    parser.add_argument("--version", action="version", version=f"voxkeep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except VoxkeepError as exc:
        print(f"voxkeep: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # A reader like `| head` went away: not an error worth a traceback.
        sys.stderr.close()
        return 0


def setup_logging(level: str) -> None:
    """Log lines go to stderr, so stdout stays clean for the event stream."""
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
