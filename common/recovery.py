"""Recovery after the store loses its data (Redis restarted without persistence, or a
failover to an empty replica).

Theory of operation
-------------------
Some state is written once, at a service's start-up: the networks, their address pools
and the free Vlan networks, the floating pools, each compute host's entry in
``compute:cores``. A store that comes back empty has none of it, and nothing else
writes it again: every launch fails (no valid host, no free address) while heartbeats,
rewritten every report interval, look healthy.

So a compute or network host's heartbeat (``beat``) is also its store watch, at no cost
in the common case: the heartbeat's ZADD answers 1 when the host's entry was not there
(``service.report_state``), which after start-up happens only when the store lost it.
Then the host reads its marker in ``services:asserted``, written at the end of its
start-up; when that is gone too the store lost what start-up wrote. The host writes it
again, counts what it re-asserted in ``store:recovered`` (the summary's ``recovered``,
the daemons' log and metrics) and marks itself again.

What is true after a loss
-------------------------
The records (instances, owners, quota use, addresses handed out, Vlan associations)
are gone: nothing outside the store knows who owns an instance, so nothing is rebuilt
from the hypervisors. What still holds state is physical: domains keep running, bridges
and dnsmasq keep serving. We act on that:

- a compute host destroys every domain without a live record (the reconcile rule of
  ``init_host`` and ``sync_domains``) as soon as it notices, and counts them
  (``orphaned_domains``); its cores entry starts again from what is placed from now on;
- a network host re-creates the missing networks with their pools *held* for
  ``hold_seconds`` (two report intervals): long enough for every live compute host to
  have noticed and destroyed its orphans, so an address is never handed to a new
  instance while an orphan may still use it, and no new project lands on a Vlan an
  orphan is still attached to. Its first heartbeat after the hold releases each pool
  whole (nothing can be recorded while it is empty). The periodic leak sweep leaves a
  held network alone until the hold ends, and is the backstop if the host dies meanwhile;
- a network host claims back the networks its bridges and dnsmasq served before the
  loss (so a second host does not start a second dnsmasq on the same bridge), rebuilding
  their DHCP hosts from the store, which drops the orphans' lines; a network another host
  claimed first it stops serving;
- the owner of the floating range adds its addresses again (all free: the
  associations are gone with their instances);
- a run registers the cloud's default images again (``keep_default_images``, the API's
  periodic work in the sim, the run's own thread in real mode); their objects are in the
  object store, which the loss did not touch. A deployment's (``novalab deploy``) are not.

So the cloud serves again within four report intervals of the loss (one to notice, two
of hold, one to the next heartbeat). Not recovered: Vlan associations (a project gets a
free network on its next launch), key pairs, client tokens, web hook registrations and
pending deliveries, and quota use (it restarts from zero with the records it counted). A compute host that is down during the hold keeps its orphans until it starts
again (``init_host`` destroys them), and their addresses may be handed out meanwhile;
a network host that starts into an empty store cannot tell a lost store from a new
cloud and seeds its pools at once.
"""

from __future__ import annotations

from common import floating, images, keys, service
from common.effects import (
    Guard,
    HDel,
    HGet,
    HIncrBy,
    HSet,
    Now,
    SAdd,
    SMembers,
    SRem,
    StopDhcp,
    Transaction,
    ZIncrBy,
)

COMPUTE, NETWORK = "compute", "network"

#: The summary's ``recovered`` counts, in the order it shows them.
COUNTS = ("losses_noticed", "pools", "floating_addresses", "network_hosts", "hosts", "orphaned_domains", "images")


def hold_seconds(report_interval: float) -> float:
    """How long a re-created pool stays empty: every live compute host beats (and so
    checks the store) once a report interval, so two of them give each one a full
    interval to destroy its orphans after noticing."""
    return 2 * report_interval


def mark(topic: str, host: str):
    """The last step of start-up: this service's state is in the store."""
    now = yield Now()
    yield HSet(keys.ASSERTED, {f"{topic}.{host}": repr(now)})


def beat(topic: str, host: str, manager, report_interval: float, floating_range: str | None = None):
    """The heartbeat of a compute or network host, which is also its store watch (module
    docstring); a network host also ends the holds that are due. ``floating_range``: the
    range this network host owns, if any. -> the counts of what it re-asserted, or None."""
    if (yield from service.report_state(topic, host)):
        manager.store_check_due = True  # until a watch finishes: one cut short is tried again next beat
    counts = None
    if manager.store_check_due:
        counts = yield from watch(topic, host, manager, report_interval, floating_range)
        manager.store_check_due = False
    if getattr(manager, "held", None):
        yield from release_due(manager)
    return counts


def watch(topic: str, host: str, manager, report_interval: float, floating_range: str | None = None):
    """When this service's marker is gone, re-assert what its start-up wrote (module
    docstring). -> the counts of what it re-asserted, or None when nothing was lost."""
    if (yield HGet(keys.ASSERTED, f"{topic}.{host}")) is not None:
        return None
    if topic == COMPUTE:
        counts = yield from recover_compute(manager)
    else:
        counts = yield from recover_network(manager, report_interval, floating_range)
    counts = {"losses_noticed": 1, **counts}
    now = yield Now()
    yield Transaction(ops=(
        *(HIncrBy(keys.RECOVERED, name, n) for name, n in counts.items() if n),
        HSet(keys.ASSERTED, {f"{topic}.{host}": repr(now)}),
    ))
    return counts


def recover_compute(manager):
    """Register the host with the scheduler again and destroy the domains no live record
    owns. -> counts."""
    yield ZIncrBy(keys.COMPUTE_CORES, 0, manager.host)
    destroyed = yield from manager.sync_domains()
    return {"hosts": 1, "orphaned_domains": len(destroyed)}


def recover_network(manager, report_interval: float, floating_range: str | None = None):
    """Re-create the networks with their pools held (``manager.held``: network -> until,
    ended by ``release_due``), the floating range if this host owns it, and claim back the
    networks this host served. -> counts."""
    now = yield Now()
    until = now + hold_seconds(report_interval)
    held = yield from manager.create_networks(held_until=until)
    manager.held.update(dict.fromkeys(held, until))
    added = 0
    if floating_range:
        added = yield from floating.create_floating_ips(manager.host, floating_range)
    reclaimed = yield from reclaim_served(manager)
    return {"pools": len(held), "floating_addresses": added, "network_hosts": reclaimed}


def release_due(manager):
    """End the holds of ``manager.held`` that are due. -> how many it released."""
    now = yield Now()
    released = 0
    for network_id, until in sorted(manager.held.items()):
        if until <= now:
            del manager.held[network_id]
            released += (yield from release_held(manager, network_id, until))
    return released


def reclaim_served(manager):
    """Claim back each network this host served (its bridge and dnsmasq still run) and
    rebuild its DHCP hosts from the store; stop serving one another host claimed first.
    -> how many it claimed back."""
    claimed = 0
    for network_id in sorted(manager.served):
        owner = yield from manager.set_network_host(None, network_id)
        if owner == manager.host:
            claimed += 1
        elif owner:
            manager.served.discard(network_id)
            if manager.dhcp:
                yield StopDhcp(_spec(manager, network_id).bridge)
    return claimed


def release_held(manager, network_id: str, until: float):
    """End a network's hold: every address not recorded goes into its pool, once
    (guarded on the hold read). -> True when this call released it."""
    spec = _spec(manager, network_id)
    recorded = set((yield SMembers(keys.network_fixedips(network_id))))
    free = tuple(a for a in spec.addresses if a not in recorded)
    done = yield Transaction(
        ops=(*((SAdd(keys.available(network_id), free),) if free else ()),
             HDel(keys.network(network_id), ("held_until",)), SRem(keys.HELD_NETWORKS, (network_id,))),
        guards=(Guard(keys.network(network_id), "held_until", repr(until)),),
    )
    return done is not None


def _spec(manager, network_id: str):
    return next(spec for spec in manager.specs() if spec.network_id == network_id)


def keep_default_images(image_ids, from_objects: bool):
    """Periodic, by whoever registered the cloud's default images at set-up (a run): the
    images a store loss took, registered again (``images.register_defaults``) and counted.
    One HGET per image when nothing was lost. -> how many it registered again."""
    missing = []
    for image_id in image_ids:
        if (yield HGet(images.image(image_id), "id")) is None:
            missing.append(image_id)
    if not missing:
        return 0
    yield from images.register_defaults(missing, from_objects)
    yield HIncrBy(keys.RECOVERED, "images", len(missing))
    return len(missing)
