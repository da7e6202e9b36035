"""``voxkeep run``: the listening daemon."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import common_parent, settings_from_args

RUN_HELP = """\
Listen for wake words and privacy commands and report what happens as JSON Lines events.

Input is the microphone (default), a sound file of any rate/width/channels, or raw S16_LE 16 kHz mono
PCM on stdin with --input -, e.g.:
  arecord -r 16000 -f S16_LE -c 1 -t raw | voxkeep run --input - --events -

Events (one JSON object per line, "t" = seconds of audio since the input started):
  {"type": "wake", "t": 12.48, "wake_word": "hey_jarvis", "score": 0.91}
  {"type": "wake_rejected", "t": ..., "wake_word": ..., "score": ..., "reason": ...}
  {"type": "command", "t": ..., "command": "stop_recording|start_recording|delete_last|delete_today|stop_sharing"}
  {"type": "state", "t": ..., "mode": "listening|not_recording|muted", "mic_open": true, "cause": ...}
  {"type": "recorded", "t": ..., "recording_id": ..., "duration": ..., "wake_word": ...}
  {"type": "deleted", "t": ..., "count": ..., "cause": ...}
  {"type": "confirm", "t": ..., "command": "delete_last|delete_today", "seconds": 4.0}   (asked back: say "yes")
  {"type": "not_deleted", "t": ..., "command": ..., "reason": "no|no clear yes|muted|wake word|stopped"}
  {"type": "handled", "t": ..., "wake_word": ..., "outcome": "command|recorded|not_recorded", "reason": ...}
  {"type": "forwarded", "t": ..., "sink": ..., "recording_id": ..., "size": ...}
  {"type": "transcript", "t": ..., "sink": ..., "text": ...}
  {"type": "notice", "t": ..., "level": ..., "message": ...}
Log lines go to stderr. File and stdin input run as fast as the CPU allows unless --realtime; at the
end of input a one-line summary goes to stderr and the exit status is 0.
"""


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", parents=[common_parent()], help="run the listening daemon",
                         description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--input", "-i", metavar="SRC", help='"mic" (default), a sound file, or "-" for raw stdin')
    run.add_argument("--device", "-d", metavar="DEV", help="microphone index or part of its name (voxkeep devices)")
    run.add_argument("--wake-word", "-w", action="append", metavar="NAME_OR_PATH",
                     help="wake word: alexa, hey_jarvis, hey_mycroft, okay_nabu, hey_marvin, or a path to an .onnx "
                          "(openWakeWord) or .tflite (microWakeWord, .json beside it) model (repeatable; replaces "
                          "[wake] words)")
    run.add_argument("--engine", choices=("auto", "openwakeword", "microwakeword", "both"),
                     help="wake-word engine ([wake] engine; default auto: hey_mycroft on microWakeWord, other words on "
                          "openWakeWord): 'both' = microWakeWord listens, openWakeWord agrees")
    run.add_argument("--threshold", type=float, metavar="SCORE",
                     help="score 0-1 above which an openWakeWord word counts (microWakeWord words use their "
                          "model's cutoff unless [wake] thresholds names them)")
    run.add_argument("--events", "-e", metavar="FILE", help='write JSON Lines events to FILE, or "-" for stdout')
    run.add_argument("--realtime", action="store_true", default=None, help="pace file input at real time")
    run.add_argument("--satellite-uri", metavar="URI",
                     help="be a Home Assistant voice satellite on URI, e.g. tcp://0.0.0.0:10700 ([satellite] uri; "
                          "needs [satellite] allow and 'voxkeep consent grant satellite' before audio is sent)")
    run.set_defaults(handler=_run)


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The [audio], [wake] and [satellite] overrides the run flags stand for."""
    audio: dict[str, Any] = {}
    wake: dict[str, Any] = {}
    if args.input is not None:
        audio["input"] = args.input
    if args.device is not None:
        audio["device"] = args.device
    if args.realtime:
        audio["realtime"] = True
    if args.wake_word:
        wake["words"] = args.wake_word
    if args.threshold is not None:
        wake["threshold"] = args.threshold
    if args.engine is not None:
        wake["engine"] = args.engine
    satellite = {"uri": args.satellite_uri} if args.satellite_uri is not None else {}
    return {k: v for k, v in (("audio", audio), ("wake", wake), ("satellite", satellite)) if v}


def _run(args: argparse.Namespace) -> int:
    from ..app import build_app
    from . import setup_logging

    settings = settings_from_args(args, run_overrides(args))
    setup_logging(settings.log_level)
    app = build_app(settings, events_out=args.events)
    stats = app.run(handle_signals=True)
    if not app.daemon.source.live:
        print(stats.summary(app.daemon.source.description), file=sys.stderr)
    return 0
