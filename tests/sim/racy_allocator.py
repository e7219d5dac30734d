"""The 2010 check-then-act fixed-address allocator, kept as a known-bad fixture.

Nova 0.9.0 read the addresses in use, picked the first free one and wrote it back in
separate round trips; two allocations interleaving between the read and the write take
the same address. The SPOP pool replaced it. The sim must be able to see this bug.
"""

from common import keys
from common.effects import HSet, SAdd, SMembers
from common.errors import NoMoreAddresses


def allocate_check_then_act(network_id: str, instance_id: str):
    handed_out = yield SMembers(keys.network_fixedips(network_id))
    every = yield SMembers(keys.network_addresses(network_id))
    free = sorted(every - handed_out)
    if not free:
        raise NoMoreAddresses(f"network {network_id} has no free addresses")
    address = free[0]
    yield SAdd(keys.network_fixedips(network_id), (address,))
    yield HSet(keys.fixedip(address), {"address": address, "instance_id": instance_id})
    return address
