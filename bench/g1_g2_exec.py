"""G1/G2: `true` on 50 lab nodes: fleet exec vs Ansible vs bare asyncssh, cold and warm.

G2 is the whole `fleet exec` process with a controller running (its open connections);
the same run through the Python API on connections opened once is reported beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import time
from pathlib import Path

from common import (
    BENCH,
    FLEET,
    PY,
    bench_env,
    ensure_ansible,
    lab,
    other_activity,
    run,
    stats,
    stop_control_masters,
    stop_on_sigterm,
    temp_dir,
    time_once,
    write_results,
)

from fleet import control_socket, execute
from fleet.reads import Reader
from fleet.settings import Settings
from fleet.ssh import Connection
from fleet.store import Store

ANSIBLE_CFG = """\
[defaults]
forks = 50
interpreter_python = /usr/bin/python3
local_tmp = {dir}/tmp
[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes
control_path = {dir}/%%C
"""
G2_NOTE = (
    "G2 (fleet) is the whole `fleet exec` process with a controller running: the command "
    "runs on connections the controller keeps; the Python API line is the same run on 50 "
    "fleet.ssh.Connection objects opened once in the timing process (the SSH layer's floor)."
)


def fleet_through_controller(home: Path, env: dict[str, str], cmd: list, runs: int) -> list[float]:
    """Start a controller on ``home``, then time ``cmd`` (fleet exec) ``runs`` times after
    3 warm-up runs (the first opens the connections the controller then keeps)."""
    socket_path = control_socket.socket_path(Settings.resolve(home))
    ctl = subprocess.Popen(
        [FLEET, "controller", "run", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            if ctl.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the controller did not open its control socket")
            time.sleep(0.1)
        samples = []
        for i in range(runs + 3):
            elapsed = time_once(cmd, env)
            if i >= 3:
                samples.append(elapsed)
        return samples
    finally:
        ctl.send_signal(signal.SIGTERM)
        ctl.wait(30)
        if socket_path.exists():
            raise RuntimeError("the control socket outlived the controller: G1 would run warm")


async def fleet_warm(home: Path, runs: int) -> list[float]:
    """Open fleet's own SSH connections once, then time `true` on all of them ``runs`` times."""
    store = Store(Settings.resolve(home).db_url)
    targets = execute.select_targets(Reader(store.url), pattern="node*")
    conns = await asyncio.gather(*(Connection.open(t) for t in targets))
    try:
        samples = []
        for i in range(runs + 3):  # the first 3 warm up the channels and the event loop
            t0 = time.perf_counter()
            results = await asyncio.gather(*(c.run(["true"]) for c in conns))
            if i >= 3:
                samples.append(time.perf_counter() - t0)
            assert all(r.exit_code == 0 for r in results), results
        return samples
    finally:
        await asyncio.gather(*(c.close() for c in conns))
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--runs", type=int, default=9, help="cold repetitions of each tool")
    ap.add_argument("--warm-runs", type=int, default=30, help="warm repetitions for fleet G2")
    ap.add_argument("--skip-ansible", action="store_true")
    args = ap.parse_args()
    stop_on_sigterm()
    before = other_activity()
    ansible = None if args.skip_ansible else ensure_ansible()
    with temp_dir("fleet-bench-home-") as home, temp_dir("fleet-bench-cp-") as cp:
        env = bench_env(home)
        try:
            with lab(args.nodes) as the_lab:
                print(f"lab: {args.nodes} sshd in {the_lab.dir}", flush=True)
                run([FLEET, "host", "import", the_lab.inventory_path], env)
                (cp / "ansible.cfg").write_text(
                    ANSIBLE_CFG.format(dir=cp, known=the_lab.known_hosts_path)
                )
                aenv = {**env, "ANSIBLE_CONFIG": str(cp / "ansible.cfg"), "ANSIBLE_HOME": str(cp)}
                fleet_cmd = [FLEET, "exec", "--hosts", "node*", "--", "true"]
                bare_cmd = [PY, BENCH / "bare_asyncssh.py", the_lab.dir]
                inv = the_lab.inventory_path
                ans_cmd = [ansible, "all", "-i", inv, "-m", "command", "-a", "true"]
                samples: dict[str, list[float]] = {"fleet": [], "bare": [], "ansible": []}
                run(fleet_cmd, env)  # records host keys, fills the bytecode cache
                run(bare_cmd, env)
                # G2 before any Ansible run: its 50 forks leave the machine busy for a while
                warm_cli = fleet_through_controller(home, env, fleet_cmd, args.warm_runs)
                warm = asyncio.run(fleet_warm(home, args.warm_runs))
                ansible_cold = time_once(ans_cmd, aenv, cwd=cp) if ansible else None
                cmds = {"fleet": (fleet_cmd, env), "bare": (bare_cmd, env)}
                if ansible:
                    cmds["ansible"] = (ans_cmd, aenv)
                names = list(cmds)
                for i in range(args.runs):  # interleaved, order rotated: noise hits all alike
                    print(f"G1 round {i + 1}/{args.runs}", flush=True)
                    for name in names[i % len(names) :] + names[: i % len(names)]:
                        samples[name].append(time_once(*cmds[name], cwd=cp))
        finally:
            stop_control_masters(cp)
    report(samples, ansible_cold, warm_cli, warm, before, args)


def report(
    samples: dict[str, list[float]],
    ansible_cold: float | None,
    warm_cli: list[float],
    warm: list[float],
    before: dict,
    args: argparse.Namespace,
) -> None:
    s = {k: stats(v) for k, v in samples.items() if v}
    c, w = stats(warm_cli), stats(warm)
    fl, bare = s["fleet"]["median"], s["bare"]["median"]
    print(f"\nG1 cold, {args.nodes} nodes, median of {args.runs} (whole process; min, p90):")
    for name, label in (("fleet", "fleet exec"), ("bare", "bare asyncssh"), ("ansible", "ansible")):
        if name in s:
            x = s[name]
            print(f"  {label:14} {x['median']:7.3f} s  ({x['min']:.3f}, {x['p90']:.3f})")
    print(f"  fleet / bare asyncssh = {fl / bare:.2f}   target <= 1.3")
    ans = s["ansible"]["median"] if "ansible" in s else None
    if ans:
        print(f"  ansible / fleet       = {ans / fl:.1f}    target >= 8 (ControlPersist warm)")
        print(f"  ansible first run {ansible_cold:.3f} s (ControlPersist sockets not yet open)")
    print(
        f"\nG2 warm, whole `fleet exec` process with a controller running, {c['n']} runs: "
        f"p50 {c['median'] * 1000:.1f} ms, p90 {c['p90'] * 1000:.1f} ms (min {c['min'] * 1000:.1f})"
    )
    print("  target: p50 <= 150 ms")
    if ans:
        print(f"  warm ansible / fleet  = {ans / c['median']:.0f}    target >= 30")
    print(
        f"  Python API (50 connections open in this process), {w['n']} runs: "
        f"p50 {w['median'] * 1000:.1f} ms, p90 {w['p90'] * 1000:.1f} ms"
    )
    print(f"  NOTE: {G2_NOTE}")
    path = write_results(
        "g1_g2",
        {
            "activity_before": before,
            "nodes": args.nodes,
            "g1": s,
            "ansible_first_run_s": ansible_cold,
            "g2_fleet_cli_with_controller": c,
            "g2_fleet_python_api": w,
            "g2_note": G2_NOTE,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
