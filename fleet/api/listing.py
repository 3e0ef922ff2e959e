"""List operations: ``$filter``, ``$select``, ``maxresults`` and ``odata.nextLink`` paging.

A list reads its objects in a stable order (tasks by submission, others by id), keeps
those the filter matches and answers at most ``maxresults`` of them. When more may
follow, ``odata.nextLink`` is the same request with ``$skiptoken`` set to where the
next page starts (the last key of this page), so a client that follows the links sees
every object once, however many there are, and no page is read twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fleet.api import odata
from fleet.api.wire import ApiRequest, Reply, stamp

#: The most objects one page holds, and the default: Azure's.
MAX_RESULTS = 1000


@dataclass(frozen=True)
class Page:
    """One page of a list: the objects, as printed, and the key to resume after."""

    items: list[dict[str, Any]]
    next_key: str | None


def query_options(req: ApiRequest) -> tuple[odata.Filter | None, list[str] | None, int]:
    """Return the request's parsed $filter, $select and maxresults; BadInput
    (``InvalidQueryParameterValue``) for a bad one."""
    text = req.query.get("$filter")
    flt = odata.parse_filter(text) if text else None
    fields = odata.parse_select(req.query["$select"]) if req.query.get("$select") else None
    limit = odata.parse_maxresults(req.query.get("maxresults"), MAX_RESULTS, MAX_RESULTS)
    return flt, fields, limit


def page_of(
    keyed: Iterable[tuple[str, dict[str, Any]]],
    url_of: Callable[[dict[str, Any]], str],
    flt: odata.Filter | None,
    limit: int,
) -> Page:
    """Return the first ``limit`` objects of ``keyed`` ((key, object) pairs in list
    order) that ``flt`` matches, stamped with their url and eTag."""
    items: list[dict[str, Any]] = []
    last: str | None = None
    iterator: Iterator[tuple[str, dict[str, Any]]] = iter(keyed)
    for key, obj in iterator:
        stamped = stamp(obj, url_of(obj))
        if flt is not None and not flt.matches(stamped):
            continue
        items.append(stamped)
        last = key
        if len(items) == limit:
            # more may follow only if the source has another object
            return Page(items, last if next(iterator, None) is not None else None)
    return Page(items, None)


def reply(req: ApiRequest, page: Page, fields: list[str] | None) -> Reply:
    """Reply with a page: ``{"value": [...], "odata.nextLink": URL}``."""
    value = [odata.select(obj, fields) for obj in page.items] if fields else page.items
    body: dict[str, Any] = {"value": value}
    if page.next_key is not None:
        body["odata.nextLink"] = odata.next_link(
            req.base_url + req.path, req.query_pairs, page.next_key
        )
    return Reply(200, body)


def after(req: ApiRequest) -> str | None:
    """Return the key a follow-up page resumes after (``$skiptoken``), if any."""
    return req.query.get("$skiptoken") or None
