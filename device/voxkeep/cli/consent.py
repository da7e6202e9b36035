"""``voxkeep consent grant|revoke|list``: the owner's recorded choice of where utterances may go.

Granting exists only here, on the device: voice and MQTT can revoke but never grant, because anyone in
the room or on the broker could otherwise send the owner's voice away. Every change is a ledger row in the
vault (time, sink, who) and an audit entry; the export lists the whole history.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from ..config import ForwardSettings
from .common import common_parent, settings_from_args

SINK_HELP = ("mqtt (WAV on forward.mqtt_topic), http (POST to forward.http_url), wyoming (speech-to-text server), "
             "satellite (Home Assistant voice satellite, [satellite] uri)")


def register(sub: argparse._SubParsersAction) -> None:
    parent = common_parent()
    consent = sub.add_parser("consent", help="allow or stop sending utterances off the device",
                             description="Nothing leaves the device unless you consent here, per sink. Each "
                                         "change is recorded with its time and audited; the daemon checks "
                                         "consent again right before every transfer.")
    csub = consent.add_subparsers(dest="consent_command", metavar="ACTION", required=True)
    grant = csub.add_parser("grant", parents=[parent], help="allow utterances to be sent to SINK",
                            description="Allow utterances heard after a wake word, while listening, to be sent "
                                        "to SINK. The LED shows a slow pulse whenever audio is leaving.")
    grant.add_argument("sink", metavar="SINK", choices=ForwardSettings.SINKS, help=SINK_HELP)
    grant.set_defaults(handler=_grant)
    revoke = csub.add_parser("revoke", parents=[parent], help="stop sending utterances to SINK (or --all)",
                             description="Stop sending to SINK at once, including utterances already waiting.")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("sink", metavar="SINK", nargs="?", choices=ForwardSettings.SINKS, help=SINK_HELP)
    which.add_argument("--all", action="store_true", help="revoke every consent")
    revoke.set_defaults(handler=_revoke)
    lst = csub.add_parser("list", parents=[parent], help="show active consents and every change",
                          description="Show which sinks may receive utterances now, and the full ledger.")
    lst.add_argument("--json", action="store_true", help="print JSON instead of text")
    lst.set_defaults(handler=_list)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def _grant(args: argparse.Namespace) -> int:
    from ..forward import is_configured, setting_of
    from ..vault import Vault

    settings = settings_from_args(args)
    with Vault(settings.state_path, settings.vault) as vault:
        if args.sink in vault.active_consents():
            print(f"consent for {args.sink} was already granted; nothing changed")
            return 0
        vault.consent(args.sink, "grant", "cli")
    print(f"consent granted: utterances after a wake word, while listening, may now be sent to {args.sink}. "
          f"Revoke with 'voxkeep consent revoke {args.sink}'.")
    if not is_configured(settings, args.sink):
        print(f"note: '{setting_of(args.sink)}' is not set in the config, so nothing is sent until you set it")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from ..forward import revoke_consent
    from ..vault import Vault

    settings = settings_from_args(args)
    with Vault(settings.state_path, settings.vault) as vault:
        revoked = revoke_consent(vault, None if args.all else [args.sink], "cli")
    if revoked:
        print(f"consent revoked for {', '.join(revoked)}: nothing more is sent there")
    else:
        print(f"no consent was active for {'any sink' if args.all else args.sink}; nothing changed")
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..vault import Vault

    settings = settings_from_args(args)
    with Vault(settings.state_path, settings.vault) as vault:
        active, history = vault.active_consents(), vault.consent_history()
    if args.json:
        print(json.dumps({"active": active, "history": history}, indent=1))
        return 0
    print(f"active consents: {', '.join(active) if active else 'none (nothing leaves this device)'}")
    for entry in history:
        print(f"{_when(entry['at'])}  {entry['action']:<6}  {entry['sink']:<8}  by {entry['by']}")
    return 0
