"""Plain DB-API statements for the controller's hot path.

Under load each turn of the controller runs a handful of statements for dozens of tasks:
the queue, the dispatch write-ahead, starts and completions. Through SQLAlchemy each
costs tens of microseconds of Python before the database sees it (cache keys, parameter
and result processing), a large share of the controller's CPU per task
(docs/benchmarks.md, G3). Here they are SQL text, translated once per dialect and run on
the session's own DB-API connection, inside its transaction.

A statement's text uses ``:name`` parameters (and no ``%``, which psycopg reads as a
placeholder); ``column IN :name`` takes a list. Parameters
named in ``json_params`` are encoded as JSON, and result columns named in ``json_columns``
decoded (PostgreSQL's driver decodes them itself).
"""

from __future__ import annotations

import functools
import json
import re
from collections import namedtuple
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import JSON
from sqlmodel import SQLModel

from fleet.store import database_error

_IN = re.compile(r"(\w+(?:\.\w+)?) IN :(\w+)")
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


class Statement:
    """One statement's SQL text in each dialect, and the shape of its rows."""

    def __init__(
        self, text: str, *, json_columns: Iterable[str] = (), json_params: Iterable[str] = ()
    ) -> None:
        if "%" in text:
            raise ValueError(f"a statement's text may not hold '%': {text}")
        self.sqlite_text = _IN.sub(r"\1 IN (SELECT value FROM json_each(:\2))", text)
        self.postgres_text = _PARAM.sub(r"%(\1)s", _IN.sub(r"\1 = ANY(:\2)", text))
        self.json_columns = frozenset(json_columns)
        #: Parameters to encode: JSON values, and IN lists (a JSON array for SQLite's json_each).
        self.json_params = tuple(json_params)
        self.list_params = tuple(m.group(2) for m in _IN.finditer(text))
        self._row: Any = None  # a namedtuple class, from the first result's columns
        self._decode: list[int] = []  # the positions of its JSON columns

    def shape(self, description: Any) -> tuple[Any, list[int]]:
        """Return the row class of this statement's results, and which of their columns
        hold JSON (``description``: the cursor's, read the first time)."""
        if self._row is None:
            names = [d[0] for d in description]
            self._row = namedtuple("Row", names)  # type: ignore[misc]
            self._decode = [i for i, name in enumerate(names) if name in self.json_columns]
        return self._row, self._decode


@functools.cache
def update(table: str, columns: tuple[str, ...], where: str) -> Statement:
    """Return ``UPDATE table SET column = :column, ... WHERE where``; each column name is
    checked against the table's. Built once per shape."""
    known = SQLModel.metadata.tables[table].columns
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"{table} has no column {unknown[0]!r}")
    sets = ", ".join(f"{c} = :{c}" for c in columns)
    return Statement(
        f"UPDATE {table} SET {sets} WHERE {where}",  # noqa: S608 (names checked above)
        json_params=[c for c in columns if isinstance(known[c].type, JSON)],
    )


class Sql:
    """Runs :class:`Statement` s on a SQLAlchemy session's connection, in its transaction.

    Errors from the database become the store's FleetErrors (fleet/store.py
    ``database_error``), as the session's own statements do."""

    def __init__(self, session: Any) -> None:
        conn = session.connection()  # begins the session's transaction if it has not
        self.sqlite = conn.dialect.name == "sqlite"
        self._db = conn.connection.driver_connection
        self._errors = conn.dialect.loaded_dbapi.Error
        self._info = session.info

    @classmethod
    def of(cls, session: Any) -> Sql:
        """The :class:`Sql` of ``session`` (made once per session: the pieces of a turn
        share one transaction)."""
        db = session.info.get(cls)
        if db is None:
            db = session.info[cls] = cls(session)
        return db

    def rows(self, stmt: Statement, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Return the rows ``stmt`` selects, as named tuples."""
        cur = self._db.cursor()
        try:
            cur.execute(self._text(stmt), self._params(stmt, params or {}))
            raw = cur.fetchall()
            row, decode = stmt.shape(cur.description)
        except self._errors as exc:
            raise database_error(exc) from exc
        finally:
            cur.close()
        if decode and self.sqlite:
            out = []
            for values in raw:
                values = list(values)
                for i in decode:
                    if values[i] is not None:
                        values[i] = json.loads(values[i])
                out.append(row._make(values))
            return out
        return [row._make(values) for values in raw]

    def execute(self, stmt: Statement, params: Mapping[str, Any]) -> int:
        """Run a write once; return how many rows it changed."""
        return self.executemany(stmt, [params])

    def executemany(self, stmt: Statement, params: Iterable[Mapping[str, Any]]) -> int:
        """Run a write once per set of parameters; return how many rows it changed."""
        batch = [self._params(stmt, p) for p in params]
        if not batch:
            return 0
        self._info["wrote"] = True  # the store wakes a controller on commit (fleet/store.py)
        cur = self._db.cursor()
        try:
            cur.executemany(self._text(stmt), batch)
            return int(cur.rowcount)
        except self._errors as exc:
            raise database_error(exc) from exc
        finally:
            cur.close()

    def _text(self, stmt: Statement) -> str:
        return stmt.sqlite_text if self.sqlite else stmt.postgres_text

    def _params(self, stmt: Statement, params: Mapping[str, Any]) -> Mapping[str, Any]:
        if not (stmt.json_params or stmt.list_params):
            return params
        out = dict(params)
        for name in stmt.json_params:
            if out.get(name) is not None:
                out[name] = json.dumps(out[name])
        for name in stmt.list_params:
            out[name] = json.dumps(list(out[name])) if self.sqlite else list(out[name])
        return out
