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
"""

from __future__ import annotations

from dataclasses import dataclass

from common import instances, keys, lifecycle, rpc, service
from common.effects import Cast, Choose, Guard, HSet, Now, Transaction, ZIncrBy, ZRangeByScore
from common.errors import Unroutable

QUEUE, CHANCE, SIMPLE = "queue", "chance", "simple"
DRIVERS = (QUEUE, CHANCE, SIMPLE)

#: Live hosts with room the simple scheduler tries to claim per decision; each failed
#: claim means another decision took those cores first, and after this many a quick
#: NoValidHost beats a long scan.
MAX_CANDIDATES = 16


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
        hosts = yield from service.hosts_up(topic, self.config.service_down_time)
        if not hosts:
            return None
        host = yield Choose(hosts)
        for op in instances.claim_ops(record, host):  # noqa: UP028 (results are sent in: no yield from)
            yield op
        return host

    def _simple(self, topic: str, record: dict):
        limit, vcpus = self.config.max_cores, int(record["vcpus"])
        memory_limit, memory = self.config.max_memory_mb, int(record.get("memory_mb") or 0)
        up = set((yield from service.hosts_up(topic, self.config.service_down_time)))
        rows = yield ZRangeByScore(keys.COMPUTE_CORES, "-inf", repr(float(limit - vcpus)))
        candidates = [host for host, _ in rows if host in up][:MAX_CANDIDATES]
        for host in candidates:
            claimed = yield ZIncrBy(keys.COMPUTE_CORES, vcpus, host)
            if claimed > limit:
                yield ZIncrBy(keys.COMPUTE_CORES, -vcpus, host)  # lost a race for the last cores
                continue
            if not memory:
                return host
            claimed_memory = yield ZIncrBy(keys.COMPUTE_MEMORY, memory, host)
            if not memory_limit or claimed_memory <= memory_limit:
                return host
            # No memory left there: give both back and try the next host.
            yield ZIncrBy(keys.COMPUTE_MEMORY, -memory, host)
            yield ZIncrBy(keys.COMPUTE_CORES, -vcpus, host)
        return None
