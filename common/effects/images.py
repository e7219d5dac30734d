"""The image family: the object store that holds images, and the compute host's cache."""

from __future__ import annotations

from dataclasses import dataclass

from common.effects.families import ImageEffect

# Images: performed by the image service of the agent (the compute host's cache, or the
# API's client of the object store).


@dataclass(frozen=True)
class FetchImage(ImageEffect):
    """Make image ``image_id`` (``size_bytes`` long, served at ``location`` by the object
    store) available on this host; returns True when it had to be transferred, False
    when the host's cache already had it. ``etag`` is the object's ETag when the image
    was registered (empty: not checked): a transfer whose ETag differs (the object was
    replaced) or whose bytes do not have that MD5 fails. Raises ImageError, leaving
    nothing in the cache. Idempotent."""

    image_id: str
    location: str
    size_bytes: int
    etag: str = ""


@dataclass(frozen=True)
class StatObject(ImageEffect):
    """-> ``{"size_bytes": int, "etag": str}`` of the object at ``location``
    (``bucket/key``), or None when there is no such object in a bucket that project
    ``owner`` owns (empty ``owner``: any bucket; an admin's registration). Missing and
    not-yours answer alike, so a caller learns nothing about other projects' buckets.
    Raises ImageError (ObjectStoreUnavailable when the store does not answer). Reads
    only."""

    location: str
    owner: str = ""
