"""Floating (public) addresses: allocated to a project, associated with an instance.

Each network host owns a pool of floating addresses (``nova-manage floating create
<host> <range>`` in 2010): the free ones are a sorted set scored by address, so an
allocation reads a bounded window of them (ZRANGEBYSCORE ... LIMIT), never the whole
pool. A project allocates one: in
one guarded transaction a free address leaves the pool, gets its record and counts
against the project's ``floating_ips`` quota (HINCRBY, checked against the total it
returns and given back when over). It associates it with one of its running instances
(the host binds the address and writes DNAT/SNAT rules), and later disassociates and
releases it. Every state change is guarded, so a repeated or late request is a no-op.
"""

from __future__ import annotations

import ipaddress

from common import keys, lifecycle, webhooks
from common.effects import (
    BindFloating,
    Choose,
    Del,
    EnsureFloatingForward,
    Guard,
    HDel,
    HGet,
    HGetAll,
    HIncrBy,
    HSet,
    Now,
    RemoveFloatingForward,
    SAdd,
    SMembers,
    SRem,
    Transaction,
    UnbindFloating,
    ZAdd,
    ZRangeByScore,
    ZRem,
)
from common.errors import InvalidParameterValue, NoMoreAddresses, NotFound, QuotaExceeded


def floating_addresses(cidr: str) -> tuple[str, ...]:
    try:
        return tuple(str(a) for a in ipaddress.ip_network(cidr, strict=True).hosts())
    except ValueError as e:
        raise InvalidParameterValue(f"bad floating range {cidr!r}: {e}") from None


def pool_score(address: str) -> int:
    """An address's score in a host's free pool: the address as a number."""
    return int(ipaddress.ip_address(address))


def create_floating_ips(host: str, cidr: str):
    """Add the addresses of ``cidr`` that ``host`` does not have yet to its pool, in one
    transaction (addresses it already has, free or allocated, are left as they are).
    Returns how many were new. A free pool that an older store keeps as a set moves into
    the sorted one first, so upgrading a site loses no free address."""
    addresses = floating_addresses(cidr)
    known = yield SMembers(keys.floating_addresses(host))
    legacy = yield SMembers(keys.legacy_floating_available(host))
    fresh = tuple(a for a in addresses if a not in known)
    if not fresh and not legacy:
        return 0
    moved = (ZAdd(keys.floating_available(host), {a: pool_score(a) for a in legacy}),
             Del((keys.legacy_floating_available(host),))) if legacy else ()
    added = (SAdd(keys.floating_addresses(host), fresh),
             ZAdd(keys.floating_available(host), {a: pool_score(a) for a in fresh})) if fresh else ()
    done = yield Transaction(ops=(*moved, *added, SAdd(keys.FLOATING_HOSTS, (host,))))
    return len(fresh) if done is not None else 0


def give_back(host: str, address: str, project_id: str, extra_ops: tuple = ()):
    """Return an unassociated address of ``project_id`` to ``host``'s pool and its quota
    in one transaction (with ``extra_ops``: its web hook events); -> False when it is
    associated (or not the project's)."""
    done = yield Transaction(
        ops=(
            Del((keys.floatingip(address),)),
            SRem(keys.project_floatingips(project_id), (address,)),
            HIncrBy(keys.project_usage(project_id), "floating_ips", -1),
            ZAdd(keys.floating_available(host), {address: pool_score(address)}),
            *extra_ops,
        ),
        guards=(
            Guard(keys.floatingip(address), "project_id", project_id),
            Guard(keys.floatingip(address), "instance_id", ""),
            Guard(keys.floatingip(address), "host", host),
        ),
    )
    return done is not None


#: Free addresses tried by one allocation when others take them first; each try is a
#: different address, so running out of tries needs that many concurrent allocations.
MAX_PICKS = 8
#: Free addresses one allocation reads (the lowest), to choose among: bounded, so an
#: allocation costs the same in a pool of 100 or 65,000.
FREE_WINDOW = 4 * MAX_PICKS


class FloatingIps:
    """The network worker's side: runs on ``network.<host>`` for the host's pool."""

    def __init__(self, host: str, public_interface: str = "eth0"):
        self.host = host
        self.public_interface = public_interface

    def allocate_floating_ip(self, context, project_id: str, quota: int):
        """Take a free address of this host's pool for ``project_id``. Raises
        QuotaExceeded or NoMoreAddresses; neither leaves anything reserved.

        The address leaves the pool, gets its record and counts against the quota in one
        transaction (guarded: nobody took it meanwhile), so a store that runs it without
        answering leaves an allocated address, never a lost one or a leaked count. Over
        the quota, the same kind of transaction gives it back."""
        used, hooks = yield Transaction(ops=(HGet(keys.project_usage(project_id), "floating_ips"),
                                             webhooks.hooks_read(project_id)))
        if int(used or 0) >= quota:  # refused before looking at the pool, as 2010's API did
            raise QuotaExceeded(f"project {project_id} may hold {quota} floating addresses")
        window = yield ZRangeByScore(keys.floating_available(self.host), "-inf", "+inf", FREE_WINDOW)
        free = {address for address, _ in window}
        for _ in range(MAX_PICKS):
            if not free:
                break
            address = yield Choose(tuple(sorted(free)))
            record = {"address": address, "host": self.host, "project_id": project_id, "instance_id": "", "fixed_ip": ""}
            if hooks:  # the project's web hooks hear of this address until it is released
                record[webhooks.MARK] = "1"
            events = yield from self._event_ops(record, webhooks.FLOATING_ALLOCATED)
            got = yield Transaction(
                ops=(
                    ZRem(keys.floating_available(self.host), (address,)),
                    HSet(keys.floatingip(address), record),
                    SAdd(keys.project_floatingips(project_id), (address,)),
                    HIncrBy(keys.project_usage(project_id), "floating_ips", 1),
                    SAdd(keys.QUOTA_PROJECTS, (project_id,)),
                    *events,
                ),
                guards=(Guard(keys.floatingip(address), "host", None),),
            )
            if got is None:  # taken since the pool was read
                free.discard(address)
                continue
            if got[3] > quota:
                released = yield from self._event_ops(record, webhooks.FLOATING_RELEASED)
                yield from give_back(self.host, address, project_id, released)
                raise QuotaExceeded(f"project {project_id} may hold {quota} floating addresses")
            return address
        raise NoMoreAddresses(f"no floating addresses left on {self.host}")

    @staticmethod
    def _event_ops(floating: dict, event_type: str, instance_id: str = "", fixed_ip: str = ""):
        """The web hook ops of a floating address event; () when the address is unmarked."""
        if not floating.get(webhooks.MARK):
            return ()
        now = yield Now()
        return (yield from webhooks.event_ops(floating["project_id"], event_type, float(now), {
            "address": floating["address"], "instance_id": instance_id, "fixed_ip": fixed_ip}))

    def associate_floating_ip(self, context, address: str, instance_id: str):
        """Point ``address`` at a running instance of its project: bind it and NAT it.
        Raises NotFound/InvalidParameterValue when the address or instance does not
        fit; an address already associated must be disassociated first."""
        floating = yield HGetAll(keys.floatingip(address))
        record = yield HGetAll(keys.instance(instance_id))
        if not floating or floating["project_id"] != context.project_id:
            raise NotFound(f"address {address} is not allocated to project {context.project_id}")
        if not record or record["project_id"] != context.project_id:
            raise NotFound(f"the instance ID {instance_id!r} does not exist")
        if record["state"] != lifecycle.RUNNING or not record.get("fixed_ip"):
            raise InvalidParameterValue(f"instance {instance_id} is {record['state']}, not running")
        fixed = record["fixed_ip"]
        events = yield from self._event_ops(floating, webhooks.FLOATING_ASSOCIATED, instance_id, fixed)
        done = yield Transaction(
            ops=(
                HSet(keys.floatingip(address), {"instance_id": instance_id, "fixed_ip": fixed}),
                HSet(keys.instance(instance_id), {"floating_ip": address}),
                *events,
            ),
            guards=(
                Guard(keys.floatingip(address), "instance_id", ""),
                Guard(keys.floatingip(address), "project_id", context.project_id),
                Guard(keys.instance(instance_id), "state", lifecycle.RUNNING),
                Guard(keys.instance(instance_id), "floating_ip", None),
            ),
        )
        if done is None:
            raise InvalidParameterValue(f"address {address} or instance {instance_id} is already associated or changed")
        yield BindFloating(address, self.public_interface)
        yield EnsureFloatingForward(address, fixed)
        return True

    def disassociate_floating_ip(self, context, address: str):
        """Undo an association (rules, binding, records). Idempotent."""
        floating = yield HGetAll(keys.floatingip(address))
        if not floating or not floating.get("instance_id"):
            return False
        if context is not None and not context.is_admin and floating["project_id"] != context.project_id:
            raise NotFound(f"address {address} is not allocated to project {context.project_id}")
        yield RemoveFloatingForward(address, floating["fixed_ip"])
        yield UnbindFloating(address, self.public_interface)
        events = yield from self._event_ops(floating, webhooks.FLOATING_DISASSOCIATED, floating["instance_id"],
                                            floating["fixed_ip"])
        done = yield Transaction(
            ops=(
                HSet(keys.floatingip(address), {"instance_id": "", "fixed_ip": ""}),
                HDel(keys.instance(floating["instance_id"]), ("floating_ip",)),
                *events,
            ),
            guards=(Guard(keys.floatingip(address), "instance_id", floating["instance_id"]),),
        )
        return done is not None

    def release_floating_ip(self, context, address: str):
        """Give an unassociated address back to its host's pool and the quota back to
        the project. Raises InvalidParameterValue while it is associated."""
        floating = yield HGetAll(keys.floatingip(address))
        if not floating or floating["project_id"] != context.project_id:
            raise NotFound(f"address {address} is not allocated to project {context.project_id}")
        events = yield from self._event_ops(floating, webhooks.FLOATING_RELEASED)
        if not (yield from give_back(floating["host"], address, context.project_id, events)):
            raise InvalidParameterValue(f"address {address} is associated; disassociate it first")
        return True
