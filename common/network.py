"""Network managers and the fixed-address pool.

The pool is a Redis SET seeded once with every allocatable address, drained with SPOP
and refilled with SADD on release (2010 commit 75eaa1b8f8: SPOP is atomic, so two
allocations can never take the same address, however their commands interleave).

FlatManager: one network for every project; addresses are injected into the image, so
there is no DHCP and no per-host network work. FlatDHCP and Vlan come later.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from common import keys, lifecycle
from common.effects import Del, Guard, HSet, SAdd, SPop, SRem, Transaction
from common.errors import InvalidParameterValue, NoMoreAddresses, NotFound


@dataclass(frozen=True)
class FlatNetwork:
    """Settings of the one flat network."""

    network_id: str = "flat"
    cidr: str = "10.0.0.0/16"
    bridge: str = "br100"
    dns: str = "8.8.4.4"


def pool_addresses(cidr: str) -> tuple[str, ...]:
    """The allocatable addresses of a network: all but the network address, the gateway
    (first host) and the broadcast address. 2010's Flat mode left the broadcast address
    allocatable (an off-by-one); we reserve it."""
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise InvalidParameterValue(f"bad network range {cidr!r}: {e}") from None
    hosts = [str(a) for a in net.hosts()]
    return tuple(hosts[1:])  # hosts() excludes network and broadcast; [0] is the gateway


class FlatManager:
    """Hands out fixed addresses from one shared network."""

    rpc_methods = frozenset({"allocate_fixed_ip"})

    def __init__(self, network: FlatNetwork, host: str = ""):
        self.network = network
        self.host = host

    def create_network(self):
        """Seed the network and its pool once. Returns False when it already existed."""
        net = self.network
        addresses = pool_addresses(net.cidr)
        parsed = ipaddress.ip_network(net.cidr)
        done = yield Transaction(
            ops=(
                HSet(
                    keys.network(net.network_id),
                    {
                        "id": net.network_id,
                        "cidr": net.cidr,
                        "bridge": net.bridge,
                        "gateway": str(next(parsed.hosts())),
                        "netmask": str(parsed.netmask),
                        "broadcast": str(parsed.broadcast_address),
                        "dns": net.dns,
                        "size": str(len(addresses)),
                    },
                ),
                SAdd(keys.NETWORKS, (net.network_id,)),
                SAdd(keys.network_addresses(net.network_id), addresses),
                SAdd(keys.available(net.network_id), addresses),
            ),
            guards=(Guard(keys.network(net.network_id), "id", None),),
        )
        return done is not None

    def allocate_fixed_ip(self, context, instance_id: str):
        """Take a free address for an instance still waiting for one.

        Raises NoMoreAddresses when the pool is empty, NotFound when the instance no
        longer waits (terminated, or its API gave up on this call); in that case the
        address goes straight back to the pool, so nothing leaks either way.
        """
        nid = self.network.network_id
        address = yield SPop(keys.available(nid))
        if address is None:
            raise NoMoreAddresses(f"network {nid} has no free addresses")
        done = yield Transaction(
            ops=(
                HSet(
                    keys.fixedip(address),
                    {"address": address, "network_id": nid, "instance_id": instance_id, "state": "allocated"},
                ),
                SAdd(keys.network_fixedips(nid), (address,)),
                SAdd(keys.ip_instances(address), (instance_id,)),
                HSet(keys.instance(instance_id), {"fixed_ip": address, "network_id": nid}),
            ),
            guards=(
                Guard(keys.instance(instance_id), "state", lifecycle.SCHEDULING),
                Guard(keys.instance(instance_id), "fixed_ip", ""),
            ),
        )
        if done is None:
            yield SAdd(keys.available(nid), (address,))
            raise NotFound(f"instance {instance_id} is not waiting for an address")
        return {"address": address, "network_id": nid, "bridge": self.network.bridge}

    def deallocate_fixed_ip(self, address: str, instance_id: str, network_id: str | None = None):
        """Give an instance's address back to the pool. Idempotent: only the holder's
        release counts, so a stale or repeated release changes nothing. Returns True when
        this call released it."""
        if not address:
            return False
        nid = network_id or self.network.network_id
        done = yield Transaction(
            ops=(
                Del((keys.fixedip(address),)),
                SRem(keys.network_fixedips(nid), (address,)),
                SRem(keys.ip_instances(address), (instance_id,)),
                SAdd(keys.available(nid), (address,)),
            ),
            guards=(Guard(keys.fixedip(address), "instance_id", instance_id),),
        )
        return done is not None
