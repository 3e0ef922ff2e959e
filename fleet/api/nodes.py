"""Compute node routes: list and get nodes; reboot, reimage, disable and enable scheduling;
remote login settings; node users; and the files under a node's fleet root: list, get
(with ``ocp-range``) and their properties."""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import quote

from fleet import node_files, reads, views
from fleet.api import listing
from fleet.api.context import Api
from fleet.api.wire import (
    ApiRequest,
    Reply,
    byte_range,
    entity,
    file_reply,
    http_date,
    iso_to_epoch,
)
from fleet.domain import NODE_DEALLOCATION_OPTIONS, NodeOperation
from fleet.errors import BadInput, NotFound
from fleet.service import node_ops, node_users


def _url(req: ApiRequest, pool_id: str, node_id: str) -> str:
    return req.url("pools", pool_id, "nodes", node_id)


def _ids(req: ApiRequest) -> tuple[str, str]:
    return req.params["poolId"], req.params["nodeId"]


def optional_body(req: ApiRequest, what: str) -> dict[str, Any]:
    """Return the request's JSON object, or ``{}`` when it has no body (Azure's optional
    bodies: a reboot without options, a terminate without a reason)."""
    return req.json(what) if req.body.strip() else {}


def list_(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}/nodes."""
    pool_id = req.params["poolId"]
    flt, fields, limit = listing.query_options(req)
    start = listing.after(req)
    nodes = (
        (row.id, views.node(row, address))
        for row, address in sorted(reads.list_nodes(api.reader, pool_id), key=lambda n: n[0].id)
        if start is None or row.id > start
    )
    page = listing.page_of(nodes, lambda n: _url(req, pool_id, n["id"]), flt, limit)
    return listing.reply(req, page, fields)


def get(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}/nodes/{nodeId}."""
    pool_id, node_id = _ids(req)
    node, host = reads.show_node(api.reader, pool_id, node_id)
    return entity(req, views.node(node, host.address), _url(req, pool_id, node_id))


# -- operations


def _option(body: dict[str, Any], field: str, allowed: tuple[str, ...], node: str) -> str:
    """Return the option ``field`` of ``body`` (default ``requeue``); BadInput
    ``InvalidPropertyValue`` naming ``field`` for another value."""
    option = body.get(field)
    if option is None:
        return "requeue"
    if not isinstance(option, str) or option.lower() not in allowed:
        raise BadInput(
            f"{field} must be one of {', '.join(allowed)}, not {option!r}",
            code="InvalidPropertyValue",
            target=f"node {node}",
            field=field,
        )
    return option.lower()


def _operate(api: Api, req: ApiRequest, operation: NodeOperation, field: str) -> None:
    pool_id, node_id = _ids(req)
    body = optional_body(req, f"node {node_id}")
    option = _option(body, field, NODE_DEALLOCATION_OPTIONS, node_id)
    node_ops.request(api.store, pool_id, [node_id], operation, option)


def reboot(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/nodes/{nodeId}/reboot (``nodeRebootOption``): 202. A node
    reached on this machine without a reboot command is refused (409
    ``NodeRebootRefused``)."""
    _operate(api, req, NodeOperation.REBOOT, "nodeRebootOption")
    return Reply(202, headers={"DataServiceId": _url(req, *_ids(req))})


def reimage(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/nodes/{nodeId}/reimage (``nodeReimageOption``): 202."""
    _operate(api, req, NodeOperation.REIMAGE, "nodeReimageOption")
    return Reply(202, headers={"DataServiceId": _url(req, *_ids(req))})


def disable_scheduling(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/nodes/{nodeId}/disablescheduling
    (``nodeDisableSchedulingOption``: requeue, terminate or taskcompletion): 200."""
    pool_id, node_id = _ids(req)
    body = optional_body(req, f"node {node_id}")
    option = body.get("nodeDisableSchedulingOption") or "requeue"
    if isinstance(option, str):
        option = option.lower()
    node_ops.request(api.store, pool_id, [node_id], NodeOperation.DISABLE_SCHEDULING, option)
    return Reply(200, headers={"DataServiceId": _url(req, pool_id, node_id)})


def enable_scheduling(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/nodes/{nodeId}/enablescheduling: 200."""
    pool_id, node_id = _ids(req)
    node_ops.enable_scheduling(api.store, pool_id, [node_id])
    return Reply(200, headers={"DataServiceId": _url(req, pool_id, node_id)})


def remote_login_settings(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}/nodes/{nodeId}/remoteloginsettings: the address and port of
    the node's sshd (``remoteLoginIPAddress``, ``remoteLoginPort``)."""
    return Reply(200, node_users.remote_login_settings(api.store, *_ids(req)))


# -- users


def _user_url(req: ApiRequest, name: str) -> str:
    return req.url("pools", req.params["poolId"], "nodes", req.params["nodeId"], "users", name)


def add_user(api: Api, req: ApiRequest) -> Reply:
    """POST /pools/{poolId}/nodes/{nodeId}/users: create an account for remote login,
    201 (with the user as fleet prints it: Azure's clients ignore the body)."""
    pool_id, node_id = _ids(req)
    body = req.json(f"node {node_id}")
    user = node_users.create_user(api.store, pool_id, node_id, body, api.settings)
    url = _user_url(req, user["name"])
    return Reply(201, user, headers={"DataServiceId": url, "Location": url})


def update_user(api: Api, req: ApiRequest) -> Reply:
    """PUT /pools/{poolId}/nodes/{nodeId}/users/{userName}: replace the user's password,
    key and expiry (what is not given is removed), 200 with the user."""
    pool_id, node_id = _ids(req)
    name = req.params["userName"]
    body = req.json(f"node user {node_id}/{name}")
    if "name" in body and body["name"] != name:
        raise BadInput(
            "the user is named by the path; leave name out of the body",
            code="InvalidPropertyValue",
            target=f"node user {node_id}/{name}",
            field="name",
        )
    user = node_users.update_user(api.store, pool_id, node_id, body | {"name": name})
    return Reply(200, user, headers={"DataServiceId": _user_url(req, name)})


def list_users(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}/nodes/{nodeId}/users: the users fleet made on the node (a
    fleet addition: Azure cannot list them)."""
    return Reply(200, {"value": node_users.list_users(api.store, *_ids(req))})


def delete_user(api: Api, req: ApiRequest) -> Reply:
    """DELETE /pools/{poolId}/nodes/{nodeId}/users/{userName}: 200."""
    pool_id, node_id = _ids(req)
    node_users.delete_user(api.store, pool_id, node_id, req.params["userName"])
    return Reply(200)


# -- files


def _file_url(req: ApiRequest, name: str) -> str:
    return f"{_url(req, *_ids(req))}/files/{quote(name, safe='/')}"


def list_files(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}/nodes/{nodeId}/files[?recursive=true]: the entries under the
    node's fleet root, named relative to it."""
    flt, fields, limit = listing.query_options(req)
    recursive = req.query.get("recursive", "").lower() == "true"
    start = listing.after(req)
    files = node_files.list_files(api.reader, *_ids(req), None, recursive)
    keyed = ((f["name"], f) for f in sorted(files, key=lambda f: f["name"]))
    keyed = ((k, f) for k, f in keyed if start is None or k > start)
    page = listing.page_of(keyed, lambda f: _file_url(req, f["name"]), flt, limit)
    return listing.reply(req, page, fields)


def _entry(api: Api, req: ApiRequest, name: str) -> dict[str, Any]:
    """Return the NodeFile entry of ``name``; NotFound ``FileNotFound`` without one."""
    path = node_files.node_path(name, target=f"node {req.params['nodeId']}")
    parent = posixpath.dirname(path) or None
    for entry in node_files.list_files(api.reader, *_ids(req), parent):
        if entry["name"] == path:
            return entry
    raise NotFound(
        f"no file {name!r} under the node's fleet root",
        code="FileNotFound",
        target=f"node {req.params['nodeId']}",
        field="path",
    )


def file_properties(api: Api, req: ApiRequest) -> Reply:
    """HEAD /pools/{poolId}/nodes/{nodeId}/files/{filePath}."""
    name = req.params["filePath"]
    entry = _entry(api, req, name)
    props = entry.get("properties") or {}
    headers = {
        "ocp-batch-file-isdirectory": "true" if entry.get("isDirectory") else "false",
        "ocp-batch-file-url": _file_url(req, name),
        "Content-Length": str(props.get("contentLength", 0)),
    }
    modified = iso_to_epoch(props.get("lastModified"))
    if modified is not None:
        headers["Last-Modified"] = http_date(modified)
        headers["ocp-creation-time"] = http_date(modified)
    if props.get("fileMode"):
        headers["ocp-batch-file-mode"] = props["fileMode"]
    return Reply(200, headers=headers, media_type="application/octet-stream")


def get_file(api: Api, req: ApiRequest) -> Reply:
    """GET /pools/{poolId}/nodes/{nodeId}/files/{filePath}, all of it or the bytes
    ``ocp-range: bytes=START-END`` names; streamed through a spooled file (memory
    bounded)."""
    name = req.params["filePath"]
    start, end = byte_range(req.headers.get("ocp-range"))
    return file_reply(
        lambda f: node_files.download(api.reader, *_ids(req), name, f, start=start, end=end),
        _file_url(req, name),
    )
