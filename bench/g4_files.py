"""G4: task files off the nodes: one 256 MiB download, and 8,000 small output files from 8
nodes into the file store, vs OpenSSH `sftp` and paramiko over the same lab."""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from common import (
    FLEET,
    PY,
    bench_env,
    controller,
    cpu_seconds,
    lab,
    other_activity,
    run,
    stop_on_sigterm,
    temp_dir,
    write_results,
)

from fleet import file_store
from fleet import lab as lab_mod
from fleet.service import jobs, pools
from fleet.service.tasks import add_tasks, list_tasks
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Task

POOL = "bench"
BIG = "wd/big.bin"

#: The paramiko peer, run as its own process (as `fleet` and `sftp` are): one connection
#: and one thread per job; a job fetches one file, or every file of a directory.
PARAMIKO_PEER = """
import json, os, sys, threading, paramiko
spec = json.loads(sys.argv[1])
errors = []
def fetch(job):
    try:
        client = paramiko.SSHClient()
        client.load_host_keys(spec["known_hosts"])
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", port=job["port"], username=spec["user"],
                       key_filename=spec["key"], look_for_keys=False, allow_agent=False)
        sftp = client.open_sftp()
        if job["dir"]:
            os.makedirs(job["local"], exist_ok=True)
            for name in sftp.listdir(job["remote"]):
                sftp.get(job["remote"] + "/" + name, os.path.join(job["local"], name))
        else:
            sftp.get(job["remote"], job["local"])
        client.close()
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=fetch, args=(job,)) for job in spec["jobs"]]
for t in threads: t.start()
for t in threads: t.join()
sys.exit(repr(errors) if errors else 0)
"""


def measured(argv: list[str | Path], env: dict[str, str]) -> tuple[float, int]:
    """Run a command to completion under /usr/bin/time; return (wall seconds, its peak RSS
    in KiB). Raises if it fails. (wait4 from this process would count the memory of the
    forked Python before the exec.)"""
    with temp_dir("fleet-bench-time-") as tmp:
        t0 = time.perf_counter()
        run(["/usr/bin/time", "-f", "%M", "-o", tmp / "rss", *argv], env)
        elapsed = time.perf_counter() - t0
        return elapsed, int((tmp / "rss").read_text().split()[-1])


def ssh_options(the_lab: lab_mod.Lab) -> list[str]:
    """OpenSSH options for the lab: its key and known_hosts, host keys checked."""
    return [
        "-i",
        str(the_lab.key_file),
        "-o",
        f"UserKnownHostsFile={the_lab.known_hosts_path}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]


def sftp_get(the_lab: lab_mod.Lab, port: int, command: str, batch: Path) -> list[str | Path]:
    """Return the argv of `sftp -b` running one get ``command`` against the node at ``port``."""
    batch.write_text(command + "\n")
    return [
        "sftp",
        "-q",
        *ssh_options(the_lab),
        "-P",
        str(port),
        "-b",
        batch,
        f"{the_lab.user}@127.0.0.1",
    ]


def paramiko_get(the_lab: lab_mod.Lab, jobs_: list[dict[str, Any]]) -> list[str | Path]:
    """Return the argv of the paramiko peer fetching ``jobs_`` in parallel."""
    spec = {
        "known_hosts": str(the_lab.known_hosts_path),
        "key": str(the_lab.key_file),
        "user": the_lab.user,
        "jobs": jobs_,
    }
    return [PY, "-c", PARAMIKO_PEER, json.dumps(spec)]


def wait_completed(store: Store, job: str, n: int, ctl: subprocess.Popen[bytes]) -> None:
    """Return once ``n`` tasks of ``job`` completed; raise if the controller dies or stalls."""
    deadline = time.monotonic() + 600
    while (counts := jobs.task_counts(store, job))["completed"] < n:
        if ctl.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"controller stopped or too slow: {counts}")
        time.sleep(0.05)
    if counts["succeeded"] != n:
        raise RuntimeError(f"tasks of {job} failed: {counts}")


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def vm_kib(pid: int, field: str) -> int:
    """Return a /proc/PID/status memory field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def large(
    the_lab: lab_mod.Lab,
    store: Store,
    ctl: subprocess.Popen[bytes],
    env: dict[str, str],
    runs: int,
    size: int,
) -> dict[str, Any]:
    """One task writes ``size`` random bytes to wd/big.bin; time `fleet task file download`
    of it against sftp and paramiko, interleaved, ``runs`` times each."""
    jobs.create_job(store, {"id": "big", "poolInfo": {"poolId": POOL}})
    cmd = f"/bin/sh -c 'head -c {size} /dev/urandom > big.bin && echo small > small.txt'"
    add_tasks(store, "big", [{"id": "t", "commandLine": cmd}])
    wait_completed(store, "big", 1, ctl)
    task = list_tasks(store, "big")[0]
    assert task.node_id and task.task_root
    node = the_lab.node(task.node_id)
    remote = f"{task.task_root}/{BIG}"
    want = sha256(Path(remote))
    times: dict[str, list[float]] = {"fleet": [], "sftp": [], "paramiko": []}
    rss: dict[str, list[int]] = {k: [] for k in times}
    with temp_dir("fleet-bench-g4-") as out:
        fleet_dl = [FLEET, "task", "file", "download", "--job", "big", "--id", "t"]
        small_rss = measured([*fleet_dl, "wd/small.txt", "--destination", out / "s"], env)[1]
        tools = {
            "fleet": [*fleet_dl, BIG, "--destination", out / "fleet.bin"],
            "sftp": sftp_get(the_lab, node.port, f"get {remote} {out}/sftp.bin", out / "batch"),
            "paramiko": paramiko_get(
                the_lab,
                [
                    {
                        "port": node.port,
                        "remote": remote,
                        "local": str(out / "paramiko.bin"),
                        "dir": 0,
                    }
                ],
            ),
        }
        for i in range(runs + 1):  # the first round is untimed: it fills caches
            for name, argv in tools.items():
                elapsed, peak = measured(argv, env)
                got = out / f"{name}.bin"
                if i == 0 and sha256(got) != want:
                    raise RuntimeError(f"{name}: the downloaded file differs")
                got.unlink()
                if i > 0:
                    times[name].append(elapsed)
                    rss[name].append(peak)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bytes": size,
        "seconds": times,
        "median_s": med,
        "mib_per_s": {k: size / v / (1 << 20) for k, v in med.items()},
        "peak_rss_kib": rss,
        "fleet_peak_rss_kib_small_file": small_rss,
    }


def many_small(
    the_lab: lab_mod.Lab,
    store: Store,
    settings: Settings,
    ctl: subprocess.Popen[bytes],
    env: dict[str, str],
    per_node: int,
    size: int,
) -> dict[str, Any]:
    """One task per node writes ``per_node`` files of ``size`` bytes under wd/out; its
    outputFiles take them into the file store. Then sftp and paramiko fetch the same files."""
    n = len(the_lab.nodes)
    jobs.create_job(store, {"id": "small", "poolInfo": {"poolId": POOL}})
    code = (
        "import os; os.mkdir('out'); "
        f"[open('out/f%04d' % i, 'wb').write(os.urandom({size})) for i in range({per_node})]"
    )
    tasks = [
        {
            "id": f"t{i}",
            "commandLine": f'python3 -c "{code}"',
            "outputFiles": [
                {
                    "filePattern": "out/*",
                    "destination": {"container": {"path": f"small/t{i}"}},
                    "uploadOptions": {"uploadCondition": "taskCompletion"},
                }
            ],
        }
        for i in range(n)
    ]
    rss0, cpu0, t0 = vm_kib(ctl.pid, "VmRSS"), cpu_seconds(ctl.pid), time.time()
    add_tasks(store, "small", tasks)
    wait_completed(store, "small", n, ctl)
    elapsed = time.time() - t0
    cpu, rss1, hwm = cpu_seconds(ctl.pid) - cpu0, vm_kib(ctl.pid, "VmRSS"), vm_kib(ctl.pid, "VmHWM")
    rows: list[Task] = list_tasks(store, "small")
    if len({t.node_id for t in rows}) != n:
        raise RuntimeError("the tasks did not run one per node")
    ends = [t.end_time or 0.0 for t in rows]
    done = [t.state_changed_at for t in rows]
    stored = file_store.list_files(settings, "small")
    if len(stored) != n * per_node:
        raise RuntimeError(f"{len(stored)} files in the file store, want {n * per_node}")
    for row in rows:  # byte for byte
        assert row.task_root
        for entry in file_store.list_files(settings, f"small/{row.id}"):
            local = Path(row.task_root, "wd/out", entry["name"].rsplit("/", 1)[-1])
            if sha256(local) != entry["properties"]["sha256"]:
                raise RuntimeError(f"{entry['name']} differs from the node's file")
    fleet = {
        "collect_s": max(done) - min(ends),
        "collect_s_per_task_max": max(d - e for d, e in zip(done, ends, strict=True)),
        "submit_to_completed_s": elapsed,
        "task_run_s_max": max(e - (t.start_time or e) for e, t in zip(ends, rows, strict=True)),
        "controller_cpu_s": cpu,
        "controller_rss_kib_before": rss0,
        "controller_rss_kib_after": rss1,
        "controller_peak_rss_kib": hwm,
    }
    ports = {node.name: node.port for node in the_lab.nodes}
    peers: dict[str, float] = {}
    peer_rss: dict[str, int] = {}
    with temp_dir("fleet-bench-g4-") as out:
        procs, t0 = [], time.perf_counter()
        for row in rows:  # one `sftp -b` per node, all at once
            assert row.node_id
            dest = out / "sftp" / row.id
            dest.parent.mkdir(exist_ok=True)
            get = f"get -r {row.task_root}/wd/out {dest}"
            argv = sftp_get(the_lab, ports[row.node_id], get, out / f"batch-{row.id}")
            procs.append(subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL))
        if any(p.wait() != 0 for p in procs):
            raise RuntimeError("sftp failed")
        peers["sftp"] = time.perf_counter() - t0
        count = sum(1 for _ in (out / "sftp").glob("*/*"))
        jobs_ = [
            {
                "port": ports[row.node_id or ""],
                "remote": f"{row.task_root}/wd/out",
                "local": str(out / "paramiko" / row.id),
                "dir": 1,
            }
            for row in rows
        ]
        peers["paramiko"], peer_rss["paramiko"] = measured(paramiko_get(the_lab, jobs_), env)
        count_p = sum(1 for _ in (out / "paramiko").glob("*/*"))
        if count != n * per_node or count_p != n * per_node:
            raise RuntimeError(f"peers fetched {count} (sftp), {count_p} (paramiko) files")
    return {"files": n * per_node, "bytes_each": size, "fleet": fleet, "peers_s": peers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files-per-node", type=int, default=1000)
    ap.add_argument("--file-bytes", type=int, default=1024)
    ap.add_argument("--skip-large", action="store_true", help="only the small files (b)")
    ap.add_argument("--profile", type=Path, help="write the controller's cProfile stats here")
    args = ap.parse_args()
    stop_on_sigterm()
    before = other_activity()
    with temp_dir("fleet-bench-home-") as home, lab(args.nodes) as the_lab:
        env = bench_env(home)
        settings = Settings.resolve(home)
        run([FLEET, "host", "import", the_lab.inventory_path], env)
        hosts = ",".join(n.name for n in the_lab.nodes)
        run([FLEET, "pool", "create", "--id", POOL, "--hosts", hosts], env)
        store = Store(settings.db_url)
        try:
            with controller(home, env, args.profile) as ctl:
                deadline = time.monotonic() + 120
                while not all(n.state == "idle" for n in pools.list_nodes(store, POOL)):
                    if ctl.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("nodes did not become idle")
                    time.sleep(0.2)
                print(f"{args.nodes} nodes idle", flush=True)
                big = None
                if not args.skip_large:
                    big = large(the_lab, store, ctl, env, args.runs, args.size_mib << 20)
                small = many_small(
                    the_lab, store, settings, ctl, env, args.files_per_node, args.file_bytes
                )
        finally:
            store.close()
    report(big, small, before, args)


def report(big: dict[str, Any] | None, small: dict[str, Any], before: dict, args: Any) -> None:
    if big:
        med, rate, rss = big["median_s"], big["mib_per_s"], big["peak_rss_kib"]
        print(
            f"\nG4a: download {args.size_mib} MiB (wd/big.bin), whole process, median of {args.runs}"
        )
        for name in med:
            print(
                f"  {name:9s} {med[name]:6.2f} s  {rate[name]:6.1f} MiB/s  "
                f"peak RSS {max(rss[name]) / 1024:6.1f} MiB"
            )
        print(
            f"  fleet: {med['sftp'] / med['fleet']:.2f}x sftp (target >= 0.6), "
            f"{med['paramiko'] / med['fleet']:.2f}x paramiko (target >= 2); peak RSS for a "
            f"6-byte file {big['fleet_peak_rss_kib_small_file'] / 1024:.1f} MiB"
        )
    f, peers = small["fleet"], small["peers_s"]
    print(f"\nG4b: {small['files']} files of {small['bytes_each']} B from {args.nodes} nodes")
    print(
        f"  fleet     {f['collect_s']:6.2f} s  first exit -> last completion (outputFiles into "
        f"the file store); submit -> completed {f['submit_to_completed_s']:.2f} s"
    )
    for name, secs in peers.items():
        print(f"  {name:9s} {secs:6.2f} s  -> fleet is {secs / f['collect_s']:.2f}x")
    print(
        f"  controller: CPU {f['controller_cpu_s']:.2f} s, RSS {f['controller_rss_kib_before'] / 1024:.0f}"
        f" -> {f['controller_rss_kib_after'] / 1024:.0f} MiB (peak over its life "
        f"{f['controller_peak_rss_kib'] / 1024:.0f} MiB)"
    )
    path = write_results(
        "g4",
        {
            "activity_before": before,
            "large": big,
            "small": small,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
