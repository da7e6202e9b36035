"""The owner's control socket: ``voxkeep mute``, ``unmute``, ``recording on|off`` and ``status``.

Run by hand, the socket sits in the state directory (0700) and is itself 0600. Run by systemd as the
``voxkeep`` user, it sits in the RuntimeDirectory ``/run/voxkeep`` (0750) and is 0660, so owners who
joined group ``voxkeep`` can use the CLI; the CLI finds it there by itself. Either way every
connection's peer credentials are checked: root, the daemon's own user, or a member of its group.
One JSON object per line each way:
``{"action": "mute"}`` -> ``{"ok": true, "message": "now muted", "status": {...}}``.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import VoxkeepError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class DaemonNotRunning(VoxkeepError):
    """No daemon answers on the control socket."""


SERVICE_SOCKET = Path("/run/voxkeep") / SOCKET_NAME
"""Where the systemd service (RuntimeDirectory=voxkeep) listens."""


def socket_path(state_dir: Path) -> Path:
    """Where a daemon with this state dir listens (systemd's RuntimeDirectory when run as the service)."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    return Path(runtime.split(":")[0]) / SOCKET_NAME if runtime else state_dir / SOCKET_NAME


def _allowed(uid: int) -> bool:
    """Root, the daemon's user, or a member of the daemon's group (the unit's owners)."""
    if uid in (0, os.geteuid()):
        return True
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(os.getegid())
    except KeyError:
        return False
    return user.pw_gid == group.gr_gid or user.pw_name in group.gr_mem


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class ControlServer:
    """Serves owner requests on its own thread; ``handler`` must be thread-safe and quick."""

    def __init__(self, state_dir: Path, handler: Handler) -> None:
        self.path = socket_path(state_dir)
        self._handler = handler
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; refuse if another daemon already owns this state directory."""
        try:
            request(self.path.parent, {"action": "status"}, timeout=1.0)
        except DaemonNotRunning:
            pass  # a stale socket from a crash, or none: ours to (re)create
        else:
            raise VoxkeepError(f"another voxkeep daemon is already running with state in {self.path.parent}; "
                               "stop it, or give this one its own --state-dir")
        self.path.unlink(missing_ok=True)
        outer = self

        class _Conn(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer._serve(self.connection, self.rfile, self.wfile)

        shared = "RUNTIME_DIRECTORY" in os.environ  # the service's group may use it
        old_umask = os.umask(0o117 if shared else 0o177)  # born 0660/0600, never briefly world-writable
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(self.path), _Conn)
        finally:
            os.umask(old_umask)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:  # only the daemon that made the socket removes it
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.path.unlink(missing_ok=True)

    def _serve(self, conn: socket.socket, rfile: Any, wfile: Any) -> None:
        line = rfile.readline(MAX_REQUEST + 1)  # read first, so a refused client still gets its answer
        uid = _peer_uid(conn)
        if not _allowed(uid):
            log.warning("refused a control connection from uid %d", uid)
            reply: dict[str, Any] = {"ok": False, "message": "only the speaker's owner may control it"}
        else:
            try:
                request = json.loads(line)
                if not isinstance(request, dict) or len(line) > MAX_REQUEST:
                    raise ValueError("a request is one JSON object on one line")
            except (ValueError, RecursionError) as exc:  # RecursionError: a line of 4,000 '['
                reply = {"ok": False, "message": f"bad request: {str(exc)[:200] or 'nested too deeply'}"}
            else:
                try:
                    reply = self._handler(request)
                except Exception:
                    log.exception("control request %r failed", request.get("action"))
                    reply = {"ok": False, "message": "the daemon failed to answer; see its log"}
        wfile.write((json.dumps(reply) + "\n").encode())


def request(state_dir: Path, body: dict[str, Any], timeout: float = 5.0, *, find_service: bool = False) \
        -> dict[str, Any]:
    """Send one request to the running daemon; DaemonNotRunning if there is none.

    With ``find_service`` (the CLI with no explicit --state-dir), the systemd service's socket is used
    when it exists, since on a speaker that is the daemon the owner means.
    """
    path = SERVICE_SOCKET if find_service and SERVICE_SOCKET.exists() else socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(f"no voxkeep daemon is running with state in {state_dir}") from None
        except PermissionError:
            raise VoxkeepError(f"permission denied on {path}; run this as the speaker's owner "
                               "(the user the daemon runs as, or root)") from None
        data = b""
        try:
            sock.sendall((json.dumps(body) + "\n").encode())
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            raise DaemonNotRunning(f"the voxkeep daemon with state in {state_dir} went away") from None
        except TimeoutError:
            raise VoxkeepError(f"the voxkeep daemon with state in {state_dir} did not answer in {timeout:.0f} s; "
                               "see its log (journalctl -u voxkeep)") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise VoxkeepError("the daemon gave no answer; see its log (journalctl -u voxkeep)") from None
    return dict(reply)
