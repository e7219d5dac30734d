"""LinuxNet, the network driver of real mode: VLANs, bridges, floating addresses, NAT;
DHCP through ``Dnsmasq``. The package docstring says what it does and needs."""

from __future__ import annotations

import ipaddress
import os
import threading

from common.effects import (
    BindFloating,
    EnsureBridge,
    EnsureFloatingForward,
    EnsureVlan,
    EnsureVpnForward,
    InitHostNat,
    RemoveFloatingForward,
    StopDhcp,
    UnbindFloating,
    UpdateDhcp,
)
from common.errors import NetworkDriverError
from real.linux_net.arguments import check_address, check_int, check_interface
from real.linux_net.commands import Commands
from real.linux_net.dhcp import Dnsmasq

#: 2010's hard-coded "default security group" for floating addresses.
DEFAULT_PORTS = (("tcp", 80), ("tcp", 22), ("udp", 1194), ("tcp", 443))
#: The port the project's OpenVPN (cloudpipe) listens on inside its instance.
VPN_PRIVATE_PORT = 1194


class LinuxNet:
    """The real network driver, a ``common.performers.NetDriverPerformer``; see the
    package docstring. Thread-safe (one lock)."""

    def __init__(self, state_dir, namespace=None, dhcp_script=None, public_interface="eth0", *, timeout=30.0):
        self.state_dir = os.path.abspath(os.fspath(state_dir))
        self.namespace = namespace or None
        self.dhcp_script = os.path.abspath(os.fspath(dhcp_script)) if dhcp_script else None
        self.public_interface = public_interface
        self.timeout = timeout
        self._vlan_supported: bool | None = None
        self._lock = threading.RLock()
        self._run = Commands(self.namespace, timeout)
        #: Every argv run, in order (the package docstring says more).
        self.commands = self._run.commands
        self._dhcp = Dnsmasq(self._run, self.state_dir, self.dhcp_script, self._lock)

    def __repr__(self):
        return f"LinuxNet(state_dir={self.state_dir!r}, namespace={self.namespace!r})"

    # -- dispatch --------------------------------------------------------------

    def perform(self, effect):
        """Perform one network-driver effect; returns what its method returns.

        Raises TypeError for an object that is not a network-driver effect, and
        NetworkDriverError when the operation fails.
        """
        kind = type(effect)
        if kind is EnsureVlan:
            return self.ensure_vlan(effect.vlan, effect.interface)
        if kind is EnsureBridge:
            return self.ensure_bridge(effect.bridge, effect.interface, effect.address)
        if kind is UpdateDhcp:
            return self.update_dhcp(effect.bridge, effect.gateway, effect.dhcp_start, effect.hosts, effect.lease_seconds)
        if kind is StopDhcp:
            return self.stop_dhcp(effect.bridge)
        if kind is BindFloating:
            return self.bind_floating(effect.address, effect.interface)
        if kind is UnbindFloating:
            return self.unbind_floating(effect.address, effect.interface)
        if kind is EnsureFloatingForward:
            return self.ensure_floating_forward(effect.floating, effect.fixed)
        if kind is RemoveFloatingForward:
            return self.remove_floating_forward(effect.floating, effect.fixed)
        if kind is EnsureVpnForward:
            return self.ensure_vpn_forward(effect.public_ip, effect.port, effect.private_ip)
        if kind is InitHostNat:
            return self.init_host_nat(effect.fixed_range, effect.routing_source_ip)
        raise TypeError(f"LinuxNet cannot perform {effect!r}: not a network-driver effect")

    # -- VLAN ------------------------------------------------------------------

    def vlan_supported(self) -> bool:
        """Whether this kernel can make 802.1q interfaces (module 8021q).

        Probed once: True when ``/proc/net/vlan`` exists (module loaded), otherwise by
        creating a bridge and a VLAN on it in a throw-away network namespace
        (``unshare --net``), which leaves nothing behind. Raises NetworkDriverError
        when the probe itself fails for another reason (not root, no ``unshare``).
        """
        with self._lock:
            if self._vlan_supported is None:
                self._vlan_supported = self._probe_vlan()
            return self._vlan_supported

    def _probe_vlan(self) -> bool:
        if os.path.isdir("/proc/net/vlan"):
            return True
        ip = self._run.tool("ip")
        script = (
            f"{ip} link add novalab-probe type bridge && "
            f"{ip} link add link novalab-probe name novalab-vlan type vlan id 2"
        )
        result = self._run.run([self._run.tool("unshare"), "--net", "sh", "-c", script], namespaced=False, check=False)
        if result.returncode == 0:
            return True
        if "Unknown device type" in result.stderr:
            return False
        raise self._run.error(result)

    def ensure_vlan(self, vlan, interface) -> str:
        """Create 802.1q interface ``vlan<vlan>`` on ``interface`` (if absent) and bring
        it up; returns its name.

        Failure: NetworkDriverError when the kernel has no 8021q (the message says so
        and nothing is created), when a link of that name exists but is not VLAN
        ``vlan`` of ``interface``, or when an ``ip`` command fails (e.g. no such
        ``interface``).
        """
        vlan = check_int(vlan, "vlan", 1, 4094)
        name = f"vlan{vlan}"
        with self._lock:
            link = self._run.link(name)
            if link is None:
                if not self.vlan_supported():
                    raise NetworkDriverError(
                        f"cannot create {name} on {interface}: this kernel has no 802.1q VLAN "
                        "support (module 8021q), so `ip link add ... type vlan` is unavailable"
                    )
                self._run.ip("link", "add", "link", interface, "name", name, "type", "vlan", "id", str(vlan))
                link = self._run.link(name, must_exist=True)
            else:
                info = link.get("linkinfo", {})
                if info.get("info_kind") != "vlan" or info.get("info_data", {}).get("id") != vlan or link.get("link") not in (None, interface):
                    raise NetworkDriverError(f"{name} exists but is not VLAN {vlan} on {interface}: {info or link}")
            if "UP" not in link.get("flags", ()):
                self._run.ip("link", "set", "dev", name, "up")
            return name

    # -- bridge ----------------------------------------------------------------

    def ensure_bridge(self, bridge, interface=None, address=None) -> str:
        """Create ``bridge`` (forward delay 0, STP off) if absent, enslave ``interface``
        and bring it up if given, add ``address`` (CIDR, e.g. ``10.0.0.1/24``, with its
        broadcast) if given and missing, bring the bridge up, and confirm the rules
        ``FORWARD -i BRIDGE -j ACCEPT`` and ``FORWARD -o BRIDGE -j ACCEPT``. Returns
        ``bridge``.

        Failure: NetworkDriverError when ``address`` is not an interface address, when
        a link named ``bridge`` exists but is no bridge, or when an ``ip``/``iptables``
        command fails (e.g. no such ``interface``); steps already done stay done.
        """
        if address is not None:
            addr = check_interface(address, "bridge address")
        with self._lock:
            link = self._run.link(bridge)
            if link is None:
                self._run.ip("link", "add", "name", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
                link = self._run.link(bridge)
            elif link.get("linkinfo", {}).get("info_kind") != "bridge":
                raise NetworkDriverError(f"{bridge} exists but is not a bridge: {link.get('linkinfo', link)}")
            if interface:
                slave = self._run.link(interface, must_exist=True)
                if slave.get("master") != bridge:
                    self._run.ip("link", "set", "dev", interface, "master", bridge)
                if "UP" not in slave.get("flags", ()):
                    self._run.ip("link", "set", "dev", interface, "up")
            if address is not None and str(addr) not in self._run.addresses(bridge):
                extra = ("broadcast", "+") if addr.version == 4 else ()
                self._run.ip("addr", "add", str(addr), *extra, "dev", bridge)
            if "UP" not in link.get("flags", ()):
                self._run.ip("link", "set", "dev", bridge, "up")
            self._run.confirm("filter", "FORWARD", "-i", bridge, "-j", "ACCEPT")
            self._run.confirm("filter", "FORWARD", "-o", bridge, "-j", "ACCEPT")
            return bridge

    # -- DHCP (dnsmasq, see dhcp.py) -------------------------------------------

    def hosts_file(self, bridge) -> str:
        return self._dhcp.hosts_file(bridge)

    def pid_file(self, bridge) -> str:
        return self._dhcp.pid_file(bridge)

    def leases_file(self, bridge) -> str:
        return self._dhcp.leases_file(bridge)

    def update_dhcp(self, bridge, gateway, dhcp_start, hosts, lease_seconds=120) -> int:
        """Write ``bridge``'s hosts file and make its dnsmasq serve it; see
        ``Dnsmasq.update``. Returns the dnsmasq pid."""
        return self._dhcp.update(bridge, gateway, dhcp_start, hosts, lease_seconds)

    def stop_dhcp(self, bridge) -> bool:
        """Stop ``bridge``'s dnsmasq; see ``Dnsmasq.stop``. Returns whether one was running."""
        return self._dhcp.stop(bridge)

    def dhcp_pid(self, bridge) -> int | None:
        """The pid of ``bridge``'s live dnsmasq per its pid file, or None."""
        return self._dhcp.pid(bridge)

    # -- floating addresses ----------------------------------------------------

    def bind_floating(self, address, interface=None):
        """Add floating ``address`` (as /32 unless a prefix is given) to ``interface``
        (default ``public_interface``) unless it is already there.

        Failure: NetworkDriverError when the address is malformed or an ``ip`` command
        fails (e.g. the interface does not exist).
        """
        addr = _floating(address)
        interface = interface or self.public_interface
        with self._lock:
            if str(addr) not in self._run.addresses(interface):
                self._run.ip("addr", "add", str(addr), "dev", interface)

    def unbind_floating(self, address, interface=None):
        """Remove floating ``address`` from ``interface`` (default ``public_interface``);
        an absent address, or an absent interface, is success.

        Failure: NetworkDriverError when the address is malformed or ``ip`` fails
        otherwise.
        """
        addr = _floating(address)
        interface = interface or self.public_interface
        with self._lock:
            if self._run.link(interface) is not None and str(addr) in self._run.addresses(interface):
                self._run.ip("addr", "del", str(addr), "dev", interface)

    def ensure_floating_forward(self, floating, fixed):
        """Confirm the rules that NAT ``floating`` to ``fixed`` and open the default
        ports: nat ``PREROUTING -d FLOATING -j DNAT --to-destination FIXED``, nat
        ``POSTROUTING -s FIXED -j SNAT --to-source FLOATING``, ``FORWARD -d FIXED -p
        icmp -j ACCEPT`` and ``FORWARD -d FIXED -p PROTO --dport PORT -j ACCEPT`` for
        tcp 80, tcp 22, udp 1194, tcp 443.

        Failure: NetworkDriverError for a malformed address or a failing iptables
        command; rules confirmed before it stay.
        """
        rules = _floating_rules(floating, fixed)
        with self._lock:
            for table, chain, *rule in rules:
                self._run.confirm(table, chain, *rule)

    def remove_floating_forward(self, floating, fixed):
        """Delete the rules of ensure_floating_forward; rules already gone are success.

        Failure: NetworkDriverError for a malformed address or when iptables fails for
        another reason than the rule being absent.
        """
        rules = _floating_rules(floating, fixed)
        with self._lock:
            for table, chain, *rule in rules:
                self._run.remove(table, chain, *rule)

    # -- VPN and host NAT ------------------------------------------------------

    def ensure_vpn_forward(self, public_ip, port, private_ip):
        """Confirm ``FORWARD -d PRIVATE -p udp --dport 1194 -j ACCEPT`` and nat
        ``PREROUTING -d PUBLIC -p udp --dport PORT -j DNAT --to-destination
        PRIVATE:1194`` (the project's cloudpipe VPN).

        Failure: NetworkDriverError for a malformed address or port, or a failing
        iptables command.
        """
        public = check_address(public_ip, "public_ip")
        private = check_address(private_ip, "private_ip")
        port = check_int(port, "vpn port", 1, 65535)
        with self._lock:
            self._run.confirm("filter", "FORWARD", "-d", f"{private}/32", "-p", "udp", "-m", "udp",
                          "--dport", str(VPN_PRIVATE_PORT), "-j", "ACCEPT")
            self._run.confirm("nat", "PREROUTING", "-d", f"{public}/32", "-p", "udp", "-m", "udp",
                          "--dport", str(port), "-j", "DNAT", "--to-destination", f"{private}:{VPN_PRIVATE_PORT}")

    def init_host_nat(self, fixed_range, routing_source_ip):
        """Confirm nat ``POSTROUTING -s RANGE -j SNAT --to-source ROUTING_SOURCE_IP`` and
        then nat ``POSTROUTING -s RANGE -d RANGE -j ACCEPT``, so the ACCEPT sits above
        the SNAT and traffic within the fixed range keeps its addresses.

        Failure: NetworkDriverError for a malformed range or address, or a failing
        iptables command.
        """
        try:
            net = ipaddress.ip_network(fixed_range, strict=False)
        except ValueError as e:
            raise NetworkDriverError(f"fixed_range {fixed_range!r} is not a network: {e}") from None
        source = check_address(routing_source_ip, "routing_source_ip")
        with self._lock:
            self._run.confirm("nat", "POSTROUTING", "-s", str(net), "-j", "SNAT", "--to-source", str(source))
            self._run.confirm("nat", "POSTROUTING", "-s", str(net), "-d", str(net), "-j", "ACCEPT")


def _floating(value):
    text = str(value)
    return check_interface(text if "/" in text else f"{text}/32", "floating address")


def _floating_rules(floating, fixed):
    floating = check_address(floating, "floating address")
    fixed = check_address(fixed, "fixed address")
    rules = [
        ("nat", "PREROUTING", "-d", f"{floating}/32", "-j", "DNAT", "--to-destination", str(fixed)),
        ("nat", "POSTROUTING", "-s", f"{fixed}/32", "-j", "SNAT", "--to-source", str(floating)),
        ("filter", "FORWARD", "-d", f"{fixed}/32", "-p", "icmp", "-j", "ACCEPT"),
    ]
    for proto, port in DEFAULT_PORTS:
        rules.append(("filter", "FORWARD", "-d", f"{fixed}/32", "-p", proto, "-m", proto, "--dport", str(port), "-j", "ACCEPT"))
    return rules
