"""G3's node side: CPU per task of the agent, its wrappers and the tasks, without SSH or a
controller, and the floor this machine sets for each piece of a task's start and end.

Runs the node agent on this machine (as the current user, in a temporary node root), sends it
N spawns of `true`, 64 at a time, and reads the CPU that the agent and everything it forked
used from a cgroup of their own (cgroup v1 cpuacct or v2 cpu.stat; needs root), falling back
to the whole machine's CPU (then run it on a quiet machine). Then times the pieces one task's
start costs on this machine, in a plain python3 process: fork + exit, `Popen(["true"])`, a
fork that runs `Popen(["true"])` (what a wrapper does), and the task directory's two
directories, four files and two renames.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common import ROOT, write_results

AGENT = ROOT / "agent_bootstrap" / "fleet_agent.py"
PYTHON = "/usr/bin/python3"  # the node's python, as on a lab node


class CpuMeter:
    """CPU seconds used by the processes put in a cgroup of our own (and their children),
    or by the whole machine when no cgroup can be made."""

    def __init__(self, name: str) -> None:
        self.kind, self.dir = "machine", None
        for base, kind in (("/sys/fs/cgroup/cpuacct", "v1"), ("/sys/fs/cgroup", "v2")):
            path = Path(base) / name
            try:
                path.mkdir(exist_ok=True)
                probe = path / ("cpuacct.usage" if kind == "v1" else "cpu.stat")
                probe.read_text()
            except OSError:
                continue
            self.kind, self.dir = kind, path
            break

    def add(self, pid: int) -> None:
        if self.dir is not None:
            (self.dir / ("tasks" if self.kind == "v1" else "cgroup.procs")).write_text(str(pid))

    def seconds(self) -> float:
        if self.kind == "v1":
            return int((self.dir / "cpuacct.usage").read_text()) / 1e9  # type: ignore[operator]
        if self.kind == "v2":
            stat = dict(
                line.split()
                for line in (self.dir / "cpu.stat").read_text().splitlines()  # type: ignore[operator]
            )
            return int(stat["usage_usec"]) / 1e6
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")


def agent_run(n: int, width: int) -> dict[str, float]:
    """Run ``n`` `true` tasks through a local agent, ``width`` at a time."""
    meter = CpuMeter("fleet-bench-agent")
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-node-"))
    proc = subprocess.Popen(
        [PYTHON, str(AGENT), str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    meter.add(proc.pid)
    messages: queue.Queue[dict] = queue.Queue()
    out = proc.stdout
    threading.Thread(target=lambda: [messages.put(json.loads(x)) for x in out], daemon=True).start()
    messages.get(timeout=30)  # hello
    sent = done = 0

    def send() -> None:
        nonlocal sent
        sent += 1
        args = {"key": f"job/t{sent}", "taskDir": f"workitems/job/t{sent}", "attempt": 1}
        args |= {"argv": ["true"], "env": {}, "maxWallClockSeconds": None}
        request = {"type": "request", "id": sent, "op": "spawn", "args": args}
        proc.stdin.write(json.dumps(request).encode() + b"\n")  # type: ignore[union-attr]

    cpu0, t0 = meter.seconds(), time.perf_counter()
    while sent < min(width, n):
        send()
    proc.stdin.flush()
    while done < n:
        if messages.get(timeout=60).get("event") == "exited":
            done += 1
            if sent < n:
                send()
                proc.stdin.flush()
    elapsed, cpu = time.perf_counter() - t0, meter.seconds() - cpu0
    proc.stdin.close()
    proc.wait(30)
    return {
        "tasks": n,
        "tasks_per_s": n / elapsed,
        "node_cpu_ms_per_task": cpu / n * 1000,
        "meter": meter.kind,
    }


FLOOR = r"""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path
n = int(sys.argv[1])
base = Path(tempfile.mkdtemp(prefix="fleet-bench-floor-"))
def fork_exit(i):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
def popen_true(i):
    subprocess.Popen(["true"]).wait()
def fork_popen_true(i):
    pid = os.fork()
    if pid == 0:
        subprocess.Popen(["true"], start_new_session=True, stdin=subprocess.DEVNULL).wait()
        os._exit(0)
    os.waitpid(pid, 0)
def task_dir_files(i):
    d = base / f"t{i}"
    d.mkdir()
    (d / "wd").mkdir()
    for name in ("stdout.txt", "stderr.txt", "a.tmp", "e.tmp"):
        os.close(os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.replace(d / "a.tmp", d / "attempt.json")
    os.replace(d / "e.tmp", d / "exit.json")
out = {}
for name in ("fork_exit", "popen_true", "fork_popen_true", "task_dir_files"):
    sys.stdout.write(json.dumps({"ready": name}) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()  # the meter reads before and after
    for i in range(n):
        globals()[name](i)
    sys.stdout.write(json.dumps({"done": name}) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()
"""


def floor_run(n: int) -> dict[str, float]:
    """Time the pieces of a task's start on this machine, ``n`` of each (ms CPU each)."""
    meter = CpuMeter("fleet-bench-floor")
    proc = subprocess.Popen(
        [PYTHON, "-c", FLOOR, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    meter.add(proc.pid)
    result: dict[str, float] = {}
    for _ in range(4):
        name = json.loads(proc.stdout.readline())["ready"]
        cpu0 = meter.seconds()
        proc.stdin.write("\n")
        proc.stdin.flush()
        json.loads(proc.stdout.readline())
        result[f"{name}_ms"] = (meter.seconds() - cpu0) / n * 1000
        proc.stdin.write("\n")
        proc.stdin.flush()
    proc.wait(30)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--width", type=int, default=64, help="tasks running at once")
    ap.add_argument("--floor", type=int, default=1000, help="repetitions of each floor piece")
    args = ap.parse_args()
    agent = agent_run(args.tasks, args.width)
    floor = floor_run(args.floor)
    show: Callable[[str], None] = print
    show(f"\nG3 node side: {args.tasks} x `true` through a local agent, {args.width} at a time")
    show(
        f"  {agent['tasks_per_s']:.0f} tasks/s; agent + wrappers + tasks "
        f"{agent['node_cpu_ms_per_task']:.2f} ms CPU per task (measured by {agent['meter']})"
    )
    show("  floor on this machine, ms CPU each:")
    for key, value in floor.items():
        show(f"    {key.removesuffix('_ms'):16s} {value:.2f}")
    print(f"results: {write_results('g3_node_side', {'agent': agent, 'floor': floor})}")


if __name__ == "__main__":
    sys.exit(main())
