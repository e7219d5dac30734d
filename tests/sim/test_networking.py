"""Every network manager under racing, slow store commands, across many seeds."""

import pytest

from common import keys
from common.scenario import parse
from sim.run import simulate

SEEDS = range(200)


def racing_cloud(manager: str):
    """A tiny cloud where launches and terminates overlap and every store command is
    slow and jittery, so allocations and releases interleave command by command."""
    return parse(
        {
            "name": f"race-{manager}",
            "cloud": {
                "hosts": {"count": 3, "vcpus": 16, "memory_mb": 65536},
                "network": {"manager": manager, "fixed_range": "10.0.0.0/24", "network_size": 32,
                            "disassociate_timeout": 20, "floating_range": "4.4.4.0/29"},
                "scheduler": "simple",
                "projects": [{"id": "a", "quota": {"instances": 100, "cores": 400}},
                             {"id": "b", "quota": {"instances": 100, "cores": 400}}],
            },
            "workload": {
                "arrivals": {"process": "poisson", "rate": 2.0},
                "requests": 12,
                "instances_per_request": 2,
                "instance_types": {"m1.tiny": 1},
                "lifetime": {"uniform": [5, 40]},
                "floating_ips": 0.3,
                "floating_delay": {"uniform": [1, 30]},
            },
            "timing": {
                "store": {"uniform": [0.0, 0.02]},
                "rpc": {"uniform": [0.0, 0.05]},
                "hypervisor": {"boot_time": {"uniform": [1, 10]}, "spawn_failure_probability": 0.1},
                "periodic_interval": 10,
                "inline_zero_latency": False,
            },
            "drain_timeout": 600,
        }
    )


@pytest.mark.parametrize("manager", ["flat", "flatdhcp", "vlan"])
def test_no_address_twice_and_none_leaked_across_seeds(manager):
    """Across 200 seeds no address is handed out twice or leaked (I1, I2) and every run settles."""
    scenario = racing_cloud(manager)
    for seed in SEEDS:
        result = simulate(scenario, seed)
        broken = [(v.name, v.violations[:2]) for v in result.verdicts if not v.ok]
        assert broken == [], f"{manager} seed {seed}: {broken}"


def test_vlan_gives_each_project_its_own_network():
    """Under Vlan, each project gets exactly one network, and no network two projects."""
    result = simulate(racing_cloud("vlan"), 3)
    store = result.snapshot.store
    owned = {p: store[keys.project_network(p)] for p in ("a", "b") if keys.project_network(p) in store}
    assert len(owned) == 2 and len(set(owned.values())) == 2
    for project, network_id in owned.items():
        assert store[keys.network(network_id)]["project_id"] == project
        assert network_id not in store.get(keys.FREE_NETWORKS, set())


def test_dhcp_managers_build_each_bridge_once():
    """ensure_* work repeats (counted as duplicates) but never changes a built bridge."""
    result = simulate(racing_cloud("flatdhcp"), 1)
    assert result.summary["network_driver_operations"] > result.summary["network_driver_duplicates"] > 0


def test_busy_project_exhausts_only_its_own_pool():
    """One project running its Vlan pool dry fails only its own launches, cleanly."""
    from pathlib import Path

    from sim.scenario_file import load

    scenario, _ = load(Path(__file__).resolve().parents[2] / "scenarios" / "vlan-busy-project.yaml")
    result = simulate(scenario, scenario.seed)
    assert [v.name for v in result.verdicts if not v.ok] == []
    store = result.snapshot.store
    errored_projects = {
        store[keys.instance(i)]["project_id"]
        for i in store[keys.INSTANCES]
        if "NoMoreAddresses" in store[keys.instance(i)].get("error", "")
    }
    assert errored_projects == {"busy"}
