"""A real service: an RPC server on its topic queues, heartbeats, periodic tasks.

Each RpcServer worker thread drives the manager generator for its message with the
real runner; heartbeats and periodic tasks run in their own threads. ``stop()`` ends
them all within a bounded time.

A service whose RpcServer gave up (its worker threads kept dying) stops heartbeating at
once, so the scheduler stops sending it work, and calls ``on_lost(reason)``: the daemon
exits non-zero and its supervisor starts a fresh one. A live process that consumes
nothing must never look healthy.
"""

from __future__ import annotations

import logging
import threading

from common import rpc, service
from real.outage import Outage
from real.runner import Agent
from real.transport import RpcServer

log = logging.getLogger(__name__)

#: Seconds stop() waits for in-flight messages before giving up on them.
STOP_TIMEOUT = 10.0


class RealService:
    def __init__(self, runtime, topic, host, manager, *, amqp_url, workers, hypervisor=None, netdriver=None,
                 on_handled=None, on_lost=None, beat=None, durable=False):
        """``beat``: makes one heartbeat's work (default: ``service.report_state``; a
        daemon gives ``common.assembly.heartbeat``, which also watches the store and
        returns what it re-asserted, logged here)."""
        self.runtime = runtime
        self.topic = topic
        self.host = host
        self.manager = manager
        self.beat = beat or (lambda: service.report_state(topic, host))
        self.agent = Agent(rpc.host_topic(topic, host), host, hypervisor, netdriver)
        self.on_handled = on_handled
        self.on_lost = on_lost
        self.server = RpcServer(amqp_url, topic, host, self._handle, workers=workers, on_failed=self._lost,
                                durable=durable)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _handle(self, message):
        work, _ = rpc.dispatch(self.manager, message)
        started = self.runtime.now()
        outcome = "ok"
        try:
            return self.runtime.drive(self.agent, work)
        except Exception as e:
            outcome = f"{type(e).__name__}: {e}"
            raise
        finally:
            if self.on_handled is not None:
                self.on_handled(self.topic, message, self.agent.name, started, self.runtime.now(), outcome)

    def start(self, report_interval: float):
        self.heartbeat_once()
        self.server.start()
        self.every(report_interval, self.heartbeat_once, "heartbeat")

    def _lost(self, reason: str):
        log.error("%s: cannot keep its consumers (%s); no more heartbeats", self.agent.name, reason)
        if self.on_lost is not None:
            self.on_lost(reason)

    def heartbeat_once(self):
        if self.server.failed.is_set():
            return  # consuming nothing: let the service be seen as down
        recovered = self.runtime.drive(self.agent, self.beat())
        if isinstance(recovered, dict):
            log.warning("%s: the store had lost what start-up wrote; re-asserted: %s", self.agent.name,
                        ", ".join(f"{name} {n}" for name, n in recovered.items()))

    def every(self, interval: float, task, name: str):
        """Run ``task()`` every ``interval`` scenario seconds until stop(); a failing
        task is tried again next period and logged once per outage (a dead heartbeat
        thread would make a live service look down)."""

        outage = Outage(log, f"{self.agent.name}: {name}")

        def loop():
            while not self._stop.wait(interval / self.runtime.time_scale):
                outage.run(task)

        thread = threading.Thread(target=loop, name=f"{self.agent.name}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self):
        self._stop.set()
        self.server.stop(STOP_TIMEOUT)
        for thread in self._threads:
            thread.join(STOP_TIMEOUT)
