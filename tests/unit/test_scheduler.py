"""SchedulerManager: reserve-then-verify core claims, liveness, placement CAS, dispatch."""

import pytest
from records import IID, KEY, cas, changed, dealloc, flat, noted, record, released, settle
from scripted import finish, run, step
from tiny_store import TinyStore, drive

from common import keys
from common.context import RequestContext
from common.effects import Cast, Choose, Guard, HGetAll, HSet, Now, Transaction, ZIncrBy, ZRangeByScore
from common.errors import Unroutable
from common.scheduler import MAX_CANDIDATES, SchedulerConfig, SchedulerManager

CTX = RequestContext("alice", "p1")
HB = keys.heartbeats("compute")
NO_HOST = "no valid host: all live hosts are full or down"


def scheduler(driver="simple", max_cores=8, max_memory_mb=8192):
    return SchedulerManager(SchedulerConfig(driver, max_cores, 60.0, max_memory_mb), flat())


def memory(host, mib=2048):
    """The memory claim (an m1.medium's 2048 MiB) that follows a successful core claim."""
    return ZIncrBy(keys.COMPUTE_MEMORY, mib, host)


def placed(host, at=100.0):
    return Transaction(
        ops=(HSet(KEY, {"host": host, "scheduled_at": repr(at)}),),
        guards=(Guard(KEY, "state", "scheduling"), Guard(KEY, "host", "")),
    )


def start_simple(gen, rows, live=(("h1", 95.0), ("h2", 95.0)), topic="compute"):
    """Read the record, answer the heartbeat query with ``live`` and the room query with ``rows``."""
    assert step(gen) == HGetAll(KEY)
    assert step(gen, record("scheduling")) == Now()
    assert step(gen, 100.0) == ZRangeByScore(keys.heartbeats(topic), "(40.0", "+inf")
    assert step(gen, list(live)) == ZRangeByScore(keys.COMPUTE_CORES, "-inf", "6.0")
    return step(gen, rows)


def test_simple_picks_first_live_candidate_under_the_limit():
    """Of the hosts with room (least loaded first), the first live one whose ZINCRBY stays <= max wins."""
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, [("h1", 0.0), ("h2", 4.0)]) == ZIncrBy(keys.COMPUTE_CORES, 2, "h1")
    assert step(gen, 2.0) == memory("h1")
    assert step(gen, 2048.0) == Now()
    assert step(gen, 100.0) == placed("h1")
    assert step(gen, [1]) == Cast("compute.h1", "run_instance", {"instance_id": IID}, CTX)
    assert finish(gen) is None


def test_simple_claim_over_the_limit_is_undone_and_next_tried():
    """A ZINCRBY result over max_cores (a race) is undone with the negative amount."""
    gen = scheduler().run_instance(CTX, IID)
    start_simple(gen, [("h1", 6.0), ("h2", 6.0)])
    assert step(gen, 10.0) == ZIncrBy(keys.COMPUTE_CORES, -2, "h1")
    assert step(gen, 8.0) == ZIncrBy(keys.COMPUTE_CORES, 2, "h2")
    assert step(gen, 8.0) == memory("h2")
    assert step(gen, 8192.0) == Now()  # exactly at both limits is allowed
    assert step(gen, 100.0) == placed("h2")
    assert step(gen, [1]) == Cast("compute.h2", "run_instance", {"instance_id": IID}, CTX)


@pytest.mark.parametrize("live", [[("h2", 99.0)], [("h2", 99.0), ("h3", 99.0)]])
def test_simple_skips_a_down_host(live):
    """A host with room but no fresh heartbeat is never claimed."""
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, [("h1", 0.0), ("h2", 0.0)], live) == ZIncrBy(keys.COMPUTE_CORES, 2, "h2")


def test_simple_tries_at_most_max_candidates():
    """After MAX_CANDIDATES lost claims the decision gives up (NoValidHost) without trying more."""
    hosts = [f"h{k:02}" for k in range(MAX_CANDIDATES + 1)]
    gen = scheduler().run_instance(CTX, IID)
    effect = start_simple(gen, [(h, 0.0) for h in hosts], [(h, 95.0) for h in hosts])
    claimed = []
    while isinstance(effect, ZIncrBy):
        claimed.append(effect.member)
        effect = step(gen, 10.0 if effect.amount > 0 else 8.0)  # every claim lost to a race
    assert claimed == [h for h in hosts[:MAX_CANDIDATES] for _ in ("claim", "undo")] and effect == Now()


def test_no_candidates_fails_and_deallocates():
    """No host with room: error with the reason, no cores to give back, address released."""
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, []) == Now()
    assert step(gen, 100.0) == cas("scheduling", "error", 100.0, noted(), settle(), error=NO_HOST)
    assert step(gen, [1, 1, 1]) == changed("scheduling", "error", 100.0)
    assert step(gen) == dealloc()
    assert finish(gen, [1, 1, 1, 1]) is None


def test_all_candidates_down_fails():
    """Every candidate down is the same as none."""
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, [("h1", 0.0)], live=[]) == Now()
    assert step(gen, 100.0) == cas("scheduling", "error", 100.0, noted(), settle(), error=NO_HOST)


def test_chance_chooses_among_live_hosts():
    """chance: the live hosts (sorted) go to Choose, the chosen one is claimed and placed."""
    gen = scheduler("chance").run_instance(CTX, IID)
    step(gen)
    assert step(gen, record("scheduling")) == Now()
    assert step(gen, 100.0) == ZRangeByScore(HB, "(40.0", "+inf")
    assert step(gen, [("h2", 99.0), ("h1", 98.0)]) == Choose(("h1", "h2"))
    assert step(gen, "h2") == ZIncrBy(keys.COMPUTE_CORES, 2, "h2")
    assert step(gen, 2.0) == memory("h2")  # claimed, never checked: 2010's chance is blind
    assert step(gen, 9999.0) == Now()
    assert step(gen, 100.0) == placed("h2")
    assert step(gen, [1]) == Cast("compute.h2", "run_instance", {"instance_id": IID}, CTX)


def test_chance_with_no_live_host_fails():
    """chance with nobody up fails the instance without a Choose."""
    gen = scheduler("chance").run_instance(CTX, IID)
    step(gen)
    step(gen, record("scheduling"))
    step(gen, 100.0)
    assert step(gen, []) == Now()
    assert step(gen, 100.0) == cas("scheduling", "error", 100.0, noted(), settle(), error=NO_HOST)


def test_placement_guard_failure_gives_cores_back():
    """Terminated while we chose: the placement CAS fails and the claim is undone."""
    gen = scheduler().run_instance(CTX, IID)
    start_simple(gen, [("h1", 0.0)])
    step(gen, 2.0)
    step(gen, 2048.0)
    assert step(gen, 100.0) == placed("h1")
    assert step(gen, None) == released("h1")[0]
    assert step(gen, 0.0) == released("h1")[1]
    assert finish(gen, 0.0) is None


def test_simple_host_out_of_memory_is_undone_and_next_tried():
    """Cores fit but memory does not: both claims are given back and the next host is tried."""
    gen = scheduler().run_instance(CTX, IID)
    start_simple(gen, [("h1", 0.0), ("h2", 2.0)])
    assert step(gen, 2.0) == memory("h1")
    assert step(gen, 9000.0) == ZIncrBy(keys.COMPUTE_MEMORY, -2048, "h1")
    assert step(gen, 6952.0) == ZIncrBy(keys.COMPUTE_CORES, -2, "h1")
    assert step(gen, 0.0) == ZIncrBy(keys.COMPUTE_CORES, 2, "h2")
    assert step(gen, 4.0) == memory("h2")
    assert step(gen, 2048.0) == Now()
    assert step(gen, 100.0) == placed("h2")


def test_custom_topic_routes_to_that_topic():
    """The cast goes to ``<topic>.<host>`` and liveness is read from that topic."""
    gen = scheduler().run_instance(CTX, IID, topic="gpu")
    start_simple(gen, [("h1", 0.0)], topic="gpu")
    step(gen, 2.0)
    step(gen, 2048.0)
    step(gen, 100.0)
    assert step(gen, [1]) == Cast("gpu.h1", "run_instance", {"instance_id": IID}, CTX)


@pytest.mark.parametrize("rec", [{}, record("running", host="h1"), record("scheduling", host="h1"), record("shutting_down")])
def test_nothing_to_schedule_only_reads(rec):
    """Missing, already placed, or no longer scheduling: read and return."""
    effects, result = run(scheduler().run_instance(CTX, IID), rec)
    assert effects == [HGetAll(KEY)] and result is None


def test_simple_in_a_tiny_store_places_on_the_least_loaded_live_host():
    """Sanity check of the store model used below: with room, the least loaded live host wins."""
    store = TinyStore({
        KEY: record("scheduling"),
        keys.COMPUTE_CORES: {"h1": 4.0, "h2": 2.0, "h3": 0.0},
        HB: {"h1": 95.0, "h2": 95.0, "h3": 10.0},
    })
    effects, _ = drive(scheduler().run_instance(CTX, IID), store)
    assert effects[-1] == Cast("compute.h2", "run_instance", {"instance_id": IID}, CTX)
    assert store.data[keys.COMPUTE_CORES] == {"h1": 4.0, "h2": 4.0, "h3": 0.0}


def test_simple_finds_a_live_host_behind_many_down_ones():
    """16 dead hosts at low load must not hide a live host with room (NoValidHost instead)."""
    cores = {f"dead{k:02}": 0.0 for k in range(MAX_CANDIDATES)}
    store = TinyStore({
        KEY: record("scheduling"),
        keys.COMPUTE_CORES: {**cores, "live": 2.0},
        HB: {**{host: 10.0 for host in cores}, "live": 95.0},
    })
    effects, _ = drive(scheduler().run_instance(CTX, IID), store)
    assert effects[-1] == Cast("compute.live", "run_instance", {"instance_id": IID}, CTX)


class BrokerAway(TinyStore):
    """A store whose broker refuses every cast (down, or the host's queue gone)."""

    def answer(self, e):
        if isinstance(e, Cast):
            raise Unroutable("cannot reach the broker: it is down")
        return super().answer(e)


def drive_through(gen, store, limit=500):
    """tiny_store.drive, throwing what the store raises into the workflow; -> effects."""
    effects, reply, error = [], None, None
    for _ in range(limit):
        try:
            effect = gen.throw(error) if error is not None else gen.send(reply)
        except StopIteration:
            return effects
        effects.append(effect)
        try:
            reply, error = store.answer(effect), None
        except Unroutable as e:
            reply, error = None, e
    raise AssertionError(f"still running after {limit} effects")


def test_a_dispatch_the_broker_refuses_fails_the_launch_and_gives_everything_back():
    """Reliability A6: a run_instance acked on receipt whose onward cast fails ends in error at once (not at the
    build timeout), with its cores given back."""
    store = BrokerAway({KEY: record("scheduling"), keys.COMPUTE_CORES: {"h1": 0.0}, HB: {"h1": 95.0}})
    drive_through(scheduler().run_instance(CTX, IID), store)
    assert store.data[KEY]["state"] == "error"
    assert store.data[KEY]["error"].startswith("cannot dispatch to h1: cannot reach the broker")
    assert store.data[keys.COMPUTE_CORES] == {"h1": 0.0}
