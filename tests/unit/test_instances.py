"""common.instances: the transition guard on what was read, fail and fail_latest."""

import pytest
from records import IID, KEY, cas, changed, held, noted, record, released, settle
from scripted import finish, run, step
from tiny_store import TinyStore, drive

from common import instances
from common.effects import Guard, HGetAll, Now, Transaction

OK = [1, 1, 1]  # a transaction's results when its guards held


def test_guarded_fields_are_host_and_fixed_ip():
    """The fields that decide what a transition gives back are the host and the address."""
    assert instances.GUARDED_FIELDS == ("host", "fixed_ip")


def test_transition_guards_state_host_and_fixed_ip_as_read():
    """The CAS holds only if state, host and fixed_ip are still what the caller read."""
    gen = instances.transition(record("running", host="h1", fixed_ip="10.0.0.7"), "reboot")
    assert step(gen) == Now()
    assert step(gen, 5.0).guards == (Guard(KEY, "state", "running"), Guard(KEY, "host", "h1"), Guard(KEY, "fixed_ip", "10.0.0.7"))


def test_transition_guards_only_the_fields_the_record_has():
    """A record without host or fixed_ip is guarded on its state alone."""
    gen = instances.transition({"id": IID, "state": "running"}, "reboot")
    step(gen)
    assert step(gen, 5.0).guards == (Guard(KEY, "state", "running"),)


@pytest.mark.parametrize("field, value", [("host", "h1"), ("fixed_ip", "10.0.0.9")])
def test_transition_from_a_stale_read_writes_nothing(field, value):
    """A host or address that moved since the read makes the CAS fail, state unchanged."""
    store = TinyStore({KEY: record("scheduling", **{field: value})})
    _, moved = drive(instances.transition(record("scheduling", fixed_ip=""), "terminate"), store)
    assert moved is None and store.data[KEY]["state"] == "scheduling"


def test_fail_by_lost_moves_running_to_error_with_its_cores():
    """event="lost" fails a running instance, giving its host's cores back."""
    effects, failed = run(instances.fail(record("running", host="h1"), "gone", event="lost"), 5.0, OK, None)
    assert effects[1] == cas("running", "error", 5.0, *released("h1"), noted(), settle(), was=held("h1"), error="gone")
    assert failed is True


def test_fail_latest_rereads_after_a_lost_cas_and_returns_the_failed_record():
    """A CAS lost to an allocation re-reads, fails the new read and returns it (its address to release)."""
    gen = instances.fail_latest(IID, "late")
    assert step(gen) == HGetAll(KEY)
    assert step(gen, record("scheduling", fixed_ip="")) == Now()
    assert step(gen, 5.0) == cas("scheduling", "error", 5.0, settle(), was=held(fixed_ip=""), error="late")
    assert step(gen, None) == HGetAll(KEY)
    assert step(gen, record("scheduling")) == Now()
    assert step(gen, 6.0) == cas("scheduling", "error", 6.0, noted(), settle(), error="late")
    assert step(gen, OK) == changed("scheduling", "error", 6.0)
    assert finish(gen) == record("scheduling")


def test_fail_latest_gives_up_after_max_cas_retries():
    """A record that keeps moving is given up on after MAX_CAS_RETRIES lost CASes."""
    gen = instances.fail_latest(IID, "late")
    effects = [step(gen)]
    for _ in range(instances.MAX_CAS_RETRIES - 1):
        effects += [step(gen, record("scheduling")), step(gen, 5.0), step(gen, None)]
    effects += [step(gen, record("scheduling")), step(gen, 5.0)]
    assert finish(gen, None) is None
    assert sum(isinstance(e, Transaction) for e in effects) == instances.MAX_CAS_RETRIES


@pytest.mark.parametrize("found", [{}, record("running"), record("shutting_down"), record("error")])
def test_fail_latest_of_a_missing_or_unfailable_record_only_reads(found):
    """Gone, running, terminating or already failed: one read, nothing written, None."""
    effects, failed = run(instances.fail_latest(IID, "late"), found)
    assert effects == [HGetAll(KEY)] and failed is None
