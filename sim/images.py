"""A simulated image cache per compute host: performs FetchImage.

*Features*: each host (the agent's ``host``) keeps the ids of the images it holds. The
first FetchImage of an image on a host transfers it: ``size_bytes / bandwidth`` seconds
plus a latency draw (connection set-up, authentication, the object store finding the
file), and returns True. Later fetches on that host return False at once. Fetches of an
image already being transferred to the host wait for that transfer and return False,
as the real cache's lock per image does (the transfer runs as its own SimPy process, so
a requester that dies does not strand the others). ``transfers``, ``hits``, ``waits``
and ``bytes_transferred`` count what happened.

*What it does not model*: a shared link (each host pulls at the full ``bandwidth`` however many
pull at once, and the object store has no capacity limit), transfer failures and
corrupt downloads, disk space and eviction (a cached image stays for the run, as in
2010's ``_base``, which nothing pruned), copy-on-write overlays and their creation time.
"""

from __future__ import annotations

from common.effects import FetchImage, ImageEffect
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

    def perform(self, agent, effect: FetchImage):
        """SimPy generator: -> True when this fetch transferred the image."""
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
