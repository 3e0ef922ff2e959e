"""Run ``python -m fleet ARGS`` under cProfile timed by CPU time, not wall time.

    python bench/cpu_profile.py OUT.prof controller run ...

Wall-clock profiles of a controller on a busy two-core machine charge other processes'
time to whatever function was waiting for the CPU; process time charges only the
controller's own work, which is what "controller CPU per task" measures.
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, args = sys.argv[1], sys.argv[2:]
    sys.argv = ["fleet", *args]
    profile = cProfile.Profile(time.process_time)
    try:
        profile.runcall(runpy.run_module, "fleet", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
