"""The scenario's ``webhooks`` section: receivers registered for the projects, how they
behave, and how the delivery worker retries (``common.webhooks.WebhookConfig``).

In the sim the receivers are models (``sim/webhooks.py``: latency, failures, outages);
real mode starts that many HTTP receivers on 127.0.0.1 (``real/webhooks.py``) that
behave the same way. Every listed project (default: all) registers every receiver. The
fault plan's ``webhook_outage`` makes every receiver answer 503 for a while.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from common import distributions
from common.scenario_types import Dist, Model, Name, Probability, Seconds
from common.webhooks import MAX_HOOKS_PER_PROJECT, WebhookConfig

#: Attempts per delivery at most: past a hundred a receiver is gone, not flaky.
MAX_ATTEMPTS = 100
#: Deliveries one worker pass takes at once at most (each is a task: a thread for real).
MAX_BATCH = 256


class Webhooks(Model):
    #: Receivers (each a URL every listed project registers); at most a project's hooks.
    receivers: Annotated[int, Field(gt=0, le=MAX_HOOKS_PER_PROJECT)] = 1
    #: Projects that register the receivers; null: every project of cloud.projects.
    projects: tuple[Name, ...] | None = None
    #: How long a receiver takes to answer (sim; a real receiver answers at once).
    latency: Dist = distributions.Constant(0.05)
    #: Chance that a receiver answers one POST with 500 instead of 200.
    failure_probability: Probability = 0.0
    #: The delivery worker (common.webhooks.WebhookConfig says what each does).
    interval: Seconds = 1.0
    timeout: Seconds = 5.0
    max_attempts: Annotated[int, Field(gt=0, le=MAX_ATTEMPTS)] = 10
    backoff_base: Seconds = 1.0
    backoff_max: Seconds = 300.0
    batch: Annotated[int, Field(gt=0, le=MAX_BATCH)] = 16

    def config(self) -> WebhookConfig:
        return WebhookConfig(interval=self.interval, timeout=self.timeout, max_attempts=self.max_attempts,
                             backoff_base=self.backoff_base, backoff_max=self.backoff_max, batch=self.batch)

    def project_ids(self, projects) -> tuple[str, ...]:
        """The projects that register the receivers, of ``projects`` (cloud.projects)."""
        return self.projects if self.projects is not None else tuple(p.id for p in projects)


def webhooks_problem(scenario) -> str | None:
    """Why the ``webhooks`` section or a ``webhook_outage`` fault does not fit the
    scenario, or None."""
    section = scenario.webhooks
    if section is None:
        for index, fault in enumerate(scenario.faults):
            if fault.webhook_outage is not None:
                return f"faults.{index}: a webhook_outage needs a webhooks section (receivers to take down)"
        return None
    known = {p.id for p in scenario.cloud.projects}
    unknown = sorted(set(section.projects or ()) - known)
    if unknown:
        return (f"webhooks.projects: {', '.join(unknown)} not in cloud.projects "
                f"(expected one of: {', '.join(sorted(known))})")
    return None
