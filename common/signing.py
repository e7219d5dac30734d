"""AWS request signing, Signature Versions 4 and 2: one implementation for every server and client. Pure.

The EC2 API (common/ec2), the object store's S3 server (real/objectstore) and the
clients (real/ec2_client.py, real/images.py, the simulation's in-process requests)
all sign and verify through these functions, so a client and a server can never
disagree on a canonical form. Nothing here reads a clock: the request time is an
argument (seconds since the epoch, UTC).

*Features*

- Version 4 (``AWS4-HMAC-SHA256``): the signing key derivation, the canonical query,
  path and request, the string to sign, parsing the ``Authorization`` header for a
  given service (``ec2``, ``s3``, ...) and checking a signature against a secret;
  ``sign_v4`` makes the headers that sign a request, as botocore does. The path is
  URI-encoded once more for every service but ``s3``, which signs it as sent. A derived
  key is kept (bounded) for its day, so signing and checking cost one HMAC each.
- Version 2 (EC2's query signatures of 2010): the canonical query, the string to sign
  and the ``HmacSHA256``/``HmacSHA1`` signature.

- Pre-signed v4 URLs (query-string authentication): parsing, checking, ``presign_v4``;
  at most seven days of validity, as AWS.
- S3's version 2 (``Authorization: AWS access:sig`` and ``AWSAccessKeyId``/``Expires``/
  ``Signature`` in the query): the string to sign and the ``HmacSHA1`` signature.

*Not supported*: ``aws-chunked`` streaming payloads, session tokens, Signature
Versions 0 and 1.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

V4_ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
V2_METHODS = {"HmacSHA256": hashlib.sha256, "HmacSHA1": hashlib.sha1}
#: The service that signs its path as sent; every other one encodes it once more.
RAW_PATH_SERVICE = "s3"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: Text that ``quote`` leaves as it is (its always-safe characters), with and without "/".
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*\Z")
_UNRESERVED_PATH = re.compile(r"[A-Za-z0-9_.~/-]*\Z")


class SignatureError(ValueError):
    """A signed request that cannot be checked. ``reason`` says which part is wrong:
    ``algorithm`` (not AWS4-HMAC-SHA256), ``malformed`` (the header's form), ``scope``
    (the credential scope), ``signed-headers`` or ``signature`` (not 64 hex digits);
    each server answers with its own code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------
# Version 4: canonical forms.


def rfc3986(text: str) -> str:
    """Percent-encode all but the unreserved characters ``A-Za-z0-9-_.~``."""
    return text if _UNRESERVED.match(text) else quote(text, safe="-_.~")


def amz_date(now: float) -> str:
    """``yyyymmddThhmmssZ`` for ``now`` (seconds since the epoch): AMZ_DATE_FORMAT,
    formatted by hand because ``strftime`` costs ~10x more (``%Y`` unpadded, as glibc's)."""
    m = datetime.datetime.fromtimestamp(now, datetime.UTC)
    return f"{m.year}{m.month:02d}{m.day:02d}T{m.hour:02d}{m.minute:02d}{m.second:02d}Z"


class _Sha256Mac:
    """HMAC-SHA256 under one key, the padded key hashed once (RFC 2104, as the hmac
    module's own fallback): OpenSSL 3's HMAC sets its key up again for every message
    and costs ~3x more."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_SHA256_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
#: Derived v4 keys by (secret, date, region, service), with their HMAC: a key serves a
#: whole day, so a client or server that signs or checks many requests derives it once
#: a day, not with 4 HMACs per request. Bounded: emptied when full.
MAX_CACHED_KEYS = 1024
_signing_keys: dict[tuple[str, str, str, str], tuple[bytes, _Sha256Mac]] = {}


def _scope_key(secret_key: str, date: str, region: str, service: str) -> tuple[bytes, _Sha256Mac]:
    scope = (secret_key, date, region, service)
    cached = _signing_keys.get(scope)
    if cached is None:
        key = ("AWS4" + secret_key).encode("utf-8")
        for part in (date, region, service, "aws4_request"):
            key = hmac.digest(key, part.encode("utf-8"), "sha256")
        if len(_signing_keys) >= MAX_CACHED_KEYS:
            _signing_keys.clear()
        cached = _signing_keys[scope] = (key, _Sha256Mac(key))
    return cached


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The v4 key of one day, region and service, derived from the secret."""
    return _scope_key(secret_key, date, region, service)[0]


def canonical_query(query_string: str) -> str:
    """Every ``name=value`` pair decoded, then encoded the v4 way, sorted."""
    pairs = []
    for part in query_string.split("&") if query_string else ():
        name, _, value = part.partition("=")
        pairs.append((rfc3986(unquote(name)), rfc3986(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def canonical_path(raw_path: str, service: str) -> str:
    """The path as the canonical request holds it: S3 signs the path as sent, other
    services encode it (already percent-encoded) once more."""
    path = raw_path or "/"
    return path if service == RAW_PATH_SERVICE or _UNRESERVED_PATH.match(path) else quote(path, safe="/~")


def canonical_request(method: str, path: str, query_string: str, headers: Mapping[str, str],
                      signed_headers: list[str] | tuple[str, ...], payload_hash: str) -> str:
    """``path`` is already canonical (``canonical_path``); ``headers`` has lower-case
    names, and a signed header that is absent counts as empty."""
    lines = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers)
    return "\n".join((method, path, canonical_query(query_string), lines, ";".join(signed_headers), payload_hash))


def string_to_sign(amz_date_text: str, scope: str, canonical: str) -> str:
    return "\n".join((V4_ALGORITHM, amz_date_text, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()))


def v4_signature(secret_key: str, date: str, region: str, service: str, to_sign: str) -> str:
    """The hex signature of a string to sign, with the key of that scope."""
    return _scope_key(secret_key, date, region, service)[1].digest(to_sign.encode("utf-8")).hex()


def v4_matches(secret_key: str, date: str, region: str, service: str, to_sign: str, signature: str) -> bool:
    """Whether ``signature`` is the one ``secret_key`` makes for that scope (constant time)."""
    expected = v4_signature(secret_key, date, region, service, to_sign)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))


# ---------------------------------------------------------------------------
# Version 4: the Authorization header, verifying, signing.


@dataclass(frozen=True)
class V4Authorization:
    """An ``Authorization: AWS4-HMAC-SHA256 ...`` header, parsed."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    def string_to_sign(self, method: str, raw_path: str, query_string: str, headers: Mapping[str, str],
                       payload_hash: str, amz_date_text: str) -> tuple[str, str]:
        """-> (canonical request, string to sign) of a request under this header."""
        canonical = canonical_request(method, canonical_path(raw_path, self.service), query_string, headers,
                                      self.signed_headers, payload_hash)
        return canonical, string_to_sign(amz_date_text, self.scope, canonical)

    def matches(self, secret_key: str, to_sign: str) -> bool:
        """Whether the header's signature is the one ``secret_key`` makes (constant time)."""
        return v4_matches(secret_key, self.date, self.region, self.service, to_sign, self.signature)


def parse_v4_authorization(header: str, service: str) -> V4Authorization:
    """The parts of a v4 ``Authorization`` header for ``service`` (any region). Raises
    SignatureError; the signed headers must be lower case, sorted and include ``host``,
    the signature 64 lower-case hex digits."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != V4_ALGORITHM:
        raise SignatureError("algorithm", f"unsupported Authorization scheme {algorithm[:40]!r} (use {V4_ALGORITHM})")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name in fields:
            raise SignatureError("malformed", "malformed Authorization header")
        fields[name] = value.strip()
    try:
        credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
    except KeyError as e:
        raise SignatureError("malformed", f"the Authorization header has no {e.args[0]}") from None
    return _v4_parts(credential, signed, signature, service)


def _v4_parts(credential: str, signed: str, signature: str, service: str) -> V4Authorization:
    pieces = credential.rsplit("/", 4)
    if len(pieces) != 5 or pieces[4] != "aws4_request":
        raise SignatureError("malformed", "the Credential must be <access key>/<date>/<region>/<service>/aws4_request")
    access, date, region, scope_service, _ = pieces
    if scope_service != service:
        raise SignatureError("scope", f"the credential scope names service {scope_service[:40]!r}; this is {service}")
    names = signed.split(";")
    if names != sorted(names) or any(n != n.lower() or not n for n in names) or "host" not in names:
        raise SignatureError("signed-headers", "SignedHeaders must be lower-case, sorted, and include host")
    if not _HEX64.match(signature):
        raise SignatureError("signature", "the Signature must be 64 lower-case hex digits")
    return V4Authorization(access, date, region, scope_service, tuple(names), signature)


def sign_v4(method: str, host: str, raw_path: str, query_string: str, payload_hash: str, *, access_key: str,
            secret_key: str, region: str, service: str, now: float,
            headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers that sign a request, as botocore makes them: ``host``, ``x-amz-date``
    and the given ``headers`` (names lower-cased), all signed, plus ``authorization``.
    ``raw_path`` is percent-encoded as it goes on the wire; ``payload_hash`` is the hex
    SHA-256 of the body (or UNSIGNED_PAYLOAD). Send exactly these headers."""
    stamp = amz_date(now)
    out = {"host": host, "x-amz-date": stamp}
    out.update({name.lower(): value for name, value in (headers or {}).items()})
    auth = V4Authorization(access_key, stamp[:8], region, service, tuple(sorted(out)), "")
    _, to_sign = auth.string_to_sign(method, raw_path, query_string, out, payload_hash, stamp)
    signature = v4_signature(secret_key, auth.date, region, service, to_sign)
    out["authorization"] = (f"{V4_ALGORITHM} Credential={access_key}/{auth.scope}, "
                            f"SignedHeaders={';'.join(auth.signed_headers)}, Signature={signature}")
    return out


# ---------------------------------------------------------------------------
# Version 4 pre-signed URLs (query-string authentication).

#: The query parameters of a pre-signed v4 request, all required.
V4_QUERY_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                   "X-Amz-Signature")
#: Longest validity of a pre-signed v4 URL (AWS's own limit: seven days).
V4_MAX_EXPIRES = 7 * 24 * 3600


@dataclass(frozen=True)
class V4Presigned:
    """The signature parameters of a pre-signed v4 URL, parsed."""

    auth: V4Authorization
    amz_date: str
    expires: int

    def string_to_sign(self, method: str, raw_path: str, query_string: str,
                       headers: Mapping[str, str]) -> tuple[str, str]:
        """-> (canonical request, string to sign); the payload is UNSIGNED-PAYLOAD and
        the query is signed without its ``X-Amz-Signature``."""
        return self.auth.string_to_sign(method, raw_path, query_without(query_string, "X-Amz-Signature"), headers,
                                        UNSIGNED_PAYLOAD, self.amz_date)


def query_without(query_string: str, name: str) -> str:
    """The query string less every ``name=...`` pair (the signature of a signed query)."""
    return "&".join(p for p in query_string.split("&") if p and unquote(p.partition("=")[0]) != name)


def parse_v4_query(params: Mapping[str, str], service: str) -> V4Presigned:
    """The signature parameters of a pre-signed v4 URL (decoded query ``params``).
    Raises SignatureError (reasons as for the header, plus ``expires``)."""
    missing = [name for name in V4_QUERY_PARAMS if not params.get(name)]
    if missing:
        raise SignatureError("malformed", f"the pre-signed URL has no {missing[0]}")
    if params["X-Amz-Algorithm"] != V4_ALGORITHM:
        raise SignatureError("algorithm", f"unsupported X-Amz-Algorithm {params['X-Amz-Algorithm'][:40]!r} "
                             f"(use {V4_ALGORITHM})")
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        expires = -1
    if not 1 <= expires <= V4_MAX_EXPIRES:
        raise SignatureError("expires", f"X-Amz-Expires must be a number of seconds from 1 to {V4_MAX_EXPIRES}")
    auth = _v4_parts(params["X-Amz-Credential"], params["X-Amz-SignedHeaders"], params["X-Amz-Signature"], service)
    return V4Presigned(auth, params["X-Amz-Date"], expires)


def presign_v4(method: str, host: str, raw_path: str, query_string: str, *, access_key: str, secret_key: str,
               region: str, service: str, now: float, expires: int) -> str:
    """The query string (``query_string`` plus the signature parameters) of a URL that
    lets whoever holds it make this request for ``expires`` seconds from ``now``."""
    stamp = amz_date(now)
    auth = V4Authorization(access_key, stamp[:8], region, service, ("host",), "")
    params = {"X-Amz-Algorithm": V4_ALGORITHM, "X-Amz-Credential": f"{access_key}/{auth.scope}",
              "X-Amz-Date": stamp, "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": "host"}
    signed_query = "&".join(p for p in [query_string, *(f"{k}={rfc3986(v)}" for k, v in params.items())] if p)
    _, to_sign = auth.string_to_sign(method, raw_path, signed_query, {"host": host}, UNSIGNED_PAYLOAD, stamp)
    return f"{signed_query}&X-Amz-Signature={v4_signature(secret_key, auth.date, region, service, to_sign)}"


# ---------------------------------------------------------------------------
# S3's version 2 (``Authorization: AWS access:signature``, or ``AWSAccessKeyId``,
# ``Expires`` and ``Signature`` in the query).

#: The query parameters S3's version 2 signs (the subresources and response overrides).
S3_V2_SIGNED_PARAMS = frozenset({
    "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory", "lifecycle", "location",
    "logging", "metrics", "notification", "object-lock", "partNumber", "policy", "replication", "requestPayment",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires", "restore", "select", "select-type",
    "storageClass", "tagging", "torrent", "uploadId", "uploads", "versionId", "versioning", "versions", "website",
})


def s3_v2_string_to_sign(method: str, raw_path: str, query_string: str, headers: Mapping[str, str],
                         date: str) -> str:
    """``VERB\\nContent-MD5\\nContent-Type\\nDATE\\n`` + the ``x-amz-*`` headers + the
    resource (path as sent, then the signed parameters, sorted). ``headers`` has
    lower-case names; ``date`` is the Date header, or ``Expires`` of a signed query."""
    amz = sorted((name, ",".join(v.strip() for v in value.split(","))) for name, value in headers.items()
                 if name.startswith("x-amz-"))
    params = []
    for part in query_string.split("&") if query_string else ():
        name, eq, value = part.partition("=")
        if name in S3_V2_SIGNED_PARAMS:
            params.append((name, f"{name}={unquote(value)}" if eq else name))
    resource = (raw_path or "/") + ("?" + "&".join(p for _, p in sorted(params)) if params else "")
    lines = [method, headers.get("content-md5", "").strip(), headers.get("content-type", "").strip(), date]
    return "\n".join(lines) + "\n" + "".join(f"{name}:{value}\n" for name, value in amz) + resource


def s3_v2_matches(secret_key: str, to_sign: str, signature: str) -> bool:
    """Whether ``signature`` (base64 HMAC-SHA1) is the one ``secret_key`` makes (constant time)."""
    return v2_matches(secret_key, to_sign, "HmacSHA1", signature)


# ---------------------------------------------------------------------------
# Version 2 (EC2's query signatures).


def canonical_query_v2(params: Mapping[str, str]) -> str:
    """Every parameter but ``Signature``, sorted by name (byte order), RFC 3986 encoded."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    return "&".join(f"{rfc3986(k)}={rfc3986(v)}" for k, v in pairs)


def string_to_sign_v2(method: str, host: str, path: str, params: Mapping[str, str]) -> str:
    """``VERB\\nhost\\npath\\ncanonical query``; ``host`` lower case, port included."""
    return f"{method}\n{host.lower()}\n{path or '/'}\n{canonical_query_v2(params)}"


def v2_signature(secret_key: str, to_sign: str, method: str = "HmacSHA256") -> str:
    """The base64 signature; ``method`` is HmacSHA256 or HmacSHA1 (KeyError otherwise)."""
    mac = hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), V2_METHODS[method]).digest()
    return base64.b64encode(mac).decode("ascii")


def v2_matches(secret_key: str, to_sign: str, method: str, signature: str) -> bool:
    """Whether ``signature`` is the one ``secret_key`` makes (constant time)."""
    expected = v2_signature(secret_key, to_sign, method)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))
