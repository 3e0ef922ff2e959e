"""Pool and node routes: add, get, exists, list, delete, resize and stop resizing a pool;
list and get its nodes."""

from __future__ import annotations

from typing import Any

from fleet import reads, views
from fleet.api import listing
from fleet.api.context import Api
from fleet.api.wire import ApiRequest, Reply, check_conditions, entity
from fleet.errors import BadInput
from fleet.service import pools as service


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


def _node_url(req: ApiRequest, pool_id: str, node_id: str) -> str:
    return req.url("pools", pool_id, "nodes", node_id)


def list_nodes(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}/nodes."""
    pool_id = req.params["poolId"]
    flt, fields, limit = listing.query_options(req)
    start = listing.after(req)
    nodes = (
        (row.id, views.node(row, address))
        for row, address in sorted(reads.list_nodes(api.reader, pool_id), key=lambda n: n[0].id)
        if start is None or row.id > start
    )
    page = listing.page_of(nodes, lambda n: _node_url(req, pool_id, n["id"]), flt, limit)
    return listing.reply(req, page, fields)


def get_node(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}/nodes/{nodeId}."""
    pool_id, node_id = req.params["poolId"], req.params["nodeId"]
    node, host = reads.show_node(api.reader, pool_id, node_id)
    obj = views.node(node, host.address)
    return entity(req, obj, _node_url(req, pool_id, node_id))
