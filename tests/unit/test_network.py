"""Network managers: plan(), the fixed-address pool (SPOP to take, guarded writes, SADD to
give back), Vlan association, the network host, DHCP deallocation, lease and reclaim."""

import pytest
from records import ADDRESS, IID, MAC, SMALL_RANGE, dealloc, flat, manager, to_pool
from scripted import finish, run, step
from tiny_store import TinyStore, drive

from common import keys
from common.context import RequestContext
from common.effects import (
    Call,
    Del,
    DhcpHost,
    EnsureBridge,
    EnsureVlan,
    Get,
    Guard,
    HDel,
    HGet,
    HGetAll,
    HSet,
    Now,
    SAdd,
    SCard,
    SetNX,
    Sleep,
    SPop,
    SRem,
    Transaction,
    UpdateDhcp,
    ZAdd,
    ZRangeByScore,
    ZRem,
)
from common.errors import InvalidParameterValue, NoMoreAddresses, NoMoreNetworks, NotFound
from common.network import (
    DHCP_BATCH_SECONDS,
    FLAT,
    FLATDHCP,
    RECLAIM_BATCH,
    VLAN,
    FlatDHCPManager,
    FlatManager,
    NetworkConfig,
    VlanManager,
    make_manager,
    plan,
    pool_addresses,
)

CTX = RequestContext("alice", "p1")
FIXED = keys.fixedip(ADDRESS)


def vlan_config(**changes):
    """Four /28 Vlan networks (vlan100..103) in a /26: small and quick to plan."""
    return NetworkConfig(**{"manager": VLAN, "fixed_range": "10.0.0.0/26", "network_size": 16, **changes})


# -- pool_addresses ---------------------------------------------------------------------


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


# -- plan() -----------------------------------------------------------------------------


def test_plan_flat_is_one_network_with_gateway_and_dhcp_start():
    """Flat: one network "flat" on br100, gateway the first host, dhcp_start the second."""
    (spec,) = plan(NetworkConfig(fixed_range=SMALL_RANGE))
    assert (spec.network_id, spec.cidr, spec.bridge, spec.vlan) == (FLAT, SMALL_RANGE, "br100", 0)
    assert (spec.gateway, spec.dhcp_start, spec.netmask, spec.broadcast) == (
        "10.0.0.1", "10.0.0.2", "255.255.255.240", "10.0.0.15"
    )


def test_plan_flat_pool_has_no_gateway_and_no_broadcast():
    """The flat pool is every host but the gateway: the broadcast address is not in it."""
    (spec,) = plan(NetworkConfig(fixed_range=SMALL_RANGE))
    assert spec.addresses == tuple(f"10.0.0.{k}" for k in range(2, 15)) and "10.0.0.15" not in spec.addresses


def test_plan_flatdhcp_is_laid_out_like_flat():
    """FlatDHCP plans the same one shared network as Flat."""
    assert plan(NetworkConfig(manager=FLATDHCP, fixed_range=SMALL_RANGE)) == plan(NetworkConfig(fixed_range=SMALL_RANGE))


def test_plan_vlan_subnets_vlans_and_bridges():
    """Vlan: consecutive subnets of network_size, vlan numbers from vlan_start, bridge br<vlan>."""
    specs = plan(vlan_config())
    assert [(s.network_id, s.cidr, s.vlan, s.bridge) for s in specs] == [
        ("vlan100", "10.0.0.0/28", 100, "br100"),
        ("vlan101", "10.0.0.16/28", 101, "br101"),
        ("vlan102", "10.0.0.32/28", 102, "br102"),
        ("vlan103", "10.0.0.48/28", 103, "br103"),
    ]


def test_plan_vlan_reserves_bottom_two_and_top_vpn_clients():
    """Gateway and VPN address at the bottom, vpn_clients addresses at the top, are not in the pool."""
    spec = plan(vlan_config())[1]
    assert (spec.gateway, spec.vpn_private, spec.dhcp_start) == ("10.0.0.17", "10.0.0.18", "10.0.0.19")
    assert spec.addresses == tuple(f"10.0.0.{k}" for k in range(19, 26))  # .26-.30 kept for 5 VPN clients
    assert plan(vlan_config(vpn_clients=0))[1].addresses[-1] == "10.0.0.30"


def test_plan_vlan_dhcp_start_is_the_third_host():
    """dhcp_start is the third host, the first allocatable address."""
    assert all(s.dhcp_start == s.addresses[0] for s in plan(vlan_config()))


def test_plan_vlan_vpn_ports_count_from_vpn_start():
    """Each network's public VPN port is vpn_start plus its index."""
    assert [s.vpn_port for s in plan(vlan_config(vpn_start=2000))] == [2000, 2001, 2002, 2003]


def test_plan_vlan_num_networks_limits_the_count():
    """num_networks takes only the first networks; more than fit is InvalidParameterValue."""
    assert [s.network_id for s in plan(vlan_config(num_networks=2))] == ["vlan100", "vlan101"]
    with pytest.raises(InvalidParameterValue, match="5 networks of 16 addresses do not fit"):
        plan(vlan_config(num_networks=5))


@pytest.mark.parametrize(
    "size, message",
    [(4, "power of two of at least 8"), (24, "power of two of at least 8"), (0, "power of two"), (128, "larger than fixed_range")],
)
def test_plan_vlan_bad_network_size_is_invalid_parameter(size, message):
    """A network_size under 8, not a power of two, or bigger than the range is refused."""
    with pytest.raises(InvalidParameterValue, match=message):
        plan(vlan_config(network_size=size))


def test_make_manager_picks_the_class_and_refuses_unknown_names():
    """make_manager maps flat/flatdhcp/vlan to their classes; another name is InvalidParameterValue."""
    assert type(make_manager(NetworkConfig(manager=FLATDHCP, fixed_range=SMALL_RANGE))) is FlatDHCPManager
    assert type(make_manager(vlan_config())) is VlanManager
    with pytest.raises(InvalidParameterValue, match="unknown network manager 'nova'"):
        make_manager(NetworkConfig(manager="nova", fixed_range=SMALL_RANGE))


# -- create_networks ----------------------------------------------------------------------


def test_create_networks_seeds_each_pool_in_one_guarded_transaction():
    """Flat: one transaction guarded on the network record not existing yet."""
    (spec,) = flat().specs()
    effects, created = run(flat().create_networks(), [1, 1, 13, 13])
    (tx,) = effects
    assert tx == Transaction(
        ops=(
            HSet(keys.network(FLAT), spec.record("8.8.4.4")),
            SAdd(keys.NETWORKS, (FLAT,)),
            SAdd(keys.network_addresses(FLAT), spec.addresses),
            SAdd(keys.available(FLAT), spec.addresses),
        ),
        guards=(Guard(keys.network(FLAT), "id", None),),
    )
    assert tx.ops[0].mapping["gateway"] == "10.0.0.1" and tx.ops[0].mapping["size"] == "13"
    assert created == [FLAT]


def test_create_networks_second_call_creates_nothing():
    """A second create_networks (or a second worker) finds every guard failing: nothing is written."""
    store = TinyStore({})
    assert drive(manager(VLAN).create_networks(), store)[1] == ["vlan100", "vlan101", "vlan102", "vlan103"]
    before = {k: (set(v) if isinstance(v, set) else dict(v)) for k, v in store.data.items()}
    effects, created = drive(manager(VLAN).create_networks(), store)
    assert created == [] and len(effects) == 4 and store.data == before


def test_create_networks_vlan_adds_each_network_to_the_free_set():
    """Vlan networks start free: networks:free is written in each network's transaction."""
    effects, _ = run(manager(VLAN).create_networks(), [1] * 5, [1] * 5, [1] * 5, [1] * 5)
    assert [tx.ops[-1] for tx in effects] == [SAdd(keys.FREE_NETWORKS, (f"vlan{v}",)) for v in range(100, 104)]


# -- Vlan: project_network ------------------------------------------------------------------


def test_project_network_returns_an_existing_association():
    """A project that already has a network gets it with one read."""
    effects, nid = run(manager(VLAN).project_network("p1"), "vlan102")
    assert effects == [Get(keys.project_network("p1"))] and nid == "vlan102"


def test_project_network_first_use_takes_a_free_network():
    """First use: SPOP a free network, SETNX the association, record the project on the network."""
    gen = manager(VLAN).project_network("p1")
    assert step(gen) == Get(keys.project_network("p1"))
    assert step(gen, None) == SPop(keys.FREE_NETWORKS)
    assert step(gen, "vlan101") == SetNX(keys.project_network("p1"), "vlan101")
    assert step(gen, True) == HSet(keys.network("vlan101"), {"project_id": "p1"})
    assert finish(gen, 1) == "vlan101"


def test_project_network_losing_the_setnx_race_gives_the_candidate_back():
    """Another request associated first: our candidate goes back to the free set, theirs is used."""
    gen = manager(VLAN).project_network("p1")
    step(gen)
    step(gen, None)
    step(gen, "vlan101")
    assert step(gen, False) == SAdd(keys.FREE_NETWORKS, ("vlan101",))
    assert step(gen, 1) == Get(keys.project_network("p1"))
    assert finish(gen, "vlan103") == "vlan103"


def test_project_network_with_no_free_network_raises():
    """An empty free set is NoMoreNetworks, with nothing written."""
    gen = manager(VLAN).project_network("p1")
    step(gen)
    step(gen, None)
    with pytest.raises(NoMoreNetworks, match="p1"):
        step(gen, None)


def test_flat_project_network_is_the_flat_network_without_effects():
    """Flat and FlatDHCP: every project is on "flat", nothing is read."""
    assert finish(manager(FLATDHCP).project_network("p1")) == FLAT


# -- the network host -------------------------------------------------------------------------


def claim(nid, host="net1"):
    return Transaction(ops=(HSet(keys.network(nid), {"host": host}),), guards=(Guard(keys.network(nid), "host", ""),))


def test_vlan_set_network_host_claims_then_builds_vlan_bridge_and_dhcp():
    """The winner of the guarded claim ensures the vlan, the bridge with the gateway, then dnsmasq."""
    gen = manager(VLAN).set_network_host(CTX, "vlan101")
    assert step(gen) == claim("vlan101")
    assert step(gen, [1]) == EnsureVlan(101, "eth0")
    assert step(gen, "vlan101") == EnsureBridge("br101", "vlan101", "10.0.0.17/28")
    assert step(gen, None) == HGetAll(keys.network_dhcp_hosts("vlan101"))
    assert step(gen, {}) == UpdateDhcp("br101", "10.0.0.17", "10.0.0.19", ())
    assert finish(gen) == "net1"


def test_flatdhcp_set_network_host_builds_the_bridge_on_the_physical_interface():
    """FlatDHCP: the bridge is on bridge_interface with the gateway, then dnsmasq."""
    effects, owner = run(manager(FLATDHCP).set_network_host(CTX, FLAT), [1], None, {}, None)
    assert effects == [
        claim(FLAT), EnsureBridge("br100", "eth0", "10.0.0.1/28"), HGetAll(keys.network_dhcp_hosts(FLAT)),
        UpdateDhcp("br100", "10.0.0.1", "10.0.0.2", ()),
    ]
    assert owner == "net1"


@pytest.mark.parametrize("kind, nid", [(VLAN, "vlan100"), (FLATDHCP, FLAT), (FLAT, FLAT)])
def test_set_network_host_lost_claim_returns_the_owner_without_driver_work(kind, nid):
    """Another host already serves the network: read its name, touch no interface here."""
    effects, owner = run(manager(kind).set_network_host(CTX, nid), None, "net2")
    assert effects == [claim(nid), HGet(keys.network(nid), "host")] and owner == "net2"


def test_set_network_host_redelivered_to_the_owner_rebuilds_idempotently():
    """A repeated claim on the owner (guard fails, host is ours) runs the idempotent driver steps again."""
    effects, owner = run(manager(VLAN).set_network_host(CTX, "vlan100"), None, "net1", "vlan100", None, {}, None)
    assert [type(e) for e in effects[2:]] == [EnsureVlan, EnsureBridge, HGetAll, UpdateDhcp] and owner == "net1"


def test_flat_set_network_host_only_claims():
    """Flat has no network host work: the claim is all."""
    effects, owner = run(manager(FLAT).set_network_host(CTX, FLAT), [1])
    assert effects == [claim(FLAT)] and owner == "net1"


def test_set_network_host_of_an_unknown_network_is_not_found():
    """A network id the plan does not have is NotFound before anything is written."""
    with pytest.raises(NotFound, match="vlan999"):
        step(manager(VLAN).set_network_host(CTX, "vlan999"))


def test_network_topic_with_a_recorded_host_reads_only():
    """A network already served: one read, its host's topic."""
    effects, topic = run(manager(VLAN).network_topic("vlan100", CTX), "net2")
    assert effects == [HGet(keys.network("vlan100"), "host")] and topic == "network.net2"


def test_network_topic_without_a_host_asks_the_shared_topic():
    """No host yet: call set_network_host on the shared network topic, use the host it names."""
    gen = manager(VLAN).network_topic("vlan100", CTX, timeout=5.0)
    step(gen)
    assert step(gen, "") == Call("network", "set_network_host", {"network_id": "vlan100"}, CTX, timeout=5.0)
    assert finish(gen, "net3") == "network.net3"


def test_init_host_rebuilds_only_the_networks_it_serves():
    """A restarted network worker re-ensures the networks recorded as its own, nothing else."""
    gen = manager(VLAN).init_host()
    assert step(gen) == HGet(keys.network("vlan100"), "host")
    assert step(gen, "net2") == HGet(keys.network("vlan101"), "host")
    assert step(gen, "net1") == EnsureVlan(101, "eth0")
    assert step(gen, "vlan101") == EnsureBridge("br101", "vlan101", "10.0.0.17/28")
    assert step(gen, None) == HGetAll(keys.network_dhcp_hosts("vlan101"))
    assert step(gen, {}) == UpdateDhcp("br101", "10.0.0.17", "10.0.0.19", ())
    assert step(gen, None) == HGet(keys.network("vlan102"), "host")
    assert step(gen, "") == HGet(keys.network("vlan103"), "host")
    assert finish(gen, "") is None


# -- compute side ------------------------------------------------------------------------------


def test_flat_setup_compute_network_does_nothing():
    """Flat: the address is injected; the compute host builds nothing."""
    assert finish(manager(FLAT).setup_compute_network(FLAT)) is None


def test_flatdhcp_setup_compute_network_ensures_the_bridge_without_an_address():
    """FlatDHCP: the compute host has the bridge on its physical interface, no gateway address."""
    effects, _ = run(manager(FLATDHCP).setup_compute_network(FLAT), None)
    assert effects == [EnsureBridge("br100", "eth0")]


def test_vlan_setup_compute_network_ensures_vlan_then_bridge_on_it():
    """Vlan: the compute host builds vlan<n> and br<n> on it, no gateway address."""
    gen = manager(VLAN).setup_compute_network("vlan102")
    assert step(gen) == EnsureVlan(102, "eth0")
    assert step(gen, "vlan102") == EnsureBridge("br102", "vlan102")
    assert finish(gen, None) is None


# -- allocate ---------------------------------------------------------------------------------


def test_allocate_pops_then_writes_guarded():
    """allocate_fixed_ip: SPOP one address, then bind it only if the instance still waits."""
    gen = flat().allocate_fixed_ip(CTX, IID, FLAT, MAC)
    assert step(gen) == SPop(keys.available(FLAT))
    assert step(gen, ADDRESS) == Transaction(
        ops=(
            HSet(FIXED, {"address": ADDRESS, "network_id": FLAT, "instance_id": IID, "mac": MAC, "state": "allocated"}),
            SAdd(keys.network_fixedips(FLAT), (ADDRESS,)),
            SAdd(keys.ip_instances(ADDRESS), (IID,)),
            HSet(keys.network_dhcp_hosts(FLAT), {ADDRESS: f"{MAC},{IID}"}),
            HSet(keys.instance(IID), {"fixed_ip": ADDRESS, "network_id": FLAT, "bridge": "br100"}),
            SRem(keys.available(FLAT), (ADDRESS,)),
        ),
        guards=(Guard(keys.instance(IID), "state", "scheduling"), Guard(keys.instance(IID), "fixed_ip", ""),
                Guard(FIXED, "address", None)),
    )
    assert finish(gen, [1, 1, 1, 1, 3, 0]) == {"address": ADDRESS, "network_id": FLAT, "bridge": "br100"}


def test_allocate_on_a_vlan_network_uses_its_pool_and_bridge():
    """A Vlan allocation pops from that network's pool and names its bridge."""
    gen = manager(VLAN).allocate_fixed_ip(CTX, IID, "vlan101", MAC)
    assert step(gen) == SPop(keys.available("vlan101"))
    assert step(gen, "10.0.0.19").ops[-2] == HSet(
        keys.instance(IID), {"fixed_ip": "10.0.0.19", "network_id": "vlan101", "bridge": "br101"}
    )
    assert finish(gen, [1] * 6)["bridge"] == "br101"


def test_allocate_from_empty_pool_raises_no_more_addresses():
    """SPOP finding the pool empty is NoMoreAddresses, with nothing written."""
    gen = flat().allocate_fixed_ip(CTX, IID)
    step(gen)
    with pytest.raises(NoMoreAddresses, match="flat"):
        step(gen, None)


def test_allocate_on_an_unknown_network_is_not_found_before_any_effect():
    """An unknown network id is NotFound before the pool is touched."""
    with pytest.raises(NotFound, match="vlan9"):
        step(flat().allocate_fixed_ip(CTX, IID, "vlan9"))


def test_allocate_guard_failure_returns_address_then_not_found():
    """An instance no longer waiting: the popped address (held by nobody) goes back first, then NotFound."""
    gen = flat().allocate_fixed_ip(CTX, IID)
    step(gen)
    step(gen, ADDRESS)
    assert step(gen, None) == HGet(FIXED, "instance_id")
    assert step(gen, None) == SAdd(keys.available(FLAT), (ADDRESS,))
    with pytest.raises(NotFound, match=IID):
        step(gen, 1)


def test_allocate_leaves_an_address_someone_else_recorded_and_tries_another():
    """A popped address already recorded for another instance stays theirs; the next SPOP is tried."""
    gen = flat().allocate_fixed_ip(CTX, IID)
    step(gen)
    step(gen, ADDRESS)
    assert step(gen, None) == HGet(FIXED, "instance_id")
    assert step(gen, "i-other") == SPop(keys.available(FLAT))
    assert isinstance(step(gen, "10.0.0.9"), Transaction)
    assert finish(gen, [1] * 6)["address"] == "10.0.0.9"


def test_allocate_gives_up_after_a_bounded_number_of_taken_addresses():
    """Every popped address held by someone else: NoMoreAddresses after the bounded tries, nothing returned."""
    gen = flat().allocate_fixed_ip(CTX, IID)
    effect = step(gen)
    with pytest.raises(NoMoreAddresses, match="taken twice"):
        for _ in range(10):
            assert effect == SPop(keys.available(FLAT))
            step(gen, ADDRESS)
            step(gen, None)
            effect = step(gen, "i-other")


# -- leak sweep --------------------------------------------------------------------------------


def pool_of_flat():
    """The allocatable addresses of flat() (SMALL_RANGE)."""
    return next(iter(flat()._specs.values())).addresses


SMALL_POOL = len(pool_of_flat())


def test_sweep_with_nothing_missing_only_counts():
    """Free + recorded covers the pool: two SCARDs, the suspects cleared, nothing returned."""
    gen = flat().sweep_leaked_addresses(60.0)
    assert step(gen) == Now()
    assert step(gen, 100.0) == SCard(keys.available(FLAT))
    assert step(gen, SMALL_POOL - 2) == SCard(keys.network_fixedips(FLAT))
    assert step(gen, 2) == Del((keys.leak_suspects(FLAT),))
    assert finish(gen, 0) == 0


def sweep_until_missing(grace, free):
    """Drive a sweep to the point where it knows the missing addresses; -> gen, next effect."""
    manager = flat()
    pool = next(iter(manager._specs.values())).addresses
    gen = manager.sweep_leaked_addresses(grace)
    step(gen)
    step(gen, 100.0)
    step(gen, len(free))
    assert step(gen, 0) == HGet(keys.network(FLAT), "held_until")
    step(gen, None)
    step(gen, set(free))
    assert step(gen, set()) == ZRangeByScore(keys.leak_suspects(FLAT), "-inf", "+inf")
    return gen, pool


def test_sweep_leaves_a_network_held_after_a_store_loss_alone():
    """A network re-created after the store lost its data keeps its empty pool until its hold ends."""
    gen = flat().sweep_leaked_addresses(0.0)
    step(gen)
    step(gen, 100.0)
    step(gen, 0)
    assert step(gen, 0) == HGet(keys.network(FLAT), "held_until")
    assert finish(gen, "120.0") == 0


def test_sweep_remembers_a_newly_missing_address_without_returning_it():
    """First sighting: the address is written down as a suspect, not returned yet."""
    gen, pool = sweep_until_missing(60.0, pool_of_flat()[1:])
    assert step(gen, []) == ZAdd(keys.leak_suspects(FLAT), {pool[0]: 100.0})
    assert finish(gen, 1) == 0


def test_sweep_returns_an_address_missing_for_the_grace_period_guarded_on_no_record():
    """Seen missing 60 s ago: returned to the pool, only if still unrecorded."""
    gen, pool = sweep_until_missing(60.0, pool_of_flat()[1:])
    assert step(gen, [(pool[0], 40.0)]) == Transaction(
        ops=(SAdd(keys.available(FLAT), (pool[0],)), ZRem(keys.leak_suspects(FLAT), (pool[0],))),
        guards=(Guard(keys.fixedip(pool[0]), "address", None),),
    )
    assert finish(gen, [1, 1]) == 1


# -- deallocate ---------------------------------------------------------------------------------


def test_deallocate_is_guarded_on_the_holder():
    """Flat: one transaction guarded on fixedip.instance_id, straight back to the pool; True if it ran."""
    gen = flat().deallocate_fixed_ip(ADDRESS, IID)
    assert step(gen) == dealloc(ADDRESS, IID)
    assert finish(gen, [1] * 6) is True


def test_deallocate_by_a_stale_holder_changes_nothing():
    """A release by an instance that no longer holds the address reports False."""
    effects, result = run(flat().deallocate_fixed_ip(ADDRESS, IID), None)
    assert effects == [dealloc(ADDRESS, IID)] and result is False


def test_deallocate_of_another_network():
    """An explicit network_id names that network's sets."""
    effects, _ = run(flat().deallocate_fixed_ip(ADDRESS, IID, "vlan7"), None)
    assert effects == [dealloc(ADDRESS, IID, nid="vlan7")]


def test_deallocate_empty_address_yields_nothing():
    """No address (never allocated) is a no-op with no effects at all."""
    assert finish(flat().deallocate_fixed_ip("", IID)) is False


def dhcp_dealloc(at, address=ADDRESS, iid=IID, nid=FLAT):
    """The guarded DHCP deallocation: marked, out of the hosts file, waiting in `deallocated`."""
    return Transaction(
        ops=(
            HSet(keys.fixedip(address), {"state": "deallocated", "deallocated_at": repr(at)}),
            HDel(keys.network_dhcp_hosts(nid), (address,)),
            ZAdd(keys.DEALLOCATED, {address: at}),
            SRem(keys.SETTLING, (iid,)),
        ),
        guards=(Guard(keys.fixedip(address), "instance_id", iid), Guard(keys.fixedip(address), "network_id", nid)),
    )


@pytest.mark.parametrize("kind", [FLATDHCP, VLAN])
def test_dhcp_deallocate_marks_the_address_deallocated(kind):
    """DHCP: the address is not freed; it is marked and waits, guarded on instance and network."""
    address = "10.0.0.5"
    nid = FLAT if kind == FLATDHCP else "vlan100"
    gen = manager(kind).deallocate_fixed_ip(address, IID)
    assert step(gen) == Now()
    assert step(gen, 50.0) == dhcp_dealloc(50.0, address, nid=nid)
    assert finish(gen, [1, 1, 1]) is True


def test_dhcp_deallocate_by_a_stale_holder_reports_false():
    """A guard failing (another holder now) writes nothing and reports False."""
    effects, result = run(manager(FLATDHCP).deallocate_fixed_ip(ADDRESS, IID), 50.0, None)
    assert effects == [Now(), dhcp_dealloc(50.0)] and result is False


def test_release_instance_address_uses_the_records_network():
    """release_instance_address deallocates the record's fixed_ip on its network_id."""
    rec = {"id": IID, "fixed_ip": "10.0.0.20", "network_id": "vlan101"}
    effects, _ = run(manager(VLAN).release_instance_address(rec), 50.0, [1, 1, 1])
    assert effects[1] == dhcp_dealloc(50.0, "10.0.0.20", nid="vlan101")


def test_dhcp_deallocate_in_a_store_keeps_the_address_out_of_the_pool():
    """After a DHCP deallocation the address is neither free nor reusable until reclaimed."""
    store = TinyStore({
        FIXED: {"address": ADDRESS, "network_id": FLAT, "instance_id": IID, "mac": MAC, "state": "leased"},
        keys.network_fixedips(FLAT): {ADDRESS}, keys.network_dhcp_hosts(FLAT): {ADDRESS: f"{MAC},{IID}"},
    })
    drive(manager(FLATDHCP).deallocate_fixed_ip(ADDRESS, IID), store)
    assert store.data[FIXED]["state"] == "deallocated" and store.data[keys.DEALLOCATED] == {ADDRESS: 100.0}
    assert keys.network_dhcp_hosts(FLAT) not in store.data and keys.available(FLAT) not in store.data


# -- lease and release (dnsmasq) -----------------------------------------------------------------


def lease_store(state, mac=MAC):
    return TinyStore({
        FIXED: {"address": ADDRESS, "network_id": FLAT, "instance_id": IID, "mac": mac, "state": state},
        keys.network_fixedips(FLAT): {ADDRESS}, keys.ip_instances(ADDRESS): {IID},
        keys.DEALLOCATED: {ADDRESS: 50.0} if state == "deallocated" else {},
    })


def test_lease_marks_leased_for_the_right_mac():
    """A lease for the holder's MAC of an allocated address marks it leased."""
    gen = manager(FLATDHCP).lease_fixed_ip(CTX, MAC, ADDRESS)
    assert step(gen) == Transaction(
        ops=(HSet(FIXED, {"state": "leased"}),), guards=(Guard(FIXED, "mac", MAC), Guard(FIXED, "state", "allocated"))
    )
    assert finish(gen, [0]) is True


def test_lease_for_another_mac_changes_nothing():
    """A lease naming another MAC (stale) leaves the record as it was."""
    store = lease_store("allocated")
    assert drive(manager(FLATDHCP).lease_fixed_ip(CTX, "02:16:3e:00:00:99", ADDRESS), store)[1] is False
    assert store.data[FIXED]["state"] == "allocated"


def test_release_returns_a_deallocated_address_to_the_pool():
    """dnsmasq's release of a deallocated address, for its MAC, frees it at once."""
    gen = manager(FLATDHCP).release_fixed_ip(CTX, MAC, ADDRESS)
    assert step(gen) == to_pool(ADDRESS, FLAT, Guard(FIXED, "mac", MAC), Guard(FIXED, "state", "deallocated"))
    assert finish(gen, [1] * 6) is True


def test_release_in_a_store_frees_the_address():
    """After the release the address is free, its record and waiting entry gone."""
    store = lease_store("deallocated")
    assert drive(manager(FLATDHCP).release_fixed_ip(CTX, MAC, ADDRESS), store)[1] is True
    assert store.data[keys.available(FLAT)] == {ADDRESS} and FIXED not in store.data
    assert store.data[keys.DEALLOCATED] == {} and store.data[keys.network_fixedips(FLAT)] == set()


@pytest.mark.parametrize(
    "state, mac", [("deallocated", "02:16:3e:00:00:99"), ("allocated", MAC), ("leased", MAC)],
    ids=["stale-mac", "still-allocated", "still-leased"],
)
def test_release_stale_or_of_a_live_address_changes_nothing(state, mac):
    """A release for another MAC, or of an address still held by a live instance, writes nothing."""
    store = lease_store(state, mac=mac)
    before = {k: (set(v) if isinstance(v, set) else dict(v)) for k, v in store.data.items()}
    effects, result = drive(manager(FLATDHCP).release_fixed_ip(CTX, MAC, ADDRESS), store)
    assert result is False and len(effects) == 1 and store.data == before


# -- reclaim ----------------------------------------------------------------------------------------


def waiting(address, since):
    """The guards of a reclaim: still deallocated, and by the deallocation read from the set (its score)."""
    return Guard(keys.fixedip(address), "state", "deallocated"), Guard(keys.fixedip(address), "deallocated_at", repr(since))


def test_reclaim_returns_due_addresses_in_one_batch():
    """Addresses waiting longer than the timeout come back, at most RECLAIM_BATCH per pass, each guarded
    on the deallocation read."""
    gen = manager(FLATDHCP, disassociate_timeout=600.0).reclaim_fixed_ips()
    assert step(gen) == Now()
    assert step(gen, 1000.0) == ZRangeByScore(keys.DEALLOCATED, "-inf", "400.0", RECLAIM_BATCH)
    assert step(gen, [("10.0.0.3", 100.0), ("10.0.0.4", 300.0)]) == to_pool("10.0.0.3", FLAT, *waiting("10.0.0.3", 100.0))
    assert step(gen, [1] * 6) == to_pool("10.0.0.4", FLAT, *waiting("10.0.0.4", 300.0))
    assert finish(gen, [1] * 6) == 2


def test_reclaim_reads_another_batch_after_a_full_one():
    """A full batch means more may be due: the pass reads again, up to RECLAIM_BATCHES reads."""
    gen = manager(FLATDHCP, fixed_range="10.0.0.0/23", disassociate_timeout=600.0).reclaim_fixed_ips()
    step(gen)
    read = ZRangeByScore(keys.DEALLOCATED, "-inf", "400.0", RECLAIM_BATCH)
    assert step(gen, 1000.0) == read
    full = [(f"10.0.{k // 250}.{k % 250 + 2}", 100.0) for k in range(RECLAIM_BATCH)]
    step(gen, full)
    for _ in range(RECLAIM_BATCH - 1):
        step(gen, [1] * 6)
    assert step(gen, [1] * 6) == read  # the second read
    assert finish(gen, []) == RECLAIM_BATCH


@pytest.mark.parametrize("state", ["allocated", "leased", None], ids=["allocated", "leased", "gone"])
def test_reclaim_drops_an_address_reallocated_meanwhile(state):
    """An address no longer deallocated is not freed, only dropped from the waiting set, guarded on the
    state read (so a deallocation landing meanwhile keeps its entry)."""
    gen = manager(FLATDHCP).reclaim_fixed_ips()
    step(gen)
    step(gen, 1000.0)
    assert step(gen, [("10.0.0.3", 100.0)]) == to_pool("10.0.0.3", FLAT, *waiting("10.0.0.3", 100.0))
    assert step(gen, None) == HGet(keys.fixedip("10.0.0.3"), "state")
    assert step(gen, state) == Transaction(ops=(ZRem(keys.DEALLOCATED, ("10.0.0.3",)),),
                                           guards=(Guard(keys.fixedip("10.0.0.3"), "state", state),))
    assert finish(gen, [1]) == 0


def test_reclaim_leaves_a_fresher_deallocation_waiting():
    """The guard failed but the address is deallocated again (a newer deallocated_at): its entry stays."""
    gen = manager(FLATDHCP).reclaim_fixed_ips()
    step(gen)
    step(gen, 1000.0)
    step(gen, [("10.0.0.3", 100.0), ("10.0.0.4", 200.0)])
    assert step(gen, None) == HGet(keys.fixedip("10.0.0.3"), "state")
    assert step(gen, "deallocated") == to_pool("10.0.0.4", FLAT, *waiting("10.0.0.4", 200.0))
    assert finish(gen, [1] * 6) == 1


def test_reclaim_in_a_store_frees_only_what_is_due():
    """Due and deallocated: freed; not yet due: waits; re-allocated: dropped from the set, kept by its holder."""
    def fixed(state, iid, since=None):
        return {"network_id": FLAT, "instance_id": iid, "mac": MAC, "state": state,
                **({"deallocated_at": repr(since)} if since is not None else {})}

    store = TinyStore({
        keys.fixedip("10.0.0.3"): fixed("deallocated", "i-1", 100.0),
        keys.fixedip("10.0.0.4"): fixed("deallocated", "i-2", 900.0),
        keys.fixedip("10.0.0.5"): fixed("allocated", "i-3"),
        keys.network_fixedips(FLAT): {"10.0.0.3", "10.0.0.4", "10.0.0.5"},
        keys.DEALLOCATED: {"10.0.0.3": 100.0, "10.0.0.4": 900.0, "10.0.0.5": 200.0},
    }, now=1000.0)
    assert drive(manager(FLATDHCP).reclaim_fixed_ips(), store)[1] == 1
    assert store.data[keys.available(FLAT)] == {"10.0.0.3"}
    assert store.data[keys.DEALLOCATED] == {"10.0.0.4": 900.0}
    assert store.data[keys.network_fixedips(FLAT)] == {"10.0.0.4", "10.0.0.5"}
    assert store.data[keys.fixedip("10.0.0.5")]["state"] == "allocated"


def test_reclaim_racing_a_fresh_deallocation_waits_for_the_new_timeout():
    """The address is released, re-allocated and deallocated again after reclaim read it: it waits again."""
    store = TinyStore({
        keys.fixedip("10.0.0.3"): {"network_id": FLAT, "instance_id": "i-1", "state": "deallocated", "deallocated_at": "100.0"},
        keys.network_fixedips(FLAT): {"10.0.0.3"},
        keys.DEALLOCATED: {"10.0.0.3": 100.0},
    }, now=1000.0)
    gen = manager(FLATDHCP).reclaim_fixed_ips()
    step(gen)
    due = step(gen, 1000.0)
    rows = store.answer(due)
    # Meanwhile: dnsmasq's release frees it, i-2 gets it and is deallocated at 990 (lease may be live).
    store.data[keys.fixedip("10.0.0.3")] = {"network_id": FLAT, "instance_id": "i-2", "state": "deallocated",
                                            "deallocated_at": "990.0"}
    store.data[keys.DEALLOCATED] = {"10.0.0.3": 990.0}
    drive(gen, store, reply=rows)
    assert store.data[keys.DEALLOCATED] == {"10.0.0.3": 990.0} and "10.0.0.3" not in store.data.get(keys.available(FLAT), set())


# -- DHCP hosts file ---------------------------------------------------------------------------------


def test_setup_fixed_ip_writes_hosts_sorted_by_address():
    """The hosts file lists the dhcphosts hash by numeric address order, hostname the instance id."""
    gen = manager(FLATDHCP).setup_fixed_ip(CTX, FLAT, "10.0.0.9")
    assert step(gen) == Sleep(DHCP_BATCH_SECONDS)
    assert step(gen) == HGetAll(keys.network_dhcp_hosts(FLAT))
    update = step(gen, {"10.0.0.10": "02:16:3e:00:00:0a,i-b", "10.0.0.9": "02:16:3e:00:00:09,i-a",
                        "10.0.0.2": "02:16:3e:00:00:02,i-c"})
    assert update == UpdateDhcp("br100", "10.0.0.1", "10.0.0.2", (
        DhcpHost("02:16:3e:00:00:02", "i-c", "10.0.0.2"),
        DhcpHost("02:16:3e:00:00:09", "i-a", "10.0.0.9"),
        DhcpHost("02:16:3e:00:00:0a", "i-b", "10.0.0.10"),
    ))
    assert finish(gen) is None


def test_a_rewrite_shows_an_address_handed_to_another_instance():
    """An address whose line changed between two rewrites is written with its new line."""
    net = manager(FLATDHCP)
    for instance, mac in (("i-a", "02:16:3e:00:00:09"), ("i-b", "02:16:3e:00:00:0b")):
        gen = net.setup_fixed_ip(CTX, FLAT, "10.0.0.9")
        step(gen)
        step(gen)
        update = step(gen, {"10.0.0.9": f"{mac},{instance}", "10.0.0.2": "02:16:3e:00:00:02,i-c"})
        assert update.hosts[1] == DhcpHost(mac, instance, "10.0.0.9")


def test_hosts_sort_ipv4_by_number_before_ipv6():
    """Order is numeric within each family (10.0.0.9 before 10.0.0.10), IPv4 first."""
    gen = manager(FLATDHCP).setup_fixed_ip(CTX, FLAT, "10.0.0.9")
    step(gen)
    step(gen)
    update = step(gen, {"fd00::2": "m6,i-6", "10.0.0.10": "m10,i-10", "10.0.0.9": "m9,i-9", "9.255.255.255": "m1,i-1"})
    assert [host.address for host in update.hosts] == ["9.255.255.255", "10.0.0.9", "10.0.0.10", "fd00::2"]


def test_setup_fixed_ip_batches_rewrites_per_network():
    """Allocations while a rewrite waits share it; one after its read gets its own."""
    net = manager(FLATDHCP)
    first = net.setup_fixed_ip(CTX, FLAT, "10.0.0.9")
    assert step(first) == Sleep(DHCP_BATCH_SECONDS)
    assert finish(net.setup_fixed_ip(CTX, FLAT, "10.0.0.10")) is None  # covered by the waiting one
    assert step(first) == HGetAll(keys.network_dhcp_hosts(FLAT))
    later = net.setup_fixed_ip(CTX, FLAT, "10.0.0.11")
    assert step(later) == Sleep(DHCP_BATCH_SECONDS)  # the first read already: it waits for its own


def test_flat_setup_fixed_ip_does_nothing():
    """Flat has no dnsmasq: setup_fixed_ip yields nothing."""
    assert finish(flat().setup_fixed_ip(CTX, FLAT, ADDRESS)) is None


def test_update_dhcp_repr_is_short_and_deterministic():
    """UpdateDhcp's repr names a line count and a digest, not thousands of host lines."""
    hosts = tuple(DhcpHost(f"02:16:3e:00:{k // 256:02x}:{k % 256:02x}", f"i-{k}", f"10.0.{k // 256}.{k % 256}")
                  for k in range(2000))
    update = UpdateDhcp("br100", "10.0.0.1", "10.0.0.2", hosts)
    text = repr(update)
    assert text.startswith("UpdateDhcp(bridge='br100', gateway='10.0.0.1', dhcp_start='10.0.0.2', hosts=<2000 lines ")
    assert len(text) < 150 and text == repr(UpdateDhcp("br100", "10.0.0.1", "10.0.0.2", tuple(hosts)))
    assert text != repr(UpdateDhcp("br100", "10.0.0.1", "10.0.0.2", (*hosts[:-1], DhcpHost("x", "y", "z"))))


def test_managers_build_quickly_on_small_ranges():
    """The helper managers of these tests are small: 13 flat addresses, 4 Vlan networks of 7."""
    assert [len(s.addresses) for s in flat().specs()] == [13]
    assert [len(s.addresses) for s in manager(VLAN).specs()] == [7, 7, 7, 7]
    assert isinstance(manager(FLAT), FlatManager) and not manager(FLAT).dhcp and manager(FLATDHCP).dhcp
