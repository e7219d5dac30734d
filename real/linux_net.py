"""linux_net: the network driver of real mode (bridges, VLANs, dnsmasq, iptables).

The 2010 ``nova/network/linux_net.py`` rebuilt with today's tools: ``ip`` instead of
ifconfig/brctl/vconfig, the same dnsmasq command line (DNS switched off), the same
"confirmed" iptables rules. One method per network-driver effect of
``common.effects``; ``perform(effect)`` dispatches an effect object to its method, which
is what ``real.runner`` calls.

Features
========
* Every command can run inside a named network namespace (``ip netns exec NS ...``), so
  a test or a one-machine cloud keeps all of it away from the host's interfaces and
  iptables.
* Every method is idempotent, so a redelivered message or a retry is safe:

  - links and addresses are checked before they are created (``ip -j``);
  - iptables rules are "confirmed" as in 2010: ``iptables -D`` (repeated until the rule
    is absent, so duplicates left by anyone collapse), then ``iptables -I``. Ensuring
    twice leaves exactly one rule, at the top of its chain;
  - removals treat "already gone" as success.
* Bridges: forward delay 0, STP off, optional enslaved interface and gateway address,
  FORWARD accepted in and out of the bridge (AUSTIN ``ensure_bridge``).
* DHCP: one dnsmasq per bridge, the 2010 command line adapted::

      dnsmasq --strict-order --bind-interfaces --conf-file=
              --pid-file=STATE/nova-BR.pid --listen-address=GATEWAY
              --except-interface=lo --dhcp-range=DHCP_START,static,LEASEs
              --dhcp-hostsfile=STATE/nova-BR.conf
              (--leasefile-ro --dhcp-script=SCRIPT | --dhcp-leasefile=STATE/nova-BR.leases)
              --port=0

  ``--port=0`` turns DNS off, so it never fights another resolver for port 53. Hosts
  lines are ``mac,hostname.novalocal,ip``. ``update_dhcp`` rewrites the hosts file and
  sends SIGHUP to the dnsmasq named by the pid file when that process is alive and its
  command line contains our hosts file (AUSTIN's check); otherwise, or when the command
  line itself must change (another gateway, start or lease time), it starts a new one.
  With a dhcp script dnsmasq calls it as ``SCRIPT add|old|del MAC IP HOSTNAME`` (and
  ``SCRIPT init`` at start, whose output it reads as leases), as 2010's
  nova-dhcpbridge expected.
* Floating addresses (/32 on an interface), their DNAT/SNAT and the hard-coded "default
  security group" FORWARD rules (ICMP, tcp 22/80/443, udp 1194), the cloudpipe VPN
  forward, and the network host's NAT.
* ``vlan_supported()`` probes the kernel once (in a throw-away network namespace).
* ``commands``: every argv run, in order (signals sent to dnsmasq appear as
  ``["kill", "-HUP", PID]``), for tests and debugging.

Not supported
=============
* 802.1q VLAN interfaces where the kernel lacks ``8021q`` (as on the CI machines):
  ``ensure_vlan`` raises NetworkDriverError saying so. Bridge ``vlan_filtering`` is not
  used as a substitute.
* ``use_nova_chains``: rules go straight into the built-in chains (FORWARD, nat
  PREROUTING/POSTROUTING), as with 2010's default; there is no nova_* chain set-up.
* The metadata DNAT of AUSTIN ``init_host`` (169.254.169.254:80 to the API host) and its
  MASQUERADE rule: init_host_nat does the SNAT and the within-range ACCEPT only.
* Removing a VPN forward or the host NAT (2010 had no such operation either).
* IPv6, security groups beyond the hard-coded ports, DNS from dnsmasq.
* Creating the network namespace: it must exist (the deployer or the test makes it).
* Reaping dnsmasq: it daemonizes, so PID 1 reaps it; where PID 1 does not reap orphans
  (some containers) a stopped dnsmasq lingers as a zombie for a while. Zombies count as
  stopped.

Configuration (the *Connection string* of this driver)
======================================================
``LinuxNet(state_dir, namespace=None, dhcp_script=None, public_interface="eth0")``

* ``state_dir``: where the per-bridge dnsmasq files live (2010 ``networks_path``):
  ``nova-<bridge>.conf`` (hosts), ``.pid`` and ``.leases``. Created (0755) if missing.
  dnsmasq drops privileges (to ``nobody``) and rereads the hosts file as that user, so
  ``state_dir`` and every directory above it must be searchable by others;
  ``update_dhcp`` checks that and raises NetworkDriverError otherwise.
* ``namespace``: name of an existing network namespace (``ip netns list``) to run every
  command in; None means the caller's own.
* ``dhcp_script``: absolute path of the lease script (2010 ``dhcpbridge`` flag); None
  means dnsmasq keeps a leases file instead.
* ``public_interface``: the interface floating addresses go on when a call names none
  (2010 flag ``public_interface``).
* ``timeout``: seconds any one command may take (default 30).

Needs root (CAP_NET_ADMIN) and the tools ``ip``, ``iptables``, ``dnsmasq`` and
``unshare``; ``real/setup/linux_net.sh`` installs them on Debian.

Failure
=======
Every failure raises ``common.errors.NetworkDriverError`` whose message names the
command (as a shell line), its exit status and its stderr. Nothing is rolled back: what
succeeded stays, and since every method is idempotent the remedy is to call it again.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
from typing import Any

from common.effects import (
    BindFloating,
    DhcpHost,
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

#: 2010's hard-coded "default security group" for floating addresses.
DEFAULT_PORTS = (("tcp", 80), ("tcp", 22), ("udp", 1194), ("tcp", 443))
#: The port the project's OpenVPN (cloudpipe) listens on inside its instance.
VPN_PRIVATE_PORT = 1194

_TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
# What iptables -D says (exit status 1) when the rule, or its chain, is not there.
_RULE_ABSENT = ("does a matching rule exist", "No chain/target/match by that name", "does not exist")
_STOP_WAIT = 5.0  # seconds to wait for dnsmasq after SIGTERM (and again after SIGKILL)
_START_WAIT = 5.0  # seconds to wait for a started dnsmasq's pid file


class LinuxNet:
    """The real network driver, a ``common.performers.NetDriverPerformer``; see the
    module docstring. Thread-safe (one lock)."""

    def __init__(self, state_dir, namespace=None, dhcp_script=None, public_interface="eth0", *, timeout=30.0):
        self.state_dir = os.path.abspath(os.fspath(state_dir))
        self.namespace = namespace or None
        self.dhcp_script = os.path.abspath(os.fspath(dhcp_script)) if dhcp_script else None
        self.public_interface = public_interface
        self.timeout = timeout
        self.commands: list[list[str]] = []
        self._vlan_supported: bool | None = None
        self._tools: dict[str, str] = {}
        self._lock = threading.RLock()

    def __repr__(self):
        return f"LinuxNet(state_dir={self.state_dir!r}, namespace={self.namespace!r})"

    # -- dispatch -------------------------------------------------------------------

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

    # -- VLAN -----------------------------------------------------------------------

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
        ip = self._tool("ip")
        script = (
            f"{ip} link add novalab-probe type bridge && "
            f"{ip} link add link novalab-probe name novalab-vlan type vlan id 2"
        )
        result = self._exec([self._tool("unshare"), "--net", "sh", "-c", script], namespaced=False, check=False)
        if result.returncode == 0:
            return True
        if "Unknown device type" in result.stderr:
            return False
        raise self._error(result)

    def ensure_vlan(self, vlan, interface) -> str:
        """Create 802.1q interface ``vlan<vlan>`` on ``interface`` (if absent) and bring
        it up; returns its name.

        Failure: NetworkDriverError when the kernel has no 8021q (the message says so
        and nothing is created), when a link of that name exists but is not VLAN
        ``vlan`` of ``interface``, or when an ``ip`` command fails (e.g. no such
        ``interface``).
        """
        vlan = _int(vlan, "vlan", 1, 4094)
        name = f"vlan{vlan}"
        with self._lock:
            link = self._link(name)
            if link is None:
                if not self.vlan_supported():
                    raise NetworkDriverError(
                        f"cannot create {name} on {interface}: this kernel has no 802.1q VLAN "
                        "support (module 8021q), so `ip link add ... type vlan` is unavailable"
                    )
                self._ip("link", "add", "link", interface, "name", name, "type", "vlan", "id", str(vlan))
                link = self._link(name, must_exist=True)
            else:
                info = link.get("linkinfo", {})
                if info.get("info_kind") != "vlan" or info.get("info_data", {}).get("id") != vlan or link.get("link") not in (None, interface):
                    raise NetworkDriverError(f"{name} exists but is not VLAN {vlan} on {interface}: {info or link}")
            if "UP" not in link.get("flags", ()):
                self._ip("link", "set", "dev", name, "up")
            return name

    # -- bridge ---------------------------------------------------------------------

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
            addr = _interface(address, "bridge address")
        with self._lock:
            link = self._link(bridge)
            if link is None:
                self._ip("link", "add", "name", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
                link = self._link(bridge)
            elif link.get("linkinfo", {}).get("info_kind") != "bridge":
                raise NetworkDriverError(f"{bridge} exists but is not a bridge: {link.get('linkinfo', link)}")
            if interface:
                slave = self._link(interface, must_exist=True)
                if slave.get("master") != bridge:
                    self._ip("link", "set", "dev", interface, "master", bridge)
                if "UP" not in slave.get("flags", ()):
                    self._ip("link", "set", "dev", interface, "up")
            if address is not None and str(addr) not in self._addresses(bridge):
                extra = ("broadcast", "+") if addr.version == 4 else ()
                self._ip("addr", "add", str(addr), *extra, "dev", bridge)
            if "UP" not in link.get("flags", ()):
                self._ip("link", "set", "dev", bridge, "up")
            self._confirm("filter", "FORWARD", "-i", bridge, "-j", "ACCEPT")
            self._confirm("filter", "FORWARD", "-o", bridge, "-j", "ACCEPT")
            return bridge

    # -- DHCP -----------------------------------------------------------------------

    def hosts_file(self, bridge) -> str:
        return os.path.join(self.state_dir, f"nova-{bridge}.conf")

    def pid_file(self, bridge) -> str:
        return os.path.join(self.state_dir, f"nova-{bridge}.pid")

    def leases_file(self, bridge) -> str:
        return os.path.join(self.state_dir, f"nova-{bridge}.leases")

    def update_dhcp(self, bridge, gateway, dhcp_start, hosts, lease_seconds=120) -> int:
        """Write ``bridge``'s hosts file (``mac,hostname.novalocal,ip`` per host: DhcpHost
        objects or ``(mac, hostname, address)`` tuples) and make its dnsmasq serve it:
        SIGHUP the live dnsmasq named by the pid file when its command line contains
        our hosts file and is the one we would start now, otherwise stop it (if any)
        and start a new one. Returns the dnsmasq pid.

        Failure: NetworkDriverError, with nothing written, when an argument is malformed,
        when ``state_dir`` is not readable by dnsmasq's unprivileged user, or when
        ``bridge`` does not exist or lacks the ``gateway`` address; and when dnsmasq
        refuses to start (its stderr is in the message) or wrote no pid file within 5 s. The hosts file has been
        rewritten by then; call again once the cause is fixed.
        """
        gateway = str(_address(gateway, "gateway"))
        dhcp_start = str(_address(dhcp_start, "dhcp_start"))
        lease_seconds = _int(lease_seconds, "lease_seconds", 1, 2**31 - 1)
        lines = "".join(_host_line(h) + "\n" for h in hosts)
        with self._lock:
            self._prepare_state_dir()
            on_bridge = {str(ipaddress.ip_interface(a).ip) for a in self._addresses(bridge)}
            if gateway not in on_bridge:
                raise NetworkDriverError(
                    f"gateway {gateway} is not an address of {bridge} (it has {sorted(on_bridge) or 'none'}): "
                    "dnsmasq would serve nobody; ensure_bridge with the gateway address first"
                )
            conf = self.hosts_file(bridge)
            tmp = f"{conf}.tmp"
            with open(tmp, "w") as f:
                f.write(lines)
            os.chmod(tmp, 0o644)
            os.replace(tmp, conf)
            argv = self._dnsmasq_argv(bridge, gateway, dhcp_start, lease_seconds)
            pid = self._dnsmasq_pid(bridge)
            if pid is not None:
                if _cmdline(pid)[1:] == argv[1:]:
                    self._signal(pid, signal.SIGHUP)
                    return pid
                self._stop(bridge)
            return self._start_dnsmasq(bridge, argv)

    def stop_dhcp(self, bridge) -> bool:
        """Stop ``bridge``'s dnsmasq: SIGTERM every live dnsmasq whose command line
        names this bridge's hosts file (the pid file's and any stray one), wait up to
        5 s, SIGKILL what is left and wait again; remove the pid file. Returns whether
        one was running. The hosts and leases files stay (2010 left them too).

        Failure: NetworkDriverError when a process survives SIGKILL or cannot be
        signalled.
        """
        with self._lock:
            return self._stop(bridge)

    def dhcp_pid(self, bridge) -> int | None:
        """The pid of ``bridge``'s live dnsmasq per its pid file, or None."""
        with self._lock:
            return self._dnsmasq_pid(bridge)

    def _dnsmasq_argv(self, bridge, gateway, dhcp_start, lease_seconds):
        argv = [
            self._tool("dnsmasq"),
            "--strict-order",
            "--bind-interfaces",
            "--conf-file=",
            f"--pid-file={self.pid_file(bridge)}",
            f"--listen-address={gateway}",
            "--except-interface=lo",
            f"--dhcp-range={dhcp_start},static,{lease_seconds}s",
            f"--dhcp-hostsfile={self.hosts_file(bridge)}",
        ]
        if self.dhcp_script:
            argv += ["--leasefile-ro", f"--dhcp-script={self.dhcp_script}"]
        else:
            argv += [f"--dhcp-leasefile={self.leases_file(bridge)}"]
        return [*argv, "--port=0"]

    def _prepare_state_dir(self):
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        path = self.state_dir
        while True:
            mode = os.stat(path).st_mode
            if not mode & stat.S_IXOTH:
                raise NetworkDriverError(
                    f"dnsmasq rereads its hosts file as an unprivileged user, but {path} is mode "
                    f"{stat.S_IMODE(mode):04o} (not searchable by others); chmod o+x it or choose "
                    f"another state_dir than {self.state_dir}"
                )
            parent = os.path.dirname(path)
            if parent == path:
                return
            path = parent

    def _start_dnsmasq(self, bridge, argv) -> int:
        pid_file = self.pid_file(bridge)
        try:
            os.unlink(pid_file)
        except FileNotFoundError:
            pass
        self._exec(argv)  # dnsmasq checks its options, daemonizes, writes the pid file
        deadline = time.monotonic() + _START_WAIT
        while True:
            pid = self._dnsmasq_pid(bridge)
            if pid is not None:
                return pid
            if time.monotonic() > deadline:
                raise NetworkDriverError(
                    f"`{shlex.join(self._wrap(argv))}` exited 0 but no live dnsmasq is named by {pid_file} after {_START_WAIT:g} s"
                )
            time.sleep(0.02)

    def _dnsmasq_pid(self, bridge) -> int | None:
        try:
            with open(self.pid_file(bridge)) as f:
                pid = int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._is_ours(pid, bridge) else None

    def _is_ours(self, pid, bridge) -> bool:
        cmd = _cmdline(pid)
        if not cmd or os.path.basename(cmd[0]) != "dnsmasq" or not _alive(pid):
            return False
        return f"--dhcp-hostsfile={self.hosts_file(bridge)}" in cmd

    def _ours(self, bridge) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and self._is_ours(int(entry), bridge):
                pids.append(int(entry))
        return sorted(pids)

    def _stop(self, bridge) -> bool:
        pids = self._ours(bridge)
        for pid in pids:
            self._signal(pid, signal.SIGTERM)
        left = _wait_gone(pids, _STOP_WAIT)
        for pid in left:
            self._signal(pid, signal.SIGKILL)
        left = _wait_gone(left, _STOP_WAIT)
        if left:
            raise NetworkDriverError(f"dnsmasq of {bridge} (pids {left}) survived SIGTERM and SIGKILL")
        try:
            os.unlink(self.pid_file(bridge))
        except FileNotFoundError:
            pass
        return bool(pids)

    def _signal(self, pid, sig):
        self.commands.append(["kill", f"-{signal.Signals(sig).name[3:]}", str(pid)])
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as e:
            raise NetworkDriverError(f"`kill -{signal.Signals(sig).name[3:]} {pid}` failed: {e}") from None

    # -- floating addresses ---------------------------------------------------------

    def bind_floating(self, address, interface=None):
        """Add floating ``address`` (as /32 unless a prefix is given) to ``interface``
        (default ``public_interface``) unless it is already there.

        Failure: NetworkDriverError when the address is malformed or an ``ip`` command
        fails (e.g. the interface does not exist).
        """
        addr = _floating(address)
        interface = interface or self.public_interface
        with self._lock:
            if str(addr) not in self._addresses(interface):
                self._ip("addr", "add", str(addr), "dev", interface)

    def unbind_floating(self, address, interface=None):
        """Remove floating ``address`` from ``interface`` (default ``public_interface``);
        an absent address, or an absent interface, is success.

        Failure: NetworkDriverError when the address is malformed or ``ip`` fails
        otherwise.
        """
        addr = _floating(address)
        interface = interface or self.public_interface
        with self._lock:
            if self._link(interface) is not None and str(addr) in self._addresses(interface):
                self._ip("addr", "del", str(addr), "dev", interface)

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
                self._confirm(table, chain, *rule)

    def remove_floating_forward(self, floating, fixed):
        """Delete the rules of ensure_floating_forward; rules already gone are success.

        Failure: NetworkDriverError for a malformed address or when iptables fails for
        another reason than the rule being absent.
        """
        rules = _floating_rules(floating, fixed)
        with self._lock:
            for table, chain, *rule in rules:
                self._remove(table, chain, *rule)

    # -- VPN and host NAT -----------------------------------------------------------

    def ensure_vpn_forward(self, public_ip, port, private_ip):
        """Confirm ``FORWARD -d PRIVATE -p udp --dport 1194 -j ACCEPT`` and nat
        ``PREROUTING -d PUBLIC -p udp --dport PORT -j DNAT --to-destination
        PRIVATE:1194`` (the project's cloudpipe VPN).

        Failure: NetworkDriverError for a malformed address or port, or a failing
        iptables command.
        """
        public = _address(public_ip, "public_ip")
        private = _address(private_ip, "private_ip")
        port = _int(port, "vpn port", 1, 65535)
        with self._lock:
            self._confirm("filter", "FORWARD", "-d", f"{private}/32", "-p", "udp", "-m", "udp",
                          "--dport", str(VPN_PRIVATE_PORT), "-j", "ACCEPT")
            self._confirm("nat", "PREROUTING", "-d", f"{public}/32", "-p", "udp", "-m", "udp",
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
        source = _address(routing_source_ip, "routing_source_ip")
        with self._lock:
            self._confirm("nat", "POSTROUTING", "-s", str(net), "-j", "SNAT", "--to-source", str(source))
            self._confirm("nat", "POSTROUTING", "-s", str(net), "-d", str(net), "-j", "ACCEPT")

    # -- commands -------------------------------------------------------------------

    def _tool(self, name) -> str:
        path = self._tools.get(name)
        if path is None:
            path = shutil.which(name, path=_TOOL_PATH)
            if path is None:
                raise NetworkDriverError(f"`{name}` is not installed (real/setup/linux_net.sh installs it)")
            self._tools[name] = path
        return path

    def _wrap(self, argv):
        if self.namespace:
            return [self._tool("ip"), "netns", "exec", self.namespace, *argv]
        return list(argv)

    def _exec(self, argv, *, namespaced=True, check=True) -> subprocess.CompletedProcess:
        full = self._wrap(argv) if namespaced else list(argv)
        self.commands.append(full)
        env = dict(os.environ, LC_ALL="C")
        try:
            result = subprocess.run(full, capture_output=True, text=True, timeout=self.timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise NetworkDriverError(f"`{shlex.join(full)}` timed out after {self.timeout:g} s") from None
        except OSError as e:
            raise NetworkDriverError(f"`{shlex.join(full)}` could not run: {e}") from None
        if check and result.returncode != 0:
            raise self._error(result)
        return result

    @staticmethod
    def _error(result) -> NetworkDriverError:
        stderr = (result.stderr or "").strip() or "(no stderr)"
        return NetworkDriverError(f"`{shlex.join(result.args)}` failed with exit status {result.returncode}: {stderr}")

    def _ip(self, *args, check=True):
        return self._exec([self._tool("ip"), *args], check=check)

    def _link(self, name, must_exist=False) -> Any:
        result = self._ip("-j", "-d", "link", "show", "dev", name, check=False)
        if result.returncode != 0:
            if not must_exist and "does not exist" in result.stderr:
                return None
            raise self._error(result)
        return json.loads(result.stdout)[0]

    def _addresses(self, name) -> set[str]:
        result = self._ip("-j", "addr", "show", "dev", name)
        found = set()
        for link in json.loads(result.stdout):
            for a in link.get("addr_info", ()):
                if a.get("family") in ("inet", "inet6"):
                    found.add(str(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")))
        return found

    def _iptables(self, *args, check=True):
        return self._exec([self._tool("iptables"), "-w", "10", *args], check=check)

    def _remove(self, table, chain, *rule) -> int:
        """Delete the rule until iptables says it is absent; returns how many went."""
        removed = 0
        for _ in range(100):
            result = self._iptables("-t", table, "-D", chain, *rule, check=False)
            if result.returncode == 0:
                removed += 1
                continue
            if result.returncode == 1 and any(s in result.stderr for s in _RULE_ABSENT):
                return removed
            raise self._error(result)
        raise NetworkDriverError(f"iptables -t {table} -D {chain} {shlex.join(rule)}: still present after 100 deletions")

    def _confirm(self, table, chain, *rule):
        """2010's confirmed rule: delete (all copies), then insert at the top."""
        self._remove(table, chain, *rule)
        self._iptables("-t", table, "-I", chain, *rule)


# -- helpers ------------------------------------------------------------------------


def _int(value, what, low, high):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise NetworkDriverError(f"{what} must be an integer in {low}..{high}, not {value!r}")
    return number


def _address(value, what):
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise NetworkDriverError(f"{what} {value!r} is not an IP address") from None


def _interface(value, what):
    try:
        return ipaddress.ip_interface(str(value))
    except ValueError:
        raise NetworkDriverError(f"{what} {value!r} is not an address in CIDR form") from None


def _floating(value):
    text = str(value)
    return _interface(text if "/" in text else f"{text}/32", "floating address")


def _floating_rules(floating, fixed):
    floating = _address(floating, "floating address")
    fixed = _address(fixed, "fixed address")
    rules = [
        ("nat", "PREROUTING", "-d", f"{floating}/32", "-j", "DNAT", "--to-destination", str(fixed)),
        ("nat", "POSTROUTING", "-s", f"{fixed}/32", "-j", "SNAT", "--to-source", str(floating)),
        ("filter", "FORWARD", "-d", f"{fixed}/32", "-p", "icmp", "-j", "ACCEPT"),
    ]
    for proto, port in DEFAULT_PORTS:
        rules.append(("filter", "FORWARD", "-d", f"{fixed}/32", "-p", proto, "-m", proto, "--dport", str(port), "-j", "ACCEPT"))
    return rules


def _host_line(host) -> str:
    if isinstance(host, DhcpHost) or hasattr(host, "mac"):  # DhcpHost or look-alike
        mac, hostname, address = host.mac, host.hostname, host.address
    else:
        mac, hostname, address = host
    mac, hostname = str(mac).lower(), str(hostname)
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise NetworkDriverError(f"DHCP host {hostname!r}: {mac!r} is not a MAC address")
    if not hostname or any(c in hostname for c in ", \t\r\n#"):
        raise NetworkDriverError(f"DHCP host {mac}: {hostname!r} is not a usable host name")
    if not hostname.endswith(".novalocal"):
        hostname += ".novalocal"
    return f"{mac},{hostname},{_address(address, 'DHCP host address')}"


def _cmdline(pid) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []


def _alive(pid) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_gone(pids, seconds) -> list[int]:
    deadline = time.monotonic() + seconds
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [p for p in left if _alive(p)]
    return left
