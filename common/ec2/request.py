"""EC2 requests: the parameters, the credentials and their signature, the time. Pure.

Signatures
----------
* **Version 2**, as ``AWSAccessKeyId``/``SignatureVersion=2``/``SignatureMethod``/
  ``Signature`` parameters with ``HmacSHA256`` or ``HmacSHA1``. The string to sign is
  ``VERB\\nhost\\npath\\n`` followed by the canonical query: every parameter except
  ``Signature``, sorted by name, each as ``quote(name)=quote(value)`` with RFC 3986
  unreserved characters (``-_.~``) left as they are. ``host`` is the Host header in
  lower case, port included, as 2010's ``Signer`` used it.
* **Version 4**, as boto3 sends it: the ``Authorization: AWS4-HMAC-SHA256
  Credential=<access>/<yyyymmdd>/<region>/ec2/aws4_request, SignedHeaders=...,
  Signature=...`` header and the ``X-Amz-Date`` header (or ``Date``). Any region is
  accepted, and the service must be ``ec2``. The canonical request holds the method, the
  path (URI-encoded once more), the query, the signed headers (``host`` required) and the
  SHA-256 of the body. ``X-Amz-Content-SHA256``, when sent, must be that hash.
* Not supported: versions 0 and 1, ``UNSIGNED-PAYLOAD``, pre-signed (query-string) v4
  and session tokens. Each gets AuthFailure.

The canonical forms are common.signing's, the ones every client and server here use.

Trusted requests
----------------
An ``HttpRequest`` made in-process (the simulation's workload, common.ec2.inprocess)
may name its caller in ``trusted_access_key`` instead of signing: the request is then
not checked for time or signature, but is still authenticated through the directory
(so the directory lookup runs) and authorized. This is safe because nothing that reads
the network sets the field: the web server (real/api.py) builds each request from the
method, path, query, headers and body only, and a header or parameter of that name is
just an unknown header or parameter.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl

from common import signing
from common.ec2.errors import MissingParameter
from common.errors import AuthFailure, InvalidParameterValue

API_VERSION = "2010-08-31"

#: Oldest a request timestamp may be (AWS's 15 minutes).
MAX_AGE = 15 * 60.0
#: Furthest ahead a request timestamp may be: client clock skew (module docstring).
MAX_FUTURE = 5 * 60.0
#: Most parameters in one request; the web server bounds the body's size too.
MAX_PARAMS = 5000
#: Longest access key we pass to the directory (2010's were 36-character uuids).
MAX_ACCESS_KEY = 256

V4_SERVICE = "ec2"

_AMZ_DATE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class HttpRequest:
    """What the web server read. ``path`` is the path as sent (still percent-encoded),
    ``query`` the raw query string, ``headers`` has lower-case names.

    ``trusted_access_key`` is for requests made in-process only (module docstring,
    "Trusted requests"): the web server never sets it."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    request_id: str = ""
    remote_address: str = ""
    trusted_access_key: str = ""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    action: str = ""
    code: str = ""  # the EC2 error code, "" on success
    user: str = ""  # who it was for, once authenticated (for the access log)
    content_type: str = "text/xml; charset=UTF-8"


@dataclass(frozen=True)
class Credentials:
    """The signature a request carries, ready to check against a secret."""

    version: int
    access_key: str
    signature: str
    string_to_sign: str
    timestamp: float | None = None  # seconds since the epoch (UTC)
    expires: float | None = None  # v2 ``Expires`` instead of a timestamp
    algorithm: str = "HmacSHA256"  # v2: HmacSHA256 | HmacSHA1; v4: AWS4-HMAC-SHA256
    scope: tuple[str, str, str] = ("", "", "")  # v4: date, region, service

    def verify(self, secret: str) -> bool:
        if self.version == 2:
            return signing.v2_matches(secret, self.string_to_sign, self.algorithm, self.signature)
        date, region, service = self.scope
        return signing.v4_matches(secret, date, region, service, self.string_to_sign, self.signature)


@dataclass(frozen=True)
class Message:
    """A parsed request. ``credentials`` is None for a trusted in-process request."""

    action: str
    params: Mapping[str, str]
    credentials: Credentials | None
    access_key: str


def _decode_pairs(text: str, where: str) -> list[tuple[str, str]]:
    if "%" not in text and "+" not in text and text.count("&") < MAX_PARAMS:
        # Nothing to decode (what clients mostly send): parse_qsl's answer, cheaper.
        return [(name, value) for name, _, value in (part.partition("=") for part in text.split("&") if part)]
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                         max_num_fields=MAX_PARAMS)
    except UnicodeDecodeError:
        raise InvalidParameterValue(f"the {where} is not UTF-8 once percent-decoded") from None
    except ValueError as e:  # too many fields
        raise InvalidParameterValue(f"the {where} has too many parameters: {e}") from None


def parse_params(request: HttpRequest) -> dict[str, str]:
    """The request's parameters: the query string plus, for a form POST, the body.
    Raises InvalidParameterValue for a name given twice, text that is not UTF-8, or a
    body of another content type."""
    pairs = _decode_pairs(request.query, "query string")
    if request.method == "POST" and request.body:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise InvalidParameterValue(
                f"a POST body must be application/x-www-form-urlencoded, not {content_type or 'untyped'}"
            )
        try:
            text = request.body.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidParameterValue("the form body has bytes that are not percent-encoded") from None
        pairs += _decode_pairs(text, "form body")
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise InvalidParameterValue(f"parameter {name!r} is given more than once"[:300])
        params[name] = value
    return params


def _iso_time(text: str, name: str) -> float:
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise AuthFailure(f"{name} {text!r} is not an ISO 8601 time"[:300]) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _check_access_key(access: str) -> str:
    if not access or len(access) > MAX_ACCESS_KEY or _CONTROL.search(access):
        raise AuthFailure("the access key is missing, too long or has control characters")
    return access


def credentials_v2(request: HttpRequest, params: Mapping[str, str]) -> Credentials:
    """The version 2 signature in the parameters. Raises AuthFailure."""
    version = params.get("SignatureVersion")
    if version != "2":
        raise AuthFailure(f"signature version {version!r} is not supported (use 2 or 4)"[:200])
    method = params.get("SignatureMethod", "")
    if method not in signing.V2_METHODS:
        raise AuthFailure(f"SignatureMethod must be HmacSHA256 or HmacSHA1, not {method!r}"[:200])
    signature = params.get("Signature")
    if not signature:
        raise AuthFailure("the request has no Signature")
    timestamp, expires = params.get("Timestamp"), params.get("Expires")
    if (timestamp is None) == (expires is None):
        raise AuthFailure("a version 2 request needs exactly one of Timestamp and Expires")
    return Credentials(
        version=2,
        access_key=_check_access_key(params.get("AWSAccessKeyId", "")),
        signature=signature,
        string_to_sign=signing.string_to_sign_v2(request.method, request.headers.get("host", ""), request.path,
                                                 params),
        timestamp=_iso_time(timestamp, "Timestamp") if timestamp is not None else None,
        expires=_iso_time(expires, "Expires") if expires is not None else None,
        algorithm=method,
    )


def _request_time(headers: Mapping[str, str]) -> tuple[str, float]:
    """-> (X-Amz-Date text, seconds) from ``X-Amz-Date``, else ``Date``. Raises AuthFailure."""
    amz_date = headers.get("x-amz-date")
    if amz_date is None and "date" in headers:
        try:
            moment = parsedate_to_datetime(headers["date"])
        except (TypeError, ValueError):
            raise AuthFailure("the Date header is not an HTTP date") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        amz_date = moment.astimezone(datetime.UTC).strftime(signing.AMZ_DATE_FORMAT)
    if amz_date is None or not _AMZ_DATE.match(amz_date):
        raise AuthFailure("a version 4 request needs an X-Amz-Date header of the form yyyymmddThhmmssZ")
    try:  # the digits by position (the pattern above holds): strptime costs ~100x more
        if len(amz_date) != 16:  # "$" lets a final newline through
            raise ValueError(amz_date)
        moment = datetime.datetime(int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8]), int(amz_date[9:11]),
                                   int(amz_date[11:13]), int(amz_date[13:15]), tzinfo=datetime.UTC)
    except ValueError:
        raise AuthFailure(f"X-Amz-Date {amz_date!r} is not a time") from None
    return amz_date, moment.timestamp()


def credentials_v4(request: HttpRequest, authorization: str, service_name: str = V4_SERVICE) -> Credentials:
    """The version 4 signature of the ``Authorization`` header. Raises AuthFailure."""
    try:
        auth = signing.parse_v4_authorization(authorization, service_name)
    except signing.SignatureError as e:
        raise AuthFailure(str(e)) from None
    amz_date, timestamp = _request_time(request.headers)
    if auth.date != amz_date[:8]:
        raise AuthFailure("the credential scope's date is not the request's date")
    for name in auth.signed_headers:
        if name not in request.headers:
            raise AuthFailure(f"signed header {name[:60]!r} is not in the request")
    body_hash = hashlib.sha256(request.body).hexdigest()
    claimed = request.headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != body_hash:
        if claimed == signing.UNSIGNED_PAYLOAD:
            raise AuthFailure("UNSIGNED-PAYLOAD is not accepted: the body carries the parameters")
        raise AuthFailure("X-Amz-Content-SHA256 is not the SHA-256 of the body")
    _, to_sign = auth.string_to_sign(request.method, request.path, request.query, request.headers, body_hash,
                                     amz_date)
    return Credentials(
        version=4, access_key=_check_access_key(auth.access_key), signature=auth.signature, string_to_sign=to_sign,
        timestamp=timestamp, algorithm=signing.V4_ALGORITHM, scope=(auth.date, auth.region, auth.service),
    )


def parse_message(request: HttpRequest, service: str = V4_SERVICE) -> Message:
    """Parameters, action and credentials of a request. Pure; raises
    InvalidParameterValue, MissingParameter or AuthFailure. ``service`` is the v4
    credential scope's service (``ec2``; other values are for AWS's test vectors).
    A trusted request (module docstring) has no credentials to check."""
    params = parse_params(request)
    authorization = request.headers.get("authorization")
    credentials: Credentials | None
    if request.trusted_access_key:
        credentials, access_key = None, _check_access_key(request.trusted_access_key)
    elif authorization is not None:
        credentials = credentials_v4(request, authorization, service)
    elif "X-Amz-Algorithm" in params:
        raise AuthFailure("pre-signed (query string) version 4 requests are not supported")
    elif "Signature" in params or "AWSAccessKeyId" in params:
        credentials = credentials_v2(request, params)
    else:
        raise AuthFailure("the request is not signed (no Authorization header, no Signature)")
    if credentials is not None:
        access_key = credentials.access_key
    action = params.get("Action")
    if not action:
        raise MissingParameter("the request must contain the parameter Action")
    return Message(action, params, credentials, access_key)


def check_time(credentials: Credentials, now: float, max_age: float = MAX_AGE, max_future: float = MAX_FUTURE):
    """Raise AuthFailure unless the request is fresh (see the module docstring)."""
    if credentials.timestamp is not None:
        age = now - credentials.timestamp
        if age > max_age:
            raise AuthFailure(f"request has expired: its timestamp is {age:.0f} s old (limit {max_age:.0f} s)")
        if -age > max_future:
            raise AuthFailure(f"request timestamp is {-age:.0f} s in the future (limit {max_future:.0f} s)")
    if credentials.expires is not None:
        if now > credentials.expires:
            raise AuthFailure("request has expired: its Expires time has passed")
        if credentials.expires - now > max_age:
            raise AuthFailure(f"Expires may be at most {max_age:.0f} s ahead")
