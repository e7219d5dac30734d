"""The EC2 Query API (2010-08-31): request in, workflow run, XML out. Pure.

Theory of operation
-------------------
``Ec2Api.handle(request)`` is a generator like every manager method. It takes an
``HttpRequest`` (what the web server read: method, raw path, query, headers, body,
request id) and returns an ``HttpResponse`` (status and XML). It never raises a
``NovaError``: every refusal becomes the EC2 error document. Each request goes through
the same steps, and parsing is done before any effect:

1. **Parse.** Read the parameters from the query string and, for a form POST, the body.
   A name given twice is refused. Take the action and the credentials (signature
   version 2 in the parameters, or version 4 in the ``Authorization`` header). Check the
   action's own parameters (types, bounds, ids, base64 user data, known image and
   instance type). All of this is pure. An unknown action is refused at once
   (InvalidAction). Any other parameter error is kept and raised only after step 3, so
   a caller who cannot authenticate learns nothing beyond "AuthFailure".
2. **Time.** ``Now``. A ``Timestamp``/``X-Amz-Date`` more than 15 minutes old, more
   than ``MAX_FUTURE`` seconds ahead, or an ``Expires`` that has passed gives
   **AuthFailure** (401; we answer AuthFailure, not RequestExpired, with a message
   that says the request expired). ``MAX_FUTURE`` is 5 minutes, not zero: clients stamp
   whole seconds from their own clock, and hosts a little out of step must still work.
   It is well under 15 minutes, so a captured request can be replayed for at most 20
   minutes in all.
3. **Authenticate and authorize.** ``directory.authenticate(access)`` (access is
   ``<access key>:<project>``) gives the user and the project. The signature is then
   checked against the user's secret key with ``hmac.compare_digest``. Last comes
   ``directory.authorize(user, project, action)``.
4. **Validate against the store**, with reads only (does the key pair, instance or
   address exist, and is it the caller's?). Then run the CloudController workflow and
   render its result. A request refused in steps 1-4 has written nothing and sent no
   message, so bad input creates nothing.

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

Status codes: 400 for client errors, 401 for AuthFailure, 403 for
UnauthorizedOperation, 412 for DryRunOperation, 503 when a service we need is
unavailable or did not answer in time, and 500 for internal errors. Capacity errors
(InsufficientAddressCapacity and the like) are 400. They are not 5xx, so boto3 does
not retry a pool that is empty (reliability C4: "a 4xx at the API, and no 500").
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import inspect
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from common import images as image_registry
from common import instances, keypairs, keys, lifecycle, rpc
from common.cloud import MAX_COUNT_PER_REQUEST
from common.context import RequestContext
from common.effects import Call, HGetAll, HSet, Now
from common.errors import (
    AuthFailure,
    InvalidParameterValue,
    NotFound,
    NovaError,
    QuotaExceeded,
    RemoteError,
    from_remote,
)
from common.keypairs import KeyPairNotFound

NAMESPACE = "http://ec2.amazonaws.com/doc/2010-08-31/"
API_VERSION = "2010-08-31"

#: Oldest a request timestamp may be (AWS's 15 minutes).
MAX_AGE = 15 * 60.0
#: Furthest ahead a request timestamp may be: client clock skew (module docstring).
MAX_FUTURE = 5 * 60.0
#: EC2's bound on user data, in bytes before base64.
MAX_USER_DATA_BYTES = 16 * 1024
#: Most items of one list parameter (InstanceId.1 .. InstanceId.N).
MAX_LIST_ITEMS = 1000
#: Most parameters in one request; the web server bounds the body's size too.
MAX_PARAMS = 5000
#: Longest access key we pass to the directory (2010's were 36-character uuids).
MAX_ACCESS_KEY = 256
#: Owner of the images named in the cloud's configuration.
SYSTEM_OWNER = "system"
#: Seconds GetConsoleOutput waits for the compute host.
CONSOLE_TIMEOUT = 10.0

V4_ALGORITHM = "AWS4-HMAC-SHA256"
V4_SERVICE = "ec2"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

#: Parameters any action may carry: the envelope, the v2 signature, DryRun.
COMMON_PARAMS = frozenset(
    {"Action", "Version", "AWSAccessKeyId", "SignatureVersion", "SignatureMethod", "Signature", "Timestamp",
     "Expires", "DryRun"}
)

#: Our instance states as EC2 names and codes. ``error`` has no EC2 counterpart; it is
#: shown by its own name with the pending code.
EC2_STATES = {
    lifecycle.SCHEDULING: ("pending", 0),
    lifecycle.SPAWNING: ("pending", 0),
    lifecycle.LAUNCHING: ("pending", 0),
    lifecycle.RUNNING: ("running", 16),
    lifecycle.REBOOTING: ("running", 16),
    lifecycle.SHUTTING_DOWN: ("shutting-down", 32),
    lifecycle.DELETED: ("terminated", 48),
    lifecycle.ERROR: ("error", 0),
}

_INSTANCE_ID = re.compile(r"^i-[0-9a-z]{1,64}$")
_IMAGE_ID = re.compile(r"^[a-z]{3}-[0-9A-Za-z._-]{1,64}$")
_COUNT = re.compile(r"^[0-9]{1,9}$")
_LIST_PARAM = re.compile(r"^([A-Za-z][A-Za-z0-9]*)\.([1-9][0-9]{0,5})$")
_AMZ_DATE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# ---------------------------------------------------------------------------
# Errors of the API itself (each with its EC2 code).


class MissingParameter(InvalidParameterValue):
    code = "MissingParameter"


class UnknownParameter(InvalidParameterValue):
    code = "UnknownParameter"


class InvalidAction(InvalidParameterValue):
    code = "InvalidAction"


class MalformedInstanceId(InvalidParameterValue):
    code = "InvalidInstanceID.Malformed"


class MalformedAddress(InvalidParameterValue):
    code = "InvalidAddress.Malformed"


class AddressNotFound(NotFound):
    code = "InvalidAddress.NotFound"


ImageNotFound = image_registry.ImageNotFound


class DryRunOperation(NovaError):
    """DryRun=true and the caller may do it: EC2's "would have succeeded"."""

    code = "DryRunOperation"


# ---------------------------------------------------------------------------
# Requests and responses.


@dataclass(frozen=True)
class HttpRequest:
    """What the web server read. ``path`` is the path as sent (still percent-encoded),
    ``query`` the raw query string, ``headers`` has lower-case names."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    request_id: str = ""
    remote_address: str = ""


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
            digest = hashlib.sha256 if self.algorithm == "HmacSHA256" else hashlib.sha1
            mac = hmac.new(secret.encode("utf-8"), self.string_to_sign.encode("utf-8"), digest).digest()
            expected = base64.b64encode(mac).decode("ascii")
        else:
            date, region, service = self.scope
            key = v4_signing_key(secret, date, region, service)
            expected = hmac.new(key, self.string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode("ascii"), self.signature.encode("ascii", "replace"))


@dataclass(frozen=True)
class Message:
    action: str
    params: Mapping[str, str]
    credentials: Credentials


def v4_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def _rfc3986(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query_v2(params: Mapping[str, str]) -> str:
    """Every parameter but ``Signature``, sorted by name (byte order), RFC 3986 encoded."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    return "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in pairs)


def _canonical_query_v4(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else ():
        name, _, value = part.partition("=")
        pairs.append((_rfc3986(unquote(name)), _rfc3986(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _decode_pairs(text: str, where: str) -> list[tuple[str, str]]:
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
    if not access or len(access) > MAX_ACCESS_KEY or any(ord(c) < 0x20 or ord(c) == 0x7F for c in access):
        raise AuthFailure("the access key is missing, too long or has control characters")
    return access


def _credentials_v2(request: HttpRequest, params: Mapping[str, str]) -> Credentials:
    version = params.get("SignatureVersion")
    if version != "2":
        raise AuthFailure(f"signature version {version!r} is not supported (use 2 or 4)"[:200])
    method = params.get("SignatureMethod", "")
    if method not in ("HmacSHA256", "HmacSHA1"):
        raise AuthFailure(f"SignatureMethod must be HmacSHA256 or HmacSHA1, not {method!r}"[:200])
    signature = params.get("Signature")
    if not signature:
        raise AuthFailure("the request has no Signature")
    timestamp, expires = params.get("Timestamp"), params.get("Expires")
    if (timestamp is None) == (expires is None):
        raise AuthFailure("a version 2 request needs exactly one of Timestamp and Expires")
    host = request.headers.get("host", "").lower()
    string_to_sign = f"{request.method}\n{host}\n{request.path or '/'}\n{canonical_query_v2(params)}"
    return Credentials(
        version=2,
        access_key=_check_access_key(params.get("AWSAccessKeyId", "")),
        signature=signature,
        string_to_sign=string_to_sign,
        timestamp=_iso_time(timestamp, "Timestamp") if timestamp is not None else None,
        expires=_iso_time(expires, "Expires") if expires is not None else None,
        algorithm=method,
    )


def _credentials_v4(request: HttpRequest, authorization: str, service_name: str = V4_SERVICE) -> Credentials:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != V4_ALGORITHM:
        raise AuthFailure(f"unsupported Authorization scheme {algorithm[:40]!r} (use {V4_ALGORITHM})")
    fields = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name in fields:
            raise AuthFailure("malformed Authorization header")
        fields[name] = value.strip()
    try:
        credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError as e:
        raise AuthFailure(f"the Authorization header has no {e.args[0]}") from None
    pieces = credential.rsplit("/", 4)
    if len(pieces) != 5 or pieces[4] != "aws4_request":
        raise AuthFailure("the Credential must be <access key>/<date>/<region>/<service>/aws4_request")
    access, date, region, service, _ = pieces
    if service != service_name:
        raise AuthFailure(f"the credential scope names service {service[:40]!r}; this is {service_name}")
    amz_date = request.headers.get("x-amz-date")
    if amz_date is None and "date" in request.headers:
        try:
            moment = parsedate_to_datetime(request.headers["date"])
        except (TypeError, ValueError):
            raise AuthFailure("the Date header is not an HTTP date") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        amz_date = moment.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    if amz_date is None or not _AMZ_DATE.match(amz_date):
        raise AuthFailure("a version 4 request needs an X-Amz-Date header of the form yyyymmddThhmmssZ")
    try:
        moment = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise AuthFailure(f"X-Amz-Date {amz_date!r} is not a time") from None
    if date != amz_date[:8]:
        raise AuthFailure("the credential scope's date is not the request's date")
    names = signed.split(";")
    if names != sorted(names) or any(n != n.lower() or not n for n in names) or "host" not in names:
        raise AuthFailure("SignedHeaders must be lower-case, sorted, and include host")
    canonical_headers = []
    for name in names:
        if name not in request.headers:
            raise AuthFailure(f"signed header {name[:60]!r} is not in the request")
        canonical_headers.append(f"{name}:{' '.join(request.headers[name].split())}\n")
    body_hash = hashlib.sha256(request.body).hexdigest()
    claimed = request.headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != body_hash:
        if claimed == UNSIGNED_PAYLOAD:
            raise AuthFailure("UNSIGNED-PAYLOAD is not accepted: the body carries the parameters")
        raise AuthFailure("X-Amz-Content-SHA256 is not the SHA-256 of the body")
    canonical_request = "\n".join((
        request.method,
        quote(request.path or "/", safe="/~"),
        _canonical_query_v4(request.query),
        "".join(canonical_headers),
        signed,
        body_hash,
    ))
    string_to_sign = "\n".join((
        V4_ALGORITHM, amz_date, f"{date}/{region}/{service}/aws4_request",
        hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
    ))
    if not _HEX64.match(signature):
        raise AuthFailure("the Signature must be 64 lower-case hex digits")
    return Credentials(
        version=4, access_key=_check_access_key(access), signature=signature, string_to_sign=string_to_sign,
        timestamp=moment.timestamp(), algorithm=V4_ALGORITHM, scope=(date, region, service),
    )


def parse_message(request: HttpRequest, service: str = V4_SERVICE) -> Message:
    """Parameters, action and credentials of a request. Pure; raises
    InvalidParameterValue, MissingParameter or AuthFailure. ``service`` is the v4
    credential scope's service (``ec2``; other values are for AWS's test vectors)."""
    params = parse_params(request)
    authorization = request.headers.get("authorization")
    if authorization is not None:
        credentials = _credentials_v4(request, authorization, service)
    elif "X-Amz-Algorithm" in params:
        raise AuthFailure("pre-signed (query string) version 4 requests are not supported")
    elif "Signature" in params or "AWSAccessKeyId" in params:
        credentials = _credentials_v2(request, params)
    else:
        raise AuthFailure("the request is not signed (no Authorization header, no Signature)")
    action = params.get("Action")
    if not action:
        raise MissingParameter("the request must contain the parameter Action")
    return Message(action, params, credentials)


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


# ---------------------------------------------------------------------------
# Parameters per action.


@dataclass(frozen=True)
class Args:
    """An action's checked parameters."""

    values: Mapping[str, Any]
    dry_run: bool = False

    def __getitem__(self, name):
        return self.values[name]

    def get(self, name, default=None):
        return self.values.get(name, default)


class _Params:
    """One action's parameters, checked against what it accepts."""

    def __init__(self, action: str, params: Mapping[str, str], scalars=(), lists=()):
        self.action = action
        self.scalars: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        indexed: dict[str, list[tuple[int, str]]] = {}
        for name, value in params.items():
            if name in COMMON_PARAMS:
                continue
            if name in scalars:
                self.scalars[name] = value
                continue
            match = _LIST_PARAM.match(name)
            if match and match.group(1) in lists:
                indexed.setdefault(match.group(1), []).append((int(match.group(2)), value))
                continue
            if name.startswith("Filter."):
                raise UnknownParameter(f"{action}: filters are not supported")
            raise UnknownParameter(f"{action} does not take the parameter {name[:100]!r}")
        for name, items in indexed.items():
            if len(items) > MAX_LIST_ITEMS:
                raise InvalidParameterValue(f"{name}.N: at most {MAX_LIST_ITEMS} items")
            self.lists[name] = [value for _, value in sorted(items)]
        dry = params.get("DryRun", "false").lower()
        if dry not in ("true", "false"):
            raise InvalidParameterValue(f"DryRun must be true or false, got {params['DryRun'][:20]!r}")
        self.dry_run = dry == "true"

    def required(self, name: str) -> str:
        value = self.scalars.get(name)
        if value is None or value == "":
            raise MissingParameter(f"{self.action}: the request must contain the parameter {name}")
        return value

    def optional(self, name: str, default: str = "") -> str:
        return self.scalars.get(name, default)

    def list(self, name: str) -> list[str]:
        return self.lists.get(name, [])

    def args(self, **values) -> Args:
        return Args(values, self.dry_run)


def _instance_id(value: str, name: str = "InstanceId") -> str:
    if not _INSTANCE_ID.match(value):
        raise MalformedInstanceId(f"{name}: invalid id {value[:80]!r}")
    return value


def _instance_ids(values: list[str], name: str = "InstanceId") -> tuple[str, ...]:
    return tuple(dict.fromkeys(_instance_id(v, f"{name}.N") for v in values))


def _address(value: str, name: str = "PublicIp") -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise MalformedAddress(f"{name}: {value[:80]!r} is not an IPv4 address") from None


def _count(value: str, name: str) -> int:
    if not _COUNT.match(value) or int(value) < 1:
        raise InvalidParameterValue(f"{name} must be a positive integer, got {value[:20]!r}")
    return int(value)


def _user_data(value: str) -> str:
    """The base64 text, checked: valid, and at most MAX_USER_DATA_BYTES once decoded."""
    limit = MAX_USER_DATA_BYTES
    if len(value) > 4 * ((limit + 2) // 3):
        raise InvalidParameterValue(f"UserData is over the limit of {limit} bytes (before base64)")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterValue("UserData is not valid base64") from None
    if len(data) > limit:
        raise InvalidParameterValue(f"UserData is {len(data)} bytes, over the limit of {limit}")
    return value


def parse_run_instances(p: _Params, api: Ec2Api) -> Args:
    image_id = p.required("ImageId")
    if not _IMAGE_ID.match(image_id) or image_id not in api.image_ids():
        raise ImageNotFound(f"the image id {image_id[:80]!r} does not exist")
    instance_type = p.optional("InstanceType", api.default_instance_type)
    if instance_type not in api.cloud.config.instance_types:
        raise InvalidParameterValue(
            f"InstanceType {instance_type[:40]!r} is not one of {', '.join(sorted(api.cloud.config.instance_types))}"
        )
    min_count = _count(p.required("MinCount"), "MinCount")
    max_count = _count(p.required("MaxCount"), "MaxCount")
    if min_count > max_count:
        raise InvalidParameterValue(f"MinCount ({min_count}) is greater than MaxCount ({max_count})")
    if max_count > MAX_COUNT_PER_REQUEST:
        raise InvalidParameterValue(f"MaxCount {max_count} is over the limit of {MAX_COUNT_PER_REQUEST}")
    key_name = p.optional("KeyName")
    if key_name:
        keypairs.check_name(key_name)
    zone = p.optional("Placement.AvailabilityZone")
    if zone and zone != api.zone:
        raise InvalidParameterValue(f"availability zone {zone[:40]!r} does not exist (there is {api.zone!r})")
    for group in p.list("SecurityGroup"):
        if group != "default":
            raise InvalidParameterValue(f"security group {group[:40]!r}: only 'default' exists")
    return p.args(image_id=image_id, instance_type=instance_type, min_count=min_count, max_count=max_count,
                  key_name=key_name, user_data=_user_data(p.optional("UserData")))


def parse_instance_list(p: _Params, api) -> Args:
    return p.args(instance_ids=_instance_ids(p.list("InstanceId")))


def parse_required_instance_list(p: _Params, api) -> Args:
    ids = _instance_ids(p.list("InstanceId"))
    if not ids:
        raise MissingParameter(f"{p.action}: the request must contain the parameter InstanceId.1")
    return p.args(instance_ids=ids)


def parse_describe_images(p: _Params, api) -> Args:
    for image_id in p.list("ImageId"):
        if not _IMAGE_ID.match(image_id):
            raise ImageNotFound(f"the image id {image_id[:80]!r} does not exist")
    return p.args(image_ids=tuple(dict.fromkeys(p.list("ImageId"))), owners=tuple(p.list("Owner")))


def parse_create_key_pair(p: _Params, api) -> Args:
    name = keypairs.check_name(p.required("KeyName"))
    key_type = p.optional("KeyType", "rsa")
    if key_type not in keypairs.KEY_TYPES:
        raise InvalidParameterValue(f"KeyType must be one of {', '.join(keypairs.KEY_TYPES)}, got {key_type[:20]!r}")
    key_format = p.optional("KeyFormat", "pem")
    if key_format != "pem":
        raise InvalidParameterValue(f"KeyFormat must be pem, got {key_format[:20]!r}")
    return p.args(key_name=name, key_type=key_type)


def parse_describe_key_pairs(p: _Params, api) -> Args:
    names = tuple(dict.fromkeys(keypairs.check_name(n, "KeyName.N") for n in p.list("KeyName")))
    return p.args(key_names=names)


def parse_delete_key_pair(p: _Params, api) -> Args:
    return p.args(key_name=keypairs.check_name(p.required("KeyName")))


def parse_allocate_address(p: _Params, api) -> Args:
    domain = p.optional("Domain", "standard")
    if domain != "standard":
        raise InvalidParameterValue(f"Domain must be standard (there is no VPC), got {domain[:20]!r}")
    return p.args()


def parse_associate_address(p: _Params, api) -> Args:
    return p.args(public_ip=_address(p.required("PublicIp")), instance_id=_instance_id(p.required("InstanceId")))


def parse_public_ip(p: _Params, api) -> Args:
    return p.args(public_ip=_address(p.required("PublicIp")))


def parse_describe_addresses(p: _Params, api) -> Args:
    return p.args(public_ips=tuple(dict.fromkeys(_address(v, "PublicIp.N") for v in p.list("PublicIp"))))


def parse_describe_zones(p: _Params, api) -> Args:
    names = tuple(dict.fromkeys(p.list("ZoneName")))
    for name in names:
        if name != api.zone:
            raise InvalidParameterValue(f"availability zone {name[:40]!r} does not exist (there is {api.zone!r})")
    return p.args(zone_names=names)


def parse_get_console_output(p: _Params, api) -> Args:
    return p.args(instance_id=_instance_id(p.required("InstanceId")))


@dataclass(frozen=True)
class ActionSpec:
    scalars: frozenset
    lists: frozenset
    parse: Callable[[_Params, Ec2Api], Args]


def _spec(parse, scalars=(), lists=()):
    return ActionSpec(frozenset(scalars), frozenset(lists), parse)


#: Every action: the parameters it accepts (beyond COMMON_PARAMS) and its parser.
ACTIONS: dict[str, ActionSpec] = {
    "RunInstances": _spec(
        parse_run_instances,
        {"ImageId", "InstanceType", "MinCount", "MaxCount", "KeyName", "UserData", "ClientToken",
         "Placement.AvailabilityZone"},
        {"SecurityGroup"},
    ),
    "DescribeInstances": _spec(parse_instance_list, lists={"InstanceId"}),
    "TerminateInstances": _spec(parse_required_instance_list, lists={"InstanceId"}),
    "RebootInstances": _spec(parse_required_instance_list, lists={"InstanceId"}),
    "DescribeImages": _spec(parse_describe_images, lists={"ImageId", "Owner", "ExecutableBy"}),
    "CreateKeyPair": _spec(parse_create_key_pair, {"KeyName", "KeyType", "KeyFormat"}),
    "DescribeKeyPairs": _spec(parse_describe_key_pairs, lists={"KeyName"}),
    "DeleteKeyPair": _spec(parse_delete_key_pair, {"KeyName"}),
    "AllocateAddress": _spec(parse_allocate_address, {"Domain"}),
    "AssociateAddress": _spec(parse_associate_address, {"PublicIp", "InstanceId"}),
    "DisassociateAddress": _spec(parse_public_ip, {"PublicIp"}),
    "ReleaseAddress": _spec(parse_public_ip, {"PublicIp"}),
    "DescribeAddresses": _spec(parse_describe_addresses, lists={"PublicIp"}),
    "DescribeAvailabilityZones": _spec(parse_describe_zones, lists={"ZoneName"}),
    "GetConsoleOutput": _spec(parse_get_console_output, {"InstanceId"}),
}


def parse_args(action: str, params: Mapping[str, str], api: Ec2Api) -> Args:
    """An action's parameters, checked (pure). Raises InvalidAction for an action we do
    not have, and InvalidParameterValue (or a subclass with a more precise code)."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise InvalidAction(f"the action {action[:60]!r} is not valid for this web service")
    return spec.parse(_Params(action, params, spec.scalars, spec.lists), api)


# ---------------------------------------------------------------------------
# XML.


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = _XML_INVALID.sub("\ufffd", str(value))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _element(name: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        inner = "".join(_element(k, v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        inner = "".join(_element("item", v) for v in value)
    else:
        inner = _text(value)
    return f"<{name}>{inner}</{name}>" if inner else f"<{name}/>"


def render_response(action: str, body: Mapping[str, Any], request_id: str) -> bytes:
    """``<ActionResponse xmlns=2010-08-31><requestId/>...`` with dicts as nested elements,
    lists as ``<item>`` children, None left out."""
    inner = _element("requestId", request_id) + "".join(_element(k, v) for k, v in body.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<{action}Response xmlns="{NAMESPACE}">{inner}</{action}Response>').encode()


def render_error(code: str, message: str, request_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{_text(code)}</Code>'
            f"<Message>{_text(message)}</Message></Error></Errors>"
            f"<RequestID>{_text(request_id)}</RequestID></Response>").encode()


_SERVER_ERRORS = {"ServiceUnavailable": 503, "RequestTimeout": 503, "InternalError": 500}
_AUTH_ERRORS = {"AuthFailure": 401, "UnauthorizedOperation": 403, "DryRunOperation": 412}


def http_status(code: str) -> int:
    """400 unless the code is an auth, dry-run or server error."""
    return _AUTH_ERRORS.get(code) or _SERVER_ERRORS.get(code) or 400


def error_code(action: str, error: NovaError) -> str:
    """The EC2 code to answer ``error`` with in ``action`` (some workflow errors are
    shared by instances and addresses; EC2 names them per resource)."""
    if isinstance(error, QuotaExceeded) and action == "AllocateAddress":
        return "AddressLimitExceeded"
    if (type(error) is NotFound and action in ("AssociateAddress", "DisassociateAddress", "ReleaseAddress")
            and str(error).startswith("address")):
        return AddressNotFound.code
    if isinstance(error, RemoteError):
        return "InternalError"
    return error.code


def iso8601(seconds: float | str | None) -> str | None:
    if seconds in (None, ""):
        return None
    moment = datetime.datetime.fromtimestamp(float(seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def console_text(record: Mapping[str, str], source: str) -> str:
    """The fixed-format console output for an instance, from what ``source`` knows."""
    return (
        f"novalab console of {record['id']} ({record.get('instance_type', '')}, image "
        f"{record.get('image_id', '')}) on {record.get('host') or 'no host'}\n"
        f"state: {record.get('state', '')}; address: {record.get('fixed_ip') or 'none'}\n"
        f"(console output is not captured by this hypervisor; reported by {source})\n"
    )


# ---------------------------------------------------------------------------
# The API.


class Ec2Api:
    """The EC2 actions over a CloudController and a directory.

    ``directory`` provides the generators ``authenticate(access) -> (user, project)``
    and ``authorize(user, project, action)``. ``region`` and ``zone`` are what
    DescribeAvailabilityZones answers (2010: one zone, ``nova``).
    """

    def __init__(self, cloud, directory, *, region: str = "nova", zone: str = "nova",
                 default_instance_type: str = "m1.small", console_timeout: float = CONSOLE_TIMEOUT,
                 max_age: float = MAX_AGE, max_future: float = MAX_FUTURE):
        self.cloud = cloud
        self.directory = directory
        self.region = region
        self.zone = zone
        self.default_instance_type = default_instance_type
        self.console_timeout = console_timeout
        self.max_age = max_age
        self.max_future = max_future
        try:
            accepted: Mapping[str, object] = inspect.signature(cloud.run_instances).parameters
        except (TypeError, ValueError):
            accepted = {}
        #: Whether CloudController.run_instances stores key_name/user_data itself.
        self._run_takes_extras = "key_name" in accepted and "user_data" in accepted
        self._handlers = {
            "RunInstances": self.run_instances,
            "DescribeInstances": self.describe_instances,
            "TerminateInstances": self.terminate_instances,
            "RebootInstances": self.reboot_instances,
            "DescribeImages": self.describe_images,
            "CreateKeyPair": self.create_key_pair,
            "DescribeKeyPairs": self.describe_key_pairs,
            "DeleteKeyPair": self.delete_key_pair,
            "AllocateAddress": self.allocate_address,
            "AssociateAddress": self.associate_address,
            "DisassociateAddress": self.disassociate_address,
            "ReleaseAddress": self.release_address,
            "DescribeAddresses": self.describe_addresses,
            "DescribeAvailabilityZones": self.describe_availability_zones,
            "GetConsoleOutput": self.get_console_output,
        }
        assert set(self._handlers) == set(ACTIONS)

    def image_ids(self) -> tuple[str, ...]:
        return tuple(self.cloud.config.images)

    # -- one request ------------------------------------------------------------------

    def handle(self, request: HttpRequest):
        """-> HttpResponse. Never raises a NovaError (module docstring)."""
        action = user_name = ""
        try:
            message = parse_message(request)
            action = message.action
            try:
                args, bad = parse_args(action, message.params, self), None
            except InvalidAction:
                raise
            except NovaError as e:
                args, bad = None, e
            now = yield Now()
            check_time(message.credentials, now, self.max_age, self.max_future)
            user, project = yield from self.directory.authenticate(message.credentials.access_key)
            if not message.credentials.verify(user.secret_key):
                raise AuthFailure("the request signature does not match (check the secret key and the signing)")
            user_name = user.name
            yield from self.directory.authorize(user, project, action)
            if bad is not None:
                raise bad
            assert args is not None  # parse_args returned it when bad is None
            if args.dry_run:
                raise DryRunOperation("the request would have succeeded, but DryRun is set")
            context = RequestContext(
                user_id=user.name, project_id=project_id(project), is_admin=bool(user.is_admin),
                request_id=request.request_id, timestamp=now, remote_address=request.remote_address,
            )
            body = yield from self._handlers[action](context, args)
        except NovaError as e:
            code = error_code(action, e)
            return HttpResponse(http_status(code), render_error(code, str(e), request.request_id), action, code,
                                user_name)
        return HttpResponse(200, render_response(action, body, request.request_id), action, "", user_name)

    # -- instances ----------------------------------------------------------------------

    def run_instances(self, context, a: Args):
        if a["key_name"] and (yield from keypairs.get(context.user_id, a["key_name"])) is None:
            raise KeyPairNotFound(f"the key pair {a['key_name']!r} does not exist")
        extras = {"key_name": a["key_name"], "user_data": a["user_data"]}
        if self._run_takes_extras:
            reservation = yield from self.cloud.run_instances(
                context, a["image_id"], a["instance_type"], a["min_count"], a["max_count"], **extras)
        else:
            reservation = yield from self.cloud.run_instances(
                context, a["image_id"], a["instance_type"], a["min_count"], a["max_count"])
            if any(extras.values()):
                # Until CloudController stores them in its create transaction: fields
                # nothing guards or reads for a decision, so writing them after is safe.
                for instance_id in reservation["instances"]:
                    yield HSet(keys.instance(instance_id), extras)
        records = []
        for instance_id in reservation["instances"]:
            records.append((yield from instances.get(instance_id)) or {"id": instance_id})
        return {
            "reservationId": reservation["reservation_id"],
            "ownerId": context.project_id,
            "groupSet": [{"groupId": "default"}],
            "instancesSet": [self._instance_item(r) for r in records],
        }

    def describe_instances(self, context, a: Args):
        records = yield from self.cloud.describe_instances(context, list(a["instance_ids"]) or None)
        reservations: dict[str, list] = {}
        for record in records:
            reservations.setdefault(record.get("reservation_id", ""), []).append(record)
        return {
            "reservationSet": [
                {
                    "reservationId": rid,
                    "ownerId": group[0].get("project_id", ""),
                    "groupSet": [{"groupId": "default"}],
                    "instancesSet": [self._instance_item(r) for r in
                                     sorted(group, key=lambda r: int(r.get("launch_index", "0") or 0))],
                }
                for rid, group in sorted(reservations.items())
            ]
        }

    def terminate_instances(self, context, a: Args):
        before = yield from self._owned(context, a["instance_ids"])
        yield from self.cloud.terminate_instances(context, list(a["instance_ids"]))
        items = []
        for record in before:
            now = (yield from instances.get(record["id"])) or record
            items.append({
                "instanceId": record["id"],
                "currentState": _state(now.get("state")),
                "previousState": _state(record.get("state")),
            })
        return {"instancesSet": items}

    def reboot_instances(self, context, a: Args):
        yield from self.cloud.reboot_instances(context, list(a["instance_ids"]))
        return {"return": True}

    def get_console_output(self, context, a: Args):
        (record,) = yield from self._owned(context, (a["instance_id"],))
        now = yield Now()
        output = ""
        if record.get("host") and record.get("state") in (lifecycle.RUNNING, lifecycle.REBOOTING):
            try:
                output = yield Call(rpc.host_topic("compute", record["host"]), "get_console_output",
                                    {"instance_id": record["id"]}, context, timeout=self.console_timeout)
            except RemoteError as e:
                if e.exc_type != "PoisonMessage":
                    raise from_remote(e) from None
                # A compute from before get_console_output (a rolling upgrade): answer
                # from the record rather than fail.
                output = console_text(record, "the API; the compute host has no console method")
        return {
            "instanceId": record["id"],
            "timestamp": iso8601(now),
            "output": base64.b64encode(str(output or "").encode("utf-8")).decode("ascii"),
        }

    def _owned(self, context, instance_ids):
        """Read the records; NotFound (before anything changes) unless each exists and
        belongs to the caller's project (any project for an admin)."""
        records = []
        for instance_id in instance_ids:
            record = yield from instances.get(instance_id)
            if record is None or (record.get("project_id") != context.project_id and not context.is_admin):
                raise NotFound(f"the instance ID {instance_id!r} does not exist")
            records.append(record)
        return records

    def _instance_item(self, record: Mapping[str, str]) -> dict:
        fixed = record.get("fixed_ip") or ""
        floating = record.get("floating_ip") or ""
        return {
            "instanceId": record["id"],
            "imageId": record.get("image_id", ""),
            "instanceState": _state(record.get("state")),
            "privateDnsName": fixed,
            "dnsName": floating or fixed,
            "reason": record.get("error", ""),
            "keyName": record.get("key_name", ""),
            "amiLaunchIndex": int(record.get("launch_index", "0") or 0),
            "productCodes": [],
            "instanceType": record.get("instance_type", ""),
            "launchTime": iso8601(record.get("created_at")),
            "placement": {"availabilityZone": self.zone},
            "monitoring": {"state": "disabled"},
            "privateIpAddress": fixed or None,
            "ipAddress": floating or None,
        }

    # -- images and zones -------------------------------------------------------------------

    def describe_images(self, context, a: Args):
        """The configured images (owner ``system``, public: the ones RunInstances
        accepts) and the registered images the caller may see (common.images).
        ``Owner.N`` keeps images owned by one of the owners (``self`` is the caller's
        project)."""
        found = {image_id: self._configured_image(image_id) for image_id in self.image_ids()}
        for img in (yield from image_registry.describe_images(context)):
            found.setdefault(img["id"], image_registry.to_ec2(img))
        for image_id in a["image_ids"]:
            if image_id not in found:
                raise ImageNotFound(f"the image id {image_id!r} does not exist")
        items = [found[i] for i in (a["image_ids"] or sorted(found))]
        if a["owners"]:
            owners = {context.project_id if o == "self" else o for o in a["owners"]}
            items = [item for item in items if item["imageOwnerId"] in owners]
        return {"imagesSet": items}

    @staticmethod
    def _configured_image(image_id: str) -> dict:
        return {
            "imageId": image_id,
            "imageLocation": f"{image_id}/image.manifest.xml",
            "imageState": "available",
            "imageOwnerId": SYSTEM_OWNER,
            "isPublic": True,
            "architecture": "x86_64",
            "imageType": "machine",
        }

    def describe_availability_zones(self, context, a: Args):
        return {"availabilityZoneInfo": [
            {"zoneName": self.zone, "zoneState": "available", "regionName": self.region, "messageSet": []}
        ]}
        yield

    # -- key pairs --------------------------------------------------------------------------

    def create_key_pair(self, context, a: Args):
        pair = yield from keypairs.create(context.user_id, a["key_name"], a["key_type"])
        return {"keyName": pair["name"], "keyFingerprint": pair["fingerprint"], "keyMaterial": pair["private_key"]}

    def describe_key_pairs(self, context, a: Args):
        pairs = yield from keypairs.describe(context.user_id, a["key_names"])
        return {"keySet": [
            {"keyName": p["name"], "keyFingerprint": p["fingerprint"], "keyType": p.get("key_type", "rsa")}
            for p in pairs
        ]}

    def delete_key_pair(self, context, a: Args):
        yield from keypairs.delete(context.user_id, a["key_name"])
        return {"return": True}

    # -- addresses ----------------------------------------------------------------------------

    def allocate_address(self, context, a: Args):
        address = yield from self.cloud.allocate_address(context)
        return {"publicIp": address, "domain": "standard"}

    def associate_address(self, context, a: Args):
        yield from self._own_address(context, a["public_ip"])
        yield from self._owned(context, (a["instance_id"],))
        yield from self.cloud.associate_address(context, a["public_ip"], a["instance_id"])
        return {"return": True}

    def disassociate_address(self, context, a: Args):
        yield from self._own_address(context, a["public_ip"])
        yield from self.cloud.disassociate_address(context, a["public_ip"])
        return {"return": True}

    def release_address(self, context, a: Args):
        yield from self._own_address(context, a["public_ip"])
        yield from self.cloud.release_address(context, a["public_ip"])
        return {"return": True}

    def describe_addresses(self, context, a: Args):
        records = yield from self.cloud.describe_addresses(context)
        by_address = {r.get("address"): r for r in records}
        for address in a["public_ips"]:
            if address not in by_address:
                raise AddressNotFound(f"address {address} is not allocated to project {context.project_id}")
        wanted = a["public_ips"] or sorted(by_address)
        return {"addressesSet": [
            {"publicIp": address, "domain": "standard", "instanceId": by_address[address].get("instance_id", "")}
            for address in wanted
        ]}

    def _own_address(self, context, address: str):
        record = yield HGetAll(keys.floatingip(address))
        if not record or (record.get("project_id") != context.project_id and not context.is_admin):
            raise AddressNotFound(f"address {address} is not allocated to project {context.project_id}")
        return record


def project_id(project) -> str:
    """The id of a directory project (its ``name``, the LDAP ``cn``)."""
    for attribute in ("name", "id", "project_id"):
        value = getattr(project, attribute, None)
        if isinstance(value, str) and value:
            return value
    if isinstance(project, str):
        return project
    raise TypeError(f"cannot tell the id of project {project!r}")


def _state(state: str | None) -> dict:
    name, code = EC2_STATES.get(state or "", ("pending", 0))
    return {"code": code, "name": name}
