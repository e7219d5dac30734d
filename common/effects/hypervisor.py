"""The hypervisor family: domains on the agent's host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.effects.families import HypervisorEffect

# Hypervisor: performed on the hypervisor of the service running the generator.


@dataclass(frozen=True)
class DomainSpec:
    """What a hypervisor needs to build a domain."""

    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int = 0
    mac_address: str = ""
    bridge: str = ""
    image_id: str = ""
    #: The id of the image in the host's image cache the root disk is (FetchImage put
    #: it there); empty: no image was fetched and the disk is the domain's own.
    disk_image: str = ""


@dataclass(frozen=True)
class Spawn(HypervisorEffect):
    """Define and boot a domain; returns once it is running.

    Raises HypervisorError (InsufficientMemory when it does not fit); on failure no
    partial domain is left behind. Not idempotent: a second spawn of the same name
    raises HypervisorError("domain exists").
    """

    spec: DomainSpec

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.spawn(self.spec)


@dataclass(frozen=True)
class Destroy(HypervisorEffect):
    """Stop and undefine a domain. Returns True if it existed, False if it was already
    gone (which is success). Idempotent."""

    name: str

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.destroy(self.name)


@dataclass(frozen=True)
class Reboot(HypervisorEffect):
    """Restart a domain; returns once it is running again. Raises HypervisorError when
    the domain does not exist. Idempotent in outcome."""

    name: str

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.reboot(self.name)


@dataclass(frozen=True)
class GetInfo(HypervisorEffect):
    """-> dict(state, vcpus, memory_mb) of a domain, or None when it does not exist.
    Idempotent."""

    name: str

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.info(self.name)


@dataclass(frozen=True)
class ListDomains(HypervisorEffect):
    """-> sorted tuple of the domain names on this hypervisor. Idempotent."""

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.names()
