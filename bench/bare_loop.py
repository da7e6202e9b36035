"""The reference: a bare openWakeWord 0.6 predict loop over a WAV file, as a user would write it.

Run as its own process by ``bench/run.py`` so its CPU time and peak RSS are its own. It applies the
same threshold and refractory rule as ``voxkeep.wake.WakeDetector`` and prints one JSON line per wake,
``t`` being the end of the frame that crossed (as in voxkeep's events).
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav", type=Path, help="16 kHz mono int16 WAV")
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="wake-word .onnx file name (repeatable)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--refractory", type=float, default=2.0, help="seconds")
    args = parser.parse_args(argv)

    from openwakeword.model import Model

    model = Model(wakeword_models=[str(args.models_dir / m) for m in args.model], inference_framework="onnx",
                  melspec_model_path=str(args.models_dir / "melspectrogram.onnx"),
                  embedding_model_path=str(args.models_dir / "embedding_model.onnx"))
    audio, rate = soundfile.read(str(args.wav), dtype="int16")
    if rate != RATE or audio.ndim != 1:
        print(f"{args.wav} must be 16 kHz mono", file=sys.stderr)
        return 2
    refractory = round(args.refractory * RATE / FRAME)
    quiet_until: dict[str, int] = {}
    for index in range(len(audio) // FRAME):
        scores = model.predict(np.ascontiguousarray(audio[index * FRAME:(index + 1) * FRAME]))
        for key, score in scores.items():
            if score >= args.threshold and index > quiet_until.get(key, -1):
                quiet_until[key] = index + refractory
                word = key.rsplit("_v", 1)[0]
                print(json.dumps({"type": "wake", "t": round((index + 1) * FRAME / RATE, 3),
                                  "wake_word": word, "score": round(float(score), 4)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
