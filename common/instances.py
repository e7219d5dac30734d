"""Instance records in the store, and the one way to change their state."""

from __future__ import annotations

from common import keys, lifecycle, webhooks
from common.effects import (
    Guard,
    HGetAll,
    HIncrBy,
    HSet,
    Now,
    Record,
    RPush,
    SAdd,
    SRem,
    StoreCommand,
    Transaction,
    ZAdd,
    ZIncrBy,
    ZRem,
)
from common.events import InstanceStateChanged

#: States in which the instance's host has its vCPUs counted in ``compute:cores`` (and
#: its memory in ``compute:memory``).
CLAIMS_CORES = frozenset(
    {lifecycle.SCHEDULING, lifecycle.SPAWNING, lifecycle.LAUNCHING, lifecycle.RUNNING, lifecycle.REBOOTING}
)


#: Fields whose value, as read, decides what a transition gives back.
GUARDED_FIELDS = ("host", "fixed_ip")

#: Re-reads a caller makes when the record keeps moving under it; past this something
#: else owns the instance and the build-timeout reaper settles it.
MAX_CAS_RETRIES = 3


def get(instance_id: str):
    """-> the record as a dict, or None when there is none."""
    record = yield HGetAll(keys.instance(instance_id))
    return record or None


def create(record: dict, now: float, deadline: float, extra_ops: tuple = (), extra_guards: tuple = ()):
    """Write a new record in state ``scheduling`` with its index entries, atomically;
    ``deadline`` is when the build timeout reaper may fail it if it has not settled.
    ``extra_ops`` commit in the same transaction, only if ``extra_guards`` hold too.

    Returns False (and writes nothing) when the id is taken or an extra guard failed.
    """
    instance_id = record["id"]
    fields = {**record, "state": lifecycle.SCHEDULING, "created_at": repr(now), "updated_at": repr(now)}
    extra_ops = (*extra_ops, *(yield from _event_ops(fields, None, lifecycle.SCHEDULING, now)))
    done = yield Transaction(
        ops=(
            HSet(keys.instance(instance_id), fields),
            RPush(keys.transitions(instance_id), (lifecycle.encode_transition(None, lifecycle.SCHEDULING, now),)),
            SAdd(keys.INSTANCES, (instance_id,)),
            SAdd(keys.project_instances(record["project_id"]), (instance_id,)),
            ZAdd(keys.BUILDING, {instance_id: deadline}),
            *extra_ops,
        ),
        guards=(Guard(keys.instance(instance_id), "state", None), *extra_guards),
    )
    if done is None:
        return False
    yield Record(InstanceStateChanged(instance_id, None, lifecycle.SCHEDULING, now))
    return True


def claim_ops(record: dict, host: str, sign: int = 1) -> tuple[StoreCommand, ...]:
    """The store ops that claim (sign 1) or give back (-1) an instance's vCPUs and
    memory on ``host`` (memory only for records that name it)."""
    ops: tuple[StoreCommand, ...] = (ZIncrBy(keys.COMPUTE_CORES, sign * int(record["vcpus"]), host),)
    if record.get("memory_mb"):
        ops += (ZIncrBy(keys.COMPUTE_MEMORY, sign * int(record["memory_mb"]), host),)
    return ops


def release_cores_ops(record: dict, current: str) -> tuple[StoreCommand, ...]:
    """The store ops that give back the vCPUs and memory an instance claims on its host, if any."""
    if record.get("host") and current in CLAIMS_CORES:
        return claim_ops(record, record["host"], -1)
    return ()


def settling_ops(record: dict) -> tuple[StoreCommand, ...]:
    """The op that notes, with a move to ``error`` or ``deleted``, that the record's
    address is still to be given back. The release takes the note out in its own
    transaction; a note left behind (the store ran the move but its caller never heard,
    or died) is finished by the API's reaper (``CloudController.reap_leftovers``)."""
    return (SAdd(keys.SETTLING, (record["id"],)),) if record.get("fixed_ip") else ()


def transition(record: dict, event: str, fields: dict | None = None, extra_ops: tuple = ()):
    """Move ``record`` (as last read) by ``event``, compare-and-set on what was read.

    The guard covers the state and the fields that decide which resources a caller
    gives back (``host``: claimed cores, ``fixed_ip``: the address), so bookkeeping
    computed from the read can never be stale. Returns the new state, or None when the
    event is not legal from the state read or the record moved on since it was read;
    nothing is written then, so a late or duplicate message cannot move an instance
    backwards. ``extra_ops`` commit in the same transaction.
    """
    instance_id = record["id"]
    current = record["state"]
    dst = lifecycle.target(event, current)
    if dst is None:
        return None
    now = yield Now()
    if dst in lifecycle.SETTLED:
        extra_ops = (*extra_ops, ZRem(keys.BUILDING, (instance_id,)))
    if record.get(webhooks.MARK) and dst in webhooks.INSTANCE_EVENTS:
        extra_ops = (*extra_ops, *(yield from _event_ops({**record, **(fields or {})}, current, dst, now)))
    key, fields = keys.instance(instance_id), fields or {}
    guards = [Guard(key, "state", current)]
    for name in GUARDED_FIELDS:  # a loop, not a generator: one transition per state change
        if name in record:
            guards.append(Guard(key, name, record[name]))
    done = yield Transaction(
        ops=(
            HSet(key, {"state": dst, "updated_at": repr(now), **fields}),
            RPush(keys.transitions(instance_id), (lifecycle.encode_transition(current, dst, now),)),
            *extra_ops,
        ),
        guards=tuple(guards),
    )
    if done is None:
        return None
    host = fields.get("host", record.get("host", ""))
    yield Record(InstanceStateChanged(instance_id, current, dst, now, host))
    return dst


def _event_ops(record: dict, src: str | None, dst: str, now: float):
    """The web hook ops of a change to ``dst`` (common.webhooks), () when unmarked."""
    return (yield from webhooks.marked_event_ops(record, record["project_id"], webhooks.INSTANCE_EVENTS[dst], now,
                                                 webhooks.instance_data(record, src, dst)))


def fail(record: dict, reason: str, event: str = "fail"):
    """Move to ``error`` with ``reason`` (by ``event``: ``fail`` for a build or reboot,
    ``lost`` for a running instance whose domain is gone), giving back the host's vCPUs
    in the same step.

    The fixed address is released by the caller (network manager), which is idempotent.
    Returns True when this call made the change.
    """
    dst = yield from transition(
        record, event, {"error": reason}, (*release_cores_ops(record, record["state"]), *settling_ops(record))
    )
    return dst is not None


def fail_latest(instance_id: str, reason: str):
    """Read the record and fail it, re-reading when it moves under us (bounded).
    Returns the record as it was failed (its ``fixed_ip`` is the one to release), or
    None when it is no longer failable."""
    for _ in range(MAX_CAS_RETRIES):
        record = yield from get(instance_id)
        if record is None or lifecycle.target("fail", record["state"]) is None:
            return None
        if (yield from fail(record, reason)):
            return record
    return None


def finish_delete(record: dict):
    """``shutting_down`` -> ``deleted``: drop the live index entries and the quota use."""
    instance_id = record["id"]
    ops: tuple = (
        SRem(keys.project_instances(record["project_id"]), (instance_id,)),
        HIncrBy(keys.project_usage(record["project_id"]), "instances", -1),
        HIncrBy(keys.project_usage(record["project_id"]), "cores", -int(record["vcpus"])),
    )
    if record.get("host"):
        ops += (SRem(keys.node_instances(record["host"]), (instance_id,)),)
    dst = yield from transition(record, "destroyed", extra_ops=(*ops, *settling_ops(record)))
    return dst is not None
