"""Tests for the invariant checkers I1-I7 over hand-built snapshots."""

from common import invariants as inv
from common import keys, lifecycle

NET = "flat"
POOL = tuple(f"10.0.0.{k}" for k in range(2, 12))
BOOTED = ("scheduling", "spawning", "launching", "running")
DELETED = (*BOOTED, "shutting_down", "deleted")


def history(*states, start=10.0):
    """Transition entries from creation through ``states``, one second apart."""
    entries, src = [], None
    for k, dst in enumerate(states):
        entries.append(lifecycle.encode_transition(src, dst, start + k))
        src = dst
    return entries


def add(store, domains, iid, *states, host="h1", at=10.0):
    """Put a record that went through ``states`` into the dump, with its address and domain."""
    state = states[-1]
    address = sorted(store[keys.available(NET)])[0]
    store[keys.instance(iid)] = {
        "id": iid, "state": state, "host": host, "fixed_ip": address,  # deleted ones keep the field
        "network_id": NET, "updated_at": repr(at + len(states) - 1), "project_id": "p1", "vcpus": "2",
    }
    store[keys.transitions(iid)] = history(*states, start=at)
    store[keys.INSTANCES].add(iid)
    if state != lifecycle.DELETED:
        count(store, instances=1, cores=2)
    if state in lifecycle.HOLDS_RESOURCES:
        store[keys.available(NET)].discard(address)
        store[keys.network_fixedips(NET)].add(address)
        store[keys.fixedip(address)] = {"address": address, "network_id": NET, "instance_id": iid, "state": "allocated"}
        store[keys.ip_instances(address)] = {iid}
    if state in (lifecycle.RUNNING, lifecycle.REBOOTING):
        domains.setdefault(host, {})[iid] = "running"
    return address


def count(store, project="p1", **held):
    """Add ``held`` (instances=, cores=, floating_ips=) to the project's usage hash."""
    usage = store.setdefault(keys.project_usage(project), {})
    for name, n in held.items():
        usage[name] = str(int(usage.get(name, "0")) + n)


def world(n=3):
    """A consistent dump: one deleted and ``n`` running instances on host h1 of one flat network."""
    store = {
        keys.INSTANCES: set(),
        keys.NETWORKS: {NET},
        keys.network(NET): {"id": NET, "cidr": "10.0.0.0/28"},
        keys.network_addresses(NET): set(POOL),
        keys.available(NET): set(POOL),
        keys.network_fixedips(NET): set(),
    }
    domains = {"h1": {}}
    add(store, domains, "i-gone", *DELETED)
    for k in range(n):
        add(store, domains, f"i-{k}", *BOOTED)
    return store, domains


def snap(store, domains, queues=None, now=100.0, timeout=60.0):
    """A snapshot of the dump at ``now`` with a build timeout of ``timeout``."""
    queues = {"compute.h1": {"ready": 0, "unacked": 0}} if queues is None else queues
    return inv.Snapshot(now=now, build_timeout=timeout, store=store, domains=domains, queues=queues)


def mentions(verdict, *words):
    """True when some violation names every one of ``words``."""
    return any(all(w in v for w in words) for v in verdict.violations)


# ------------------------------------------------------------------ consistent state


def test_consistent_snapshot_passes_all_seven():
    """A consistent dump passes I1..I7 with no violations."""
    verdicts = inv.check_all(snap(*world()))
    assert [(v.name, v.ok, v.violations) for v in verdicts] == [(f"I{k}", True, ()) for k in range(1, 8)]


def test_every_verdict_has_a_title():
    """Each verdict carries a short human title."""
    assert all(v.title for v in inv.check_all(snap(*world())))


def test_empty_store_passes_all_seven():
    """A run that created nothing is consistent."""
    assert all(v.ok for v in inv.check_all(snap({}, {}, {})))


# ------------------------------------------------------------------ I1


def test_duplicate_fixed_ip_violates_i1():
    """Two live instances with the same fixed_ip violate I1."""
    store, domains = world()
    address = store[keys.instance("i-0")]["fixed_ip"]
    store[keys.instance("i-1")]["fixed_ip"] = address
    v = inv.i1_unique_addresses(snap(store, domains))
    assert not v.ok and mentions(v, address, "i-0", "i-1")


def test_ip_set_with_two_live_members_violates_i1():
    """An ip:<a>:instances set naming two live instances violates I1."""
    store, domains = world()
    address = store[keys.instance("i-0")]["fixed_ip"]
    store[keys.ip_instances(address)].add("i-1")
    assert mentions(inv.i1_unique_addresses(snap(store, domains)), keys.ip_instances(address), "i-0", "i-1")


def test_deleted_record_keeping_its_address_is_not_a_duplicate():
    """A deleted record's stale fixed_ip does not count against the live holder."""
    store, domains = world()
    store[keys.instance("i-gone")]["fixed_ip"] = store[keys.instance("i-0")]["fixed_ip"]
    store[keys.ip_instances(store[keys.instance("i-0")]["fixed_ip"])].add("i-gone")
    assert inv.i1_unique_addresses(snap(store, domains)).ok


# ------------------------------------------------------------------ I2


def test_leaked_address_violates_i2():
    """An address neither free nor handed out is reported as leaked."""
    store, domains = world()
    store[keys.available(NET)].discard("10.0.0.9")
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), "10.0.0.9", "leaked")


def test_address_both_free_and_handed_out_violates_i2():
    """An address in the free pool and handed out at once violates I2."""
    store, domains = world()
    address = store[keys.instance("i-0")]["fixed_ip"]
    store[keys.available(NET)].add(address)
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), address, "both free and handed out")


def test_handed_out_address_without_live_holder_violates_i2():
    """An address still handed out to an instance in error violates I2."""
    store, domains = world()
    store[keys.instance("i-0")]["state"] = lifecycle.ERROR
    v = inv.i2_allocated_matches_live(snap(store, domains))
    assert mentions(v, store[keys.instance("i-0")]["fixed_ip"], "no live instance")


def test_held_address_not_handed_out_violates_i2():
    """A live instance's address missing from network:<nid>:fixedips violates I2."""
    store, domains = world()
    address = store[keys.instance("i-0")]["fixed_ip"]
    store[keys.network_fixedips(NET)].discard(address)
    store[keys.available(NET)].add(address)
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), address, "i-0", "not handed out")


def test_fixedip_record_naming_another_instance_violates_i2():
    """A fixedip:<a> hash naming the wrong instance violates I2."""
    store, domains = world()
    address = store[keys.instance("i-0")]["fixed_ip"]
    store[keys.fixedip(address)]["instance_id"] = "i-1"
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), address, "i-1", "i-0")


def test_invented_address_violates_i2():
    """A free address outside the network's addresses violates I2."""
    store, domains = world()
    store[keys.available(NET)].add("10.9.9.9")
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), "10.9.9.9", "not in the network")


def test_instance_without_network_id_counts_on_the_only_network():
    """With one network, a live instance lacking network_id is attributed to it."""
    store, domains = world()
    del store[keys.instance("i-0")]["network_id"]
    assert inv.i2_allocated_matches_live(snap(store, domains)).ok


# ------------------------------------------------------------------ I3


def test_orphan_domain_of_error_record_violates_i3():
    """A domain whose record is in error is an orphan."""
    store, domains = world()
    store[keys.instance("i-0")]["state"] = lifecycle.ERROR
    assert mentions(inv.i3_domains_match_records(snap(store, domains)), "orphan", "i-0", "h1")


def test_domain_without_record_violates_i3():
    """A domain with no instance record violates I3."""
    store, domains = world()
    domains["h2"] = {"i-ghost": "running"}
    assert mentions(inv.i3_domains_match_records(snap(store, domains)), "i-ghost", "h2", "no instance record")


def test_running_record_without_domain_violates_i3():
    """A running record with no domain on its host violates I3."""
    store, domains = world()
    del domains["h1"]["i-1"]
    assert mentions(inv.i3_domains_match_records(snap(store, domains)), "i-1", "no domain")


def test_domain_on_wrong_host_violates_i3():
    """A domain on a host other than its record's host violates I3."""
    store, domains = world()
    domains["h2"] = {"i-2": domains["h1"].pop("i-2")}
    v = inv.i3_domains_match_records(snap(store, domains))
    assert mentions(v, "i-2", "h2", "'h1'") and mentions(v, "i-2", "no domain")


def test_spawning_record_without_domain_passes_i3():
    """An instance still spawning needs no domain yet."""
    store, domains = world()
    add(store, domains, "i-new", "scheduling", "spawning", at=95.0)
    assert inv.i3_domains_match_records(snap(store, domains)).ok


# ------------------------------------------------------------------ I4


def test_stuck_transitional_instance_violates_i4():
    """An instance spawning since before now - build_timeout is stuck."""
    store, domains = world()
    add(store, domains, "i-stuck", "scheduling", "spawning", at=10.0)
    assert mentions(inv.i4_no_stuck_transitions(snap(store, domains)), "i-stuck", "spawning")


def test_young_transitional_instance_passes_i4():
    """An instance that entered a transitional state recently is fine."""
    store, domains = world()
    add(store, domains, "i-young", "scheduling", "spawning", at=90.0)
    assert inv.i4_no_stuck_transitions(snap(store, domains)).ok


def test_old_running_instance_passes_i4():
    """A settled instance is never stuck, however old its last transition."""
    store, domains = world()
    assert inv.i4_no_stuck_transitions(snap(store, domains, now=1e6)).ok


def test_i4_falls_back_to_updated_at():
    """Without a transition history, updated_at dates the last change."""
    store, domains = world()
    add(store, domains, "i-stuck", "scheduling", at=90.0)
    del store[keys.transitions("i-stuck")]
    assert inv.i4_no_stuck_transitions(snap(store, domains)).ok
    assert not inv.i4_no_stuck_transitions(snap(store, domains, now=200.0)).ok


# ------------------------------------------------------------------ I5


def test_transitional_instance_violates_i5():
    """An instance not in a final state at the end violates I5, however young."""
    store, domains = world()
    add(store, domains, "i-young", "scheduling", at=99.0)
    assert mentions(inv.i5_requests_settled(snap(store, domains)), "i-young", "scheduling")


def test_non_empty_queue_violates_i5():
    """A queue with ready or unacked messages violates I5, naming the counts."""
    store, domains = world()
    v = inv.i5_requests_settled(snap(store, domains, {"compute.h1": {"ready": 2, "unacked": 1}}))
    assert mentions(v, "compute.h1", "ready=2", "unacked=1")


# ------------------------------------------------------------------ I6


def test_illegal_transition_violates_i6():
    """A recorded pair outside lifecycle.LEGAL violates I6."""
    store, domains = world()
    store[keys.transitions("i-0")].append(lifecycle.encode_transition("running", "spawning", 20.0))
    store[keys.instance("i-0")]["state"] = "spawning"
    assert mentions(inv.i6_legal_transitions(snap(store, domains)), "i-0", "illegal", "running -> spawning")


def test_broken_chain_violates_i6():
    """An entry that does not start where the previous one ended violates I6."""
    store, domains = world()
    store[keys.transitions("i-0")].append(lifecycle.encode_transition("rebooting", "running", 20.0))
    v = inv.i6_legal_transitions(snap(store, domains))
    assert v.ok is False and mentions(v, "i-0", "starts from rebooting")


def test_last_state_mismatch_violates_i6():
    """A record whose state differs from its history's last state violates I6."""
    store, domains = world()
    store[keys.instance("i-0")]["state"] = lifecycle.REBOOTING
    assert mentions(inv.i6_legal_transitions(snap(store, domains)), "i-0", "'rebooting'", "'running'")


def test_decreasing_time_violates_i6():
    """Transition times that go backwards violate I6."""
    store, domains = world()
    store[keys.transitions("i-0")].append(lifecycle.encode_transition("running", "rebooting", 1.0))
    store[keys.instance("i-0")]["state"] = lifecycle.REBOOTING
    assert mentions(inv.i6_legal_transitions(snap(store, domains)), "i-0", "earlier")


def test_first_entry_not_creation_violates_i6():
    """A history that does not start with a creation violates I6."""
    store, domains = world()
    del store[keys.transitions("i-0")][0]
    assert mentions(inv.i6_legal_transitions(snap(store, domains)), "i-0", "not a creation")


def test_index_naming_missing_record_violates_i6():
    """An id in the instances index without its record violates I6."""
    store, domains = world()
    store[keys.INSTANCES].add("i-lost")
    assert mentions(inv.i6_legal_transitions(snap(store, domains)), "index names a missing record", "i-lost")


def test_record_missing_from_index_violates_i6():
    """A record absent from the instances index violates I6."""
    store, domains = world()
    store[keys.INSTANCES].discard("i-0")
    assert mentions(inv.i6_legal_transitions(snap(store, domains)), "instance:i-0", "index")


# ------------------------------------------------------------------ reporting


def test_violations_capped_at_twenty():
    """More than 20 violations are cut to 20 plus a count of the rest."""
    store, domains = world()
    domains["h2"] = {f"d-{k:02d}": "running" for k in range(25)}
    v = inv.i3_domains_match_records(snap(store, domains))
    assert len(v.violations) == 21 and v.violations[-1] == "... and 5 more"
    assert "d-00" in v.violations[0] and "d-19" in v.violations[19]


def test_exactly_twenty_violations_are_not_cut():
    """Twenty violations are listed in full, with no count entry."""
    store, domains = world()
    domains["h2"] = {f"d-{k:02d}": "running" for k in range(20)}
    v = inv.i3_domains_match_records(snap(store, domains))
    assert len(v.violations) == 20 and not v.violations[-1].startswith("...")


def test_messages_come_in_sorted_order():
    """Violations are listed in sorted order, whatever order the snapshot gives them in."""
    store, domains = world()
    domains["h2"] = {f"d-{k}": "running" for k in reversed(range(5))}
    v = inv.i3_domains_match_records(snap(store, domains))
    assert [m.split()[1] for m in v.violations] == [f"d-{k}" for k in range(5)]


# ------------------------------------------------------------------ I2: DHCP, floating, Vlan

FLOATING = ("4.4.4.1", "4.4.4.2", "4.4.4.3")


def deallocated(store, iid="i-0", waiting=True):
    """``iid`` went to error and its DHCP address was deallocated (waiting for its lease to end)."""
    address = store[keys.instance(iid)]["fixed_ip"]
    store[keys.instance(iid)]["state"] = lifecycle.ERROR
    store[keys.fixedip(address)].update({"state": "deallocated", "deallocated_at": "95.0"})
    if waiting:
        store[keys.DEALLOCATED] = {address: 95.0}
    return address


def with_floating(store):
    """Net1's pool of three floating addresses; 4.4.4.1 allocated to p1 and associated with i-0."""
    store[keys.FLOATING_HOSTS] = {"net1"}
    store[keys.floating_addresses("net1")] = set(FLOATING)
    store[keys.floating_available("net1")] = set(FLOATING[1:])
    store[keys.floatingip("4.4.4.1")] = {
        "address": "4.4.4.1", "host": "net1", "project_id": "p1", "instance_id": "i-0",
        "fixed_ip": store[keys.instance("i-0")]["fixed_ip"],
    }
    store[keys.instance("i-0")]["floating_ip"] = "4.4.4.1"
    count(store, floating_ips=1)
    return store


def test_dhcp_address_waiting_in_deallocated_is_not_a_violation():
    """A DHCP address released by its (dead) instance and waiting in `deallocated` is consistent."""
    store, domains = world()
    deallocated(store)
    assert inv.i2_allocated_matches_live(snap(store, domains)).violations == ()


def test_deallocated_address_missing_from_the_waiting_set_violates_i2():
    """Marked deallocated but not waiting in `deallocated`: nothing will ever reclaim it."""
    store, domains = world()
    address = deallocated(store, waiting=False)
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), address, "no live instance")


def test_consistent_floating_pool_passes_i2():
    """Free + allocated == the host's addresses, and the association points both ways."""
    store, domains = world()
    assert inv.i2_allocated_matches_live(snap(with_floating(store), domains)).violations == ()


def test_leaked_floating_address_violates_i2():
    """A floating address neither free nor allocated is reported as leaked."""
    store, domains = world()
    with_floating(store)[keys.floating_available("net1")].discard("4.4.4.3")
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), "floating 4.4.4.3", "net1", "leaked")


def test_floating_address_both_free_and_allocated_violates_i2():
    """An allocated floating address back in the free pool is reported."""
    store, domains = world()
    with_floating(store)[keys.floating_available("net1")].add("4.4.4.1")
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), "4.4.4.1", "both free and allocated")


def test_floating_association_to_a_dead_instance_violates_i2():
    """A floating address still associated with an instance that is no longer live is reported."""
    store, domains = world()
    with_floating(store)[keys.instance("i-0")]["state"] = lifecycle.DELETED
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), "4.4.4.1", "i-0", "not live")


def test_vlan_network_serving_two_projects_violates_i2():
    """Two projects associated with one Vlan network is reported, naming both."""
    store, domains = world()
    store[keys.project_network("p1")] = "vlan100"
    store[keys.project_network("p2")] = "vlan100"
    assert mentions(inv.i2_allocated_matches_live(snap(store, domains)), "vlan100", "p1", "p2", "serves both")


def test_vlan_network_with_one_project_passes_i2():
    """One project per network, recorded on the network and not free, is consistent."""
    store, domains = world()
    store[keys.project_network("p1")] = "vlan100"
    store[keys.project_network("p2")] = "vlan101"
    store[keys.network("vlan100")] = {"id": "vlan100", "project_id": "p1"}
    store[keys.FREE_NETWORKS] = {"vlan102"}
    assert inv.i2_allocated_matches_live(snap(store, domains)).violations == ()


# ------------------------------------------------------------------ I7


def reservation(store, rid="r-1", project="p1", instances=2, cores=4, deadline=90.0):
    """A request's outstanding quota reservation, counted in the usage as common.quota does."""
    store[keys.reservation(rid)] = {"project_id": project, "instances": str(instances), "cores": str(cores)}
    store.setdefault(keys.RESERVATIONS, {})[rid] = deadline
    count(store, project, instances=instances, cores=cores)


def test_quota_counted_but_held_by_nothing_violates_i7():
    """Usage 4 against 3 live instances (the leak of an ambiguous reservation) is reported with both numbers."""
    store, domains = world()
    count(store, instances=1, cores=2)
    v = inv.i7_quota_matches_holdings(snap(store, domains))
    assert mentions(v, "project p1", "usage instances is 4", "holds 3") and mentions(v, "usage cores is 8", "holds 6")


def test_an_instance_in_error_still_holds_its_quota():
    """Until it is deleted an instance counts against the quota, error included."""
    store, domains = world()
    store[keys.instance("i-0")]["state"] = lifecycle.ERROR
    assert inv.i7_quota_matches_holdings(snap(store, domains)).ok


def test_an_outstanding_reservation_before_its_deadline_is_held_quota():
    """A request still creating its records holds what it reserved: no violation."""
    store, domains = world()
    reservation(store)
    assert inv.i7_quota_matches_holdings(snap(store, domains)).violations == ()


def test_a_reservation_left_long_past_its_deadline_violates_i7():
    """Nothing gave it back for a whole build timeout after its deadline: reported with its id."""
    store, domains = world()
    reservation(store, deadline=30.0)
    assert mentions(inv.i7_quota_matches_holdings(snap(store, domains, now=100.0, timeout=60.0)), "r-1", "past its deadline")


def test_a_reservation_missing_from_its_index_violates_i7():
    """A reservation the reaper cannot find would never be given back."""
    store, domains = world()
    reservation(store)
    store[keys.RESERVATIONS].clear()
    assert mentions(inv.i7_quota_matches_holdings(snap(store, domains)), "reservation:r-1", "missing")


def test_floating_addresses_count_against_the_quota():
    """An allocated floating address the usage does not count is reported."""
    store, domains = world()
    with_floating(store)
    count(store, floating_ips=-1)
    assert mentions(inv.i7_quota_matches_holdings(snap(store, domains)), "floating_ips is 0", "holds 1")


def test_usage_of_a_project_that_holds_nothing_must_be_zero():
    """A usage hash of a project with no records is checked too."""
    store, domains = world()
    count(store, "p9", instances=2, cores=2)
    assert mentions(inv.i7_quota_matches_holdings(snap(store, domains)), "project p9", "usage instances is 2", "holds 0")
