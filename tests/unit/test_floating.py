"""Floating addresses on the network host: allocate against quota, associate with a running
instance of the same project (bind + NAT), disassociate, release."""

import ipaddress

import pytest
from records import IID, KEY, record
from scripted import finish, run, step
from tiny_store import TinyStore, drive

from common import invariants as inv
from common import keys
from common.context import RequestContext
from common.effects import (
    BindFloating,
    Choose,
    Del,
    EnsureFloatingForward,
    Guard,
    HDel,
    HGet,
    HGetAll,
    HIncrBy,
    HSet,
    RemoveFloatingForward,
    SAdd,
    SMembers,
    SRem,
    Transaction,
    UnbindFloating,
    ZAdd,
    ZRangeByScore,
    ZRem,
)
from common.errors import InvalidParameterValue, NoMoreAddresses, NotFound, QuotaExceeded
from common.floating import FREE_WINDOW, FloatingIps, create_floating_ips, pool_score

CTX = RequestContext("alice", "p1")
OTHER = RequestContext("bob", "p2")
USAGE = keys.project_usage("p1")
FLOAT = "4.4.4.2"
FKEY = keys.floatingip(FLOAT)
FIXED = "10.0.0.5"  # record()'s fixed_ip


def host():
    return FloatingIps("net1", "eth1")


def allocated(instance_id="", fixed_ip="", project_id="p1"):
    """A floatingip hash as HGETALL returns it."""
    return {"address": FLOAT, "host": "net1", "project_id": project_id, "instance_id": instance_id, "fixed_ip": fixed_ip}


def snapshot(store):
    return {k: (set(v) if isinstance(v, set) else dict(v) if isinstance(v, dict) else v) for k, v in store.data.items()}


# -- allocate ----------------------------------------------------------------------------------


def taken(address=FLOAT, project="p1"):
    """The one transaction that takes ``address`` off net1's pool for ``project`` and counts it."""
    usage = keys.project_usage(project)
    return Transaction(
        ops=(
            ZRem(keys.floating_available("net1"), (address,)),
            HSet(keys.floatingip(address), {**allocated(project_id=project), "address": address}),
            SAdd(keys.project_floatingips(project), (address,)),
            HIncrBy(usage, "floating_ips", 1),
            SAdd(keys.QUOTA_PROJECTS, (project,)),
        ),
        guards=(Guard(keys.floatingip(address), "host", None),),
    )


def given_back(address=FLOAT, project="p1"):
    """The transaction that returns an unassociated ``address`` to net1's pool and the quota."""
    usage = keys.project_usage(project)
    return Transaction(
        ops=(
            Del((keys.floatingip(address),)),
            SRem(keys.project_floatingips(project), (address,)),
            HIncrBy(usage, "floating_ips", -1),
            ZAdd(keys.floating_available("net1"), {address: pool_score(address)}),
        ),
        guards=(Guard(keys.floatingip(address), "project_id", project), Guard(keys.floatingip(address), "instance_id", ""),
                Guard(keys.floatingip(address), "host", "net1")),
    )


def free(*addresses):
    """A window of the free pool as ZRANGEBYSCORE ... WITHSCORES returns it."""
    return [(a, float(pool_score(a))) for a in sorted(addresses, key=pool_score)]


def test_allocate_reads_a_bounded_window_of_a_large_pool():
    """A pool of 65,000 free addresses: the allocation reads FREE_WINDOW of them, the lowest."""
    pool = {str(ipaddress.ip_address(0x04040000 + k)): 0x04040000 + k for k in range(1, 65_000)}
    store = TinyStore({keys.floating_available("net1"): pool, keys.FLOATING_HOSTS: {"net1"}})
    effects, address = drive(host().allocate_floating_ip(CTX, "p1", 2), store)
    window = next(e for e in effects if isinstance(e, ZRangeByScore))
    assert window.count == FREE_WINDOW and pool_score(address) < 0x04040000 + FREE_WINDOW + 1
    assert address not in store.data[keys.floating_available("net1")]


def test_allocate_takes_the_address_and_the_quota_in_one_transaction():
    """Check the count, read the free pool, choose one, then pool, record and quota change together."""
    gen = host().allocate_floating_ip(CTX, "p1", 2)
    assert step(gen) == Transaction(ops=(HGet(USAGE, "floating_ips"), HGetAll(keys.webhooks("p1"))))
    assert step(gen, ["1", {}]) == ZRangeByScore(keys.floating_available("net1"), "-inf", "+inf", FREE_WINDOW)
    assert step(gen, free(FLOAT, "4.4.4.3")) == Choose((FLOAT, "4.4.4.3"))
    assert step(gen, FLOAT) == taken()
    assert finish(gen, [1, 5, 1, 2, 7, 0]) == FLOAT


def test_allocate_at_the_quota_is_refused_before_the_pool_is_read():
    """A project already at its quota gets QuotaExceeded and nothing is written."""
    gen = host().allocate_floating_ip(CTX, "p1", 2)
    step(gen)
    with pytest.raises(QuotaExceeded, match="p1 may hold 2"):
        step(gen, ["2", {}])


def test_allocate_over_quota_by_a_race_gives_the_address_back():
    """Another allocation won the last one meanwhile: the total is over, the address goes back."""
    gen = host().allocate_floating_ip(CTX, "p1", 2)
    step(gen)
    step(gen, ["1", {}])
    step(gen, free(FLOAT))
    step(gen, FLOAT)
    assert step(gen, [1, 5, 1, 3, 7, 0]) == given_back()
    with pytest.raises(QuotaExceeded, match="p1 may hold 2"):
        step(gen, [1, 1, 2, 8, 1])


def test_allocate_picks_another_address_when_one_is_taken_meanwhile():
    """The guard fails (someone took it): the next free address is tried."""
    gen = host().allocate_floating_ip(CTX, "p1", 2)
    step(gen)
    step(gen, [None, {}])
    step(gen, free(FLOAT, "4.4.4.3"))
    step(gen, FLOAT)
    assert step(gen, None) == Choose(("4.4.4.3",))
    assert step(gen, "4.4.4.3") == taken("4.4.4.3")


def test_allocate_from_an_empty_pool_raises_and_writes_nothing():
    """An empty pool raises NoMoreAddresses; nothing was counted."""
    gen = host().allocate_floating_ip(CTX, "p1", 2)
    step(gen)
    step(gen, [None, {}])
    with pytest.raises(NoMoreAddresses, match="net1"):
        step(gen, [])


def test_an_allocation_whose_answer_is_lost_leaves_an_allocated_address_and_a_matching_count():
    """The transaction ran but its caller saw a timeout: I7 and I2 still hold (the address is the project's)."""
    store = TinyStore({keys.floating_available("net1"): {FLOAT: pool_score(FLOAT)}, keys.floating_addresses("net1"): {FLOAT},
                       keys.FLOATING_HOSTS: {"net1"}})
    gen = host().allocate_floating_ip(CTX, "p1", 2)
    effect = next(gen)
    while not (isinstance(effect, Transaction) and effect.guards):  # up to the one that takes the address
        effect = gen.send(drive(_one(effect), store)[1])
    drive(_one(effect), store)  # it ran; the caller never hears of it
    snap = inv.Snapshot(now=0.0, build_timeout=60.0, store=snapshot(store), domains={}, queues={})
    assert inv.i7_quota_matches_holdings(snap).ok and inv.i2_allocated_matches_live(snap).ok


def _one(effect):
    return (yield effect)


# -- associate ----------------------------------------------------------------------------------


def test_associate_guarded_then_binds_and_forwards():
    """Read both, write both guarded (address free and still the caller's project's, instance running and
    unassociated), then bind and NAT."""
    gen = host().associate_floating_ip(CTX, FLOAT, IID)
    assert step(gen) == HGetAll(FKEY)
    assert step(gen, allocated()) == HGetAll(KEY)
    assert step(gen, record("running", host="h1")) == Transaction(
        ops=(HSet(FKEY, {"instance_id": IID, "fixed_ip": FIXED}), HSet(KEY, {"floating_ip": FLOAT})),
        guards=(
            Guard(FKEY, "instance_id", ""), Guard(FKEY, "project_id", "p1"),
            Guard(KEY, "state", "running"), Guard(KEY, "floating_ip", None),
        ),
    )
    assert step(gen, [2, 1]) == BindFloating(FLOAT, "eth1")
    assert step(gen, None) == EnsureFloatingForward(FLOAT, FIXED)
    assert finish(gen, None) is True


@pytest.mark.parametrize("state", ["scheduling", "launching", "rebooting", "error", "shutting_down"])
def test_associate_requires_a_running_instance(state):
    """An instance that is not running is InvalidParameterValue, nothing written."""
    gen = host().associate_floating_ip(CTX, FLOAT, IID)
    step(gen)
    step(gen, allocated())
    with pytest.raises(InvalidParameterValue, match=f"is {state}, not running"):
        step(gen, record(state, host="h1"))


@pytest.mark.parametrize(
    "floating, instance, what",
    [
        (allocated(project_id="p2"), record("running", host="h1"), f"address {FLOAT} is not allocated to project p1"),
        ({}, record("running", host="h1"), f"address {FLOAT} is not allocated"),
        (allocated(), record("running", host="h1", project_id="p2"), "instance ID 'i-1' does not exist"),
        (allocated(), {}, "instance ID 'i-1' does not exist"),
    ],
    ids=["address-of-another-project", "address-not-allocated", "instance-of-another-project", "no-instance"],
)
def test_associate_requires_the_same_project(floating, instance, what):
    """Address and instance must both belong to the caller's project (NotFound otherwise)."""
    gen = host().associate_floating_ip(CTX, FLOAT, IID)
    step(gen)
    step(gen, floating)
    with pytest.raises(NotFound, match=what):
        step(gen, instance)


def test_associate_guard_failure_binds_nothing():
    """Already associated (or changed since read): InvalidParameterValue and no driver effect."""
    gen = host().associate_floating_ip(CTX, FLOAT, IID)
    step(gen)
    step(gen, allocated())
    step(gen, record("running", host="h1"))
    with pytest.raises(InvalidParameterValue, match="already associated"):
        step(gen, None)


def test_associate_racing_a_release_and_reallocation_to_another_project_is_refused():
    """The address changes project between the read and the write: p1's instance must not get p2's address."""
    store = TinyStore({FKEY: allocated(), KEY: record("running", host="h1")})
    gen = host().associate_floating_ip(CTX, FLOAT, IID)
    assert step(gen) == HGetAll(FKEY)
    read = store.answer(HGetAll(FKEY))
    store.data[FKEY] = allocated(project_id="p2")  # released by p1, allocated to p2 meanwhile
    with pytest.raises(InvalidParameterValue):
        drive(gen, store, reply=read)
    assert store.data[FKEY]["instance_id"] == ""


# -- disassociate ------------------------------------------------------------------------------------


def test_disassociate_reverses_rules_binding_and_records():
    """NAT rules out, address unbound, then both records cleared guarded on the association read."""
    gen = host().disassociate_floating_ip(CTX, FLOAT)
    assert step(gen) == HGetAll(FKEY)
    assert step(gen, allocated(IID, FIXED)) == RemoveFloatingForward(FLOAT, FIXED)
    assert step(gen, None) == UnbindFloating(FLOAT, "eth1")
    assert step(gen, None) == Transaction(
        ops=(HSet(FKEY, {"instance_id": "", "fixed_ip": ""}), HDel(KEY, ("floating_ip",))),
        guards=(Guard(FKEY, "instance_id", IID),),
    )
    assert finish(gen, [0, 1]) is True


@pytest.mark.parametrize("floating", [{}, allocated()], ids=["released", "not-associated"])
def test_disassociate_of_an_unassociated_address_is_a_no_op(floating):
    """Nothing associated: one read, no driver effect, False."""
    effects, result = run(host().disassociate_floating_ip(CTX, FLOAT), floating)
    assert effects == [HGetAll(FKEY)] and result is False


def test_disassociate_of_another_projects_address_is_not_found_unless_admin():
    """A user of another project may not disassociate; an admin (or the system, context None) may."""
    gen = host().disassociate_floating_ip(OTHER, FLOAT)
    step(gen)
    with pytest.raises(NotFound):
        step(gen, allocated(IID, FIXED))
    for context in (RequestContext("root", "ops", is_admin=True), None):
        gen = host().disassociate_floating_ip(context, FLOAT)
        step(gen)
        assert step(gen, allocated(IID, FIXED)) == RemoveFloatingForward(FLOAT, FIXED)


def test_associate_then_disassociate_twice_in_a_store():
    """Associate then disassociate restores the records; a second disassociate changes nothing."""
    store = TinyStore({FKEY: allocated(), KEY: record("running", host="h1")})
    before = snapshot(store)
    assert drive(host().associate_floating_ip(CTX, FLOAT, IID), store)[1] is True
    assert store.data[KEY]["floating_ip"] == FLOAT and store.data[FKEY]["fixed_ip"] == FIXED
    assert drive(host().disassociate_floating_ip(CTX, FLOAT), store)[1] is True
    assert snapshot(store) == before
    effects, again = drive(host().disassociate_floating_ip(CTX, FLOAT), store)
    assert again is False and effects == [HGetAll(FKEY)]


# -- release ---------------------------------------------------------------------------------------------


def test_release_returns_address_and_quota():
    """An unassociated address goes back to its host's pool and the project's count goes down, guarded."""
    gen = host().release_floating_ip(CTX, FLOAT)
    assert step(gen) == HGetAll(FKEY)
    assert step(gen, allocated()) == given_back()
    assert finish(gen, [1, 1, 0, 1, 1]) is True


def test_release_refuses_while_associated():
    """An associated address is not released: InvalidParameterValue, nothing changed."""
    store = TinyStore({FKEY: allocated(IID, FIXED), USAGE: {"floating_ips": "1"}})
    before = snapshot(store)
    with pytest.raises(InvalidParameterValue, match="disassociate it first"):
        drive(host().release_floating_ip(CTX, FLOAT), store)
    assert snapshot(store) == before


def test_release_of_another_projects_address_is_not_found():
    """Only the holding project may release an address."""
    gen = host().release_floating_ip(OTHER, FLOAT)
    step(gen)
    with pytest.raises(NotFound, match="p2"):
        step(gen, allocated())


# -- creating pools -----------------------------------------------------------------------------------------


def test_create_floating_ips_seeds_the_hosts_pool():
    """Every host address of the range is known and free; the host is indexed."""
    store = TinyStore({})
    assert drive(create_floating_ips("net1", "4.4.4.0/29"), store)[1] == 6
    assert set(store.data[keys.floating_available("net1")]) == {f"4.4.4.{k}" for k in range(1, 7)}
    assert store.data[keys.FLOATING_HOSTS] == {"net1"}


def test_create_floating_ips_reads_the_hosts_addresses_then_adds_only_new_ones_at_once():
    """SMEMBERS of the host's addresses, then one transaction adding the fresh ones to the known and free sets
    and the host to floating:hosts; returns how many were new."""
    gen = create_floating_ips("net1", "4.4.4.0/29")
    assert step(gen) == SMembers(keys.floating_addresses("net1"))
    assert step(gen, {"4.4.4.1", "4.4.4.2"}) == SMembers(keys.legacy_floating_available("net1"))
    fresh = ("4.4.4.3", "4.4.4.4", "4.4.4.5", "4.4.4.6")
    assert step(gen, set()) == Transaction(ops=(
        SAdd(keys.floating_addresses("net1"), fresh),
        ZAdd(keys.floating_available("net1"), {a: pool_score(a) for a in fresh}),
        SAdd(keys.FLOATING_HOSTS, ("net1",)),
    ))
    assert finish(gen, [4, 4, 0]) == 4


def test_create_floating_ips_of_a_known_range_writes_nothing():
    """Every address already known (free or allocated): no transaction, 0."""
    effects, result = run(create_floating_ips("net1", "4.4.4.0/30"), {"4.4.4.1", "4.4.4.2"}, set())
    assert effects == [SMembers(keys.floating_addresses("net1")), SMembers(keys.legacy_floating_available("net1"))]
    assert result == 0


def test_create_floating_ips_moves_an_older_stores_free_set_into_the_sorted_pool():
    """A store written when the free pool was a set keeps every free address after an upgrade."""
    store = TinyStore({keys.floating_addresses("net1"): {"4.4.4.1", "4.4.4.2"},
                       keys.legacy_floating_available("net1"): {"4.4.4.2"}})
    assert drive(create_floating_ips("net1", "4.4.4.0/30"), store)[1] == 0
    assert set(store.data[keys.floating_available("net1")]) == {"4.4.4.2"}
    assert keys.legacy_floating_available("net1") not in store.data


def test_create_floating_ips_of_a_wider_range_keeps_allocated_addresses_out_of_the_pool():
    """Extending a host's range frees only the new addresses, not ones a project holds."""
    store = TinyStore({})
    drive(create_floating_ips("net1", "4.4.4.0/30"), store)
    address = drive(host().allocate_floating_ip(CTX, "p1", 5), store)[1]
    drive(create_floating_ips("net1", "4.4.4.0/29"), store)
    assert address not in store.data[keys.floating_available("net1")]
    verdict = inv.i2_allocated_matches_live(inv.Snapshot(0.0, 60.0, store.data, {}, {}))
    assert verdict.ok, verdict.violations
