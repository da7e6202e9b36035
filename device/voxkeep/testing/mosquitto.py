"""A throwaway Mosquitto on loopback, for simulated homes and benchmarks (the tests use tests/broker.py).

Anonymous, no persistence, bound to 127.0.0.1 only: it carries a simulation's own speakers and nothing else.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import VoxkeepError


class LoopbackMosquitto:
    """``with LoopbackMosquitto() as broker: broker.port``; stopped (killed) on exit."""

    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else "")
        if not binary:
            raise VoxkeepError("this needs the Mosquitto broker to connect the simulated speakers; install it "
                               "(apt-get install mosquitto)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._dir = tempfile.TemporaryDirectory(prefix="voxkeep-mosquitto-")
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(f"persistence false\nset_tcp_nodelay true\nallow_anonymous true\n"
                        f"listener {self.port} 127.0.0.1\n")
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.01)
        self.close()
        raise VoxkeepError(f"the loopback Mosquitto did not start on port {self.port}; run 'mosquitto -v' to see why")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._dir.cleanup()

    def __enter__(self) -> LoopbackMosquitto:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
