"""Shared benchmark helpers: lab and FLEET_HOME lifetimes, timing, peers' installs, results."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from subprocess import PIPE
from typing import Any

from fleet import lab as lab_mod

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
#: The fleet that is timed: the project's venv, or FLEET_BENCH_VENV (for example a venv
#: where `pip install .` put fleet as users have it, without the editable path finder).
VENV = Path(os.environ.get("FLEET_BENCH_VENV") or ROOT / ".venv")
PY = VENV / "bin" / "python"
FLEET = VENV / "bin" / "fleet"
ANSIBLE_VENV = BENCH / ".venv-ansible"


def stop_on_sigterm() -> None:
    """Make SIGTERM (and SIGINT, even if the shell ignored it) unwind, so every `finally` runs."""

    def handler(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def kill_tree(pid: int) -> None:
    """SIGTERM a process and all its descendants (Ansible's workers call setsid), then SIGKILL."""
    children: dict[int, list[int]] = {}
    for p in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(p.name))
    pids, todo = [pid], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        pids += kids
        todo += kids
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, sig)
        time.sleep(0.5)


def bench_env(home: Path | None = None) -> dict[str, str]:
    """Return the environment for timed processes: own FLEET_HOME, bytecode cached.

    Bytecode goes to bench/results/pycache for every tool alike (this machine sets
    PYTHONDONTWRITEBYTECODE, which would recompile fleet's own modules on every start).
    """
    env = {
        k: v for k, v in os.environ.items() if k not in ("FLEET_DB_URL", "PYTHONDONTWRITEBYTECODE")
    }
    env["PYTHONPYCACHEPREFIX"] = str(RESULTS / "pycache")
    if home is not None:
        env["FLEET_HOME"] = str(home)
    return env


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp, mode 0755, removed at the end."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)  # as root, the lab user must traverse the lab dir
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def lab(nodes: int) -> Iterator[lab_mod.Lab]:
    """A lab of ``nodes`` real sshd on 127.0.0.1, stopped and removed at the end."""
    with temp_dir("fleet-bench-lab-") as path:
        try:
            yield lab_mod.up(path, nodes)
        finally:
            with contextlib.suppress(Exception):
                lab_mod.down(path)


@contextlib.contextmanager
def controller(
    home: Path, env: dict[str, str], profile: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``fleet controller run`` (under a CPU-time cProfile writing to ``profile`` if
    given), its log in ``home/controller.log``; SIGTERM it on the way out (SIGKILL after
    20 s)."""
    profiler = Path(__file__).with_name("cpu_profile.py")
    prefix = [PY, str(profiler), str(profile)] if profile else [FLEET]
    with (home / "controller.log").open("wb") as log:
        ctl = subprocess.Popen(
            [*prefix, "controller", "run", "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        yield ctl
    finally:
        ctl.terminate()
        try:
            ctl.wait(20)
        except subprocess.TimeoutExpired:
            ctl.kill()
            ctl.wait()


def run(argv: Sequence[str | Path], env: dict[str, str], **kw: Any) -> str:
    """Run a command to completion; raise with its output if it fails; return its stdout.

    If this process is interrupted meanwhile, the command and its descendants are killed."""
    proc = subprocess.Popen(
        [str(a) for a in argv], env=env, stdout=PIPE, stderr=PIPE, text=True, **kw
    )
    try:
        out, err = proc.communicate()
    except BaseException:
        kill_tree(proc.pid)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}:\n{out}\n{err}")
    return out


def time_once(argv: Sequence[str | Path], env: dict[str, str], **kw: Any) -> float:
    """Return the wall-clock seconds of one run of the whole process."""
    t0 = time.perf_counter()
    run(argv, env, **kw)
    return time.perf_counter() - t0


def stats(samples: Sequence[float]) -> dict[str, float]:
    """Return n, median (= p50), p90 (nearest rank), min and max of ``samples``."""
    s = sorted(samples)
    p90 = s[min(len(s) - 1, max(0, -(-9 * len(s) // 10) - 1))]
    return {"n": len(s), "median": statistics.median(s), "p90": p90, "min": s[0], "max": s[-1]}


def cpu_seconds(pid: int) -> float:
    """Return utime + stime of a live process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """Return (busy, total) CPU jiffies of the whole machine, to diff around a run."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def other_activity() -> dict[str, Any]:
    """Return the load average and how many other pytest runs share the machine (noise)."""
    pytests = 0
    for p in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if b"pytest" in (p / "cmdline").read_bytes() and int(p.name) != os.getpid():
                pytests += 1
    return {"loadavg": os.getloadavg(), "pytest_processes": pytests}


def ensure_ansible() -> Path:
    """Return bench/.venv-ansible/bin/ansible, creating the venv from PyPI if missing."""
    ansible = ANSIBLE_VENV / "bin" / "ansible"
    if not ansible.exists():
        print("installing ansible-core into bench/.venv-ansible (PyPI) ...", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        pip = ANSIBLE_VENV / "bin" / "pip"
        subprocess.run([str(pip), "install", "-q", "ansible-core"], check=True)
    return ansible


def ensure_parallel() -> str:
    """Return the path of GNU parallel, installing the Debian package if missing (root)."""
    if not shutil.which("parallel"):
        print("installing GNU parallel (apt-get) ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "parallel"], check=True)
    return shutil.which("parallel") or "parallel"


def stop_control_masters(control_dir: Path) -> None:
    """Ask every OpenSSH ControlMaster with a socket in ``control_dir`` to exit."""
    for sock in control_dir.glob("*"):
        if sock.is_socket():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"],
                capture_output=True,
                timeout=10,
                check=False,
            )


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` with a timestamp and machine facts to bench/results/NAME-TIME.json."""
    RESULTS.mkdir(exist_ok=True)
    now = datetime.now()
    path = RESULTS / f"{name}-{now:%Y%m%d-%H%M%S}.json"
    meta = {"date": now.isoformat(timespec="seconds"), "cpus": os.cpu_count(), **other_activity()}
    path.write_text(json.dumps({"meta": meta, **data}, indent=1) + "\n")
    return path
