"""The network-driver family: linux_net on the agent's network host."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import NamedTuple

from common.effects.families import NetDriverEffect

# Network driver (linux_net): performed on the network host running the generator.
# Every one is idempotent: ensuring twice is the same as once (2010's ensure_* and
# "confirmed" iptables rules: delete, then insert). All may raise NetworkDriverError.


@dataclass(frozen=True)
class EnsureVlan(NetDriverEffect):
    """Create 802.1q interface ``vlan<vlan>`` on ``interface`` and bring it up. Returns
    the interface name."""

    vlan: int
    interface: str


@dataclass(frozen=True)
class EnsureBridge(NetDriverEffect):
    """Create ``bridge`` (forward delay 0, STP off), enslave ``interface`` if given,
    give it ``address`` (CIDR form, e.g. the gateway ``10.0.0.1/24``) if given, bring it
    up, and accept forwarding in and out of it."""

    bridge: str
    interface: str | None = None
    address: str | None = None


class DhcpHost(NamedTuple):
    """One line of a hosts file. A tuple of three strings: a network's hosts file is
    rebuilt whole on each change (thousands of lines), and tuples compare and join in C."""

    mac: str
    hostname: str
    address: str


@dataclass(frozen=True, repr=False)
class UpdateDhcp(NetDriverEffect):
    """Write the hosts file of the network on ``bridge`` (``mac,hostname.novalocal,ip``
    lines) and make its dnsmasq serve it: HUP a running one, start one otherwise.
    ``gateway`` is the listen address; leases are static, ``lease_seconds`` long."""

    bridge: str
    gateway: str
    dhcp_start: str
    hosts: tuple[DhcpHost, ...]
    lease_seconds: int = 120

    def __repr__(self):
        # The hosts file can hold thousands of lines: a trace line names a digest.
        digest = zlib.crc32("\n".join(map(",".join, self.hosts)).encode())
        return (f"UpdateDhcp(bridge={self.bridge!r}, gateway={self.gateway!r}, "
                f"dhcp_start={self.dhcp_start!r}, hosts=<{len(self.hosts)} lines {digest:08x}>)")


@dataclass(frozen=True)
class StopDhcp(NetDriverEffect):
    """Stop the dnsmasq of ``bridge`` if one runs. Idempotent."""

    bridge: str


@dataclass(frozen=True)
class BindFloating(NetDriverEffect):
    """Add floating ``address`` (/32) to ``interface``."""

    address: str
    interface: str


@dataclass(frozen=True)
class UnbindFloating(NetDriverEffect):
    """Remove floating ``address`` from ``interface``; absent is success."""

    address: str
    interface: str


@dataclass(frozen=True)
class EnsureFloatingForward(NetDriverEffect):
    """NAT ``floating`` to ``fixed`` (DNAT in, SNAT out) and accept ICMP and the default
    ports (tcp 22/80/443, udp 1194) to ``fixed``."""

    floating: str
    fixed: str


@dataclass(frozen=True)
class RemoveFloatingForward(NetDriverEffect):
    """Undo EnsureFloatingForward; rules already gone are success."""

    floating: str
    fixed: str


@dataclass(frozen=True)
class EnsureVpnForward(NetDriverEffect):
    """Forward udp ``public_ip:port`` to ``private_ip:1194`` (the project's VPN)."""

    public_ip: str
    port: int
    private_ip: str


@dataclass(frozen=True)
class InitHostNat(NetDriverEffect):
    """The network host's NAT: SNAT ``fixed_range`` to ``routing_source_ip`` on the way
    out, and leave traffic within ``fixed_range`` alone."""

    fixed_range: str
    routing_source_ip: str
