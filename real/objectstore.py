"""An S3-compatible object store: buckets and objects on disk, behind AWS Signature V4.

The 2010 ``nova-objectstore`` (twisted.web on port 3333) rebuilt as a WSGI application
(``ObjectStoreApp``) served by cheroot. boto3's S3 client works against it unmodified.
``serve(app, host, port)`` runs it in the foreground until SIGTERM/SIGINT;
``ObjectStoreServer(root, lookup, host, port)`` runs it on a background thread (tests,
daemons); ``dict_lookup``/``file_lookup`` make a credentials lookup from a table.

Why cheroot (CherryPy's server, pure Python, maintained): it hands the request body to
the application as a stream, so an upload is written once, into our own temporary file,
under our own bound (waitress spools every body to a temporary file of its own before
calling the application, which for multi-GB images means writing each twice, outside
``root``); it has a thread-safe ``stop()`` and binds before serving, so a background
server on a free port is a few lines; and it passes the raw request target
(``REQUEST_URI``) that Signature V4 signs.

*Features*

- Path-style S3 REST: ListBuckets (``GET /``); CreateBucket, HeadBucket, DeleteBucket
  (refused with BucketNotEmpty while it holds objects); ListObjects v1 (``prefix``,
  ``marker``, ``max-keys`` up to 1000, ``delimiter``, ``IsTruncated``/``NextMarker``) and
  v2 (``list-type=2``, ``continuation-token``, ``start-after``), ``encoding-type=url``;
  PutObject, GetObject, HeadObject, DeleteObject (204 also when the key is absent).
- ``ETag`` = the quoted MD5 hex of the body, ``Content-Length``, ``Last-Modified``; the
  ``Content-Type`` and ``x-amz-meta-*`` headers of a PUT are kept and served back.
- Errors are S3 error XML with S3's codes and statuses: NoSuchBucket, NoSuchKey,
  BucketAlreadyOwnedByYou, BucketAlreadyExists, BucketNotEmpty, AccessDenied,
  SignatureDoesNotMatch, InvalidAccessKeyId, RequestTimeTooSkewed, InvalidBucketName,
  KeyTooLongError, EntityTooLarge, BadDigest, XAmzContentSHA256Mismatch, NotImplemented...
- Authentication: AWS Signature Version 4 in the ``Authorization`` header, as boto3
  sends it. The payload hash in ``x-amz-content-sha256`` is checked against the body
  (a mismatch stores nothing); ``UNSIGNED-PAYLOAD`` is accepted; ``Content-MD5`` and
  ``x-amz-checksum-crc32`` are verified when sent. A request whose ``x-amz-date`` (or
  ``Date``) is more than 15 minutes from the server's clock, either way, is refused
  with RequestTimeTooSkewed, which bounds how long a captured request can be replayed.
- Credentials come from ``lookup(access_key) -> (secret_key, project, is_admin) | None``.
  The EC2 form ``<access>:<project>`` is accepted as well as plain ``<access>``: the
  lookup is asked about ``<access>``; the caller acts for ``<project>`` when it is the
  key's own project (or empty), and for any project when the key is an admin's.
  A *scoped* lookup (``lookup.scoped`` true) is asked ``lookup(access, project)`` and
  answers with the project the key may act for in this request (None: not that one):
  ``directory_lookup`` is one, over the LDAP directory, where a user belongs to many
  projects (``<access>:<project>`` acts for ``<project>`` when the user is a member;
  plain ``<access>`` for the user's own project, named like the user). The lookup is
  made before the signature is checked, but its answer is used only after.
- Ownership: a bucket belongs to the project of whoever created it; every request on it
  from another project is AccessDenied unless the caller is an admin. ListBuckets shows
  the caller's project's buckets (an admin's: all).
- Names: bucket names follow S3's rules (3-63 of ``a-z0-9.-``, letter or digit at both
  ends, no ``..``, not an IPv4 address); keys are at most 1024 UTF-8 bytes, without
  control characters and without ``.`` or ``..`` path segments (so no intermediary that
  normalises URLs can turn ``/b/../x`` into another resource). A key is stored as one
  percent-escaped file name, so no key can name a path outside its bucket's directory.
- Atomic writes: a body goes to a temporary file under ``<root>/.tmp``, is fsynced and
  verified, then renamed into place; a reader sees the old object or the new one, never
  a part. Buckets appear and disappear by a directory rename too.
- Bounded request bodies (``max_body``, default 5 GiB, S3's own single-PUT limit): the
  store writes every body to disk, so an unbounded one could fill the disk (a runaway
  or hostile client); larger bodies are EntityTooLarge before a byte is read. Bodies of
  bucket requests are held in memory and bounded at 1 MiB.

On disk (``root``)::

    <root>/<bucket>/.bucket.json           {"owner": <project>, "created": <epoch>}
    <root>/<bucket>/<escaped key>          the object's bytes, as uploaded
    <root>/<bucket>/.meta/<escaped key>    {"etag", "size", "mtime_ns", "ino", ...}
    <root>/.tmp/                           uploads in flight (same filesystem: rename is atomic)

The ``.meta`` record is trusted only while the data file's inode, size and mtime match
it; otherwise the MD5 is recomputed (after a crash between the two renames, or a file
replaced by hand).

*Not supported*: multipart upload (so boto3's ``upload_file`` needs a
``TransferConfig(multipart_threshold=...)`` above the file size), versioning, ACL,
policy, CORS, lifecycle, tagging and every other ``?subresource`` (NotImplemented),
CopyObject, DeleteObjects (batch), Range and conditional GETs, presigned URLs
(query-string auth), Signature Version 2 (``Authorization: AWS access:sig``, what 2010
used), signed or unsigned streaming (``aws-chunked``) payloads, anonymous access,
virtual-hosted-style addressing, server-side encryption, storage classes, keys whose
escaped form is over 240 characters (each UTF-8 byte outside ``A-Za-z0-9_.-~`` counts
three; KeyTooLongError), more than one server process per root, and the 2010 ``/_images``
endpoints (images are registered in the datastore: common/images.py).

*Connection string*: ``http://HOST:PORT`` (default ``http://127.0.0.1:3333``) as boto3's
``endpoint_url``, with path-style addressing (automatic for an IP address; set
``Config(s3={"addressing_style": "path"})`` for a host name), any region name, and
``aws_access_key_id="<access>:<project>"``, ``aws_secret_access_key="<secret>"``.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import email.utils
import hashlib
import hmac
import http
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

log = logging.getLogger("novalab.objectstore")

DEFAULT_PORT = 3333
#: S3's single-PUT limit; see the module docstring for why there is a bound at all.
MAX_BODY = 5 * 1024**3
#: Bodies of requests that are not PutObject (CreateBucketConfiguration and the like).
MAX_SMALL_BODY = 1024 * 1024
#: Seconds a request's timestamp may be away from the server's clock.
MAX_SKEW = 15 * 60
MAX_KEY_BYTES = 1024
#: Longest escaped key we store as a file name (255, less room for the temp suffixes).
MAX_NAME = 240
MAX_KEYS = 1000
CHUNK = 1 << 16

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
AMZ_DATE = "%Y%m%dT%H%M%SZ"

BUCKET_META = ".bucket.json"
META_DIR = ".meta"
TMP_DIR = ".tmp"

#: Query parameters that name an S3 subresource we do not implement.
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption", "intelligent-tiering",
    "inventory", "legal-hold", "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
    "ownershipControls", "partNumber", "policy", "policyStatus", "publicAccessBlock", "replication",
    "requestPayment", "restore", "retention", "select", "tagging", "torrent", "uploadId", "uploads",
    "versionId", "versioning", "versions", "website",
})

STATUS = {
    "AccessDenied": 403, "AuthorizationHeaderMalformed": 400, "BadDigest": 400,
    "BucketAlreadyExists": 409, "BucketAlreadyOwnedByYou": 409, "BucketNotEmpty": 409,
    "EntityTooLarge": 400, "IncompleteBody": 400, "InternalError": 500, "InvalidAccessKeyId": 403,
    "InvalidArgument": 400, "InvalidBucketName": 400, "InvalidDigest": 400, "InvalidRequest": 400,
    "InvalidURI": 400, "KeyTooLongError": 400, "MethodNotAllowed": 405, "MissingContentLength": 411,
    "NoSuchBucket": 404, "NoSuchKey": 404, "NotImplemented": 501, "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503, "SignatureDoesNotMatch": 403, "XAmzContentSHA256Mismatch": 400,
}

Lookup = Callable[..., tuple | None]  # (access), or (access, project) when scoped

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class S3Error(Exception):
    """An S3 error response: ``code`` decides the HTTP status; ``extra`` adds elements."""

    def __init__(self, code: str, message: str, extra: Mapping[str, str] | None = None, close: bool = False):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.status = STATUS.get(code, 400)
        self.extra = dict(extra or {})
        #: Answer with Connection: close (a large unread body must not be drained).
        self.close = close


@dataclass(frozen=True)
class Caller:
    """Who a verified request comes from."""

    access_key: str
    project: str
    is_admin: bool


# ---------------------------------------------------------------------------
# Signature Version 4: one canonicalisation, used to verify (here) and to sign
# (real/images.py's fetches). boto3 talking to the server checks it against botocore's.


def uri_encode(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


def canonical_query(query_string: str) -> str:
    """Every ``name=value`` pair decoded, then encoded the SigV4 way, sorted."""
    pairs = []
    for part in query_string.split("&") if query_string else ():
        name, _, value = part.partition("=")
        pairs.append((uri_encode(unquote(name)), uri_encode(unquote(value))))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_request(method: str, raw_path: str, query_string: str, headers: Mapping[str, str],
                      signed_headers: list[str], payload_hash: str) -> str:
    """``headers`` maps lower-case names to values. S3 signs the path as sent (no
    normalisation, no double encoding)."""
    lines = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers)
    return "\n".join([method, raw_path or "/", canonical_query(query_string), lines, ";".join(signed_headers),
                      payload_hash])


def signing_key(secret_key: str, date: str, region: str, service: str = "s3") -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def sign_headers(method: str, url: str, access_key: str, secret_key: str, *, region: str = "us-east-1",
                 payload_hash: str = EMPTY_SHA256, headers: Mapping[str, str] | None = None,
                 now: float | None = None) -> dict:
    """The headers that sign a request to ``url`` (its path already percent-encoded),
    ``Host`` included: send exactly these (plus any you passed in ``headers``)."""
    parts = urlsplit(url)
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    amz_date = stamp.strftime(AMZ_DATE)
    out = {"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    out.update({k.lower(): v for k, v in (headers or {}).items()})
    signed = sorted(out)
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    canonical = canonical_request(method, parts.path or "/", parts.query, out, signed, payload_hash)
    signature = hmac.new(signing_key(secret_key, amz_date[:8], region), string_to_sign(amz_date, scope, canonical).encode(),
                         hashlib.sha256).hexdigest()
    out["authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, "
                            f"Signature={signature}")
    return out


# ---------------------------------------------------------------------------
# Names


def validate_bucket_name(name: str) -> str:
    if not _BUCKET_RE.match(name) or ".." in name or _IPV4_RE.match(name) or name.startswith("xn--") \
            or name.endswith("-s3alias"):
        raise S3Error("InvalidBucketName", f"The specified bucket is not valid: {name!r} (S3 naming rules: 3-63 "
                      "characters of a-z 0-9 . -, a letter or digit at both ends, no '..', not an IP address)")
    return name


def key_file_name(key: str) -> str:
    """The file name a key is stored under: every byte but ``A-Za-z0-9_.-~`` escaped,
    and a leading ``.`` too, so it is never ``.``/``..`` nor one of the store's own
    dot-files. Injective, so two keys never share a file. Raises S3Error."""
    if not key:
        raise S3Error("InvalidArgument", "The object key is empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", f"Your key is too long (at most {MAX_KEY_BYTES} UTF-8 bytes)")
    if _CONTROL_RE.search(key):
        raise S3Error("InvalidArgument", "The object key contains a control character")
    if any(segment in (".", "..") for segment in key.split("/")):
        raise S3Error("InvalidArgument", f"The object key {key!r} has a '.' or '..' path segment")
    name = quote(key, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > MAX_NAME:
        raise S3Error("KeyTooLongError", f"Your key is too long for this store: escaped it is {len(name)} "
                      f"characters, at most {MAX_NAME} fit in a file name")
    return name


def key_from_file_name(name: str) -> str:
    return unquote(name, errors="strict")


def _stored_key(name: str) -> str | None:
    """The key a bucket directory entry stores, or None for the store's own dot-files
    and for names this store did not write (a file dropped in by hand)."""
    if name.startswith("."):
        return None
    try:
        key = key_from_file_name(name)
        return key if key_file_name(key) == name else None
    except (UnicodeDecodeError, S3Error):
        return None


# ---------------------------------------------------------------------------
# Formatting


def _http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def _iso(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _el(name: str, value) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def _xml(root: str, body: str, namespace: bool = True) -> bytes:
    ns = f' xmlns="{S3_NS}"' if namespace else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}{ns}>{body}</{root}>'.encode()


def _parse_time(value: str) -> float | None:
    try:
        return calendar.timegm(time.strptime(value, AMZ_DATE))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError):
        return None
    return None if parsed is None else email.utils.mktime_tz(parsed)


# ---------------------------------------------------------------------------
# The application


class _FileBody:
    """A WSGI response body streamed from an open file; closes it when done."""

    def __init__(self, f, length: int):
        self.f = f
        self.remaining = length

    def __iter__(self):
        while self.remaining > 0:
            chunk = self.f.read(min(CHUNK, self.remaining))
            if not chunk:
                break
            self.remaining -= len(chunk)
            yield chunk

    def close(self):
        self.f.close()


class _Request:
    """What the handlers need from one WSGI request."""

    def __init__(self, environ):
        self.environ = environ
        self.method = environ["REQUEST_METHOD"].upper()
        self.query_string = environ.get("QUERY_STRING", "")
        raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
        if raw:
            raw = raw.split("?", 1)[0]
            if "://" in raw:  # absolute-form request target
                raw = urlsplit(raw).path
        else:
            path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
            raw = quote(path, safe="/~")
        self.raw_path = raw or "/"
        self.query = {}
        for part in self.query_string.split("&") if self.query_string else ():
            name, _, value = part.partition("=")
            self.query.setdefault(unquote(name), unquote(value))
        self.headers = {}
        for name, value in environ.items():
            if name.startswith("HTTP_"):
                self.headers[name[5:].replace("_", "-").lower()] = value
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                self.headers[name.replace("_", "-").lower()] = environ[name]
        self.caller: Caller  # set by _authenticate before any handler runs
        self.payload_hash = UNSIGNED_PAYLOAD

    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None or value == "":
            return None
        try:
            length = int(value)
        except ValueError:
            raise S3Error("InvalidArgument", f"Content-Length {value!r} is not a number") from None
        if length < 0:
            raise S3Error("InvalidArgument", "Content-Length is negative")
        return length


class _BodyReader:
    """Reads a request body in chunks, hashing as it goes; ``check()`` afterwards raises
    S3Error when it is short or a sent digest does not match."""

    def __init__(self, request: _Request, limit: int):
        self.request = request
        self.length = request.content_length()
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        if self.length is None and not chunked:
            self.length = 0
        if self.length is not None and self.length > limit:
            raise S3Error("EntityTooLarge", f"Your proposed upload is {self.length} bytes, larger than the maximum "
                          f"allowed size of {limit} bytes", {"MaxSizeAllowed": str(limit)}, close=True)
        self.limit = limit
        self.md5 = hashlib.md5()
        self.sha256 = hashlib.sha256() if request.payload_hash != UNSIGNED_PAYLOAD else None
        self.crc32 = 0 if "x-amz-checksum-crc32" in request.headers else None
        self.size = 0

    def chunks(self):
        stream = self.request.environ["wsgi.input"]
        while self.length is None or self.size < self.length:
            want = CHUNK if self.length is None else min(CHUNK, self.length - self.size)
            chunk = stream.read(want)
            if not chunk:
                break
            self.size += len(chunk)
            if self.size > self.limit:
                raise S3Error("EntityTooLarge", f"Your upload is larger than the maximum allowed size of {self.limit} "
                              "bytes", {"MaxSizeAllowed": str(self.limit)}, close=True)
            self.md5.update(chunk)
            if self.sha256 is not None:
                self.sha256.update(chunk)
            if self.crc32 is not None:
                self.crc32 = zlib.crc32(chunk, self.crc32)
            yield chunk

    def read_all(self) -> bytes:
        return b"".join(self.chunks())

    def check(self):
        headers = self.request.headers
        if self.length is not None and self.size != self.length:
            raise S3Error("IncompleteBody", f"You did not provide the number of bytes specified by the Content-Length "
                          f"HTTP header ({self.size} of {self.length})", close=True)
        if self.sha256 is not None and self.sha256.hexdigest() != self.request.payload_hash:
            raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match "
                          "what was computed.", {"ClientComputedContentSHA256": self.request.payload_hash,
                                                 "S3ComputedContentSHA256": self.sha256.hexdigest()})
        if "content-md5" in headers:
            try:
                sent = base64.b64decode(headers["content-md5"], validate=True)
            except (binascii.Error, ValueError):
                raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.") from None
            if len(sent) != 16:
                raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.")
            if sent != self.md5.digest():
                raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        if self.crc32 is not None:
            computed = base64.b64encode(self.crc32.to_bytes(4, "big")).decode()
            if headers["x-amz-checksum-crc32"] != computed:
                raise S3Error("BadDigest", "The CRC32 you specified did not match the calculated checksum.")


class ObjectStoreApp:
    """The WSGI application. ``lookup(access_key) -> (secret_key, project, is_admin) |
    None``; ``clock`` gives the server's time (seconds since the epoch)."""

    def __init__(self, root, lookup: Lookup, *, max_body: int = MAX_BODY, max_skew: float = MAX_SKEW,
                 clock: Callable[[], float] = time.time):
        self.root = os.path.abspath(os.fspath(root))
        self.lookup = lookup
        self.max_body = max_body
        self.max_skew = max_skew
        self.clock = clock
        self.tmp = os.path.join(self.root, TMP_DIR)
        os.makedirs(self.tmp, exist_ok=True)
        #: Commits (renames into place, deletes, bucket create/delete) are serialised,
        #: so a bucket cannot be deleted between an upload's check and its rename.
        self._lock = threading.Lock()
        self._sweep_tmp()

    # -- WSGI --------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        request_id = uuid.uuid4().hex[:16].upper()
        try:
            request = _Request(environ)
            status, headers, body = self._handle(request)
        except S3Error as e:
            status, headers, body = self._error(environ, e, request_id)
        except Exception:  # a bug or an I/O failure: answer, log, keep serving
            log.exception("objectstore: %s %s failed", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            status, headers, body = self._error(environ, S3Error("InternalError", "We encountered an internal "
                                                                 "error. Please try again."), request_id)
        headers = [*headers, ("x-amz-request-id", request_id), ("Date", _http_date(self.clock())),
                   ("Server", "novalab-objectstore")]
        start_response(f"{status} {http.HTTPStatus(status).phrase}", headers)
        if environ["REQUEST_METHOD"].upper() == "HEAD":
            if hasattr(body, "close"):
                body.close()
            return []
        return body if isinstance(body, _FileBody) else [body]

    def _error(self, environ, e: S3Error, request_id: str):
        resource = environ.get("PATH_INFO", "")
        extra = "".join(_el(k, v) for k, v in e.extra.items())
        body = _xml("Error", _el("Code", e.code) + _el("Message", e.message) + extra + _el("Resource", resource)
                    + _el("RequestId", request_id), namespace=False)
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        if e.close:
            headers.append(("Connection", "close"))
        if environ["REQUEST_METHOD"].upper() == "HEAD":
            headers[1] = ("Content-Length", "0")
        return e.status, headers, body

    def _handle(self, request: _Request):
        raw_bucket, _, raw_key = request.raw_path.lstrip("/").partition("/")
        try:
            bucket = unquote(raw_bucket, errors="strict")
            key = unquote(raw_key, errors="strict")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "Couldn't parse the specified URI (not UTF-8).") from None
        request.caller = self._authenticate(request)
        method = request.method
        unsupported = sorted(SUBRESOURCES.intersection(request.query))
        if unsupported:
            raise S3Error("NotImplemented", f"The ?{unsupported[0]} subresource is not implemented by this store",
                          close=True)
        if not bucket:
            if method == "GET":
                self._drain_small(request)
                return self._list_buckets(request)
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on the service", close=True)
        if not key:
            handler: Callable[..., Any] | None = {"GET": self._list_objects, "PUT": self._create_bucket, "DELETE": self._delete_bucket,
                       "HEAD": self._head_bucket}.get(method)
            if handler is None:
                raise S3Error("MethodNotAllowed", f"{method} is not allowed on a bucket", close=True)
            if method != "PUT":
                self._drain_small(request)
            return handler(request, bucket)
        handler = {"GET": self._get_object, "HEAD": self._get_object, "PUT": self._put_object,
                   "DELETE": self._delete_object}.get(method)
        if handler is None:
            raise S3Error("MethodNotAllowed", f"{method} is not allowed on an object", close=True)
        if method != "PUT":
            self._drain_small(request)
        return handler(request, bucket, key)

    # -- authentication ----------------------------------------------------------------

    def _authenticate(self, request: _Request) -> Caller:
        auth = request.headers.get("authorization", "")
        if not auth:
            raise S3Error("AccessDenied", "Anonymous access is not allowed: sign requests with AWS Signature Version 4",
                          close=True)
        if not auth.startswith(ALGORITHM + " "):
            raise S3Error("InvalidRequest", "The authorization mechanism you have provided is not supported. "
                          f"Please use {ALGORITHM}.", close=True)
        fields = {}
        for part in auth[len(ALGORITHM) + 1:].split(","):
            name, _, value = part.strip().partition("=")
            fields[name] = value
        try:
            credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
            access_key, date, region, service, terminator = credential.split("/")
        except (KeyError, ValueError):
            raise S3Error("AuthorizationHeaderMalformed", "The authorization header is malformed: it needs "
                          "Credential=<key>/<date>/<region>/s3/aws4_request, SignedHeaders and Signature",
                          close=True) from None
        if service != "s3" or terminator != "aws4_request":
            raise S3Error("AuthorizationHeaderMalformed", f"The credential scope {credential!r} is not for s3",
                          close=True)
        access, _, project = access_key.partition(":")
        found = self.lookup(access, project) if getattr(self.lookup, "scoped", False) else self.lookup(access)
        if found is None:
            raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.",
                          {"AWSAccessKeyId": access_key}, close=True)
        secret, own_project, is_admin = found
        stamp = request.headers.get("x-amz-date") or request.headers.get("date", "")
        when = _parse_time(stamp)
        if when is None:
            raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", close=True)
        now = self.clock()
        if abs(now - when) > self.max_skew:
            raise S3Error("RequestTimeTooSkewed", "The difference between the request time and the current time is "
                          "too large.", {"RequestTime": stamp, "ServerTime": _iso(now),
                                         "MaxAllowedSkewMilliseconds": str(int(self.max_skew * 1000))}, close=True)
        amz_date = time.strftime(AMZ_DATE, time.gmtime(when))
        if date != amz_date[:8]:
            raise S3Error("AuthorizationHeaderMalformed", f"Invalid credential date {date!r}: it is not the date of "
                          f"the request time {amz_date}", close=True)
        payload_hash = request.headers.get("x-amz-content-sha256")
        if not payload_hash:
            raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256",
                          close=True)
        if payload_hash != UNSIGNED_PAYLOAD and not re.fullmatch(r"[0-9a-f]{64}", payload_hash):
            raise S3Error("NotImplemented" if payload_hash.startswith("STREAMING-") else "InvalidArgument",
                          f"x-amz-content-sha256 {payload_hash!r} is not supported: send the hex SHA-256 of the body "
                          "or UNSIGNED-PAYLOAD (streaming aws-chunked payloads are not supported)", close=True)
        signed_headers = signed.split(";")
        if "host" not in signed_headers:
            raise S3Error("AuthorizationHeaderMalformed", "SignedHeaders must include host", close=True)
        canonical = canonical_request(request.method, request.raw_path, request.query_string, request.headers,
                                      signed_headers, payload_hash)
        scope = f"{date}/{region}/{service}/{terminator}"
        to_sign = string_to_sign(amz_date, scope, canonical)
        expected = hmac.new(signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does not match the signature "
                          "you provided. Check your key and signing method.",
                          {"AWSAccessKeyId": access_key, "StringToSign": to_sign, "CanonicalRequest": canonical},
                          close=True)
        request.payload_hash = payload_hash
        project = project or own_project
        if not project:
            raise S3Error("AccessDenied", f"Access key {access!r} names no project it may act for: use "
                          "<access key>:<project>", close=True)
        if project != own_project and not is_admin:
            raise S3Error("AccessDenied", f"Access key {access!r} does not act for project {project!r}", close=True)
        return Caller(access, project, bool(is_admin))

    # -- buckets -----------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> str:
        return os.path.join(self.root, validate_bucket_name(bucket))

    def _bucket_info(self, bucket: str) -> dict:
        try:
            with open(os.path.join(self._bucket_dir(bucket), BUCKET_META)) as f:
                return json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            raise S3Error("NoSuchBucket", "The specified bucket does not exist", {"BucketName": bucket}) from None

    def _owned_bucket(self, request: _Request, bucket: str) -> dict:
        info = self._bucket_info(bucket)
        caller = request.caller
        if info["owner"] != caller.project and not caller.is_admin:
            raise S3Error("AccessDenied", f"Access Denied: bucket {bucket!r} belongs to another project", close=True)
        return info

    def _list_buckets(self, request: _Request):
        caller = request.caller
        entries = []
        for name in sorted(os.listdir(self.root)):
            if name.startswith("."):
                continue
            try:
                info = self._bucket_info(name)
            except S3Error:
                continue
            if info["owner"] == caller.project or caller.is_admin:
                entries.append(f"<Bucket>{_el('Name', name)}{_el('CreationDate', _iso(info['created']))}</Bucket>")
        owner = f"<Owner>{_el('ID', caller.project)}{_el('DisplayName', caller.project)}</Owner>"
        return self._xml_response("ListAllMyBucketsResult", owner + "<Buckets>" + "".join(entries) + "</Buckets>")

    def _create_bucket(self, request: _Request, bucket: str):
        target = self._bucket_dir(bucket)
        reader = _BodyReader(request, MAX_SMALL_BODY)
        reader.read_all()  # CreateBucketConfiguration: any region is fine here
        reader.check()
        caller = request.caller
        with self._lock:
            try:
                info = self._bucket_info(bucket)
            except S3Error:
                info = None
            if info is None:
                staging = tempfile.mkdtemp(prefix="bucket-", dir=self.tmp)
                self._write_json(os.path.join(staging, BUCKET_META), {"owner": caller.project, "created": self.clock()})
                os.mkdir(os.path.join(staging, META_DIR))
                try:
                    os.rename(staging, target)  # fails on an existing bucket (never empty)
                except OSError:
                    shutil.rmtree(staging, ignore_errors=True)
                    info = self._bucket_info(bucket)
                else:
                    return 200, [("Location", f"/{bucket}"), ("Content-Length", "0")], b""
        if info["owner"] == caller.project:
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and "
                          "you already own it.", {"BucketName": bucket})
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available. Please select a different "
                      "name and try again.", {"BucketName": bucket})

    def _head_bucket(self, request: _Request, bucket: str):
        self._owned_bucket(request, bucket)
        return 200, [("Content-Length", "0")], b""

    def _delete_bucket(self, request: _Request, bucket: str):
        with self._lock:
            self._owned_bucket(request, bucket)
            directory = self._bucket_dir(bucket)
            if any(not name.startswith(".") for name in os.listdir(directory)):
                raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", {"BucketName": bucket})
            grave = os.path.join(self.tmp, f"deleted-{uuid.uuid4().hex}")
            os.rename(directory, grave)
        shutil.rmtree(grave, ignore_errors=True)
        return 204, [], b""

    def _list_objects(self, request: _Request, bucket: str):
        info = self._owned_bucket(request, bucket)
        query = request.query
        v2 = query.get("list-type") == "2"
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        encode = query.get("encoding-type") == "url"
        try:
            max_keys = int(query.get("max-keys", MAX_KEYS))
        except ValueError:
            raise S3Error("InvalidArgument", "max-keys must be an integer", {"ArgumentName": "max-keys"}) from None
        if max_keys < 0:
            raise S3Error("InvalidArgument", "max-keys must not be negative", {"ArgumentName": "max-keys"})
        max_keys = min(max_keys, MAX_KEYS)
        if v2:
            token = query.get("continuation-token")
            if token:
                try:
                    after = base64.urlsafe_b64decode(token.encode()).decode()
                except (binascii.Error, ValueError):
                    raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                                  {"ArgumentName": "continuation-token"}) from None
            else:
                after = query.get("start-after", "")
        else:
            after = query.get("marker", "")
        directory = self._bucket_dir(bucket)
        keys = sorted(k for k in map(_stored_key, os.listdir(directory)) if k is not None)
        contents: list = []
        prefixes: list = []
        truncated, last = False, None
        for key in keys:
            if not key.startswith(prefix) or key <= after:
                continue
            common = None
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    if (prefixes and prefixes[-1] == common) or after.startswith(common):
                        continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = max_keys > 0
                break
            if common is not None:
                prefixes.append(common)
                last = common
                continue
            meta = self._object_meta(directory, key)
            if meta is None:  # deleted while we listed
                continue
            contents.append((key, meta))
            last = key

        def enc(value):
            return quote(value, safe="/") if encode else value

        owner = f"<Owner>{_el('ID', info['owner'])}{_el('DisplayName', info['owner'])}</Owner>"
        body = [_el("Name", bucket), _el("Prefix", enc(prefix))]
        if v2:
            body.append(_el("KeyCount", len(contents) + len(prefixes)))
            if query.get("continuation-token"):
                body.append(_el("ContinuationToken", query["continuation-token"]))
            if query.get("start-after"):
                body.append(_el("StartAfter", enc(query["start-after"])))
        else:
            body.append(_el("Marker", enc(after)))
        body.append(_el("MaxKeys", max_keys))
        if delimiter:
            body.append(_el("Delimiter", enc(delimiter)))
        if encode:
            body.append(_el("EncodingType", "url"))
        body.append(_el("IsTruncated", "true" if truncated else "false"))
        if truncated and last is not None:
            if v2:
                body.append(_el("NextContinuationToken", base64.urlsafe_b64encode(last.encode()).decode()))
            else:
                body.append(_el("NextMarker", enc(last)))
        for key, meta in contents:
            body.append("<Contents>" + _el("Key", enc(key)) + _el("LastModified", _iso(meta["mtime_ns"] / 1e9))
                        + _el("ETag", f'"{meta["etag"]}"') + _el("Size", meta["size"])
                        + _el("StorageClass", "STANDARD") + (owner if not v2 or query.get("fetch-owner") == "true"
                                                              else "") + "</Contents>")
        for common in prefixes:
            body.append(f"<CommonPrefixes>{_el('Prefix', enc(common))}</CommonPrefixes>")
        return self._xml_response("ListBucketResult", "".join(body))

    # -- objects -------------------------------------------------------------------------

    def _paths(self, bucket: str, key: str) -> tuple[str, str, str]:
        directory = self._bucket_dir(bucket)
        name = key_file_name(key)
        data = os.path.join(directory, name)
        # Defence in depth: the escaped name has no separator, so this always holds.
        if os.path.dirname(data) != directory or name in (".", ".."):
            raise S3Error("InvalidArgument", f"The object key {key!r} is not acceptable")
        return directory, data, os.path.join(directory, META_DIR, name)

    def _put_object(self, request: _Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        _directory, data, meta_path = self._paths(bucket, key)
        if "x-amz-copy-source" in request.headers:
            raise S3Error("NotImplemented", "CopyObject is not implemented by this store", close=True)
        reader = _BodyReader(request, self.max_body)
        if reader.length is None and request.headers.get("transfer-encoding", "").lower() != "chunked":
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", close=True)
        fd, tmp = tempfile.mkstemp(prefix="put-", dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in reader.chunks():
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            reader.check()
            etag = reader.md5.hexdigest()
            user_meta = {k: v for k, v in request.headers.items() if k.startswith("x-amz-meta-")}
            content_type = request.headers.get("content-type", "binary/octet-stream")
            with self._lock:
                self._owned_bucket(request, bucket)  # still there, still theirs
                os.replace(tmp, data)
                st = os.stat(data)
                self._write_json(meta_path, {"key": key, "etag": etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                             "ino": st.st_ino, "content_type": content_type, "meta": user_meta})
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return 200, [("ETag", f'"{etag}"'), ("Content-Length", "0")], b""

    def _get_object(self, request: _Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        directory, data, _ = self._paths(bucket, key)
        try:
            f = open(data, "rb")  # noqa: SIM115 - the response body closes it
        except (FileNotFoundError, IsADirectoryError):
            raise S3Error("NoSuchKey", "The specified key does not exist.", {"Key": key}) from None
        try:
            meta = self._object_meta(directory, key, f)
        except BaseException:
            f.close()
            raise
        if meta is None:  # not with an open file, but the signature allows it
            f.close()
            raise S3Error("NoSuchKey", "The specified key does not exist.", {"Key": key})
        headers = [("Content-Type", meta.get("content_type", "binary/octet-stream")),
                   ("Content-Length", str(meta["size"])), ("ETag", f'"{meta["etag"]}"'),
                   ("Last-Modified", _http_date(meta["mtime_ns"] / 1e9))]
        headers += [(k, v) for k, v in sorted(meta.get("meta", {}).items())]
        return 200, headers, _FileBody(f, meta["size"])

    def _delete_object(self, request: _Request, bucket: str, key: str):
        self._owned_bucket(request, bucket)
        _, data, meta_path = self._paths(bucket, key)
        with self._lock:
            for path in (data, meta_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        return 204, [], b""

    def _object_meta(self, directory: str, key: str, f=None) -> dict | None:
        """The object's metadata, trusted only if it matches the data file (``f`` if
        open, else the path); the MD5 is recomputed when it does not. None: no object."""
        name = key_file_name(key)
        data = os.path.join(directory, name)
        try:
            st = os.fstat(f.fileno()) if f is not None else os.stat(data)
        except FileNotFoundError:
            return None
        meta_path = os.path.join(directory, META_DIR, name)
        try:
            with open(meta_path) as m:
                meta = json.load(m)
        except (OSError, ValueError):
            meta = {}
        if (meta.get("ino"), meta.get("size"), meta.get("mtime_ns")) == (st.st_ino, st.st_size, st.st_mtime_ns):
            return meta
        md5 = hashlib.md5()
        try:
            source = f if f is not None else open(data, "rb")  # noqa: SIM115 - closed in the finally below
        except FileNotFoundError:
            return None
        try:
            source.seek(0)
            for chunk in iter(lambda: source.read(CHUNK), b""):
                md5.update(chunk)
            source.seek(0)
        finally:
            if f is None:
                source.close()
        meta = {**meta, "key": key, "etag": md5.hexdigest(), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "ino": st.st_ino}
        with self._lock:  # record it only if the file is still the one we hashed
            try:
                now = os.stat(data)
                if (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns):
                    self._write_json(meta_path, meta)
            except OSError:  # replaced, deleted or its bucket gone: the answer is still right
                pass
        return meta

    # -- helpers ------------------------------------------------------------------------

    def _drain_small(self, request: _Request):
        reader = _BodyReader(request, MAX_SMALL_BODY)
        reader.read_all()
        reader.check()

    def _xml_response(self, root: str, body: str):
        payload = _xml(root, body)
        return 200, [("Content-Type", "application/xml"), ("Content-Length", str(len(payload)))], payload

    def _write_json(self, path: str, value: dict):
        fd, tmp = tempfile.mkstemp(prefix="meta-", dir=self.tmp)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(value, f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _sweep_tmp(self, older_than: float = 3600.0):
        """Remove uploads left by a crashed server (old enough not to be in flight)."""
        cutoff = time.time() - older_than
        for name in os.listdir(self.tmp):
            path = os.path.join(self.tmp, name)
            try:
                if os.lstat(path).st_mtime < cutoff:
                    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
            except OSError:
                pass


# ---------------------------------------------------------------------------
# Credentials


def dict_lookup(keys: Mapping[str, Mapping]) -> Lookup:
    """A lookup over ``{access: {"secret": ..., "project": ..., "admin": bool}}``."""
    table = {access: (entry["secret"], entry["project"], bool(entry.get("admin", False)))
             for access, entry in keys.items()}
    return table.get


class directory_lookup:
    """A scoped lookup (module docstring) over the directory: ``ldap`` performs the
    effects (real.directory.LdapDirectory), ``directory`` is a
    common.directory.Directory. The secret by access key (``user_by_access_key``), the
    project by ``Directory.authenticate`` (membership; an admin may act for any
    existing project), admins by ``isAdmin``. Every request asks the directory, so a
    revoked key or membership takes effect at once. A directory that does not answer
    gives 503 ServiceUnavailable."""

    scoped = True

    def __init__(self, ldap, directory):
        self.ldap = ldap
        self.directory = directory

    def __call__(self, access: str, project: str = ""):
        from common.errors import AuthFailure, DirectoryUnavailable, NovaError

        try:
            user = self.ldap.run(self.directory.user_by_access_key(access))
            if user is None:
                return None
            try:
                _, found = self.ldap.run(self.directory.authenticate(f"{access}:{project}" if project else access))
            except AuthFailure:
                return user.secret_key, None, bool(user.is_admin)
        except DirectoryUnavailable as e:
            log.warning("objectstore: %s", e)
            raise S3Error("ServiceUnavailable", "The directory that holds the credentials is not answering; "
                          "try again later.", close=True) from None
        except NovaError as e:  # an access key the directory refuses to look up
            log.info("objectstore: lookup of %r refused: %s", access[:64], e)
            return None
        return user.secret_key, found.name, bool(user.is_admin)


def file_lookup(path) -> Lookup:
    """A lookup over a YAML (or JSON) file in dict_lookup's form, read once."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of access key -> {{secret, project, admin}}")
    try:
        return dict_lookup(data)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: every key needs 'secret' and 'project' ({e})") from None


# ---------------------------------------------------------------------------
# Serving


def make_server(app, host: str = "127.0.0.1", port: int = DEFAULT_PORT, threads: int = 16):
    """A cheroot WSGI server for ``app`` (not yet listening)."""
    from cheroot import wsgi

    server = wsgi.Server((host, port), app, numthreads=threads, server_name="novalab-objectstore",
                         timeout=60, shutdown_timeout=5,
                         request_queue_size=1024)  # cheroot's 5 resets connections in a burst (real/api.py)
    return server


def serve(app, host: str = "127.0.0.1", port: int = DEFAULT_PORT, threads: int = 16) -> None:
    """Serve ``app`` in the foreground until SIGTERM or SIGINT (the daemon form); requests
    in flight then get cheroot's shutdown timeout to finish. A server killed outright
    loses nothing stored: writes land by rename, and stale temporary files are swept at
    the next start."""
    server = make_server(app, host, port, threads)
    server.prepare()
    thread = threading.Thread(target=server.serve, name="objectstore", daemon=True)
    thread.start()
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.set())
    try:
        while thread.is_alive() and not stopping.wait(0.5):
            pass
    finally:
        server.stop()
        thread.join(10)


class ObjectStoreServer:
    """An object store served from a background thread: for tests and daemons.

    ``port=0`` picks a free port; ``.url`` is the endpoint; ``.stop()`` (or leaving the
    ``with`` block) shuts it down within about ``poll_interval`` seconds (cheroot's
    serving loop wakes that often). ``middleware(app) -> app`` wraps the application
    (fault injection in tests). Other keywords go to ObjectStoreApp.
    """

    def __init__(self, root, lookup: Lookup, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 threads: int = 16, middleware=None, poll_interval: float = 0.05, **options):
        self.app = ObjectStoreApp(root, lookup, **options)
        served = middleware(self.app) if middleware is not None else self.app
        self._server = make_server(served, host, port, threads)
        self._server.expiration_interval = poll_interval
        self._server.prepare()  # binds now, so the port is known and taken
        self.host, self.port = self._server.bind_addr[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve, name=f"objectstore:{self.port}", daemon=True)
        self._thread.start()

    def stop(self):
        if self._thread is not None:
            self._server.stop()
            self._thread.join(10)
            self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
