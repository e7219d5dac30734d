"""Service liveness: heartbeats written on a timer, read as "is this host up"."""

from __future__ import annotations

from common import keys
from common.effects import Now, ZAdd, ZRangeByScore, ZScore


def report_state(topic: str, host: str):
    """One heartbeat: one command, because 500 hosts send one every report_interval.
    -> 1 when the host's entry was not there before (its first beat, or the store lost
    it: common.recovery), else 0."""
    now = yield Now()
    return (yield ZAdd(keys.heartbeats(topic), {host: now}))


def service_is_up(last_heartbeat: float | None, now: float, down_time: float) -> bool:
    """Up when the last heartbeat is younger than ``down_time`` (2010: 60 s)."""
    return last_heartbeat is not None and now - last_heartbeat < down_time


def host_is_up(topic: str, host: str, down_time: float):
    now = yield Now()
    last = yield ZScore(keys.heartbeats(topic), host)
    return service_is_up(last, now, down_time)


def hosts_up(topic: str, down_time: float):
    """-> sorted tuple of the hosts of ``topic`` with a fresh heartbeat."""
    now = yield Now()
    rows = yield ZRangeByScore(keys.heartbeats(topic), f"({now - down_time!r}", "+inf")
    return tuple(sorted(member for member, _ in rows))
