"""Certificate routes (the azure-batch 14.x clients' API): add, list, get and delete, a
certificate named ``/certificates(thumbprintAlgorithm=sha1,thumbprint=T)``."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fleet import certificates as parsing
from fleet.api import listing
from fleet.api.context import Api
from fleet.api.wire import ApiRequest, Reply, entity
from fleet.errors import BadInput
from fleet.service import certificates as service

#: Azure's certificateFormat values and fleet's names of them.
_FORMATS = {"pfx": "pfx", "cer": "der"}


def _url(req: ApiRequest, thumbprint: str) -> str:
    return f"{req.base_url}/certificates(thumbprintAlgorithm=sha1,thumbprint={thumbprint})"


def _thumbprint(req: ApiRequest) -> str:
    """Return the thumbprint the path names; BadInput unless its algorithm is sha1."""
    algorithm = req.params["thumbprintAlgorithm"]
    if algorithm.lower() != "sha1":
        raise BadInput(
            f"thumbprintAlgorithm must be sha1, got {algorithm!r}",
            code="InvalidPropertyValue",
            target=f"certificate {req.params['thumbprint']}",
            field="thumbprintAlgorithm",
        )
    return req.params["thumbprint"]


def _text(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadInput(
            f"{name} must be a non-empty string",
            code="MissingRequiredProperty" if value is None else "InvalidPropertyValue",
            target="certificate",
            field=name,
        )
    return value


def add(api: Api, req: ApiRequest) -> Reply:
    """POST /certificates (``thumbprint``, ``thumbprintAlgorithm`` sha1, ``data`` in
    base64, ``certificateFormat`` pfx or cer, ``password`` of a pfx): 201. The thumbprint
    must be the certificate's own."""
    body = req.json("certificate")
    thumbprint = str(_text(body, "thumbprint")).lower()
    algorithm = str(_text(body, "thumbprintAlgorithm"))
    if algorithm.lower() != "sha1":
        raise BadInput(
            f"thumbprintAlgorithm must be sha1, got {algorithm!r}",
            code="InvalidPropertyValue",
            target=f"certificate {thumbprint}",
            field="thumbprintAlgorithm",
        )
    fmt = str(body.get("certificateFormat") or "pfx").lower()
    if fmt not in _FORMATS:
        raise BadInput(
            f"certificateFormat must be pfx or cer, got {fmt!r}",
            code="InvalidPropertyValue",
            target=f"certificate {thumbprint}",
            field="certificateFormat",
        )
    try:
        data = base64.b64decode(str(_text(body, "data")), validate=True)
    except binascii.Error:
        raise BadInput(
            "data must be the certificate in base64",
            code="InvalidPropertyValue",
            target=f"certificate {thumbprint}",
            field="data",
        ) from None
    password = _text(body, "password", required=False)
    secret = password.encode() if password is not None else None
    name = f"certificate {thumbprint}"
    parsed = parsing.parse(data, name, _FORMATS[fmt], secret)
    if parsed.thumbprint != thumbprint:
        raise BadInput(
            f"the certificate's sha1 thumbprint is {parsed.thumbprint}, not {thumbprint}",
            code="InvalidPropertyValue",
            target=name,
            field="thumbprint",
        )
    added = service.create_certificate(api.store, api.settings, data, name, _FORMATS[fmt], secret)
    url = _url(req, added.certificate.thumbprint)
    return Reply(201, headers={"DataServiceId": url, "Location": url})


def list_(api: Api, req: ApiRequest) -> Reply:
    """GET /certificates, by thumbprint."""
    flt, fields, limit = listing.query_options(req)
    start = listing.after(req)
    certs = (
        (cert.thumbprint, service.view(cert))
        for cert in service.list_certificates(api.store)
        if start is None or cert.thumbprint > start
    )
    page = listing.page_of(certs, lambda c: _url(req, c["thumbprint"]), flt, limit)
    return listing.reply(req, page, fields)


def get(api: Api, req: ApiRequest) -> Reply:
    """GET /certificates(thumbprintAlgorithm=sha1,thumbprint={thumbprint})."""
    cert = service.show_certificate(api.store, _thumbprint(req))
    return entity(req, service.view(cert), _url(req, cert.thumbprint))


def cancel_deletion(api: Api, req: ApiRequest) -> Reply:
    """POST /certificates(thumbprintAlgorithm=sha1,thumbprint={thumbprint})/canceldelete:
    a certificate whose deletion failed is active again, 204."""
    service.cancel_deletion(api.store, _thumbprint(req))
    return Reply(204)


def delete(api: Api, req: ApiRequest) -> Reply:
    """DELETE /certificates(thumbprintAlgorithm=sha1,thumbprint={thumbprint}): 202; 409
    ``CertificateInUse`` while a pool references it (it is then ``deletefailed``)."""
    service.delete_certificate(api.store, _thumbprint(req))
    return Reply(202)
