"""G7: a pool of N lab nodes (300) through `fleet controller run`: `fleet pool create` ->
every node idle, the controller's memory during and after, and its CPU while idle."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    FLEET,
    PY,
    bench_env,
    cpu_seconds,
    lab,
    machine_busy,
    other_activity,
    run,
    stop_on_sigterm,
    temp_dir,
    write_results,
)

from fleet import lab as lab_mod
from fleet.reads import Reader, Transaction
from fleet.settings import Settings

POOL = "g7"
MIB = 1024 * 1024


def memory(pid: int) -> tuple[int, int]:
    """Return (VmRSS, VmHWM) of a live process in bytes: its resident set now and at peak."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds, keeping the largest seen."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.max_rss = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            with contextlib.suppress(OSError):
                self.max_rss = max(self.max_rss, memory(self.pid)[0])

    def stop(self) -> None:
        self._done.set()
        self.join()


def node_states(db: Reader) -> dict[str, int]:
    """Return how many nodes of the pool are in each state (one read-only query)."""

    def read(tx: Transaction) -> dict[str, int]:
        sql = "SELECT state, count(*) FROM nodes WHERE pool_id = ? GROUP BY state"
        return {str(state): int(n) for state, n in tx.values(sql, (POOL,))}

    return db.run(read)


def idle_times(db: Reader) -> list[float]:
    """Return the epoch time each node of the pool last changed state (idle, once all are)."""
    sql = "SELECT state_changed_at FROM nodes WHERE pool_id = ?"
    return db.run(lambda tx: [float(t) for (t,) in tx.values(sql, (POOL,))])


def lab_pids(the_lab: lab_mod.Lab) -> list[int]:
    """Return the lab's sshd listeners and every process below them (sessions, agents)."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(p.name))
    found = [pid for n in the_lab.nodes if (pid := n.pid()) is not None]
    todo = list(found)
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def tree_cpu(pids: list[int]) -> float:
    """Return the CPU seconds of the live processes in ``pids``, with those of their reaped
    children (utime + stime + cutime + cstime): of a whole process tree when ``pids`` lists
    all of it."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def wait_started(log_path: Path, ctl: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Return once the controller logged that it started; raise if it died or took long."""
    deadline = time.monotonic() + timeout
    while "controller started" not in log_path.read_text(errors="replace"):
        if ctl.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the controller did not start (see {log_path})")
        time.sleep(0.1)


def wait_all_idle(
    db: Reader, ctl: subprocess.Popen[bytes], n: int, t0: float, timeout: float
) -> tuple[float, list[tuple[float, dict[str, int]]]]:
    """Poll the node states until all ``n`` are idle; return the seconds since ``t0`` and the
    progress (seconds, states) seen about every 5 s. Raises if the controller dies or the
    timeout passes."""
    progress: list[tuple[float, dict[str, int]]] = []
    next_note = 0.0
    while True:
        states = node_states(db)
        elapsed = time.perf_counter() - t0
        if elapsed >= next_note:
            progress.append((round(elapsed, 1), states))
            next_note += 5
        if states.get("idle", 0) == n:
            return elapsed, progress
        if ctl.poll() is not None:
            raise RuntimeError(f"the controller stopped; nodes: {states}")
        if elapsed > timeout:
            raise RuntimeError(f"not all idle after {timeout:.0f} s: {states}")
        time.sleep(0.1)


def start_controller(env: dict[str, str], log_path: Path, profile: Path | None) -> Any:
    """Start `fleet controller run` (under cProfile when ``profile``), logging to log_path."""
    argv: list[str | Path] = [FLEET]
    if profile is not None:
        argv = [PY, "-m", "cProfile", "-o", str(profile.absolute()), "-m", "fleet"]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*argv, "controller", "run", "--log-level", "info"], env=env, stdout=log, stderr=log
        )


def stop_controller(ctl: subprocess.Popen[bytes]) -> None:
    ctl.terminate()
    try:
        ctl.wait(30)
    except subprocess.TimeoutExpired:
        ctl.kill()
        ctl.wait()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark in a fresh lab and FLEET_HOME; return its numbers."""
    with temp_dir("fleet-bench-home-") as home:
        t_lab = time.perf_counter()
        with lab(args.nodes) as the_lab:
            lab_up_s = time.perf_counter() - t_lab
            env = bench_env(home)
            run([FLEET, "host", "import", the_lab.inventory_path], env)
            db = Reader(Settings.resolve(home).db_url)
            log_path = home / "controller.log"
            ctl = start_controller(env, log_path, args.profile)
            sampler = RssSampler(ctl.pid)
            try:
                wait_started(log_path, ctl)
                rss_started = memory(ctl.pid)[0]
                sampler.start()
                hosts = ",".join(n.name for n in the_lab.nodes)
                cpu0, busy0 = cpu_seconds(ctl.pid), machine_busy()
                lab_cpu0 = tree_cpu(lab_pids(the_lab))
                wall0, t0 = time.time(), time.perf_counter()
                run([FLEET, "pool", "create", "--id", POOL, "--hosts", hosts], env)
                create_s = time.perf_counter() - t0
                to_idle_s, progress = wait_all_idle(db, ctl, args.nodes, t0, args.timeout)
                boot_cpu, busy1 = cpu_seconds(ctl.pid) - cpu0, machine_busy()
                boot_lab_cpu = tree_cpu(lab_pids(the_lab)) - lab_cpu0
                each = sorted(t - wall0 for t in idle_times(db))
                rss_idle, _ = memory(ctl.pid)
                time.sleep(args.settle)
                pids = lab_pids(the_lab)
                cpu1, nodes_cpu1, t1 = cpu_seconds(ctl.pid), tree_cpu(pids), time.perf_counter()
                time.sleep(args.idle_seconds)
                idle_wall = time.perf_counter() - t1
                idle_cpu = cpu_seconds(ctl.pid) - cpu1
                nodes_cpu = tree_cpu(pids) - nodes_cpu1
                rss_end, hwm = memory(ctl.pid)
                states_end = node_states(db)
            finally:
                stop_controller(ctl)
                sampler.stop()
            log_text = log_path.read_text(errors="replace")
    return {
        "nodes": args.nodes,
        "lab_up_s": lab_up_s,
        "pool_create_cli_s": create_s,
        "to_all_idle_s": to_idle_s,
        "node_idle_s": {
            "first": each[0],
            "p50": statistics.median(each),
            "p90": each[int(0.9 * (len(each) - 1))],
            "last": each[-1],
        },
        "progress": progress,
        "bootstrap_controller_cpu_s": boot_cpu,
        "bootstrap_lab_cpu_s": boot_lab_cpu,
        "bootstrap_machine_cpu_busy": (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]),
        "rss_mib": {
            "started": rss_started / MIB,
            "all_idle": rss_idle / MIB,
            "end": rss_end / MIB,
            "max_sampled": max(sampler.max_rss, rss_end) / MIB,
            "peak_vmhwm": hwm / MIB,
        },
        "idle_seconds": idle_wall,
        "idle_controller_cpu_pct": 100 * idle_cpu / idle_wall,
        "idle_lab_cpu_pct": 100 * nodes_cpu / idle_wall,
        "idle_lab_processes": len(pids),
        "states_after_idle": states_end,
        "log_warnings": sum(" WARNING " in ln for ln in log_text.splitlines()),
        "log_errors": sum(" ERROR " in ln for ln in log_text.splitlines()),
    }


def report(r: dict[str, Any], before: dict[str, Any], args: argparse.Namespace) -> None:
    e = r["node_idle_s"]
    m = r["rss_mib"]
    print(f"\nG7: {r['nodes']} lab nodes (lab up {r['lab_up_s']:.1f} s)")
    print(
        f"  pool create -> all idle  {r['to_all_idle_s']:6.1f} s  target <= 60 "
        f"(CLI {r['pool_create_cli_s']:.2f} s; nodes idle at first {e['first']:.1f}, "
        f"p50 {e['p50']:.1f}, p90 {e['p90']:.1f}, last {e['last']:.1f} s)"
    )
    print(
        f"  bootstrap CPU: controller {r['bootstrap_controller_cpu_s']:.1f} s, lab side "
        f"{r['bootstrap_lab_cpu_s']:.1f} s; machine {r['bootstrap_machine_cpu_busy']:.0%} busy"
    )
    print(
        f"  controller RSS max {m['peak_vmhwm']:.0f} MiB  target <= 300 "
        f"(started {m['started']:.0f}, all idle {m['all_idle']:.0f}, end {m['end']:.0f})"
    )
    print(
        f"  idle controller CPU {r['idle_controller_cpu_pct']:.2f} % of a core over "
        f"{r['idle_seconds']:.0f} s  target <= 2 %; lab side (sshd, agents: "
        f"{r['idle_lab_processes']} processes) {r['idle_lab_cpu_pct']:.2f} %"
    )
    print(
        f"  after the idle period: {r['states_after_idle']}; log {r['log_warnings']} "
        f"warnings, {r['log_errors']} errors"
    )
    if args.profile:
        print(f"  controller profile: {args.profile}")
    path = write_results("g7", {"activity_before": before, **r, "profile": str(args.profile)})
    print(f"results: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after all idle, unmeasured")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on all idle after this")
    ap.add_argument("--profile", type=Path, help="write the controller's cProfile stats here")
    args = ap.parse_args()
    stop_on_sigterm()
    before = other_activity()
    report(measure(args), before, args)


if __name__ == "__main__":
    main()
