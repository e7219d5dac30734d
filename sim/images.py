"""A simulated image cache per compute host and the objects it fetches from: performs
FetchImage and StatObject.

*Features*: ``objects`` stands for the object store: ``put(location, owner, size)``
uploads an object (its ETag a stand-in derived from the location and size), and
StatObject answers its size and ETag after one latency draw, or None when it is
missing or in another project's bucket. Each host (the agent's ``host``) keeps the ids
of the images it holds. The first FetchImage of an image on a host transfers it:
``size_bytes / bandwidth`` seconds plus a latency draw (connection set-up,
authentication, the object store finding the file), and returns True. Later fetches on
that host return False at once. Fetches of an image already being transferred to the
host wait for that transfer and return False, as the real cache's lock per image does
(the transfer runs as its own SimPy process, so a requester that dies does not strand
the others). ``transfers``, ``hits``, ``waits`` and ``bytes_transferred`` count what
happened.

*What it does not model*: a shared link (each host pulls at the full ``bandwidth``
however many pull at once, and the object store has no capacity limit), transfer
failures, corrupt downloads and objects replaced after registration (the ETag is not
checked), object bodies (only sizes), disk space and eviction (a cached image stays for
the run, as in 2010's ``_base``, which nothing pruned), copy-on-write overlays and their
creation time.
"""
from __future__ import annotations

import hashlib

from common.effects import FetchImage, ImageEffect, StatObject
from common.errors import ImageError


class SimImageCache:
    """Every compute host's image cache; a ``common.performers.ImageFetcher``."""

    def __init__(self, env, bandwidth: float, latency, rng):
        """``bandwidth``: bytes per second one host pulls at; ``latency``: a
        distribution (``sample(rng)``) or a number of seconds added to each transfer."""
        if not bandwidth > 0:
            raise ValueError(f"image bandwidth must be positive bytes per second, got {bandwidth!r}")
        self.env = env
        self.bandwidth = float(bandwidth)
        self.latency = latency
        self.rng = rng
        #: location -> (owner project, size in bytes, ETag): the object store's objects.
        self.objects: dict[str, tuple[str, int, str]] = {}
        self.cached: dict[str, set[str]] = {}
        self._inflight: dict[tuple[str, str], object] = {}
        self.transfers = 0
        self.hits = 0
        self.waits = 0
        self.bytes_transferred = 0

    def transfer_time(self, size_bytes: int) -> float:
        latency = self.latency.sample(self.rng) if hasattr(self.latency, "sample") else float(self.latency)
        return size_bytes / self.bandwidth + latency

    def holds(self, host: str, image_id: str) -> bool:
        return image_id in self.cached.get(host, ())

    def put(self, location: str, owner: str, size_bytes: int) -> str:
        """Upload an object of ``size_bytes`` to ``location`` in a bucket of project
        ``owner``; -> its ETag (an MD5 stand-in: the sim holds no bytes)."""
        etag = hashlib.md5(f"{location}:{size_bytes}".encode()).hexdigest()
        self.objects[location] = (owner, int(size_bytes), etag)
        return etag

    def perform(self, agent, effect: FetchImage | StatObject):
        """A SimPy generator: FetchImage -> True when this fetch transferred the image;
        StatObject -> {"size_bytes", "etag"} or None."""
        if isinstance(effect, StatObject):
            return self._stat(effect)
        return self._fetch(agent, effect)

    def _stat(self, effect: StatObject):
        yield self.env.timeout(self.transfer_time(0))
        found = self.objects.get(effect.location)
        if found is None or (effect.owner and found[0] != effect.owner):
            return None
        return {"size_bytes": found[1], "etag": found[2]}

    def _fetch(self, agent, effect: FetchImage):
        if effect.size_bytes < 0:
            raise ImageError(f"image {effect.image_id} has a negative size ({effect.size_bytes})")
        host = agent.host or agent.name
        if self.holds(host, effect.image_id):
            self.hits += 1
            return False
        key = (host, effect.image_id)
        transfer = self._inflight.get(key)
        if transfer is not None:
            self.waits += 1
            yield transfer
            return False
        transfer = self._inflight[key] = self.env.process(self._transfer(key, effect.size_bytes))
        yield transfer
        return True

    def _transfer(self, key, size_bytes: int):
        host, image_id = key
        yield self.env.timeout(self.transfer_time(size_bytes))
        self.cached.setdefault(host, set()).add(image_id)
        del self._inflight[key]
        self.transfers += 1
        self.bytes_transferred += size_bytes


def install(runtime, bandwidth: float, latency, rng) -> SimImageCache:
    """Perform FetchImage on ``runtime`` with a new per-host cache; returns the cache."""
    cache = SimImageCache(runtime.env, bandwidth, latency, rng)
    runtime.register(ImageEffect, cache)
    return cache
