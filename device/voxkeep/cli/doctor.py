"""``voxkeep doctor``: is this speaker set up right? In words a maker understands."""

from __future__ import annotations

import argparse

from .common import common_parent, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser(
        "doctor", parents=[common_parent()], help="check microphone, models, pins, key, broker, disk, clock",
        description="Check everything the speaker needs, one line each: the microphone (opens, level, "
                    "clipping), models and their hashes, GPIO pins, the speaker for tones, the owner key, the "
                    "MQTT broker and credentials, the Home Assistant satellite, free disk, clock sync and the "
                    "systemd service. Exit status 1 if anything is wrong.")
    doctor.add_argument("--device", "-d", metavar="DEV", help="microphone to test (default: [audio] device)")
    doctor.add_argument("--seconds", type=float, default=2.0, help="how long to listen to the microphone")
    doctor.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from .. import doctor
    from ..audio import MicSource, make_source

    settings = settings_from_args(args)
    checks = []
    if settings.audio.input == "mic":
        checks.append(doctor.check_microphone(MicSource(args.device or settings.audio.device), args.seconds))
    else:
        checks.append(doctor.check_input(settings.audio.input, make_source(settings.audio.input),
                                         doctor.sound_cards()))
    checks += [
        doctor.check_models(settings.models_path, settings.wake.words, settings.wake.engine),
        doctor.check_gpio(settings.gpio),
        doctor.check_speaker(settings.audio.output_device),
        doctor.check_owner(settings.state_path, settings.vault),
        doctor.check_broker(settings.mqtt),
        doctor.check_satellite(settings),
        doctor.check_disk(settings.state_path),
        doctor.check_clock(),
        doctor.check_service(),
    ]
    for check in checks:
        print(check.line())
    failed = [c.name for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed" + (f"; fix: {', '.join(failed)}"
                                                                          if failed else ""))
    return 1 if failed else 0
