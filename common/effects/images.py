"""The image family: fetching an image into the compute host's cache."""

from __future__ import annotations

from dataclasses import dataclass

from common.effects.families import ImageEffect

# Images: performed by the compute host's image cache.


@dataclass(frozen=True)
class FetchImage(ImageEffect):
    """Make image ``image_id`` (``size_bytes`` long, served at ``location`` by the object
    store) available on this host; returns True when it had to be transferred, False
    when the host's cache already had it. Raises ImageError. Idempotent."""

    image_id: str
    location: str
    size_bytes: int
