"""Test-audio helpers shared by the test suite, the benchmarks and ``voxkeep simulate``."""
