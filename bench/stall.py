"""Issue 9.5: with the broker stalled 5 s and disk writes stalled 5 s, no frame is dropped or late.

The daemon runs in this process on a fake USB microphone that delivers audio in real time from its own
PortAudio-style callback thread, exactly as a real one would, with a real Mosquitto (SIGSTOPped for 5 s)
and a vault whose file writes block for 5 s. A frame is *dropped* if the microphone's queue overflowed,
and *late* if the loop handled it more than two frames (160 ms) later than its audio time says it was
captured (relative to the steadiest frame, so start-up is not counted).

    python bench/stall.py          # also run by bench/run.py
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from voxkeep.app import build_app
from voxkeep.audio import MicSource
from voxkeep.config import load_settings
from voxkeep.durable import atomic_write
from voxkeep.owner import generate_identity
from voxkeep.testing.fakes import FakePyAudio
from voxkeep.testing.speech import silence, speak
from voxkeep.vault import Vault

LATE_SECONDS = 0.16
STALL_SECONDS = 5.0
BROKER_STALL_AT = 3.0
DISK_STALL_AT = 11.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _room() -> np.ndarray:
    """Four wakes with a question each, over about 30 s: recordings fall in both stall windows."""
    parts = [silence(1.5)]
    for _ in range(4):
        parts += [speak("alexa"), silence(0.2), speak("what is the weather like tomorrow"), silence(3.5)]
    return np.concatenate([*parts, silence(2.0)])


def measure(work: Path) -> dict[str, float]:
    """Run the stalled scenario; return dropped and late frame counts and what was stored."""
    port = _free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = work / "state"
    stall_disk = threading.Event()

    def slow_write(path: Path, data: bytes, mode: int = 0o600) -> None:
        if stall_disk.is_set():
            time.sleep(STALL_SECONDS)  # this thread is the disk: it really is stuck
        atomic_write(path, data, mode)

    try:
        settings = load_settings(None, {"state_dir": str(state), "wake": {"words": ["alexa"]},
                                        "mqtt": {"host": "127.0.0.1", "port": port, "device_id": "stall"}})
        vault = Vault(state, settings.vault, write=slow_write)
        vault.add_recipient(generate_identity()[1])
        room = _room()
        mic = FakePyAudio(room, accepts_16k=True, speed=1.0)
        lags: list[float] = []
        stored: list[str] = []
        start = time.monotonic()

        def on_frame(t: float) -> None:
            lags.append(time.monotonic() - start - t)

        app = build_app(settings, source=MicSource(pa_module=mic), on_frame=on_frame, vault=vault,
                        extra_observers=[lambda e: stored.append(e.TYPE) if e.TYPE in ("recorded", "wake") else None],
                        control=False)
        runner = threading.Thread(target=app.run, daemon=True)
        runner.start()
        pause = threading.Event()
        pause.wait(BROKER_STALL_AT)
        broker.send_signal(signal.SIGSTOP)
        pause.wait(STALL_SECONDS)
        broker.send_signal(signal.SIGCONT)
        pause.wait(DISK_STALL_AT - BROKER_STALL_AT - STALL_SECONDS)
        stall_disk.set()
        pause.wait(STALL_SECONDS)
        stall_disk.clear()
        pause.wait(len(room) / 16000 - DISK_STALL_AT - STALL_SECONDS + 1.0)
        app.daemon.stop.set()
        runner.join(30)
        base = min(lags) if lags else 0.0
        return {"frames": len(lags), "dropped": float(app.daemon.source.dropped_frames),  # type: ignore[attr-defined]
                "late": float(sum(lag - base > LATE_SECONDS for lag in lags)),
                "worst_lag": max(lags) - base if lags else 0.0, "recorded": float(stored.count("recorded")),
                "wakes": float(stored.count("wake")),
                "events_dropped": float(sum(app.bus.dropped().values()))}
    finally:
        broker.send_signal(signal.SIGCONT)
        broker.terminate()
        broker.wait(10)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="voxkeep-stall-"))
    try:
        r = measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = r["dropped"] == 0 and r["late"] == 0
    print(f"stall test: {r['frames']:.0f} frames in real time, broker stopped {STALL_SECONDS:.0f} s, disk writes "
          f"stalled {STALL_SECONDS:.0f} s: {r['dropped']:.0f} dropped, {r['late']:.0f} late (worst lag "
          f"{r['worst_lag'] * 1000:.0f} ms), {r['wakes']:.0f} wakes, {r['recorded']:.0f} recordings stored, "
          f"{r['events_dropped']:.0f} events dropped by observers -> {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
