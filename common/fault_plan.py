"""The scenario's fault plan: one entry per fault, each of exactly one kind.

A fault names its kind by the one *selector* field it sets (``kill: compute``,
``hypervisor: 2``, ``store_outage: 5``, ``poison: compute.2``). What else a fault may
carry, and whether it needs ``at``, is one row of ``KINDS``: a new kind is a field here,
a row there, a label in ``describe`` and the code that plays it (``sim/faults.py``,
``real/mode.py``). Services and hosts are named by kind and position (the 2nd compute
host), so one plan fits both modes, whose hosts are named differently. ``at`` and the
durations are scenario seconds: virtual in the sim, divided by ``real.time_scale`` in
real mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, model_validator

from common import rpc
from common.scenario_bounds import MAX_HOSTS, MAX_SECONDS
from common.scenario_types import Model, Probability, Seconds


@dataclass(frozen=True)
class Kind:
    """One row of the kinds table."""

    #: The other fields this kind takes (each has a default; setting any other is refused).
    takes: frozenset[str]
    #: ``at``: needs at; ``at|after_effects``: exactly one of them (a kill, a store stall).
    when: str
    #: How the summary names it in "needs at" errors.
    noun: str


KINDS: dict[str, Kind] = {
    "kill": Kind(frozenset({"host", "restart_after", "after_effects"}), "at|after_effects", "a kill"),
    "hypervisor": Kind(frozenset({"boot_slowdown", "spawn_failure_probability", "duration"}), "at",
                       "a hypervisor fault"),
    "store_outage": Kind(frozenset(), "at", "a store outage"),
    "poison": Kind(frozenset({"body"}), "at", "a poison message"),
    "webhook_outage": Kind(frozenset(), "at", "a web hook outage"),
    "store_wipe": Kind(frozenset(), "at", "a store wipe"),
    "broker_outage": Kind(frozenset(), "at", "a broker outage"),
    "store_stall": Kind(frozenset({"after_effects"}), "at|after_effects", "a store stall"),
}

#: The optional fields, with the default each has when a kind does not take it.
OPTIONAL = {"host": 1, "restart_after": None, "after_effects": None, "boot_slowdown": 1.0,
            "spawn_failure_probability": None, "duration": None, "body": "nested"}


def _takers(name: str) -> str:
    return " or ".join(kind for kind, row in KINDS.items() if name in row.takes)


class Fault(Model):
    """One fault of the plan (see the module docstring and ``KINDS``)."""

    #: Scenario seconds from the start of the workload (the cloud is up by then).
    at: Annotated[float, Field(ge=0.0, le=MAX_SECONDS)] | None = None
    #: For a kill instead of ``at`` (sim only): a crash point. The service dies once it
    #: has performed this many effects since the workload began, before it sees the
    #: last one's result; sweeping it crashes a service at every step of its work.
    #: For a store stall instead of ``at`` (sim only): the stall begins with the store's
    #: this-many-th command since the workload began (the first whose outcome its caller
    #: cannot know); sweeping it stalls the store at every step of every workflow.
    after_effects: Annotated[int, Field(gt=0, le=10**9)] | None = None
    #: Kill a service as SIGKILL would: nothing of its in-flight work finishes, its
    #: unacknowledged messages go back to their queues, its heartbeats stop.
    kill: Literal["compute", "network", "scheduler"] | None = None
    #: Which one of its kind, from 1.
    host: Annotated[int, Field(gt=0, le=MAX_HOSTS)] = 1
    #: Start the killed service again after this many seconds (start-up reconciles);
    #: null leaves it down.
    restart_after: Seconds | None = None
    #: Degrade the hypervisor of this compute host (from 1): sim mode only.
    hypervisor: Annotated[int, Field(gt=0, le=MAX_HOSTS)] | None = None
    #: Boots take this many times longer while degraded.
    boot_slowdown: Annotated[float, Field(ge=1.0, le=1000.0)] = 1.0
    #: Spawn-failure probability while degraded (instead of timing.hypervisor's).
    spawn_failure_probability: Probability | None = None
    #: How long the hypervisor stays degraded; null: to the end of the run.
    duration: Seconds | None = None
    #: The store (Redis) is unreachable for this many seconds: every command fails
    #: with StoreUnavailable. Real mode plays it on a Redis of its own.
    store_outage: Seconds | None = None
    #: The store loses every key at once, as a Redis restarted without persistence
    #: (FLUSHALL): ``store_wipe: true``. Real mode plays it on a Redis of its own.
    store_wipe: Literal[True] | None = None
    #: One poison message (``body``: common.rpc.poison_body) onto a topic or a queue: compute, compute.2.
    poison: Annotated[str, Field(pattern=rpc.POISON_TOPIC)] | None = None
    body: Literal["nested", "binary", "huge", "badargs"] = "nested"
    #: Every web hook receiver (the scenario's ``webhooks``) answers 503 for this many seconds.
    webhook_outage: Seconds | None = None
    #: The broker dies (kill -9) and is back after this many seconds: publishes fail
    #: meanwhile, consumers are cut off (unacked deliveries go back), and the restart
    #: keeps only durable queues' persistent messages (cloud.durable_delivery). Real mode
    #: plays it on a RabbitMQ node the run starts for itself.
    broker_outage: Seconds | None = None
    #: The store (Redis) answers nothing for this many seconds but still runs every
    #: command it was sent, late: a caller waits its client timeout and gets
    #: StoreUnavailable, or its reply if the stall ends first (an ambiguous outcome).
    store_stall: Seconds | None = None

    @property
    def kind(self) -> str:
        """The selector field this fault sets (validation guarantees exactly one)."""
        return next(name for name in KINDS if getattr(self, name) is not None)

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [name for name in KINDS if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of kill, hypervisor, store_outage (seconds), store_wipe (true), "
                             "store_stall (seconds), poison (a topic), webhook_outage (seconds) or broker_outage "
                             "(seconds)")
        kind, row = kinds[0], KINDS[kinds[0]]
        # By value, not by fields set: a dumped and re-validated scenario carries every default.
        extra = [name for name, default in OPTIONAL.items() if name not in row.takes and getattr(self, name) != default]
        if extra:
            raise ValueError(f"{extra[0]} goes with {_takers(extra[0])}, not with {kind}")
        if row.when == "at" and self.at is None:
            raise ValueError(f"{row.noun} needs at (seconds)")
        if row.when == "at|after_effects" and (self.at is None) == (self.after_effects is None):
            raise ValueError(f"{row.noun} needs exactly one of at (seconds) or after_effects (a crash point)")
        if kind == "hypervisor" and self.boot_slowdown == 1.0 and self.spawn_failure_probability is None:
            raise ValueError("a hypervisor fault needs boot_slowdown > 1 or spawn_failure_probability")
        return self

    def describe(self) -> str:
        """A short label for reports: ``kill compute 2, restart after 30 s``."""
        if self.store_outage is not None:
            return f"store outage for {self.store_outage:g} s"
        if self.store_wipe is not None:
            return "store wipe (every key lost)"
        if self.poison is not None:
            return f"poison ({self.body}) on {self.poison}"
        if self.webhook_outage is not None:
            return f"web hook receivers down for {self.webhook_outage:g} s"
        if self.broker_outage is not None:
            return f"broker outage for {self.broker_outage:g} s"
        if self.store_stall is not None:
            point = f" from store command {self.after_effects}" if self.after_effects is not None else ""
            return f"store stall for {self.store_stall:g} s{point}"
        if self.kill is not None:
            label = f"kill {self.kill} {self.host}"
            if self.after_effects is not None:
                label += f" after {self.after_effects} effects"
            return label + (f", restart after {self.restart_after:g} s" if self.restart_after else ", stays down")
        return f"hypervisor {self.hypervisor}: {self.degradation()}"

    def degradation(self) -> str:
        """What a hypervisor fault does: ``boots x3, spawn failures 0.5 for 60 s``."""
        parts = []
        if self.boot_slowdown > 1.0:
            parts.append(f"boots x{self.boot_slowdown:g}")
        if self.spawn_failure_probability is not None:
            parts.append(f"spawn failures {self.spawn_failure_probability:g}")
        span = f"for {self.duration:g} s" if self.duration else "to the end"
        return f"{', '.join(parts)} {span}"


def target_problem(fault: Fault, counts: dict[str, int]) -> str | None:
    """Why ``fault`` names a service or host the cloud lacks, or None. ``counts``: services
    per kind (``compute``, ``network``, ``scheduler``), which differ by mode."""
    if fault.hypervisor is not None and fault.hypervisor > counts["compute"]:
        return f"hypervisor {fault.hypervisor}: the cloud has {counts['compute']} compute hosts"
    if fault.kill is not None and fault.host > counts[fault.kill]:
        if fault.kill == "scheduler" and not counts["scheduler"]:
            return "kill scheduler: cloud.scheduler is queue, so there is no scheduler service"
        return f"kill {fault.kill} {fault.host}: the cloud has {counts[fault.kill]} {fault.kill} services"
    if fault.poison is not None:
        return rpc.poison_target_problem(fault.poison, counts)
    return None
