"""Prometheus metrics of a real daemon, served on the port its configuration names.

Every daemon exports:

- ``novalab_rpc_handle_seconds{topic,method,outcome}``: time to handle one RPC message
  (histogram), observed as the worker finishes it;
- ``novalab_queue_depth{queue}``: ready messages in the daemon's own queues (``T`` and
  ``T.<host>``), read from RabbitMQ at scrape time;
- ``novalab_pool_free_addresses{network}`` and ``novalab_pool_size_addresses{network}``:
  free and total fixed addresses per network, read from the store at scrape time;
- ``novalab_store_recovered{what}``: what the services re-asserted after the store lost
  its data (pools, hosts, orphaned_domains, ...: common.recovery), read from the store's
  own count at scrape time (a later loss takes the count with it; the daemons log each);
- ``novalab_instances{state}``: instances by lifecycle state, counted from the store at
  scrape time (bounded: at most SCAN_LIMIT records per scrape, so a scrape of a huge
  deployment answers quickly and says it was cut with ``novalab_instances_truncated``).

Scrape-time reads keep the daemons free of sampling threads; a failed read leaves that
family out of the scrape and is logged, it never fails the scrape.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from common import keys, lifecycle, network, rpc
from common.effects import HGet, HGetAll, SCard, SMembers
from real.outage import Outage

log = logging.getLogger(__name__)

#: Instance records one scrape reads at most.
SCAN_LIMIT = 5000


class DaemonMetrics:
    def __init__(self, config, topic: str, host: str, store):
        self.config = config
        self.topic = topic
        self.host = host
        self.store = store
        self.registry = CollectorRegistry()
        self.handle_seconds = Histogram(
            "novalab_rpc_handle_seconds", "Seconds to handle one RPC message",
            ("topic", "method", "outcome"), registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
        )
        self._outages: dict[str, Outage] = {}
        self.registry.register(self)
        self._server: Any = None

    def observe(self, topic, message, consumer, started, finished, outcome):
        """RealService's on_handled hook."""
        kind = "ok" if outcome == "ok" else outcome.split(":", 1)[0]
        self.handle_seconds.labels(topic, str(message.get("method", "?")), kind).observe(
            max(0.0, finished - started) / self.config.time_scale
        )

    def start(self, port: int, address: str = "127.0.0.1"):
        """Serve /metrics on ``port`` (0: pick a free one); returns the port."""
        self._server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return self._server.server_port

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- scrape-time families ----------------------------------------------------------

    def collect(self):
        # A scrape must answer even when a backend does not: a family that fails is left
        # out of this scrape, and logged once per outage.
        for family in (self._queues, self._pools, self._recovered, self._instances):
            outage = self._outages.setdefault(family.__name__, Outage(log, f"metrics: {family.__name__}"))
            samples = outage.run(lambda family=family: list(family()))
            yield from samples or ()

    def describe(self):
        return []  # families are dynamic; nothing to check at registration

    def _queues(self):
        from real import transport

        depth = GaugeMetricFamily("novalab_queue_depth", "Ready messages in the daemon's queues", labels=("queue",))
        names = [self.topic, rpc.host_topic(self.topic, self.host)]
        for name, value in sorted(transport.queue_depths(self.config.amqp_url, names).items()):
            depth.add_metric((name,), value)
        yield depth

    def _pools(self):
        free = GaugeMetricFamily("novalab_pool_free_addresses", "Free fixed addresses", labels=("network",))
        size = GaugeMetricFamily("novalab_pool_size_addresses", "Allocatable fixed addresses", labels=("network",))
        for spec in network.plan(self.config.network_config()):
            free.add_metric((spec.network_id,), self.store.execute(SCard(keys.available(spec.network_id))))
            size.add_metric((spec.network_id,), len(spec.addresses))
        yield free
        yield size

    def _recovered(self):
        family = GaugeMetricFamily("novalab_store_recovered", "What services re-asserted after the store lost its data",
                                   labels=("what",))
        for name, n in sorted(self.store.execute(HGetAll(keys.RECOVERED)).items()):
            family.add_metric((name,), int(n))
        yield family

    def _instances(self):
        counts = {state: 0 for state in lifecycle.STATES}
        ids = sorted(self.store.execute(SMembers(keys.INSTANCES)))
        for instance_id in ids[:SCAN_LIMIT]:
            state = self.store.execute(HGet(keys.instance(instance_id), "state"))
            if state in counts:
                counts[state] += 1
        family = GaugeMetricFamily("novalab_instances", "Instances by lifecycle state", labels=("state",))
        for state, count in counts.items():
            family.add_metric((state,), count)
        yield family
        truncated = GaugeMetricFamily("novalab_instances_truncated", "1 when the instance count was cut at SCAN_LIMIT")
        truncated.add_metric((), 1 if len(ids) > SCAN_LIMIT else 0)
        yield truncated
