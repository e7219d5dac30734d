"""A real run's own network (real.run_network, real.guests, real.linux_net.untagged):
flatdhcp and vlan runs in namespaces they create and remove, guests leasing their
recorded addresses, and the machine's own networking left exactly as it was.

Needs root and the tools real/setup/linux_net.sh installs; without them the tests skip
on a laptop and fail in CI. Every namespace made here carries this test run's prefix
and is removed by the test that made it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import service_unavailable

from common.effects import DhcpHost, DomainSpec, EnsureBridge, EnsureVlan, UpdateDhcp
from common.scenario import with_overrides
from real import run_network
from real.guests import GuestEnds, read_guests
from real.linux_net import LinuxNet
from real.linux_net.untagged import UntaggedVlans
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
PREFIX = f"nlt{os.getpid() % 100000}"  # this test run's namespaces
MAC = "02:16:3e:78:00:05"


@pytest.fixture(scope="module", autouse=True)
def _root_and_tools():
    if os.geteuid() != 0:
        service_unavailable("Linux networking", "a real run's network namespaces need root")
    missing = [t for t in (*run_network.TOOLS, "iptables-save") if not shutil.which(t, path=PATH)]
    if missing:
        service_unavailable("Linux networking", f"missing {', '.join(missing)} (bash real/setup/linux_net.sh)")


def sh(*argv) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30,
                          env=dict(os.environ, PATH=PATH, LC_ALL="C")).stdout


def host_networking() -> str:
    """The machine's own links, addresses, routes and every iptables table, minus
    what changes by itself (counters, lifetimes, the dump's date)."""
    text = "\n".join([sh("ip", "-o", "link"), sh("ip", "-o", "addr"), sh("ip", "route"),
                      *(sh("iptables-save", "-t", table) for table in ("filter", "nat", "mangle", "raw"))])
    text = re.sub(r"^#.*$", "", text, flags=re.M)
    text = re.sub(r"\[\d+:\d+\]", "", text)
    return re.sub(r"(valid|preferred)_lft \S+", "", text)


def namespaces(prefix: str) -> list[str]:
    return [name for name in run_network.list_namespaces() if name.startswith(prefix)]


class Namespaces:
    """Namespaces ``<PREFIX>-<name>`` made by one test; ``close`` deletes them."""

    def __init__(self):
        self.made: list[str] = []

    def add(self, name: str) -> str:
        full = f"{PREFIX}-{name}"
        sh("ip", "netns", "add", full)
        self.made.append(full)
        return full

    def close(self):
        env = dict(os.environ, PATH=PATH)
        for name in self.made:  # some may be gone already
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, env=env).stdout
            for pid in pids.split():
                os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, env=env)


@pytest.fixture
def ns():
    made = Namespaces()
    yield made
    made.close()
    assert namespaces(PREFIX) == []


def real_run(name, redis_url, amqp_url, tmp_path):
    try:
        import libvirt  # noqa: F401
    except ImportError as e:
        service_unavailable("libvirt-python", str(e))
    from real.mode import RealRun

    scenario, _ = load(ROOT / "scenarios" / f"{name}.yaml")
    scenario = with_overrides(scenario, {"real.redis_url": redis_url, "real.amqp_url": amqp_url})
    before = host_networking()
    run = RealRun(scenario, scenario.seed, tmp_path, progress=False)
    summary = run.execute()
    return run, summary, before


def assert_clean_real_run(run, summary, before, tmp_path):
    """Every invariant (NET too) held, every guest leased, and nothing of the run is left."""
    assert [(v["name"], v["violations"][:3]) for v in summary["invariants"] if not v["ok"]] == []
    net = summary["network"]
    assert net["guests"] == summary["instances"]["launched"] == net["guests_leased"] > 0, (net, summary["instances"])
    assert net["lease_events"] > 0 and net["floating_probes"]["reached"] > 0
    assert host_networking() == before
    assert namespaces(net["id"] + "-") == []
    assert not Path(net["state_dir"]).exists() and not (run_network.REGISTRY / f"{net['id']}.json").exists()
    assert json.loads((tmp_path / "network.json").read_text())["id"] == net["id"]


def test_real_flatdhcp_run_leases_every_guest_and_leaves_the_host_as_it_was(redis_url, amqp_url, tmp_path):
    """real-flatdhcp.yaml: every guest leases its recorded address, floating addresses answer through
    their NAT, and the machine's links, addresses, routes and iptables are unchanged afterwards."""
    run, summary, before = real_run("real-flatdhcp", redis_url, amqp_url, tmp_path)
    assert_clean_real_run(run, summary, before, tmp_path)


def test_real_vlan_run_puts_each_project_on_its_own_bridge_and_says_what_it_skipped(redis_url, amqp_url, tmp_path):
    """real-vlan.yaml: each project's guests lease from their own network; without 8021q the tagging
    step is reported skipped with its reason and everything else holds."""
    run, summary, before = real_run("real-vlan", redis_url, amqp_url, tmp_path)
    assert_clean_real_run(run, summary, before, tmp_path)
    skipped = [s["step"] for s in summary["network"]["skipped"]]
    assert skipped == ([] if LinuxNet(tmp_path).vlan_supported() else ["802.1q tagging"])
    pairs = {(r["project_id"], r["network_id"]) for r in run.final_store.values()
             if isinstance(r, dict) and r.get("project_id") and r.get("network_id")}
    assert len(pairs) == len({p for p, _ in pairs}) == len({n for _, n in pairs}) > 1


def test_untagged_vlans_give_each_vlan_its_own_segment(ns):
    """Without tagging, EnsureVlan twice on two hosts makes one veth vlan<N> each, both ports of v<N>."""
    fabric, hosts = ns.add("fab"), [ns.add("a"), ns.add("b")]
    for host, short in zip(hosts, "ab", strict=True):
        driver = UntaggedVlans(LinuxNet("/tmp", namespace=host), host, fabric, short)
        for vlan in (100, 100, 101):
            assert driver.perform(EnsureVlan(vlan, "eth0")) == f"vlan{vlan}"
    ports = sh("ip", "-n", fabric, "-o", "link", "show", "master", "v100")
    assert sorted(re.findall(r"^\d+: (\S+?)@", ports, re.M)) == ["a.100", "b.100"]
    assert "veth" in sh("ip", "-n", hosts[0], "-d", "link", "show", "vlan101")


class NoHypervisor:
    """A hypervisor whose domains are names only."""

    def __init__(self):
        self.domains: set[str] = set()

    def spawn(self, spec):
        self.domains.add(spec.name)

    def destroy(self, name):
        existed = name in self.domains
        self.domains.discard(name)
        return existed


@pytest.fixture
def state():
    """A state directory dnsmasq's unprivileged user can search (pytest's tmp_path is not)."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_guest_end_leases_its_address_from_dnsmasq_and_goes_with_its_domain(ns, state):
    """A spawn plugs a guest whose DHCP client leases the instance's address; destroy removes its namespace."""
    server = ns.add("net")
    net = LinuxNet(state, namespace=server)
    net.perform(EnsureBridge("br100", None, "10.78.0.1/24"))
    net.perform(UpdateDhcp("br100", "10.78.0.1", "10.78.0.3", (DhcpHost(MAC, "i-guest1", "10.78.0.5"),)))
    ends = GuestEnds(NoHypervisor(), "net", server, f"{PREFIX}-g", state)
    ns.made.append(f"{PREFIX}-g-i-guest1")  # removed even if the test fails half-way
    ends.spawn(DomainSpec(name="i-guest1", vcpus=1, memory_mb=64, mac_address=MAC, bridge="br100"))
    deadline = time.monotonic() + 20
    while not (guests := read_guests([state]))[0]["leases"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [lease[1:3] for lease in guests[0]["leases"]] == [("10.78.0.5/24", "10.78.0.1")]
    assert ends.destroy("i-guest1") is True
    assert namespaces(f"{PREFIX}-g-") == [] and "unplugged_at" in read_guests([state])[0]


def test_leftovers_of_a_killed_run_are_removed_at_the_next_start(ns):
    """A registry entry whose owner is dead: its namespaces and the processes in them are removed."""
    run_id = f"{PREFIX}-x"
    made = [ns.add("x-fab"), ns.add("x-host1")]
    sleeper = subprocess.Popen(["ip", "netns", "exec", made[1], "sleep", "60"], env=dict(os.environ, PATH=PATH))
    deadline = time.monotonic() + 10
    while str(sleeper.pid) not in sh("ip", "netns", "pids", made[1]).split() and time.monotonic() < deadline:
        time.sleep(0.05)  # until it is inside
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_network.REGISTRY.mkdir(parents=True, exist_ok=True)
    (run_network.REGISTRY / f"{run_id}.json").write_text(json.dumps({"pid": dead.pid, "started": "0", "state": ""}))
    assert run_id in run_network.remove_leftovers()
    assert sleeper.wait(10) == -9
    assert namespaces(f"{run_id}-") == [] and not (run_network.REGISTRY / f"{run_id}.json").exists()


def test_a_dhcp_run_refuses_to_start_without_root(monkeypatch):
    """Not root: the run's network says it needs root before anything is made."""
    from common.assembly import roster

    scenario, _ = load(ROOT / "scenarios" / "real-flatdhcp.yaml")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    network = run_network.RunNetwork(scenario, roster(scenario, 1))
    with pytest.raises(run_network.StartupError, match="network namespaces of its own, which needs root"):
        network.create()
    assert not network.created and namespaces(network.id + "-") == []

