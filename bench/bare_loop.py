"""The references: a bare openWakeWord 0.6 predict loop, or a bare pymicro-wakeword loop, over a WAV file.

Each is written as a user of the library would write it, and run as its own process by ``bench/run.py``
so its CPU time and peak RSS are its own. Both apply the same refractory rule as
``voxkeep.wake.WakeDetector`` and print one JSON line per wake, ``t`` being the end of the frame whose
audio crossed (as in voxkeep's events):

- ``--engine openwakeword`` (default): ``openwakeword.model.Model.predict`` on every 80 ms frame,
  threshold ``--threshold``;
- ``--engine microwakeword``: ``MicroWakeWordFeatures.process_streaming`` on the same frames and
  ``MicroWakeWord.process_streaming`` per feature row, each model at its own ``probability_cutoff``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile

FRAME = 1280
RATE = 16000


def _openwakeword(args: argparse.Namespace):
    from openwakeword.model import Model

    model = Model(wakeword_models=[str(args.models_dir / m) for m in args.model], inference_framework="onnx",
                  melspec_model_path=str(args.models_dir / "melspectrogram.onnx"),
                  embedding_model_path=str(args.models_dir / "embedding_model.onnx"))

    def step(frame: np.ndarray) -> dict[str, float]:
        return {key.rsplit("_v", 1)[0]: float(score) for key, score in model.predict(frame).items()
                if score >= args.threshold}

    return step


def _microwakeword(args: argparse.Namespace):
    from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures

    models = [MicroWakeWord.from_config(args.models_dir / m) for m in args.model]
    features = MicroWakeWordFeatures()

    def step(frame: np.ndarray) -> dict[str, float]:
        woke = {}
        for row in features.process_streaming(frame.tobytes()):
            for m in models:
                if m.process_streaming(row):
                    woke[m.id] = 1.0
        return woke

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav", type=Path, help="16 kHz mono int16 WAV")
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True,
                        help="wake-word model file name: .onnx (openwakeword) or .json (microwakeword); repeatable")
    parser.add_argument("--engine", choices=("openwakeword", "microwakeword"), default="openwakeword")
    parser.add_argument("--threshold", type=float, default=0.5, help="openwakeword only")
    parser.add_argument("--refractory", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)

    step = (_openwakeword if args.engine == "openwakeword" else _microwakeword)(args)
    audio, rate = soundfile.read(str(args.wav), dtype="int16")
    if rate != RATE or audio.ndim != 1:
        print(f"{args.wav} must be 16 kHz mono", file=sys.stderr)
        return 2
    refractory = round(args.refractory * RATE / FRAME)
    quiet_until: dict[str, int] = {}
    for index in range(len(audio) // FRAME):
        for word, score in step(np.ascontiguousarray(audio[index * FRAME:(index + 1) * FRAME])).items():
            if index > quiet_until.get(word, -1):
                quiet_until[word] = index + refractory
                print(json.dumps({"type": "wake", "t": round((index + 1) * FRAME / RATE, 3),
                                  "wake_word": word, "score": round(score, 4)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
