"""Azure Batch's REST API served by the controller (issue 11): SharedKey auth, OData
query options, the routes, the dashboard and /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleet.api.server import ApiServer, Listen
    from fleet.settings import Settings


async def serve(settings: Settings, listen: Listen) -> ApiServer:
    """Start serving the API for the database of ``settings``; return the running server."""
    from fleet.api import app
    from fleet.api.context import Api
    from fleet.api.server import ApiServer

    api = Api.of(settings)
    server = ApiServer(app.build(api, api.keys), listen)
    await server.start()
    return server
