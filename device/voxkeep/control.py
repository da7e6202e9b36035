"""The owner's control socket: ``voxkeep mute``, ``unmute``, ``recording on|off`` and ``status``.

Run by hand, the socket sits in the state directory (0700) and is itself 0600. Run by systemd as the
``voxkeep`` user, it sits in the RuntimeDirectory ``/run/voxkeep`` (0750) and is 0660, so owners who
joined group ``voxkeep`` can use the CLI; the CLI finds it there by itself. Either way every
connection's peer credentials are checked: root, the daemon's own user, or a member of its group.
One JSON object per line each way:
``{"action": "mute"}`` -> ``{"ok": true, "message": "now muted", "status": {...}}``.

Hostile local clients cannot wear it down: one selector thread accepts, checks credentials *before*
reading anything (a refused user is answered and closed at once), and reads requests; two worker
threads apply them. At most ``MAX_CLIENTS`` connections are held: a new one pushes out the oldest that
has not sent its request yet, and any connection is closed ``IDLE_SECONDS`` after it opened without
having sent one. A request that waited longer than ``APPLY_WITHIN`` to be applied, or whose client has
hung up, is answered "not applied" and not applied, so nobody is told a change failed that then happens.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import VoxkeepError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096

Handler = Callable[[dict[str, Any], float], dict[str, Any]]


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


MAX_CLIENTS = 16
"""Connections held at once (waiting for their request, or being answered)."""
IDLE_SECONDS = 2.0
"""A connection that has not sent its request line this long after connecting is closed."""
APPLY_WITHIN = 3.0
"""A request is applied only if it can be, including saving it, this soon after it arrived (the CLI waits 5 s)."""
WORKERS = 2


@dataclass
class _Client:
    sock: socket.socket
    since: float
    buf: bytes = b""


class ControlServer:
    """Serves owner requests: one selector thread for sockets, ``WORKERS`` threads for ``handler``.

    ``handler(request, deadline)`` must be thread-safe; ``deadline`` (``time.monotonic()``) is when the
    client stops waiting, so a change it cannot finish by then must not happen.
    """

    def __init__(self, state_dir: Path, handler: Handler) -> None:
        self.path = socket_path(state_dir)
        self._handler = handler
        self._listener: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._waiting: dict[int, _Client] = {}  # fd -> client that has not sent its request yet
        self._busy = 0  # requests handed to the workers and not yet answered
        self._busy_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._refused_uids: set[int] = set()

    def start(self) -> None:
        """Listen; refuse if another daemon already answers on this socket."""
        try:
            request(self.path.parent, {"action": "status"}, timeout=1.0)
        except DaemonNotRunning:
            pass  # a stale socket from a crash, or none: ours to (re)create
        else:
            raise VoxkeepError(f"another voxkeep daemon is already running with state in {self.path.parent}; "
                               "stop it, or give this one its own --state-dir")
        self.path.unlink(missing_ok=True)
        shared = "RUNTIME_DIRECTORY" in os.environ  # the service's group may use it
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o117 if shared else 0o177)  # born 0660/0600, never briefly world-writable
        try:
            listener.bind(str(self.path))
        except OSError:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="control-worker")
        self._thread = threading.Thread(target=self._loop, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._listener is None:  # only the daemon that made the socket removes it
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for client in list(self._waiting.values()):
            client.sock.close()
        self._waiting.clear()
        if self._selector is not None:
            self._selector.close()
        self._listener.close()
        self._listener = None
        self.path.unlink(missing_ok=True)

    # --- the selector thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._selector is not None
        while not self._stop.is_set():
            for key, _mask in self._selector.select(timeout=0.2):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._read(self._waiting.get(key.fd))
            self._expire()

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(MAX_CLIENTS):  # then serve what was read, so a flood cannot starve requests
            try:
                sock, _addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. out of file descriptors: wait instead of spinning
                log.warning("control socket cannot accept connections (%s)", exc.strerror)
                self._stop.wait(0.1)
                return
            sock.setblocking(False)
            uid = _peer_uid(sock)
            if not _allowed(uid):
                if uid not in self._refused_uids and len(self._refused_uids) < 64:
                    self._refused_uids.add(uid)
                    log.warning("refused a control connection from uid %d (logged once per user)", uid)
                _send_and_close(sock, {"ok": False, "message": "only the speaker's owner may control it"})
                continue
            if len(self._waiting) + self._busy >= MAX_CLIENTS:
                if not self._waiting:
                    _send_and_close(sock, {"ok": False, "message": "the daemon is busy; nothing was changed, "
                                                                   "try again"})
                    continue
                oldest = min(self._waiting.values(), key=lambda c: c.since)
                self._drop(oldest, {"ok": False, "message": "too many connections; nothing was changed"})
            client = _Client(sock, time.monotonic())
            self._waiting[sock.fileno()] = client
            assert self._selector is not None
            self._selector.register(sock, selectors.EVENT_READ)
            self._read(client)  # the CLI sends at once: take its request before the next flood pushes it out

    def _read(self, client: _Client | None) -> None:
        if client is None:
            return
        try:
            data = client.sock.recv(MAX_REQUEST + 1 - len(client.buf))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client, None)
            return
        client.buf += data
        if b"\n" not in client.buf and len(client.buf) <= MAX_REQUEST:
            return
        self._forget(client)
        with self._busy_lock:
            self._busy += 1
        assert self._pool is not None
        self._pool.submit(self._answer, client, time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        for client in [c for c in self._waiting.values() if now - c.since > IDLE_SECONDS]:
            self._drop(client, {"ok": False, "message": f"no request within {IDLE_SECONDS:.0f} s; closed"})

    def _forget(self, client: _Client) -> None:
        self._waiting.pop(client.sock.fileno(), None)
        assert self._selector is not None
        self._selector.unregister(client.sock)

    def _drop(self, client: _Client, reply: dict[str, Any] | None) -> None:
        self._forget(client)
        if reply is None:
            client.sock.close()
        else:
            _send_and_close(client.sock, reply)

    # --- the workers ---------------------------------------------------------------------------------

    def _answer(self, client: _Client, received: float) -> None:
        try:
            reply = self._reply(client, received)
            client.sock.settimeout(IDLE_SECONDS)
            client.sock.sendall((json.dumps(reply) + "\n").encode())
        except OSError:
            pass  # the client went away; it was not told anything, and nothing it did not see was done
        finally:
            client.sock.close()
            with self._busy_lock:
                self._busy -= 1

    def _reply(self, client: _Client, received: float) -> dict[str, Any]:
        line = client.buf.split(b"\n", 1)[0]
        try:
            if len(client.buf) > MAX_REQUEST:
                raise ValueError(f"a request is one JSON object on one line of at most {MAX_REQUEST} bytes")
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is one JSON object on one line")
        except (ValueError, RecursionError) as exc:  # RecursionError: a line of 4,000 '['
            return {"ok": False, "message": f"bad request: {str(exc)[:200] or 'nested too deeply'}"}
        deadline = received + APPLY_WITHIN
        if time.monotonic() > deadline or _hung_up(client.sock):
            return {"ok": False, "message": "the daemon was too busy to apply this in time; nothing was changed, "
                                            "try again"}
        try:
            return self._handler(request, deadline)
        except Exception:
            log.exception("control request %r failed", request.get("action"))
            return {"ok": False, "message": "the daemon failed to answer; see its log"}


def _send_and_close(sock: socket.socket, reply: dict[str, Any]) -> None:
    """Answer without waiting (the reply fits the empty send buffer), drop unread input, close."""
    with contextlib.suppress(OSError):
        sock.recv(MAX_REQUEST + 1)  # so the client reads our answer rather than a reset
    with contextlib.suppress(OSError):
        sock.send((json.dumps(reply) + "\n").encode())
    sock.close()


def _hung_up(sock: socket.socket) -> bool:
    """True if the client has closed its socket (it gave up waiting). A client that only shut down
    its sending side (``socat``, ``nc -N``) still waits for the answer, and is not hung up."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _fd, events in poller.poll(0))


MAX_REPLY = 1 << 20
"""A status reply is a few hundred bytes; anything longer than this is not an answer."""


def service_socket_exists() -> bool:
    """Whether the systemd service's socket is there. Its directory is for group voxkeep only: anyone
    else gets one line naming the fix (VoxkeepError), never a PermissionError traceback."""
    try:
        return SERVICE_SOCKET.exists()
    except PermissionError:
        raise VoxkeepError(f"permission denied on {SERVICE_SOCKET.parent}: only members of group voxkeep may "
                           "use the speaker's service; sudo usermod -a -G voxkeep $USER, then log in again") from None


def request(state_dir: Path, body: dict[str, Any], timeout: float = 5.0, *, find_service: bool = False) \
        -> dict[str, Any]:
    """Send one request to the running daemon and wait at most ``timeout`` seconds in all for its answer.

    DaemonNotRunning if nothing accepts the connection (which alone does not prove there is no daemon:
    see ``statelock``). With ``find_service`` (the CLI with no explicit --state-dir), the systemd
    service's socket is used when it exists, since on a speaker that is the daemon the owner means.
    """
    path = SERVICE_SOCKET if find_service and service_socket_exists() else socket_path(state_dir)
    deadline = time.monotonic() + timeout
    silent = VoxkeepError(f"the voxkeep daemon with state in {state_dir} did not answer in {timeout:.0f} s; "
                          "see its log (journalctl -u voxkeep)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        pause = threading.Event()
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                raise DaemonNotRunning(f"no voxkeep daemon is running with state in {state_dir}") from None
            except PermissionError:
                raise VoxkeepError(f"permission denied on {path}; run this as the speaker's owner "
                                   "(the user the daemon runs as, or root)") from None
            except (BlockingIOError, TimeoutError):  # its backlog is full: it is there, but swamped
                if time.monotonic() >= deadline:
                    raise silent from None
                pause.wait(0.05)
        data = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall((json.dumps(body) + "\n").encode())  # (a refusal may already be waiting for us)
        try:
            while not data.endswith(b"\n") and len(data) <= MAX_REPLY:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise silent from None
        if not data:
            raise DaemonNotRunning(f"the voxkeep daemon with state in {state_dir} went away")
    try:
        reply = json.loads(data)
        if not isinstance(reply, dict):
            raise ValueError("not an object")
    except ValueError:
        raise VoxkeepError("the daemon gave no answer; see its log (journalctl -u voxkeep)") from None
    return reply
