"""Schedulers: which host runs an instance.

``queue``  no scheduler at all: the API casts to the shared ``compute`` topic and the
           first free worker takes it (the 2010 behaviour; it ignores load).
``chance`` a random live host.
``simple`` the live host with the fewest vCPUs claimed, refusing one that would go over
           ``max_cores`` or, as a second capacity, over ``max_memory_mb`` of memory.

Both drivers claim the host's vCPUs in ``compute:cores`` and its memory in
``compute:memory`` with ZINCRBY; ``simple`` checks the new totals they return, undoing
both when either is over: reserve-then-verify is atomic without locks, so two
scheduling decisions in flight cannot both take a host's last cores or memory.
``chance`` keeps 2010's blindness (it checks neither); with ``queue`` the compute host
that takes the message claims both, unchecked, and its hypervisor refuses a domain it
has no memory for (the instance goes to ``error``: spawn failed).

A decision costs O(log N) store work in a bounded number of round trips, whatever the
number of hosts N: ``chance`` counts the live hosts and reads the one at a drawn rank
(``common.service``); ``simple`` reads only the first few hosts with room, with their
heartbeats and claimed memory in one round trip, parks the dead ones it meets
(``common.parking``) so that they stop hiding the live ones, and passes over those
without the memory, reading further when a whole read was passed over.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import instances, keys, lifecycle, parking, rpc, service
from common.effects import Batch, Cast, Choose, Guard, HSet, Now, Transaction, ZIncrBy, ZMScore, ZRangeByScore
from common.errors import Unroutable

QUEUE, CHANCE, SIMPLE = "queue", "chance", "simple"
DRIVERS = (QUEUE, CHANCE, SIMPLE)

#: Live hosts with room the simple scheduler tries to claim per decision; each failed
#: claim means another decision took those cores first, and after this many a quick
#: NoValidHost beats a long scan.
MAX_CANDIDATES = 16
#: Hosts with room the simple scheduler reads first, least loaded first.
PAGE = MAX_CANDIDATES
#: Reads per decision: a read that finds dead hosts parks them and reads again, twice
#: as many, so a crowd of dead hosts at low load costs a few reads once, never every
#: decision. Six reads see 16 + 32 + ... + 512 = 1,008 hosts.
MAX_PAGES = 6
#: Draws per chance decision: a draw misses only when hosts died between its two reads.
MAX_DRAWS = 3


@dataclass(frozen=True)
class SchedulerConfig:
    driver: str = SIMPLE
    max_cores: int = 16
    service_down_time: float = 60.0
    #: MiB of memory a host offers (the scenario's cloud.hosts.memory_mb); 0: not checked.
    max_memory_mb: int = 0


class SchedulerManager:
    rpc_methods = frozenset({"run_instance"})

    def __init__(self, config: SchedulerConfig, network_manager):
        self.config = config
        self.network = network_manager

    def run_instance(self, context, instance_id: str, topic: str = "compute"):
        record = yield from instances.get(instance_id)
        if record is None or record["state"] != lifecycle.SCHEDULING or record.get("host"):
            return
        if self.config.driver == CHANCE:
            host = yield from self._chance(topic, record)
        else:
            host = yield from self._simple(topic, record)
        if host is None:
            if (yield from instances.fail(record, "no valid host: all live hosts are full or down")):
                yield from self.network.release_instance_address(record)
            return
        now = yield Now()
        placed = yield Transaction(
            ops=(HSet(keys.instance(instance_id), {"host": host, "scheduled_at": repr(now)}),),
            guards=(
                Guard(keys.instance(instance_id), "state", lifecycle.SCHEDULING),
                Guard(keys.instance(instance_id), "host", ""),
            ),
        )
        if placed is None:  # terminated while we chose: give the cores and memory back
            for op in instances.claim_ops(record, host, -1):  # noqa: UP028 (results are sent in: no yield from)
                yield op
            return
        try:
            yield Cast(rpc.host_topic(topic, host), "run_instance", {"instance_id": instance_id}, context)
        except Unroutable as e:
            # The broker is away (or the host's queue is gone). The message that brought
            # us here was acked on receipt, so nobody would dispatch this launch again:
            # fail it now, with its reason, rather than at the build timeout.
            failed = yield from instances.fail_latest(instance_id, f"cannot dispatch to {host}: {e}")
            if failed is not None:
                yield from self.network.release_instance_address(failed)

    def _chance(self, topic: str, record: dict):
        """A live host drawn uniformly: count the live hosts, draw an index, read the
        host at that rank (two round trips, O(log N)). A host that died between the
        two reads is drawn again (bounded)."""
        down_time = self.config.service_down_time
        now = yield Now()
        for _ in range(MAX_DRAWS):
            live = yield from service.live_count(topic, now, down_time)
            if not live:
                return None
            index = yield Choose(range(live))
            host = yield from service.live_host_at(topic, index, now, down_time)
            if host is not None:
                break
        else:
            return None
        for op in instances.claim_ops(record, host):  # noqa: UP028 (results are sent in: no yield from)
            yield op
        return host

    def _simple(self, topic: str, record: dict):
        """The least loaded live host with room: read the first hosts with room by
        claimed vCPUs, and their heartbeats and claimed memory (one round trip), claim
        the live ones with memory to spare in order; park the dead ones
        (common.parking) and read again, so that this read and every later decision
        find the live hosts behind them. A host without the memory is passed over
        without a claim, and the next read looks further, so hosts full on memory at a
        low vCPU count do not hide those with room. Bounded: ``MAX_PAGES`` reads, each
        twice the one before (a crowd of newly dead hosts is parked in a few), and
        ``MAX_CANDIDATES`` claims."""
        down_time = self.config.service_down_time
        limit, vcpus = self.config.max_cores, int(record["vcpus"])
        memory_limit, memory = self.config.max_memory_mb, int(record.get("memory_mb") or 0)
        now = yield Now()
        passed: set[str] = set()  # tried, or without the memory
        claims = offset = 0
        for page in range(MAX_PAGES):
            count = PAGE << page
            # Each read goes on where the last one ended (the live hosts it read stay in
            # the range; the dead ones were parked out of it), so the reads see 1,008
            # hosts, not the first 512 again and again.
            rows = yield ZRangeByScore(keys.COMPUTE_CORES, "-inf", repr(float(limit - vcpus)), count, offset)
            hosts = tuple(host for host, _ in rows if host not in passed)
            if not hosts:
                return None
            if memory_limit and memory:
                beats, used = yield Batch((ZMScore(keys.heartbeats(topic), hosts), ZMScore(keys.COMPUTE_MEMORY, hosts)))
                roomy = {host for host, mib in zip(hosts, used, strict=True) if (mib or 0) + memory <= memory_limit}
            else:
                beats, roomy = (yield ZMScore(keys.heartbeats(topic), hosts)), set(hosts)
            up = {host for host, beat in zip(hosts, beats, strict=True) if service.service_is_up(beat, now, down_time)}
            offset += len(rows) - (len(hosts) - len(up))
            if len(up) < len(hosts):
                yield from self._park(topic, tuple(host for host in hosts if host not in up), now)
            for host in hosts:
                if host not in up:
                    continue
                passed.add(host)
                if host not in roomy:
                    continue  # no room for its memory now: not worth a claim
                if claims == MAX_CANDIDATES:
                    return None
                claims += 1
                if (yield from self._claim(record, host)):
                    return host
            if len(rows) < count:
                return None  # every host with room was read
        return None

    def _claim(self, record: dict, host: str):
        """Reserve-then-verify the instance's vCPUs and memory on ``host``; -> whether
        both fit (else both are given back)."""
        limit, vcpus = self.config.max_cores, int(record["vcpus"])
        memory_limit, memory = self.config.max_memory_mb, int(record.get("memory_mb") or 0)
        claimed = yield ZIncrBy(keys.COMPUTE_CORES, vcpus, host)
        if claimed > limit:
            yield ZIncrBy(keys.COMPUTE_CORES, -vcpus, host)  # lost a race for the last cores (or parked)
            return False
        if not memory:
            return True
        claimed_memory = yield ZIncrBy(keys.COMPUTE_MEMORY, memory, host)
        if not memory_limit or claimed_memory <= memory_limit:
            return True
        # No memory left there: give both back and try the next host.
        yield ZIncrBy(keys.COMPUTE_MEMORY, -memory, host)
        yield ZIncrBy(keys.COMPUTE_CORES, -vcpus, host)
        return False

    def _park(self, topic: str, hosts: tuple[str, ...], now: float):
        """Park hosts found dead; one that beat meanwhile is taken out again at once."""
        token, parked = yield from parking.park(topic, hosts, now)
        for host, beat in parked.items():
            if service.service_is_up(beat, now, self.config.service_down_time):
                yield from parking.unpark(host, token)
