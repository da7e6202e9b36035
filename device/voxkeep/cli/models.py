"""``voxkeep models fetch|list`` and ``voxkeep devices``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import common_parent, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    parent = common_parent()
    models = sub.add_parser("models", help="fetch and check the wake-word models",
                            description="Fetch, verify and list the wake-word models voxkeep runs: openWakeWord's "
                                        "ONNX models and microWakeWord's TFLite models.")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch = msub.add_parser("fetch", parents=[parent], help="download and verify the models",
                            description="Take the ONNX models from the openwakeword 0.4.0 wheel on PyPI and the "
                                        "microWakeWord models from the installed pymicro-wakeword wheel, check "
                                        "every file against its pinned SHA-256, and install them.")
    fetch.add_argument("--wheel", metavar="FILE", help="use this copy of openwakeword-0.4.0-*.whl (offline install)")
    fetch.set_defaults(handler=_fetch)
    lst = msub.add_parser("list", parents=[parent],
                          help="show each model, whether it is verified, its engine and its licence")
    lst.set_defaults(handler=_list)
    devices = sub.add_parser("devices", help="list microphones (input devices)",
                             description="List PortAudio input devices; use the index or part of the name "
                                         "with --device or [audio] device.")
    devices.set_defaults(handler=_devices)


def _fetch(args: argparse.Namespace) -> int:
    from .. import models

    settings = settings_from_args(args)
    installed = models.fetch(settings.models_path, Path(args.wheel) if args.wheel else None)
    print(f"installed {len(installed)} verified models into {settings.models_path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from .. import models

    settings = settings_from_args(args)
    rows = models.status(settings.models_path)
    print(f"models in {settings.models_path}:")
    width = max(len(r.filename) for r in rows)
    for r in rows:
        print(f"  {r.filename:<{width}}  {r.status:<8}  {r.engine:<13}  {r.licence}")
    bad = [r for r in rows if r.status != "verified"]
    if bad:
        print("run 'voxkeep models fetch' to install or repair the models marked missing or altered")
        return 1
    return 0


def _devices(args: argparse.Namespace) -> int:
    from ..audio import list_input_devices

    devices = list_input_devices()
    if not devices:
        print("no input devices found; plug in a microphone, or use 'voxkeep run --input FILE.wav'")
        return 1
    for d in devices:
        print(f"{d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['rate']} Hz)")
    return 0
