"""ComputeManager workflows driven by hand: the exact effects of run, terminate, reboot,
the restart reconciliation of init_host, and list_domains."""

from dataclasses import replace

import pytest
from records import ADDRESS, IID, KEY, MAC, cas, changed, dealloc, flat, held, manager, noted, record, released, settle
from scripted import finish, run, step, throw

from common import keys, rpc
from common.compute import ComputeManager
from common.context import RequestContext
from common.effects import (
    Destroy,
    DomainSpec,
    EnsureBridge,
    EnsureVlan,
    FetchImage,
    GetInfo,
    Guard,
    HGetAll,
    HIncrBy,
    HSet,
    ListDomains,
    Now,
    Reboot,
    SAdd,
    SMembers,
    Spawn,
    SRem,
    ZIncrBy,
)
from common.errors import HypervisorError, ImageError, NetworkDriverError, NotFound
from common.network import FLATDHCP, VLAN

CTX = RequestContext("alice", "p1")
SPEC = DomainSpec(name=IID, vcpus=2, memory_mb=2048, disk_gb=10, mac_address=MAC, image_id="ami-tiny")
OK = [1, 1, 1]  # a transaction's results when its guards held


def compute(host="h1"):
    return ComputeManager(host, flat())


def deleted(at):
    """The CAS that finishes a terminate of the instance on h1, with its bookkeeping."""
    return cas(
        "shutting_down", "deleted", at,
        SRem(keys.project_instances("p1"), (IID,)),
        HIncrBy(keys.project_usage("p1"), "instances", -1),
        HIncrBy(keys.project_usage("p1"), "cores", -2),
        SRem(keys.node_instances("h1"), (IID,)),
        noted(),
        settle(),
        was=held("h1"),
    )


def restarted(node, domains=()):
    """Start h1's init_host: register, list the domains, read the node set (``node``); -> (gen, next effect)."""
    gen = compute().init_host()
    assert step(gen) == ZIncrBy(keys.COMPUTE_CORES, 0, "h1")
    assert step(gen, 0.0) == ListDomains()
    assert step(gen, tuple(domains)) == SMembers(keys.node_instances("h1"))
    return gen, step(gen, set(node))


def launched(gen, rec):
    """Drive run_instance of ``rec`` through claim and launch, up to the launch Record."""
    step(gen)
    step(gen, rec)
    step(gen, 10.0)
    step(gen, OK)
    step(gen)
    step(gen, 11.0)
    return step(gen, OK)


def test_init_host_first_registers_zero_cores():
    """A starting host first makes itself known to the simple scheduler, claiming nothing."""
    assert step(compute().init_host()) == ZIncrBy(keys.COMPUTE_CORES, 0, "h1")


def test_init_host_with_nothing_on_it_settles_nothing():
    """An empty node set and no domains: register, look, return no ids."""
    effects, settled = run(compute().init_host(), 0.0, (), set())
    assert effects == [ZIncrBy(keys.COMPUTE_CORES, 0, "h1"), ListDomains(), SMembers(keys.node_instances("h1"))]
    assert settled == []


@pytest.mark.parametrize("state", ["spawning", "launching", "rebooting"])
def test_init_host_fails_a_build_caught_mid_way(state):
    """A build or reboot cut off by the restart goes to error, its domain destroyed, its address released."""
    gen, read = restarted({IID})
    assert read == HGetAll(KEY)
    assert step(gen, record(state, host="h1")) == Now()
    error = f"h1 restarted during {state}"
    assert step(gen, 5.0) == cas(state, "error", 5.0, *released("h1"), noted(), settle(), was=held("h1"), error=error)
    assert step(gen, OK) == changed(state, "error", 5.0, "h1")
    assert step(gen) == Destroy(IID)
    assert step(gen, True) == dealloc()
    assert finish(gen, OK) == [IID]


def test_init_host_finishes_a_terminate_caught_mid_way():
    """shutting_down on this host: the terminate is done now (destroy, delete, release)."""
    gen, _ = restarted({IID})
    assert step(gen, record("shutting_down", host="h1")) == HGetAll(KEY)  # terminate_instance reads again
    assert step(gen, record("shutting_down", host="h1")) == Destroy(IID)
    step(gen, False)  # Now
    assert step(gen, 5.0) == deleted(5.0)
    step(gen, OK)  # Record
    assert step(gen) == dealloc()
    assert finish(gen, OK) == [IID]


def test_init_host_fails_a_running_instance_whose_domain_is_gone():
    """running with no domain: error by the `lost` event, cores back, address released."""
    gen, _ = restarted({IID}, domains=())
    assert step(gen, record("running", host="h1")) == Now()
    assert step(gen, 5.0) == cas("running", "error", 5.0, *released("h1"), noted(), settle(), was=held("h1"), error="domain lost on h1")
    assert step(gen, OK) == changed("running", "error", 5.0, "h1")
    assert step(gen) == dealloc()
    assert finish(gen, OK) == [IID]


def test_init_host_keeps_a_running_instance_with_its_domain():
    """running with its domain still there: left alone (the domain pass reads it and keeps it)."""
    gen, _ = restarted({IID}, domains=[IID])
    assert step(gen, record("running", host="h1")) == HGetAll(KEY)
    assert finish(gen, record("running", host="h1")) == []


@pytest.mark.parametrize(
    "found", [{}, record("deleted", host="h1"), record("error", host="h1"), record("running", host="h2")]
)
def test_init_host_destroys_an_orphan_domain(found):
    """A domain whose record is gone, deleted, errored or on another host is destroyed."""
    gen, read = restarted(set(), domains=[IID])
    assert read == HGetAll(KEY)
    assert step(gen, found) == Destroy(IID)
    assert finish(gen, True) == []


@pytest.mark.parametrize("found", [{}, record("launching", host="h2")])
def test_init_host_ignores_an_instance_not_on_this_host(found):
    """A node-set entry whose record is gone or names another host is not touched."""
    gen, read = restarted({IID})
    assert read == HGetAll(KEY) and finish(gen, found) == []


def test_list_domains_reports_each_domains_state():
    """{name: state} of every listed domain; one gone by its GetInfo is left out."""
    gen = compute().list_domains(CTX)
    assert step(gen) == ListDomains()
    assert step(gen, ("i-1", "i-2")) == GetInfo("i-1")
    assert step(gen, {"state": "running", "vcpus": 2, "memory_mb": 2048}) == GetInfo("i-2")
    assert finish(gen, None) == {"i-1": "running"}


def test_list_domains_is_callable_over_rpc():
    """list_domains is one of the compute RPC methods."""
    gen, msg_id = rpc.dispatch(compute(), rpc.envelope("list_domains", {}, CTX, "m-1"))
    assert step(gen) == ListDomains() and msg_id == "m-1"


def test_run_instance_queue_mode_happy_path():
    """Queue mode: read, claim (with the core claim), launch, spawn, boot, each a CAS."""
    gen = compute().run_instance(CTX, IID)
    assert step(gen) == HGetAll(KEY)
    assert step(gen, record("scheduling")) == Now()
    claim = step(gen, 10.0)
    assert claim == cas(
        "scheduling", "spawning", 10.0,
        SAdd(keys.node_instances("h1"), (IID,)), ZIncrBy(keys.COMPUTE_CORES, 2, "h1"),
        ZIncrBy(keys.COMPUTE_MEMORY, 2048, "h1"),
        host="h1",
    )
    assert step(gen, OK) == changed("scheduling", "spawning", 10.0, "h1")
    assert step(gen) == Now()
    assert step(gen, 11.0) == cas("spawning", "launching", 11.0, was=held("h1"))
    assert step(gen, OK) == changed("spawning", "launching", 11.0, "h1")
    assert step(gen) == Spawn(SPEC)
    assert step(gen) == Now()
    assert step(gen, 12.0) == cas("launching", "running", 12.0, settle(), was=held("h1"))
    assert step(gen, OK) == changed("launching", "running", 12.0, "h1")
    assert finish(gen) is None


def test_run_instance_placed_by_scheduler_does_not_claim_cores_again():
    """When the scheduler already placed it here, the claim only indexes the node."""
    gen = compute().run_instance(CTX, IID)
    step(gen)
    step(gen, record("scheduling", host="h1"))
    assert step(gen, 10.0) == cas(
        "scheduling", "spawning", 10.0, SAdd(keys.node_instances("h1"), (IID,)), was=held("h1"), host="h1"
    )


@pytest.mark.parametrize("state", ["spawning", "launching", "running", "shutting_down", "deleted", "error"])
def test_redelivered_run_instance_only_reads(state):
    """A run_instance for an instance no longer scheduling reads it and returns."""
    gen = compute().run_instance(CTX, IID)
    assert step(gen) == HGetAll(KEY)
    assert finish(gen, record(state, host="h1")) is None


def test_run_instance_placed_on_another_host_is_ignored():
    """An instance the scheduler sent to h2 is left alone by h1."""
    gen = compute("h1").run_instance(CTX, IID)
    step(gen)
    assert finish(gen, record("scheduling", host="h2")) is None


def test_run_instance_missing_record_raises_not_found():
    """No record (HGETALL gives an empty hash) is NotFound."""
    gen = compute().run_instance(CTX, IID)
    step(gen)
    with pytest.raises(NotFound, match=IID):
        step(gen, {})


def test_claim_guard_failure_stops_before_spawn():
    """If the state moved before the claim committed, nothing more happens."""
    gen = compute().run_instance(CTX, IID)
    step(gen)
    step(gen, record("scheduling"))
    step(gen, 10.0)
    assert finish(gen, None) is None


def test_launch_guard_failure_stops_before_spawn():
    """Terminated between claim and launch: no spawn; terminate_instance cleans up."""
    gen = compute().run_instance(CTX, IID)
    step(gen)
    step(gen, record("scheduling"))
    step(gen, 10.0)
    step(gen, OK)
    step(gen)
    step(gen, 11.0)
    assert finish(gen, None) is None


def test_spawn_failure_fails_instance_releases_cores_and_address():
    """HypervisorError from Spawn: error with the reason, cores back, address released."""
    gen = compute().run_instance(CTX, IID)
    launched(gen, record("scheduling"))
    assert step(gen) == Spawn(SPEC)
    assert throw(gen, HypervisorError("domain exists")) == Now()
    assert step(gen, 12.0) == cas(
        "launching", "error", 12.0, *released("h1"), noted(), settle(), was=held("h1"), error="spawn failed: domain exists"
    )
    assert step(gen, OK) == changed("launching", "error", 12.0, "h1")
    assert step(gen) == dealloc(ADDRESS, IID)
    assert finish(gen, OK) is None


def test_spawn_failure_after_terminate_leaves_cleanup_to_terminate():
    """If the fail CAS loses (already terminated), no address is released here."""
    gen = compute().run_instance(CTX, IID)
    launched(gen, record("scheduling"))
    step(gen)
    throw(gen, HypervisorError("no"))
    step(gen, 12.0)
    assert finish(gen, None) is None


def test_boot_cas_failure_destroys_the_new_domain():
    """Terminated or reaped while booting: the domain just made is destroyed, not orphaned."""
    gen = compute().run_instance(CTX, IID)
    launched(gen, record("scheduling"))
    assert step(gen) == Spawn(SPEC)
    step(gen, None)  # Now
    assert step(gen, 12.0) == cas("launching", "running", 12.0, settle(), was=held("h1"))
    assert step(gen, None) == Destroy(IID)
    assert finish(gen, True) is None


def test_terminate_instance_destroys_deletes_and_deallocates():
    """shutting_down: destroy, delete with the index and quota bookkeeping, release address."""
    gen = compute().terminate_instance(CTX, IID)
    assert step(gen) == HGetAll(KEY)
    assert step(gen, record("shutting_down", host="h1")) == Destroy(IID)
    step(gen, True)  # Now
    assert step(gen, 20.0) == deleted(20.0)
    assert step(gen, OK) == changed("shutting_down", "deleted", 20.0, "h1")
    assert step(gen) == dealloc()
    assert finish(gen, OK) is None


def test_terminate_instance_lost_delete_cas_keeps_the_address():
    """If another worker deleted it first, this one does not release the address again."""
    gen = compute().terminate_instance(CTX, IID)
    step(gen)
    step(gen, record("shutting_down", host="h1"))
    step(gen, False)
    step(gen, 20.0)
    assert finish(gen, None) is None


@pytest.mark.parametrize("state", ["running", "error"])
def test_terminate_instance_not_shutting_down_does_nothing(state):
    """A terminate for an instance not asked to shut down only reads."""
    gen = compute().terminate_instance(CTX, IID)
    step(gen)
    assert finish(gen, record(state, host="h1")) is None


def test_redelivered_terminate_of_a_deleted_instance_finishes_its_release():
    """A crash between 'deleted' and the release: the redelivery gives back the address it still holds."""
    gen = compute().terminate_instance(CTX, IID)
    step(gen)
    assert step(gen, record("deleted", host="h1")) == HGetAll(keys.fixedip(ADDRESS))
    assert step(gen, {"address": ADDRESS, "instance_id": IID, "state": "allocated"}) == dealloc()
    assert finish(gen, OK) is None


@pytest.mark.parametrize("fixedip", [{}, {"address": ADDRESS, "instance_id": "i-other"},
                                     {"address": ADDRESS, "instance_id": IID, "state": "deallocated"}])
def test_redelivered_terminate_leaves_an_address_it_no_longer_holds(fixedip):
    """Already back in the pool, someone else's, or on its way back: the redelivery writes nothing."""
    gen = compute().terminate_instance(CTX, IID)
    step(gen)
    step(gen, record("deleted", host="h1"))
    assert finish(gen, fixedip) is None


def test_init_host_gives_back_the_address_of_an_error_record_that_kept_it():
    """A crash between 'error' and the release: start-up finishes the release and reports the id."""
    gen, _ = restarted({IID}, domains=())
    assert step(gen, record("error", host="h1")) == HGetAll(keys.fixedip(ADDRESS))
    assert step(gen, {"address": ADDRESS, "instance_id": IID, "state": "allocated"}) == dealloc()
    assert finish(gen, OK) == [IID]


@pytest.mark.parametrize("method", ["terminate_instance", "reboot_instance"])
def test_missing_record_raises_not_found(method):
    """terminate/reboot of an id with no record raise NotFound."""
    gen = getattr(compute(), method)(CTX, IID)
    step(gen)
    with pytest.raises(NotFound):
        step(gen, {})


def test_reboot_happy_path():
    """running -> rebooting, Reboot, rebooting -> running."""
    effects, result = run(
        compute().reboot_instance(CTX, IID),
        record("running", host="h1"), 30.0, OK, None, None, 40.0, OK, None,
    )
    assert effects[2:] == [
        cas("running", "rebooting", 30.0, was=held("h1")),
        changed("running", "rebooting", 30.0, "h1"),
        Reboot(IID),
        Now(),
        cas("rebooting", "running", 40.0, settle(), was=held("h1")),
        changed("rebooting", "running", 40.0, "h1"),
    ]
    assert result is None


@pytest.mark.parametrize("rec", [record("running", host="h2"), record("launching", host="h1")])
def test_reboot_elsewhere_or_not_running_is_ignored(rec):
    """Only a running instance on this host is rebooted."""
    gen = compute("h1").reboot_instance(CTX, IID)
    step(gen)
    assert finish(gen, rec) is None


def test_reboot_failure_fails_destroys_and_releases():
    """HypervisorError from Reboot: error, cores back, domain destroyed, address released."""
    gen = compute().reboot_instance(CTX, IID)
    step(gen)
    step(gen, record("running", host="h1"))
    step(gen, 30.0)
    step(gen, OK)
    assert step(gen) == Reboot(IID)
    throw(gen, HypervisorError("gone"))
    assert step(gen, 31.0) == cas(
        "rebooting", "error", 31.0, *released("h1"), noted(), settle(), was=held("h1"), error="reboot failed: gone"
    )
    step(gen, OK)  # Record
    assert step(gen) == Destroy(IID)
    assert step(gen, False) == dealloc()
    assert finish(gen, OK) is None


# -- the compute host's side of the network ---------------------------------------------------

VLAN_IP = "10.0.0.19"  # the first address of vlan101


def vlan_record(state="scheduling"):
    return record(state, fixed_ip=VLAN_IP, network_id="vlan101", bridge="br101")


def test_vlan_run_instance_builds_vlan_and_bridge_before_spawn():
    """Vlan: the record's network gets its vlan interface and bridge here, then the domain spawns on the bridge."""
    gen = ComputeManager("h1", manager(VLAN, host="")).run_instance(CTX, IID)
    launched(gen, vlan_record())
    assert step(gen) == EnsureVlan(101, "eth0")
    assert step(gen, "vlan101") == EnsureBridge("br101", "vlan101")
    assert step(gen, None) == Spawn(replace(SPEC, bridge="br101"))


def test_flatdhcp_run_instance_ensures_the_bridge_before_spawn():
    """FlatDHCP: a record without network_id is on "flat"; its bridge is ensured before the spawn."""
    gen = ComputeManager("h1", manager(FLATDHCP, host="")).run_instance(CTX, IID)
    launched(gen, record("scheduling"))
    assert step(gen) == EnsureBridge("br100", "eth0")
    assert step(gen, None) == Spawn(SPEC)


def test_network_driver_failure_fails_the_instance_and_releases_its_address():
    """NetworkDriverError before the spawn: error with the reason, cores back, address deallocated; no Spawn."""
    gen = ComputeManager("h1", manager(VLAN, host="")).run_instance(CTX, IID)
    launched(gen, vlan_record())
    step(gen)  # EnsureVlan
    assert throw(gen, NetworkDriverError("ip link add vlan101: exit 2")) == Now()
    assert step(gen, 12.0) == cas(
        "launching", "error", 12.0, *released("h1"), noted(), settle(), was=held("h1", VLAN_IP),
        error="spawn failed: ip link add vlan101: exit 2",
    )
    assert step(gen, OK) == changed("launching", "error", 12.0, "h1")
    assert step(gen) == Now()
    tx = step(gen, 13.0)
    assert tx.ops[0] == HSet(keys.fixedip(VLAN_IP), {"state": "deallocated", "deallocated_at": "13.0"})
    assert tx.guards[1] == Guard(keys.fixedip(VLAN_IP), "network_id", "vlan101")
    assert finish(gen, OK) is None


IMAGED = {"image_location": "images/ami-tiny.img", "image_size_bytes": "1048576", "image_etag": "0f" * 16}


def test_run_instance_fetches_the_image_before_spawning_from_it():
    """A record with an image location makes the host fetch it (ETag included), then spawn with it as the disk."""
    gen = compute().run_instance(CTX, IID)
    launched(gen, record("scheduling", **IMAGED))
    assert step(gen) == FetchImage("ami-tiny", "images/ami-tiny.img", 1048576, "0f" * 16)
    assert step(gen, True) == Spawn(replace(SPEC, disk_image="ami-tiny"))


def test_run_instance_without_an_image_location_spawns_its_own_disk():
    """No image location (an image of no bytes): no fetch, and no cached image as the disk."""
    gen = compute().run_instance(CTX, IID)
    launched(gen, record("scheduling"))
    assert step(gen) == Spawn(SPEC) and SPEC.disk_image == ""


def test_image_fetch_failure_fails_the_instance_without_spawning():
    """ImageError from the fetch: error with the reason, cores back, address released, no spawn."""
    gen = compute().run_instance(CTX, IID)
    launched(gen, record("scheduling", **IMAGED))
    step(gen)
    assert throw(gen, ImageError("short download")) == Now()
    assert step(gen, 12.0) == cas(
        "launching", "error", 12.0, *released("h1"), noted(), settle(), was=held("h1"), error="spawn failed: short download"
    )


@pytest.mark.parametrize("found, destroyed", [(record("error", host="h1"), True), ({}, True),
                                              (record("launching", host="h1"), False)])
def test_cleanup_instance_destroys_its_domain_only_when_no_live_record_owns_it(found, destroyed):
    """The reaper's follow-up: a failed or vanished build's domain goes; a build still under way keeps it."""
    gen = compute().cleanup_instance(CTX, IID)
    assert step(gen) == ListDomains()
    assert step(gen, (IID, "i-other")) == HGetAll(KEY)
    if destroyed:
        assert step(gen, found) == Destroy(IID)
        assert finish(gen, True) == [IID]
    else:
        assert finish(gen, found) == []


def test_cleanup_instance_without_a_domain_reads_nothing_more():
    """No domain of that name on the host: nothing to read, nothing destroyed."""
    gen = compute().cleanup_instance(CTX, IID)
    step(gen)
    assert finish(gen, ("i-other",)) == []


def test_sync_domains_destroys_every_orphan_and_keeps_the_rest():
    """The periodic pass: each domain's record is read; only those no live record owns go."""
    gen = compute().sync_domains()
    assert step(gen) == ListDomains()
    assert step(gen, ("i-a", "i-b")) == HGetAll(keys.instance("i-a"))
    assert step(gen, record("running", iid="i-a", host="h1")) == HGetAll(keys.instance("i-b"))
    assert step(gen, record("deleted", iid="i-b", host="h1")) == Destroy("i-b")
    assert finish(gen, True) == ["i-b"]
