"""``voxkeep mqtt check|forget``: test the broker settings, and remove the speaker from Home Assistant."""

from __future__ import annotations

import argparse

from .common import common_parent, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    parent = common_parent()
    mqtt = sub.add_parser("mqtt", help="check the MQTT connection, or remove the speaker from the broker",
                          description="MQTT reporting and Home Assistant discovery (see [mqtt] in the config).")
    msub = mqtt.add_subparsers(dest="mqtt_command", metavar="ACTION", required=True)
    check = msub.add_parser("check", parents=[parent], help="connect once and show what the broker holds",
                            description="Connect with the [mqtt] settings (TLS, user, password file), then print "
                                        "the speaker's retained availability and state as the broker has them.")
    check.set_defaults(handler=_check)
    forget = msub.add_parser("forget", parents=[parent],
                             help="remove the retained Home Assistant discovery configs and state",
                             description="Publish empty retained messages over this speaker's discovery configs, "
                                         "state and availability, so Home Assistant drops its entities. A running "
                                         "daemon announces itself again: stop it or clear 'mqtt.host' first.")
    forget.set_defaults(handler=_forget)


def _check(args: argparse.Namespace) -> int:
    from ..mqtt import BrokerSession

    settings = settings_from_args(args).mqtt
    with BrokerSession(settings) as session:
        print(f"connected to {settings.host}:{settings.port}{' with TLS' if settings.tls else ''}"
              f" as {settings.username or 'anonymous'}; topics under {session.topics.base}/")
        held = session.collect_retained(f"{session.topics.base}/#", seconds=1.0)
    for topic in (session.topics.availability, session.topics.state):
        print(f"  {topic}: {held[topic].decode(errors='replace') if topic in held else '(nothing retained)'}")
    return 0


def _forget(args: argparse.Namespace) -> int:
    from ..mqtt import forget

    cleared = forget(settings_from_args(args).mqtt)
    print(f"cleared {len(cleared)} retained topics; Home Assistant removes the speaker's entities")
    return 0
