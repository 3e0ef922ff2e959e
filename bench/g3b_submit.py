"""G3b: submit N tasks from one JSON file with `fleet task create --json-file` (whole CLI process)."""

from __future__ import annotations

import argparse
import json
import pstats
import subprocess
import sys
from pathlib import Path

from common import FLEET, PY, RESULTS, bench_env, run, stats, temp_dir, time_once, write_results

POOL = "bench"


def task_file(path: Path, n: int, deps: bool, lines: bool) -> Path:
    """Write ``n`` tasks: ids t00000..., an env var each; with ``deps``, every task after the
    first 100 depends on the task 100 before it (taskIds) and on a range of earlier ones."""
    tasks = []
    for i in range(n):
        task: dict[str, object] = {
            "id": f"{i}" if deps else f"t{i:05d}",
            "commandLine": f"/bin/echo task {i}",
            "environmentSettings": [{"name": "INDEX", "value": str(i)}],
        }
        if deps and i >= 100:
            task["dependsOn"] = {
                "taskIds": [str(i - 100)],
                "taskIdRanges": [{"start": i - 50, "end": i - 40}],
            }
        tasks.append(task)
    if lines:
        path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    else:
        path.write_text(json.dumps(tasks))
    return path


def setup_home(home: Path, db_url: str | None) -> list[str]:
    """Make a FLEET_HOME with two hosts in a pool; return the global options to pass."""
    inv = home.parent / "inventory.ini"
    inv.write_text("n1 ansible_host=127.0.0.1\nn2 ansible_host=127.0.0.1\n")
    opts = ["--db-url", db_url] if db_url else []
    env = bench_env(home)
    run([FLEET, *opts, "host", "import", inv], env)
    run([FLEET, *opts, "pool", "create", "--id", POOL, "--hosts", "n1,n2"], env)
    return opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--output", choices=("json", "table"), default="json")
    ap.add_argument("--deps", action="store_true", help="tasks with dependsOn (ids and ranges)")
    ap.add_argument("--json-lines", action="store_true", help="one task per line")
    ap.add_argument("--db-url", help="e.g. postgresql://postgres@127.0.0.1:5432/bench")
    ap.add_argument("--profile", action="store_true", help="also run once under cProfile")
    ap.add_argument("--fleet", default=str(FLEET), help="the fleet executable to time")
    args = ap.parse_args()
    with temp_dir("fleet-bench-g3b-") as tmp:
        home = tmp / "home"
        opts = setup_home(home, args.db_url)
        env = bench_env(home)
        spec = task_file(tmp / "tasks.json", args.tasks, args.deps, args.json_lines)

        def submit(job: str, prefix: list[str | Path]) -> float:
            argv = [FLEET, *opts, "job", "create", "--id", job, "--pool", POOL]
            if args.deps:  # the CLI has no flag for usesTaskDependencies: use a job spec
                job_json = tmp / f"{job}.json"
                job_json.write_text(
                    json.dumps(
                        {"id": job, "poolInfo": {"poolId": POOL}, "usesTaskDependencies": True}
                    )
                )
                argv = [FLEET, *opts, "job", "create", "--json-file", job_json]
            run(argv, env)
            task_argv = [*opts, "task", "create", "--job", job, "--json-file", spec]
            return time_once(
                [*prefix, *task_argv, "-o", args.output], env, stdin=subprocess.DEVNULL
            )

        submit("warmup", [args.fleet])  # fills the bytecode cache
        samples = [submit(f"j{i}", [args.fleet]) for i in range(args.runs)]
        result = {
            "tasks": args.tasks,
            "fleet": args.fleet,
            "output": args.output,
            "deps": args.deps,
            "json_lines": args.json_lines,
            "db": "postgresql" if args.db_url else "sqlite",
            "submit_s": stats(samples),
            "samples": samples,
        }
        print(
            f"{args.tasks} tasks from one file ({result['db']}, -o {args.output}"
            f"{', dependsOn' if args.deps else ''}): median {result['submit_s']['median']:.3f} s"
            f" over {args.runs} runs (min {result['submit_s']['min']:.3f},"
            f" max {result['submit_s']['max']:.3f})"
        )
        if args.profile:
            RESULTS.mkdir(exist_ok=True)
            prof = RESULTS / "g3b_submit.prof"
            submit("profiled", [PY, "-m", "cProfile", "-o", prof, "-m", "fleet"])
            stream = sys.stdout
            print("cProfile, top 25 by cumulative time:")
            pstats.Stats(str(prof), stream=stream).sort_stats("cumulative").print_stats(25)
            print("cProfile, top 25 by own time:")
            pstats.Stats(str(prof), stream=stream).sort_stats("tottime").print_stats(25)
            result["profile"] = str(prof)
        print(f"results: {write_results('g3b_submit', result)}")


if __name__ == "__main__":
    main()
