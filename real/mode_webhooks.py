"""``run-scenario --mode real`` with a ``webhooks`` section: the scenario's receivers as
real HTTP servers on 127.0.0.1 (``real.webhooks.Receiver``), registered for the listed
projects through ``common.webhooks.register`` as ``novalab manage webhook add`` does,
taken down by the fault plan's ``webhook_outage``, and reported in the summary the way
the sim reports its modelled receivers. The network daemon delivers to them.

A real receiver answers at once: the section's ``latency`` is the sim's alone.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping

from common import keys, webhooks
from common.effects import ZRangeByScore
from common.webhooks import Receipts
from real.runner import Agent
from real.webhooks import Receiver


class RunReceivers:
    """The receivers of one real run."""

    def __init__(self, section, runtime, seed: int):
        self.runtime = runtime
        self.receipts = Receipts()
        self.receivers = [Receiver(failure_probability=section.failure_probability, clock=runtime.now,
                                   seed=seed + n, receipts=self.receipts).start()
                          for n in range(section.receivers)]
        self._timers: list[threading.Timer] = []

    def register(self, projects) -> None:
        agent = Agent("webhooks")
        for project in projects:
            for receiver in self.receivers:
                secret = secrets.token_hex(32)
                hook_id = "wh-" + secrets.token_hex(4)
                self.runtime.drive(agent, webhooks.register(project, receiver.url, hook_id, secret,
                                                            self.runtime.now()))
                receiver.secrets[project] = secret

    def outage(self, wall_seconds: float) -> None:
        """Every receiver answers 503 for ``wall_seconds``."""
        for receiver in self.receivers:
            receiver.down.set()
        def back():
            for receiver in self.receivers:
                receiver.down.clear()

        timer = threading.Timer(wall_seconds, back)
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def pending(self, store) -> bool:
        return bool(store.execute(ZRangeByScore(keys.WEBHOOK_PENDING, "-inf", "+inf", 1)))

    def summary(self, store_dump: Mapping) -> dict:
        return {"webhooks": {**webhooks.summary(store_dump, self.receipts), "receivers": len(self.receivers),
                             "posts": sum(r.posts for r in self.receivers),
                             "bad_signatures": sum(r.bad_signatures for r in self.receivers)}}

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for receiver in self.receivers:
            receiver.stop()


def start(scenario, runtime, seed: int) -> RunReceivers | None:
    """The scenario's receivers, started and registered; None without a webhooks section."""
    section = scenario.webhooks
    if section is None:
        return None
    receivers = RunReceivers(section, runtime, seed)
    try:
        receivers.register(section.project_ids(scenario.cloud.projects))
    except BaseException:
        receivers.stop()
        raise
    return receivers
