"""real/images.py fetching images from a local ObjectStoreServer into a temporary cache."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3") if not os.environ.get("CI") else __import__("boto3")
from botocore.config import Config  # noqa: E402

from common.effects import FetchImage  # noqa: E402
from common.errors import ImageError  # noqa: E402
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
