"""Service liveness: heartbeats written on a timer, read as "is this host up"."""

from __future__ import annotations

from common import keys
from common.effects import Now, ZAdd, ZRangeByScore, ZScore


def report_state(topic: str, host: str):
    """One heartbeat: one command, because 500 hosts send one every report_interval."""
    now = yield Now()
    yield ZAdd(keys.heartbeats(topic), {host: now})


def service_is_up(last_heartbeat: float | None, now: float, down_time: float) -> bool:
    """Up when the last heartbeat is younger than ``down_time`` (2010: 60 s)."""
    return last_heartbeat is not None and now - last_heartbeat < down_time


def host_is_up(topic: str, host: str, down_time: float):
    now = yield Now()
    last = yield ZScore(keys.heartbeats(topic), host)
    return service_is_up(last, now, down_time)


def periodic_tasks(topic: str, manager, periodic_interval: float, domain_sync_interval: float):
    """The periodic work of a service of ``topic`` while it is up, as (name, interval,
    make_work) triples; one list, so the sim and the daemons run the same tasks."""
    if topic == "compute":
        return [("domain sync", domain_sync_interval, manager.sync_domains)]
    if topic != "network":
        return []
    tasks = [("leak sweep", periodic_interval, lambda: manager.sweep_leaked_addresses(periodic_interval))]
    if manager.dhcp:
        tasks.append(("reclaim", periodic_interval, manager.reclaim_fixed_ips))
    return tasks


def hosts_up(topic: str, down_time: float):
    """-> sorted tuple of the hosts of ``topic`` with a fresh heartbeat."""
    now = yield Now()
    rows = yield ZRangeByScore(keys.heartbeats(topic), f"({now - down_time!r}", "+inf")
    return tuple(sorted(member for member, _ in rows))
