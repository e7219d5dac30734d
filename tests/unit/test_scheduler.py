"""SchedulerManager: reserve-then-verify core claims, liveness, placement CAS, dispatch."""

import pytest
from records import IID, KEY, cas, changed, dealloc, flat, noted, record, released, settle
from scripted import finish, run, step
from tiny_store import TinyStore, drive

from common import effects as fx
from common import keys, parking, service
from common.context import RequestContext
from common.effects import (
    Batch,
    Cast,
    Choose,
    Guard,
    HDel,
    HGetAll,
    HSet,
    Now,
    Transaction,
    ZCount,
    ZIncrBy,
    ZMScore,
    ZRange,
    ZRangeByScore,
)
from common.errors import Unroutable
from common.parking import PARKED_OFFSET
from common.scheduler import MAX_CANDIDATES, PAGE, SchedulerConfig, SchedulerManager
from sim.memstore import MemoryStore

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


def start_simple(gen, rows, live=("h1", "h2"), topic="compute", used=None):
    """Read the record, answer the room query with ``rows``, and the heartbeat and memory query with a
    fresh beat for the ``live`` hosts (none for the others) and ``used`` MiB (default: none claimed);
    -> the effect after that."""
    assert step(gen) == HGetAll(KEY)
    assert step(gen, record("scheduling")) == Now()
    assert step(gen, 100.0) == ZRangeByScore(keys.COMPUTE_CORES, "-inf", "6.0", PAGE)
    if not rows:
        return step(gen, rows)
    hosts = tuple(host for host, _ in rows)
    assert step(gen, rows) == Batch((ZMScore(keys.heartbeats(topic), hosts), ZMScore(keys.COMPUTE_MEMORY, hosts)))
    used = used or {}
    return step(gen, [[95.0 if host in live else None for host in hosts], [used.get(host) for host in hosts]])


def park(*hosts, topic="compute", at=100.0):
    """The guarded transaction that parks the hosts one read found dead."""
    return Transaction(
        ops=(HSet(keys.COMPUTE_PARKED, dict.fromkeys(hosts, repr(at))),
             *(ZIncrBy(keys.COMPUTE_CORES, PARKED_OFFSET, host) for host in hosts), ZMScore(keys.heartbeats(topic), hosts)),
        guards=tuple(Guard(keys.COMPUTE_PARKED, host, None) for host in hosts),
    )


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


@pytest.mark.parametrize("live", [["h2"], ["h2", "h3"]])
def test_simple_skips_a_down_host(live):
    """A host with room but no fresh heartbeat is parked, never claimed."""
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, [("h1", 0.0), ("h2", 0.0)], live) == park("h1")
    assert step(gen, [1, PARKED_OFFSET, [10.0]]) == ZIncrBy(keys.COMPUTE_CORES, 2, "h2")


def test_simple_tries_at_most_max_candidates():
    """After MAX_CANDIDATES lost claims the decision gives up (NoValidHost) without trying more."""
    hosts = [f"h{k:02}" for k in range(MAX_CANDIDATES + 1)]
    gen = scheduler().run_instance(CTX, IID)
    effect = start_simple(gen, [(h, 0.0) for h in hosts], hosts)
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
    """Every candidate down is the same as none: it is parked, and a read short of its limit saw them all."""
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, [("h1", 0.0)], live=[]) == park("h1")
    assert step(gen, [1, PARKED_OFFSET, [None]]) == Now()
    assert step(gen, 100.0) == cas("scheduling", "error", 100.0, noted(), settle(), error=NO_HOST)


def test_a_full_page_of_dead_hosts_is_parked_and_the_next_page_read():
    """A read that came back full of dead hosts parks them and reads twice as many."""
    hosts = [f"d{k:02}" for k in range(PAGE)]
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, [(h, 0.0) for h in hosts], live=[]) == park(*hosts)
    answer = [1, *(PARKED_OFFSET for _ in hosts), [None] * PAGE]
    assert step(gen, answer) == ZRangeByScore(keys.COMPUTE_CORES, "-inf", "6.0", 2 * PAGE)


def test_simple_passes_over_a_host_without_the_memory_without_claiming_it():
    """A live host with vCPUs to spare but its memory taken is skipped; the next one is claimed."""
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, [("h1", 0.0), ("h2", 4.0)], used={"h1": 7000.0}) == ZIncrBy(keys.COMPUTE_CORES, 2, "h2")


def test_a_host_that_beat_while_being_parked_is_taken_out_at_once():
    """The park's own read of the heartbeat is fresh (it beat after our read): the scheduler unparks it."""
    gen = scheduler().run_instance(CTX, IID)
    assert start_simple(gen, [("h1", 0.0)], live=[]) == park("h1")
    assert step(gen, [1, PARKED_OFFSET, [99.0]]) == Transaction(
        ops=(HDel(keys.COMPUTE_PARKED, ("h1",)), ZIncrBy(keys.COMPUTE_CORES, -PARKED_OFFSET, "h1")),
        guards=(Guard(keys.COMPUTE_PARKED, "h1", "100.0"),),
    )


def test_chance_draws_an_index_among_the_live_hosts():
    """chance: count the live hosts, draw an index, read the host at that rank from the freshest; claim it."""
    gen = scheduler("chance").run_instance(CTX, IID)
    step(gen)
    assert step(gen, record("scheduling")) == Now()
    assert step(gen, 100.0) == ZCount(HB, "(40.0", "+inf")
    assert step(gen, 3) == Choose(range(3))
    assert step(gen, 1) == ZRange(HB, -2, -2)
    assert step(gen, [("h2", 98.0)]) == ZIncrBy(keys.COMPUTE_CORES, 2, "h2")
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
    assert step(gen, 0) == Now()
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
    assert store.data[keys.COMPUTE_CORES] == {"h1": 4.0, "h2": 4.0, "h3": PARKED_OFFSET}  # h3 is dead: parked


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


# ---------------------------------------------------------------------------
# Cost and liveness at scale, on the sim's MemoryStore (the real Redis commands).


class Drawn(TinyStore):
    """A TinyStore whose Choose answers a chosen index."""

    def __init__(self, data, index):
        super().__init__(data)
        self.index = index

    def answer(self, e):
        return e.options[self.index] if isinstance(e, Choose) else super().answer(e)


def test_chance_picks_only_live_hosts_and_can_pick_each_of_them():
    """Every index chance can draw lands on a live host, and the draws cover all of them."""
    beats = {**{f"live{k}": 90.0 + k for k in range(5)}, **{f"dead{k}": 10.0 + k for k in range(20)}}
    picked = set()
    for index in range(5):
        store = Drawn({KEY: record("scheduling"), HB: dict(beats)}, index)
        effects, _ = drive(scheduler("chance").run_instance(CTX, IID), store)
        picked.add(effects[-1].topic.removeprefix("compute."))
    assert picked == {f"live{k}" for k in range(5)}


def memory_store(hosts, dead=0, now=100.0):
    """A MemoryStore with ``hosts`` live hosts at 2 claimed vCPUs (one at 1) and ``dead`` dead ones at 0."""
    store = MemoryStore()
    cores = {f"h{k:04}": 2.0 for k in range(hosts)} | {"h0007": 1.0} | {f"dead{k:04}": 0.0 for k in range(dead)}
    beats = {f"h{k:04}": now - 1 for k in range(hosts)} | {f"dead{k:04}": now - 500 for k in range(dead)}
    store.execute(fx.ZAdd(keys.COMPUTE_CORES, cores))
    store.execute(fx.ZAdd(HB, beats))
    store.execute(fx.HSet(KEY, record("scheduling")))
    return store


def decide(store, driver="simple", now=100.0):
    """Run one scheduling decision against ``store``; -> (the host it cast to, store commands, list rows read)."""
    gen, reply, rows, host = scheduler(driver).run_instance(CTX, IID), None, 0, None
    while True:
        try:
            effect = gen.send(reply)
        except StopIteration:
            return host, store.commands, rows
        match effect:
            case Now():
                reply = now
            case Choose(options=options):
                reply = options[len(options) // 2]
            case Cast(topic=topic):
                host, reply = topic.removeprefix("compute."), None
            case Transaction():
                reply = store.transaction(effect)
            case fx.Batch():
                reply = store.batch(effect)
            case _:
                reply = store.execute(effect)
        rows += len(reply) if isinstance(reply, list) else 0


def test_simple_picks_the_least_loaded_live_host_behind_many_dead_ones():
    """300 dead hosts with fewer claimed vCPUs: the least loaded live host still wins, in the same decision."""
    store = memory_store(50, dead=300)
    assert decide(store)[0] == "h0007"
    assert decide(store)[2] < 40  # the next decision no longer meets the dead: they are parked


def test_a_parked_host_comes_back_with_its_next_heartbeat():
    """A host parked while silent is a candidate again after one heartbeat, with its claimed vCPUs intact."""
    store = memory_store(3)
    store.execute(fx.ZAdd(HB, {"h0007": 10.0}))  # silent for 90 s
    assert decide(store)[0] != "h0007"
    assert parking.claimed(store.execute(fx.ZScore(keys.COMPUTE_CORES, "h0007"))) == 1.0
    drive(service.report_state("compute", "h0007"), MemoryStoreAnswers(store))
    assert store.execute(fx.ZScore(keys.COMPUTE_CORES, "h0007")) == 1.0
    store.execute(fx.HSet(KEY, record("scheduling")))
    assert decide(store)[0] == "h0007"



def test_another_services_heartbeat_under_the_same_host_name_leaves_a_dead_compute_parked():
    """A network worker named like a dead compute host (2010's one --host per machine) beats on: the compute stays parked."""
    store = memory_store(3)
    store.execute(fx.ZAdd(HB, {"h0007": 10.0}))  # the compute on h0007 is silent for 90 s
    decide(store)
    drive(service.report_state("network", "h0007"), MemoryStoreAnswers(store))
    assert store.execute(fx.ZScore(keys.COMPUTE_CORES, "h0007")) == PARKED_OFFSET + 1.0

class MemoryStoreAnswers:
    """tiny_store.drive's store interface over a MemoryStore, at time 100."""

    def __init__(self, store):
        self.store = store

    def answer(self, e):
        if isinstance(e, Now):
            return 100.0
        return self.store.batch(e) if isinstance(e, fx.Batch) else (
            self.store.transaction(e) if isinstance(e, Transaction) else self.store.execute(e))


@pytest.mark.parametrize("driver", ["simple", "chance"])
def test_a_decision_reads_the_same_few_rows_with_1000_hosts_as_with_20(driver):
    """The store commands and rows one decision costs do not grow with the number of hosts."""
    small, large = decide(memory_store(20), driver), decide(memory_store(1000), driver)
    assert small[0] and large[0]
    assert large[1:] == small[1:] and large[2] <= 2 * PAGE + 2


def test_simple_finds_memory_behind_pages_of_hosts_full_on_memory():
    """Hosts whose memory is taken at few vCPUs do not hide one with room further on (NoValidHost before)."""
    store = MemoryStore()
    full = [f"m{k:02}" for k in range(2 * PAGE)]
    store.execute(fx.ZAdd(keys.COMPUTE_CORES, dict.fromkeys(full, 1.0) | {"roomy": 5.0}))
    store.execute(fx.ZAdd(keys.COMPUTE_MEMORY, dict.fromkeys(full, 8192.0) | {"roomy": 0.0}))
    store.execute(fx.ZAdd(HB, dict.fromkeys([*full, "roomy"], 99.0)))
    store.execute(fx.HSet(KEY, record("scheduling")))
    assert decide(store)[0] == "roomy"
    assert store.execute(fx.ZScore(keys.COMPUTE_MEMORY, "m00")) == 8192.0  # passed over, never claimed


def test_each_read_goes_on_where_the_last_ended_so_the_reads_see_1008_hosts():
    """600 hosts full on memory ahead of the one with room: the reads go on from where the
    last one ended (16 + 32 + ... + 512 = 1,008 hosts), not over the first 512 again
    (NoValidHost before, though a host had room)."""
    store = MemoryStore()
    full = [f"m{k:03}" for k in range(600)]
    store.execute(fx.ZAdd(keys.COMPUTE_CORES, dict.fromkeys(full, 1.0) | {"roomy": 5.0}))
    store.execute(fx.ZAdd(keys.COMPUTE_MEMORY, dict.fromkeys(full, 8192.0) | {"roomy": 0.0}))
    store.execute(fx.ZAdd(HB, dict.fromkeys([*full, "roomy"], 99.0)))
    store.execute(fx.HSet(KEY, record("scheduling")))
    assert decide(store)[0] == "roomy"
