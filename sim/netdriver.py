"""A fake linux_net per simulated host: the network state in memory.

*Features*: bridges (with their interface and address), vlan interfaces, the DHCP
hosts file per bridge and whether its dnsmasq runs, floating addresses bound to an
interface, NAT and forward rules as sets; every operation takes a time drawn from the
scenario's ``timing.network_driver``; ``ensure_*`` calls that found their work already
done are counted in ``duplicates`` (an ensure applied twice must change nothing).

*What it does not model*: packets. No DHCP client ever asks for a lease, so nothing reports
leases or releases (deallocated addresses come back by the reclaim timeout); no
kernel limits (8021q is always there), no iptables ordering, no failures (the fault plan
has no network-driver faults yet).
"""

from __future__ import annotations

from collections import Counter


class FakeNetDriver:
    """One host's linux_net; a ``common.performers.NetDriverPerformer``."""

    def __init__(self, env, host: str, latency, rng):
        self.env = env
        self.host = host
        self.latency = latency
        self.rng = rng
        self.bridges: dict[str, dict] = {}
        self.vlans: dict[str, int] = {}
        self.dhcp: dict[str, tuple] = {}  # bridge -> hosts
        self.dnsmasq_running: set[str] = set()
        self.floating: set[tuple[str, str]] = set()
        self.rules: set[tuple] = set()
        self.operations: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()

    def perform(self, effect):
        """SimPy generator: apply ``effect`` after the drawn latency; returns its result."""
        yield self.env.timeout(self.latency.sample(self.rng))
        kind = type(effect).__name__
        self.operations[kind] += 1
        changed, result = getattr(self, f"_{kind}")(effect)
        if not changed:
            self.duplicates[kind] += 1
        return result

    def _EnsureVlan(self, e):
        name = f"vlan{e.vlan}"
        changed = name not in self.vlans
        self.vlans[name] = e.vlan
        return changed, name

    def _EnsureBridge(self, e):
        want = {"interface": e.interface, "address": e.address}
        have = self.bridges.get(e.bridge, {})
        merged = {k: want[k] or have.get(k) for k in want}
        changed = merged != have
        self.bridges[e.bridge] = merged
        for rule in (("FORWARD", "-i", e.bridge), ("FORWARD", "-o", e.bridge)):
            self.rules.add(rule)
        return changed, e.bridge

    def _UpdateDhcp(self, e):
        changed = self.dhcp.get(e.bridge) != e.hosts or e.bridge not in self.dnsmasq_running
        self.dhcp[e.bridge] = e.hosts
        self.dnsmasq_running.add(e.bridge)
        return changed, None

    def _StopDhcp(self, e):
        changed = e.bridge in self.dnsmasq_running
        self.dnsmasq_running.discard(e.bridge)
        return changed, changed

    def _BindFloating(self, e):
        key = (e.address, e.interface)
        changed = key not in self.floating
        self.floating.add(key)
        return changed, None

    def _UnbindFloating(self, e):
        key = (e.address, e.interface)
        changed = key in self.floating
        self.floating.discard(key)
        return changed, None

    def _floating_rules(self, e):
        return {("DNAT", e.floating, e.fixed), ("SNAT", e.fixed, e.floating), ("FORWARD", e.fixed)}

    def _EnsureFloatingForward(self, e):
        rules = self._floating_rules(e)
        changed = not rules <= self.rules
        self.rules |= rules
        return changed, None

    def _RemoveFloatingForward(self, e):
        rules = self._floating_rules(e)
        changed = bool(rules & self.rules)
        self.rules -= rules
        return changed, None

    def _EnsureVpnForward(self, e):
        rule = ("VPN", e.public_ip, e.port, e.private_ip)
        changed = rule not in self.rules
        self.rules.add(rule)
        return changed, None

    def _InitHostNat(self, e):
        rule = ("NAT", e.fixed_range, e.routing_source_ip)
        changed = rule not in self.rules
        self.rules.add(rule)
        return changed, None
