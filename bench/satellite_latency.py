"""Issue 17.3: what judging the command window on the device first costs a Home Assistant request.

The daemon runs in this process on a fake USB microphone that delivers generated speech in real time from
its own callback thread, with the satellite on loopback and a loopback Home Assistant (wyoming's async
client, voxkeep.testing.homeassistant) connected. For each request "alexa, <sentence>" it measures, on the
wall clock, the confirmed wake (the ``wake`` event) to the first ``audio-chunk`` arriving at Home Assistant,
and splits it into the wait for the speaker to finish (the endpointer: speech after the wake plus
``commands.silence_seconds``, in audio time) and the rest (command recognition, storing, handing over, the
socket). A satellite that streamed from the wake on would have the first chunk at about 0 s, and could not
keep "delete what I just said" from reaching Home Assistant.

    python bench/satellite_latency.py            # 6 requests, about a minute
    python bench/satellite_latency.py --repeat 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from voxkeep.app import build_app
from voxkeep.audio import MicSource
from voxkeep.config import load_settings
from voxkeep.events import Event, Handled, Wake
from voxkeep.owner import generate_identity
from voxkeep.testing.fakes import FakePyAudio
from voxkeep.testing.homeassistant import LoopbackHomeAssistant
from voxkeep.testing.speech import silence, speak
from voxkeep.vault import Vault

REQUESTS = (
    "what time is it",
    "turn on the kitchen lights",
    "what will the weather be like tomorrow",
    "set a timer for ten minutes",
    "add eggs and flour to the shopping list",
    "play some quiet music in the living room please",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="times to say each request")
    args = parser.parse_args()
    lines = [r for _ in range(args.repeat) for r in REQUESTS]
    parts = [silence(2.5)]
    for line in lines:
        parts += [speak("alexa", voice="en-us"), silence(0.2), speak(line, voice="en-us"), silence(3.5)]
    audio = np.concatenate(parts)
    with tempfile.TemporaryDirectory(prefix="voxkeep-satlat-") as tmp:
        state = Path(tmp) / "state"
        settings = load_settings(None, {"state_dir": str(state), "wake": {"words": ["alexa"]},
                                        "satellite": {"uri": "tcp://127.0.0.1:0", "allow": ["127.0.0.1"]}})
        with Vault(state, settings.vault) as vault:
            vault.add_recipient(generate_identity()[1])
            vault.consent("satellite", "grant", "cli")
        mic = FakePyAudio(np.zeros(0, np.int16), native_rate=16000, channels=1, accepts_16k=True, speed=1.0)
        wakes: list[float] = []
        handled: list[Handled] = []
        wake_t: list[float] = []

        def observe(event: Event) -> None:
            if isinstance(event, Wake):
                wakes.append(time.monotonic())
                wake_t.append(event.t)
            elif isinstance(event, Handled):
                handled.append(event)

        stop = threading.Event()
        app = build_app(settings, source=MicSource("", pa_module=mic), control=False, stop=stop,
                        extra_observers=[observe])
        runner = threading.Thread(target=app.run, name="daemon")
        runner.start()
        while app.satellite.port is None:
            stop.wait(0.05)
        ha = LoopbackHomeAssistant("127.0.0.1", app.satellite.port).start()
        while not app.satellite.connected:
            stop.wait(0.05)
        mic.audio = audio  # the room starts talking once Home Assistant is there
        mic._pos = 0.0
        stop.wait(len(audio) / 16000 + 2.0)
        stop.set()
        runner.join()
        ha.close()
    rows = []
    for i, pipeline in enumerate(ha.pipelines):
        if i >= len(wakes) or pipeline.first_chunk_at is None:
            continue
        total = pipeline.first_chunk_at - wakes[i]
        endpoint = handled[i].t - wake_t[i] if i < len(handled) else float("nan")
        rows.append((total, endpoint, total - endpoint))
    print(f"{len(lines)} requests said, {len(wakes)} wakes, {len(ha.pipelines)} streamed to Home Assistant")
    if not rows:
        print("nothing streamed: no figure", file=sys.stderr)
        return 1
    print("(the rest is wall time minus audio time: negative where the loop ran behind the microphone)")
    for total, endpoint, rest in rows:
        print(f"  wake -> first chunk {total:.2f} s (end of speech {endpoint:.2f} s, the rest {rest:.2f} s)")
    for name, k in (("wake -> first audio-chunk", 0), ("  of it: waiting for the end of speech", 1),
                    ("  the rest: command recognition, handing over", 2)):
        values = [r[k] for r in rows]
        print(f"{name:<56} median {statistics.median(values):.2f} s, min {min(values):.2f}, max {max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
