"""``voxkeep config example|check``: the documented defaults, and a check of a config file."""

from __future__ import annotations

import argparse

from .common import common_parent, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser("config", help="show the example config or check a config file",
                            description="Every key of the TOML config, with its default, and a validator.")
    csub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    example = csub.add_parser("example", help="print every key with its default and documentation")
    example.set_defaults(handler=_example)
    check = csub.add_parser("check", parents=[common_parent()],
                            help="validate the config file (--config, or the default locations)")
    check.set_defaults(handler=_check)


def _example(args: argparse.Namespace) -> int:
    from ..config import example_toml

    print(example_toml(), end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..config import find_config

    path = find_config(args.config)
    settings_from_args(args)
    print(f"{path or 'no config file found; defaults'}: OK")
    return 0
