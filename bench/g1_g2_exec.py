"""G1/G2: `true` on 50 lab nodes: fleet exec vs Ansible vs bare asyncssh, cold and warm."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from common import (
    BENCH,
    FLEET,
    PY,
    bench_env,
    ensure_ansible,
    lab,
    run,
    stats,
    stop_control_masters,
    stop_on_sigterm,
    temp_dir,
    time_once,
    write_results,
)

from fleet import execute
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
    "G2 for fleet is measured through the Python API (fleet.ssh.Connection, 50 connections "
    "opened once), because `fleet exec` does not yet reuse the controller's connections."
)


async def fleet_warm(home: Path, runs: int) -> list[float]:
    """Open fleet's own SSH connections once, then time `true` on all of them ``runs`` times."""
    store = Store(Settings.resolve(home).db_url)
    targets = execute.select_targets(store, pattern="node*")
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
    ap.add_argument("--runs", type=int, default=7, help="cold repetitions of each tool")
    ap.add_argument("--warm-runs", type=int, default=30, help="warm repetitions for fleet G2")
    ap.add_argument("--skip-ansible", action="store_true")
    args = ap.parse_args()
    stop_on_sigterm()
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
                ans_cmd = [
                    ansible,
                    "all",
                    "-i",
                    the_lab.inventory_path,
                    "-m",
                    "command",
                    "-a",
                    "true",
                ]
                samples: dict[str, list[float]] = {"fleet": [], "bare": [], "ansible": []}
                run(fleet_cmd, env)  # records host keys, fills the bytecode cache
                run(bare_cmd, env)
                ansible_cold = time_once(ans_cmd, aenv, cwd=cp) if ansible else None
                for i in range(args.runs):  # interleaved, so noise hits every tool alike
                    print(f"G1 round {i + 1}/{args.runs}", flush=True)
                    samples["fleet"].append(time_once(fleet_cmd, env))
                    samples["bare"].append(time_once(bare_cmd, env))
                    if ansible:
                        samples["ansible"].append(time_once(ans_cmd, aenv, cwd=cp))
                warm = asyncio.run(fleet_warm(home, args.warm_runs))
        finally:
            stop_control_masters(cp)
    report(samples, ansible_cold, warm, args)


def report(
    samples: dict[str, list[float]],
    ansible_cold: float | None,
    warm: list[float],
    args: argparse.Namespace,
) -> None:
    s = {k: stats(v) for k, v in samples.items() if v}
    w = stats(warm)
    fl, bare = s["fleet"]["median"], s["bare"]["median"]
    print(f"\nG1 cold, {args.nodes} nodes, median of {args.runs} (whole process):")
    print(f"  fleet exec        {fl:7.3f} s  (p90 {s['fleet']['p90']:.3f})")
    print(f"  bare asyncssh     {bare:7.3f} s  -> fleet is {fl / bare:.2f}x bare (target <= 1.3x)")
    ans = s["ansible"]["median"] if "ansible" in s else None
    if ans:
        print(
            f"  ansible (warm CP) {ans:7.3f} s  -> fleet is {ans / fl:.1f}x faster (target >= 8x)"
        )
        print(f"  ansible first run {ansible_cold:7.3f} s  (ControlPersist sockets not yet open)")
    print(
        f"\nG2 warm, p50 of {w['n']}: fleet {w['median'] * 1000:.1f} ms (p90 {w['p90'] * 1000:.1f})"
    )
    print(
        "  target: p50 <= 150 ms"
        + (f"; ansible warm is {ans / w['median']:.0f}x slower (target >= 10x)" if ans else "")
    )
    print(f"  NOTE: {G2_NOTE}")
    path = write_results(
        "g1_g2",
        {
            "nodes": args.nodes,
            "g1": s,
            "ansible_first_run_s": ansible_cold,
            "g2_fleet_python_api": w,
            "g2_note": G2_NOTE,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
