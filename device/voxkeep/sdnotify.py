"""A tiny sd_notify client: tell systemd we are ready, alive, stopping, or what we are doing.

Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op, so the daemon calls these
unconditionally. Each call is one non-blocking datagram on a local socket, cheap enough for the
audio loop.

How the daemon must use it (systemd/voxkeep.service has ``Type=notify`` and ``WatchdogSec=``):

- ``ready()`` once the microphone is open (or deliberately closed because muted) and the loop runs,
  also when the watchdog is switched off (``WatchdogSec=0``), or ``systemctl start`` would hang;
- ``watchdog()`` from the audio loop *after each frame is processed*, never from a timer thread: if
  the microphone stalls or the loop hangs, pings stop and systemd restarts the service. While muted
  no frames flow from a microphone, so the loop's idle wait pings instead (it is alive, just not
  listening); a file or stdin source keeps delivering frames while muted, and each one pings;
  ``watchdog_interval()`` says how often is enough (half of WatchdogSec; pinging every frame is fine);
- ``status(text)`` on mode changes ("listening", "muted by button", ...), shown by ``systemctl status``;
- ``stopping()`` when shutdown begins.
"""

from __future__ import annotations

import os
import socket


def enabled() -> bool:
    """Run by systemd with Type=notify: it waits for ``ready()`` whether or not a watchdog is set."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def notify(message: str) -> bool:
    """Send one sd_notify message; False (and nothing sent) when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.setblocking(False)
        try:
            sock.sendto(message.encode(), address)
        except OSError:  # systemd gone or socket full: the watchdog will tell, not an exception here
            return False
    return True


def ready() -> bool:
    """The service is up: systemd starts dependent units and ``systemctl start`` returns."""
    return notify("READY=1")


def watchdog() -> bool:
    """Proof of life for WatchdogSec; call only when audio frames are really flowing."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Shutdown has begun; systemd will not treat the missing watchdog pings as a hang."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """One line shown by ``systemctl status voxkeep``."""
    return notify("STATUS=" + text.replace("\n", " "))


def watchdog_interval() -> float | None:
    """Seconds between pings that keep systemd happy (half of WatchdogSec), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
