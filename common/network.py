"""Network managers: Flat, FlatDHCP and Vlan, over one fixed-address pool design.

Theory of operation
-------------------
Every network's free addresses are a Redis SET seeded once, drained with SPOP and
refilled with SADD (2010 commit 75eaa1b8f8: SPOP is atomic, so two allocations never
take the same address however their commands interleave). What differs per manager:

=============  ==========================  ======================  ===================
manager        networks                    network host work       address release
=============  ==========================  ======================  ===================
Flat           one, shared by everyone     none (address injected  at once
                                           into the image)
FlatDHCP       one, shared by everyone     one bridge with the     after the DHCP lease
               (the 2011 fixed semantics)  gateway, one dnsmasq    ends, or the reclaim
                                                                   timeout
Vlan           one per project, taken from a vlan interface, a     as FlatDHCP
               a pre-created free set on   bridge and a dnsmasq
               first use                   per network
=============  ==========================  ======================  ===================

A network is served by one network host, chosen atomically the first time it is needed
(the first worker on the shared ``network`` topic to set ``host`` on the network's
record wins); later work for it is cast to ``network.<host>``. Allocation itself is
pure store work, so any network worker may do it.

With DHCP, a released address is not reusable at once: the instance's lease may still
be live. ``deallocate`` marks the address and ``reclaim_fixed_ips`` (a periodic task)
returns it to the pool when dnsmasq reports the release or the timeout passes. A
release reported for an address now held by another MAC is stale and ignored.

SPOP and recording the address are two steps: a worker that dies between them leaves
the address nowhere. ``sweep_leaked_addresses`` (at a network worker's start-up and as
a periodic task) puts such addresses back. That is safe against an allocation that was
only slow, because recording is guarded on the address being unrecorded and removes it
from the pool in the same transaction: an address may briefly be both free and about
to be recorded, never held twice.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from common import address_sweep, keys, lifecycle, webhooks
from common.dhcp_hosts import HostsFile
from common.effects import (
    Call,
    Del,
    EnsureBridge,
    EnsureVlan,
    Get,
    Guard,
    HDel,
    HGet,
    HGetAll,
    HSet,
    Now,
    SAdd,
    SetNX,
    Sleep,
    SPop,
    SRem,
    Transaction,
    UpdateDhcp,
    ZAdd,
    ZRangeByScore,
    ZRem,
)
from common.errors import InvalidParameterValue, NoMoreAddresses, NoMoreNetworks, NotFound
from common.floating import FloatingIps

FLAT, FLATDHCP, VLAN = "flat", "flatdhcp", "vlan"
MANAGERS = (FLAT, FLATDHCP, VLAN)

#: Deallocated addresses one reclaim read returns, and reads one pass makes at most
#: (the next pass takes the rest), so one pass never holds a network worker for long.
RECLAIM_BATCH = 200
RECLAIM_BATCHES = 50

#: Tries of allocate_fixed_ip when the popped address turns out to be someone else's
#: (only after a leak sweep returned it while its allocation was stalled: rare).
MAX_ALLOCATE_ATTEMPTS = 3

#: Seconds a network host gathers allocations into one hosts-file rewrite (a read of the
#: whole dhcphosts hash and a HUP): at most ~one per window, not one per allocation. A
#: guest asks for its lease only once booted, tens of seconds later.
DHCP_BATCH_SECONDS = 1.0


@dataclass(frozen=True)
class NetworkConfig:
    """How the cloud's fixed networks are laid out (2010 flag names in comments)."""

    manager: str = FLAT
    fixed_range: str = "10.0.0.0/16"
    bridge: str = "br100"  # flat_network_bridge
    bridge_interface: str = "eth0"  # bridge_dev: the physical side of bridges and vlans
    dns: str = "8.8.4.4"  # flat_network_dns
    network_size: int = 256  # vlan: addresses per project network
    num_networks: int | None = None  # vlan: None = as many as fit in fixed_range
    vlan_start: int = 100
    vpn_clients: int = 5  # vlan: top addresses kept for VPN clients (cnt_vpn_clients)
    vpn_start: int = 1000  # vlan: public VPN port of the first network
    disassociate_timeout: float = 600.0  # fixed_ip_disassociate_timeout
    public_interface: str = "eth0"  # where floating addresses are bound

    @property
    def dhcp(self) -> bool:
        return self.manager != FLAT


@dataclass(frozen=True)
class NetworkSpec:
    """One network as created."""

    network_id: str
    cidr: str
    bridge: str
    gateway: str
    netmask: str
    broadcast: str
    dhcp_start: str
    vlan: int
    vpn_private: str
    vpn_port: int
    addresses: tuple[str, ...]

    def record(self, dns: str) -> dict:
        return {
            "id": self.network_id, "cidr": self.cidr, "bridge": self.bridge, "gateway": self.gateway,
            "netmask": self.netmask, "broadcast": self.broadcast, "dhcp_start": self.dhcp_start,
            "vlan": str(self.vlan), "vpn_private": self.vpn_private, "vpn_port": str(self.vpn_port),
            "dns": dns, "size": str(len(self.addresses)), "host": "", "project_id": "",
        }


def _parse(cidr: str):
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise InvalidParameterValue(f"bad network range {cidr!r}: {e}") from None


def pool_addresses(cidr: str, bottom: int = 1, top: int = 0) -> tuple[str, ...]:
    """The allocatable addresses of a network: all host addresses but the first
    ``bottom`` (the gateway, and for Vlan the VPN address) and the last ``top``.
    The network and broadcast addresses are never allocatable: 2010's Flat mode left
    the broadcast address in the pool (an off-by-one); we do not."""
    hosts = [str(a) for a in _parse(cidr).hosts()]
    return tuple(hosts[bottom: len(hosts) - top])


@functools.lru_cache(maxsize=32)
def plan(config: NetworkConfig) -> tuple[NetworkSpec, ...]:
    """The networks ``config`` describes, in creation order. Pure: nothing is written.
    Cached: every worker's manager of a 500-host cloud shares one plan (a /16 is 65k
    addresses to enumerate)."""
    whole = _parse(config.fixed_range)
    if config.manager != VLAN:
        hosts = list(whole.hosts())
        return (
            NetworkSpec(
                network_id=FLAT, cidr=str(whole), bridge=config.bridge, gateway=str(hosts[0]),
                netmask=str(whole.netmask), broadcast=str(whole.broadcast_address), dhcp_start=str(hosts[1]),
                vlan=0, vpn_private="", vpn_port=0, addresses=pool_addresses(str(whole)),
            ),
        )
    size = config.network_size
    if size < 8 or size & (size - 1):
        raise InvalidParameterValue(f"network_size must be a power of two of at least 8, got {size}")
    prefix = 32 - size.bit_length() + 1
    if prefix < whole.prefixlen:
        raise InvalidParameterValue(f"network_size {size} is larger than fixed_range {config.fixed_range}")
    subnets = whole.subnets(new_prefix=prefix)
    fit = whole.num_addresses // size
    count = fit if config.num_networks is None else config.num_networks
    if count > fit:
        raise InvalidParameterValue(f"{count} networks of {size} addresses do not fit in {config.fixed_range} (at most {fit})")
    specs = []
    for index in range(count):
        net = next(subnets)
        hosts = list(net.hosts())
        vlan = config.vlan_start + index
        specs.append(
            NetworkSpec(
                network_id=f"vlan{vlan}", cidr=str(net), bridge=f"br{vlan}", gateway=str(hosts[0]),
                netmask=str(net.netmask), broadcast=str(net.broadcast_address), dhcp_start=str(hosts[2]),
                vlan=vlan, vpn_private=str(hosts[1]), vpn_port=config.vpn_start + index,
                addresses=pool_addresses(str(net), bottom=2, top=config.vpn_clients),
            )
        )
    return tuple(specs)


class FlatManager(FloatingIps):
    """Hands out fixed addresses from one shared network; no per-host network work.
    Every manager also serves the floating addresses of its host (common.floating)."""

    rpc_methods = frozenset(
        {"allocate_fixed_ip", "setup_fixed_ip", "set_network_host", "lease_fixed_ip", "release_fixed_ip",
         "allocate_floating_ip", "associate_floating_ip", "disassociate_floating_ip", "release_floating_ip"}
    )

    def __init__(self, config: NetworkConfig, host: str = ""):
        super().__init__(host, config.public_interface)
        self.config = config
        self._specs = {spec.network_id: spec for spec in plan(config)}
        self._ranges = tuple((ipaddress.ip_network(spec.cidr), spec.network_id) for spec in self._specs.values())
        #: Networks this process has claimed or rebuilt since it started: what its
        #: bridges and dnsmasq serve, which it claims back if the store forgets them.
        self.served: set[str] = set()
        #: Networks re-created after a store loss whose pools this process holds back,
        #: and until when (common.recovery ends the holds).
        self.held: dict[str, float] = {}
        #: A heartbeat found this host's entry gone: check the store (common.recovery).
        self.store_check_due = False
        #: Networks with a hosts-file rewrite waiting to read the store: an allocation
        #: recorded before that read is in it, so its own rewrite can be skipped.
        self.dhcp_due: set[str] = set()
        self._hosts_file = HostsFile()

    @property
    def dhcp(self) -> bool:
        return self.config.dhcp

    def specs(self) -> tuple[NetworkSpec, ...]:
        return tuple(self._specs.values())

    # -- creation and association ------------------------------------------------------

    def create_networks(self, held_until: float | None = None):
        """Seed every network and its pool once (each guarded, so a second call or a
        second worker changes nothing). Returns the ids this call created.

        ``held_until`` (re-creating after the store lost its data, common.recovery):
        the pool stays empty until then, the record saying so in ``held_until``."""
        created = []
        for spec in self._specs.values():
            record = spec.record(self.config.dns)
            if held_until is None:
                pool: tuple = (SAdd(keys.available(spec.network_id), spec.addresses),)
            else:
                pool, record["held_until"] = (SAdd(keys.HELD_NETWORKS, (spec.network_id,)),), repr(held_until)
            done = yield Transaction(
                ops=(
                    HSet(keys.network(spec.network_id), record),
                    SAdd(keys.NETWORKS, (spec.network_id,)),
                    SAdd(keys.network_addresses(spec.network_id), spec.addresses),
                    *pool,
                    *self._on_create(spec),
                ),
                guards=(Guard(keys.network(spec.network_id), "id", None),),
            )
            if done is not None:
                created.append(spec.network_id)
        return created

    def _on_create(self, spec):
        return ()

    def project_network(self, project_id: str):
        """-> the id of the network serving ``project_id`` (the one flat network)."""
        return FLAT
        yield  # a generator, like every manager method

    def network_topic(self, network_id: str, context=None, timeout: float = 30.0):
        """-> ``network.<host>`` of the host serving ``network_id``, choosing one through
        the shared ``network`` topic the first time (any worker may take it)."""
        host = yield HGet(keys.network(network_id), "host")
        if not host:
            host = yield Call("network", "set_network_host", {"network_id": network_id}, context, timeout=timeout)
        return f"network.{host}"

    def set_network_host(self, context, network_id: str):
        """Claim ``network_id`` for this host unless another already has it, then build
        its bridge and DHCP here if it is ours. Returns the host serving it."""
        spec = self._spec(network_id)
        claimed = yield Transaction(
            ops=(HSet(keys.network(network_id), {"host": self.host}),),
            guards=(Guard(keys.network(network_id), "host", ""),),
        )
        owner = self.host if claimed is not None else (yield HGet(keys.network(network_id), "host"))
        if owner == self.host:
            self.served.add(network_id)
            yield from self._on_set_network_host(spec)
        return owner

    def _on_set_network_host(self, spec):
        return
        yield

    def init_host(self):
        """Start-up of a network worker: rebuild what it serves (after a restart the
        bridges and dnsmasq may be gone); every step is idempotent."""
        self.served, self.held, self.dhcp_due = set(), {}, set()
        for spec in self._specs.values():
            owner = yield HGet(keys.network(spec.network_id), "host")
            if owner == self.host:
                self.served.add(spec.network_id)
                yield from self._on_set_network_host(spec)

    def setup_compute_network(self, network_id: str):
        """What a compute host does before spawning on ``network_id`` (flat: nothing)."""
        return
        yield

    def _spec(self, network_id: str) -> NetworkSpec:
        try:
            return self._specs[network_id]
        except KeyError:
            raise NotFound(f"no network {network_id!r}") from None

    # -- fixed addresses ----------------------------------------------------------------

    def allocate_fixed_ip(self, context, instance_id: str, network_id: str = FLAT, mac: str = "",
                          webhook_project: str = ""):
        """Take a free address of ``network_id`` for an instance still waiting for one.
        With ``webhook_project`` (the instance's project has web hooks) the allocation is
        an event for them, queued in the same transaction.

        Raises NoMoreAddresses when the pool is empty, NotFound when the instance no
        longer waits (terminated, or its API gave up on this call); in that case the
        address goes straight back to the pool, so nothing leaks either way.
        """
        spec = self._spec(network_id)
        for _ in range(MAX_ALLOCATE_ATTEMPTS):
            address = yield SPop(keys.available(network_id))
            if address is None:
                raise NoMoreAddresses(f"network {network_id} has no free addresses")
            events = yield from self._fixed_event_ops(webhook_project, webhooks.FIXED_ALLOCATED, address, instance_id,
                                                      network_id)
            done = yield Transaction(
                ops=(
                    HSet(keys.fixedip(address), {"address": address, "network_id": network_id,
                                                 "instance_id": instance_id, "mac": mac, "state": "allocated"}),
                    SAdd(keys.network_fixedips(network_id), (address,)),
                    SAdd(keys.ip_instances(address), (instance_id,)),
                    HSet(keys.network_dhcp_hosts(network_id), {address: f"{mac},{instance_id}"}),
                    HSet(keys.instance(instance_id), {"fixed_ip": address, "network_id": network_id,
                                                      "bridge": spec.bridge}),
                    # The pool may hold it again if a sweep returned it as leaked while
                    # this allocation was stalled: recording it takes it out for good.
                    SRem(keys.available(network_id), (address,)),
                    *events,
                ),
                guards=(
                    Guard(keys.instance(instance_id), "state", lifecycle.SCHEDULING),
                    Guard(keys.instance(instance_id), "fixed_ip", ""),
                    Guard(keys.fixedip(address), "address", None),  # nobody else recorded it
                ),
            )
            if done is not None:
                return {"address": address, "network_id": network_id, "bridge": spec.bridge}
            holder = yield HGet(keys.fixedip(address), "instance_id")
            if holder is None:  # nobody's: back to the pool
                yield SAdd(keys.available(network_id), (address,))
            if holder in (None, instance_id):
                raise NotFound(f"instance {instance_id} is not waiting for an address")
            # Someone else holds it (it came back through the leak sweep and was taken
            # twice): theirs. Try another.
        raise NoMoreAddresses(f"network {network_id}: {MAX_ALLOCATE_ATTEMPTS} addresses in a row were taken twice")

    def setup_fixed_ip(self, context, network_id: str, address: str = ""):
        """On the network's host, after an allocation (a cast: nobody waits): refresh
        DHCP (flat: nothing). The allocations of the next ``DHCP_BATCH_SECONDS`` share
        one rewrite: the first waits, the others find it due and return, and it reads
        the store after all of them recorded their addresses."""
        if not self.dhcp:
            return
        spec = self._spec(network_id)
        if network_id in self.dhcp_due:
            return
        self.dhcp_due.add(network_id)
        try:
            yield Sleep(DHCP_BATCH_SECONDS)
        finally:
            self.dhcp_due.discard(network_id)  # before the read: a later allocation needs its own
        yield from self._update_dhcp(spec)

    def _update_dhcp(self, spec):
        """Rewrite the network's hosts file whole from the store, as 2010 did."""
        lines = yield HGetAll(keys.network_dhcp_hosts(spec.network_id))
        yield UpdateDhcp(spec.bridge, spec.gateway, spec.dhcp_start, self._hosts_file.hosts(lines))

    def release_instance_address(self, record: dict):
        """Give back the fixed address ``record`` holds, if any (idempotent)."""
        project = record.get("project_id", "") if record.get(webhooks.MARK) else ""
        return (yield from self.deallocate_fixed_ip(record.get("fixed_ip", ""), record["id"], record.get("network_id"),
                                                    project))

    @staticmethod
    def _fixed_event_ops(project: str, event_type: str, address: str, instance_id: str, network_id: str):
        """The web hook ops of a fixed address event; () without a project to tell."""
        if not project:
            return ()
        now = yield Now()
        return (yield from webhooks.event_ops(project, event_type, float(now), {
            "address": address, "instance_id": instance_id, "network_id": network_id}))

    def release_leftover_address(self, record: dict):
        """Finish a release that a crash cut off: the record already says ``deleted`` or
        ``error`` (that step and the release are two transactions) but its address still
        names it and is not on its way back. Returns True when it released it."""
        address = record.get("fixed_ip", "")
        if not address:
            return False
        held = yield HGetAll(keys.fixedip(address))
        if held.get("instance_id") != record["id"] or held.get("state") == "deallocated":
            return False
        return (yield from self.release_instance_address(record))

    def deallocate_fixed_ip(self, address: str, instance_id: str, network_id: str | None = None,
                            webhook_project: str = ""):
        """Give an instance's address back. Flat: to the pool at once. DHCP: marked
        ``deallocated`` and dropped from the hosts file; the pool gets it back when the
        lease is released or the reclaim timeout passes. Idempotent: only the holder's
        release counts. Returns True when this call released it. With
        ``webhook_project`` the release is an event for the project's web hooks."""
        if not address:
            return False
        nid = network_id or self._network_of(address)
        events = yield from self._fixed_event_ops(webhook_project, webhooks.FIXED_RELEASED, address, instance_id, nid)
        if not self.dhcp:
            return (yield from self._to_pool(address, nid, Guard(keys.fixedip(address), "instance_id", instance_id),
                                             extra_ops=events))
        now = float((yield Now()))  # stored as repr(float): reclaim compares it to the zset score
        done = yield Transaction(
            ops=(
                HSet(keys.fixedip(address), {"state": "deallocated", "deallocated_at": repr(now)}),
                HDel(keys.network_dhcp_hosts(nid), (address,)),
                ZAdd(keys.DEALLOCATED, {address: now}),
                *events,
                SRem(keys.SETTLING, (instance_id,)),
            ),
            guards=(
                Guard(keys.fixedip(address), "instance_id", instance_id),
                Guard(keys.fixedip(address), "network_id", nid),
            ),
        )
        return done is not None

    def _network_of(self, address: str) -> str:
        parsed = ipaddress.ip_address(address)
        for net, network_id in self._ranges:
            if parsed in net:
                return network_id
        raise NotFound(f"address {address} is in no network")

    def _to_pool(self, address: str, network_id: str, *guards: Guard, extra_ops: tuple = ()):
        instance_id = guards[0].expected if guards and guards[0].field == "instance_id" else None
        done = yield Transaction(
            ops=(
                Del((keys.fixedip(address),)),
                SRem(keys.network_fixedips(network_id), (address,)),
                *((SRem(keys.ip_instances(address), (instance_id,)),) if instance_id else (Del((keys.ip_instances(address),)),)),
                HDel(keys.network_dhcp_hosts(network_id), (address,)),
                ZRem(keys.DEALLOCATED, (address,)),
                SAdd(keys.available(network_id), (address,)),
                *extra_ops,
                *((SRem(keys.SETTLING, (instance_id,)),) if instance_id else ()),
            ),
            guards=guards,
        )
        return done is not None

    def lease_fixed_ip(self, context, mac: str, address: str):
        """dnsmasq granted a lease: mark it, if the address is still this MAC's."""
        done = yield Transaction(
            ops=(HSet(keys.fixedip(address), {"state": "leased"}),),
            guards=(Guard(keys.fixedip(address), "mac", mac), Guard(keys.fixedip(address), "state", "allocated")),
        )
        return done is not None

    def release_fixed_ip(self, context, mac: str, address: str):
        """dnsmasq reports a lease ended: return a deallocated address to the pool now.
        A release for an address held by another MAC (stale), or still allocated to a
        live instance, changes nothing. Returns True when the address went back."""
        nid = self._network_of(address)
        return (yield from self._to_pool(
            address, nid, Guard(keys.fixedip(address), "mac", mac), Guard(keys.fixedip(address), "state", "deallocated")
        ))

    def reclaim_fixed_ips(self):
        """Periodic (DHCP managers): addresses deallocated longer than the timeout go
        back to the pool, in batches of RECLAIM_BATCH, up to RECLAIM_BATCHES of them a
        pass (one batch a pass would cap a cloud's reuse at 200 addresses a period
        however large it grows). Returns how many it reclaimed."""
        now = yield Now()
        cutoff = repr(now - self.config.disassociate_timeout)
        reclaimed = 0
        for _ in range(RECLAIM_BATCHES):
            due = yield ZRangeByScore(keys.DEALLOCATED, "-inf", cutoff, RECLAIM_BATCH)
            for address, since in due:
                reclaimed += yield from self._reclaim(address, since)
            if len(due) < RECLAIM_BATCH:
                break
        return reclaimed

    def _reclaim(self, address: str, since: float):
        """-> 1 when ``address``, deallocated at ``since``, went back to its pool."""
        nid = self._network_of(address)
        # Guarded on the deallocation we read: a fresher one waits its own timeout.
        if (yield from self._to_pool(address, nid, Guard(keys.fixedip(address), "state", "deallocated"),
                                     Guard(keys.fixedip(address), "deallocated_at", repr(since)))):
            return 1
        state = yield HGet(keys.fixedip(address), "state")
        if state != "deallocated":  # handed out again meanwhile: drop the stale entry
            yield Transaction(ops=(ZRem(keys.DEALLOCATED, (address,)),),
                              guards=(Guard(keys.fixedip(address), "state", state),))
        return 0

    def sweep_leaked_addresses(self, grace: float):
        """Return to the pool the addresses a crash left nowhere: popped by an
        allocation that died before recording it. An address counts once it has been
        missing (neither free nor recorded) for ``grace`` seconds, as seen by earlier
        sweeps (0: at once, for a network worker's start-up).

        Safe even if the allocation was only stalled: its recording transaction
        requires the address unrecorded and takes it out of the pool again, so the
        address is never held twice; ``grace`` only spares it a retry. Cheap when
        nothing is missing: two SCARDs per network. Returns how many it returned.
        """
        return (yield from address_sweep.sweep(self.specs(), grace))


class FlatDHCPManager(FlatManager):
    """One shared network behind one bridge with the gateway address, served by one
    dnsmasq on the network host; no injection (the 2011 fixed semantics)."""

    def _on_set_network_host(self, spec):
        yield EnsureBridge(spec.bridge, self.config.bridge_interface, f"{spec.gateway}/{_prefixlen(spec)}")
        yield from self._update_dhcp(spec)

    def setup_compute_network(self, network_id: str):
        yield EnsureBridge(self._spec(network_id).bridge, self.config.bridge_interface)


class VlanManager(FlatDHCPManager):
    """A network per project: taken from the free networks on the project's first
    launch, behind vlan ``<vlan>`` and bridge ``br<vlan>``, with its own dnsmasq."""

    def _on_create(self, spec):
        return (SAdd(keys.FREE_NETWORKS, (spec.network_id,)),)

    def project_network(self, project_id: str):
        """-> the project's network, associating a free one atomically on first use.
        Raises NoMoreNetworks when every network is taken (nothing is left half-done)."""
        current = yield Get(keys.project_network(project_id))
        if current:
            return current
        candidate = yield SPop(keys.FREE_NETWORKS)
        if candidate is None:
            raise NoMoreNetworks(f"no free network (VLAN) left for project {project_id}")
        won = yield SetNX(keys.project_network(project_id), candidate)
        if not won:  # another request associated one first: give ours back
            yield SAdd(keys.FREE_NETWORKS, (candidate,))
            return (yield Get(keys.project_network(project_id)))
        yield HSet(keys.network(candidate), {"project_id": project_id})
        return candidate

    def _on_set_network_host(self, spec):
        vlan_interface = yield EnsureVlan(spec.vlan, self.config.bridge_interface)
        yield EnsureBridge(spec.bridge, vlan_interface, f"{spec.gateway}/{_prefixlen(spec)}")
        yield from self._update_dhcp(spec)

    def setup_compute_network(self, network_id: str):
        spec = self._spec(network_id)
        vlan_interface = yield EnsureVlan(spec.vlan, self.config.bridge_interface)
        yield EnsureBridge(spec.bridge, vlan_interface)


def _prefixlen(spec: NetworkSpec) -> int:
    return ipaddress.ip_network(spec.cidr).prefixlen


def make_manager(config: NetworkConfig, host: str = "") -> FlatManager:
    """The manager class ``config.manager`` names."""
    classes = {FLAT: FlatManager, FLATDHCP: FlatDHCPManager, VLAN: VlanManager}
    try:
        return classes[config.manager](config, host)
    except KeyError:
        raise InvalidParameterValue(f"unknown network manager {config.manager!r}; expected one of {', '.join(MANAGERS)}") from None
