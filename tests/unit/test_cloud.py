"""CloudController: validation, quota, create/address/dispatch, terminate, the reaper."""

import re

import pytest
from records import ADDRESS, IID, KEY, cas, changed, dealloc, flat, held, manager, noted, record, released, settle
from scripted import finish, run, step, throw
from tiny_store import TinyStore, drive

from common import keys
from common.cloud import MAX_COUNT_PER_REQUEST, REAP_BATCH, CloudConfig, CloudController, Quota, mac_address
from common.context import RequestContext
from common.effects import (
    Call,
    Cast,
    Choose,
    Del,
    Get,
    Guard,
    HGet,
    HGetAll,
    HIncrBy,
    HSet,
    NewId,
    Now,
    Record,
    RPush,
    SAdd,
    SMembers,
    SPop,
    SRem,
    Transaction,
    ZAdd,
    ZRangeByScore,
    ZRem,
    ZScore,
)
from common.errors import (
    InvalidParameterValue,
    NoMoreAddresses,
    NotFound,
    NovaError,
    QuotaExceeded,
    RemoteError,
    RpcTimeout,
    StoreUnavailable,
    Unroutable,
)
from common.events import RequestRejected
from common.instances import MAX_CAS_RETRIES
from common.network import FLATDHCP, VLAN

CTX = RequestContext("alice", "p1")
ADMIN = RequestContext("root", "ops", is_admin=True)
USAGE = keys.project_usage("p1")


def cloud(scheduler="queue", quota=Quota(instances=3, cores=4)):
    return CloudController(CloudConfig(scheduler=scheduler, quotas={"p1": quota}), flat())


RES = keys.reservation("r-1")


def reserve(count, vcpus=2, project="p1"):
    """The transaction that reserves ``count`` instances for request r-1 (deadline 605 s),
    reading the project's web hooks (answer ``{}``: none)."""
    usage = keys.project_usage(project)
    return Transaction(
        ops=(
            HIncrBy(usage, "instances", count),
            HIncrBy(usage, "cores", count * vcpus),
            HSet(RES, {"project_id": project, "instances": str(count), "cores": str(count * vcpus)}),
            ZAdd(keys.RESERVATIONS, {"r-1": 605.0}),
            SAdd(keys.QUOTA_PROJECTS, (project,)),
            HGetAll(keys.webhooks(project)),
        ),
        guards=(Guard(RES, "project_id", None),),
    )


def unreserve(count, vcpus=2, project="p1", *audit):
    """The transaction that gives back what r-1 holds (``count`` instances)."""
    usage = keys.project_usage(project)
    return Transaction(
        ops=(HIncrBy(usage, "instances", -count), HIncrBy(usage, "cores", -count * vcpus), Del((RES,)),
             ZRem(keys.RESERVATIONS, ("r-1",)), *audit),
        guards=(Guard(RES, "instances", str(count)), Guard(RES, "cores", str(count * vcpus))),
    )


def up_to_reserve(gen):
    """Drive a RunInstances to its quota reservation (request r-1 at 5 s)."""
    assert step(gen) == NewId("r")
    assert step(gen, "r-1") == Now()
    return step(gen, 5.0)


def refused_over(gen, count, vcpus=2, used=None, project="p1"):
    """Answer the reservation of ``count`` with a total over the quota (``used``); -> the
    effect after the reservation was given back."""
    used = used or [count, count * vcpus]
    assert step(gen, [*used, 1, 1, 1, {}]) == HGetAll(RES)
    assert step(gen, {"project_id": project, "instances": str(count), "cores": str(count * vcpus)}) == unreserve(
        count, vcpus, project)
    return step(gen, [0, 0, 1, 1])


def created_fields(now=10.0):
    return {
        "id": IID, "project_id": "p1", "user_id": "alice", "image_id": "ami-tiny",
        "instance_type": "m1.medium", "vcpus": "2", "memory_mb": "2048", "disk_gb": "10",
        "reservation_id": "r-1", "launch_index": "0", "mac_address": mac_address(IID),
        "host": "", "fixed_ip": "", "error": "", "state": "scheduling",
        "created_at": repr(now), "updated_at": repr(now),
    }


def watch(at, iid=IID):
    """The terminate's new deadline in ``building`` (build_timeout 600 s after ``at``)."""
    return ZAdd(keys.BUILDING, {iid: at + 600.0})


def host_alive(gen, reply=None, host="h1", now=50.0):
    """Step through the API's liveness check of ``host`` (Now, its heartbeat: fresh) -> the next effect."""
    assert step(gen, reply) == Now()
    assert step(gen, now) == ZScore(keys.heartbeats("compute"), host)
    return step(gen, now - 1.0)


#: A fresh heartbeat of h1 for TinyStore (its clock reads 100.0).
H1_UP = {keys.heartbeats("compute"): {"h1": 99.0}}


def up_to_call(gen):
    """Drive a 1-instance m1.medium RunInstances to its allocate_fixed_ip call."""
    assert up_to_reserve(gen) == reserve(1)
    assert step(gen, [1, 2, 1, 1, 1, {}]) == NewId("i")
    assert step(gen, IID) == Now()
    create = step(gen, 10.0)
    assert step(gen, [1] * 7) == changed(None, "scheduling", 10.0)
    return step(gen), create


# -- RunInstances: validation -------------------------------------------------------


@pytest.mark.parametrize(
    "image, itype, lo, hi, message",
    [
        ("ami-tiny", "m9.huge", 1, 1, "unknown instance type 'm9.huge'"),
        ("ami-tiny", "m1.small", 2, 1, "MinCount (2) is greater than MaxCount (1)"),
        ("ami-tiny", "m1.small", 0, 1, "MinCount must be a positive integer, got 0"),
        ("ami-tiny", "m1.small", 1, 0, "MaxCount must be a positive integer, got 0"),
        ("ami-tiny", "m1.small", -3, 1, "MinCount must be a positive integer, got -3"),
        ("ami-tiny", "m1.small", True, 1, "MinCount must be a positive integer, got True"),
        ("ami-tiny", "m1.small", 1, False, "MaxCount must be a positive integer, got False"),
        ("ami-tiny", "m1.small", 1.0, 1, "MinCount must be a positive integer, got 1.0"),
        ("ami-tiny", "m1.small", "1", 1, "MinCount must be a positive integer, got '1'"),
        ("ami-tiny", "m1.small", 1, MAX_COUNT_PER_REQUEST + 1, f"MaxCount {MAX_COUNT_PER_REQUEST + 1} is over the limit"),
    ],
)
def test_invalid_run_request_is_rejected_before_any_store_effect(image, itype, lo, hi, message):
    """A bad request yields only Record(RequestRejected) and raises InvalidParameterValue."""
    gen = cloud().run_instances(CTX, image, itype, lo, hi)
    rejected = step(gen)
    assert rejected == Record(RequestRejected("RunInstances", "InvalidParameterValue", rejected.event.message))
    assert message in rejected.event.message
    with pytest.raises(InvalidParameterValue, match=re.escape(message)):
        step(gen)


def test_max_count_at_the_limit_is_accepted():
    """MaxCount == MAX_COUNT_PER_REQUEST passes validation (quota decides the rest)."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.small", 1, MAX_COUNT_PER_REQUEST)
    assert up_to_reserve(gen) == reserve(MAX_COUNT_PER_REQUEST, vcpus=1)


# -- RunInstances: quota ------------------------------------------------------------


def test_quota_over_for_max_rolls_back_and_tries_min():
    """MaxCount over quota is given back, then MinCount is reserved and used."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium", 1, 3)
    assert up_to_reserve(gen) == reserve(3)
    assert refused_over(gen, 3) == reserve(1)
    assert step(gen, [1, 2, 1, 1, 1, {}]) == NewId("i")


def test_quota_exceeded_creates_nothing():
    """Over quota even at MinCount: give back, record the rejection, raise QuotaExceeded."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium", 2, 3)
    assert up_to_reserve(gen) == reserve(3)
    assert refused_over(gen, 3) == reserve(2)
    rejected = refused_over(gen, 2, used=[3, 6])  # someone else holds one already
    assert rejected.event.action == "RunInstances" and rejected.event.code == "InstanceLimitExceeded"
    assert "quota is 3 instances / 4 cores" in rejected.event.message
    with pytest.raises(QuotaExceeded, match="p1"):
        step(gen)


def test_quota_min_equal_max_is_tried_once():
    """MinCount == MaxCount reserves once; over quota fails straight after the give-back."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.large", 2, 2)
    assert up_to_reserve(gen) == reserve(2, vcpus=4)
    assert isinstance(refused_over(gen, 2, vcpus=4).event, RequestRejected)


def test_default_quota_applies_to_unlisted_projects():
    """A project without its own quota gets default_quota (10 instances / 20 cores)."""
    gen = cloud().run_instances(RequestContext("bob", "p9"), "ami-tiny", "m1.large", 5, 6)
    assert up_to_reserve(gen) == reserve(6, vcpus=4, project="p9")
    assert refused_over(gen, 6, vcpus=4, project="p9") == reserve(5, vcpus=4, project="p9")
    assert step(gen, [5, 20, 1, 1, 1, {}]) == NewId("i")


def test_a_failed_request_gives_back_what_it_did_not_create():
    """The store fails after the reservation: the request gives the reservation back, counted, and re-raises."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium", 1, 2)
    up_to_reserve(gen)
    step(gen, [2, 4, 1, 1, 1, {}])
    assert throw(gen, StoreUnavailable("timed out")) == HGetAll(RES)
    audit = (HIncrBy(keys.QUOTA_AUDIT, "failed", 1), HIncrBy(keys.QUOTA_AUDIT, "failed_instances", 2),
             HIncrBy(keys.QUOTA_AUDIT, "failed_cores", 4))
    assert step(gen, {"project_id": "p1", "instances": "2", "cores": "4"}) == unreserve(2, 2, "p1", *audit)
    with pytest.raises(StoreUnavailable):
        step(gen, [0, 0, 1, 1, 1, 1, 1])


def test_a_give_back_the_store_does_not_answer_leaves_it_to_the_reaper():
    """When the give-back fails too, the request's own error is raised and the reservation waits for its deadline."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium", 1, 2)
    up_to_reserve(gen)
    step(gen, [2, 4, 1, 1, 1, {}])
    throw(gen, StoreUnavailable("first"))
    with pytest.raises(StoreUnavailable, match="first"):
        throw(gen, StoreUnavailable("second"))


def test_a_record_refused_because_its_reservation_was_given_back_ends_the_request():
    """The reaper gave the reservation back meanwhile: the create guard fails, and no record is made on it."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium")
    up_to_reserve(gen)
    step(gen, [1, 2, 1, 1, 1, {}])
    step(gen, IID)
    step(gen, 10.0)
    assert step(gen, None) == HGet(RES, "instances")
    assert step(gen, None) == HGetAll(RES)
    assert step(gen, {}) == ZRem(keys.RESERVATIONS, ("r-1",))
    with pytest.raises(NovaError, match="quota reservation r-1 was given back"):
        step(gen, 0)


# -- RunInstances: create, address, dispatch ----------------------------------------


def test_run_instances_queue_mode_happy_path():
    """Create guarded on no record, allocate by call, cast run_instance to the compute topic."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium")
    call, create = up_to_call(gen)
    assert create == Transaction(
        ops=(
            HSet(KEY, created_fields()),
            RPush(keys.transitions(IID), (">scheduling@10.0",)),
            SAdd(keys.INSTANCES, (IID,)),
            SAdd(keys.project_instances("p1"), (IID,)),
            ZAdd(keys.BUILDING, {IID: 610.0}),
            Del((RES,)),
            ZRem(keys.RESERVATIONS, ("r-1",)),
        ),
        guards=(Guard(KEY, "state", None), Guard(RES, "instances", "1")),
    )
    assert call == Call(
        "network", "allocate_fixed_ip", {"instance_id": IID, "network_id": "flat", "mac": mac_address(IID)}, CTX, timeout=30.0
    )
    assert step(gen, {"address": ADDRESS}) == Cast("compute", "run_instance", {"instance_id": IID}, CTX)
    assert finish(gen) == {"reservation_id": "r-1", "instances": [IID]}


@pytest.mark.parametrize("driver", ["simple", "chance"])
def test_run_instances_with_a_scheduler_casts_to_it(driver):
    """simple/chance: the cast goes to the scheduler topic naming the compute topic."""
    gen = cloud(driver).run_instances(CTX, "ami-tiny", "m1.medium")
    up_to_call(gen)
    assert step(gen, {"address": ADDRESS}) == Cast(
        "scheduler", "run_instance", {"instance_id": IID, "topic": "compute"}, CTX
    )


def test_mac_address_is_derived_from_the_id():
    """02:16:3e prefix, locally administered range, the same for the same id."""
    mac = mac_address("i-abc")
    assert re.fullmatch(r"02:16:3e:[0-7][0-9a-f](:[0-9a-f]{2}){2}", mac)
    assert mac == mac_address("i-abc") != mac_address("i-abd")


def test_run_several_instances_in_one_reservation():
    """MaxCount 2: two records in one reservation, launch_index 0 and 1, each addressed."""
    store = TinyStore({})
    effects, result = drive(cloud().run_instances(CTX, "ami-tiny", "m1.medium", 1, 2), store)
    assert result == {"reservation_id": "r-1", "instances": ["i-2", "i-3"]}
    assert [e.args["instance_id"] for e in effects if isinstance(e, Call)] == ["i-2", "i-3"]
    assert [store.data[keys.instance(i)]["launch_index"] for i in ("i-2", "i-3")] == ["0", "1"]
    assert store.data[USAGE] == {"instances": "2", "cores": "4"}
    assert RES not in store.data and store.data[keys.RESERVATIONS] == {}


@pytest.mark.parametrize(
    "error, reason",
    [
        (RpcTimeout("no reply in 30 s"), "no fixed address: RpcTimeout: no reply in 30 s"),
        (RemoteError("NoMoreAddresses", "pool empty"), "no fixed address: NoMoreAddresses: pool empty"),
        (Unroutable("no queue for network"), "no fixed address: Unroutable: no queue for network"),
    ],
)
def test_allocation_failure_fails_first_then_releases_what_landed(error, reason):
    """Call fails: re-read, error the instance guarded on the address read (a late allocation
    refuses), then release that address."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium")
    up_to_call(gen)
    assert throw(gen, error) == HGetAll(KEY)
    assert step(gen, record("scheduling", fixed_ip="10.0.0.9")) == Now()
    assert step(gen, 20.0) == cas("scheduling", "error", 20.0, noted(), settle(), was=held(fixed_ip="10.0.0.9"), error=reason)
    assert step(gen, [1, 1, 1]) == changed("scheduling", "error", 20.0)
    assert step(gen) == dealloc("10.0.0.9")
    assert finish(gen, [1, 1, 1, 1]) == {"reservation_id": "r-1", "instances": [IID]}


def test_allocation_timeout_with_nothing_allocated_releases_nothing():
    """If the re-read shows no address, there is nothing to release."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium")
    up_to_call(gen)
    throw(gen, RpcTimeout("late"))
    step(gen, record("scheduling", fixed_ip=""))
    assert step(gen, 20.0) == cas("scheduling", "error", 20.0, settle(), was=held(fixed_ip=""), error="no fixed address: RpcTimeout: late")
    assert step(gen, [1, 1, 1]) == changed("scheduling", "error", 20.0)
    assert finish(gen) == {"reservation_id": "r-1", "instances": [IID]}


def test_allocation_timeout_after_terminate_does_not_release():
    """If the fail CAS loses and the re-read shows it terminated, the terminate path owns the cleanup."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium")
    up_to_call(gen)
    throw(gen, RpcTimeout("late"))
    step(gen, record("scheduling"))
    assert step(gen, 20.0) == cas("scheduling", "error", 20.0, noted(), settle(), error="no fixed address: RpcTimeout: late")
    assert step(gen, None) == HGetAll(KEY)
    assert finish(gen, record("shutting_down")) == {"reservation_id": "r-1", "instances": [IID]}


def test_unroutable_dispatch_fails_and_releases():
    """No queue bound for the compute/scheduler topic: re-read, error, release the address."""
    gen = cloud().run_instances(CTX, "ami-tiny", "m1.medium")
    up_to_call(gen)
    step(gen, {"address": ADDRESS})
    assert throw(gen, Unroutable("no queue for compute")) == HGetAll(KEY)
    assert step(gen, record("scheduling")) == Now()
    assert step(gen, 20.0) == cas("scheduling", "error", 20.0, noted(), settle(), error="cannot dispatch: no queue for compute")
    step(gen, [1, 1, 1])
    assert step(gen) == dealloc()
    assert finish(gen, [1, 1, 1, 1]) == {"reservation_id": "r-1", "instances": [IID]}


def test_run_instances_draws_a_new_id_when_one_is_taken():
    """A taken id (the create guard fails) is left alone and a fresh id is drawn."""
    theirs = record("running", iid="i-2", project_id="p2", host="h9")
    store = TinyStore({keys.instance("i-2"): dict(theirs)})  # NewId answers r-1, then i-2
    effects, result = drive(cloud().run_instances(CTX, "ami-tiny", "m1.medium"), store)
    assert [e.args["instance_id"] for e in effects if isinstance(e, (Call, Cast))] == ["i-3", "i-3"]
    assert result == {"reservation_id": "r-1", "instances": ["i-3"]}
    assert store.data[keys.instance("i-2")] == theirs


# -- TerminateInstances -------------------------------------------------------------


def test_terminate_unknown_id_raises_before_any_change():
    """Every id is read first; an unknown one is NotFound with nothing written."""
    gen = cloud().terminate_instances(CTX, [IID, "i-404"])
    assert step(gen) == HGetAll(KEY)
    assert step(gen, record("running", host="h1")) == HGetAll(keys.instance("i-404"))
    with pytest.raises(NotFound, match="i-404"):
        step(gen, {})


def test_terminate_other_projects_instance_is_not_found():
    """Another project's instance looks exactly like a missing one."""
    gen = cloud().terminate_instances(CTX, [IID])
    step(gen)
    with pytest.raises(NotFound, match=IID):
        step(gen, record("running", host="h1", project_id="p2"))


def test_admin_may_terminate_any_projects_instance():
    """An admin context passes the ownership check."""
    gen = cloud().terminate_instances(ADMIN, [IID])
    step(gen)
    assert step(gen, record("running", host="h1", project_id="p2")) == Now()


def test_terminate_placed_instance_releases_cores_and_casts_to_its_host():
    """With a host: CAS to shutting_down releasing its cores, then cast to compute.<host>."""
    gen = cloud().terminate_instances(CTX, [IID])
    step(gen)
    assert step(gen, record("running", host="h1")) == Now()
    assert step(gen, 50.0) == Now()
    assert step(gen, 50.0) == cas("running", "shutting_down", 50.0, *released("h1"), watch(50.0), was=held("h1"))
    assert step(gen, [1, 1, 1, 1]) == changed("running", "shutting_down", 50.0, "h1")
    assert host_alive(gen) == Cast("compute.h1", "terminate_instance", {"instance_id": IID}, CTX)
    assert finish(gen) == [IID]


def test_terminate_errored_instance_releases_no_cores():
    """error already gave its cores back; the terminate CAS must not give them again."""
    gen = cloud().terminate_instances(CTX, [IID])
    step(gen)
    step(gen, record("error", host="h1"))
    step(gen, 50.0)
    assert step(gen, 50.0) == cas("error", "shutting_down", 50.0, watch(50.0), was=held("h1"))


def test_terminate_unplaced_instance_finishes_locally():
    """No host yet: shutting_down, then deleted with its bookkeeping, then the address."""
    gen = cloud().terminate_instances(CTX, [IID])
    step(gen)
    step(gen, record("scheduling"))
    step(gen, 50.0)
    assert step(gen, 50.0) == cas("scheduling", "shutting_down", 50.0, watch(50.0))
    step(gen, [1, 1, 1])
    assert step(gen) == Now()
    assert step(gen, 51.0) == cas(
        "shutting_down", "deleted", 51.0,
        SRem(keys.project_instances("p1"), (IID,)),
        HIncrBy(USAGE, "instances", -1),
        HIncrBy(USAGE, "cores", -2),
        noted(),
        settle(),
    )
    assert step(gen, [1] * 6) == changed("shutting_down", "deleted", 51.0)
    assert step(gen) == dealloc()
    assert finish(gen, [1, 1, 1, 1]) == [IID]


@pytest.mark.parametrize("state", ["shutting_down", "deleted"])
def test_terminate_instance_already_going_away_changes_nothing(state):
    """Terminating twice is a no-op: only the read."""
    effects, result = run(cloud().terminate_instances(CTX, [IID]), record(state, host="h1"))
    assert effects == [HGetAll(KEY)] and result == [IID]


def test_terminate_cas_lost_rereads_and_retries():
    """A lost CAS re-reads and tries again from the state it finds."""
    gen = cloud().terminate_instances(CTX, [IID])
    step(gen)
    step(gen, record("scheduling", host="h1"))
    step(gen, 50.0)
    assert step(gen, 50.0) == cas("scheduling", "shutting_down", 50.0, *released("h1"), watch(50.0), was=held("h1"))
    assert step(gen, None) == HGetAll(KEY)
    assert step(gen, record("spawning", host="h1")) == Now()
    step(gen, 51.0)
    assert step(gen, 51.0) == cas("spawning", "shutting_down", 51.0, *released("h1"), watch(51.0), was=held("h1"))
    step(gen, [1, 1, 1, 1])
    assert host_alive(gen) == Cast("compute.h1", "terminate_instance", {"instance_id": IID}, CTX)


def test_terminate_cas_retries_are_bounded():
    """A state that keeps moving is given up on after MAX_CAS_RETRIES tries, with no cast."""
    gen = cloud().terminate_instances(CTX, [IID])
    effects = [step(gen)]
    reply = record("scheduling", host="h1")
    for _attempt in range(MAX_CAS_RETRIES):
        effects += [step(gen, reply), step(gen, 50.0), step(gen, 50.0)]  # Now, Now, CAS
        effects.append(step(gen, None))  # lost: re-read
        reply = record("spawning", host="h1")
    assert finish(gen, reply) == [IID]
    assert sum(isinstance(e, Transaction) for e in effects) == MAX_CAS_RETRIES
    assert not any(isinstance(e, Cast) for e in effects)


def test_terminate_retry_that_finds_it_gone_stops():
    """A re-read showing shutting_down (someone else terminated it) ends the retry."""
    gen = cloud().terminate_instances(CTX, [IID])
    step(gen)
    step(gen, record("running", host="h1"))
    step(gen, 50.0)
    step(gen, 50.0)
    assert step(gen, None) == HGetAll(KEY)
    assert finish(gen, record("shutting_down", host="h1")) == [IID]


def test_reboot_casts_only_running_placed_instances():
    """RebootInstances casts reboot_instance to the host of each running instance."""
    effects, result = run(
        cloud().reboot_instances(CTX, [IID, "i-2"]),
        record("running", host="h1"), record("launching", iid="i-2", host="h2"), 50.0, 49.0, None,
    )
    assert effects[2:] == [Now(), ZScore(keys.heartbeats("compute"), "h1"),
                           Cast("compute.h1", "reboot_instance", {"instance_id": IID}, CTX)]
    assert result == [IID, "i-2"]


def test_describe_lists_the_projects_instances_sorted():
    """DescribeInstances without ids reads the project index, then each record by sorted id."""
    gen = cloud().describe_instances(CTX)
    assert step(gen) == SMembers(keys.project_instances("p1"))
    assert step(gen, {"i-b", "i-a"}) == HGetAll(keys.instance("i-a"))
    assert step(gen, record("running", iid="i-a")) == HGetAll(keys.instance("i-b"))
    assert finish(gen, {}) == [record("running", iid="i-a")]


# -- the build-timeout reaper -------------------------------------------------------


def test_reaper_fails_overdue_builds_and_resends_terminates():
    """Overdue builds go to error with cores and address back, and their host is asked to
    remove any domain left; shutting_down gets a new deadline and its terminate again;
    settled ones just leave the building set."""
    gen = cloud().reap_stuck_builds(CTX)
    assert step(gen) == Now()
    assert step(gen, 700.0) == ZRangeByScore(keys.BUILDING, "-inf", "700.0", REAP_BATCH)
    assert step(gen, [(IID, 610.0), ("i-2", 650.0), ("i-3", 600.0)]) == HGetAll(KEY)
    assert step(gen, record("launching", host="h1")) == HGetAll(KEY)  # fail_latest reads again
    assert step(gen, record("launching", host="h1")) == Now()
    assert step(gen, 700.0) == cas(
        "launching", "error", 700.0, *released("h1"), noted(), settle(), was=held("h1"), error="build timed out after 600 s"
    )
    step(gen, [1, 1, 1, 1])
    assert step(gen) == dealloc()
    assert host_alive(gen, [1, 1, 1, 1]) == Cast("compute.h1", "cleanup_instance", {"instance_id": IID}, CTX)
    assert step(gen) == HGetAll(keys.instance("i-2"))
    assert step(gen, record("shutting_down", iid="i-2", host="h1")) == ZAdd(keys.BUILDING, {"i-2": 1300.0})
    assert host_alive(gen, 0) == Cast("compute.h1", "terminate_instance", {"instance_id": "i-2"}, CTX)
    assert step(gen) == HGetAll(keys.instance("i-3"))
    assert step(gen, record("running", iid="i-3", host="h1")) == Transaction(
        ops=(ZRem(keys.BUILDING, ("i-3",)),), guards=(Guard(keys.instance("i-3"), "state", "running"),)
    )
    assert finish(gen, 1) == [IID, "i-2"]


def test_reaper_with_nothing_overdue_does_nothing():
    """An empty overdue range is one query and no change."""
    effects, result = run(cloud().reap_stuck_builds(CTX), 5.0, [])
    assert len(effects) == 2 and result == []


def test_reaper_forgets_a_missing_record():
    """A building entry with no record is dropped from the set."""
    effects, result = run(cloud().reap_stuck_builds(CTX), 700.0, [(IID, 1.0)], {}, 1)
    assert effects[-1] == ZRem(keys.BUILDING, (IID,)) and result == []


# -- races replayed against a tiny store (a write lands between read and CAS) --------


def test_terminate_of_a_placed_instance_gives_its_cores_back():
    """Sanity check of the store model: no race, the placed cores are released."""
    store = TinyStore({KEY: record("scheduling", host="h1"), keys.COMPUTE_CORES: {"h1": 2.0}, **H1_UP})
    drive(cloud().terminate_instances(CTX, [IID]), store)
    assert store.data[keys.COMPUTE_CORES] == {"h1": 0.0}
    assert store.data[KEY]["state"] == "shutting_down"


@pytest.mark.parametrize("beats", [{}, {"h1": 40.0}])
def test_terminate_on_a_dead_host_is_settled_by_the_api(beats):
    """A host with no heartbeat, or one older than service_down_time: deleted here, address back, nothing cast."""
    store = TinyStore({KEY: record("running", host="h1", fixed_ip=ADDRESS), keys.heartbeats("compute"): beats,
                       keys.fixedip(ADDRESS): {"address": ADDRESS, "instance_id": IID}})
    effects, _ = drive(cloud().terminate_instances(CTX, [IID]), store)
    assert store.data[KEY]["state"] == "deleted" and ADDRESS in store.data[keys.available("flat")]
    assert not any(isinstance(e, Cast) for e in effects)


def test_terminate_racing_the_schedulers_placement_gives_the_cores_back():
    """The scheduler claims h1 and places the instance after terminate read it: the cores still come back."""
    store = TinyStore({KEY: record("scheduling"), keys.COMPUTE_CORES: {"h1": 2.0}})
    gen = cloud("simple").terminate_instances(CTX, [IID])
    assert step(gen) == HGetAll(KEY)
    stale = dict(store.data[KEY])
    store.data[KEY]["host"] = "h1"  # the scheduler's placement transaction lands here
    drive(gen, store, reply=stale)
    assert store.data[keys.COMPUTE_CORES] == {"h1": 0.0}


def test_terminate_of_an_addressed_unplaced_instance_gives_the_address_back():
    """Sanity check of the store model: no race, the address goes back to the pool."""
    store = TinyStore({KEY: record("scheduling"), keys.fixedip(ADDRESS): {"instance_id": IID}})
    drive(cloud().terminate_instances(CTX, [IID]), store)
    assert keys.fixedip(ADDRESS) not in store.data and ADDRESS in store.data[keys.available("flat")]


def test_terminate_racing_the_allocation_gives_the_address_back():
    """allocate_fixed_ip commits after terminate read the record: the address still goes back."""
    store = TinyStore({KEY: record("scheduling", fixed_ip="")})
    gen = cloud().terminate_instances(CTX, [IID])
    assert step(gen) == HGetAll(KEY)
    stale = dict(store.data[KEY])
    store.data[KEY]["fixed_ip"] = ADDRESS  # the network's allocation transaction lands here
    store.data[keys.fixedip(ADDRESS)] = {"address": ADDRESS, "instance_id": IID}
    drive(gen, store, reply=stale)
    assert store.data[KEY]["state"] == "deleted"
    assert keys.fixedip(ADDRESS) not in store.data


@pytest.mark.parametrize("state", ["running", "error"])
def test_terminate_of_a_settled_instance_is_watched_by_the_reaper(state):
    """Terminating a running or errored instance gives it a deadline in `building` again."""
    store = TinyStore({KEY: record(state, host="h1"), **H1_UP})
    drive(cloud().terminate_instances(CTX, [IID]), store)
    assert store.data[KEY]["state"] == "shutting_down"
    assert IID in store.data.get(keys.BUILDING, {})


def test_reaper_pass_racing_a_terminate_keeps_the_new_watch():
    """The reaper read an errored instance; the user's terminate lands before its ZRem: the watch stays."""
    store = TinyStore({KEY: record("error", host="h1"), keys.BUILDING: {IID: 50.0}, **H1_UP})
    gen = cloud().reap_stuck_builds(CTX)
    step(gen)  # Now
    step(gen, 100.0)  # the overdue range
    assert step(gen, [(IID, 50.0)]) == HGetAll(KEY)
    stale = dict(store.data[KEY])
    drive(cloud().terminate_instances(CTX, [IID]), store)  # the terminate lands here
    drive(gen, store, reply=stale)
    assert store.data[KEY]["state"] == "shutting_down" and IID in store.data[keys.BUILDING]


# -- addressing with DHCP managers ---------------------------------------------------------


def dhcp_cloud(kind):
    """A queue-mode cloud whose API side runs a ``kind`` manager (no host of its own)."""
    return CloudController(CloudConfig(quotas={"p1": Quota(instances=3, cores=4)}), manager(kind, host=""))


def test_flatdhcp_run_casts_setup_fixed_ip_to_the_network_host():
    """FlatDHCP: after the allocation, the network's host refreshes dnsmasq (cast), then compute is cast."""
    gen = dhcp_cloud(FLATDHCP).run_instances(CTX, "ami-tiny", "m1.medium")
    call, _ = up_to_call(gen)
    assert call.args == {"instance_id": IID, "network_id": "flat", "mac": mac_address(IID)}
    assert step(gen, {"address": ADDRESS, "network_id": "flat", "bridge": "br100"}) == HGet(keys.network("flat"), "host")
    assert step(gen, "net1") == Cast("network.net1", "setup_fixed_ip", {"network_id": "flat", "address": ADDRESS}, CTX)
    assert step(gen, None) == Cast("compute", "run_instance", {"instance_id": IID}, CTX)


def test_vlan_run_uses_the_projects_network_and_claims_its_host():
    """Vlan: the project's network is allocated from; an unclaimed network gets a host by call first."""
    gen = dhcp_cloud(VLAN).run_instances(CTX, "ami-tiny", "m1.medium")
    read, _ = up_to_call(gen)
    assert read == Get(keys.project_network("p1"))
    assert step(gen, "vlan101") == Call(
        "network", "allocate_fixed_ip", {"instance_id": IID, "network_id": "vlan101", "mac": mac_address(IID)}, CTX,
        timeout=30.0,
    )
    assert step(gen, {"address": "10.0.0.19"}) == HGet(keys.network("vlan101"), "host")
    assert step(gen, "") == Call("network", "set_network_host", {"network_id": "vlan101"}, CTX, timeout=30.0)
    assert step(gen, "net2") == Cast("network.net2", "setup_fixed_ip", {"network_id": "vlan101", "address": "10.0.0.19"}, CTX)
    assert step(gen, None) == Cast("compute", "run_instance", {"instance_id": IID}, CTX)


def test_vlan_run_with_no_free_network_fails_the_instance():
    """NoMoreNetworks: the instance goes to error with the reason; it holds no address to give back."""
    gen = dhcp_cloud(VLAN).run_instances(CTX, "ami-tiny", "m1.medium")
    up_to_call(gen)
    assert step(gen, None) == SPop(keys.FREE_NETWORKS)
    assert step(gen, None) == HGetAll(KEY)
    step(gen, record("scheduling", fixed_ip=""))
    reason = "no fixed address: NoMoreNetworks: no free network (VLAN) left for project p1"
    assert step(gen, 20.0) == cas("scheduling", "error", 20.0, settle(), was=held(fixed_ip=""), error=reason)
    assert step(gen, [1, 1, 1]) == changed("scheduling", "error", 20.0)
    assert finish(gen) == {"reservation_id": "r-1", "instances": [IID]}


def test_dhcp_allocation_failure_marks_the_landed_address_deallocated():
    """FlatDHCP: an address that landed before the failure waits in `deallocated`, not the pool."""
    gen = dhcp_cloud(FLATDHCP).run_instances(CTX, "ami-tiny", "m1.medium")
    up_to_call(gen)
    throw(gen, RpcTimeout("late"))
    step(gen, record("scheduling", fixed_ip="10.0.0.9", network_id="flat"))
    step(gen, 20.0)
    step(gen, [1, 1, 1])  # Record
    assert step(gen) == Now()
    tx = step(gen, 21.0)
    assert tx.ops[-2:] == (ZAdd(keys.DEALLOCATED, {"10.0.0.9": 21.0}), SRem(keys.SETTLING, (IID,)))
    assert tx.guards == (Guard(keys.fixedip("10.0.0.9"), "instance_id", IID), Guard(keys.fixedip("10.0.0.9"), "network_id", "flat"))


# -- floating addresses through the API ---------------------------------------------------------

FLOAT = "4.4.4.2"


def floating_record(project_id="p1", instance_id=""):
    return {"address": FLOAT, "host": "net1", "project_id": project_id, "instance_id": instance_id, "fixed_ip": ""}


def test_allocate_address_calls_with_the_projects_floating_quota():
    """AllocateAddress: read the floating hosts, choose one (sorted), call its own topic with the
    project and its floating_ips quota; the address is returned."""
    gen = cloud(quota=Quota(instances=3, cores=4, floating_ips=2)).allocate_address(CTX)
    assert step(gen) == SMembers(keys.FLOATING_HOSTS)
    assert step(gen, {"net2", "net1"}) == Choose(("net1", "net2"))
    assert step(gen, "net2") == Call("network.net2", "allocate_floating_ip", {"project_id": "p1", "quota": 2}, CTX,
                                     timeout=30.0)
    assert finish(gen, FLOAT) == FLOAT


def test_allocate_address_without_floating_hosts_is_no_more_addresses():
    """No network host owns floating addresses: NoMoreAddresses, no choice and no call."""
    gen = cloud().allocate_address(CTX)
    assert step(gen) == SMembers(keys.FLOATING_HOSTS)
    with pytest.raises(NoMoreAddresses, match="no network host has floating addresses"):
        step(gen, set())


@pytest.mark.parametrize(
    "remote, local",
    [("QuotaExceeded", QuotaExceeded), ("KeyError", RemoteError)],
)
def test_allocate_address_maps_a_remote_error_to_ours(remote, local):
    """A RemoteError naming one of our errors is raised as that error (QuotaExceeded, not a remote failure)."""
    gen = cloud().allocate_address(CTX)
    step(gen)
    step(gen, {"net1"})
    assert step(gen, "net1").topic == "network.net1"
    with pytest.raises(local, match="p1 may hold 10") as raised:
        throw(gen, RemoteError(remote, "project p1 may hold 10 floating addresses"))
    assert type(raised.value) is local


def test_allocate_address_tries_the_next_host_when_one_pool_is_empty():
    """An empty pool on the chosen host sends the call on to the next host, once each."""
    gen = cloud().allocate_address(CTX)
    step(gen)
    step(gen, {"net1", "net2"})
    assert step(gen, "net2").topic == "network.net2"
    assert throw(gen, RemoteError("NoMoreAddresses", "no floating addresses left on net2")).topic == "network.net1"
    with pytest.raises(NoMoreAddresses, match="every network host"):
        throw(gen, RemoteError("NoMoreAddresses", "no floating addresses left on net1"))


@pytest.mark.parametrize("hosts", [{"net1"}, {"net1", "net2"}, {"net2", "net3"}], ids=["one", "two", "others"])
def test_allocate_address_goes_to_a_host_that_owns_floating_addresses(hosts):
    """Each worker allocates from its own pool, so the call goes to one host of floating:hosts (never the
    shared 'network' topic, which a host without floating addresses could take)."""
    store = TinyStore({keys.FLOATING_HOSTS: set(hosts), **{keys.floating_available(h): {FLOAT: 1.0} for h in hosts}})
    effects, _ = drive(cloud().allocate_address(CTX), store)
    assert Choose(tuple(sorted(hosts))) in effects
    calls = [e for e in effects if isinstance(e, Call)]
    assert len(calls) == 1 and calls[0].method == "allocate_floating_ip"
    assert calls[0].topic in {f"network.{h}" for h in hosts}


@pytest.mark.parametrize(
    "method, args",
    [
        ("associate_address", (FLOAT, IID)),
        ("disassociate_address", (FLOAT,)),
        ("release_address", (FLOAT,)),
    ],
)
def test_address_actions_call_the_addresses_host(method, args):
    """Associate/disassociate/release read the address and call its host's own topic."""
    gen = getattr(cloud(), method)(CTX, *args)
    assert step(gen) == HGetAll(keys.floatingip(FLOAT))
    call = step(gen, floating_record())
    assert (call.topic, call.method, call.args["address"]) == ("network.net1", method.replace("address", "floating_ip"), FLOAT)
    assert finish(gen, True) is True


def test_address_action_of_another_projects_address_is_not_found():
    """Another project's (or no) address is NotFound before any call; a remote refusal is mapped back."""
    gen = cloud().release_address(CTX, FLOAT)
    step(gen)
    with pytest.raises(NotFound, match=FLOAT):
        step(gen, floating_record(project_id="p2"))
    gen = cloud().release_address(CTX, FLOAT)
    step(gen)
    step(gen, floating_record())
    with pytest.raises(InvalidParameterValue, match="disassociate it first"):
        throw(gen, RemoteError("InvalidParameterValue", f"address {FLOAT} is associated; disassociate it first"))


def test_describe_addresses_lists_the_projects_addresses_sorted():
    """DescribeAddresses reads the project's set, then each address in sorted order, skipping gone ones."""
    gen = cloud().describe_addresses(CTX)
    assert step(gen) == SMembers(keys.project_floatingips("p1"))
    assert step(gen, {"4.4.4.9", FLOAT}) == HGetAll(keys.floatingip(FLOAT))
    assert step(gen, floating_record()) == HGetAll(keys.floatingip("4.4.4.9"))
    assert finish(gen, {}) == [floating_record()]


def test_terminate_with_a_floating_ip_casts_disassociate_to_its_host():
    """A terminated instance's floating address is disassociated on the address's host, then compute is cast."""
    gen = cloud().terminate_instances(CTX, [IID])
    step(gen)
    step(gen, record("running", host="h1", floating_ip=FLOAT))
    step(gen, 50.0)
    assert step(gen, 50.0) == cas("running", "shutting_down", 50.0, *released("h1"), watch(50.0), was=held("h1"))
    step(gen, [1, 1, 1, 1])  # Record
    assert step(gen) == HGet(keys.floatingip(FLOAT), "host")
    assert step(gen, "net1") == Cast("network.net1", "disassociate_floating_ip", {"address": FLOAT}, CTX)
    assert host_alive(gen, None) == Cast("compute.h1", "terminate_instance", {"instance_id": IID}, CTX)
    assert finish(gen) == [IID]


def test_terminate_with_a_floating_ip_already_released_casts_only_to_compute():
    """A floating address whose record is gone (no host) needs no disassociate."""
    gen = cloud().terminate_instances(CTX, [IID])
    step(gen)
    step(gen, record("running", host="h1", floating_ip=FLOAT))
    step(gen, 50.0)
    step(gen, 50.0)
    step(gen, [1, 1, 1, 1])
    assert step(gen) == HGet(keys.floatingip(FLOAT), "host")
    assert host_alive(gen, None) == Cast("compute.h1", "terminate_instance", {"instance_id": IID}, CTX)
