"""The object store as the images' home: performs FetchImage (a compute host's cache)
and StatObject (the API registering an image).

*Features*

- ``ObjectStoreClient.stat(location, owner)`` (StatObject): the object's size and ETag
  from a one-byte ranged GET (``Range: bytes=0-0``; a HEAD would do, but its errors
  have no body to tell a missing or foreign object from bad credentials). With
  ``owner`` the request carries ``x-amz-expected-bucket-owner: <owner>``, so an object
  in another project's bucket answers like a missing one: None. Signed with the
  service's own credentials, an admin's (it reads every project's buckets).
- ``ImageCache.fetch`` (FetchImage): ``GET <base_url>/<bucket>/<key>`` (the image's
  ``location``), signed with AWS Signature Version 4, into ``<cache_dir>/<image_id>``
  (``cache_dir`` is ``<instances_path>/_base``, 2010's directory of base images, which
  the libvirt driver points a domain's root disk at). Why signed headers rather than a
  presigned URL: the fetch is made by the host that holds the credentials, so a
  presigned URL would only add an expiry window to choose and a bearer secret that ends
  up in logs; the store verifies one form of authentication for everything.
- Per-host cache: an image already in ``cache_dir`` with the expected size is not
  fetched again (the effect returns False). Concurrent fetches of one image download it
  once: a lock per image within the process, and an ``flock`` on
  ``<cache_dir>/.<image_id>.lock`` across processes (several compute daemons on one
  machine share one instances_path).
- Verified, never partial: the body goes to a temporary file in ``cache_dir``, is
  checked (length = the record's ``size_bytes`` and the object's Content-Length; the
  response's ETag = the ETag registered with the image, so an object replaced since
  is refused; MD5 of the bytes = that ETag when it is an MD5), fsynced, then renamed
  into place. Any failure removes the temporary file and raises ImageError, with the
  reason, into the manager.

*Not supported*: eviction or disk-space checks (2010 never pruned ``_base``), resuming
an interrupted download (Range), HTTPS (the store is plain HTTP on the management
network, as in 2010), decrypting or untarring 2010 bundles (the object is the image),
verifying the bytes of an object uploaded in parts (its ETag is not an MD5 of the
bytes: only its length and ETag are checked), and a cached file changed behind the
cache's back (its size is checked, not its MD5).

*Connection string*: ``base_url`` = the object store's ``http://HOST:PORT`` (2010:
``s3_host:s3_port``, 127.0.0.1:3333); ``credentials`` = ``(access_key, secret_key)``,
the access key optionally ``<access>:<project>``; ``region`` any name (default
us-east-1).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

from common.effects import FetchImage, ImageEffect, StatObject
from common.errors import ImageError, InvalidParameterValue
from common.images import ObjectStoreUnavailable, parse_location
from real.objectstore.auth import sign_headers

_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CONTENT_RANGE = re.compile(r"^bytes (?:\d+-\d+|\*)/(\d+)$")
CHUNK = 1 << 20
#: Bytes of an error body read to name its S3 code (error documents are small).
ERROR_BODY = 64 * 1024


class ObjectStoreClient:
    """Signed requests to the object store as the service; performs StatObject. A
    ``common.performers.ImageFetcher`` for a process that fetches no image (the API):
    FetchImage raises ImageError."""

    def __init__(self, base_url: str, credentials, *, region: str = "us-east-1", timeout: float = 60.0):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"object store URL must be http://HOST:PORT, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.host, self.port = parts.hostname, parts.port or 80
        self.access_key, self.secret_key = credentials
        self.region = region
        #: Seconds a connection or a read may take: a store that hangs fails the request.
        self.timeout = timeout

    def perform(self, agent, effect: FetchImage | StatObject):
        if isinstance(effect, StatObject):
            return self.stat(effect.location, effect.owner)
        raise ImageError(f"this process keeps no image cache: cannot fetch image {effect.image_id}")

    def url(self, location: str) -> str:
        try:
            bucket, key = parse_location(location)
        except InvalidParameterValue as e:
            raise ImageError(str(e)) from None
        return f"{self.base_url}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"

    def _get(self, url: str, headers: dict | None = None):
        """-> (connection, response) of a signed GET; the caller closes the connection.
        ObjectStoreUnavailable when the store cannot be reached."""
        signed = sign_headers("GET", url, self.access_key, self.secret_key, region=self.region, headers=headers)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", urlsplit(url).path, headers=signed)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise ObjectStoreUnavailable(f"the object store at {self.base_url} does not answer: "
                                         f"{type(e).__name__}: {e}") from None

    def stat(self, location: str, owner: str = "") -> dict | None:
        """StatObject: {"size_bytes", "etag"} of the object, or None (module docstring)."""
        headers = {"range": "bytes=0-0", **({"x-amz-expected-bucket-owner": owner} if owner else {})}
        conn, response = self._get(self.url(location), headers)
        try:
            status, etag = response.status, (response.getheader("ETag") or "").strip('"')
            if status == 200:
                return {"size_bytes": int(response.getheader("Content-Length") or 0), "etag": etag}
            if status in (206, 416):  # one byte, or an empty object
                found = _CONTENT_RANGE.match(response.getheader("Content-Range") or "")
                if found is None:
                    raise ImageError(f"the object store answered {location} without a usable Content-Range")
                return {"size_bytes": int(found.group(1)), "etag": etag}
            code, message = _error_of(response)
            if status == 404 or (status == 403 and code == "AccessDenied"):
                return None
            if status >= 500:
                raise ObjectStoreUnavailable(f"the object store failed on {location}: HTTP {status} {code}: {message}")
            raise ImageError(f"the object store refused to read {location}: HTTP {status} {code}: {message}")
        except (OSError, http.client.HTTPException) as e:
            raise ObjectStoreUnavailable(f"reading {location} from the object store failed: {e}") from None
        finally:
            conn.close()


class ImageCache(ObjectStoreClient):
    """A ``common.performers.ImageFetcher`` downloading from the object store."""

    def __init__(self, base_url: str, credentials, cache_dir, *, region: str = "us-east-1", timeout: float = 60.0):
        super().__init__(base_url, credentials, region=region, timeout=timeout)
        self.cache_dir = os.path.abspath(os.fspath(cache_dir))
        os.makedirs(self.cache_dir, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        #: Downloads this cache made (the effect's True answers).
        self.transfers = 0

    def path(self, image_id: str) -> str:
        if not _IMAGE_ID.match(image_id or ""):
            raise ImageError(f"not an image id: {image_id!r}")
        return os.path.join(self.cache_dir, image_id)

    def perform(self, agent, effect: FetchImage | StatObject):
        if isinstance(effect, StatObject):
            return self.stat(effect.location, effect.owner)
        return self.fetch(effect.image_id, effect.location, effect.size_bytes, effect.etag)

    def fetch(self, image_id: str, location: str, size_bytes: int, etag: str = "") -> bool:
        """Make the image available in the cache; True when this call downloaded it."""
        final = self.path(image_id)
        if self._cached(final, size_bytes):
            return False
        with self._thread_lock(image_id), self._file_lock(image_id):
            if self._cached(final, size_bytes):
                return False
            try:
                os.unlink(final)  # present with the wrong size: fetch it again
            except FileNotFoundError:
                pass
            self._download(image_id, location, size_bytes, etag, final)
            self.transfers += 1
            return True

    @staticmethod
    def _cached(path: str, size_bytes: int) -> bool:
        try:
            return os.stat(path).st_size == size_bytes
        except FileNotFoundError:
            return False

    @contextmanager
    def _thread_lock(self, image_id: str):
        with self._locks_guard:
            lock = self._locks.setdefault(image_id, threading.Lock())
        with lock:
            yield

    @contextmanager
    def _file_lock(self, image_id: str):
        fd = os.open(os.path.join(self.cache_dir, f".{image_id}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _download(self, image_id: str, location: str, size_bytes: int, etag: str, final: str):
        fd: int | None
        fd, tmp = tempfile.mkstemp(prefix=f".{image_id}.part-", dir=self.cache_dir)
        conn = None
        try:
            conn, response = self._get(self.url(location))
            try:
                if response.status != 200:
                    code, message = _error_of(response)
                    raise ImageError(f"cannot fetch image {image_id} from {location}: HTTP {response.status} "
                                     f"{code}: {message}")
                served = (response.getheader("ETag") or "").strip('"')
                if etag and served != etag:
                    raise ImageError(f"image {image_id} at {location} changed since it was registered: ETag "
                                     f"{served}, registered {etag}")
                declared = response.getheader("Content-Length")
                if declared is not None and int(declared) != size_bytes:
                    raise ImageError(f"image {image_id} at {location} is {declared} bytes, its record says {size_bytes}")
                with os.fdopen(fd, "wb") as out:
                    fd = None
                    md5, got = _copy(response, out, size_bytes, f"image {image_id} at {location}")
            except (OSError, http.client.HTTPException) as e:
                raise ImageError(f"cannot fetch image {image_id} from {location}: {type(e).__name__}: {e}") from None
            if got != size_bytes:
                raise ImageError(f"short download of image {image_id}: {got} of {size_bytes} bytes")
            expected = etag or served
            if expected and "-" not in expected and expected != md5:  # "-": a multipart ETag, not an MD5
                raise ImageError(f"image {image_id} from {location} is corrupt: bad checksum, MD5 {md5}, "
                                 f"expected {expected}")
            os.replace(tmp, final)
        finally:
            if conn is not None:
                conn.close()
            if fd is not None:
                os.close(fd)
            if os.path.exists(tmp):
                os.unlink(tmp)


def _copy(response, out, limit: int, what: str) -> tuple[str, int]:
    """Copy the body into ``out`` (fsynced), refusing more than ``limit`` bytes; ->
    (MD5 hex, bytes copied)."""
    md5, got = hashlib.md5(), 0
    while chunk := response.read(CHUNK):
        got += len(chunk)
        if got > limit:
            raise ImageError(f"{what} is longer than its {limit} bytes")
        md5.update(chunk)
        out.write(chunk)
    out.flush()
    os.fsync(out.fileno())
    return md5.hexdigest(), got


def _error_of(response) -> tuple[str, str]:
    """(S3 code, message) of an error response; (reason, "") when its body is no S3 error."""
    body = response.read(ERROR_BODY)
    try:
        root = ElementTree.fromstring(body)
        code, message = root.findtext("Code"), root.findtext("Message")
    except ElementTree.ParseError:
        code, message = None, None
    return (code, message or "") if code else (response.reason or "", "")


def install(runtime, base_url: str, credentials, cache_dir, **options) -> ImageCache:
    """Perform ImageEffect on ``runtime`` with an image cache in ``cache_dir``; returns it."""
    cache = ImageCache(base_url, credentials, cache_dir, **options)
    runtime.register(ImageEffect, cache)
    return cache


class NoObjectStore:
    """The ImageEffect performer of a cloud without an object store (``s3_url`` unset):
    every effect raises ObjectStoreUnavailable saying so."""

    def perform(self, agent, effect):
        raise ObjectStoreUnavailable("this cloud has no object store configured (s3_url): images cannot be "
                                     "registered or fetched")


def install_client(runtime, base_url: str | None, credentials, **options):
    """Perform ImageEffect on ``runtime`` as a process without an image cache (the
    API): StatObject against the store at ``base_url``, or NoObjectStore when None."""
    performer = NoObjectStore() if not base_url else ObjectStoreClient(base_url, credentials, **options)
    runtime.register(ImageEffect, performer)
    return performer
