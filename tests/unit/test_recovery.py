"""Recovery after the store loses its data: the heartbeat as store watch, and what compute and network hosts
re-assert."""

import pytest
from tiny_store import TinyStore, drive

from common import keys, recovery
from common.compute import ComputeManager
from common.effects import Batch, Destroy, HGet, ListDomains, Now, StopDhcp, UpdateDhcp, ZAdd
from common.errors import StoreUnavailable
from common.network import FLAT, VLAN, NetworkConfig, make_manager

SMALL_FLAT = NetworkConfig(manager=FLAT, fixed_range="10.0.0.0/28")
SMALL_VLAN = NetworkConfig(manager=VLAN, fixed_range="10.0.0.0/26", network_size=16)


class Host(TinyStore):
    """A store plus one host's hypervisor and network driver: domains by name, the effects they saw."""

    def __init__(self, data, domains=()):
        super().__init__(data)
        self.domains = set(domains)
        self.seen = []

    def answer(self, e):
        match e:
            case ListDomains():
                return sorted(self.domains)
            case Destroy(name=name):
                self.domains.discard(name)
                self.seen.append(e)
                return None
            case StopDhcp() | UpdateDhcp():
                self.seen.append(e)
                return None
        return super().answer(e)


def beat(manager, topic="compute", host="host1"):
    return recovery.beat(topic, host, manager, 10.0)


def heartbeat(host="host1", at=100.0):
    """A heartbeat's one round trip: its ZADD, and the read of whether the scheduler parked the host."""
    return Batch((ZAdd(keys.heartbeats("compute"), {host: at}), HGet(keys.COMPUTE_PARKED, host)))


def test_a_heartbeat_whose_entry_was_there_costs_nothing_more():
    """Nothing lost: the heartbeat is its one round trip (ZADD and the parked read)."""
    store = Host({keys.heartbeats("compute"): {"host1": 90.0}})
    effects, counts = drive(beat(ComputeManager("host1", None)), store)
    assert effects == [Now(), heartbeat()] and counts is None


def test_a_new_heartbeat_entry_with_the_marker_in_place_is_no_loss():
    """A first beat (or an entry someone removed): the marker says start-up's state is there."""
    store = Host({keys.ASSERTED: {"compute.host1": "1.0"}})
    effects, counts = drive(beat(ComputeManager("host1", None)), store)
    assert effects[-1] == HGet(keys.ASSERTED, "compute.host1") and counts is None


def test_a_store_watch_cut_short_is_tried_again_on_the_next_beat():
    """The store failed mid-way (the entry is back, the marker not): the next beat checks again."""
    manager = ComputeManager("host1", None)
    gen = beat(manager)
    assert [gen.send(None), gen.send(100.0), gen.send([1, None])] == [Now(), heartbeat(), HGet(keys.ASSERTED, "compute.host1")]
    with pytest.raises(StoreUnavailable):
        gen.throw(StoreUnavailable("gone"))
    store = Host({keys.heartbeats("compute"): {"host1": 90.0}})
    _, counts = drive(beat(manager), store)
    assert counts == {"losses_noticed": 1, "hosts": 1, "orphaned_domains": 0}


def test_a_compute_host_registers_again_and_destroys_the_domains_the_store_forgot():
    """After a loss: its cores entry is back, orphans are destroyed, a record made since keeps its domain."""
    store = Host({keys.instance("i-new"): {"id": "i-new", "host": "host1", "state": "spawning"}},
                 domains=("i-old", "i-new"))
    _, counts = drive(beat(ComputeManager("host1", None)), store)
    assert store.domains == {"i-new"}
    assert store.data[keys.COMPUTE_CORES] == {"host1": 0.0}
    assert counts == {"losses_noticed": 1, "hosts": 1, "orphaned_domains": 1}
    assert store.data[keys.RECOVERED] == {"losses_noticed": "1", "hosts": "1", "orphaned_domains": "1"}
    assert "compute.host1" in store.data[keys.ASSERTED]


def test_a_network_host_recreates_its_pools_held_and_releases_them_whole_after_the_hold():
    """The pool stays empty through the hold (orphans may still use its addresses); the first beat after it
    puts every address back."""
    manager = make_manager(SMALL_FLAT, "net1")
    store = Host({})
    _, counts = drive(beat(manager, "network", "net1"), store)
    assert counts == {"losses_noticed": 1, "pools": 1, "floating_addresses": 0, "network_hosts": 0}
    assert keys.available(FLAT) not in store.data and store.data[keys.network(FLAT)]["held_until"] == "120.0"
    store.now = 110.0
    drive(beat(manager, "network", "net1"), store)
    assert keys.available(FLAT) not in store.data
    store.now = 120.0
    drive(beat(manager, "network", "net1"), store)
    assert store.data[keys.available(FLAT)] == set(manager.specs()[0].addresses)
    assert "held_until" not in store.data[keys.network(FLAT)] and manager.held == {}


def test_a_network_host_claims_back_what_it_served_and_rebuilds_its_dhcp_from_the_store():
    """Its bridge still serves vlan100: it owns it again, and the orphans' DHCP lines are dropped."""
    manager = make_manager(SMALL_VLAN, "net1")
    manager.served = {"vlan100"}
    store = Host({})
    _, counts = drive(beat(manager, "network", "net1"), store)
    assert store.data[keys.network("vlan100")]["host"] == "net1"
    assert next(e for e in store.seen if isinstance(e, UpdateDhcp)).hosts == ()
    assert counts["network_hosts"] == 1 and counts["pools"] == 4


def test_a_network_another_host_claimed_first_is_no_longer_served_here():
    """net2 re-created and claimed vlan100 first: net1 stops its dnsmasq on br100 and forgets it."""
    manager = make_manager(SMALL_VLAN, "net1")
    manager.served = {"vlan100"}
    other = make_manager(SMALL_VLAN, "net2")
    store = Host({})
    drive(other.create_networks(), store)
    store.data[keys.network("vlan100")]["host"] = "net2"
    drive(recovery.reclaim_served(manager), store)
    assert StopDhcp("br100") in store.seen and manager.served == set()


def test_a_hold_is_released_once():
    """A second release of the same hold (the hold already ended) adds nothing."""
    manager = make_manager(SMALL_FLAT, "net1")
    store = Host({})
    drive(manager.create_networks(held_until=120.0), store)
    assert drive(recovery.release_held(manager, FLAT, 120.0), store)[1] is True
    store.data[keys.available(FLAT)].clear()
    assert drive(recovery.release_held(manager, FLAT, 120.0), store)[1] is False
    assert store.data[keys.available(FLAT)] == set()
