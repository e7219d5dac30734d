"""The scenario's fault plan, played in virtual time.

Each fault is a SimPy process that waits until its ``at`` and then acts on the cloud
that ``FaultTargets`` exposes:

* ``kill``: ``SimService.kill`` (SIGKILL: work in flight is dropped at its next effect,
  unacked deliveries are requeued, heartbeats stop), at a time or, with
  ``after_effects``, at a crash point in the service's own work; with ``restart_after`` a new
  incarnation starts that much later and runs the kind's start-up (compute reconciles
  its host against the store, as ``novalab compute`` does when it starts).
* ``hypervisor``: ``FakeHypervisor.degrade`` for ``duration`` (or to the end).
* ``store_outage``: ``SimStore.down`` for that long: every store effect raises
  StoreUnavailable into the manager that yielded it.
* ``webhook_outage``: every web hook receiver (sim.webhooks) answers 503 for that long.
* ``store_wipe``: ``SimStore.flush``: every key of the run's store is gone at once, as
  when Redis restarts without persistence; ``on_store_wipe`` tells the recorder, whose
  lifecycle counts described records that no longer exist.
* ``store_stall``: ``StallingStore.stall`` (sim.store_stall) for that long, from ``at``
  or from the store's ``after_effects``-th command: callers time out after the client
  timeout, and every command sent meanwhile still runs, late (ambiguous outcomes).
* ``poison``: one poison message (``common.rpc.poison_body``) published onto a topic;
  its workers must answer it once, drop it and keep serving.
* ``broker_outage``: ``Broker.crash`` (kill -9 of the node), ``restart`` that much later:
  meanwhile publishes raise Unroutable into the manager, calls waiting for a reply fail
  (``SimRuntime.connections_lost``), every consumer is cut off and each live service
  reconnects with the transport's backoff (``SimService.reconnect``); the restart keeps
  what ``cloud.durable_delivery`` made durable and persistent, and the log says how
  many messages were queued at the kill and how many the restart lost.

What happened is appended to ``log`` as (virtual time, label) for the summary.

*Not supported* (yet): network partitions, clock skew, losing only the
last writes (a failover to a lagging replica).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import rpc
from sim.broker import BrokerDown


@dataclass
class FaultTargets:
    """What a fault can act on, by kind and position (1-based, as in the scenario)."""

    env: Any
    #: kind -> services of that kind, in host order.
    services: dict[str, list] = field(default_factory=dict)
    #: compute hosts' hypervisors, in host order.
    hypervisors: list = field(default_factory=list)
    #: SimPy process body that restarts a killed service.
    restart: Callable[..., Any] | None = None
    #: The run's SimStore (its ``down`` switch, its ``flush``).
    store: Any = None
    #: The run's web hook receivers (sim.webhooks), or None.
    webhooks: Any = None
    #: Called after a store wipe (the recorder forgets the lost records' states).
    on_store_wipe: Callable[[], Any] | None = None
    #: The run's broker and runtime (broker outages).
    broker: Any = None
    runtime: Any = None
    #: The run's sim.store_stall.StallingStore, when the plan stalls the store.
    stall: Any = None
    log: list = field(default_factory=list)


def play(targets: FaultTargets, faults) -> None:
    """Start one process per fault."""
    for fault in faults:
        targets.env.process(_one(targets, fault))


def _one(targets: FaultTargets, fault):
    env = targets.env
    if fault.store_stall is not None:
        yield from _store_stall(targets, fault)
        return
    if fault.after_effects is not None:
        yield from _crash_point(targets, fault)
        return
    yield env.timeout(fault.at)
    if fault.poison is not None:
        _publish_poison(targets, fault)
        return
    if fault.webhook_outage is not None:
        targets.webhooks.outage(fault.webhook_outage)
        targets.log.append((env.now, f"web hook receivers down for {fault.webhook_outage:g} s"))
        yield env.timeout(fault.webhook_outage)
        targets.log.append((env.now, "web hook receivers back"))
        return
    if fault.store_wipe is not None:
        lost = targets.store.flush()
        if targets.on_store_wipe is not None:
            targets.on_store_wipe()
        targets.log.append((env.now, f"store wiped: {lost} keys lost"))
        return
    if fault.broker_outage is not None:
        yield from _broker_outage(targets, fault.broker_outage)
        return
    if fault.store_outage is not None:
        targets.store.down = True
        targets.log.append((env.now, f"store down for {fault.store_outage:g} s"))
        yield env.timeout(fault.store_outage)
        targets.store.down = False
        targets.log.append((env.now, "store back"))
        return
    if fault.kill is not None:
        svc = targets.services[fault.kill][fault.host - 1]
        if not svc.alive:
            targets.log.append((env.now, f"{fault.describe()}: {svc.agent.name} was already down"))
            return
        svc.kill()
        targets.log.append((env.now, f"killed {svc.agent.name}"))
        yield from _restart_later(targets, svc, fault)
        return
    hypervisor = targets.hypervisors[fault.hypervisor - 1]
    hypervisor.degrade(fault.boot_slowdown, fault.spawn_failure_probability)
    targets.log.append((env.now, f"degraded {hypervisor.host}: {fault.degradation()}"))
    if fault.duration is not None:
        yield env.timeout(fault.duration)
        hypervisor.restore()
        targets.log.append((env.now, f"restored {hypervisor.host}"))


def _broker_outage(targets: FaultTargets, seconds: float):
    env, broker = targets.env, targets.broker
    if broker.down:
        targets.log.append((env.now, "broker outage: the broker was already down"))
        return
    stats = broker.queue_stats().values()
    queued, unacked = sum(s["depth"] for s in stats), sum(s["unacked"] for s in stats)
    broker.crash()
    targets.runtime.connections_lost()
    for svc in (svc for kind in targets.services.values() for svc in kind):
        if svc.alive:
            env.process(svc.reconnect())
    targets.log.append((env.now, f"broker killed for {seconds:g} s ({queued} messages queued, {unacked} unacked)"))
    yield env.timeout(seconds)
    lost = broker.restart()
    targets.log.append((env.now, f"broker restarted: {lost} queued messages lost"))


def _store_stall(targets: FaultTargets, fault):
    """Stall the store at ``at``, or from its ``after_effects``-th command on."""
    env, stall = targets.env, targets.stall
    if fault.after_effects is not None:
        started = env.event()
        stall.stall_at_command(fault.after_effects, fault.store_stall, started)
        yield started
    else:
        yield env.timeout(fault.at)
        env.process(stall.stall(fault.store_stall))
    targets.log.append((env.now, f"{fault.describe()}: stalled"))
    yield env.timeout(fault.store_stall)
    targets.log.append((env.now, "store serves again"))


def _publish_poison(targets: FaultTargets, fault) -> None:
    kind, position = rpc.poison_target(fault.poison)
    services = targets.services[kind]
    topic = kind if position is None else rpc.host_topic(kind, services[position - 1].host)
    # The sim broker carries text: bytes that are not UTF-8 travel as lone surrogates,
    # which rpc.decode turns back into the same invalid bytes.
    body = rpc.poison_body(fault.body, kind).decode("utf-8", "surrogateescape")
    try:
        routed = services[0].runtime.broker.publish(topic, body)
    except BrokerDown:
        targets.log.append((targets.env.now, f"{fault.describe()}: the broker is down"))
        return
    targets.log.append((targets.env.now, f"{fault.describe()}{'' if routed else ': unroutable'}"))


def _crash_point(targets: FaultTargets, fault):
    """Arm the service's crash point now; once it fires, restart as a timed kill would."""
    env = targets.env
    svc = targets.services[fault.kill][fault.host - 1]
    crashed = env.event()

    def on_crash():
        targets.log.append((env.now, f"killed {svc.agent.name} after {fault.after_effects} effects"))
        crashed.succeed()

    svc.crash_after(fault.after_effects, on_crash)
    yield crashed
    yield from _restart_later(targets, svc, fault)


def _restart_later(targets: FaultTargets, svc, fault):
    """With ``restart_after``: start the killed service again that much later."""
    if fault.restart_after is None:
        return
    env = targets.env
    yield env.timeout(fault.restart_after)
    if not svc.alive:
        if targets.restart is None:
            raise ValueError(f"fault {fault} restarts {svc.agent.name}, but the run gave no restart")
        targets.log.append((env.now, f"restarted {svc.agent.name}"))
        yield env.process(targets.restart(svc))
