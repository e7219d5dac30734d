"""Service liveness: heartbeats written on a timer, read as "is this host up".

A host is live when its heartbeat in ``heartbeats:<topic>`` (a zset, host -> time of
its last beat) is younger than ``down_time``: the live hosts are the top of that zset
by score, a contiguous range of ranks, so they are counted and indexed in O(log N)
without reading them all (``live_count``, ``live_host_at``).
"""

from __future__ import annotations

from common import keys, parking
from common.effects import Batch, HGet, Now, ZAdd, ZCount, ZRange, ZScore


def report_state(topic: str, host: str):
    """One heartbeat: one round trip, because 500 hosts send one every report_interval.
    A compute host's beat also reads whether the scheduler parked it (``common.parking``)
    and, in the rare case it did, takes it out with one more.
    -> 1 when the host's entry was not there before (its first beat, or the store lost
    it: common.recovery), else 0."""
    now = yield Now()
    if topic != parking.TOPIC:  # the note names a compute host: another service of that name must not unpark it
        return (yield ZAdd(keys.heartbeats(topic), {host: now}))
    added, parked = yield Batch((ZAdd(keys.heartbeats(topic), {host: now}), HGet(keys.COMPUTE_PARKED, host)))
    if parked is not None:
        yield from parking.unpark(host, parked)
    return added


def service_is_up(last_heartbeat: float | None, now: float, down_time: float) -> bool:
    """Up when the last heartbeat is younger than ``down_time`` (2010: 60 s)."""
    return last_heartbeat is not None and now - last_heartbeat < down_time


def host_is_up(topic: str, host: str, down_time: float):
    now = yield Now()
    last = yield ZScore(keys.heartbeats(topic), host)
    return service_is_up(last, now, down_time)


def fresh_after(now: float, down_time: float) -> str:
    """The ZRANGEBYSCORE/ZCOUNT lower bound of the live heartbeats at ``now``."""
    return f"({now - down_time!r}"


def live_count(topic: str, now: float, down_time: float):
    """-> how many hosts of ``topic`` are live at ``now`` (one ZCOUNT, O(log N))."""
    return (yield ZCount(keys.heartbeats(topic), fresh_after(now, down_time), "+inf"))


def live_host_at(topic: str, index: int, now: float, down_time: float):
    """-> the live host of ``topic`` at ``index`` (0: the one that beat last), or None
    when fewer hosts are live by now (one ZRANGE by rank, O(log N))."""
    rank = -1 - index
    rows = yield ZRange(keys.heartbeats(topic), rank, rank)
    if not rows or not service_is_up(rows[0][1], now, down_time):
        return None
    return rows[0][0]
