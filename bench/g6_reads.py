"""G6: CLI start-up: `fleet --help`, read commands and `fleet exec` on 1 node vs `import asyncssh`."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

from common import (
    FLEET,
    bench_env,
    lab,
    other_activity,
    run,
    stats,
    stop_on_sigterm,
    temp_dir,
    time_once,
    write_results,
)

#: name -> fleet arguments (the job has --tasks tasks, the pool the lab's one node)
COMMANDS = {
    "fleet --help": ["--help"],
    "fleet job show J": ["job", "show", "J"],
    "fleet task show": ["task", "show", "--job", "J", "--id", "t1"],
    "fleet pool list": ["pool", "list"],
    "fleet exec (1 node)": ["exec", "--hosts", "node01", "--", "true"],
}
TOP_LEVEL = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$")  # not nested


def import_ms(py: Path, argv: list[str | Path], env: dict[str, str]) -> tuple[float, list[str]]:
    """Return the milliseconds ``python -X importtime`` reports for the top-level imports
    of one run, and the five most expensive of them."""
    proc = subprocess.run(
        [str(py), "-X", "importtime", *map(str, argv)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",  # so that -m fleet imports the fleet of ``py``, not the one in the cwd
    )
    top = [
        (int(m.group(1)), m.group(2))
        for line in proc.stderr.splitlines()
        if (m := TOP_LEVEL.match(line))
    ]
    top.sort(reverse=True)
    return sum(us for us, _ in top) / 1000, [f"{name} {us / 1000:.0f} ms" for us, name in top[:5]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument(
        "--fleet", type=Path, default=FLEET, help="the fleet to time (e.g. another checkout's)"
    )
    args = ap.parse_args()
    stop_on_sigterm()
    before = other_activity()
    fleet = args.fleet
    py = fleet.parent / "python"
    samples: dict[str, list[float]] = {"import asyncssh": [], **{k: [] for k in COMMANDS}}
    imports: dict[str, tuple[float, list[str]]] = {}
    with temp_dir("fleet-bench-home-") as home, lab(1) as the_lab:
        env = bench_env(home)
        run([fleet, "host", "import", the_lab.inventory_path], env)
        run([fleet, "pool", "create", "--id", "P", "--hosts", "node01"], env)
        run([fleet, "job", "create", "--id", "J", "--pool", "P"], env)
        for start in range(0, args.tasks, 100):
            items = [
                f'{{"id": "t{i}", "commandLine": "true"}}'
                for i in range(start + 1, min(args.tasks, start + 100) + 1)
            ]
            json_file = home / "tasks.json"
            json_file.write_text(f"[{', '.join(items)}]")
            run([fleet, "task", "create", "--job", "J", "--json-file", json_file], env)
        cmds: dict[str, list[str | Path]] = {"import asyncssh": [py, "-c", "import asyncssh"]}
        cmds |= {name: [fleet, *argv] for name, argv in COMMANDS.items()}
        for argv in cmds.values():
            run(argv, env)  # fills the bytecode cache; exec records the host key
        for name, argv in cmds.items():
            script = argv[1:] if name == "import asyncssh" else ["-m", "fleet", *argv[1:]]
            imports[name] = import_ms(py, script, env)
        names = list(cmds)
        for i in range(args.runs):  # interleaved, order rotated: noise hits all alike
            for name in names[i % len(names) :] + names[: i % len(names)]:
                samples[name].append(time_once(cmds[name], env))
    report(samples, imports, before, args)


def report(
    samples: dict[str, list[float]],
    imports: dict[str, tuple[float, list[str]]],
    before: dict,
    args: argparse.Namespace,
) -> None:
    s = {k: stats(v) for k, v in samples.items()}
    base = s["import asyncssh"]["median"]
    print(f"\nG6, {args.fleet}, median of {args.runs} (whole process; min, p90), imports:")
    for name, x in s.items():
        ms, top = imports[name]
        print(
            f"  {name:22} {x['median']:6.3f} s ({x['min']:.3f}, {x['p90']:.3f})  "
            f"x{x['median'] / base:4.2f}   imports {ms:5.0f} ms: {', '.join(top[:3])}"
        )
    print("  target: read commands <= import asyncssh; --help near-instant")
    path = write_results(
        "g6",
        {
            "activity_before": before,
            "fleet": str(args.fleet),
            "tasks": args.tasks,
            "wall": s,
            "imports_ms": {k: {"total": v[0], "top": v[1]} for k, v in imports.items()},
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
