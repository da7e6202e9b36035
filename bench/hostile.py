"""Issue 14: what hostile local clients and broker users cost a running daemon (memory, threads, latency).

A real ``voxkeep run --input -`` daemon (fed silence at real time) with a real Mosquitto on loopback:

1. 5,000 idle connections to the control socket, then ``voxkeep mute`` and ``unmute``: the daemon's
   thread count and RSS before and after, and how long each CLI call took.
2. A 200 MB payload published to ``voxkeep/<id>/set``: the daemon's RSS and peak RSS (VmHWM) before
   and after, then a valid mute to show MQTT still works.

    python bench/hostile.py
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

CLI = [sys.executable, "-c", "import sys; from voxkeep.cli import main; sys.exit(main())"]
CONNECTIONS = 5000
PAYLOAD_MB = 200


def _proc_status(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {"threads": int(fields["Threads"]), "rss_mb": int(fields["VmRSS"].split()[0]) // 1024,
            "peak_mb": int(fields["VmHWM"].split()[0]) // 1024}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_daemon(work: Path, port: int) -> subprocess.Popen[bytes]:
    (work / "config.toml").write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ndevice_id = "hostile"\n')
    daemon = subprocess.Popen([*CLI, "run", "--config", str(work / "config.toml"), "--input", "-", "--state-dir",
                               str(work / "state"), "-w", "alexa"], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def feed() -> None:  # 80 ms of silence every 80 ms, as a microphone would
        with contextlib.suppress(OSError, ValueError):
            while daemon.poll() is None and daemon.stdin is not None:
                daemon.stdin.write(b"\0" * 2560)
                daemon.stdin.flush()
                time.sleep(0.08)

    threading.Thread(target=feed, daemon=True).start()
    sock = work / "state" / "control.sock"
    while not sock.exists():
        time.sleep(0.1)
    time.sleep(5.0)  # the MQTT bridge connects and the models settle
    return daemon


def _cli(action: str, work: Path) -> tuple[str, float]:
    start = time.monotonic()
    done = subprocess.run([*CLI, action, "--state-dir", str(work / "state")], capture_output=True, check=False)
    return f"exit {done.returncode}: {(done.stdout or done.stderr).decode().strip()[:80]}", time.monotonic() - start


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="voxkeep-hostile-"))
    port = _free_port()
    (work / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                                         "user root\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    daemon = _start_daemon(work, port)
    flood: list[socket.socket] = []
    try:
        before = _proc_status(daemon.pid)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, CONNECTIONS + 500)), hard))
        for _ in range(min(CONNECTIONS, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)):
            conn = socket.socket(socket.AF_UNIX)
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                conn.connect(str(work / "state" / "control.sock"))
            flood.append(conn)
        flooded = _proc_status(daemon.pid)
        mute, mute_s = _cli("mute", work)
        unmute, unmute_s = _cli("unmute", work)
        after = _proc_status(daemon.pid)
        print(f"control socket: {len(flood)} idle connections; daemon threads {before['threads']} -> "
              f"{flooded['threads']} -> {after['threads']}, RSS {before['rss_mb']} -> {after['rss_mb']} MB "
              f"({after['rss_mb'] / before['rss_mb']:.2f}x); mute {mute} in {mute_s:.2f} s, unmute {unmute} in "
              f"{unmute_s:.2f} s")
        for conn in flood:
            conn.close()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-publisher", protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", port)
        client.loop_start()
        before = _proc_status(daemon.pid)
        client.publish("voxkeep/hostile/set", b'{"mute": true' + b" " * (PAYLOAD_MB << 20) + b"}",
                       qos=1).wait_for_publish(120)
        time.sleep(3.0)
        big = _proc_status(daemon.pid)
        client.publish("voxkeep/hostile/set", b'{"mute": true}', qos=1).wait_for_publish(10)
        time.sleep(1.5)
        client.loop_stop()
        status = subprocess.run([*CLI, "status", "--state-dir", str(work / "state")], capture_output=True,
                                check=False).stdout.decode().splitlines()[0]
        print(f"MQTT: a {PAYLOAD_MB} MB payload on the set topic: daemon RSS {before['rss_mb']} -> {big['rss_mb']} MB, "
              f"peak {before['peak_mb']} -> {big['peak_mb']} MB ({big['peak_mb'] / before['peak_mb']:.2f}x); "
              f"then a valid mute: {status.split(':', 1)[1].strip()}")
    finally:
        daemon.terminate()
        daemon.wait(15)
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
