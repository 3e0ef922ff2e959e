"""What every command shares: the resolved settings and store, ``-o json|table`` output."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer
from rich.console import Console
from rich.table import Table

from fleet.errors import BadInput
from fleet.reads import Reader
from fleet.settings import Settings, private_dir

if TYPE_CHECKING:
    from fleet.remote import Remote
    from fleet.store import Store


class OutputFormat(StrEnum):
    JSON = "json"
    TABLE = "table"


OutputOpt = Annotated[
    OutputFormat | None,
    typer.Option("--output", "-o", help="Output format: json or table (default: table)."),
]

# Piped output is not cut to 80 columns: scripts and pagers get whole lines.
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 1000)
stderr = Console(stderr=True, soft_wrap=True)


@dataclass
class Context:
    """Per-invocation state, built from the global options."""

    home: str | None = None
    db_url: str | None = None
    output: OutputFormat = OutputFormat.TABLE
    url: str | None = None  # a remote controller's API: commands go there, not to the DB
    account: str | None = None
    key: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    _store: Store | None = field(default=None, repr=False)
    _remote: Remote | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        return Settings.resolve(self.home, self.db_url)

    @property
    def remote(self) -> Remote | None:
        """The remote controller commands talk to (``--url``), or None: the local database."""
        if self.url is None:
            return None
        if self._remote is None:
            from fleet.remote import Remote

            if not self.account or not self.key:
                raise BadInput(
                    "--url needs an account (--account or FLEET_ACCOUNT) and its key "
                    "(FLEET_KEY or --key-file)",
                    code="MissingRequiredProperty",
                    field="--account" if not self.account else "--key-file",
                )
            self._remote = Remote(self.url, self.account, self.key, self.ca_file)
        return self._remote

    def _local_only(self) -> None:
        if self.url is not None:
            raise BadInput(
                f"`fleet {_command_words()}` works on this machine's database only, not "
                "through --url",
                code="NotAvailableRemotely",
                field="--url",
            )

    @property
    def store(self) -> Store:
        self._local_only()
        if self._store is None:
            from fleet.store import Store  # the ORM loads only for commands that write

            private_dir(self.settings.home)
            self._store = Store(self.settings.db_url)
        return self._store

    @property
    def reader(self) -> Reader:
        """Read-only access without the ORM; a missing or older database is first
        created or upgraded by opening ``store``."""
        self._local_only()
        settings = self.settings
        private_dir(settings.home)
        reader = Reader(settings.db_url, upgrade=lambda: self.store)
        reader.keep_private()
        return reader


CURRENT = Context()


#: The global options that take a value (the words after them are not the command's).
_VALUE_OPTIONS = frozenset(
    ("--home", "--db-url", "--output", "-o", "--url", "--account", "--key-file", "--ca-file")
)


def _command_words() -> str:
    """Return the command being run, e.g. ``host list``, from the command line."""
    words, args = [], iter(sys.argv[1:])
    for arg in args:
        if arg in _VALUE_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            words.append(arg)
            if len(words) == 2:
                break
    return " ".join(words)


def read_key(key_file: str | None) -> str | None:
    """Return the API key from ``key_file`` (its first line), else ``$FLEET_KEY``."""
    if key_file is None:
        return os.environ.get("FLEET_KEY") or None
    try:
        lines = Path(key_file).read_text().splitlines()
    except OSError as exc:
        raise BadInput(
            f"cannot read the key file {key_file}: {exc.strerror}",
            code="InvalidKeyFile",
            field="--key-file",
        ) from None
    return lines[0].strip() if lines else None


def lazy_module(name: str) -> ModuleType:
    """Return module ``name``, imported on first attribute access (importlib's LazyLoader),
    so that a command group's read commands do not pay for what its writes import."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fmt(output: OutputFormat | None) -> OutputFormat:
    """Return the effective output format: the command's ``-o``, else the global one."""
    return output or CURRENT.output


def emit(
    data: Any,
    output: OutputFormat | None,
    columns: Sequence[tuple[str, str]] = (),
    title: str | None = None,
) -> None:
    """Print ``data`` (a dict or a list of dicts) as JSON or as a table of ``columns``
    (pairs of heading and dotted path)."""
    if fmt(output) == OutputFormat.JSON:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        return
    rows = data if isinstance(data, list) else [data]
    if not columns:
        for row in rows:
            _print_mapping(row)
        return
    _print_table(rows, columns, title)


def emit_stream(
    rows: Iterable[dict[str, Any]],
    output: OutputFormat | None,
    columns: Sequence[tuple[str, str]],
    page: int = 1000,
) -> None:
    """Print ``rows`` as ``emit`` prints a list of them, but as they come: JSON array items
    one by one, table rows ``page`` at a time (later pages' columns at least as wide as
    the first's). Nothing is printed before the first row arrives."""
    if fmt(output) == OutputFormat.JSON:
        opening = "[\n"
        for row in rows:
            text = json.dumps(row, indent=2, sort_keys=False)
            sys.stdout.write(opening + "\n".join("  " + line for line in text.split("\n")))
            opening = ",\n"
        sys.stdout.write("[]\n" if opening == "[\n" else "\n]\n")
        return
    batch: list[dict[str, Any]] = []
    widths: list[int] | None = None
    for row in rows:
        batch.append(row)
        if len(batch) == page:
            widths = _print_table(batch, columns, widths=widths)
            batch = []
    if batch or widths is None:
        _print_table(batch, columns, widths=widths)


def _print_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    title: str | None = None,
    widths: list[int] | None = None,
) -> list[int]:
    """Print a table of ``rows``; with ``widths`` (a later page), no header and columns at
    least that wide. Returns the width of each column's widest text."""
    cells = [[_cell(_get(row, path)) for _, path in columns] for row in rows]
    table = Table(
        title=title,
        show_edge=False,
        pad_edge=False,
        box=None,
        header_style="bold",
        show_header=widths is None,
    )
    for i, (heading, _) in enumerate(columns):
        table.add_column(
            heading,
            overflow="fold",
            no_wrap=not stdout.is_terminal,
            min_width=widths[i] if widths else None,
        )
    for row_cells in cells:
        table.add_row(*row_cells)
    stdout.print(table)
    return widths or [
        max([len(heading), *(len(c[i]) for c in cells)]) for i, (heading, _) in enumerate(columns)
    ]


def _print_mapping(row: dict[str, Any], indent: int = 0) -> None:
    pad = "  " * indent
    for key, value in row.items():
        if isinstance(value, dict):
            stdout.print(f"{pad}{key}:", highlight=False)
            _print_mapping(value, indent + 1)
        else:
            stdout.print(f"{pad}{key}: {_cell(value)}", highlight=False, markup=False)


def _get(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" if v not in ("", "true") else k for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) or "-"
    return str(value)


def read_text(path: str, *, code: str) -> str:
    """Return the UTF-8 text of ``path`` ('-' for stdin; a byte order mark is skipped).

    Raises BadInput naming the file: ``FileUnreadable``, or ``code`` when it is not UTF-8."""
    name = "standard input" if path == "-" else path
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(
            f"cannot read {name}: {exc.strerror}", code="FileUnreadable", target=name
        ) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInput(
            f"{name} is not UTF-8 text: byte {data[exc.start]:#04x} at offset {exc.start} "
            f"(line {line}) cannot be decoded",
            code=code,
            target=name,
            details={"offset": exc.start, "line": line},
        ) from None


def load_json_file(path: str) -> Any:
    """Return the parsed JSON in ``path`` ('-' for stdin). Raises BadInput naming the file
    (``FileUnreadable``, or ``InvalidJson`` for text that is not UTF-8 JSON)."""
    text = read_text(path, code="InvalidJson")
    name = "standard input" if path == "-" else path
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "it is nested too deeply"
        raise BadInput(
            f"{name} is not valid JSON: {reason}", code="InvalidJson", target=name
        ) from None


def progress_enabled(output: OutputFormat | None) -> bool:
    """Return whether to draw progress: only for table output on a terminal."""
    return fmt(output) == OutputFormat.TABLE and stderr.is_terminal


def write_whole(destination: Path, write: Callable[[BinaryIO], int]) -> int:
    """Run ``write`` on a hidden ``.NAME.part`` beside ``destination``, then rename it into
    place, so the file appears whole or not at all; return what ``write`` returned.
    Raises BadInput ``FileUnwritable``."""
    part = destination.with_name(f".{destination.name}.part")
    try:
        with part.open("wb") as f:
            written = write(f)
        part.replace(destination)
    except OSError as exc:
        raise BadInput(
            f"cannot write {destination}: {exc.strerror}", code="FileUnwritable"
        ) from exc
    finally:
        part.unlink(missing_ok=True)
    return written


#: The columns of a table of node or task files (Azure's NodeFile objects).
FILE_COLUMNS = [
    ("NAME", "name"),
    ("DIR", "isDirectory"),
    ("SIZE", "properties.contentLength"),
    ("MODIFIED", "properties.lastModified"),
]


def transfer_bar() -> Any:
    """Return a transient rich progress bar on stderr for byte transfers (rich.progress is
    imported only when a terminal shows one)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    )
