"""Shared fixtures: the loopback lab (real sshd), a fresh FLEET_HOME, the CLI and the controller."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import fleet as fleet_pkg
from fleet import lab as lab_mod

LAB_NODES = int(os.environ.get("FLEET_TEST_LAB_NODES", "5"))
PG_URL = os.environ.get("FLEET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent

if (
    os.environ.get("FLEET_TEST_INSTALLED")
    and Path(fleet_pkg.__file__).resolve().parent == ROOT / "fleet"
):
    raise RuntimeError(
        f"FLEET_TEST_INSTALLED is set but fleet was imported from the checkout "
        f"({fleet_pkg.__file__}): run pytest with PYTHONSAFEPATH=1 --import-mode=append"
    )


@pytest.fixture(scope="session")
def lab() -> Iterator[lab_mod.Lab]:
    """A lab of real sshd processes on 127.0.0.1, shared by the whole test session."""
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        pytest.skip("no sshd on this machine: install openssh-server (the CI script does)")
    path = Path(tempfile.mkdtemp(prefix="fleet-test-lab-", dir="/tmp"))
    path.chmod(0o755)
    the_lab = lab_mod.up(path, LAB_NODES)
    yield the_lab
    lab_mod.down(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL, or a clean skip saying why not."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("PostgreSQL tests skipped: psycopg is not installed")
    try:
        psycopg.connect(
            PG_URL.replace("postgresql://", "postgresql://", 1), connect_timeout=3
        ).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL tests skipped: no server reachable at {PG_URL} ({exc})")
    return PG_URL


def pg_database(server: str) -> Iterator[str]:
    import psycopg

    name = f"fleet_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Fleet:
    """Runs the real ``fleet`` CLI in a subprocess against one FLEET_HOME."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.env = {**os.environ, "FLEET_HOME": str(home)}
        self.env.pop("FLEET_DB_URL", None)
        self.env.update(extra_env or {})

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "fleet", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"fleet {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return self(*args, "-o", "json").json()

    def add_tasks(self, job: str, tasks: Any, check: bool = True) -> Result:
        """``fleet task create --job JOB --json-file -`` with ``tasks`` (an object or a list)."""
        return self(
            "task",
            "create",
            "--job",
            job,
            "--json-file",
            "-",
            "-o",
            "json",
            check=check,
            input=json.dumps(tasks),
        )


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    """The CLI with its own empty FLEET_HOME."""
    return Fleet(tmp_path / "home")


@pytest.fixture
def lab_inventory(lab: lab_mod.Lab, tmp_path: Path) -> Path:
    """An inventory of the lab whose node roots are fresh for this test."""
    base = lab.dir / "nodes" / f"t-{uuid.uuid4().hex[:10]}"
    return lab_mod.write_inventory(lab, tmp_path / "lab.ini", node_root_base=base)


class ControllerProcess:
    """``fleet controller run`` as a real process, so tests can SIGKILL it."""

    def __init__(self, fleet: Fleet, log: Path, args: tuple[str, ...] = ()) -> None:
        self.fleet = fleet
        self.log = log
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet",
                "controller",
                "run",
                "--node-grace",
                "3",
                "--log-level",
                "debug",
                *self.args,
            ],
            env=self.fleet.env,
            stdout=logf,
            stderr=logf,
        )
        logf.close()
        return self

    def stop(self) -> int:
        """SIGTERM and wait; return the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("controller did not stop on SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL: the crash the reliability model must survive."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def controller(fleet: Fleet, tmp_path: Path) -> Iterator[Callable[..., ControllerProcess]]:
    """Start controllers on demand; every one still running is stopped at the end."""
    started: list[ControllerProcess] = []

    def start(*args: str) -> ControllerProcess:
        proc = ControllerProcess(fleet, tmp_path / "controller.log", args).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30,
    interval: float = 0.1,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def make_pool(
    fleet: Fleet, inventory: Path, pool_id: str = "p", nodes: int = 2, *extra: str
) -> list[str]:
    """Import the lab inventory and create a pool of its first ``nodes`` hosts."""
    fleet("host", "import", str(inventory))
    hosts = [h["id"] for h in fleet.json("host", "list")][:nodes]
    fleet("pool", "create", "--id", pool_id, "--hosts", ",".join(hosts), *extra)
    return hosts


def wait_for_idle_nodes(fleet: Fleet, pool: str, timeout: float = 60) -> None:
    """Wait until every node of ``pool`` is idle."""
    wait_for(
        lambda: all(n["state"] == "idle" for n in fleet.json("node", "list", "--pool", pool)),
        timeout,
        message=f"nodes of {pool} idle",
    )
