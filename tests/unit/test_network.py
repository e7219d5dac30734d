"""FlatManager and the fixed-address pool: SPOP to take, guarded writes, SADD to give back."""

import pytest
from records import ADDRESS, IID, dealloc
from scripted import finish, run, step

from common import keys
from common.effects import Guard, HSet, SAdd, SPop, Transaction
from common.errors import InvalidParameterValue, NoMoreAddresses, NotFound
from common.network import FlatManager, FlatNetwork, pool_addresses

CTX = None
NET = FlatNetwork(network_id="flat", cidr="10.0.0.0/29", bridge="br100")


def test_pool_excludes_network_gateway_and_broadcast():
    """A /29 has 8 addresses: .0, .1 (gateway) and .7 are reserved, 5 are allocatable."""
    assert pool_addresses("10.0.0.0/29") == ("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6")


def test_pool_of_a_slash_16():
    """A /16 gives 65533 addresses from .0.2 to .255.254."""
    pool = pool_addresses("10.0.0.0/16")
    assert (len(pool), pool[0], pool[-1]) == (65533, "10.0.0.2", "10.0.255.254")


@pytest.mark.parametrize("cidr", ["10.0.0.1/24", "nonsense", "10.0.0.0/33", ""])
def test_bad_cidr_is_invalid_parameter(cidr):
    """A range that is not a network in CIDR form is InvalidParameterValue naming it."""
    with pytest.raises(InvalidParameterValue, match="bad network range"):
        pool_addresses(cidr)


def test_create_network_seeds_the_pool_once():
    """create_network is one transaction guarded on the network not existing yet."""
    pool = pool_addresses(NET.cidr)
    effects, created = run(FlatManager(NET).create_network(), [1, 1, 5, 5])
    (tx,) = effects
    assert tx.guards == (Guard(keys.network("flat"), "id", None),)
    meta, index, addresses, available = tx.ops
    assert meta.mapping["gateway"] == "10.0.0.1" and meta.mapping["broadcast"] == "10.0.0.7"
    assert meta.mapping["size"] == "5"
    assert index == SAdd(keys.NETWORKS, ("flat",))
    assert addresses == SAdd(keys.network_addresses("flat"), pool)
    assert available == SAdd(keys.available("flat"), pool)
    assert created is True


def test_create_network_when_it_exists_returns_false():
    """A second create_network finds the guard failing and reports False."""
    effects, created = run(FlatManager(NET).create_network(), None)
    assert [type(e) for e in effects] == [Transaction] and created is False


def test_allocate_pops_then_writes_guarded():
    """allocate_fixed_ip: SPOP one address, then bind it only if the instance still waits."""
    gen = FlatManager(NET).allocate_fixed_ip(CTX, IID)
    assert step(gen) == SPop(keys.available("flat"))
    assert step(gen, ADDRESS) == Transaction(
        ops=(
            HSet(keys.fixedip(ADDRESS), {"address": ADDRESS, "network_id": "flat", "instance_id": IID, "state": "allocated"}),
            SAdd(keys.network_fixedips("flat"), (ADDRESS,)),
            SAdd(keys.ip_instances(ADDRESS), (IID,)),
            HSet(keys.instance(IID), {"fixed_ip": ADDRESS, "network_id": "flat"}),
        ),
        guards=(Guard(keys.instance(IID), "state", "scheduling"), Guard(keys.instance(IID), "fixed_ip", "")),
    )
    assert finish(gen, [1, 1, 1, 2]) == {"address": ADDRESS, "network_id": "flat", "bridge": "br100"}


def test_allocate_from_empty_pool_raises_no_more_addresses():
    """SPOP finding the pool empty is NoMoreAddresses, with nothing written."""
    gen = FlatManager(NET).allocate_fixed_ip(CTX, IID)
    step(gen)
    with pytest.raises(NoMoreAddresses, match="flat"):
        step(gen, None)


def test_allocate_guard_failure_returns_address_then_not_found():
    """An instance no longer waiting: the popped address goes back first, then NotFound."""
    gen = FlatManager(NET).allocate_fixed_ip(CTX, IID)
    step(gen)
    step(gen, ADDRESS)
    assert step(gen, None) == SAdd(keys.available("flat"), (ADDRESS,))
    with pytest.raises(NotFound, match=IID):
        step(gen, 1)


def test_deallocate_is_guarded_on_the_holder():
    """deallocate_fixed_ip is one transaction guarded on fixedip.instance_id; True if it ran."""
    gen = FlatManager(NET).deallocate_fixed_ip(ADDRESS, IID)
    assert step(gen) == dealloc(ADDRESS, IID)
    assert finish(gen, [1, 1, 1, 1]) is True


def test_deallocate_by_a_stale_holder_changes_nothing():
    """A release by an instance that no longer holds the address reports False."""
    effects, result = run(FlatManager(NET).deallocate_fixed_ip(ADDRESS, IID), None)
    assert effects == [dealloc(ADDRESS, IID)] and result is False


def test_deallocate_of_another_network():
    """An explicit network_id names that network's sets."""
    effects, _ = run(FlatManager(NET).deallocate_fixed_ip(ADDRESS, IID, "vlan7"), None)
    assert effects == [dealloc(ADDRESS, IID, nid="vlan7")]


def test_deallocate_empty_address_yields_nothing():
    """No address (never allocated) is a no-op with no effects at all."""
    assert finish(FlatManager(NET).deallocate_fixed_ip("", IID)) is False
