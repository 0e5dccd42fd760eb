#!/usr/bin/env python3
"""Run a command several times; print its median wall time and peak memory.

usage: measure.py LABEL RUNS -- COMMAND...
Output: one line `LABEL: median X.XXX s (min .., max ..) over N runs, peak RSS M MiB`.
Standard output of the command is discarded; a failing run aborts with its status.
"""
import os
import statistics
import subprocess
import sys
import time


def main() -> int:
    label, runs = sys.argv[1], int(sys.argv[2])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    walls, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        peaks.append(usage.ru_maxrss / 1024)  # KiB -> MiB on Linux
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            print(f"{label}: command failed with status {code}", file=sys.stderr)
            return code
    print(
        f"{label}: median {statistics.median(walls):.3f} s "
        f"(min {min(walls):.3f}, max {max(walls):.3f}) over {runs} runs, "
        f"peak RSS {max(peaks):.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
