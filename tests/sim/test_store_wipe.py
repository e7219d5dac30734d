"""A store that loses its data (Reliability D4): the sim wipes it mid-run, the services re-assert
what their start-up wrote, and the cloud serves again; without the store watch it does not.

``NOVALAB_STORE_WIPE_SEEDS=200 pytest tests/sim/test_store_wipe.py -k every_invariant -s`` runs
the long sweep (200 seeds, each manager and scheduler in turn) and prints runs, faults fired,
violations and how launches after recovery ended.
"""

import os
import random
from pathlib import Path

import pytest

from common import keys, lifecycle, recovery
from common.analysis import report
from common.scenario import with_overrides
from sim.run import Simulation
from sim.scenario_file import load

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
MANAGERS = ("5-hosts", "flatdhcp", "vlan")
SCHEDULERS = ("simple", "chance", "queue")
#: flatdhcp and vlan cut to the size of 5-hosts: five hosts, sixty launches.
SMALL = {"cloud.hosts.count": 5, "workload.requests": 60, "workload.arrivals.rate": 0.25}


def wipe_scenario(seed: int):
    """Seed -> a manager, a scheduler and a wipe time (5 to 200 s into the workload)."""
    name = MANAGERS[seed % 3]
    loaded, _ = load(SCENARIOS / f"{name}.yaml")
    at = random.Random(f"store-wipe/{seed}").uniform(5, 200)
    return with_overrides(loaded, {**(SMALL if name != "5-hosts" else {}),
                                   "cloud.scheduler": SCHEDULERS[seed // 3 % 3],
                                   "faults": [{"at": at, "store_wipe": True}]})


def serving_again(scenario) -> float:
    """Seconds after a wipe by which launches must succeed: noticed within a report interval,
    pools held for hold_seconds, plus a report interval of slack for the work itself."""
    interval = scenario.timing.report_interval
    return 2 * interval + recovery.hold_seconds(interval)


def wipe_run(seed, check=None):
    """-> (result, launches created once the cloud should serve again, violations by invariant)."""
    scenario = wipe_scenario(seed)
    sim = Simulation(scenario, seed)
    if check is not None:
        check(sim)
    result = sim.run()
    wiped = [f["at"] for f in result.summary["faults"] if f["what"].startswith("store wiped")]
    after = wiped[-1] + serving_again(scenario) if wiped else float("inf")
    late = [r for r in report.instance_rows(result.snapshot.store) if r["created_at"] != "" and r["created_at"] > after]
    return result, late, [(v.name, v.violations[:3]) for v in result.verdicts if not v.ok]


@pytest.mark.parametrize("disabled", ["watch", "keep_default_images"])
def test_without_re_assertion_launches_after_a_wipe_fail(monkeypatch, disabled):
    """Reliability G5: without the hosts' store watch (pools, cores) or without the default images coming back,
    no launch after the wipe ever runs: they fail, or are refused."""
    def blind(*args):
        return None
        yield

    monkeypatch.setattr(recovery, disabled, blind)
    failed = ran = 0
    for seed in range(3):
        result, late, _ = wipe_run(seed)
        failed += sum(1 for r in late if r["error"])
        failed += sum(n for name, n in result.summary["api"]["errors"].items() if name.startswith("RunInstances"))
        ran += sum(1 for r in late if r["running_at"] != "")
    assert failed > 0 and ran == 0


def orphans(sim) -> list[str]:
    """Domains on any hypervisor that no live record of that host owns (what a compute host destroys)."""
    found = []
    store = sim.store.dump()  # either sim store
    for hypervisor in sim.hypervisors:
        for name in hypervisor.domains:
            record = store.get(keys.instance(name)) or {}
            if record.get("host") != hypervisor.host or record.get("state") in (lifecycle.DELETED, lifecycle.ERROR):
                found.append(name)
    return found


def orphans_at_release(seeds, monkeypatch) -> int:
    """Run ``seeds``; -> domains without a live record that were still there as held pools were released."""
    seen = []
    release = recovery.release_held
    current: dict = {}

    def checked(manager, network_id, until):
        seen.extend(orphans(current["sim"]))
        return (yield from release(manager, network_id, until))

    monkeypatch.setattr(recovery, "release_held", checked)
    for seed in seeds:
        wipe_run(seed, check=lambda sim: current.update(sim=sim))
    return len(seen)


def test_the_hold_outlasts_every_orphan_domain(monkeypatch):
    """An address goes back into a pool only once every live compute host has destroyed the domains the store forgot."""
    assert orphans_at_release(range(6), monkeypatch) == 0


def test_without_the_hold_a_pool_comes_back_while_orphans_still_run(monkeypatch):
    """Reliability G5: released at once, a pool's addresses could go to new instances while an orphan still uses one."""
    monkeypatch.setattr(recovery, "hold_seconds", lambda interval: 0.0)
    assert orphans_at_release(range(6), monkeypatch) > 0


def test_a_run_with_a_wipe_is_still_a_function_of_scenario_and_seed():
    """Same seed, same wipe: the same fingerprint."""
    assert wipe_run(4)[0].summary["fingerprint"] == wipe_run(4)[0].summary["fingerprint"]


def test_a_wiped_store_is_re_asserted_and_every_invariant_holds():
    """Each manager and scheduler in turn: I1-I7 hold, the loss is counted, every launch after recovery runs.
    NOVALAB_STORE_WIPE_SEEDS sets the number of seeds (default 9: each pairing once)."""
    seeds = int(os.environ.get("NOVALAB_STORE_WIPE_SEEDS", "9"))
    fired = late_ok = late_failed = 0
    violating = []
    for seed in range(seeds):
        result, late, violations = wipe_run(seed)
        fired += sum(1 for f in result.summary["faults"] if f["what"].startswith("store wiped"))
        late_ok += sum(1 for r in late if r["running_at"] != "")
        late_failed += sum(1 for r in late if r["error"])
        recovered = result.summary["recovered"]
        if violations or recovered.get("hosts") != 5 or not recovered.get("pools"):
            violating.append((seed, violations, recovered))
    print(f"\nstore wipe sweep: {seeds} runs, {fired} wipes fired, {len(violating)} runs with violations, "
          f"launches after recovery: {late_ok} ran, {late_failed} failed")
    assert violating == [] and fired == seeds
    assert late_failed == 0 and late_ok > 0


def test_a_wipe_after_the_last_request_is_waited_out_and_no_pool_ends_held():
    """A wipe late in the run: the drain waits for the held pool's release, so I2 sees no leak."""
    scenario = with_overrides(load(SCENARIOS / "crash-restart.yaml")[0], {"faults": [{"at": 62.2, "store_wipe": True}]})
    result = Simulation(scenario, 164).run()
    assert [v.name for v in result.verdicts if not v.ok] == []
    assert keys.HELD_NETWORKS not in result.snapshot.store and result.summary["recovered"]["pools"] == 1


def test_a_host_dead_for_good_before_a_wipe_is_still_dead_to_the_audit():
    """A compute killed for good, then a wipe takes its heartbeat entry: its domains and queue stay unaudited."""
    loaded, _ = load(SCENARIOS / "5-hosts.yaml")
    scenario = with_overrides(loaded, {"faults": [{"at": 10, "kill": "compute", "host": 2},
                                                  {"at": 120, "store_wipe": True}]})
    result = Simulation(scenario, 3).run()
    assert [v.name for v in result.verdicts if not v.ok] == []
