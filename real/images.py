"""The compute host's image cache: performs FetchImage against the object store.

*Features*

- Fetches ``GET <base_url>/<bucket>/<key>`` (the image's ``location``), signed with AWS
  Signature Version 4 by the compute service's own credentials, into
  ``<cache_dir>/<image_id>`` (``cache_dir`` is ``<instances_path>/_base``, 2010's
  directory of base images). Why signed headers rather than a presigned URL: the fetch
  is made by the host that holds the credentials, so a presigned URL would only add an
  expiry window to choose and a bearer secret that ends up in logs; the store verifies
  one form of authentication for everything. The compute's key must be an admin's (it
  reads every project's image buckets), as 2010's services ran with admin rights.
- Per-host cache: an image already in ``cache_dir`` with the expected size is not
  fetched again (the effect returns False). Concurrent fetches of one image download it
  once: a lock per image within the process, and an ``flock`` on
  ``<cache_dir>/.<image_id>.lock`` across processes (real-mode runs put several compute
  daemons on one machine with one instances_path).
- Never a partial image: the body goes to a temporary file in ``cache_dir``, is checked
  (length = the record's ``size_bytes`` and the object's Content-Length; MD5 = the
  object's ETag), fsynced, then renamed into place. Any failure removes the temporary
  file and raises ImageError into the manager.

*Not supported*: eviction or disk-space checks (2010 never pruned ``_base``), resuming
an interrupted download (Range), HTTPS (the store is plain HTTP on the management
network, as in 2010), decrypting or untarring 2010 bundles (the object is the image),
and a cached file changed behind the cache's back (its size is checked, not its MD5).

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

from common.effects import FetchImage, ImageEffect
from common.errors import ImageError, InvalidParameterValue
from common.images import parse_location
from real.objectstore.auth import sign_headers

_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHUNK = 1 << 20


class ImageCache:
    """A ``common.performers.ImageFetcher`` downloading from the object store."""

    def __init__(self, base_url: str, credentials, cache_dir, *, region: str = "us-east-1", timeout: float = 60.0):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"object store URL must be http://HOST:PORT, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.netloc = parts.netloc
        self.host, self.port = parts.hostname, parts.port or 80
        self.access_key, self.secret_key = credentials
        self.region = region
        self.timeout = timeout
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

    def perform(self, agent, effect: FetchImage) -> bool:
        return self.fetch(effect.image_id, effect.location, effect.size_bytes)

    def fetch(self, image_id: str, location: str, size_bytes: int) -> bool:
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
            self._download(image_id, location, size_bytes, final)
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

    def url(self, location: str) -> str:
        try:
            bucket, key = parse_location(location)
        except InvalidParameterValue as e:
            raise ImageError(str(e)) from None
        return f"{self.base_url}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"

    def _download(self, image_id: str, location: str, size_bytes: int, final: str):
        url = self.url(location)
        headers = sign_headers("GET", url, self.access_key, self.secret_key, region=self.region)
        fd: int | None
        fd, tmp = tempfile.mkstemp(prefix=f".{image_id}.part-", dir=self.cache_dir)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            try:
                conn.request("GET", urlsplit(url).path, headers=headers)
                response = conn.getresponse()
                if response.status != 200:
                    raise ImageError(f"cannot fetch image {image_id} from {location}: {_describe_error(response)}")
                declared = response.getheader("Content-Length")
                if declared is not None and int(declared) != size_bytes:
                    raise ImageError(f"image {image_id} at {location} is {declared} bytes, its record says {size_bytes}")
                md5, got = hashlib.md5(), 0
                with os.fdopen(fd, "wb") as out:
                    fd = None
                    while chunk := response.read(CHUNK):
                        got += len(chunk)
                        if got > size_bytes:
                            raise ImageError(f"image {image_id} at {location} is longer than its {size_bytes} bytes")
                        md5.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            except (OSError, http.client.HTTPException) as e:
                raise ImageError(f"cannot fetch image {image_id} from {location}: {type(e).__name__}: {e}") from None
            if got != size_bytes:
                raise ImageError(f"short download of image {image_id}: {got} of {size_bytes} bytes")
            etag = (response.getheader("ETag") or "").strip('"')
            if etag and "-" not in etag and etag != md5.hexdigest():  # "-": a multipart ETag, not an MD5
                raise ImageError(f"image {image_id} from {location} is corrupt: MD5 {md5.hexdigest()}, ETag {etag}")
            os.replace(tmp, final)
        finally:
            conn.close()
            if fd is not None:
                os.close(fd)
            if os.path.exists(tmp):
                os.unlink(tmp)


def _describe_error(response) -> str:
    body = response.read(64 * 1024)
    try:
        root = ElementTree.fromstring(body)
        code, message = root.findtext("Code"), root.findtext("Message")
    except ElementTree.ParseError:
        code, message = None, None
    if code:
        return f"HTTP {response.status} {code}: {message}"
    return f"HTTP {response.status} {response.reason}"


def install(runtime, base_url: str, credentials, cache_dir, **options) -> ImageCache:
    """Perform FetchImage on ``runtime`` with an image cache in ``cache_dir``; returns it."""
    cache = ImageCache(base_url, credentials, cache_dir, **options)
    runtime.register(ImageEffect, cache)
    return cache
