"""``fleet pool`` and ``fleet node``: create, list, show and delete pools, count their nodes;
list and show nodes, list and download files under a node's fleet root."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleet import reads, views
from fleet.cli import autoscale, node_ops, node_users
from fleet.cli.common import (
    CURRENT,
    FILE_COLUMNS,
    OutputFormat,
    OutputOpt,
    emit,
    fmt,
    lazy_module,
    load_json_file,
    progress_enabled,
    stderr,
    transfer_bar,
    write_whole,
)
from fleet.domain import NodeState
from fleet.errors import EXIT_FAILED, BadInput, TimedOut

if TYPE_CHECKING:
    from fleet import node_files
    from fleet.service import pools as service
else:
    service = lazy_module("fleet.service.pools")
    node_files = lazy_module("fleet.node_files")

app = typer.Typer(help="Manage pools of nodes.", no_args_is_help=True)
node_app = typer.Typer(help="Inspect and operate the nodes of a pool.", no_args_is_help=True)
node_file_app = typer.Typer(help="Files under a node's fleet root.", no_args_is_help=True)

POOL_COLUMNS = [
    ("ID", "id"),
    ("STATE", "state"),
    ("ALLOCATION", "allocationState"),
    ("NODES", "currentDedicatedNodes"),
    ("TARGET", "targetDedicatedNodes"),
    ("SLOTS/NODE", "taskSlotsPerNode"),
    ("NODE STATES", "nodeCounts"),
]
NODE_COLUMNS = [
    ("ID", "id"),
    ("STATE", "state"),
    ("SCHEDULING", "schedulingState"),
    ("ADDRESS", "ipAddress"),
    ("ERRORS", "errors"),
]
SETTLED = {NodeState.IDLE, NodeState.RUNNING, NodeState.START_TASK_FAILED, NodeState.UNUSABLE}


@app.command("create")
def create(
    pool_id: Annotated[str | None, typer.Option("--id", help="Pool id.")] = None,
    hosts: Annotated[str | None, typer.Option("--hosts", help="Comma-separated host ids.")] = None,
    task_slots_per_node: Annotated[
        int | None, typer.Option("--task-slots-per-node", help="Tasks a node runs at once.")
    ] = None,
    start_task: Annotated[
        str | None, typer.Option("--start-task", help="Start task command line.")
    ] = None,
    json_file: Annotated[
        str | None, typer.Option("--json-file", help="Azure Batch pool JSON ('-' for stdin).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until every node is ready or failed.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds to wait with --wait.")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Create a pool from host ids or from an Azure Batch pool JSON file."""
    if json_file:
        if pool_id or hosts or start_task or task_slots_per_node:
            raise BadInput(
                "--json-file cannot be combined with --id/--hosts/--start-task/"
                "--task-slots-per-node",
                code="ConflictingOptions",
            )
        data: dict[str, Any] = load_json_file(json_file)
    else:
        if not pool_id or not hosts:
            raise BadInput("give --id and --hosts, or --json-file", code="MissingRequiredProperty")
        data = {"id": pool_id, "hosts": [h.strip() for h in hosts.split(",") if h.strip()]}
        if task_slots_per_node is not None:
            data["taskSlotsPerNode"] = task_slots_per_node
        if start_task:
            data["startTask"] = {"commandLine": start_task, "waitForSuccess": True}
    remote = CURRENT.remote
    if remote is not None:
        remote.call("POST", "/pools", body=data)
        pool_id = str(data.get("id"))
    else:
        pool_id = service.create_pool(CURRENT.store, data, CURRENT.settings).id
    if wait:
        _wait_for_nodes(pool_id, timeout, output)
    emit(_pool(pool_id), output)
    if wait and any(s not in (NodeState.IDLE, NodeState.RUNNING) for s in _node_states(pool_id)):
        raise typer.Exit(EXIT_FAILED)


def _pool(pool_id: str) -> dict[str, Any]:
    """Return a pool as `pool show` prints it, from the database or the remote API."""
    if (remote := CURRENT.remote) is not None:
        return remote.get(f"/pools/{pool_id}")
    return views.pool(*service.show_pool(CURRENT.store, pool_id))


def _node_states(pool_id: str) -> list[str]:
    if (remote := CURRENT.remote) is not None:
        return [n["state"] for n in remote.list(f"/pools/{pool_id}/nodes")]
    return [n.state for n in service.list_nodes(CURRENT.store, pool_id)]


def _wait_for_nodes(pool_id: str, timeout: float | None, output: Any) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    show = progress_enabled(output)
    with stderr.status("", spinner="dots") if show else contextlib.nullcontext() as status:
        while True:
            states = _node_states(pool_id)
            counts: dict[str, int] = {}
            for state in states:
                counts[state] = counts.get(state, 0) + 1
            if status is not None:
                summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                status.update(f"pool {pool_id}: {summary}")
            if all(state in SETTLED for state in states):
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimedOut(
                    f"nodes not ready after {timeout} s: {counts} (is 'fleet controller "
                    f"run' running?)",
                    target=f"pool {pool_id}",
                )
            time.sleep(0.2)


@app.command("list")
def list_(output: OutputOpt = None) -> None:
    """List pools."""
    if (remote := CURRENT.remote) is not None:
        emit(list(remote.list("/pools")), output, POOL_COLUMNS)
        return
    emit(
        [views.pool(p, nodes) for p, nodes in reads.list_pools(CURRENT.reader)],
        output,
        POOL_COLUMNS,
    )


@app.command("show")
def show(pool_id: str, output: OutputOpt = None) -> None:
    """Show one pool."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.get(f"/pools/{pool_id}"), output)
        return
    emit(views.pool(*reads.show_pool(CURRENT.reader, pool_id)), output)


@app.command("delete")
def delete(pool_id: str, output: OutputOpt = None) -> None:
    """Delete a pool; its hosts return to the free inventory."""
    if (remote := CURRENT.remote) is not None:
        remote.call("DELETE", f"/pools/{pool_id}")
    else:
        service.delete_pool(CURRENT.store, pool_id)
    emit({"deleted": pool_id}, output)


@app.command("resize")
def resize(
    pool_id: str,
    target_dedicated_nodes: Annotated[
        int,
        typer.Option(
            "--target-dedicated-nodes", help="Nodes the pool should have (hostSelector pools)."
        ),
    ],
    node_deallocation_option: Annotated[
        str,
        typer.Option(
            "--node-deallocation-option",
            help="When shrinking, what happens to the running tasks of nodes that leave: "
            "requeue (default), terminate, taskcompletion (let them finish) or retaineddata.",
        ),
    ] = "requeue",
    output: OutputOpt = None,
) -> None:
    """Grow or shrink a hostSelector pool to a target number of nodes.

    The controller claims free matching hosts or removes nodes (idle ones first) until the
    pool has the target; allocationState is resizing meanwhile, and resizeErrors say why
    when too few hosts match."""
    if (remote := CURRENT.remote) is not None:
        body = {
            "targetDedicatedNodes": target_dedicated_nodes,
            "nodeDeallocationOption": node_deallocation_option,
        }
        remote.call("POST", f"/pools/{pool_id}/resize", body=body)
    else:
        service.resize_pool(
            CURRENT.store, pool_id, target_dedicated_nodes, node_deallocation_option
        )
    emit(_pool(pool_id), output)


@app.command("stop-resize")
def stop_resize(pool_id: str, output: OutputOpt = None) -> None:
    """Stop a resize under way.

    No more hosts are claimed nor nodes asked to leave (those leaving already go), and the
    target becomes the nodes the pool has."""
    if (remote := CURRENT.remote) is not None:
        remote.call("POST", f"/pools/{pool_id}/stopresize")
    else:
        service.stop_resize(CURRENT.store, pool_id)
    emit(_pool(pool_id), output)


@app.command("node-counts")
def node_counts(
    pool_id: Annotated[
        str | None, typer.Argument(help="Pool id (default: every pool).", show_default=False)
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Count the nodes of each pool (or of POOL) per state, as Azure's list pool node counts.

    -o json prints a list of {poolId, dedicated: {<state>: n, ..., total}, lowPriority};
    the table shows each pool's states that have nodes."""
    if (remote := CURRENT.remote) is not None:
        query = {"$filter": f"poolId eq '{pool_id}'"} if pool_id else None
        counts = list(remote.list("/nodecounts", query))
        if pool_id and not counts:
            remote.get(f"/pools/{pool_id}")  # NotFound, as locally
    else:
        counts = [
            views.pool_node_counts(p, c) for p, c in reads.pool_node_counts(CURRENT.reader, pool_id)
        ]
    if fmt(output) == OutputFormat.JSON:
        emit(counts, output)
        return
    rows = [
        {
            "poolId": c["poolId"],
            "total": c["dedicated"]["total"],
            "states": ", ".join(
                f"{state} {n}" for state, n in c["dedicated"].items() if n and state != "total"
            ),
        }
        for c in counts
    ]
    emit(rows, output, [("POOL", "poolId"), ("TOTAL", "total"), ("NODE STATES", "states")])


@node_app.command("list")
def node_list(
    pool: Annotated[str, typer.Option("--pool", help="Pool id.")],
    output: OutputOpt = None,
) -> None:
    """List the nodes of a pool."""
    if (remote := CURRENT.remote) is not None:
        emit(list(remote.list(f"/pools/{pool}/nodes")), output, NODE_COLUMNS)
        return
    rows = [views.node(n, address) for n, address in reads.list_nodes(CURRENT.reader, pool)]
    emit(rows, output, NODE_COLUMNS)


@node_app.command("show")
def node_show(
    pool: Annotated[str, typer.Option("--pool", help="Pool id.")],
    node: Annotated[str, typer.Option("--node", help="Node id.")],
    output: OutputOpt = None,
) -> None:
    """Show one node, with its errors and start task information."""
    if (remote := CURRENT.remote) is not None:
        emit(remote.get(f"/pools/{pool}/nodes/{node}"), output)
        return
    row, host = reads.show_node(CURRENT.reader, pool, node)
    emit(views.node(row, host.address), output)


node_users.register(node_app)  # after list and show: the order --help lists them in
node_ops.register(node_app)
autoscale.register(app)
node_app.add_typer(node_file_app, name="file")

PoolOpt = Annotated[str, typer.Option("--pool", help="Pool id.")]
NodeOpt = Annotated[str, typer.Option("--node", help="Node id.")]
#: Draw a progress bar for node file downloads at least this big.
PROGRESS_BYTES = 8 << 20


@node_file_app.command("list")
def node_file_list(
    pool: PoolOpt,
    node: NodeOpt,
    path: Annotated[
        str | None,
        typer.Argument(
            help="Directory under the node's fleet root (default: the root).", show_default=False
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", help="Descend into subdirectories.")
    ] = False,
    output: OutputOpt = None,
) -> None:
    """List the files under a node's fleet root, or under a directory of it.

    Names are relative to the root, as Azure's NodeFile objects name them; symbolic links
    are listed, never followed."""
    rows = node_files.list_files(CURRENT.reader, pool, node, path, recursive)
    emit(
        rows,
        output,
        FILE_COLUMNS,
    )


@node_file_app.command("download")
def node_file_download(
    path: Annotated[
        str,
        typer.Argument(help="Path of a file under the node's fleet root, e.g. startup/stdout.txt."),
    ],
    pool: PoolOpt,
    node: NodeOpt,
    destination: Annotated[
        Path | None,
        typer.Option("--destination", help="Where to write it (default: standard output)."),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Download a file from under a node's fleet root, streamed in chunks.

    With --destination the file appears whole or not at all, a progress bar shows on a
    terminal, and -o json prints {name, destination, bytes}."""
    db = CURRENT.reader
    if destination is None:
        node_files.download(db, pool, node, path, sys.stdout.buffer)
        sys.stdout.flush()
        return
    with _download_progress(progress_enabled(output), path) as progress:
        written = write_whole(
            destination, lambda f: node_files.download(db, pool, node, path, f, progress)
        )
    if fmt(output) == OutputFormat.JSON:
        emit({"name": path, "destination": str(destination), "bytes": written}, output)


@contextlib.contextmanager
def _download_progress(show: bool, label: str) -> Iterator[Any]:
    """Yield a node_files.Progress callback drawing a transient bar on stderr for files of
    at least PROGRESS_BYTES, or None when ``show`` is false."""
    if not show:
        yield None
        return
    bar = transfer_bar()
    task = bar.add_task(label, total=None, visible=False)

    def advance(written: int, size: int) -> None:
        if size < PROGRESS_BYTES:
            return
        shown = bar.tasks[0].visible
        bar.update(task, completed=written, total=size, visible=True)
        if not shown:
            bar.refresh()  # drawn at once, not at the next tick

    with bar:
        yield advance
