"""What a sim run observes: instance lifecycles, RPC messages and sampled time series.

The recorder is instrumentation, not a component: it reads the models directly (queue
depths, pool sizes, hypervisor use) without effects, so observing never changes the
trace.
"""

from __future__ import annotations

from collections import Counter

from common import keys, lifecycle
from common.analysis import report
from common.events import InstanceStateChanged, RequestRejected


class Recorder:
    def __init__(self):
        self.instances: dict[str, dict] = {}
        self.by_state: Counter = Counter()
        self.rejected: Counter = Counter()
        self.published: Counter = Counter()
        self.rpc_rows: list[tuple] = []
        self.timeouts = 0
        self.series: list[tuple] = []  # (time, metric, series, value)

    # -- events from the runtime ------------------------------------------------

    def observe(self, event, now: float):
        if isinstance(event, InstanceStateChanged):
            if event.src is not None:
                self.by_state[event.src] -= 1
            self.by_state[event.dst] += 1
            entry = self.instances.setdefault(event.instance_id, {"id": event.instance_id})
            entry.setdefault(event.dst, event.at)
            entry["state"] = event.dst
            if event.host:
                entry["host"] = event.host
        elif isinstance(event, RequestRejected):
            self.rejected[(event.action, event.code)] += 1

    def rpc_published(self, topic, method, msg_id, now, publisher):
        self.published[topic.partition(".")[0]] += 1

    def rpc_timed_out(self, msg_id, now):
        self.timeouts += 1

    def rpc_handled(self, delivery, method, msg_id, now, outcome):
        self.rpc_rows.append(
            (
                delivery.delivery_tag,
                delivery.queue,
                method,
                msg_id or "",
                delivery.published_at,
                delivery.delivered_at,
                now,
                delivery.consumer_tag,
                delivery.redelivered,
                outcome,
            )
        )

    def store_wiped(self) -> None:
        """The store lost every record: the instances it counted are gone, not unsettled
        (their domains are the compute hosts' to destroy, common.recovery)."""
        self.by_state.clear()
        self.instances.clear()

    def unsettled(self) -> int:
        return sum(n for state, n in self.by_state.items() if state in lifecycle.TRANSITIONAL)

    # -- sampling ---------------------------------------------------------------

    def sampler(self, env, interval, broker, store, networks, hypervisors, api=None):
        """SimPy process: one row per metric every ``interval`` simulated seconds."""
        while True:
            self.sample(env.now, broker, store, networks, hypervisors, api)
            yield env.timeout(interval)

    def sample(self, now, broker, store, networks, hypervisors, api=None):
        add = self.series.append
        if api is not None:  # the API's admission queue, and the requests being served
            add((now, "api_queue", "waiting", api.queued))
            add((now, "api_queue", "in service", api.slots.count))
        self.series.extend(report.queue_depth_rows(now, broker.queue_depths()))
        for network_id, size in networks.items():
            add((now, "pool_free", network_id, store.scard(keys.available(network_id))))
            add((now, "pool_size", network_id, size))
        for state in lifecycle.STATES:
            add((now, "instances", state, self.by_state.get(state, 0)))
        used = sum(h.used_vcpus for h in hypervisors)
        total = sum(h.vcpus for h in hypervisors)
        over = sum(1 for h in hypervisors if h.used_vcpus > h.vcpus)
        worst = max((h.used_vcpus / h.vcpus for h in hypervisors), default=0.0)
        add((now, "host_vcpu_use", "all (fraction)", used / total if total else 0.0))
        add((now, "host_vcpu_use", "max host (fraction)", worst))
        add((now, "hosts_overcommitted", "vcpus", over))
