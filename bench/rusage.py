"""Run a command and print its CPU seconds, peak RSS and wall time as one JSON line on stderr.

Why a separate small process: Linux carries a process's peak RSS across exec, and a child started
from the benchmark (which holds the generated audio) would report the benchmark's own peak as its
own. Started from here, the command inherits the peak of this tiny interpreter instead.
Stdlib only, on purpose: importing numpy here would raise that floor again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    figures = {"cpu": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024,
               "wall": time.perf_counter() - start, "status": proc.returncode}
    print("RUSAGE " + json.dumps(figures), file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
