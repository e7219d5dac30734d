"""Observations managers hand to the recorder with the ``Record`` effect."""

from dataclasses import dataclass

from common.effects.quick_init import quick_init


@quick_init  # one per transition: the cheaper __init__ of the effects
@dataclass(frozen=True)
class InstanceStateChanged:
    instance_id: str
    src: str | None
    dst: str
    at: float
    host: str = ""


@quick_init
@dataclass(frozen=True)
class RequestRejected:
    """An API request refused before anything was created."""

    action: str
    code: str
    message: str
