"""EC2 requests made in the same process: signed as a client signs them, or trusted. Pure.

``signed_request`` builds the request a client sends (a form POST signed with
Signature Version 4, as boto3 does it); the real client (real/ec2_client.py) sends
exactly what it builds, and the simulation can hand it to ``Ec2Api.handle`` to pay the
same signing and verifying work as a real client and server would.

``trusted_request`` builds an unsigned request that names its caller in
``HttpRequest.trusted_access_key``: ``Ec2Api.handle`` skips the time and signature
checks for it but still authenticates the access key through the directory and
authorizes the action. Only code in this process can make one; the web server never
sets the field (common.ec2.request, "Trusted requests").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from urllib.parse import quote_plus

from common import signing
from common.ec2.request import API_VERSION, V4_SERVICE, HttpRequest

#: The content type of a form body, as boto3 sends it.
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
#: The path of the EC2 API in 2010's nova (any path works: the API serves one).
DEFAULT_PATH = "/services/Cloud"
#: What ``quote_plus`` leaves as it is: letters, digits and ``_.-~``.
_FORM_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*\Z")


def _form_quote(text: str) -> str:
    """``quote_plus(text)``, skipped for text it leaves as it is (most names and values)."""
    return text if _FORM_PLAIN.match(text) else quote_plus(text)


def form_body(action: str, params: Mapping[str, object] | None = None, version: str = API_VERSION) -> bytes:
    """The form-encoded body of ``action`` with ``params`` (values made strings), as
    ``urlencode`` makes it."""
    form = {"Action": action, "Version": version}
    form.update({str(name): str(value) for name, value in (params or {}).items()})
    return "&".join(f"{_form_quote(name)}={_form_quote(value)}" for name, value in form.items()).encode("ascii")


def signed_request(action: str, params: Mapping[str, object] | None, access_key: str, secret_key: str,
                   now: float, host: str, *, path: str = DEFAULT_PATH, region: str = "nova",
                   request_id: str = "") -> HttpRequest:
    """A POST of ``action`` signed with Signature Version 4 at time ``now`` (seconds
    since the epoch) for ``host`` (``HOST:PORT``, as the Host header sends it).
    ``access_key`` is ``<access key>:<project>``. The headers are the ones to send."""
    body = form_body(action, params)
    headers = signing.sign_v4("POST", host, path, "", hashlib.sha256(body).hexdigest(), access_key=access_key,
                              secret_key=secret_key, region=region, service=V4_SERVICE, now=now,
                              headers={"content-type": FORM_CONTENT_TYPE})
    return HttpRequest("POST", path, "", headers, body, request_id)


def trusted_request(action: str, params: Mapping[str, object] | None, access_key: str, *,
                    path: str = DEFAULT_PATH, request_id: str = "", remote_address: str = "") -> HttpRequest:
    """An unsigned POST of ``action`` that acts as ``access_key`` (``<access
    key>:<project>``): the directory still authenticates and authorizes it."""
    if not access_key:
        raise ValueError("a trusted request needs the access key it acts as")
    return HttpRequest("POST", path, "", {"content-type": FORM_CONTENT_TYPE}, form_body(action, params),
                       request_id, remote_address, trusted_access_key=access_key)
