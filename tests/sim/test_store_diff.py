"""The two sim stores give the same runs: every shipped scenario (the large ones cut
down to test size) on fakeredis and on MemoryStore, compared on the final store, the
invariants and the trace fingerprint; and each store stays deterministic."""

from pathlib import Path

import pytest

from common.scenario import with_overrides
from sim.run import simulate
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(path.name for path in (ROOT / "scenarios").glob("*.yaml"))
#: Test-size caps: a scenario with more is cut down (hosts only when no fault names one).
MAX_HOSTS, MAX_REQUESTS = 10, 60


def reduced(name: str, store: str):
    """Scenario ``name`` on ``store``, with at most MAX_HOSTS hosts and MAX_REQUESTS requests."""
    scenario, _ = load(ROOT / "scenarios" / name)
    changes: dict = {"sim.store": store}
    if scenario.workload.requests > MAX_REQUESTS:
        changes["workload.requests"] = MAX_REQUESTS
    if scenario.cloud.hosts.count > MAX_HOSTS and not scenario.faults:
        changes["cloud.hosts.count"] = MAX_HOSTS
    return with_overrides(scenario, changes)


def test_every_shipped_scenario_is_compared():
    """The comparison below finds the shipped scenarios (the main job among them)."""
    assert "500-hosts.yaml" in SHIPPED and len(SHIPPED) >= 10


@pytest.mark.parametrize("name", SHIPPED)
def test_both_stores_give_the_same_run(name):
    """fakeredis and MemoryStore end in the same store, verdicts and fingerprint."""
    fake, memory = (simulate(reduced(name, store)) for store in ("fakeredis", "memory"))
    assert memory.summary["sim_store"] == "memory" and fake.summary["sim_store"] == "fakeredis"
    assert memory.snapshot.store == fake.snapshot.store
    assert [(v.name, v.ok, v.violations) for v in memory.verdicts] == [(v.name, v.ok, v.violations) for v in fake.verdicts]
    assert memory.summary["fingerprint"] == fake.summary["fingerprint"]


@pytest.mark.parametrize("store", ["memory", "fakeredis"])
def test_each_store_is_deterministic(store):
    """One scenario, seed and store twice: the same fingerprint."""
    first, again = (simulate(reduced("small-pool.yaml", store), 7) for _ in range(2))
    assert first.summary["fingerprint"] == again.summary["fingerprint"]
