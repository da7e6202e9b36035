"""``voxkeep mute|unmute|recording on|off|status``: the owner's switches.

They talk to the running daemon over its control socket. With no daemon running they change the saved
state directly, so the next start obeys them (mute survives restarts either way), but only once they
have proven no daemon owns the state dir (they hold its lock, see ``statelock``): a daemon that holds
it but does not answer means failing loudly, never "now muted" while it keeps listening.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import common_parent, settings_from_args

OFFLINE = ("With no daemon running, the saved state is changed so the next start obeys it; a daemon that "
           "holds the state dir but does not answer changes nothing and the exit status is 1.")


def register(sub: argparse._SubParsersAction) -> None:
    parent = common_parent()
    for name, action, text in (("mute", "mute", "close the microphone (only the owner or the button can unmute)"),
                               ("unmute", "unmute", "open the microphone again")):
        p = sub.add_parser(name, parents=[parent], help=text, description=text[0].upper() + text[1:] + ". " + OFFLINE)
        p.set_defaults(handler=_change, action=action)
    rec = sub.add_parser("recording", parents=[parent], help="allow or stop keeping recordings",
                         description="'on' lets the speaker keep recordings after a wake word (in the encrypted "
                                     "vault); 'off' keeps nothing, while wake words and commands still work. "
                                     + OFFLINE)
    rec.add_argument("state", choices=["on", "off"])
    rec.set_defaults(handler=_change, action=None)
    status = sub.add_parser("status", parents=[parent], help="what the speaker is doing and why",
                            description="Show the mode, the microphone, recordings kept, and why nothing is "
                                        "being recorded if that is so.")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_status)


def _change(args: argparse.Namespace) -> int:
    from .. import control
    from ..durable import private_dir
    from ..errors import VoxkeepError
    from ..privacy import STATE_FILE, PrivacyState
    from ..statelock import StateDirBusy, StateLock

    action = args.action or f"recording_{args.state}"
    settings = settings_from_args(args)
    service = _implicit_state(args, settings) and control.service_socket_exists()
    try:
        reply = control.request(settings.state_path, {"action": action}, find_service=service)
    except control.DaemonNotRunning as gone:
        if service:  # systemd removes its RuntimeDirectory when the service stops: it is running
            raise VoxkeepError(f"the voxkeep service did not answer on {control.SERVICE_SOCKET} ({gone}); "
                               "nothing was changed: see its log (journalctl -u voxkeep), or restart it") from None
        try:
            lock = StateLock.acquire(private_dir(settings.state_path), "cli")
        except StateDirBusy as busy:
            raise VoxkeepError(f"the voxkeep daemon ({busy.holder}) is running with state in {settings.state_path} "
                               f"but did not answer ({gone}); nothing was changed: see its log (journalctl -u "
                               "voxkeep), or restart it") from None
        with lock:  # a daemon starting now waits until the file is written
            state = PrivacyState(settings.state_path / STATE_FILE)
            outcome = state.request(action, "cli")
            if outcome.ok and state.unsaved:
                raise VoxkeepError(f"nothing was changed: {state.unsaved}") from None
        print(f"{outcome.message} (the daemon is not running; it will start this way)")
        return 0 if outcome.ok else 1
    print(reply.get("message", ""))
    return 0 if reply.get("ok") else 1


def _implicit_state(args: argparse.Namespace, settings: Any) -> bool:
    """True when the owner named no state dir, so the speaker's system service is the one meant."""
    return args.state_dir is None and not settings.state_dir


def offline_status(settings: Any) -> dict[str, Any]:
    """What ``status`` can say from the saved state when no daemon is running."""
    from ..errors import VoxkeepError
    from ..privacy import STATE_FILE, read_choices
    from ..statelock import StateDirBusy, StateLock
    from ..vault import Vault

    choices, problem = read_choices(settings.state_path / STATE_FILE)
    out: dict[str, Any] = {"daemon_running": False, "mode": choices.mode.value, "mic_open": False,
                           "recording_enabled": choices.recording}
    if problem:
        out["problem"] = problem
    if settings.state_path.is_dir():
        try:
            StateLock.acquire(settings.state_path, "cli").release()
        except StateDirBusy as busy:
            out["problem"] = (f"a voxkeep daemon ({busy.holder}) holds this state dir but does not answer; "
                              "the mode shown is the saved one. See its log (journalctl -u voxkeep)")
        except VoxkeepError:
            pass  # no access to the lock: the saved state is all we can say
    out.update(Vault(settings.state_path, settings.vault).status())
    return out


def _status(args: argparse.Namespace) -> int:
    from .. import control
    from ..errors import VoxkeepError

    settings = settings_from_args(args)
    service = _implicit_state(args, settings) and control.service_socket_exists()
    try:
        status = control.request(settings.state_path, {"action": "status"}, find_service=service)["status"]
        status["daemon_running"] = True
    except control.DaemonNotRunning as gone:
        if service:  # the saved state of this user's own dir would describe some other speaker
            raise VoxkeepError(f"the voxkeep service did not answer on {control.SERVICE_SOCKET} ({gone}); see its "
                               "log (journalctl -u voxkeep), or restart it") from None
        status = offline_status(settings)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(format_status(status))
    return 0


def format_status(s: dict[str, Any]) -> str:
    """The status in plain words, most important first."""
    mode = {"listening": "listening (recordings kept)", "not_recording": "listening, NOT recording",
            "muted": "MUTED (microphone closed)"}.get(s.get("mode", ""), s.get("mode", "?"))
    lines = [f"mode:        {mode}",
             f"daemon:      {'running' if s.get('daemon_running') else 'not running'}",
             f"microphone:  {'open' if s.get('mic_open') else 'closed'}"]
    if s.get("switch_engaged"):
        lines.append("mute switch: ENGAGED (release it to unmute)")
    if s.get("why_not_recording") and s.get("mode") == "listening":
        lines.append(f"not storing: {s['why_not_recording']}")
    if "recordings_stored" in s:
        lines.append(f"recordings:  {s['recordings_stored']} stored, kept {s.get('retention_days', '?')} days")
    if s.get("consents") is not None:
        lines.append(f"forwarding:  {', '.join(s['consents']) or 'none (nothing leaves this device)'}")
    if s.get("last_wake"):
        lw = s["last_wake"]
        lines.append(f"last wake:   {lw.get('wake_word')} at {lw.get('at')}")
    if s.get("problem"):
        lines.append(f"problem:     {s['problem']}")
    return "\n".join(lines)
