"""The dashboard's HTML: Jinja2 templates (fleet/api/templates/) rendered with autoescape
on, so ids, command lines and task output always reach the page as text. The only module
that uses Jinja2."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

#: The block of each page that the live script fetches alone and swaps in.
LIVE_BLOCK = "live"


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fleet.api", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, context: dict[str, Any], live_only: bool = False) -> str:
    """Return template ``name`` rendered with ``context``: the whole page, or only its
    live block."""
    template = _environment().get_template(name)
    if not live_only:
        return template.render(context)
    block = template.blocks[LIVE_BLOCK]
    return "".join(block(template.new_context(context)))
