"""``fleet file``: upload, list, download and delete files in the controller's file store."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from fleet import file_store
from fleet.cli.common import (
    CURRENT,
    OutputFormat,
    OutputOpt,
    emit,
    fmt,
    progress_enabled,
    stdout,
    transfer_bar,
    write_whole,
)
from fleet.errors import BadInput

app = typer.Typer(
    help="The controller's file store (like a storage container): "
    "resource files come from it, output files go to it.",
    no_args_is_help=True,
)

COLUMNS = [
    ("NAME", "name"),
    ("SIZE", "properties.contentLength"),
    ("MODIFIED", "properties.lastModified"),
]
#: Draw a progress bar for uploads at least this big, or of at least this many files.
PROGRESS_BYTES = 8 << 20
PROGRESS_FILES = 20


@contextlib.contextmanager
def _progress(show: bool, total: int, label: str) -> Iterator[file_store.Progress | None]:
    if not show:
        yield None
        return
    bar = transfer_bar()
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@app.command("upload")
def upload(
    local: Annotated[Path, typer.Argument(help="Local file, or directory with --recursive.")],
    remote: Annotated[
        str, typer.Argument(help="Name in the store, e.g. inputs/data.csv (a prefix with -r).")
    ],
    recursive: Annotated[
        bool,
        typer.Option("--recursive", "-r", help="Upload every file under the LOCAL directory."),
    ] = False,
    output: OutputOpt = None,
) -> None:
    """Upload a file, or a directory tree under a prefix; print the stored entries."""
    if recursive:
        files = file_store.tree_files(local)
        total = sum(source.stat().st_size for source, _ in files)
        count = len(files)
    elif local.is_dir():
        raise BadInput(f"{local} is a directory: add --recursive", code="FileUnreadable")
    else:
        total, count = (local.stat().st_size if local.is_file() else 0), 1
    show = (
        progress_enabled(output)
        and stdout.is_terminal
        and (total >= PROGRESS_BYTES or count >= PROGRESS_FILES)
    )
    with _progress(show, total, f"uploading {count} file(s)") as advance:
        if recursive:
            entries = file_store.put_tree(CURRENT.settings, local, remote, progress=advance)
        else:
            entries = [file_store.put_file(CURRENT.settings, local, remote, progress=advance)]
    emit(entries, output, [*COLUMNS, ("SHA256", "properties.sha256")])


@app.command("list")
def list_(
    prefix: Annotated[
        str, typer.Argument(help="Directory (or container) to list; default: everything.")
    ] = "",
    pattern: Annotated[
        str | None,
        typer.Option("--pattern", help="Glob on the path under PREFIX, e.g. '**/*.csv'."),
    ] = None,
    output: OutputOpt = None,
) -> None:
    """List stored files, sorted by name."""
    emit(file_store.list_files(CURRENT.settings, prefix, pattern), output, COLUMNS)


@app.command("download")
def download(
    remote: Annotated[str, typer.Argument(help="Name in the store.")],
    destination: Annotated[
        Path | None,
        typer.Option(
            "--destination", help="File or existing directory to write to (default: stdout)."
        ),
    ] = None,
    start: Annotated[int | None, typer.Option("--start", help="First byte (0-based).")] = None,
    end: Annotated[int | None, typer.Option("--end", help="Last byte, inclusive.")] = None,
    output: OutputOpt = None,
) -> None:
    """Download a stored file (whole, or a byte range) to a file or standard output.

    With --destination and -o json, print what was written."""
    settings = CURRENT.settings
    if destination is None:
        file_store.stream_range(settings, remote, sys.stdout.buffer, start, end)
        sys.stdout.flush()
        return
    if destination.is_dir():
        name = file_store.stat_file(settings, remote)["name"]
        destination = destination / name.rsplit("/", 1)[-1]
    written = write_whole(
        destination, lambda f: file_store.stream_range(settings, remote, f, start, end)
    )
    if fmt(output) == OutputFormat.JSON:
        emit({"name": remote, "destination": str(destination), "bytes": written}, output)


@app.command("delete")
def delete(
    remote: Annotated[str, typer.Argument(help="A file's name, or a directory prefix.")],
    output: OutputOpt = None,
) -> None:
    """Delete a stored file, or every file under a prefix."""
    emit({"name": remote, "deleted": file_store.delete(CURRENT.settings, remote)}, output)
