"""real/linux_net against the kernel, inside network namespaces the tests create.

Needs root and the tools real/setup/linux_net.sh installs (ip, iptables, dnsmasq,
busybox for udhcpc, unshare); without them the tests skip on a laptop and fail in CI.
Every test makes its own uniquely named namespaces and state directory and removes them
(and any process started in them) in a finalizer that also asserts nothing is left; the
last test checks the whole run left no namespace, process or host link behind. No
traffic leaves the namespaces and the host's interfaces and iptables are never touched.
"""

from __future__ import annotations

import collections
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import service_unavailable

from common.effects import DhcpHost, EnsureBridge, StopDhcp, UpdateDhcp
from common.errors import NetworkDriverError
from real.linux_net import LinuxNet

RUN = f"novalab-lnt-{os.getpid()}"  # prefix of this run's namespaces and state dirs
TOOLS = ("ip", "iptables", "iptables-save", "dnsmasq", "busybox", "unshare")
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
GW, NET = "10.77.0.1/24", "10.77.0.0/24"
MAC1, MAC2 = "02:16:3e:77:00:05", "02:16:3e:77:00:06"
_serial = itertools.count()

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in bound|renew) ip addr flush dev "$interface" scope global
    ip addr add "$ip/$mask" dev "$interface";; esac
exit 0
"""


def sh(*argv, ns=None, check=True) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    result = subprocess.run(full, capture_output=True, text=True, timeout=30, env=dict(os.environ, PATH=PATH, LC_ALL="C"))
    if check and result.returncode:
        raise AssertionError(f"{' '.join(full)} -> {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def live_pids(marker) -> list[int]:
    """Live (non-zombie) processes whose command line mentions ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmd and state not in "ZX":
            found.append(int(entry))
    return found


def our_namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.startswith(RUN)]


def ipv4(ns, iface) -> list[str]:
    return re.findall(r"inet (\S+)", sh("ip", "-4", "addr", "show", "dev", iface, ns=ns))


def rules(ns) -> list[str]:
    return [line for line in sh("iptables-save", ns=ns).splitlines() if line.startswith("-A ")]


class Lab:
    """One test's namespaces, state directory and scripts; ``close`` removes them all."""

    def __init__(self):
        self.state = tempfile.mkdtemp(prefix=f"{RUN}-")
        os.chmod(self.state, 0o755)  # dnsmasq rereads its hosts file as nobody
        self.namespaces = []

    def ns(self) -> str:
        name = f"{RUN}-{next(_serial)}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def net(self, ns, **kw) -> LinuxNet:
        return LinuxNet(self.state, namespace=ns, **kw)

    def script(self, name, body) -> str:
        path = os.path.join(self.state, name)
        with open(path, "w") as f:
            f.write(body)
        os.chmod(path, 0o755)
        return path

    def client(self, server_ns, index, mac) -> str:
        """A client namespace joined by veth nltv<index> (left in the server namespace)."""
        client = self.ns()
        sh("ip", "-n", server_ns, "link", "add", f"nltv{index}", "type", "veth", "peer", "name", "nltc0", "netns", client)
        sh("ip", "-n", client, "link", "set", "nltc0", "address", mac, "up")
        return client

    def lease(self, client) -> list[str]:
        """Run busybox udhcpc in ``client``; returns the IPv4 addresses it configured."""
        script = self.script("udhcpc.sh", UDHCPC_SCRIPT)
        sh("busybox", "udhcpc", "-i", "nltc0", "-n", "-q", "-t", "5", "-T", "1", "-s", script, ns=client)
        return ipv4(client, "nltc0")

    def close(self):
        for pid in live_pids(self.state):
            os.kill(pid, signal.SIGKILL)
        for name in self.namespaces:
            sh("ip", "netns", "del", name, check=False)
        deadline = time.monotonic() + 5
        while live_pids(self.state) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.state, ignore_errors=True)
        assert not live_pids(self.state), "a process of this test outlived it"
        assert not set(self.namespaces) & set(our_namespaces()), "a namespace of this test outlived it"


@pytest.fixture(scope="module", autouse=True)
def _root_and_tools():
    if os.geteuid() != 0:
        service_unavailable("Linux networking", "the tests create network namespaces, which needs root")
    missing = [t for t in TOOLS if not shutil.which(t, path=PATH)]
    if not missing and "udhcpc" not in sh("busybox", "--list").split():
        missing.append("busybox udhcpc")
    if missing:
        service_unavailable("Linux networking", f"missing {', '.join(missing)} (bash real/setup/linux_net.sh installs them)")


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.close()


def test_bridge_has_gateway_and_ensuring_twice_changes_nothing(lab):
    """The bridge exists, up, with the gateway address; a second ensure_bridge changes nothing."""
    ns = lab.ns()
    net = lab.net(ns)
    assert net.ensure_bridge("nltbr0", address=GW) == "nltbr0"

    def detail():
        return re.sub(r"\b\w+_timer\s+\S+", "", sh("ip", "-d", "addr", ns=ns))  # timers tick

    before = detail()
    net.ensure_bridge("nltbr0", address=GW)
    assert detail() == before
    assert "bridge forward_delay 0" in before and "stp_state 0" in before and GW in before
    assert sorted(r for r in rules(ns) if "nltbr0" in r) == ["-A FORWARD -i nltbr0 -j ACCEPT", "-A FORWARD -o nltbr0 -j ACCEPT"]


def test_dhcp_end_to_end(lab):
    """A client with the instance's MAC gets exactly its address from the bridge's dnsmasq."""
    server = lab.ns()
    client = lab.client(server, 0, MAC1)
    net = lab.net(server)
    net.perform(EnsureBridge("nltbr0", "nltv0", GW))
    net.perform(UpdateDhcp("nltbr0", "10.77.0.1", "10.77.0.3", (DhcpHost(MAC1, "i-one", "10.77.0.5"),)))
    assert lab.lease(client) == ["10.77.0.5/24"]


def test_dhcp_script_is_called_with_add_mac_ip_host(lab):
    """On a lease dnsmasq runs the dhcp script as ``add MAC IP HOST``."""
    server = lab.ns()
    client = lab.client(server, 0, MAC1)
    log = os.path.join(lab.state, "script.log")
    net = lab.net(server, dhcp_script=lab.script("bridge.sh", f'#!/bin/sh\necho "$*" >> {log}\n'))
    net.ensure_bridge("nltbr0", "nltv0", GW)
    net.update_dhcp("nltbr0", "10.77.0.1", "10.77.0.3", [(MAC1, "i-one", "10.77.0.5")])
    lab.lease(client)
    deadline = time.monotonic() + 10
    while f"add {MAC1} 10.77.0.5 i-one" not in (Path(log).read_text().splitlines() if os.path.exists(log) else []):
        assert time.monotonic() < deadline, "the dhcp script was not called with add"
        time.sleep(0.05)


def test_update_dhcp_hups_the_same_dnsmasq_and_serves_the_new_host(lab):
    """A changed hosts list reaches the running dnsmasq by SIGHUP (same pid) and the new host gets its address."""
    server = lab.ns()
    net = lab.net(server)
    net.ensure_bridge("nltbr0", None, GW)
    first = net.update_dhcp("nltbr0", "10.77.0.1", "10.77.0.3", [(MAC1, "i-one", "10.77.0.5")])
    client = lab.client(server, 1, MAC2)
    net.ensure_bridge("nltbr0", "nltv1", GW)
    hosts = [(MAC1, "i-one", "10.77.0.5"), (MAC2, "i-two", "10.77.0.6")]
    assert net.update_dhcp("nltbr0", "10.77.0.1", "10.77.0.3", hosts) == first
    assert ["kill", "-HUP", str(first)] in net.commands
    assert lab.lease(client) == ["10.77.0.6/24"]


def test_floating_address_and_forward_rules(lab):
    """bind/ensure twice leave one /32 and one of each NAT and FORWARD rule; unbind/remove take them all away."""
    ns = lab.ns()
    sh("ip", "-n", ns, "link", "add", "nltpub0", "type", "bridge")
    net = lab.net(ns, public_interface="nltpub0")
    expected = [
        "-A PREROUTING -d 203.0.113.10/32 -j DNAT --to-destination 10.77.0.5",
        "-A POSTROUTING -s 10.77.0.5/32 -j SNAT --to-source 203.0.113.10",
        "-A FORWARD -d 10.77.0.5/32 -p icmp -j ACCEPT",
        *(f"-A FORWARD -d 10.77.0.5/32 -p {p} -m {p} --dport {n} -j ACCEPT" for p, n in [("tcp", 80), ("tcp", 22), ("udp", 1194), ("tcp", 443)]),
    ]
    for _ in range(2):
        net.bind_floating("203.0.113.10", "nltpub0")
        net.ensure_floating_forward("203.0.113.10", "10.77.0.5")
    assert ipv4(ns, "nltpub0") == ["203.0.113.10/32"]
    assert collections.Counter(rules(ns)) == collections.Counter(expected)
    for _ in range(2):
        net.remove_floating_forward("203.0.113.10", "10.77.0.5")
        net.unbind_floating("203.0.113.10")  # the public_interface
    assert ipv4(ns, "nltpub0") == [] and rules(ns) == []


def test_host_nat_and_vpn_forward_are_idempotent(lab):
    """init_host_nat and ensure_vpn_forward twice leave one of each rule, the in-range ACCEPT above the SNAT."""
    ns = lab.ns()
    net = lab.net(ns)
    for _ in range(2):
        net.init_host_nat(NET, "10.0.2.15")
        net.ensure_vpn_forward("203.0.113.20", 1000, "10.77.0.2")
    found = rules(ns)
    accept, snat = f"-A POSTROUTING -s {NET} -d {NET} -j ACCEPT", f"-A POSTROUTING -s {NET} -j SNAT --to-source 10.0.2.15"
    assert sorted(found) == sorted([
        accept, snat,
        "-A PREROUTING -d 203.0.113.20/32 -p udp -m udp --dport 1000 -j DNAT --to-destination 10.77.0.2:1194",
        "-A FORWARD -d 10.77.0.2/32 -p udp -m udp --dport 1194 -j ACCEPT",
    ])
    assert found.index(accept) < found.index(snat)


def test_ensure_vlan_without_8021q_raises_a_clear_error(lab, monkeypatch):
    """Without 8021q (real here, forced where the kernel has it) ensure_vlan says so and creates nothing."""
    ns = lab.ns()
    sh("ip", "-n", ns, "link", "add", "nltp0", "type", "veth", "peer", "name", "nltp1")
    net = lab.net(ns)
    if net.vlan_supported():
        monkeypatch.setattr(net, "vlan_supported", lambda: False)
    with pytest.raises(NetworkDriverError, match=r"vlan100 on nltp0: this kernel has no 802.1q .*8021q"):
        net.ensure_vlan(100, "nltp0")
    assert "vlan100" not in sh("ip", "link", ns=ns)


def test_ensure_vlan_twice_makes_one_vlan_interface(lab):
    """On a kernel with 8021q, ensure_vlan twice gives one interface vlan100 on its parent, up."""
    ns = lab.ns()
    net = lab.net(ns)
    if not net.vlan_supported():
        pytest.skip("kernel has no 8021q")
    sh("ip", "-n", ns, "link", "add", "nltp0", "type", "veth", "peer", "name", "nltp1")
    assert net.ensure_vlan(100, "nltp0") == net.ensure_vlan(100, "nltp0") == "vlan100"
    detail = sh("ip", "-d", "link", "show", "vlan100", ns=ns)
    assert "vlan100@nltp0" in detail and "vlan protocol 802.1Q id 100" in detail and ",UP" in detail


def test_failures_name_command_status_and_stderr(lab):
    """A failing command raises NetworkDriverError with the command line, exit status and stderr."""
    net = lab.net(lab.ns())
    with pytest.raises(NetworkDriverError, match=r"`.*ip -j addr show dev nltnone0` failed with exit status 1: Device \"nltnone0\" does not exist"):
        net.bind_floating("203.0.113.30", "nltnone0")
    net.ensure_bridge("nltbr0")
    with pytest.raises(NetworkDriverError, match=re.escape("gateway 10.77.0.1 is not an address of nltbr0")):
        net.update_dhcp("nltbr0", "10.77.0.1", "10.77.0.3", [])
    assert not live_pids(lab.state)
    with pytest.raises(TypeError):
        net.perform(object())


def test_stop_dhcp_leaves_no_dnsmasq(lab):
    """stop_dhcp terminates the bridge's dnsmasq (no process left) and is idempotent."""
    ns = lab.ns()
    net = lab.net(ns, dhcp_script=lab.script("bridge.sh", "#!/bin/sh\n"))
    net.ensure_bridge("nltbr0", None, GW)
    pid = net.update_dhcp("nltbr0", "10.77.0.1", "10.77.0.3", [])
    assert pid in live_pids(net.hosts_file("nltbr0"))
    assert net.perform(StopDhcp("nltbr0")) is True
    assert not live_pids(net.hosts_file("nltbr0")) and net.dhcp_pid("nltbr0") is None
    assert not os.path.exists(net.pid_file("nltbr0"))
    assert net.stop_dhcp("nltbr0") is False


def test_zz_the_run_left_nothing_behind():
    """No namespace, process or host link of this test run is left (runs last)."""
    assert our_namespaces() == []
    assert live_pids(RUN) == []
    assert not re.search(r"^\d+: nlt", sh("ip", "-o", "link"), re.M)
