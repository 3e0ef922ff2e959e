"""Application routes: list and get applications, as Azure's ApplicationSummary (``id``,
``displayName``, ``versions``) with fleet's ``defaultVersion`` and ``packages``."""

from __future__ import annotations

from fleet.api import listing
from fleet.api.context import Api
from fleet.api.wire import ApiRequest, Reply, unstamped
from fleet.service import applications as service

#: What a list adds to an entity; an ApplicationSummary has none of it.


def list_(api: Api, req: ApiRequest) -> Reply:
    """GET /applications, by id."""
    flt, fields, limit = listing.query_options(req)
    start = listing.after(req)
    apps = (
        (app.id, service.application_json(app, packages))
        for app, packages in service.list_applications(api.store)
        if start is None or app.id > start
    )
    page = listing.page_of(apps, lambda a: req.url("applications", a["id"]), flt, limit)
    plain = [unstamped(a) for a in page.items]
    return listing.reply(req, listing.Page(plain, page.next_key), fields)


def get(api: Api, req: ApiRequest) -> Reply:
    """GET /applications/{applicationId}."""
    app, packages = service.show_application(api.store, req.params["applicationId"])
    return Reply(200, service.application_json(app, packages))
