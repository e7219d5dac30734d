"""real/images.py against a local ObjectStoreServer: fetching images into a temporary
cache (verified, never partial, once per image) and reading objects' size and ETag."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3") if not os.environ.get("CI") else __import__("boto3")
from botocore.config import Config  # noqa: E402

from common.effects import FetchImage, StatObject  # noqa: E402
from common.errors import ImageError  # noqa: E402
from common.images import ObjectStoreUnavailable  # noqa: E402
from real import images  # noqa: E402
from real.objectstore import ObjectStoreServer  # noqa: E402
from real.runner import Agent, RealRuntime  # noqa: E402

KEYS = {"alice": ("alice-secret", "p1", False), "compute": ("compute-secret", "novalab", True)}
IMAGE = os.urandom(300_000)
SERVICE = ("compute", "compute-secret")


class Counting:
    """Middleware counting object GETs, holding each for a moment (so concurrent fetches
    overlap) and, when asked, damaging the bodies it passes on."""

    def __init__(self, app, damage=None):
        self.app, self.damage, self.gets = app, damage, 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "GET" and environ["PATH_INFO"].count("/") >= 2:
            with self.lock:
                self.gets += 1
            time.sleep(0.2)
        body = self.app(environ, start_response)
        if self.damage is None or environ["REQUEST_METHOD"] != "GET":
            return body
        data = b"".join(body)
        getattr(body, "close", lambda: None)()
        return [self.damage(data)]


def serve(tmp_path, damage=None):
    """A store holding IMAGE at imgs/ubuntu.img (uploaded by alice); -> (server, middleware)."""
    seen = {}

    def middleware(app):
        seen["m"] = Counting(app, damage)
        return seen["m"]

    server = ObjectStoreServer(tmp_path / "store", KEYS.get, port=0, middleware=middleware)
    s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="alice:p1",
                      aws_secret_access_key="alice-secret", config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="imgs")
    s3.put_object(Bucket="imgs", Key="ubuntu.img", Body=IMAGE)
    return server, seen["m"]


@pytest.fixture
def store(tmp_path):
    server, counter = serve(tmp_path)
    yield server, counter
    server.stop()


def test_fetch_downloads_into_base_then_serves_from_cache(tmp_path, store):
    """The first fetch downloads the object to _base/<image id>; the second finds it there."""
    server, counter = store
    cache = images.ImageCache(server.url, SERVICE, tmp_path / "instances" / "_base")
    assert cache.fetch("ami-ubuntu", "imgs/ubuntu.img", len(IMAGE)) is True
    assert cache.fetch("ami-ubuntu", "imgs/ubuntu.img", len(IMAGE)) is False
    assert (tmp_path / "instances" / "_base" / "ami-ubuntu").read_bytes() == IMAGE
    assert counter.gets == 1


def test_installed_cache_performs_fetch_image_effects(tmp_path, store):
    """install() makes the real runtime perform FetchImage through the cache."""
    server, _ = store
    runtime = RealRuntime(store=None, rpc_client_factory=None)
    images.install(runtime, server.url, SERVICE, tmp_path / "_base")

    def work():
        return (yield FetchImage("ami-ubuntu", "imgs/ubuntu.img", len(IMAGE))), \
            (yield FetchImage("ami-ubuntu", "imgs/ubuntu.img", len(IMAGE)))

    assert runtime.drive(Agent("compute.h1", "h1"), work()) == (True, False)


def test_two_threads_fetching_one_image_download_it_once(tmp_path, store):
    """Concurrent fetches of one image on a host make one GET; exactly one reports the transfer."""
    server, counter = store
    cache = images.ImageCache(server.url, SERVICE, tmp_path / "_base")
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.fetch("ami-u", "imgs/ubuntu.img", len(IMAGE))))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False, True] and counter.gets == 1


def test_two_caches_on_one_directory_download_once(tmp_path, store):
    """Two caches (as two compute daemons) sharing one _base download an image once."""
    server, counter = store
    caches = [images.ImageCache(server.url, SERVICE, tmp_path / "_base") for _ in range(2)]
    threads = [threading.Thread(target=c.fetch, args=("ami-u", "imgs/ubuntu.img", len(IMAGE))) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert counter.gets == 1 and sum(c.transfers for c in caches) == 1


def test_corrupt_download_leaves_no_cached_file(tmp_path):
    """A body whose MD5 does not match the ETag raises ImageError and leaves nothing in the cache."""
    server, _ = serve(tmp_path, damage=lambda data: bytes([data[0] ^ 0xFF]) + data[1:])
    try:
        cache = images.ImageCache(server.url, SERVICE, tmp_path / "_base")
        with pytest.raises(ImageError, match="corrupt"):
            cache.fetch("ami-u", "imgs/ubuntu.img", len(IMAGE))
        assert [p for p in os.listdir(tmp_path / "_base") if not p.endswith(".lock")] == []
    finally:
        server.stop()


def test_short_download_leaves_no_cached_file(tmp_path, store):
    """An object shorter than the image record says raises ImageError and caches nothing."""
    server, _ = store
    cache = images.ImageCache(server.url, SERVICE, tmp_path / "_base")
    with pytest.raises(ImageError, match="bytes"):
        cache.fetch("ami-u", "imgs/ubuntu.img", len(IMAGE) + 1)
    assert [p for p in os.listdir(tmp_path / "_base") if not p.endswith(".lock")] == []


def test_missing_object_and_wrong_credentials_are_image_errors(tmp_path, store):
    """A missing object and a refused signature both raise ImageError naming the S3 code."""
    server, _ = store
    with pytest.raises(ImageError, match="NoSuchKey"):
        images.ImageCache(server.url, SERVICE, tmp_path / "a").fetch("ami-u", "imgs/nothere.img", 1)
    with pytest.raises(ImageError, match="SignatureDoesNotMatch"):
        images.ImageCache(server.url, ("compute", "wrong"), tmp_path / "b").fetch("ami-u", "imgs/ubuntu.img", 1)


def test_unsafe_image_id_is_refused(tmp_path, store):
    """An image id that is not a plain name cannot pick a path outside the cache."""
    server, _ = store
    with pytest.raises(ImageError):
        images.ImageCache(server.url, SERVICE, tmp_path / "_base").fetch("../escape", "imgs/ubuntu.img", len(IMAGE))
    assert not (tmp_path / "escape").exists()


def test_cached_file_has_the_objects_md5(tmp_path, store):
    """What lands in the cache is byte for byte the uploaded object."""
    server, _ = store
    cache = images.ImageCache(server.url, SERVICE, tmp_path / "_base")
    cache.fetch("ami-u", "imgs/ubuntu.img", len(IMAGE))
    assert hashlib.md5(Path(cache.path("ami-u")).read_bytes()).digest() == hashlib.md5(IMAGE).digest()


def test_an_object_replaced_since_registration_is_refused(tmp_path, store):
    """A fetch whose object no longer has the registered ETag fails with the reason and caches nothing."""
    server, _ = store
    cache = images.ImageCache(server.url, SERVICE, tmp_path / "_base")
    with pytest.raises(ImageError, match="changed since it was registered"):
        cache.fetch("ami-u", "imgs/ubuntu.img", len(IMAGE), hashlib.md5(b"another image").hexdigest())
    assert [p for p in os.listdir(tmp_path / "_base") if not p.endswith(".lock")] == []


def test_the_registered_etag_is_checked_against_the_bytes(tmp_path):
    """Damaged bytes under the registered ETag are a bad checksum, named as such."""
    server, _ = serve(tmp_path, damage=lambda data: data[:-1] + bytes([data[-1] ^ 1]))
    try:
        cache = images.ImageCache(server.url, SERVICE, tmp_path / "_base")
        with pytest.raises(ImageError, match="bad checksum"):
            cache.fetch("ami-u", "imgs/ubuntu.img", len(IMAGE), hashlib.md5(IMAGE).hexdigest())
    finally:
        server.stop()


def test_stat_reads_size_and_etag_of_an_object(store):
    """StatObject answers the size and the MD5 ETag without downloading the object."""
    server, _ = store
    client = images.ObjectStoreClient(server.url, SERVICE)
    assert client.stat("imgs/ubuntu.img") == {"size_bytes": len(IMAGE), "etag": hashlib.md5(IMAGE).hexdigest()}


@pytest.mark.parametrize("location, owner", [("imgs/nothere.img", ""), ("nobucket/x.img", ""),
                                             ("imgs/ubuntu.img", "p2")])
def test_stat_of_a_missing_or_foreign_object_is_none(store, location, owner):
    """No object, no bucket, and a bucket of another project than ``owner`` all answer None."""
    server, _ = store
    assert images.ObjectStoreClient(server.url, SERVICE).stat(location, owner) is None


def test_stat_for_the_owning_project_finds_the_object(store):
    """The bucket's own project (p1) is the expected owner: found."""
    server, _ = store
    assert images.ObjectStoreClient(server.url, SERVICE).stat("imgs/ubuntu.img", "p1")["size_bytes"] == len(IMAGE)


def test_stat_of_an_empty_object_is_size_zero(store):
    """An empty object (the range cannot be satisfied) has size 0."""
    server, _ = store
    s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="alice:p1",
                      aws_secret_access_key="alice-secret", config=Config(s3={"addressing_style": "path"}))
    s3.put_object(Bucket="imgs", Key="empty.img", Body=b"")
    assert images.ObjectStoreClient(server.url, SERVICE).stat("imgs/empty.img")["size_bytes"] == 0


def test_stat_with_bad_credentials_or_no_store_is_an_error(store):
    """Refused credentials name the S3 code; a store that does not answer is ObjectStoreUnavailable."""
    server, _ = store
    with pytest.raises(ImageError, match="SignatureDoesNotMatch"):
        images.ObjectStoreClient(server.url, ("compute", "wrong")).stat("imgs/ubuntu.img")
    with pytest.raises(ObjectStoreUnavailable):
        images.ObjectStoreClient("http://127.0.0.1:1", SERVICE, timeout=2).stat("imgs/ubuntu.img")


def test_a_process_without_an_object_store_says_so():
    """NoObjectStore refuses every image effect with ObjectStoreUnavailable naming s3_url."""
    with pytest.raises(ObjectStoreUnavailable, match="s3_url"):
        images.NoObjectStore().perform(None, StatObject("b/k"))
