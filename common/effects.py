"""The effect vocabulary: every remote round trip a manager makes, as a value.

Theory of operation
-------------------
A manager method is a generator. Each ``yield`` hands a runner one effect from this
module; the runner performs it (SimPy model in ``sim/``, real service in ``real/``) and
sends the result back, or throws the error in at the ``yield``. One effect is one round
trip because that is where the real system can interleave, time out or crash, so it is
where the simulation must be able to. Composition is ``yield from``.

Effects do nothing themselves. Each docstring says what the runner does, what it may
raise into the manager, and whether performing it twice is the same as once
(idempotent), which tells a caller whether a retry is safe.

Every store effect carries a Redis ``command`` name and its ``args``: a runner performs
it as that one command, so the effect sequence is also the command log.

Families
--------
Every effect class belongs to exactly one *family*, a base class here: ``StoreEffect``,
``RpcEffect``, ``HypervisorEffect``, ``NetDriverEffect``, ``DirectoryEffect``,
``ImageEffect``, ``KeyPairEffect``, ``ApiEffect`` (EC2 requests), ``TaskEffect``
(fork and join of sub-workflows) and ``RuntimeEffect`` (time, ids, randomness,
records). A family is what one performer serves: ``common.performers`` has its
``typing.Protocol``, and a runtime is told who performs a family with
``runtime.register(Family, performer)``. ``perform_with(performer, agent)`` is how an
effect is performed by its family's performer: the one place that maps an effect to a
performer method, so runners never list effect types.

To add a family: a base class here (subclass ``Effect``, add it to ``FAMILIES``), its
effects subclassing it and overriding ``perform_with``, a Protocol in
``common.performers`` (add it to ``PROTOCOLS``), and a ``register`` call in each runtime
that should perform it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


class Effect:
    """Base of every effect. Subclasses are frozen dataclasses under exactly one family."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        """Perform this effect with ``performer``, its family's performer (a Protocol of
        ``common.performers``), for ``agent``. Returns the result, or a SimPy generator
        returning it when the performer is a simulated one."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it is performed")

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        """-> ``handler(agent, effect)`` performing effects of this class with
        ``performer``: what a runtime's table calls. Hot effects override it to skip
        a call."""

        def handler(agent: Any, effect: Effect) -> Any:
            return effect.perform_with(performer, agent)

        return handler


class StoreEffect(Effect):
    """Family: the datastore (Redis). Performer: ``StorePerformer``."""

    __slots__ = ()


class RpcEffect(Effect):
    """Family: messages between services. Performer: ``RpcPerformer``."""

    __slots__ = ()


class HypervisorEffect(Effect):
    """Family: the hypervisor of the agent's host. Performer: ``HypervisorPerformer``."""

    __slots__ = ()


class NetDriverEffect(Effect):
    """Family: linux_net on the agent's network host. Performer: ``NetDriverPerformer``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(self)


class DirectoryEffect(Effect):
    """Family: the LDAP directory. Performer: ``DirectoryPerformer``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(agent, self)


class ImageEffect(Effect):
    """Family: the compute host's image cache. Performer: ``ImageFetcher``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(agent, self)


class KeyPairEffect(Effect):
    """Family: making SSH key pairs (randomness). Performer: ``KeyPairGenerator``."""

    __slots__ = ()


class ApiEffect(Effect):
    """Family: requests entering at the EC2 API (the workload's). Performer: ``ApiPerformer``."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(agent, self)


class TaskEffect(Effect):
    """Family: starting sub-workflows as tasks of their own and waiting for them (fork
    and join). Performer: ``TaskPerformer`` (the runtime's process or thread pool)."""

    __slots__ = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.perform(agent, self)


class RuntimeEffect(Effect):
    """Family: the runtime's own clock, ids, random streams and recorder. Performer:
    ``RuntimePerformer`` (the runtime itself)."""

    __slots__ = ()


#: Every family, in no particular order; each effect class subclasses exactly one.
FAMILIES: tuple[type[Effect], ...] = (
    StoreEffect, RpcEffect, HypervisorEffect, NetDriverEffect, DirectoryEffect, ImageEffect,
    KeyPairEffect, ApiEffect, TaskEffect, RuntimeEffect,
)


def family_of(kind: type) -> type[Effect]:
    """-> the family ``kind`` belongs to. Raises TypeError when it is not an effect or
    belongs to more than one family."""
    found = [family for family in FAMILIES if issubclass(kind, family)]
    if len(found) != 1:
        what = "no family" if not found else "families " + ", ".join(f.__name__ for f in found)
        raise TypeError(f"{kind.__qualname__} belongs to {what}; an effect belongs to exactly one")
    return found[0]


# ---------------------------------------------------------------------------
# Store: one effect per Redis command.  All may raise StoreUnavailable.


@dataclass(frozen=True)
class StoreCommand(StoreEffect):
    """Base of the one-command store effects; ``args`` is what follows the command name."""

    command: ClassVar[str] = ""

    @property
    def args(self) -> tuple:
        raise NotImplementedError

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.execute(self)

    @classmethod
    def bind(cls, performer: Any) -> Callable[[Any, Any], Any]:
        # The hot path (~300,000 commands in the 500-host run): one call, not two.
        execute = performer.execute
        return lambda agent, effect: execute(effect)


@dataclass(frozen=True)
class Get(StoreCommand):
    """GET key -> str or None. Idempotent."""

    command: ClassVar[str] = "GET"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class SetNX(StoreCommand):
    """SETNX key value -> True when this call set it. Idempotent in effect."""

    command: ClassVar[str] = "SETNX"
    key: str
    value: str

    @property
    def args(self):
        return (self.key, self.value)


@dataclass(frozen=True)
class Del(StoreCommand):
    """DEL keys... -> how many existed. Idempotent."""

    command: ClassVar[str] = "DEL"
    keys: tuple[str, ...]

    @property
    def args(self):
        return self.keys


@dataclass(frozen=True)
class HGet(StoreCommand):
    """HGET key field -> str or None. Idempotent."""

    command: ClassVar[str] = "HGET"
    key: str
    field: str

    @property
    def args(self):
        return (self.key, self.field)


@dataclass(frozen=True)
class HGetAll(StoreCommand):
    """HGETALL key -> dict of str (empty when the key is missing). Idempotent."""

    command: ClassVar[str] = "HGETALL"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class HSet(StoreCommand):
    """HSET key field value [field value ...] -> fields added. Idempotent."""

    command: ClassVar[str] = "HSET"
    key: str
    mapping: Mapping[str, str]

    @property
    def args(self):
        flat = []
        for k, v in self.mapping.items():
            flat += (k, v)
        return (self.key, *flat)


@dataclass(frozen=True)
class HDel(StoreCommand):
    """HDEL key fields... -> how many were removed. Idempotent."""

    command: ClassVar[str] = "HDEL"
    key: str
    fields: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.fields)


@dataclass(frozen=True)
class HIncrBy(StoreCommand):
    """HINCRBY key field amount -> the new value. Not idempotent."""

    command: ClassVar[str] = "HINCRBY"
    key: str
    field: str
    amount: int

    @property
    def args(self):
        return (self.key, self.field, self.amount)


@dataclass(frozen=True)
class SAdd(StoreCommand):
    """SADD key members... -> how many were new. Idempotent."""

    command: ClassVar[str] = "SADD"
    key: str
    members: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.members)


@dataclass(frozen=True)
class SRem(StoreCommand):
    """SREM key members... -> how many were removed. Idempotent."""

    command: ClassVar[str] = "SREM"
    key: str
    members: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.members)


@dataclass(frozen=True)
class SMembers(StoreCommand):
    """SMEMBERS key -> set of str. Idempotent."""

    command: ClassVar[str] = "SMEMBERS"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class SCard(StoreCommand):
    """SCARD key -> int. Idempotent."""

    command: ClassVar[str] = "SCARD"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class SPop(StoreCommand):
    """SPOP key -> one member removed atomically, or None when empty. Not idempotent:
    each call takes a different member, which is why pools are drained this way."""

    command: ClassVar[str] = "SPOP"
    key: str

    @property
    def args(self):
        return (self.key,)


@dataclass(frozen=True)
class ZAdd(StoreCommand):
    """ZADD key score member [score member ...] -> how many were new. Idempotent."""

    command: ClassVar[str] = "ZADD"
    key: str
    mapping: Mapping[str, float]

    @property
    def args(self):
        flat = []
        for member, score in self.mapping.items():
            flat += (score, member)
        return (self.key, *flat)


@dataclass(frozen=True)
class ZIncrBy(StoreCommand):
    """ZINCRBY key amount member -> the new score. Not idempotent."""

    command: ClassVar[str] = "ZINCRBY"
    key: str
    amount: float
    member: str

    @property
    def args(self):
        return (self.key, self.amount, self.member)


@dataclass(frozen=True)
class ZRem(StoreCommand):
    """ZREM key members... -> how many were removed. Idempotent."""

    command: ClassVar[str] = "ZREM"
    key: str
    members: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.members)


@dataclass(frozen=True)
class ZScore(StoreCommand):
    """ZSCORE key member -> float or None. Idempotent."""

    command: ClassVar[str] = "ZSCORE"
    key: str
    member: str

    @property
    def args(self):
        return (self.key, self.member)


@dataclass(frozen=True)
class ZRangeByScore(StoreCommand):
    """ZRANGEBYSCORE key min max WITHSCORES [LIMIT 0 count] -> [(member, score)],
    lowest score first. Idempotent. ``min``/``max`` take Redis syntax ("-inf", "(5")."""

    command: ClassVar[str] = "ZRANGEBYSCORE"
    key: str
    min: str
    max: str
    count: int | None = None

    @property
    def args(self):
        limit = ("LIMIT", 0, self.count) if self.count is not None else ()
        return (self.key, self.min, self.max, "WITHSCORES", *limit)


@dataclass(frozen=True)
class RPush(StoreCommand):
    """RPUSH key values... -> the new length. Not idempotent (appends again)."""

    command: ClassVar[str] = "RPUSH"
    key: str
    values: tuple[str, ...]

    @property
    def args(self):
        return (self.key, *self.values)


@dataclass(frozen=True)
class LRange(StoreCommand):
    """LRANGE key start stop -> list of str. Idempotent."""

    command: ClassVar[str] = "LRANGE"
    key: str
    start: int = 0
    stop: int = -1

    @property
    def args(self):
        return (self.key, self.start, self.stop)


@dataclass(frozen=True)
class Guard:
    """A precondition: hash ``key`` has ``field`` equal to ``expected`` (None = absent)."""

    key: str
    field: str
    expected: str | None


@dataclass(frozen=True)
class Transaction(StoreEffect):
    """Run ``ops`` atomically, only if every guard holds at that instant.

    Returns the list of the ops' results, or None when a guard failed (nothing was
    written). This is the compare-and-set that keeps a late or redelivered message from
    moving state backwards. Real runner: one Lua script; sim runner: the commands run at
    one instant of virtual time. Idempotent only if its ops are.
    """

    ops: tuple[StoreCommand, ...]
    guards: tuple[Guard, ...] = ()

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.transaction(self)


# ---------------------------------------------------------------------------
# RPC


@dataclass(frozen=True)
class Cast(RpcEffect):
    """Publish ``method(**args)`` to ``topic`` and do not wait.

    Returns None once the broker has routed it. Raises Unroutable when no queue is bound
    to the topic (published mandatory), StoreUnavailable-like transport errors as
    Unroutable too. Not idempotent: the receiver sees it once per cast.
    """

    topic: str
    method: str
    args: Mapping[str, Any]
    context: Any = None

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.cast(agent, self)


@dataclass(frozen=True)
class Call(RpcEffect):
    """Publish ``method(**args)`` to ``topic`` and wait for the reply.

    Returns the callee's return value. Raises RemoteError when the callee raised,
    RpcTimeout when no reply came within ``timeout`` seconds (the callee may still have
    run: callers must make the outcome safe either way; 2010 had no timeout, we do), and
    Unroutable when no queue is bound. A reply arriving after the timeout is dropped.
    """

    topic: str
    method: str
    args: Mapping[str, Any]
    context: Any = None
    timeout: float = 30.0

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.call(agent, self)


# ---------------------------------------------------------------------------
# Hypervisor: performed on the hypervisor of the service running the generator.


@dataclass(frozen=True)
class DomainSpec:
    """What a hypervisor needs to build a domain."""

    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int = 0
    mac_address: str = ""
    bridge: str = ""
    image_id: str = ""


@dataclass(frozen=True)
class Spawn(HypervisorEffect):
    """Define and boot a domain; returns once it is running.

    Raises HypervisorError (InsufficientMemory when it does not fit); on failure no
    partial domain is left behind. Not idempotent: a second spawn of the same name
    raises HypervisorError("domain exists").
    """

    spec: DomainSpec

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.spawn(self.spec)


@dataclass(frozen=True)
class Destroy(HypervisorEffect):
    """Stop and undefine a domain. Returns True if it existed, False if it was already
    gone (which is success). Idempotent."""

    name: str

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.destroy(self.name)


@dataclass(frozen=True)
class Reboot(HypervisorEffect):
    """Restart a domain; returns once it is running again. Raises HypervisorError when
    the domain does not exist. Idempotent in outcome."""

    name: str

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.reboot(self.name)


@dataclass(frozen=True)
class GetInfo(HypervisorEffect):
    """-> dict(state, vcpus, memory_mb) of a domain, or None when it does not exist.
    Idempotent."""

    name: str

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.info(self.name)


@dataclass(frozen=True)
class ListDomains(HypervisorEffect):
    """-> sorted tuple of the domain names on this hypervisor. Idempotent."""

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.names()


# ---------------------------------------------------------------------------
# Network driver (linux_net): performed on the network host running the generator.
# Every one is idempotent: ensuring twice is the same as once (2010's ensure_* and
# "confirmed" iptables rules: delete, then insert). All may raise NetworkDriverError.


@dataclass(frozen=True)
class EnsureVlan(NetDriverEffect):
    """Create 802.1q interface ``vlan<vlan>`` on ``interface`` and bring it up. Returns
    the interface name."""

    vlan: int
    interface: str


@dataclass(frozen=True)
class EnsureBridge(NetDriverEffect):
    """Create ``bridge`` (forward delay 0, STP off), enslave ``interface`` if given,
    give it ``address`` (CIDR form, e.g. the gateway ``10.0.0.1/24``) if given, bring it
    up, and accept forwarding in and out of it."""

    bridge: str
    interface: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class DhcpHost:
    mac: str
    hostname: str
    address: str


@dataclass(frozen=True, repr=False)
class UpdateDhcp(NetDriverEffect):
    """Write the hosts file of the network on ``bridge`` (``mac,hostname.novalocal,ip``
    lines) and make its dnsmasq serve it: HUP a running one, start one otherwise.
    ``gateway`` is the listen address; leases are static, ``lease_seconds`` long."""

    bridge: str
    gateway: str
    dhcp_start: str
    hosts: tuple[DhcpHost, ...]
    lease_seconds: int = 120

    def __repr__(self):
        # The hosts file can hold thousands of lines: a trace line names a digest.
        digest = zlib.crc32("\n".join(f"{h.mac},{h.hostname},{h.address}" for h in self.hosts).encode())
        return (f"UpdateDhcp(bridge={self.bridge!r}, gateway={self.gateway!r}, "
                f"dhcp_start={self.dhcp_start!r}, hosts=<{len(self.hosts)} lines {digest:08x}>)")


@dataclass(frozen=True)
class StopDhcp(NetDriverEffect):
    """Stop the dnsmasq of ``bridge`` if one runs. Idempotent."""

    bridge: str


@dataclass(frozen=True)
class BindFloating(NetDriverEffect):
    """Add floating ``address`` (/32) to ``interface``."""

    address: str
    interface: str


@dataclass(frozen=True)
class UnbindFloating(NetDriverEffect):
    """Remove floating ``address`` from ``interface``; absent is success."""

    address: str
    interface: str


@dataclass(frozen=True)
class EnsureFloatingForward(NetDriverEffect):
    """NAT ``floating`` to ``fixed`` (DNAT in, SNAT out) and accept ICMP and the default
    ports (tcp 22/80/443, udp 1194) to ``fixed``."""

    floating: str
    fixed: str


@dataclass(frozen=True)
class RemoveFloatingForward(NetDriverEffect):
    """Undo EnsureFloatingForward; rules already gone are success."""

    floating: str
    fixed: str


@dataclass(frozen=True)
class EnsureVpnForward(NetDriverEffect):
    """Forward udp ``public_ip:port`` to ``private_ip:1194`` (the project's VPN)."""

    public_ip: str
    port: int
    private_ip: str


@dataclass(frozen=True)
class InitHostNat(NetDriverEffect):
    """The network host's NAT: SNAT ``fixed_range`` to ``routing_source_ip`` on the way
    out, and leave traffic within ``fixed_range`` alone."""

    fixed_range: str
    routing_source_ip: str


# ---------------------------------------------------------------------------
# Directory (LDAP): performed on the runtime's directory connection. All may raise
# DirectoryUnavailable; values are tuples of str (LDAP attributes are multi-valued).


@dataclass(frozen=True)
class LdapSearch(DirectoryEffect):
    """Search below ``base`` (scope ``base``, ``level`` or ``subtree``) with ``filter``
    (already escaped: build it with common.directory.filter_eq) -> tuple of (dn, {attr:
    tuple of values}) sorted by dn; empty when nothing (or no base) matches. Idempotent."""

    base: str
    filter: str
    scope: str = "subtree"
    attributes: tuple[str, ...] = ()


@dataclass(frozen=True, repr=False)
class LdapAdd(DirectoryEffect):
    """Add entry ``dn`` with ``object_classes`` and ``attributes`` ({attr: tuple of
    values}). Returns True; raises DirectoryConflict when it exists. Not idempotent."""

    dn: str
    object_classes: tuple[str, ...]
    attributes: Mapping[str, tuple[str, ...]]

    def __repr__(self):
        # Entries carry secret keys: traces and fingerprints name the attributes only.
        return f"LdapAdd(dn={self.dn!r}, object_classes={self.object_classes!r}, attributes={sorted(self.attributes)!r})"


@dataclass(frozen=True)
class LdapModify(DirectoryEffect):
    """Apply ``changes`` to ``dn``: each (op, attr, values) with op ``add``, ``delete``
    or ``replace``. Returns True, False when ``dn`` does not exist. Idempotent for
    replace; add of a present value raises DirectoryConflict."""

    dn: str
    changes: tuple[tuple[str, str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class LdapDelete(DirectoryEffect):
    """Delete entry ``dn`` (a leaf). Returns True if it existed, False if not.
    Idempotent."""

    dn: str


# ---------------------------------------------------------------------------
# Images: performed by the compute host's image cache.


@dataclass(frozen=True)
class FetchImage(ImageEffect):
    """Make image ``image_id`` (``size_bytes`` long, served at ``location`` by the object
    store) available on this host; returns True when it had to be transferred, False
    when the host's cache already had it. Raises ImageError. Idempotent."""

    image_id: str
    location: str
    size_bytes: int


# ---------------------------------------------------------------------------
# Time, identity, randomness, observation: effects too, so a run is a function of
# scenario, seed and commit.


@dataclass(frozen=True)
class Now(RuntimeEffect):
    """-> the current time in seconds (virtual in sim). Never raises."""

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.now()


@dataclass(frozen=True)
class Sleep(RuntimeEffect):
    """Wait ``seconds``. Never raises."""

    seconds: float

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.sleep(self.seconds)


@dataclass(frozen=True)
class NewId(RuntimeEffect):
    """-> a fresh id ``<prefix>-`` plus 8 base-36 characters, unique within the run.
    Never raises."""

    prefix: str

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.new_id(self.prefix)


@dataclass(frozen=True)
class Choose(RuntimeEffect):
    """-> one of ``options``, drawn from the component's seeded stream. Raises
    ValueError when ``options`` is empty."""

    options: tuple

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.choose(agent, self.options)


@dataclass(frozen=True)
class Record(RuntimeEffect):
    """Hand ``event`` (a frozen dataclass) to the run's recorder. Takes no time, never
    raises; it is how managers report what a store snapshot cannot show."""

    event: Any = field(default=None)

    def perform_with(self, performer: Any, agent: Any) -> Any:
        return performer.record(self.event)
