"""G5: N job schedules firing every --interval seconds through `fleet controller run`.

Counts missed firings and measures the lag from each occurrence's scheduled time to its
job's creationTime (and to the controller's "created job" log line)."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import (
    FLEET,
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
from sqlmodel import col, select

from fleet import schedules
from fleet.service import job_schedules, pools
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Job, JobSchedule

POOL = "p"
LEAD_S = 15.0  # first occurrence this long after the schedules start being created
_CREATED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO fleet\.schedule_runner: "
    r"job schedule (\S+): created job (\S+)$"
)


def wait_idle(store: Store, ctl: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Return once every node of the pool is idle; raise if the controller dies or it takes long."""
    deadline = time.monotonic() + timeout
    while not all(n.state == "idle" for n in pools.list_nodes(store, POOL)):
        if ctl.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("nodes did not become idle (see controller.log in FLEET_HOME)")
        time.sleep(0.2)


def sid(i: int) -> str:
    return f"s{i:04d}"


def create_all(
    store: Store, n: int, interval: int, aligned: bool
) -> tuple[dict[str, float], float]:
    """Create ``n`` schedules; return each one's first occurrence (from its row) and the base."""
    base = math.ceil((time.time() + LEAD_S) * 1000) / 1000
    first: dict[str, float] = {}
    for i in range(n):
        offset = 0.0 if aligned else round(i * interval / n, 3)
        row = job_schedules.create_schedule(
            store,
            {
                "id": sid(i),
                "schedule": {
                    "doNotRunUntil": schedules.format_time(base + offset),
                    "recurrenceInterval": f"PT{interval}S",
                    "startWindow": f"PT{interval}S",
                },
                "jobSpecification": {
                    "poolInfo": {"poolId": POOL},
                    "onAllTasksComplete": "terminatejob",
                },
            },
        )
        assert row.next_run is not None
        first[row.id] = row.next_run
    if time.time() >= base:
        raise RuntimeError(f"creating {n} schedules took longer than the {LEAD_S} s lead")
    return first, base


def progress(store: Store) -> int:
    with store.session() as s:
        return len(s.exec(select(Job.id).where(col(Job.job_schedule_id).is_not(None))).all())


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_vals[min(len(sorted_vals) - 1, max(0, math.ceil(p / 100 * len(sorted_vals)) - 1))]


def lag_stats(lags_ms: list[float]) -> dict[str, float] | None:
    if not lags_ms:
        return None
    s = sorted(lags_ms)
    out = {f"p{p}": pct(s, p) for p in (50, 90, 99)}
    return {"n": len(s), **out, "max": s[-1], "min": s[0], "over_100ms": sum(v > 100 for v in s)}


def log_created(log_path: Path) -> dict[str, float]:
    """Return job id -> epoch time of the controller's "created job" log line (ms, local time)."""
    out = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if m := _CREATED.match(line):
            when = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out[m.group(3)] = when
    return out


def analyse(
    store: Store,
    first: dict[str, float],
    interval: int,
    disabled_at: dict[str, float],
    log_times: dict[str, float],
) -> dict[str, Any]:
    """Match occurrences to jobs (job n = the n-th occurrence not skipped) and count."""
    with store.session() as s:
        rows = {r.id: r for r in s.exec(select(JobSchedule))}
        jobs = {j.id: j for j in s.exec(select(Job).where(col(Job.job_schedule_id).is_not(None)))}
    expected = created = late_created = late_due = 0
    skipped: Counter[str] = Counter()
    lags, log_lags, worst = [], [], []
    unmatched = set(jobs)
    for sched_id, t0 in first.items():
        row = rows[sched_id]
        skip_at = {
            round(schedules.parse_time(e["scheduledTime"], "", "") or 0, 3): e["reason"]
            for e in row.skipped_runs or []
        }
        t_dis = disabled_at[sched_id]
        n = 0
        k = 0
        while (occ := t0 + k * interval) <= t_dis:
            k += 1
            closed = occ + interval < t_dis  # its start window closed before the disable
            reason = skip_at.get(round(occ, 3))
            if reason is not None:
                skipped[reason if closed else f"{reason} (window open at disable)"] += 1
                expected += closed
                continue
            n += 1
            jid = schedules.job_id(sched_id, n)
            job = jobs.get(jid)
            if closed:
                expected += 1
            else:
                late_due += 1
            if job is None:
                continue
            unmatched.discard(jid)
            if closed:
                created += 1
            else:
                late_created += 1
            lag = (job.created_at - occ) * 1000
            lags.append(lag)
            worst.append((lag, jid, schedules.format_time(occ)))
            if jid in log_times:
                log_lags.append((log_times[jid] - occ) * 1000)
        if row.job_count > n:
            unmatched.update(schedules.job_id(sched_id, m) for m in range(n + 1, row.job_count + 1))
    states = Counter(j.state for j in jobs.values())
    life = sorted((j.end_time - j.created_at) * 1000 for j in jobs.values() if j.end_time)
    worst.sort(reverse=True)
    return {
        "expected_firings": expected,
        "created_for_expected": created,
        "missed": expected - created,  # skipped ones included
        "skipped": dict(skipped),
        "skipped_closed_windows": sum(v for k, v in skipped.items() if "window open" not in k),
        "due_with_window_open_at_disable": late_due,
        "created_with_window_open_at_disable": late_created,
        "jobs_total": len(jobs),
        "jobs_unmatched": sorted(unmatched)[:20],
        "jobs_unmatched_count": len(unmatched),
        "job_states": dict(states),
        "lag_ms_creation_time": lag_stats(lags),
        "lag_ms_log_line": lag_stats(log_lags),
        "worst_10": [{"lag_ms": round(v, 1), "job": j, "scheduled": t} for v, j, t in worst[:10]],
        "job_lifetime_ms": (
            {"p50": pct(life, 50), "p99": pct(life, 99), "max": life[-1]} if life else None
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--schedules", type=int, default=200)
    ap.add_argument("--interval", type=int, default=10, help="seconds (recurrenceInterval)")
    ap.add_argument("--duration", type=int, default=600, help="seconds after the first occurrence")
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--aligned", action="store_true", help="all fire at the same instant")
    ap.add_argument("--log-level", default="info", help="controller's (info logs each job)")
    args = ap.parse_args()
    stop_on_sigterm()
    before = other_activity()
    with temp_dir("fleet-bench-home-") as home, lab(args.nodes) as the_lab:
        env = bench_env(home)
        run([FLEET, "host", "import", the_lab.inventory_path], env)
        hosts = ",".join(n.name for n in the_lab.nodes)
        run([FLEET, "pool", "create", "--id", POOL, "--hosts", hosts], env)
        store = Store(Settings.resolve(home).db_url)
        log_path = home / "controller.log"
        with log_path.open("wb") as log:
            ctl = subprocess.Popen(
                [FLEET, "controller", "run", "--log-level", args.log_level],
                env=env,
                stdout=log,
                stderr=log,
            )
        try:
            wait_idle(store, ctl)
            print(f"{args.nodes} node(s) idle; creating {args.schedules} schedules", flush=True)
            cpu_c0, t_c0 = cpu_seconds(ctl.pid), time.time()
            first, base = create_all(store, args.schedules, args.interval, args.aligned)
            t_c1 = time.time()
            print(
                f"created in {t_c1 - t_c0:.2f} s; first occurrence at "
                f"{schedules.format_time(base)}, running {args.duration} s",
                flush=True,
            )
            cpu_c1 = cpu_seconds(ctl.pid)
            time.sleep(max(0.0, base - time.time()))
            cpu0, busy0, load0 = cpu_seconds(ctl.pid), machine_busy(), other_activity()
            idle_cpu_per_s = (cpu0 - cpu_c1) / max(1e-3, base - t_c1)
            end = base + args.duration
            while (left := end - time.time()) > 0:
                time.sleep(min(60.0, left))
                if ctl.poll() is not None:
                    raise RuntimeError("the controller stopped (see controller.log)")
                if end - time.time() > 1:
                    print(f"  {time.time() - base:5.0f} s: {progress(store)} jobs", flush=True)
            cpu1, busy1, load1 = cpu_seconds(ctl.pid), machine_busy(), other_activity()
            disabled_at = {}
            for i in range(args.schedules):
                disabled_at[sid(i)] = time.time()
                job_schedules.disable_schedule(store, sid(i))
            time.sleep(3)
        finally:
            ctl.terminate()
            try:
                ctl.wait(20)
            except subprocess.TimeoutExpired:
                ctl.kill()
                ctl.wait()
        result = analyse(store, first, args.interval, disabled_at, log_created(log_path))
        store.close()
        log_text = log_path.read_text(errors="replace")
        result |= {
            "controller_cpu_s": cpu1 - cpu0,
            "controller_cpu_ms_per_firing": (cpu1 - cpu0)
            / max(1, result["created_for_expected"])
            * 1000,
            "controller_cpu_create_schedules_s": cpu_c1 - cpu_c0,
            "controller_cpu_per_s_armed_idle": idle_cpu_per_s,
            "machine_cpu_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
            "create_schedules_s": t_c1 - t_c0,
            "activity_start": load0,
            "activity_end": load1,
            "log_warnings": sum(" WARNING " in ln for ln in log_text.splitlines()),
            "log_errors": sum(" ERROR " in ln for ln in log_text.splitlines()),
        }
    report(result, before, args, log_text)


def report(r: dict[str, Any], before: dict, args: argparse.Namespace, log_text: str) -> None:
    mode = "aligned (all at once)" if args.aligned else "staggered"
    print(
        f"\nG5: {args.schedules} schedules every {args.interval} s for {args.duration} s, "
        f"{mode}, startWindow = interval, {args.nodes} node(s)"
    )
    print(
        f"  expected {r['expected_firings']}, created {r['created_for_expected']}, "
        f"skipped {r['skipped_closed_windows']} {r['skipped'] or ''}, missed {r['missed']}  "
        f"(target 0)"
    )
    for name in ("lag_ms_creation_time", "lag_ms_log_line"):
        st = r[name]
        if st:
            print(
                f"  {name:21} p50 {st['p50']:6.1f}  p90 {st['p90']:6.1f}  p99 {st['p99']:6.1f}  "
                f"max {st['max']:7.1f}  (>100 ms: {st['over_100ms']})  target p99 <= 100"
            )
    print(
        f"  jobs {r['jobs_total']} {r['job_states']}, unmatched {r['jobs_unmatched_count']}; "
        f"job lifetime ms { ({k: round(v) for k, v in (r['job_lifetime_ms'] or {}).items()}) }"
    )
    print(
        f"  controller CPU {r['controller_cpu_s']:.1f} s over the run, "
        f"{r['controller_cpu_ms_per_firing']:.1f} ms/firing; armed-idle "
        f"{r['controller_cpu_per_s_armed_idle'] * 1000:.0f} ms/s; machine busy "
        f"{r['machine_cpu_busy']:.0%}; loadavg start {r['activity_start']['loadavg']} "
        f"end {r['activity_end']['loadavg']}; log warnings {r['log_warnings']} "
        f"errors {r['log_errors']}"
    )
    path = write_results(
        "g5-aligned" if args.aligned else "g5",
        {
            "activity_before": before,
            "args": vars(args),
            "start_window": f"PT{args.interval}S",
            **r,
        },
    )
    path.with_suffix(".controller.log").write_text(log_text)
    print(f"results: {path} (+ .controller.log, {len(log_text.splitlines())} lines)")


if __name__ == "__main__":
    main()
