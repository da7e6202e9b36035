"""Issue 18.6: what arbitration adds between a confirmed wake and the speaker knowing it may answer.

Three speakers' real MQTT bridges (paho, voxkeep.mqtt) and arbiters (voxkeep.arbitration) on a real
Mosquitto on loopback claim the same wake at once, ``--rounds`` times, with random strengths. For each
claim it measures, on the wall clock, claim to decision: the winner can only know after ``window_ms``, a
loser knows as soon as a stronger claim arrives. Printed as median and p95, and as a ratio of
``window_ms`` (with arbitration off the added latency is 0: the speaker answers at once).

What a user notices is less: the command window opens at the wake either way and the decision only holds
back handling an utterance that ends before it, and an utterance ends at the earliest
``commands.silence_seconds`` (0.7 s) after the wake, well after a 150 ms window. The hold is printed too.

    python bench/arbitration_latency.py                 # 60 wakes, about a minute
    python bench/arbitration_latency.py --window-ms 100 --rounds 300
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from voxkeep import __version__
from voxkeep.arbitration import SKEW_SECONDS, Arbiter
from voxkeep.config import ArbitrationSettings, CommandSettings, MqttSettings
from voxkeep.mqtt import MqttBridge
from voxkeep.testing.mosquitto import LoopbackMosquitto


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--window-ms", type=int, default=ArbitrationSettings.window_ms)
    parser.add_argument("--speakers", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(18)
    with LoopbackMosquitto() as broker:
        port = broker.port
        bridges: list[MqttBridge] = []
        arbiters: list[Arbiter] = []
        try:
            for i in range(args.speakers):
                holder: list[Arbiter] = []
                bridge = MqttBridge(MqttSettings(host="127.0.0.1", port=port, device_id=f"speaker{i}"),
                                    on_command=lambda a, c: (True, ""), version=__version__,
                                    on_arbitration=lambda t, p, r, h=holder: h[0].receive(t, p, r))
                arbiter = Arbiter(ArbitrationSettings(enabled=True, window_ms=args.window_ms), f"speaker{i}",
                                  send=bridge.send, connected=lambda b=bridge: b.connected,
                                  publish=lambda _e: None, clock=lambda: 0.0, on_house_command=lambda c, w: None)
                holder.append(arbiter)
                bridge.start()
                arbiter.start()
                bridges.append(bridge)
                arbiters.append(arbiter)
            for bridge in bridges:
                if not bridge.wait_connected(10):
                    raise SystemExit("a bridge could not connect to the loopback broker")
            time.sleep(0.5)  # subscriptions in place
            won: list[float] = []
            lost: list[float] = []
            split = 0
            for _ in range(args.rounds):
                started = time.monotonic()
                rounds = [a.claim("alexa", rng.uniform(-45, -20), 0.9) for a in arbiters]
                for r in rounds:
                    r.wait_won()
                winners = [r for r in rounds if r.outcome == "won"]
                split += len(winners) != 1
                for r in rounds:
                    (won if r.outcome == "won" else lost).append(r.decided_at - started)
                time.sleep(0.1 + SKEW_SECONDS + args.window_ms / 1000)  # the next wake is another wake
        finally:
            for arbiter in arbiters:
                arbiter.stop()
            for bridge in bridges:
                bridge.stop()
    window = args.window_ms / 1000
    silence_s = CommandSettings.silence_seconds
    print(f"arbitration, {args.speakers} speakers on a loopback Mosquitto, window_ms={args.window_ms}, "
          f"{args.rounds} wakes")
    for name, values in (("winner", won), ("loser ", lost)):
        med, p95 = statistics.median(values), _pct(values, 0.95)
        print(f"  {name}, claim to decision: median {med * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms "
              f"({med / window:.2f}x / {p95 / window:.2f}x window_ms)")
    hold = max(0.0, _pct(won, 0.95) - silence_s)
    print(f"  wakes without exactly one winner: {split} of {args.rounds}")
    print(f"  arbitration off: 0 ms added. Handling held back for an utterance (ends >= {silence_s:.1f} s after "
          f"the wake): {hold * 1000:.0f} ms at p95")
    return 0 if split == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
