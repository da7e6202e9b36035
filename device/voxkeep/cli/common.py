"""Options every subcommand shares, and turning them into Settings."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings, find_config, load_settings


def common_parent() -> argparse.ArgumentParser:
    """--config, --state-dir, --models-dir and --log-level, for every subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", metavar="FILE",
                        help="TOML config (default: /etc/voxkeep/config.toml, then ~/.config/voxkeep/config.toml)")
    parent.add_argument("--state-dir", metavar="DIR",
                        help="where state and the vault live (default: $STATE_DIRECTORY under systemd, "
                             "else ~/.local/state/voxkeep)")
    parent.add_argument("--models-dir", metavar="DIR",
                        help="where verified models are installed (default: ~/.local/share/voxkeep/models)")
    parent.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log detail on stderr")
    return parent


def settings_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Settings:
    """Read the config file and apply the flags on top; ``extra`` holds subcommand-specific overrides."""
    overrides: dict[str, Any] = dict(extra or {})
    for flag, key in (("state_dir", "state_dir"), ("models_dir", "models_dir"), ("log_level", "log_level")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    return load_settings(find_config(getattr(args, "config", None)), overrides)
