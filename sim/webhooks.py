"""Simulated web hook receivers: the scenario's ``webhooks`` section as SimPy models.

*Features*: ``receivers`` endpoints (``http://receiverN.sim.invalid/hooks``), each
registered for every listed project at set-up through ``common.webhooks.register`` (so
the records are the ones ``novalab manage webhook add`` writes). A POST
(``HttpPost``) takes the scenario's ``latency``; one that would take longer than its
timeout fails after the timeout (``DeliveryFailed``), as a real client gives up. A
receiver checks the signature with the hook's secret (401 when it is wrong), answers 500
with ``failure_probability`` and 503 during the fault plan's ``webhook_outage``;
otherwise it takes the event (200) and ``common.webhooks.Receipts`` notes its id and lag.

*What it does not model*: connection set-up, TLS, bodies larger than a network packet
taking longer, receivers that hang without answering (only the latency draw can exceed
the timeout), redirects.
"""

from __future__ import annotations

import json

from common import webhooks
from common.effects import HttpPost, NewId, Now, WebEffect
from common.errors import DeliveryFailed
from common.webhooks import Receipts


def receiver_url(n: int) -> str:
    """The URL of receiver ``n`` (from 1): a reserved name that resolves nowhere."""
    return f"http://receiver{n}.sim.invalid/hooks"


class SimReceivers:
    """The run's receivers; a ``common.performers.WebPerformer``."""

    def __init__(self, env, section, rng):
        self.env = env
        self.section = section
        self.rng = rng
        self.urls = tuple(receiver_url(n + 1) for n in range(section.receivers))
        #: (project, url) -> the hook's secret, to check signatures with.
        self.secrets: dict[tuple[str, str], str] = {}
        self.receipts = Receipts()
        self.posts = 0
        self.bad_signatures = 0
        self.down_until = float("-inf")

    def register_all(self, projects):
        """Effect generator for set-up: every project registers every receiver."""
        for project in projects:
            for url in self.urls:
                hook_id = yield NewId("wh")
                secret = f"sim-secret-{hook_id}"
                yield from webhooks.register(project, url, hook_id, secret, float((yield Now())))
                self.secrets[(project, url)] = secret

    def outage(self, seconds: float) -> None:
        """Every receiver answers 503 for ``seconds`` from now (the fault plan)."""
        self.down_until = max(self.down_until, self.env.now + seconds)

    def post(self, agent, effect: HttpPost):
        self.posts += 1
        latency = self.section.latency.sample(self.rng)
        if latency >= effect.timeout:
            yield self.env.timeout(effect.timeout)
            raise DeliveryFailed(f"{effect.url}: no answer within {effect.timeout:g} s")
        yield self.env.timeout(latency)
        if effect.url not in self.urls:
            raise DeliveryFailed(f"{effect.url}: the name does not resolve")
        if self.env.now < self.down_until:
            return 503
        if self.rng.random() < self.section.failure_probability:
            return 500
        headers = dict(effect.headers)
        project = json.loads(effect.body)["project"]
        secret = self.secrets.get((project, effect.url), "")
        if not webhooks.verify(secret, effect.body, headers.get(webhooks.SIGNATURE_HEADER, "")):
            self.bad_signatures += 1
            return 401
        self.receipts.received(effect.url, effect.body, float(self.env.now))
        return 200

    def summary(self) -> dict:
        return {"receivers": len(self.urls), "posts": self.posts, "bad_signatures": self.bad_signatures}


def install(runtime, section, rng) -> SimReceivers:
    """Register the receivers of ``section`` (the scenario's webhooks) as the run's web performer."""
    receivers = SimReceivers(runtime.env, section, rng)
    runtime.register(WebEffect, receivers)
    return receivers
