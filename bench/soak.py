"""Issue 14: an hour of household audio at real-time pace, with MQTT, a consented sink and CLI traffic.

Memory that creeps, threads that pile up or a loop that falls behind only show after hours on a real
speaker. This runs the whole daemon the way a speaker does: its own process (``soak.py --child``), a
fake USB microphone delivering a looping household scene from its own callback thread in real time, a
real Mosquitto on loopback, a consented HTTP sink that receives every recording, and the owner's CLI
(``voxkeep status``, ``mute``, ``unmute``) and MQTT commands arriving on a schedule. The parent samples
the child's RSS and thread count from /proc and at the end asks the child how many frames the
microphone dropped and how many the loop handled late (more than 160 ms after their audio time).

Pass: RSS at the end within 5 MB of RSS after the warm-up, no more threads at the end than at the
warm-up, no dropped frame, no late frame.

    python bench/soak.py                  # one hour (the issue's figure)
    python bench/soak.py --minutes 5      # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import paho.mqtt.client as mqtt

LATE_SECONDS = 0.16
RSS_BOUND_MB = 5.0
SAMPLE_SECONDS = 5.0
STATUS_EVERY = 30.0
MUTE_EVERY = 420.0
MQTT_MUTE_EVERY = 660.0
MUTED_FOR = 20.0


def household_scene(seed: int = 7) -> np.ndarray:
    """About three minutes of a home: requests, a deletion, television talk, never digital silence."""
    from voxkeep.testing.speech import silence, speak

    lines: list[str | float] = [
        4.0, "hey jarvis", 0.2, "what is the weather like tomorrow", 12.0,
        "the match starts at eight and the forecast says it will stay dry all evening", 1.0,
        "and now the news from around the region", 20.0,
        "hey jarvis", 0.2, "turn on the kitchen lights", 15.0,
        "hey jarvis", 0.2, "delete what I just said", 25.0,
        "we will be right back after this short break with more music", 25.0,
        "hey jarvis", 0.2, "set a timer for ten minutes", 30.0,
        "thank you for watching and good night", 20.0,
    ]
    parts = [silence(p) if isinstance(p, float) else speak(p) for p in lines]
    scene = np.concatenate(parts).astype(np.float64)
    rng = np.random.default_rng(seed)
    pink = np.cumsum(rng.normal(0, 1, len(scene)))  # a quiet rumble under everything, like a fridge
    pink -= np.convolve(pink, np.ones(400) / 400, mode="same")
    scene += 30 * pink / (np.std(pink) + 1e-9)
    return np.clip(scene, -32768, 32767).astype(np.int16)


# --- the child: the daemon under test --------------------------------------------------------------------


def _looping_mic(scene: np.ndarray) -> Any:
    """A FakePyAudio at 16 kHz that plays ``scene`` over and over, sliced (no per-chunk resampling)."""
    from voxkeep.testing.fakes import FakePyAudio

    class LoopingMic(FakePyAudio):
        def take(self, n: int, rate: int, channels: int) -> bytes | None:
            with self._lock:
                start = round(self._pos * 16000)
                self._pos += n / rate
            idx = (start + np.arange(n)) % len(self.audio)
            return np.repeat(self.audio[idx][:, None], channels, axis=1).astype("<i2").tobytes()

    return LoopingMic(scene, accepts_16k=True, channels=1, speed=1.0)


def child(config: Path, report: Path, minutes: float) -> int:
    from voxkeep.app import build_app
    from voxkeep.audio import MicSource
    from voxkeep.config import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    settings = load_settings(config)
    # (audio time, lag) per frame, written in place and touched up front: the measurement itself must
    # not grow the RSS it measures (a list of tuples grew 4 MB an hour).
    lags = np.full((int(minutes * 60 / 0.08 * 1.2) + 2000, 2), np.nan)
    count = [0]
    start = time.monotonic()

    def on_frame(t: float) -> None:
        if count[0] < len(lags):
            lags[count[0]] = (t, time.monotonic() - start - t)
            count[0] += 1

    app = build_app(settings, source=MicSource(pa_module=_looping_mic(household_scene())), on_frame=on_frame)
    app.run(handle_signals=True)
    late, worst = _late_frames(lags[:count[0]])
    report.write_text(json.dumps({"frames": count[0], "dropped": app.daemon.source.dropped_frames,  # type: ignore[attr-defined]
                                  "late": late, "worst_lag": worst,
                                  "events_dropped": sum(app.bus.dropped().values())}))
    return 0


def _late_frames(lags: np.ndarray) -> tuple[int, float]:
    """Frames handled more than LATE_SECONDS after the steadiest frame of their stream.

    Each mute closes the stream and the unmute opens a new one with its own clock, so lateness is
    measured within each stretch of contiguous audio time.
    """
    late, worst = 0, 0.0
    breaks = np.flatnonzero(np.diff(lags[:, 0]) > 0.2) + 1
    for segment in np.split(lags[:, 1], breaks):
        if len(segment):
            base = segment.min()
            late += int((segment - base > LATE_SECONDS).sum())
            worst = max(worst, float(segment.max() - base))
    return late, worst


# --- the parent: the household around it -----------------------------------------------------------------


class Sink(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.received.append(len(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _status_of(pid: int) -> tuple[float, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def _cli(state: Path, *args: str) -> bool:
    cmd = [str(Path(sys.executable).with_name("voxkeep")), *args, "--state-dir", str(state)]
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0


def soak(work: Path, minutes: float) -> dict[str, Any]:
    from voxkeep.config import load_settings
    from voxkeep.owner import generate_identity
    from voxkeep.testing.mosquitto import LoopbackMosquitto
    from voxkeep.vault import Vault

    broker = LoopbackMosquitto()
    port = broker.port
    Sink.received = []
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    state = work / "state"
    config = work / "voxkeep.toml"
    config.write_text(f'state_dir = "{state}"\n[wake]\nwords = ["hey_jarvis"]\n'
                      f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\ndevice_id = "soak"\n'
                      f'[forward]\nhttp_url = "http://127.0.0.1:{sink.server_address[1]}/voice"\n')
    with Vault(state, load_settings(config).vault) as vault:
        vault.add_recipient(generate_identity()[1])
        vault.consent("http", "grant", "cli")

    seen = [0]
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda _c, _u, _msg: seen.__setitem__(0, seen[0] + 1)
    watcher.connect("127.0.0.1", port)
    watcher.subscribe("voxkeep/#")
    watcher.loop_start()

    report = work / "report.json"
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(config), str(report), str(minutes)],
                            stderr=(work / "child.log").open("wb"))
    samples: list[tuple[float, float, int]] = []
    cli_ok = cli_failed = 0
    began = time.monotonic()
    end = began + minutes * 60
    next_status, next_mute, next_mqtt = STATUS_EVERY, MUTE_EVERY, MQTT_MUTE_EVERY
    unmute_at: float | None = None
    mqtt_unmute_at: float | None = None
    try:
        while (now := time.monotonic()) < end and proc.poll() is None:
            elapsed = now - began
            rss, threads = _status_of(proc.pid)
            samples.append((elapsed, rss, threads))
            calls: list[tuple[str, ...]] = []
            if elapsed >= next_status:
                calls.append(("status",))
                next_status += STATUS_EVERY
            if elapsed >= next_mute:
                calls.append(("mute",))
                unmute_at, next_mute = elapsed + MUTED_FOR, next_mute + MUTE_EVERY
            if unmute_at is not None and elapsed >= unmute_at:
                calls.append(("unmute",))
                unmute_at = None
            for call in calls:
                ok = _cli(state, *call)
                cli_ok, cli_failed = cli_ok + ok, cli_failed + (not ok)
            if elapsed >= next_mqtt:
                watcher.publish("voxkeep/soak/set", json.dumps({"mute": True}), qos=1)
                mqtt_unmute_at, next_mqtt = elapsed + MUTED_FOR, next_mqtt + MQTT_MUTE_EVERY
            if mqtt_unmute_at is not None and elapsed >= mqtt_unmute_at:
                watcher.publish("voxkeep/soak/set", json.dumps({"mute": False}), qos=1)
                mqtt_unmute_at = None
            time.sleep(max(0.0, SAMPLE_SECONDS - (time.monotonic() - now)))
        crashed = proc.poll() is not None
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        watcher.loop_stop()
        sink.shutdown()
        broker.close()
    if crashed or not report.exists():
        raise SystemExit(f"soak: the daemon stopped early (exit {proc.returncode}); see {work / 'child.log'}")
    result = json.loads(report.read_text())
    warm = [s for s in samples if s[0] >= min(300.0, max(30.0, minutes * 60 * 0.2))]  # after models and caches settle
    tail = warm[-max(1, len(warm) // 10):]
    return {**result, "minutes": (samples[-1][0] if samples else 0) / 60,
            "rss_warm": warm[0][1], "rss_end": float(np.median([s[1] for s in tail])),
            "rss_max": max(s[1] for s in warm), "threads_warm": warm[0][2], "threads_end": tail[-1][2],
            "threads_max": max(s[2] for s in warm), "cli_ok": cli_ok, "cli_failed": cli_failed,
            "posts": len(Sink.received), "mqtt_seen": seen[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run (default 60)")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "REPORT", "MINUTES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.child[0]), Path(args.child[1]), float(args.child[2]))
    if not 1 <= args.minutes <= 24 * 60:
        parser.error("--minutes must be between 1 and 1440")
    work = Path(tempfile.mkdtemp(prefix="voxkeep-soak-"))
    try:
        r = soak(work, args.minutes)
    finally:
        if not os.environ.get("VOXKEEP_SOAK_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    growth = r["rss_end"] - r["rss_warm"]
    ok = growth <= RSS_BOUND_MB and r["threads_end"] <= r["threads_warm"] and r["dropped"] == 0 and r["late"] == 0
    print(f"soak: {r['minutes']:.1f} min in real time, {r['frames']} frames: RSS {r['rss_warm']:.1f} MB after warm-up"
          f" -> {r['rss_end']:.1f} MB at the end ({growth:+.1f} MB, max {r['rss_max']:.1f}); threads "
          f"{r['threads_warm']} -> {r['threads_end']} (max {r['threads_max']}); {r['dropped']} frames dropped, "
          f"{r['late']} late (worst lag {r['worst_lag'] * 1000:.0f} ms); sink received {r['posts']} recordings; "
          f"CLI {r['cli_ok']} ok / {r['cli_failed']} failed; {r['mqtt_seen']} MQTT messages; "
          f"{r['events_dropped']} events dropped by observers -> {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
