"""Effect, the family base classes, ``FAMILIES`` and ``family_of``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Effect:
    """Base of every effect. Subclasses are frozen dataclasses under exactly one family."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        """Perform this effect with ``performer``, its family's performer (a Protocol of
        ``common.performers``), for ``agent``. Returns the result, or a SimPy generator
        returning it when the performer is a simulated one."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it is performed")

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        """-> ``handler(agent, effect)`` performing effects of this class with
        ``performer``: what a runtime's table calls. Hot effects override it to skip
        a call."""
        return _through_perform_with(performer)


def _through_perform_with(performer: Any) -> Callable[[Any, Any], Any]:
    def handler(agent: Any, effect: Effect) -> Any:
        return effect.perform_with(performer, agent)

    return handler


def _direct(cls: type, family: type, performer: Any, method: str) -> Callable[[Any, Any], Any]:
    """``bind`` for a family whose ``perform_with`` is ``performer.<method>(agent, effect)``:
    that bound method itself (one call, not three), unless ``cls`` performs otherwise."""
    direct = getattr(performer, method, None)
    if direct is None or cls.perform_with is not family.perform_with:  # type: ignore[attr-defined]
        return _through_perform_with(performer)
    return direct


class StoreEffect(Effect):
    """Family: the datastore (Redis). Performer: ``StorePerformer``."""

    __slots__ = ()


class RpcEffect(Effect):
    """Family: messages between services. Performer: ``RpcPerformer``."""

    __slots__ = ()


class HypervisorEffect(Effect):
    """Family: the hypervisor of the agent's host. Performer: ``HypervisorPerformer``."""

    __slots__ = ()


class NetDriverEffect(Effect):
    """Family: linux_net on the agent's network host. Performer: ``NetDriverPerformer``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(self)


class DirectoryEffect(Effect):
    """Family: the LDAP directory. Performer: ``DirectoryPerformer``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(agent, self)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        return _direct(cls, DirectoryEffect, performer, "perform")


class ImageEffect(Effect):
    """Family: the compute host's image cache. Performer: ``ImageFetcher``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(agent, self)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        return _direct(cls, ImageEffect, performer, "perform")


class KeyPairEffect(Effect):
    """Family: making SSH key pairs (randomness). Performer: ``KeyPairGenerator``."""

    __slots__ = ()


class ApiEffect(Effect):
    """Family: requests entering at the EC2 API (the workload's). Performer: ``ApiPerformer``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(agent, self)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        return _direct(cls, ApiEffect, performer, "perform")


class TaskEffect(Effect):
    """Family: starting sub-workflows as tasks of their own and waiting for them (fork
    and join). Performer: ``TaskPerformer`` (the runtime's process or thread pool)."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(agent, self)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        return _direct(cls, TaskEffect, performer, "perform")


class WebEffect(Effect):
    """Family: requests to web hook receivers (HTTP POST). Performer: ``WebPerformer``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.post(agent, self)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        return _direct(cls, WebEffect, performer, "post")


class RuntimeEffect(Effect):
    """Family: the runtime's own clock, ids, random streams and recorder. Performer:
    ``RuntimePerformer`` (the runtime itself)."""

    __slots__ = ()


#: Every family, in no particular order; each effect class subclasses exactly one.
FAMILIES: tuple[type[Effect], ...] = (
    StoreEffect, RpcEffect, HypervisorEffect, NetDriverEffect, DirectoryEffect, ImageEffect,
    KeyPairEffect, ApiEffect, TaskEffect, WebEffect, RuntimeEffect,
)


def family_of(kind: type) -> type[Effect]:
    """-> the family ``kind`` belongs to. Raises TypeError when it is not an effect or
    belongs to more than one family."""
    found = [family for family in FAMILIES if issubclass(kind, family)]
    if len(found) != 1:
        what = "no family" if not found else "families " + ", ".join(f.__name__ for f in found)
        raise TypeError(f"{kind.__qualname__} belongs to {what}; an effect belongs to exactly one")
    return found[0]
