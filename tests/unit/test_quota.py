"""Quota reservations, their reaper and the reconcile (common.quota) over the in-memory store."""

import pytest
from records import flat
from tiny_store import TinyStore, drive

from common import invariants as inv
from common import keys, quota
from common.cloud import CloudConfig, CloudController, Quota
from common.context import SYSTEM, RequestContext
from common.effects import Cast, Transaction
from common.errors import NovaError, StoreUnavailable

USAGE = keys.project_usage("p1")
RES = keys.reservation("r-1")
CTX = RequestContext("alice", "p1")


def usage(store, project="p1"):
    """The project's counters, without the version."""
    return {k: int(v) for k, v in store.data.get(keys.project_usage(project), {}).items()}


def i7(store, now=100.0):
    """I7 over the store as it is (build timeout 60 s)."""
    return inv.i7_quota_matches_holdings(inv.Snapshot(now=now, build_timeout=60.0, store=store.data, domains={},
                                                      queues={}))


def run(gen, store):
    return drive(gen, store)[1]


def test_a_reservation_counts_in_the_usage_and_names_what_is_left_to_create():
    """reserve adds the count to the usage and writes the reservation with its deadline, in one step."""
    store = TinyStore({})
    assert run(quota.reserve("p1", "r-1", 3, 2, 700.0), store) == (3, 6, ())
    assert usage(store) == {"instances": 3, "cores": 6}
    assert store.data[RES] == {"project_id": "p1", "instances": "3", "cores": "6"}
    assert store.data[keys.RESERVATIONS] == {"r-1": 700.0} and i7(store).ok


def test_a_reservation_id_is_reserved_once():
    """Reserving under an id that holds a reservation is refused and counts nothing."""
    store = TinyStore({})
    run(quota.reserve("p1", "r-1", 1, 1, 700.0), store)
    with pytest.raises(NovaError, match="exists already"):
        run(quota.reserve("p1", "r-1", 1, 1, 700.0), store)
    assert usage(store) == {"instances": 1, "cores": 1}


def test_taking_the_last_instance_deletes_the_reservation():
    """Each take moves one instance off the reservation; the last removes it and its deadline."""
    store = TinyStore({})
    run(quota.reserve("p1", "r-1", 2, 2, 700.0), store)
    for remaining in (2, 1):
        ops, guards = quota.take("p1", "r-1", remaining, 2, 800.0)
        assert store.answer(Transaction(ops=ops, guards=guards)) is not None
    assert RES not in store.data and store.data[keys.RESERVATIONS] == {}
    assert usage(store) == {"instances": 2, "cores": 4}


def test_a_take_on_a_reservation_given_back_is_refused():
    """Once given back, a reservation pays for no record: quota is never used twice."""
    store = TinyStore({})
    run(quota.reserve("p1", "r-1", 2, 2, 700.0), store)
    run(quota.release("r-1"), store)
    ops, guards = quota.take("p1", "r-1", 2, 2, 800.0)
    assert store.answer(Transaction(ops=ops, guards=guards)) is None
    assert usage(store) == {"instances": 0, "cores": 0}


def test_release_gives_back_what_is_left_once():
    """A failed request gives back the rest, counted in the audit; a second release finds nothing."""
    store = TinyStore({})
    run(quota.reserve("p1", "r-1", 3, 2, 700.0), store)
    ops, guards = quota.take("p1", "r-1", 3, 2, 800.0)
    store.answer(Transaction(ops=ops, guards=guards))
    assert run(quota.release("r-1", "failed"), store) == (2, 4)
    assert run(quota.release("r-1", "failed"), store) is None
    assert usage(store) == {"instances": 1, "cores": 2}
    assert store.data[keys.QUOTA_AUDIT] == {"failed": "1", "failed_instances": "2", "failed_cores": "4"}


def test_the_reaper_gives_back_only_reservations_past_their_deadline():
    """expire takes those whose deadline has passed, counts them, and leaves the others."""
    store = TinyStore({})
    run(quota.reserve("p1", "r-1", 1, 2, 50.0), store)
    run(quota.reserve("p1", "r-2", 1, 2, 500.0), store)
    assert run(quota.expire(100.0, 10), store) == 1
    assert set(store.data[keys.RESERVATIONS]) == {"r-2"} and usage(store) == {"instances": 1, "cores": 2}
    assert store.data[keys.QUOTA_AUDIT]["expired"] == "1"


def lost_reservation(store):
    """A RunInstances whose reservation ran on the server while its caller timed out;
    -> (the API, the request, the effect it yields next: its give-back's first read)."""
    api = CloudController(CloudConfig(quotas={"p1": Quota(5, 10)}, build_timeout=60.0), flat())
    gen = api.run_instances(CTX, "ami-tiny", "m1.small")
    effect = next(gen)
    while not isinstance(effect, Transaction):
        effect = gen.send(store.answer(effect))
    store.answer(effect)
    return api, gen, gen.throw(StoreUnavailable("no reply within 5 s"))


def test_a_request_gives_back_a_reservation_whose_answer_was_lost():
    """The reservation ran but its caller saw a timeout: the request gives it back and fails."""
    store = TinyStore({}, now=10.0)
    _, gen, effect = lost_reservation(store)
    with pytest.raises(StoreUnavailable):
        drive(gen, store, reply=store.answer(effect))
    assert usage(store) == {"instances": 0, "cores": 0} and RES not in store.data


def test_a_lost_reservation_the_request_cannot_give_back_is_given_back_by_the_reaper():
    """The give-back times out too: I7 holds meanwhile, and the reaper gives it back at the deadline."""
    store = TinyStore({}, now=10.0)
    api, gen, _ = lost_reservation(store)
    with pytest.raises(StoreUnavailable, match="5 s"):
        gen.throw(StoreUnavailable("still no reply"))
    assert usage(store) == {"instances": 1, "cores": 1} and i7(store, now=10.0).ok
    store.now = 71.0
    assert run(api.reap_leftovers(SYSTEM), store)["reservations"] == 1
    assert usage(store) == {"instances": 0, "cores": 0} and i7(store, now=71.0).ok


def test_reconcile_corrects_a_count_nothing_holds_and_says_so():
    """Usage 4 for 3 records: the reconcile sets it to 3 and counts the correction."""
    store = TinyStore({USAGE: {"instances": "4", "cores": "7", "floating_ips": "0"},
                       keys.project_instances("p1"): {"i-1", "i-2", "i-3"},
                       **{keys.instance(f"i-{k}"): {"vcpus": "2"} for k in (1, 2, 3)}})
    assert run(quota.reconcile("p1"), store) == {"instances": -1, "cores": -1}
    assert usage(store) == {"instances": 3, "cores": 6, "floating_ips": 0}
    assert store.data[keys.QUOTA_AUDIT] == {"corrections": "1", "corrected_instances": "-1", "corrected_cores": "-1"}


def test_reconcile_counts_outstanding_reservations_as_held():
    """A request still creating its records holds its reservation: nothing to correct."""
    store = TinyStore({})
    run(quota.reserve("p1", "r-1", 2, 2, 700.0), store)
    run(quota.reserve("p2", "r-2", 1, 1, 700.0), store)
    assert run(quota.reconcile("p1"), store) == {}
    assert keys.QUOTA_AUDIT not in store.data


def test_reconcile_that_sees_the_project_change_while_reading_corrects_nothing():
    """A record created between the two reads: the pass gives up and writes nothing."""
    store = TinyStore({USAGE: {"instances": "5", "cores": "5"}, keys.project_instances("p1"): {"i-1"},
                       keys.instance("i-1"): {"vcpus": "1"}})
    gen = quota.reconcile("p1")
    second = gen.send(store.answer(next(gen)))
    store.data[keys.project_instances("p1")].add("i-2")  # a launch landed meanwhile
    _, result = drive(gen, store, reply=store.answer(second))
    assert result is None and usage(store) == {"instances": 5, "cores": 5}


def test_two_reconciles_of_one_leak_correct_it_once():
    """The correction is guarded on the usage it read: a second pass that read the same loses."""
    store = TinyStore({USAGE: {"instances": "2", "cores": "2"}, keys.project_instances("p1"): {"i-1"},
                       keys.instance("i-1"): {"vcpus": "1"}})
    first, second = quota.reconcile("p1"), quota.reconcile("p1")
    reads = [gen.send(store.answer(next(gen))) for gen in (first, second)]
    answers = [store.answer(read) for read in reads]
    assert drive(first, store, reply=answers[0])[1] == {"instances": -1, "cores": -1}
    assert drive(second, store, reply=answers[1])[1] is None
    assert usage(store) == {"instances": 1, "cores": 1}


def test_the_reaper_finishes_the_release_a_lost_answer_cut_off():
    """An error record still holding its address (its move ran, its caller never heard) gets it
    released, and its host is asked to remove the domain."""
    address = "10.0.0.5"
    store = TinyStore({
        keys.instance("i-1"): {"id": "i-1", "state": "error", "host": "h1", "fixed_ip": address, "network_id": "flat",
                               "project_id": "p1", "vcpus": "1"},
        keys.fixedip(address): {"address": address, "network_id": "flat", "instance_id": "i-1", "state": "allocated"},
        keys.network_fixedips("flat"): {address}, keys.SETTLING: {"i-1"},
    })
    effects, leftovers = drive(CloudController(CloudConfig(), flat()).reap_leftovers(SYSTEM), store)
    assert leftovers["addresses"] == 1 and store.data[keys.SETTLING] == set()
    assert address in store.data[keys.available("flat")]
    assert [(e.topic, e.args) for e in effects if isinstance(e, Cast)] == [("compute.h1", {"instance_id": "i-1"})]
