"""Observations managers hand to the recorder with the ``Record`` effect."""

from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceStateChanged:
    instance_id: str
    src: str | None
    dst: str
    at: float
    host: str = ""


@dataclass(frozen=True)
class RequestRejected:
    """An API request refused before anything was created."""

    action: str
    code: str
    message: str
