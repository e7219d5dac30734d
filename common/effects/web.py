"""The web family: one POST to a web hook receiver."""

from __future__ import annotations

from dataclasses import dataclass

from common.effects.families import WebEffect


@dataclass(frozen=True)
class HttpPost(WebEffect):
    """POST ``body`` to ``url`` with ``headers`` (pairs), giving up after ``timeout``
    seconds -> the HTTP status (an int; a redirect is an answer, never followed).
    Raises ``DeliveryFailed`` when no answer came (refused, reset, timed out). Not
    idempotent for the receiver, which is why every event carries an id to de-duplicate."""

    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
