"""Whole simulated runs: invariants across seeds, determinism, scheduler behaviour."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.scenario import with_overrides
from sim.run import simulate
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"


def scenario(name, **overrides):
    loaded, _ = load(SCENARIOS / f"{name}.yaml")
    return with_overrides(loaded, overrides) if overrides else loaded


def failed(result):
    return [(v.name, v.violations[:3]) for v in result.verdicts if not v.ok]


@pytest.mark.parametrize("scheduler", ["queue", "chance", "simple"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_invariants_hold_for_every_scheduler(scheduler, seed):
    """A small cloud under each scheduler keeps I1-I7 for several seeds."""
    result = simulate(scenario("5-hosts", **{"cloud.scheduler": scheduler}), seed)
    assert failed(result) == []
    assert result.summary["instances"]["launched"] == 60


def test_invariants_hold_under_spawn_failures_and_latency():
    """Failing spawns and slow, jittery store and broker still leave a clean cloud."""
    s = scenario(
        "5-hosts",
        **{
            "timing.hypervisor.spawn_failure_probability": 0.3,
            "timing.store": {"uniform": [0.0, 0.01]},
            "timing.rpc": {"exponential": {"mean": 0.02}},
        },
    )
    result = simulate(s, 5)
    assert failed(result) == []
    assert result.summary["instances"]["errors_by_reason"].get("spawn failed", 0) > 0


def test_same_seed_gives_the_same_fingerprint():
    """Two runs with one seed produce the same trace fingerprint."""
    s = scenario("5-hosts")
    assert simulate(s, 11).summary["fingerprint"] == simulate(s, 11).summary["fingerprint"]


def test_another_seed_gives_another_fingerprint():
    """Two seeds give two different traces."""
    s = scenario("5-hosts")
    assert simulate(s, 11).summary["fingerprint"] != simulate(s, 12).summary["fingerprint"]


def test_fingerprint_does_not_depend_on_hash_randomisation(tmp_path):
    """Runs in processes with different PYTHONHASHSEED agree (no set-order leaks)."""
    code = (
        "from sim.scenario_file import load; from sim.run import simulate;"
        "s, _ = load('scenarios/5-hosts.yaml'); print(simulate(s, 4).summary['fingerprint'])"
    )
    prints = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        prints.add(done.stdout.strip())
    assert len(prints) == 1


def test_queue_dispatch_overcommits_hosts_where_simple_does_not():
    """2010's first-free-worker dispatch piles vCPUs onto hosts; the simple scheduler never does."""
    common = {"cloud.hosts.count": 20, "workload.requests": 400, "workload.arrivals.rate": 1.0,
              "workload.lifetime": {"uniform": [200, 400]}, "cloud.projects": [{"id": "demo", "quota": {"instances": 1000, "cores": 4000}}]}
    queue = simulate(scenario("5-hosts", **{**common, "cloud.scheduler": "queue"}), 1).summary
    simple = simulate(scenario("5-hosts", **{**common, "cloud.scheduler": "simple"}), 1).summary
    assert queue["peak_host_vcpu_ratio"] > 1.0
    assert queue["hosts_ever_overcommitted"] > 0
    assert simple["peak_host_vcpu_ratio"] <= 1.0
    assert simple["hosts_ever_overcommitted"] == 0


def test_pool_too_small_errors_cleanly_and_leaks_nothing():
    """A /28 that runs dry fails launches with NoMoreAddresses and every address comes back."""
    result = simulate(scenario("small-pool"), 7)
    summary = result.summary
    assert failed(result) == []
    assert summary["instances"]["errors_by_reason"].get("no fixed address: NoMoreAddresses", 0) > 0
    pool = summary["pools"]["flat"]
    assert pool["peak_used"] == pool["size"] == pool["free_at_end"] == 13


def test_cloud_too_small_fails_its_slo_but_not_its_invariants():
    """Too little capacity gives 'no valid host' errors and a failed SLO, never a broken invariant."""
    result = simulate(scenario("cloud-too-small"), 3)
    assert failed(result) == []
    assert result.summary["instances"]["errors_by_reason"].get("no valid host", 0) > 0
    assert not result.summary["ok"]


def test_instances_without_lifetime_stay_running():
    """With no lifetime every launched instance ends running, each with a domain."""
    result = simulate(scenario("5-hosts", **{"workload.lifetime": None, "workload.requests": 20}), 2)
    assert failed(result) == []
    assert result.summary["instances"]["running"] == 20
    assert sum(len(d) for d in result.snapshot.domains.values()) == 20


def test_simulation_never_blocks_on_real_time_or_io(monkeypatch):
    """A run makes no time.sleep, socket or subprocess call (they would freeze virtual time)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("blocking call inside the simulation")

    monkeypatch.setattr(time, "sleep", forbidden)
    monkeypatch.setattr(socket, "socket", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    assert failed(simulate(scenario("5-hosts", **{"workload.requests": 10}), 1)) == []
