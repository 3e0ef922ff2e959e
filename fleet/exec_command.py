"""``fleet exec`` itself: through a running controller (warm) or on its own (cold).

fleet/cli/exec_cmd.py declares the command for the CLI framework; both it and
:func:`main`, which the ``fleet`` entry point tries first, call :func:`run`. ``main``
reads the plain forms of ``fleet [--home D] [--db-url U] [-o F] exec ...`` itself,
because loading the CLI framework (Typer, which loads pydantic, and rich) costs more
than a warm exec on 50 hosts; anything else (``--help``, a typo) goes to the CLI,
which handles it as before. Warm, only stdlib modules load besides fleet's own
control_socket, exec_results, settings and errors; asyncssh loads for a cold run only.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from fleet import control_socket
from fleet.errors import EXIT_FAILED, EXIT_OK, BadInput
from fleet.exec_results import HostResult, write
from fleet.settings import Settings

#: The options :func:`main` reads (each with a value), by the name it gives them.
_GLOBAL = {"--home": "home", "--db-url": "db_url", "--output": "output", "-o": "output"}
_EXEC = {"--pool": "pool", "--hosts": "hosts", "--timeout": "timeout"}
_EXEC |= {"--output": "exec_output", "-o": "exec_output"}
_NO_CONTROLLER = "--no-controller"
_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


def run(
    settings: Settings,
    argv: Sequence[str],
    *,
    pool: str | None,
    hosts: str | None,
    timeout: float | None,
    as_json: bool,
    use_controller: bool = True,
) -> int:
    """Run ``argv`` on the pool's nodes or the hosts matching ``hosts``, through the
    controller of ``settings`` when one runs (unless not ``use_controller``), else over
    new connections; print the results; return 0 when it exited 0 everywhere, else 1.

    Raises BadInput, NotFound (unknown pool or host), or what the controller reported."""
    if (pool is None) == (hosts is None):
        raise BadInput("give exactly one of --pool or --hosts", code="MissingRequiredProperty")
    found = None
    if use_controller:
        request = {"pool": pool, "hosts": hosts, "argv": list(argv), "timeout": timeout}
        found = control_socket.exec_through_controller(
            control_socket.socket_path(settings), request
        )
    if found is not None:
        results = [HostResult.from_dict(r) for r in found]
    else:
        from fleet import execute  # asyncssh: only for a cold run

        results = execute.run_cold(settings, pool=pool, pattern=hosts, argv=argv, timeout=timeout)
    write(results, as_json, sys.stdout)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def main(args: Sequence[str]) -> int | None:
    """Run ``fleet ARGS`` if it is a plain ``fleet exec``; return its exit status, or None
    (having done nothing) for anything else. Raises what :func:`run` raises."""
    parsed = _parse(args)
    if parsed is None:
        return None
    given, command = parsed
    outputs = [given[k] for k in ("output", "exec_output") if k in given]
    timeout = given.get("timeout")
    if any(o not in ("json", "table") for o in outputs) or (
        timeout is not None and not _SECONDS.fullmatch(timeout)
    ):
        return None
    return run(
        Settings.resolve(given.get("home"), given.get("db_url")),
        command,
        pool=given.get("pool"),
        hosts=given.get("hosts"),
        timeout=None if timeout is None else float(timeout),
        as_json=(outputs or ["table"])[-1] == "json",
        use_controller=_NO_CONTROLLER not in given,
    )


def _parse(args: Sequence[str]) -> tuple[dict[str, str], list[str]] | None:
    """Return the options given and the command, or None when ``args`` are not
    ``[GLOBAL OPTIONS] exec [OPTIONS] [--] COMMAND...`` in the forms read here."""
    given: dict[str, str] = {}
    options, i = _GLOBAL, 0
    while i < len(args):
        arg = args[i]
        if options is _GLOBAL and arg == "exec":
            options, i = _EXEC, i + 1
        elif options is _EXEC and (arg == "--" or not arg.startswith("-")):
            command = list(args[i + 1 if arg == "--" else i :])
            return (given, command) if command else None
        elif options is _EXEC and arg == _NO_CONTROLLER:
            given[arg], i = "", i + 1
        elif (name := arg.partition("=")[0]) in options and name.startswith("--") and "=" in arg:
            given[options[name]], i = arg.partition("=")[2], i + 1
        elif arg in options and i + 1 < len(args):
            given[options[arg]], i = args[i + 1], i + 2
        else:
            return None
    return None
