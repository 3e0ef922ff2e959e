"""Pool routes: add, get, exists, list, patch, update properties, delete, resize and stop
resizing a pool, remove its nodes, enable, disable and evaluate autoscale; and the node
counts of every pool."""

from __future__ import annotations

from typing import Any

from fleet import reads, views
from fleet.api import listing
from fleet.api.context import Api
from fleet.api.nodes import optional_body
from fleet.api.wire import ApiRequest, Reply, check_conditions, entity, unstamped
from fleet.domain import NodeOperation
from fleet.errors import BadInput
from fleet.service import autoscale, node_ops
from fleet.service import pools as service

#: The most nodes one removenodes call may name (Azure's limit).
MAX_REMOVE = 100
#: What a list adds to an entity; Azure's PoolNodeCounts has none of it.


def _url(req: ApiRequest, pool_id: str) -> str:
    return req.url("pools", pool_id)


def add(api: Api, req: ApiRequest) -> Reply:
    """POST /pools: a pool with neither ``hosts`` nor ``hostSelector`` claims
    ``targetDedicatedNodes`` free hosts, those labelled with its ``vmSize`` first."""
    body = req.json("pool")
    if body.get("hosts") is None and body.get("hostSelector") is None:
        body["hostSelector"] = {"labels": {}}
    pool = service.create_pool(api.store, body, api.settings)
    url = _url(req, pool.id)
    return Reply(201, headers={"DataServiceId": url, "Location": url})


def _current(api: Api, req: ApiRequest) -> dict[str, Any]:
    return views.pool(*reads.show_pool(api.reader, req.params["poolId"]))


def get(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}."""
    return entity(req, _current(api, req), _url(req, req.params["poolId"]))


def exists(api: Api, req: ApiRequest) -> Reply:
    """HEAD /pools/{poolId}: 200, or 404 without a body."""
    return entity(req, _current(api, req), _url(req, req.params["poolId"]), body=False)


def list_(api: Api, req: ApiRequest) -> Reply:
    """GET /pools."""
    flt, fields, limit = listing.query_options(req)
    start = listing.after(req)
    pools = (
        (row.id, views.pool(row, nodes))
        for row, nodes in reads.list_pools(api.reader)
        if start is None or row.id > start
    )
    page = listing.page_of(pools, lambda p: _url(req, p["id"]), flt, limit)
    return listing.reply(req, page, fields)


def delete(api: Api, req: ApiRequest) -> Reply:
    """DELETE /pools/{poolId}: 202."""
    pool_id = req.params["poolId"]
    check_conditions(req, _current(api, req), _url(req, pool_id))
    service.delete_pool(api.store, pool_id)
    return Reply(202)


def resize(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/resize: 202; the pool shows ``allocationState`` resizing."""
    pool_id = req.params["poolId"]
    body = req.json(f"pool {pool_id}")
    if body.get("targetLowPriorityNodes") not in (None, 0):
        raise BadInput(
            "fleet has no low-priority nodes",
            code="InvalidPropertyValue",
            target=f"pool {pool_id}",
            field="targetLowPriorityNodes",
        )
    check_conditions(req, _current(api, req), _url(req, pool_id))
    option = body.get("nodeDeallocationOption") or "requeue"
    service.resize_pool(api.store, pool_id, body.get("targetDedicatedNodes"), option)
    return Reply(202)


def stop_resize(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/stopresize: 202."""
    service.stop_resize(api.store, req.params["poolId"])
    return Reply(202)


def patch(api: Api, req: ApiRequest) -> Reply:
    """PATCH /pools/{poolId}: replace the ``startTask``, ``certificateReferences``,
    ``applicationPackageReferences`` or ``metadata`` the body gives; the rest stay."""
    pool_id = req.params["poolId"]
    check_conditions(req, _current(api, req), _url(req, pool_id))
    service.update_pool(api.store, pool_id, req.json(f"pool {pool_id}"))
    return Reply(200, headers={"DataServiceId": _url(req, pool_id)})


def update_properties(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/updateproperties: replace ``applicationPackageReferences``
    and ``metadata`` (required; empty lists remove them), ``startTask`` (removed when
    absent) and ``certificateReferences`` (kept when absent: API 2025-06-01 has none),
    204."""
    pool_id = req.params["poolId"]
    body = req.json(f"pool {pool_id}")
    for name in ("applicationPackageReferences", "metadata"):
        if name not in body:
            raise BadInput(
                f"{name} is required (an empty list removes them all)",
                code="MissingRequiredProperty",
                target=f"pool {pool_id}",
                field=name,
            )
    current = _current(api, req)
    check_conditions(req, current, _url(req, pool_id))
    body.setdefault("certificateReferences", current.get("certificateReferences") or [])
    service.update_pool(api.store, pool_id, body, replace=True)
    return Reply(204, headers={"DataServiceId": _url(req, pool_id)})


def remove_nodes(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/removenodes (``nodeList``, ``nodeDeallocationOption``): 202;
    a sized pool's target drops by the nodes removed."""
    pool_id = req.params["poolId"]
    body = req.json(f"pool {pool_id}")
    nodes = body.get("nodeList")
    if (
        not isinstance(nodes, list)
        or not 0 < len(nodes) <= MAX_REMOVE
        or not all(isinstance(n, str) for n in nodes)
    ):
        raise BadInput(
            f"nodeList must be a list of 1 to {MAX_REMOVE} node ids",
            code="InvalidPropertyValue",
            target=f"pool {pool_id}",
            field="nodeList",
        )
    check_conditions(req, _current(api, req), _url(req, pool_id))
    option = body.get("nodeDeallocationOption") or "requeue"
    node_ops.request(api.store, pool_id, nodes, NodeOperation.REMOVE, option)
    return Reply(202, headers={"DataServiceId": _url(req, pool_id)})


def _formula(body: dict[str, Any], pool_id: str) -> str:
    formula = body.get("autoScaleFormula")
    if not isinstance(formula, str) or not formula.strip():
        raise BadInput(
            "autoScaleFormula must be a non-empty string",
            code="InvalidPropertyValue"
            if "autoScaleFormula" in body
            else "MissingRequiredProperty",
            target=f"pool {pool_id}",
            field="autoScaleFormula",
        )
    return formula


def enable_autoscale(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/enableautoscale (``autoScaleFormula``, optional when the pool
    has one; ``autoScaleEvaluationInterval``): 200."""
    pool_id = req.params["poolId"]
    current = _current(api, req)
    body = req.json(f"pool {pool_id}")
    check_conditions(req, current, _url(req, pool_id))
    if "autoScaleFormula" not in body and current.get("autoScaleFormula"):
        body["autoScaleFormula"] = current["autoScaleFormula"]
    interval = body.get("autoScaleEvaluationInterval")
    autoscale.enable(api.store, pool_id, _formula(body, pool_id), interval)
    return Reply(200, headers={"DataServiceId": _url(req, pool_id)})


def disable_autoscale(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/disableautoscale: 200; the pool keeps its current target."""
    pool_id = req.params["poolId"]
    autoscale.disable(api.store, pool_id)
    return Reply(200, headers={"DataServiceId": _url(req, pool_id)})


def evaluate_autoscale(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/evaluateautoscale (``autoScaleFormula``): 200 with Azure's
    AutoScaleRun (``timestamp``, ``results``, ``error``) and fleet's ``values``;
    nothing changes."""
    pool_id = req.params["poolId"]
    body = optional_body(req, f"pool {pool_id}")
    return Reply(200, autoscale.evaluate(api.store, pool_id, _formula(body, pool_id)))


def node_counts(api: Api, req: ApiRequest) -> Reply:
    """GET /nodecounts: Azure's PoolNodeCounts of every pool, by pool id."""
    flt, fields, limit = listing.query_options(req)
    start = listing.after(req)
    counts = (
        (pool_id, views.pool_node_counts(pool_id, c))
        for pool_id, c in reads.pool_node_counts(api.reader)
        if start is None or pool_id > start
    )
    page = listing.page_of(counts, lambda c: _url(req, c["poolId"]), flt, limit)
    plain = [unstamped(c) for c in page.items]
    return listing.reply(req, listing.Page(plain, page.next_key), fields)
