"""G3: N short tasks (`true`) on 8 nodes x 8 slots through the controller vs GNU parallel over ssh."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

from common import (
    FLEET,
    bench_env,
    controller,
    cpu_seconds,
    ensure_parallel,
    lab,
    machine_busy,
    other_activity,
    run,
    stop_control_masters,
    stop_on_sigterm,
    temp_dir,
    time_once,
    write_results,
)
from sqlalchemy import func
from sqlmodel import col, select

from fleet import agent_client
from fleet import lab as lab_mod
from fleet.service import jobs, pools
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Task, TaskOutput

try:  # add_tasks moved from fleet.service.jobs to fleet.service.tasks
    from fleet.service.tasks import add_tasks
except ImportError:
    add_tasks = jobs.add_tasks

POOL, JOB = "bench", "g3"


def place_stub_agent(the_lab: lab_mod.Lab) -> None:
    """Put bench/stub_agent.py where the controller looks for this version's agent on each
    node, so that it starts the stub instead of uploading the real one."""
    stub = Path(__file__).with_name("stub_agent.py").read_bytes()
    for node in the_lab.nodes:
        path = Path(agent_client.agent_remote_path(str(node.root)))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(stub)
        owner = node.root.stat()  # the login user's: it writes beside the agent
        for made in (path.parent, path):
            os.chown(made, owner.st_uid, owner.st_gid)


def wait_idle(store: Store, ctl: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Return once every node of the pool is idle; raise if the controller dies or it takes long."""
    deadline = time.monotonic() + timeout
    while not all(n.state == "idle" for n in pools.list_nodes(store, POOL)):
        if ctl.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("nodes did not become idle (see controller.log in FLEET_HOME)")
        time.sleep(0.2)


def fleet_run(store: Store, ctl: subprocess.Popen[bytes], n: int, home: Path) -> dict[str, float]:
    """Submit ``n`` tasks in chunks of 100 and time submit -> all completed."""
    jobs.create_job(store, {"id": JOB, "poolInfo": {"poolId": POOL}})
    cpu0, busy0, t0 = cpu_seconds(ctl.pid), machine_busy(), time.perf_counter()
    own0 = time.process_time()
    for i in range(0, n, 100):
        chunk = range(i, min(n, i + 100))
        add_tasks(store, JOB, [{"id": f"t{j:05d}", "commandLine": "true"} for j in chunk])
    t_submit = time.perf_counter() - t0
    deadline = time.monotonic() + max(300, n / 10)
    while (counts := jobs.task_counts(store, JOB))["completed"] < n:
        if ctl.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"controller stopped or too slow: {counts}")
        time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    cpu, busy1 = cpu_seconds(ctl.pid) - cpu0, machine_busy()
    own = time.process_time() - own0
    # Everything else the machine did meanwhile: the nodes' sshd, agents, wrappers and
    # tasks (and any other activity: run it on a quiet machine).
    machine = (busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK")
    node_cpu = max(0.0, machine - cpu - own)
    with store.session() as s:  # "all exit codes recorded"
        q = select(func.count()).where(Task.job_id == JOB, col(Task.exit_code).is_not(None))
        with_exit = s.exec(q).one()
        times = s.exec(select(Task.start_time, Task.end_time, Task.state_changed_at)).all()
        kept = select(func.count()).where(  # small outputs are kept in the database
            TaskOutput.name == "stdout.txt",
            col(TaskOutput.task_pk).in_(select(Task.pk).where(Task.job_id == JOB)),
        )
        outputs = s.exec(kept).one()
    run_ms = statistics.median(e - b for b, e, _ in times) * 1000  # on the node
    lag_ms = statistics.median(c - e for _, e, c in times) * 1000  # exit -> recorded completed
    outputs += sum(1 for _ in (Settings.resolve(home).task_files / JOB).glob("*/stdout.txt"))
    return {
        "tasks": n,
        "submit_s": t_submit,
        "elapsed_s": elapsed,
        "tasks_per_s": n / elapsed,
        "controller_cpu_ms_per_task": cpu / n * 1000,
        "node_side_cpu_ms_per_task": node_cpu / n * 1000,
        "task_run_ms_p50": run_ms,
        "exit_to_recorded_ms_p50": lag_ms,
        "machine_cpu_busy": (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]),
        "succeeded": counts["succeeded"],
        "exit_codes_recorded": with_exit,
        "stdout_files_collected": outputs,
    }


def parallel_run(the_lab: lab_mod.Lab, nodes: list[lab_mod.LabNode], n: int) -> dict[str, float]:
    """Time `parallel -j 64 ssh ... true` for ``n`` commands spread round-robin over the nodes."""
    parallel = ensure_parallel()
    with temp_dir("fleet-bench-par-") as cp:
        ssh = ["ssh", "-o", "ControlMaster=auto", "-o", f"ControlPath={cp}/%C"]
        ssh += ["-o", "ControlPersist=60", "-o", f"UserKnownHostsFile={the_lab.known_hosts_path}"]
        ssh += ["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
        ssh += ["-i", str(the_lab.key_file), "-l", the_lab.user]
        env = bench_env()
        try:
            for node in nodes:  # open the masters first: the comparison is with warm ones
                run([*ssh, "-p", str(node.port), "127.0.0.1", "true"], env)
            (cp / "ports").write_text("".join(f"{nodes[i % len(nodes)].port}\n" for i in range(n)))
            cmd = [
                parallel,
                "-j",
                "64",
                *ssh,
                "-p",
                "{}",
                "127.0.0.1",
                "true",
                "::::",
                cp / "ports",
            ]
            elapsed = time_once(cmd, env)
        finally:
            stop_control_masters(cp)
    return {"tasks": n, "elapsed_s": elapsed, "tasks_per_s": n / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--parallel-tasks", type=int, default=2_000)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--skip-parallel", action="store_true")
    ap.add_argument("--profile", type=Path, help="write the controller's cProfile stats here")
    ap.add_argument(
        "--stub-agent",
        action="store_true",
        help="nodes run bench/stub_agent.py, which answers each spawn with an exit at once"
        " and runs nothing: the controller's own ceiling, without the node side",
    )
    args = ap.parse_args()
    stop_on_sigterm()
    before = other_activity()
    with temp_dir("fleet-bench-home-") as home, lab(args.nodes) as the_lab:
        env = bench_env(home)
        run([FLEET, "host", "import", the_lab.inventory_path], env)
        if args.stub_agent:
            place_stub_agent(the_lab)
        hosts = ",".join(n.name for n in the_lab.nodes)
        slots = ["--task-slots-per-node", str(args.slots)]
        run([FLEET, "pool", "create", "--id", POOL, "--hosts", hosts, *slots], env)
        store = Store(Settings.resolve(home).db_url)
        try:
            with controller(home, env, args.profile) as ctl:
                wait_idle(store, ctl)
                print(f"{args.nodes} nodes idle; submitting {args.tasks} tasks", flush=True)
                fleet = fleet_run(store, ctl, args.tasks, home)
        finally:
            store.close()
        peer = None
        if not args.skip_parallel:
            print(f"GNU parallel: {args.parallel_tasks} ssh commands", flush=True)
            peer = parallel_run(the_lab, the_lab.nodes, args.parallel_tasks)
    report(fleet, peer, before, args)


def report(fleet: dict, peer: dict | None, before: dict, args: argparse.Namespace) -> None:
    print(f"\nG3: {args.tasks} x `true`, {args.nodes} nodes x {args.slots} slots")
    if args.stub_agent:
        print("  STUB AGENT: nothing ran on the nodes (the controller's own ceiling)")
    print(
        f"  fleet    {fleet['tasks_per_s']:8.1f} tasks/s  ({fleet['elapsed_s']:.1f} s, submit "
        f"{fleet['submit_s']:.2f} s)  target >= 1000 (500 at least)"
    )
    print(
        f"  controller CPU {fleet['controller_cpu_ms_per_task']:.2f} ms/task  target <= 0.5; "
        f"machine CPU busy {fleet['machine_cpu_busy']:.0%} during the run"
    )
    print(
        f"  per task (p50): runs {fleet['task_run_ms_p50']:.0f} ms on the node, then its slot "
        f"stays taken {fleet['exit_to_recorded_ms_p50']:.0f} ms until the completion is recorded"
    )
    print(
        f"  recorded: {fleet['exit_codes_recorded']} exit codes, "
        f"{fleet['stdout_files_collected']} stdout files, {fleet['succeeded']} succeeded"
    )
    if peer:
        ratio = fleet["tasks_per_s"] / peer["tasks_per_s"]
        print(
            f"  parallel {peer['tasks_per_s']:8.1f} tasks/s  ({peer['tasks']} in "
            f"{peer['elapsed_s']:.1f} s) -> fleet is {ratio:.1f}x (target >= 15x)"
        )
    path = write_results(
        "g3",
        {
            "activity_before": before,
            "fleet": fleet,
            "parallel": peer,
            "nodes": args.nodes,
            "slots": args.slots,
            "stub_agent": args.stub_agent,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
