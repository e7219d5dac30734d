"""Quota that no failure gives away: reservations, their reaper, and the reconcile. Pure.

What a project holds against its quota is counted in ``project:<pid>:usage``
(``instances``, ``cores``, ``floating_ips``; common.keys). Every change to it is one
atomic transaction that moves quota between the usage and the things that hold it, so
**usage = records not deleted + outstanding reservations + floating addresses** after
every step, whatever the store answered (invariant I7). That matters because a store
command can time out on the client and still run on the server: the caller cannot tell
whether its write happened, so no step may depend on a later one to stay consistent.

A RunInstances request holds its quota in a *reservation* named by its reservation id:

1. ``reserve`` adds the whole count to the usage and writes ``reservation:<rid>`` (what
   is still to be created) with a deadline in the ``reservations`` index, in one
   transaction; over the quota, the caller gives it back at once.
2. Each record is created in the transaction that takes its instance and vCPUs off the
   reservation (``take``), guarded on what the reservation held; the last one deletes
   it, and each pushes the deadline on, so a long request keeps its reservation.
3. A request that fails before its last record gives the rest back (``release``). When
   that fails too (the store did not answer), or the request's process died, the reaper
   gives it back once the deadline has passed (``expire``), and counts it.

If a reservation's own outcome is unknown, it either exists (and is given back by one of
the two) or never did. A record created after its reservation was given back is refused
by the guard, so quota is never used twice.

``reconcile`` is the safety net: it recomputes one project's usage from its records,
reservations and floating addresses, read in one transaction, and corrects the usage if
it differs. Every legitimate change keeps usage minus holdings as it was, so a
correction computed from one consistent read stays right; it is guarded on the usage it
read, so two reconciles never apply it twice. Every correction and every reservation
given back after a failure is counted in ``quota:audit`` (the run's summary reports
them): nothing is given back or corrected silently.

An instance holds its quota from its creation until it is deleted (``error`` included),
as in 2010; a floating address from its allocation until it is released.
"""

from __future__ import annotations

from common import keys
from common.effects import (
    Del,
    Guard,
    HGet,
    HGetAll,
    HIncrBy,
    HSet,
    SAdd,
    SCard,
    SMembers,
    StoreCommand,
    Transaction,
    ZAdd,
    ZRangeByScore,
    ZRem,
)
from common.errors import NovaError

#: The usage hash's counters, in the order reports show them.
FIELDS = ("instances", "cores", "floating_ips")

#: Re-reads of a reservation that moves under a release (a creation in flight); past
#: this the reaper gives it back on a later pass.
MAX_RELEASE_ATTEMPTS = 3

#: Reservations read by one reconcile: outstanding reservations are requests in flight,
#: bounded by the API's workers, so this is far above what a cloud has at once.
MAX_RESERVATIONS_READ = 10_000
#: Records one reconcile reads in one transaction: a scenario makes at most 100,000
#: requests; a project past this (or a cloud past MAX_RESERVATIONS_READ reservations)
#: is not reconciled, and the audit says so.
MAX_RECONCILE_INSTANCES = 100_000


def reserve(project_id: str, reservation_id: str, count: int, vcpus: int, deadline: float, reads: tuple = ()):
    """Reserve ``count`` instances of ``vcpus`` each for a request; -> the project's
    (instances, cores) with them counted, for the caller to check against its quota, and
    the results of ``reads`` (ops run in the same transaction). Raises NovaError if the
    reservation exists already (ids are never reused)."""
    usage, record = keys.project_usage(project_id), keys.reservation(reservation_id)
    got = yield Transaction(
        ops=(
            HIncrBy(usage, "instances", count),
            HIncrBy(usage, "cores", count * vcpus),
            HSet(record, {"project_id": project_id, "instances": str(count), "cores": str(count * vcpus)}),
            ZAdd(keys.RESERVATIONS, {reservation_id: deadline}),
            SAdd(keys.QUOTA_PROJECTS, (project_id,)),
            *reads,
        ),
        guards=(Guard(record, "project_id", None),),
    )
    if got is None:
        raise NovaError(f"quota reservation {reservation_id} exists already")
    return got[0], got[1], tuple(got[len(got) - len(reads):]) if reads else ()


def take(project_id: str, reservation_id: str, remaining: int, vcpus: int, deadline: float):
    """-> (ops, guards) that take one instance off a reservation still holding
    ``remaining``; commit them with the record they pay for. The last one deletes the
    reservation; the others push its deadline to ``deadline``."""
    record = keys.reservation(reservation_id)
    # Only the request takes from its reservation, instances and cores together: the
    # count alone says whether it is still the one the request last saw.
    guards = (Guard(record, "instances", str(remaining)),)
    ops: tuple[StoreCommand, ...]
    if remaining == 1:
        ops = (Del((record,)), ZRem(keys.RESERVATIONS, (reservation_id,)))
    else:
        ops = (HIncrBy(record, "instances", -1), HIncrBy(record, "cores", -vcpus),
               ZAdd(keys.RESERVATIONS, {reservation_id: deadline}))
    return ops, guards


def holds(reservation_id: str, remaining: int):
    """-> whether the reservation still holds ``remaining`` instances (after a creation
    was refused: was it the id, or was the reservation given back?)."""
    return (yield HGet(keys.reservation(reservation_id), "instances")) == str(remaining)


def release(reservation_id: str, why: str = ""):
    """Give back what a reservation still holds and delete it; -> (instances, cores)
    given back, or None when there was nothing (idempotent) or it kept moving. ``why``
    (``failed``, ``expired``) counts it in the audit; empty: not counted (a refusal)."""
    record = keys.reservation(reservation_id)
    for _ in range(MAX_RELEASE_ATTEMPTS):
        held = yield HGetAll(record)
        if not held:
            yield ZRem(keys.RESERVATIONS, (reservation_id,))
            return None
        project_id, instances, cores = held["project_id"], int(held["instances"]), int(held["cores"])
        usage = keys.project_usage(project_id)
        audit = (HIncrBy(keys.QUOTA_AUDIT, why, 1), HIncrBy(keys.QUOTA_AUDIT, f"{why}_instances", instances),
                 HIncrBy(keys.QUOTA_AUDIT, f"{why}_cores", cores)) if why else ()
        done = yield Transaction(
            ops=(HIncrBy(usage, "instances", -instances), HIncrBy(usage, "cores", -cores), Del((record,)),
                 ZRem(keys.RESERVATIONS, (reservation_id,)), *audit),
            guards=(Guard(record, "instances", held["instances"]), Guard(record, "cores", held["cores"])),
        )
        if done is not None:
            return instances, cores
    return None


def expire(now: float, batch: int):
    """Give back at most ``batch`` reservations past their deadline; -> how many."""
    due = yield ZRangeByScore(keys.RESERVATIONS, "-inf", repr(now), batch)
    given = 0
    for reservation_id, _ in due:
        if (yield from release(reservation_id, "expired")) is not None:
            given += 1
    return given


def reconcile(project_id: str):
    """Recompute one project's usage from what it holds and correct it; -> {field:
    correction} ({} when it was right), or None when what it holds changed while it
    was read (the next pass tries again) or it holds too much to read at once."""
    usage = keys.project_usage(project_id)
    everything = ZRangeByScore(keys.RESERVATIONS, "-inf", "+inf", MAX_RESERVATIONS_READ)
    ids, reserved = yield Transaction(ops=(SMembers(keys.project_instances(project_id)), everything))
    if len(ids) > MAX_RECONCILE_INSTANCES or len(reserved) >= MAX_RESERVATIONS_READ:
        yield HIncrBy(keys.QUOTA_AUDIT, "not_reconciled", 1)  # some would go unread: no verdict
        return None
    ids, rids = sorted(ids), sorted(rid for rid, _ in reserved)
    # One atomic read of the holdings, valid if the records and reservations are still
    # those whose fields it reads.
    got = yield Transaction(ops=(
        SMembers(keys.project_instances(project_id)), everything, HGetAll(usage),
        SCard(keys.project_floatingips(project_id)),
        *(HGet(keys.instance(iid), "vcpus") for iid in ids),
        *(HGetAll(keys.reservation(rid)) for rid in rids),
    ))
    if sorted(got[0]) != ids or sorted(rid for rid, _ in got[1]) != rids:
        return None
    counted, vcpus, records = got[2], got[4 : 4 + len(ids)], got[4 + len(ids) :]
    held = {"instances": len(ids), "cores": sum(int(v or 0) for v in vcpus), "floating_ips": got[3]}
    for record in records:
        if record.get("project_id") == project_id:
            held["instances"] += int(record["instances"])
            held["cores"] += int(record["cores"])
    corrections = {name: held[name] - int(counted.get(name) or 0) for name in FIELDS
                   if held[name] != int(counted.get(name) or 0)}
    if not corrections:
        return {}
    done = yield Transaction(
        ops=(*(HIncrBy(usage, name, delta) for name, delta in corrections.items()),
             HIncrBy(keys.QUOTA_AUDIT, "corrections", 1),
             *(HIncrBy(keys.QUOTA_AUDIT, f"corrected_{name}", delta) for name, delta in corrections.items())),
        guards=tuple(Guard(usage, name, counted.get(name)) for name in FIELDS),
    )
    return corrections if done is not None else None


def projects():
    """-> the projects that ever reserved quota, sorted (what reconcile walks)."""
    return sorted((yield SMembers(keys.QUOTA_PROJECTS)))
