"""voxkeep: a privacy-first smart-speaker daemon whose recordings never leave the house without consent."""

__version__ = "0.1.0"

SAMPLE_RATE = 16000
"""All audio inside voxkeep is 16 kHz mono int16, what openWakeWord and pocketsphinx expect."""

FRAME_SAMPLES = 1280
"""One frame is 80 ms: openWakeWord's native hop, so every frame is exactly one model step."""
