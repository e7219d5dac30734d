"""The network of one ``run-scenario --mode real`` run with a DHCP manager (flatdhcp,
vlan): network namespaces the run creates and removes, so the network host's bridges,
dnsmasq, floating addresses and NAT rules and every compute host's bridges are real
and the machine's own links, addresses, routes and iptables are never touched.

Topology (2010's layout, one namespace per machine)
---------------------------------------------------
``<id>`` is ``nl`` and four hex digits, unused among the machine's namespaces.

* ``<id>-fab``, the fabric (the site's switches): bridge ``fab0``, the layer-2 segment
  every host's ``bridge_interface`` is a port of; bridge ``pub0``, the public segment,
  holding the outside address (``OUTSIDE``) with a route to the floating range via the
  floating host; without 8021q, a bridge ``v<N>`` per VLAN in use
  (real.linux_net.untagged).
* ``<id>-<host>`` for every network and compute host: ``<bridge_interface>`` (eth0),
  a veth whose peer ``h<i>`` is a port of ``fab0``. Network hosts also get
  ``<public_interface>`` (when it is another interface) on ``pub0`` with a public
  address, a default route to the outside and IPv4 forwarding on. Each daemon's
  linux_net works in its host's namespace (``NOVALAB_NETNS``), its dnsmasq files in
  ``<state>/<host>`` (a directory under the system's temporary directory, searchable by
  dnsmasq's unprivileged user).
* ``<id>-g-<instance>``, a guest end per instance, made and removed by its compute
  daemon (real.guests).

Every name inside a namespace is private to it; the names of the fabric's ports are
short (``h<i>``, ``h<i>p``, ``<host>.<vlan>``), all under the 15-character limit.

Lifetime
--------
``create()`` records the run in ``/run/novalab/netns/<id>.json`` (owner pid and its
start time) before it makes anything; ``remove()`` kills every process left in the
run's namespaces (dnsmasq, DHCP clients), deletes the namespaces (their veths go with
them) and the state directory, then the record. It runs on success, failure and
Ctrl-C (the run's ``finally``); a run that was SIGKILLed leaves its record behind, and
the next ``create()`` removes what a record with a dead owner names.

Needs root and ``ip``, ``iptables``, ``dnsmasq``, ``busybox`` (udhcpc, ping) and
``nsenter`` (real/setup/linux_net.sh); otherwise the run refuses to start, saying what
is missing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from common import assembly
from common.errors import NetworkDriverError
from real.linux_net.commands import Commands
from real.linux_net.dhcp import alive, wait_gone
from real.linux_net.untagged import IFNAME_MAX
from real.startup import StartupError

#: Where each live run records its namespaces' owner, for the leftover clean-up.
REGISTRY = Path("/run/novalab/netns")
#: The tools the run's network needs (``busybox`` for udhcpc and ping).
TOOLS = ("ip", "iptables", "dnsmasq", "busybox", "nsenter", "unshare")
#: Public segments to choose from: the first that overlaps neither range of the scenario.
PUBLIC_CANDIDATES = ("100.64.0.0/24", "100.64.1.0/24", "198.18.0.0/24", "198.19.0.0/24")
#: Tries to draw a run id no namespace uses yet (65536 ids: a clash is rare).
ID_DRAWS = 20
#: Wall seconds ``remove()`` waits for the killed processes to go.
REMOVE_WAIT = 5.0
FABRIC_BRIDGE, PUBLIC_BRIDGE = "fab0", "pub0"


def for_run(scenario, roster) -> RunNetwork | None:
    """The run's network when the scenario's manager does network work, else None
    (flat: no bridge or DHCP, and floating addresses kept in the records)."""
    if scenario.cloud.network.manager == "flat":
        return None
    return RunNetwork(scenario, roster)


def daemon_settings(network: RunNetwork | None) -> dict:
    """The run's shared daemon configuration for ``network``: the network for real, in
    the namespace of the (first) network host; each daemon's environment names its own
    (``daemon_env``). None: nothing (real.site.run_config keeps it in the records)."""
    if network is None:
        return {}
    return {"bind_floating": True, "net_records_only": False, "netns": network.namespace(network.network_hosts[0])}


class RunNetwork:
    """The namespaces of one run (module docstring)."""

    def __init__(self, scenario, roster):
        net = scenario.cloud.network
        self.manager = net.manager
        self.bridge_interface = net.bridge_interface
        self.public_interface = net.public_interface
        self.floating_range = net.floating_range
        self.fixed_range = net.fixed_range
        self.hosts = [spec.host for spec in roster if spec.topic in (assembly.NETWORK, assembly.COMPUTE)]
        self.network_hosts = [spec.host for spec in roster if spec.topic == assembly.NETWORK]
        self.id = self._draw_id()
        self.created = False  # the registry names this run (create() got that far)
        self.state: Path | None = None
        self.untagged = False
        #: Steps the kernel cannot do, each {"step", "reason"}, for the summary.
        self.skipped: list[dict] = []
        self.public = ""  # the public segment's CIDR, chosen by create()
        self._root = Commands(None)

    # -- names ---------------------------------------------------------------------

    @property
    def fabric(self) -> str:
        return f"{self.id}-fab"

    def namespace(self, host: str) -> str:
        return f"{self.id}-{host}"

    @property
    def guest_prefix(self) -> str:
        return f"{self.id}-g"

    def state_dir(self, host: str) -> Path:
        assert self.state is not None
        return self.state / host

    def public_address(self, host: str) -> ipaddress.IPv4Interface:
        index = self.network_hosts.index(host) + 1
        net = ipaddress.ip_network(self.public)
        return ipaddress.IPv4Interface(f"{net[index]}/{net.prefixlen}")

    @property
    def outside(self) -> ipaddress.IPv4Interface:
        net = ipaddress.ip_network(self.public)
        return ipaddress.IPv4Interface(f"{net[-2]}/{net.prefixlen}")

    def daemon_env(self, kind: str, host: str) -> dict:
        """The environment that puts ``host``'s daemon in its namespace."""
        if host not in self.hosts:
            return {}  # the scheduler does no network work
        env = {"NOVALAB_NETNS": self.namespace(host), "NOVALAB_NET_STATE_DIR": str(self.state_dir(host))}
        if self.untagged:
            env["NOVALAB_UNTAGGED_VLANS"] = self.fabric
        if kind == assembly.COMPUTE:
            env["NOVALAB_GUEST_ENDS"] = self.guest_prefix
        return env

    def describe(self) -> dict:
        """What the run made, for ``network.json`` and the summary."""
        return {"id": self.id, "fabric": self.fabric, "manager": self.manager,
                "hosts": {host: self.namespace(host) for host in self.hosts},
                "bridge_interface": self.bridge_interface, "public_interface": self.public_interface,
                "public_segment": self.public, "outside": str(self.outside) if self.public else "",
                "guests": f"{self.guest_prefix}-<instance>",
                "state_dir": str(self.state), "skipped": list(self.skipped)}

    # -- creating ------------------------------------------------------------------

    def create(self):
        """Check root and tools, remove a crashed run's leftovers, then make the
        namespaces and links (module docstring). Raises StartupError naming what is
        missing; whatever was made by then is removed by ``remove()``."""
        self._preflight()
        self.public = self._public_segment()
        remove_leftovers()
        if any(name.startswith(f"{self.id}-") for name in list_namespaces()):
            raise StartupError(f"another run took the network namespace prefix {self.id} meanwhile; start again")
        self.state = Path(tempfile.mkdtemp(prefix=f"novalab-{self.id}-"))
        self.state.chmod(0o755)  # dnsmasq rereads its hosts file as an unprivileged user
        REGISTRY.mkdir(parents=True, exist_ok=True)
        (REGISTRY / f"{self.id}.json").write_text(json.dumps(
            {"pid": os.getpid(), "started": _start_time(os.getpid()), "state": str(self.state)}))
        self.created = True
        try:
            self._make_fabric()
            for index, host in enumerate(self.hosts, 1):
                self._make_host(index, host)
            if self.manager == "vlan":
                self._decide_vlans()
        except NetworkDriverError as e:
            raise StartupError(f"cannot build the run's network: {e}") from None

    def _preflight(self):
        if os.geteuid() != 0:
            raise StartupError(f"a real run with the {self.manager} manager builds its network in network "
                               "namespaces of its own, which needs root (run it as root, or use the flat manager)")
        missing = [tool for tool in TOOLS if not _which(tool)]
        if missing:
            raise StartupError(f"a real run with the {self.manager} manager needs {', '.join(missing)} "
                               "(bash real/setup/linux_net.sh installs them)")
        for name, what in ((self.bridge_interface, "bridge_interface"), (self.public_interface, "public_interface")):
            if not 0 < len(name) <= IFNAME_MAX or any(c in name for c in "/: \t"):
                raise StartupError(f"cloud.network.{what} {name!r} is not an interface name (at most {IFNAME_MAX} "
                                   "characters, no '/', ':' or spaces)")

    def _draw_id(self) -> str:
        taken = {name.split("-", 1)[0] for name in list_namespaces()}
        for _ in range(ID_DRAWS):
            candidate = f"nl{secrets.token_hex(2)}"
            if candidate not in taken and not (REGISTRY / f"{candidate}.json").exists():
                return candidate
        raise StartupError(f"no unused run id for the network namespaces after {ID_DRAWS} draws")

    def _add_namespace(self, name: str) -> Commands:
        self._root.ip("netns", "add", name)
        inside = Commands(name)
        inside.ip("link", "set", "lo", "up")
        return inside

    def _bridge(self, fabric: Commands, name: str, address: str | None = None):
        fabric.ip("link", "add", "name", name, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        if address:
            fabric.ip("addr", "add", address, "dev", name)
        fabric.ip("link", "set", "dev", name, "up")

    def _make_fabric(self):
        fabric = self._add_namespace(self.fabric)
        self._bridge(fabric, FABRIC_BRIDGE)
        if self._has_public_segment():
            self._bridge(fabric, PUBLIC_BRIDGE, str(self.outside))
            if self.floating_range and assembly.FLOATING_HOST in self.network_hosts:
                via = self.public_address(assembly.FLOATING_HOST).ip
                fabric.ip("route", "add", self.floating_range, "via", str(via))

    def _plug(self, fabric: Commands, port: str, bridge: str, host: str, interface: str):
        """A veth from ``host``'s namespace (``interface``) to ``bridge`` of the fabric."""
        fabric.ip("link", "add", port, "type", "veth", "peer", "name", interface, "netns", self.namespace(host))
        fabric.ip("link", "set", "dev", port, "master", bridge, "up")
        Commands(self.namespace(host)).ip("link", "set", "dev", interface, "up")

    def _make_host(self, index: int, host: str):
        inside = self._add_namespace(self.namespace(host))
        self.state_dir(host).mkdir(mode=0o755)
        fabric = Commands(self.fabric)
        self._plug(fabric, f"h{index}", FABRIC_BRIDGE, host, self.bridge_interface)
        if host not in self.network_hosts:
            return
        # The network host routes between its bridges and the outside (2010 asked the
        # operator to turn this on); inside its namespace only.
        inside.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        if self._has_public_segment():
            self._plug(fabric, f"h{index}p", PUBLIC_BRIDGE, host, self.public_interface)
            inside.ip("addr", "add", str(self.public_address(host)), "dev", self.public_interface)
            inside.ip("route", "add", "default", "via", str(self.outside.ip))

    def _has_public_segment(self) -> bool:
        return self.public_interface != self.bridge_interface

    def _public_segment(self) -> str:
        used = [ipaddress.ip_network(r) for r in (self.fixed_range, self.floating_range) if r]
        for candidate in PUBLIC_CANDIDATES:
            if not any(ipaddress.ip_network(candidate).overlaps(net) for net in used):
                return candidate
        raise StartupError("no public segment for the run's network: the scenario's ranges overlap all of "
                           + ", ".join(PUBLIC_CANDIDATES))

    def _decide_vlans(self):
        from real.linux_net import LinuxNet

        if LinuxNet(self.state_dir(self.hosts[0])).vlan_supported():
            return
        self.untagged = True
        self.skipped.append({
            "step": "802.1q tagging",
            "reason": "this kernel has no 802.1q VLAN support (module 8021q): each VLAN is its own untagged "
                      "segment instead (vlan<N> is a veth to bridge v<N> of the fabric), so projects stay "
                      "apart at layer 2; bridges, gateways and a dnsmasq per network are real"})
        print(f"run-scenario --mode real: skipped 802.1q tagging: {self.skipped[-1]['reason']}", file=sys.stderr)

    # -- removing ------------------------------------------------------------------

    def remove(self):
        """Remove everything the run made (module docstring); problems are printed, not
        raised, so the rest of the clean-up still runs."""
        if not self.created:
            return
        for problem in remove_run(self.id, self.state):
            print(f"run-scenario --mode real: removing the run's network: {problem}", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):
            (REGISTRY / f"{self.id}.json").unlink()
        self.created = False


def list_namespaces() -> list[str]:
    """The names of the machine's named network namespaces (none without ``ip``)."""
    try:
        result = Commands(None).ip("netns", "list", check=False)
    except NetworkDriverError:
        return []
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def remove_run(run_id: str, state: Path | None) -> list[str]:
    """Kill every process in the namespaces named ``<run_id>-...``, delete them (guests
    first, the fabric last) and ``state``; -> the problems met."""
    root = Commands(None)
    ours = [name for name in list_namespaces() if name.startswith(f"{run_id}-")]
    ours.sort(key=lambda name: (name.endswith("-fab"), not name.startswith(f"{run_id}-g-"), name))
    pids = []
    for name in ours:
        pids += [int(w) for w in root.ip("netns", "pids", name, check=False).stdout.split() if w.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    problems = [f"process {pid} outlived SIGKILL" for pid in wait_gone(pids, REMOVE_WAIT)]
    for name in ours:
        result = root.ip("netns", "del", name, check=False)
        if result.returncode != 0:
            problems.append(root.error(result).args[0])
    if state is not None:
        shutil.rmtree(state, ignore_errors=True)
    return problems


def remove_leftovers() -> list[str]:
    """Remove what runs whose owner died (SIGKILL, a crash) left: every record in
    ``REGISTRY`` naming a dead process. -> the ids removed."""
    removed = []
    for path in sorted(REGISTRY.glob("*.json")) if REGISTRY.is_dir() else ():
        try:
            owner = json.loads(path.read_text())
            pid, started = int(owner["pid"]), owner.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours: leave it
        if alive(pid) and _start_time(pid) == started:
            continue
        run_id = path.stem
        for problem in remove_run(run_id, Path(owner["state"]) if owner.get("state") else None):
            print(f"run-scenario --mode real: removing leftovers of run {run_id}: {problem}", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        print(f"run-scenario --mode real: removed the network namespaces a crashed run ({run_id}) left",
              file=sys.stderr)
        removed.append(run_id)
    return removed


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
