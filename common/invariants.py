"""The invariants I1-I7 (DESIGN.md, "Invariants") as pure checks over a state snapshot.

A :class:`Snapshot` is a dump of the store plus what the hypervisors and the message
queues report at one moment; the checks read nothing else, so the same code audits a
simulated run and a real one. Each check returns a :class:`Verdict` whose violations
name the instance, address, host or queue at fault, in sorted (deterministic) order.

Which instances count as "live" for addresses is ``lifecycle.HOLDS_RESOURCES``: a
record in ``error`` or ``deleted`` keeps its old ``fixed_ip`` field, but no longer holds
that address. For quota (I7) every record not ``deleted`` counts, ``error`` included: an
instance holds its quota until it is deleted (``common.quota``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common import keys, lifecycle

#: At most this many violations are listed per verdict; the rest are counted.
MAX_VIOLATIONS = 20

_INSTANCE_PREFIX = "instance:"
_IP_PREFIX = "ip:"
_IP_SUFFIX = ":instances"
_FIXEDIP_PREFIX = "fixedip:"
_FLOATINGIP_PREFIX = "floatingip:"
_RESERVATION_PREFIX = "reservation:"
_PROJECT_PREFIX = "project:"
_USAGE_SUFFIX = ":usage"

#: Record states that must have a domain on their host (I3).
_NEEDS_DOMAIN = frozenset({lifecycle.RUNNING, lifecycle.REBOOTING})
#: Record states whose domain, if any, is an orphan (I3).
_NO_DOMAIN = frozenset({lifecycle.DELETED, lifecycle.ERROR})


@dataclass(frozen=True)
class Snapshot:
    """Everything the checks look at, taken at time ``now``."""

    now: float  # seconds, same clock as the times in the store
    build_timeout: float  # seconds
    store: Mapping[str, object]  # key -> str | dict | set | list | zset dict
    domains: Mapping[str, Mapping[str, str]]  # host -> {domain name -> state}
    queues: Mapping[str, Mapping[str, int]]  # queue -> {"ready": n, "unacked": n}
    #: A service whose last heartbeat is this old is dead (I3, I5 leave its host out).
    service_down_time: float = 60.0


@dataclass(frozen=True)
class Verdict:
    """The outcome of one invariant check."""

    name: str  # "I1".."I7"
    title: str
    ok: bool
    violations: tuple[str, ...]


# --------------------------------------------------------------------------- reading


def _members(store: Mapping[str, object], key: str) -> frozenset[str]:
    """A set (or the members of a zset) as a frozenset; missing -> empty."""
    value = store.get(key)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, Mapping):
        return frozenset(value.keys())
    return frozenset(value)  # type: ignore[call-overload]  # a set or list from the store dump


def _hash(store: Mapping[str, object], key: str) -> dict[str, str] | None:
    """A hash as a dict; None when missing or empty (Redis has no empty hashes)."""
    value = store.get(key)
    if isinstance(value, Mapping) and value:
        return dict(value)
    return None


def _list(store: Mapping[str, object], key: str) -> list[str]:
    value = store.get(key)
    if value is None or isinstance(value, (str, Mapping)):
        return []
    return list(value)  # type: ignore[call-overload]  # a list from the store dump


def _records(s: Snapshot) -> dict[str, dict[str, str] | None]:
    """Every indexed instance id -> its record (None when the hash is missing), sorted."""
    return {iid: _hash(s.store, keys.instance(iid)) for iid in sorted(_members(s.store, keys.INSTANCES))}


def _holding(records: Mapping[str, dict[str, str] | None]) -> dict[str, dict[str, str]]:
    """The records whose state holds resources (their fixed address among them)."""
    return {
        iid: rec
        for iid, rec in records.items()
        if rec is not None and rec.get("state") in lifecycle.HOLDS_RESOURCES
    }


def dead_hosts(s: Snapshot, topic: str, known: Iterable[str] = ()) -> frozenset[str]:
    """Hosts of ``topic`` silent past service_down_time: unreachable, so nothing on them
    can be checked; each reconciles its host when it starts again. Of the ``known``
    hosts, those missing from the heartbeats others wrote are dead too: the store lost
    their entry and they never beat again (a live one does within a report interval)."""
    beats = s.store.get(keys.heartbeats(topic))
    if not isinstance(beats, Mapping):
        return frozenset()
    silent = {host for host, at in beats.items() if s.now - float(at) >= s.service_down_time}
    return frozenset(silent.union(host for host in known if host not in beats))


def _verdict(name: str, title: str, violations: list[str]) -> Verdict:
    shown = violations[:MAX_VIOLATIONS]
    if len(violations) > MAX_VIOLATIONS:
        shown.append(f"... and {len(violations) - MAX_VIOLATIONS} more")
    return Verdict(name=name, title=title, ok=not violations, violations=tuple(shown))


def _names(ids: Iterable[str]) -> str:
    return ", ".join(sorted(ids))


def _int(value: object) -> int:
    """A counter from the store; missing or unreadable -> 0."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def _parse_time(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- checks


def i1_unique_addresses(s: Snapshot) -> Verdict:
    """I1: no address is bound to two live (resource-holding) instances."""
    holding = _holding(_records(s))
    by_address: dict[str, list[str]] = {}
    for iid, rec in holding.items():
        address = rec.get("fixed_ip", "")
        if address:
            by_address.setdefault(address, []).append(iid)
    violations = [
        f"address {address} is the fixed_ip of {len(ids)} live instances: {_names(ids)}"
        for address, ids in sorted(by_address.items())
        if len(ids) > 1
    ]
    for key in sorted(s.store):
        if not (key.startswith(_IP_PREFIX) and key.endswith(_IP_SUFFIX)):
            continue
        address = key[len(_IP_PREFIX) : -len(_IP_SUFFIX)]
        live = _members(s.store, key) & holding.keys()
        if len(live) > 1:
            violations.append(f"address {address}: {key} names {len(live)} live instances: {_names(live)}")
    return _verdict("I1", "no address bound to two live instances", violations)


def _network_of(rec: Mapping[str, str], nids: list[str], pools: Mapping[str, frozenset[str]]) -> str | None:
    """The network an instance's address belongs to: its ``network_id`` field, else the
    only network, else the network whose pool contains the address."""
    nid = rec.get("network_id", "")
    if nid:
        return nid
    if len(nids) == 1:
        return nids[0]
    address = rec.get("fixed_ip", "")
    owners = [n for n in nids if address in pools[n]]
    return owners[0] if len(owners) == 1 else None


def i2_allocated_matches_live(s: Snapshot) -> Verdict:
    """I2: the addresses handed out on each network are exactly those of live instances,
    and free + handed out == the network's address pool."""
    holding = _holding(_records(s))
    nids = sorted(_members(s.store, keys.NETWORKS))
    pools = {nid: _members(s.store, keys.network_addresses(nid)) for nid in nids}
    violations: list[str] = []
    held = _held_by_network(holding, nids, pools, violations)
    fixedip_hashes = _fixedip_hashes_by_network(s, nids, pools, violations)
    # DHCP managers: an address released by its instance waits (state "deallocated",
    # listed in the deallocated set) for its lease to end before it is free again.
    waiting = _members(s.store, keys.DEALLOCATED)
    for nid in nids:
        violations += _network_violations(s, nid, pools[nid], held[nid], fixedip_hashes[nid], waiting)
    violations += _floating_violations(s, holding)
    violations += _vlan_violations(s, nids)
    return _verdict("I2", "allocated addresses match live instances", violations)


def _held_by_network(holding: dict, nids: list[str], pools: dict, violations: list[str]) -> dict[str, dict[str, list[str]]]:
    """-> address -> live instance ids holding it, per network; an instance on an
    unknown network is a violation."""
    held: dict[str, dict[str, list[str]]] = {nid: {} for nid in nids}
    for iid, rec in holding.items():
        address = rec.get("fixed_ip", "")
        if not address:
            continue
        nid = _network_of(rec, nids, pools)
        if nid not in held:
            violations.append(
                f"instance {iid} holds {address} on unknown network {rec.get('network_id', '')!r}"
            )
            continue
        held[nid].setdefault(address, []).append(iid)
    return held


def _fixedip_hashes_by_network(s: Snapshot, nids: list[str], pools: dict, violations: list[str]) -> dict[str, list[str]]:
    """-> the addresses of the fixedip:<a> hashes, by the network they belong to; a
    hash of no known network is a violation."""
    fixedip_hashes: dict[str, list[str]] = {nid: [] for nid in nids}
    for key in sorted(s.store):
        if not key.startswith(_FIXEDIP_PREFIX):
            continue
        address = key[len(_FIXEDIP_PREFIX) :]
        h = _hash(s.store, key) or {}
        nid = h.get("network_id", "")
        if nid not in fixedip_hashes:
            owners = [n for n in nids if address in pools[n]]
            nid = owners[0] if len(owners) == 1 else ""
        if nid in fixedip_hashes:
            fixedip_hashes[nid].append(address)
        else:
            violations.append(f"{key} belongs to no known network")
    return fixedip_hashes


def _network_violations(s: Snapshot, nid: str, pool: frozenset[str], holders: dict[str, list[str]],
                        fixedip_addresses: list[str], waiting: frozenset[str]) -> list[str]:
    """I2 on one network: handed out == held by live instances, each with a fixedip
    record naming its holder; free and handed out split the pool."""
    violations: list[str] = []
    free = _members(s.store, keys.available(nid))
    handed = _members(s.store, keys.network_fixedips(nid))
    for address in sorted(handed - holders.keys()):
        state = (_hash(s.store, keys.fixedip(address)) or {}).get("state", "")
        if state == "deallocated" and address in waiting:
            continue
        violations.append(f"network {nid}: {address} is handed out but no live instance holds it")
    for address in sorted(holders.keys() - handed):
        violations.append(
            f"network {nid}: {address} is held by {_names(holders[address])} but not handed out"
        )
    for address in sorted(holders):
        if _hash(s.store, keys.fixedip(address)) is None:
            violations.append(
                f"network {nid}: {address} is held by {_names(holders[address])} but has no fixedip record"
            )
    for address in fixedip_addresses:
        record = _hash(s.store, keys.fixedip(address)) or {}
        owner = record.get("instance_id", "")
        if record.get("state") == "deallocated" and address in waiting and address not in holders:
            continue
        if owner not in holders.get(address, ()):
            actual = _names(holders.get(address, ())) or "no live instance"
            violations.append(
                f"network {nid}: fixedip:{address} names instance {owner or '(none)'!s}"
                f" but {address} is held by {actual}"
            )
    for address in sorted(free & handed):
        violations.append(f"network {nid}: {address} is both free and handed out")
    for address in sorted(pool - free - handed):
        violations.append(f"network {nid}: {address} leaked (neither free nor handed out)")
    for address in sorted((free | handed) - pool):
        where = "free" if address in free else "handed out"
        violations.append(f"network {nid}: {address} is {where} but not in the network's addresses")
    return violations


def _floating_violations(s: Snapshot, holding: dict) -> list[str]:
    """Floating pools: free + allocated == all, disjoint; an association points at a
    live instance that points back."""
    out = []
    allocated_by_host: dict[str, set] = {}
    for key in sorted(k for k in s.store if k.startswith("floatingip:")):
        record = _hash(s.store, key) or {}
        address = key[len("floatingip:"):]
        allocated_by_host.setdefault(record.get("host", ""), set()).add(address)
        instance_id = record.get("instance_id", "")
        if instance_id:
            instance = holding.get(instance_id)
            if instance is None:
                out.append(f"floating {address} is associated with {instance_id}, which is not live")
            elif instance.get("floating_ip") != address:
                out.append(f"floating {address} is associated with {instance_id}, which names {instance.get('floating_ip')!r}")
    for iid, rec in sorted(holding.items()):
        address = rec.get("floating_ip")
        if address and (_hash(s.store, keys.floatingip(address)) or {}).get("instance_id") != iid:
            out.append(f"instance {iid} names floating {address}, which is not associated with it")
    for host in sorted(_members(s.store, keys.FLOATING_HOSTS)):
        every = _members(s.store, keys.floating_addresses(host))
        free = _members(s.store, keys.floating_available(host))
        taken = allocated_by_host.get(host, set())
        for address in sorted(free & taken):
            out.append(f"floating {address} on {host} is both free and allocated")
        for address in sorted(every - free - taken):
            out.append(f"floating {address} on {host} leaked (neither free nor allocated)")
    return out


def _vlan_violations(s: Snapshot, nids) -> list[str]:
    """Vlan: a project has at most one network and a network at most one project."""
    out = []
    owners: dict[str, str] = {}
    for key in sorted(k for k in s.store if k.startswith("project:") and k.endswith(":network")):
        project = key[len("project:"):-len(":network")]
        nid = str(s.store[key])
        if nid in owners:
            out.append(f"network {nid} serves both {owners[nid]} and {project}")
        owners[nid] = project
        recorded = (_hash(s.store, keys.network(nid)) or {}).get("project_id", "")
        if recorded and recorded != project:
            out.append(f"network {nid} records project {recorded!r} but {project} is associated with it")
        if nid in _members(s.store, keys.FREE_NETWORKS):
            out.append(f"network {nid} is associated with {project} and still free")
    return out


def i3_domains_match_records(s: Snapshot) -> Verdict:
    """I3: every hypervisor domain has a live record on its host, and every running
    record a domain; on every host that is not dead (``dead_hosts``)."""
    violations: list[str] = []
    dead = dead_hosts(s, "compute", s.domains)
    for host in sorted(set(s.domains) - dead):
        for name in sorted(s.domains[host]):
            rec = _hash(s.store, keys.instance(name))
            if rec is None:
                violations.append(f"domain {name} on host {host} has no instance record")
            elif rec.get("state") in _NO_DOMAIN:
                violations.append(f"orphan domain {name} on host {host}: its instance is {rec.get('state')}")
            elif rec.get("host", "") != host:
                violations.append(
                    f"domain {name} is on host {host} but its record says host {rec.get('host', '')!r}"
                )
    for iid, rec in _records(s).items():
        if rec is None or rec.get("state") not in _NEEDS_DOMAIN:
            continue
        host = rec.get("host", "")
        if host not in dead and iid not in s.domains.get(host, {}):
            violations.append(f"instance {iid} is {rec.get('state')} but has no domain on host {host!r}")
    return _verdict("I3", "hypervisor domains match instance records", violations)


def _last_change(s: Snapshot, iid: str, rec: Mapping[str, str]) -> float | None:
    """When the instance last changed state: its last transition, else ``updated_at``."""
    history = _list(s.store, keys.transitions(iid))
    if history:
        try:
            return lifecycle.decode_transition(history[-1])[2]
        except ValueError:
            pass
    return _parse_time(rec.get("updated_at"))


def i4_no_stuck_transitions(s: Snapshot) -> Verdict:
    """I4: no instance has stayed in a transitional state longer than the build timeout."""
    violations: list[str] = []
    deadline = s.now - s.build_timeout
    for iid, rec in _records(s).items():
        if rec is None or rec.get("state") not in lifecycle.TRANSITIONAL:
            continue
        since = _last_change(s, iid, rec)
        if since is None:
            violations.append(f"instance {iid} is {rec['state']} with no recorded transition time")
        elif since < deadline:
            violations.append(
                f"instance {iid} stuck in {rec['state']} for {s.now - since:.3f}s"
                f" (build timeout {s.build_timeout:g}s)"
            )
    return _verdict("I4", "no instance stuck in a transitional state", violations)


def i5_requests_settled(s: Snapshot) -> Verdict:
    """I5: at the end of a run every instance is settled and every queue is drained,
    but a dead host's own queue: what reached it before it was known dead waits for it
    (stranded, counted by ``stranded_messages``), and nothing is sent to it after."""
    violations = [
        f"instance {iid} ended in {rec.get('state', '')!r}, not a final state"
        for iid, rec in _records(s).items()
        if rec is not None and rec.get("state") not in lifecycle.SETTLED
    ]
    for queue in sorted(set(s.queues) - _dead_queues(s)):
        counts = s.queues[queue]
        ready, unacked = counts.get("ready", 0), counts.get("unacked", 0)
        if ready or unacked:
            violations.append(f"queue {queue} not drained: ready={ready} unacked={unacked}")
    return _verdict("I5", "every accepted request settled", violations)


def _dead_queues(s: Snapshot) -> set[str]:
    """The ``<topic>.<host>`` queues of dead hosts."""
    by_topic: dict[str, set[str]] = {}  # per topic: read once, not once per queue
    for queue in s.queues:
        topic, dot, host = queue.partition(".")
        if dot:
            by_topic.setdefault(topic, set()).add(host)
    return {f"{topic}.{host}" for topic, hosts in by_topic.items() for host in hosts & dead_hosts(s, topic, hosts)}


def stranded_messages(s: Snapshot) -> int:
    """Messages waiting on dead hosts' queues (sent before the host was known dead)."""
    return sum(s.queues[q].get("ready", 0) + s.queues[q].get("unacked", 0) for q in _dead_queues(s))


def i6_legal_transitions(s: Snapshot) -> Verdict:
    """I6: every recorded transition history is a legal path ending in the current state."""
    violations: list[str] = []
    records = _records(s)
    for iid, rec in records.items():
        if rec is None:
            violations.append(f"index names a missing record {keys.instance(iid)}")
            continue
        history = _list(s.store, keys.transitions(iid))
        if not history:
            violations.append(f"instance {iid} has no transition history")
            continue
        steps: list[tuple[str | None, str, float]] = []
        for k, entry in enumerate(history):
            try:
                steps.append(lifecycle.decode_transition(entry))
            except ValueError:
                violations.append(f"instance {iid}: transition {k} is undecodable: {entry!r}")
        if len(steps) != len(history):
            continue
        src0, dst0, _ = steps[0]
        if (src0, dst0) != (None, lifecycle.SCHEDULING):
            violations.append(f"instance {iid}: first transition {history[0]!r} is not a creation")
        for k, (src, dst, at) in enumerate(steps):
            if (src, dst) not in lifecycle.LEGAL:
                violations.append(f"instance {iid}: illegal transition {k} {src or '(none)'} -> {dst}")
            if k == 0:
                continue
            _prev_src, prev_dst, prev_at = steps[k - 1]
            if src != prev_dst:
                violations.append(
                    f"instance {iid}: transition {k} starts from {src or '(none)'}"
                    f" but transition {k - 1} ended in {prev_dst}"
                )
            if at < prev_at:
                violations.append(f"instance {iid}: transition {k} at {at!r} is earlier than {prev_at!r}")
        last = steps[-1][1]
        if last != rec.get("state", ""):
            violations.append(
                f"instance {iid}: state is {rec.get('state', '')!r} but its history ends in {last!r}"
            )
    for key in sorted(s.store):
        if not key.startswith(_INSTANCE_PREFIX):
            continue
        iid = key[len(_INSTANCE_PREFIX) :]
        if ":" in iid or iid in records or _hash(s.store, key) is None:
            continue
        violations.append(f"record {key} is missing from the {keys.INSTANCES} index")
    return _verdict("I6", "every lifecycle transition is legal", violations)


#: What a project's usage hash counts, and what each counter is compared with.
_QUOTA_FIELDS = ("instances", "cores", "floating_ips")


def _held_quota(s: Snapshot) -> tuple[dict[str, Counter], dict[str, Counter]]:
    """-> per project, what its records hold (instances not deleted, their vCPUs, its
    floating addresses) and what its outstanding reservations hold."""
    live: dict[str, Counter] = {}
    for rec in _records(s).values():
        if rec is None or rec.get("state") == lifecycle.DELETED:
            continue
        held = live.setdefault(rec.get("project_id", ""), Counter())
        held["instances"] += 1
        held["cores"] += _int(rec.get("vcpus"))
    for key in sorted(k for k in s.store if k.startswith(_FLOATINGIP_PREFIX)):
        project = (_hash(s.store, key) or {}).get("project_id", "")
        live.setdefault(project, Counter())["floating_ips"] += 1
    reserved: dict[str, Counter] = {}
    for rid in sorted(_members(s.store, keys.RESERVATIONS)):
        rec = _hash(s.store, keys.reservation(rid)) or {}
        held = reserved.setdefault(rec.get("project_id", ""), Counter())
        held["instances"] += _int(rec.get("instances"))
        held["cores"] += _int(rec.get("cores"))
    return live, reserved


def _reservation_violations(s: Snapshot) -> list[str]:
    """A reservation nothing would give back: missing from the index, or overdue by a
    whole build timeout (the reaper gives one back at its deadline)."""
    out = []
    deadlines = s.store.get(keys.RESERVATIONS)
    deadlines = deadlines if isinstance(deadlines, Mapping) else {}
    for rid in sorted(deadlines):
        rec = _hash(s.store, keys.reservation(rid))
        deadline = _parse_time(deadlines[rid])
        if rec is None:
            out.append(f"reservation {rid} is indexed but has no record")
        elif deadline is not None and deadline + s.build_timeout < s.now:
            out.append(
                f"reservation {rid} of project {rec.get('project_id', '')} still holds {rec.get('instances')}"
                f" instances / {rec.get('cores')} cores {s.now - deadline:.3f}s past its deadline")
    for key in sorted(k for k in s.store if k.startswith(_RESERVATION_PREFIX)):
        if key[len(_RESERVATION_PREFIX):] not in deadlines:
            out.append(f"{key} is missing from the {keys.RESERVATIONS} index: nothing would give it back")
    return out


def i7_quota_matches_holdings(s: Snapshot) -> Verdict:
    """I7: each project's quota usage equals what it holds: its instances not deleted
    and their vCPUs (plus what its outstanding reservations hold), and its floating
    addresses; no reservation is left past its deadline."""
    live, reserved = _held_quota(s)
    usage = {
        key[len(_PROJECT_PREFIX):-len(_USAGE_SUFFIX)]: _hash(s.store, key) or {}
        for key in s.store
        if key.startswith(_PROJECT_PREFIX) and key.endswith(_USAGE_SUFFIX)
    }
    violations: list[str] = []
    for project in sorted(usage.keys() | live.keys() | reserved.keys()):
        counted, held, booked = usage.get(project, {}), live.get(project, Counter()), reserved.get(project, Counter())
        for name in _QUOTA_FIELDS:
            expected = held[name] + booked[name]
            if _int(counted.get(name)) != expected:
                detail = f"{held[name]} held + {booked[name]} reserved" if booked[name] else f"{held[name]} held"
                violations.append(
                    f"project {project or '(none)'}: usage {name} is {_int(counted.get(name))} but it holds {expected}"
                    f" ({detail})")
    violations += _reservation_violations(s)
    return _verdict("I7", "quota usage matches what each project holds", violations)


CHECKS = (
    i1_unique_addresses,
    i2_allocated_matches_live,
    i3_domains_match_records,
    i4_no_stuck_transitions,
    i5_requests_settled,
    i6_legal_transitions,
    i7_quota_matches_holdings,
)


def check_all(snapshot: Snapshot) -> list[Verdict]:
    """Run I1..I7, in order."""
    return [check(snapshot) for check in CHECKS]
