"""The S3 protocol of the object store: errors, names, XML, times and request bodies.

Pure parsing and formatting plus the WSGI request wrapper (``S3Request``) and the body
reader that hashes as it reads; the object store's package docstring says what is
supported.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import email.utils
import hashlib
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

from common.signing import AMZ_DATE_FORMAT as AMZ_DATE
from common.signing import UNSIGNED_PAYLOAD

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

BUCKET_META = ".bucket.json"
META_DIR = ".meta"
TMP_DIR = ".tmp"

#: Query parameters that name an S3 subresource we do not implement.
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption", "intelligent-tiering",
    "inventory", "legal-hold", "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
    "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication",
    "requestPayment", "restore", "retention", "select", "tagging", "torrent", "versionId", "versioning", "versions",
    "website",
})

#: Query parameters without a value that we serve (the rest of SUBRESOURCES is
#: NotImplemented; any other bare name is an unknown subresource, InvalidRequest).
KNOWN_FLAGS = frozenset({"uploads"})

STATUS = {
    "AccessDenied": 403, "AuthorizationHeaderMalformed": 400, "BadDigest": 400,
    "BucketAlreadyExists": 409, "BucketAlreadyOwnedByYou": 409, "BucketNotEmpty": 409,
    "EntityTooLarge": 400, "IncompleteBody": 400, "InternalError": 500, "InvalidAccessKeyId": 403,
    "InvalidArgument": 400, "InvalidBucketName": 400, "InvalidDigest": 400, "InvalidRequest": 400,
    "InvalidURI": 400, "KeyTooLongError": 400, "MethodNotAllowed": 405, "MissingContentLength": 411,
    "NoSuchBucket": 404, "NoSuchKey": 404, "NotImplemented": 501, "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503, "SignatureDoesNotMatch": 403, "XAmzContentSHA256Mismatch": 400,
    "AuthorizationQueryParametersError": 400, "EntityTooSmall": 400, "InvalidPart": 400, "InvalidPartOrder": 400,
    "InvalidRange": 416, "MalformedXML": 400, "NoSuchUpload": 404, "PreconditionFailed": 412,
    "RequestHeaderSectionTooLarge": 400, "TooManyUploads": 503,
}

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
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
        #: Headers the error response carries (Content-Range of a 416).
        self.headers: list[tuple[str, str]] = []


@dataclass(frozen=True)
class Caller:
    """Who a verified request comes from."""

    access_key: str
    project: str
    is_admin: bool


#: The caller of a request not yet authenticated: no project, no rights.
NOBODY = Caller("", "", False)


# ---------------------------------------------------------------------------
# Names


def validate_bucket_name(name: str, strict: bool = False) -> str:
    """``name`` if it can name a bucket: S3's rules when S3 creates it (``strict``),
    else also a Swift container's name as this store keeps them (1-255 characters of
    ``A-Za-z0-9._-``, a letter or digit first: ``photos_segments``; not ``v1``, the
    Swift API's path), which S3 clients reach as the legacy names of path-style S3.
    Raises InvalidBucketName."""
    if _BUCKET_RE.match(name) and ".." not in name and not _IPV4_RE.match(name) and not name.startswith("xn--") \
            and not name.endswith("-s3alias"):
        return name
    if not strict and _CONTAINER_RE.match(name) and name != "v1":
        return name
    raise S3Error("InvalidBucketName", f"The specified bucket is not valid: {name[:300]!r} (S3 naming rules: 3-63 "
                  "characters of a-z 0-9 . -, a letter or digit at both ends, no '..', not an IP address)")


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


def stored_key(name: str) -> str | None:
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


def http_date(seconds: float) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def iso_time(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def element(name: str, value) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def xml_document(root: str, body: str, namespace: bool = True) -> bytes:
    ns = f' xmlns="{S3_NS}"' if namespace else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}{ns}>{body}</{root}>'.encode()


def parse_time(value: str) -> float | None:
    try:
        return calendar.timegm(time.strptime(value, AMZ_DATE))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_tz(value)
    except (TypeError, ValueError):
        return None
    return None if parsed is None else email.utils.mktime_tz(parsed)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The ``(first, last)`` byte positions of a ``Range: bytes=a-b | a- | -n`` header
    on an object of ``size`` bytes, or None to send the whole object (no header, a
    form we do not parse, or several ranges: RFC 9110 lets a server ignore them, and
    S3 does). Raises InvalidRange (416) when the range is past the end."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    if not dash or not (first_text + last_text).isdigit() or len(first_text + last_text) > 20:
        return None
    if not first_text:  # the last n bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:  # not a valid range: ignored
        return None
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(int(last_text) if last_text else size - 1, size - 1)


def _unsatisfiable(size: int) -> S3Error:
    return S3Error("InvalidRange", "The requested range is not satisfiable", {"ActualObjectSize": str(size)})


def check_preconditions(headers: Mapping[str, str], etag: str, mtime: float) -> int | None:
    """The status a conditional GET or HEAD gets instead of 200, or None: 412 when
    If-Match fails (or If-Unmodified-Since, when no If-Match is sent), 304 when
    If-None-Match matches (or If-Modified-Since holds, when no If-None-Match is sent).
    S3's rules; times compare at whole seconds, as HTTP dates carry them."""
    seconds = int(mtime)

    def etag_matches(value: str) -> bool:
        tags = [t.strip().removeprefix("W/").strip('"') for t in value.split(",")]
        return "*" in tags or etag in tags

    if "if-match" in headers:
        if not etag_matches(headers["if-match"]):
            return 412
    elif "if-unmodified-since" in headers:
        since = parse_time(headers["if-unmodified-since"])
        if since is not None and seconds > since:
            return 412
    if "if-none-match" in headers:
        if etag_matches(headers["if-none-match"]):
            return 304
    elif "if-modified-since" in headers:
        since = parse_time(headers["if-modified-since"])
        if since is not None and seconds <= since:
            return 304
    return None


def range_still_valid(headers: Mapping[str, str], etag: str, mtime: float) -> bool:
    """False when an ``If-Range`` names another version of the object (then the whole
    object is sent, as RFC 9110 says)."""
    value = headers.get("if-range")
    if not value:
        return True
    if value.strip().startswith('"'):
        return value.strip().strip('"') == etag
    since = parse_time(value)
    return since is not None and int(mtime) <= since


# ---------------------------------------------------------------------------
# Requests


class FileBody:
    """A WSGI response body streamed from an open file (``length`` bytes from
    ``offset``) in CHUNK pieces, so memory does not grow with the object; closes it
    when done."""

    def __init__(self, f, length: int, offset: int = 0):
        self.f = f
        self.remaining = length
        if offset:
            f.seek(offset)

    def __iter__(self):
        while self.remaining > 0:
            chunk = self.f.read(min(CHUNK, self.remaining))
            if not chunk:
                break
            self.remaining -= len(chunk)
            yield chunk

    def close(self):
        self.f.close()


class S3Request:
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
        #: Query parameters sent without ``=`` (``?uploads``): the subresources.
        self.flags: set[str] = set()
        for part in self.query_string.split("&") if self.query_string else ():
            name, eq, value = part.partition("=")
            self.query.setdefault(unquote(name), unquote(value))
            if not eq and name:
                self.flags.add(unquote(name))
        self.headers = {}
        for name, value in environ.items():
            if name.startswith("HTTP_"):
                self.headers[name[5:].replace("_", "-").lower()] = value
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                self.headers[name.replace("_", "-").lower()] = environ[name]
        self.caller = NOBODY  # until authenticated
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


class BodyReader:
    """Reads a request body in chunks, hashing as it goes; ``check()`` afterwards raises
    S3Error when it is short or a sent digest does not match."""

    def __init__(self, request: S3Request, limit: int):
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
            try:
                chunk = stream.read(want)
            except ValueError as e:  # cheroot's word for a malformed chunked body
                raise S3Error("IncompleteBody", f"The chunked request body is malformed: {e}", close=True) from None
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


def content_type(request: S3Request) -> str:
    return request.headers.get("content-type", "binary/octet-stream")


def user_meta(request: S3Request) -> dict:
    return {k: v for k, v in request.headers.items() if k.startswith("x-amz-meta-")}


def bounded_int(query, name: str, default: int, limit: int = MAX_KEYS) -> int:
    """A listing parameter: an integer from 0, at most ``limit``. Raises InvalidArgument."""
    try:
        value = int(query.get(name, default))
    except ValueError:
        value = -1
    if value < 0:
        raise S3Error("InvalidArgument", f"{name} must be a non-negative integer", {"ArgumentName": name})
    return min(value, limit)
