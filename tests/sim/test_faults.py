"""The fault plan in the sim: kills, restarts and degraded hypervisors, with invariants audited."""

from pathlib import Path

import pytest

from common.analysis import report
from common.cloud import CloudController
from common.scenario import with_overrides
from sim.broker import Broker
from sim.run import simulate
from sim.scenario_file import load

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def scenario(name="5-hosts", faults=(), **overrides):
    loaded, _ = load(SCENARIOS / f"{name}.yaml")
    return with_overrides(loaded, {"faults": list(faults), **overrides})


def failed(result):
    return [(v.name, v.violations[:3]) for v in result.verdicts if not v.ok]


def reasons(result):
    return result.summary["instances"]["errors_by_reason"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_the_shipped_crash_scenario_keeps_every_invariant(seed):
    """crash-restart.yaml: the kill bites builds in flight, and I1-I7 still hold."""
    result = simulate(load(SCENARIOS / "crash-restart.yaml")[0], seed)
    assert failed(result) == []
    assert [f["what"] for f in result.summary["faults"]][:1] == ["killed compute.host2"]


def test_kill_times_across_a_run_never_break_an_invariant():
    """A compute killed at each of many moments and restarted: no leak, nothing stuck, and some kills bite."""
    bitten = 0
    for at in range(10, 130, 6):
        result = simulate(scenario(faults=[{"at": at, "kill": "compute", "host": 1 + at % 5, "restart_after": 15}],
                                   **{"workload.arrivals.rate": 1.0}), seed=at)
        assert failed(result) == [], at
        bitten += sum(n for reason, n in reasons(result).items() if "restarted during" in reason)
    assert bitten > 0


def never_returns(seed=1):
    return scenario(faults=[{"at": 30, "kill": "compute", "host": 2}], **{"workload.arrivals.rate": 1.0,
                                                                          "seed": seed})


def test_a_compute_that_never_returns_has_its_terminates_settled_by_the_api():
    """Instances terminated on a dead host are deleted with their addresses back: I1-I7 hold, none stays shutting_down."""
    result = simulate(never_returns())
    assert failed(result) == []
    assert result.summary["instances"]["shutting_down"] == 0 and result.summary["instances"]["deleted"] > 0


def test_nothing_is_sent_to_a_dead_host_once_it_is_known_dead(monkeypatch):
    """After service_down_time (and one heartbeat) no message is published to the dead host's queue."""
    sent = []
    publish = Broker.publish
    monkeypatch.setattr(Broker, "publish",
                        lambda self, key, body, *more: sent.append((self.env.now, key)) or publish(self, key, body, *more))
    s = never_returns()
    result = simulate(s)
    known_dead = 30 + s.timing.service_down_time + s.timing.report_interval
    assert [at for at, key in sent if key == "compute.host2" and at > known_dead] == []
    assert result.summary["stranded_messages"] == sum(1 for at, key in sent if key == "compute.host2" and at > 30)


def test_without_settling_dead_hosts_the_terminates_stay_stuck(monkeypatch):
    """G5: with the API trusting every host to be up, a host that never returns leaves I4 and I5 failing."""
    monkeypatch.setattr(CloudController, "_compute_is_up", lambda self, host: (yield from ()) or True)
    result = simulate(never_returns())
    assert {name for name, _ in failed(result)} == {"I4", "I5"}
    assert result.summary["instances"]["shutting_down"] > 0


def test_a_dead_host_that_comes_back_late_destroys_what_the_api_settled():
    """Back after its terminates were settled, the host's start-up removes their domains: I3 holds."""
    result = simulate(scenario(faults=[{"at": 30, "kill": "compute", "host": 2, "restart_after": 900}],
                               **{"workload.arrivals.rate": 1.0}))
    assert failed(result) == [] and result.summary["stranded_messages"] == 0


def test_the_scheduler_stops_placing_on_a_host_once_its_heartbeats_are_stale():
    """After service_down_time without heartbeats the simple scheduler sends nothing to the dead host."""
    s = scenario(faults=[{"at": 30, "kill": "compute", "host": 2}], **{"workload.lifetime": None})
    result = simulate(s)
    cutoff = 30 + s.timing.service_down_time + s.timing.report_interval
    placed_late = {r["host"] for r in report.instance_rows(result.snapshot.store) if r["created_at"] > cutoff and r["host"]}
    assert placed_late and "host2" not in placed_late


def test_a_network_worker_killed_and_restarted_costs_only_the_builds_that_needed_it():
    """While net1 is down, builds time out on their network call and error cleanly; after it returns, builds succeed."""
    result = simulate(scenario(faults=[{"at": 40, "kill": "network", "restart_after": 60}],
                               **{"timing.network_call_timeout": 10}))
    assert failed(result) == []
    rows = report.instance_rows(result.snapshot.store)
    assert any("RpcTimeout" in r["error"] or "network" in r["error"] for r in rows if r["error"])
    assert any(r["running_at"] != "" and r["created_at"] > 110 for r in rows)


def test_scaled_out_schedulers_and_network_hosts_share_their_topics_and_survive_losing_one():
    """Two schedulers and two network hosts each take messages from their shared topic; with sched2 and net2
    killed for good, I1-I7 hold and only the survivors handle messages afterwards."""
    kills = [{"at": 60, "kill": "scheduler", "host": 2}, {"at": 60, "kill": "network", "host": 2}]
    result = simulate(scenario(faults=kills, **{"cloud.schedulers": 2, "cloud.network.hosts": 2}))
    assert failed(result) == []
    handled = [(row[1], row[7].rsplit("-", 1)[0], row[6]) for row in result.recorder.rpc_rows]
    assert {("scheduler", "scheduler.sched2"), ("network", "network.net2")} <= {(q, c) for q, c, _ in handled}
    assert {("scheduler", "scheduler.sched1"), ("network", "network.net1")} <= {(q, c) for q, c, _ in handled}
    assert [c for _, c, at in handled if at > 60 and c in ("scheduler.sched2", "network.net2")] == []


def test_a_degraded_hypervisor_fails_spawns_only_on_its_host_and_only_while_degraded():
    """Spawn failures fall on host3 between the fault's start and its end, nowhere else."""
    result = simulate(scenario(faults=[{"at": 20, "hypervisor": 3, "spawn_failure_probability": 1.0, "duration": 100}]))
    failures = [r for r in report.instance_rows(result.snapshot.store) if "failed to boot" in r["error"]]
    assert failures and {r["host"] for r in failures} == {"host3"}
    assert all(20 <= r["created_at"] <= 120 + 60 for r in failures)
    assert failed(result) == []


def test_a_slowed_hypervisor_lengthens_time_to_running():
    """Boots four times slower on every host raise the p50 time to running."""
    plain = simulate(scenario())
    slowed = simulate(scenario(faults=[{"at": 0, "hypervisor": h, "boot_slowdown": 4} for h in range(1, 6)]))
    assert slowed.summary["time_to_running"]["p50"] > 2 * plain.summary["time_to_running"]["p50"]


def test_the_same_fault_plan_and_seed_give_the_same_fingerprint():
    """Faults are part of the scenario: a run with them is still a function of scenario, seed and commit."""
    plan = [{"at": 35, "kill": "compute", "host": 3, "restart_after": 10}]
    first, again = simulate(scenario(faults=plan), 7), simulate(scenario(faults=plan), 7)
    without = simulate(scenario(), 7)
    assert first.summary["fingerprint"] == again.summary["fingerprint"]
    assert first.summary["fingerprint"] != without.summary["fingerprint"]


# -- crash points: a service killed at each step of its own work --------------------------

ONE_HOST = {"cloud.hosts.count": 1, "cloud.hosts.vcpus": 16, "workload.requests": 6,
            "workload.arrivals.rate": 0.5, "workload.floating_ips": 0.0}


def crash_sweep(name, kind, points):
    """Run ``name`` on one host with ``kind`` crashed after k effects (and restarted), for each
    k < points; -> (runs in which the crash fired, invariant failures by k, error reasons)."""
    fired, failures, reasons_seen = 0, {}, set()
    for k in range(1, points):
        result = simulate(scenario(name, [{"after_effects": k, "kill": kind, "restart_after": 5}], **ONE_HOST))
        fired += bool(result.summary["faults"])
        if failed(result):
            failures[k] = failed(result)
        reasons_seen |= set(reasons(result))
    return fired, failures, reasons_seen


@pytest.mark.parametrize("name, kind, points", [("5-hosts", "compute", 130), ("flatdhcp", "network", 180)])
def test_a_crash_at_every_effect_of_a_service_never_breaks_an_invariant(name, kind, points):
    """Reliability B3: whatever step a compute or network worker dies at, restart leaves I1-I7 holding."""
    fired, failures, reasons_seen = crash_sweep(name, kind, points)
    assert failures == {}
    assert fired > points // 4 and reasons_seen  # the crashes happened, and some cut work short


def test_without_the_leak_sweep_a_network_crash_point_leaks_an_address(monkeypatch):
    """Reliability G5: the crash sweep sees the SPOP-then-record window when nothing closes it."""
    from common.network import FlatManager

    def no_sweep(self, grace):
        return 0
        yield

    monkeypatch.setattr(FlatManager, "sweep_leaked_addresses", no_sweep)
    _, failures, _ = crash_sweep("5-hosts", "network", 20)
    assert any(name == "I2" for found in failures.values() for name, _ in found)


# -- store outages ------------------------------------------------------------------------


def outage_runs(seeds=(0, 1)):
    """5-hosts with the store down at several moments for short and long spells; -> results."""
    for seed in seeds:
        for at in (10, 23.3, 41.7, 66.1, 90.9):
            for seconds in (0.5, 5, 40):
                yield simulate(scenario(faults=[{"at": at + seed * 0.37, "store_outage": seconds}]), seed)


def test_store_outages_never_break_an_invariant():
    """Reliability D1: with Redis unreachable between any two effects, workflows fail closed and I1-I7 hold after."""
    timed_out = 0
    for result in outage_runs():
        assert failed(result) == [], result.summary["faults"]
        timed_out += sum(n for reason, n in reasons(result).items() if "timed out" in reason)
    assert timed_out > 0  # outages did cut builds short


def test_without_the_reapers_cleanup_an_outage_leaves_an_orphan_domain(monkeypatch):
    """Reliability G5: a boot the store never recorded leaves a domain, which I3 sees when nothing removes it."""
    from common.compute import ComputeManager

    def nothing(self, *args):
        return []
        yield

    monkeypatch.setattr(ComputeManager, "cleanup_instance", nothing)
    monkeypatch.setattr(ComputeManager, "sync_domains", nothing)
    assert any(name == "I3" for result in outage_runs(seeds=(0,)) for name, _ in failed(result))


# -- poison messages -----------------------------------------------------------------------

POISONED_TOPICS = ("compute", "compute.1", "compute.3", "compute.5", "network", "network.1", "scheduler", "scheduler.1")
POISON_BODIES = ("nested", "binary", "huge", "badargs")


def poison_run(body, seed):
    """5-hosts with one ``body`` poison message on every topic, spread over the busy part of the run."""
    faults = [{"at": 12 + 9 * i + seed * 0.61, "poison": topic, "body": body} for i, topic in enumerate(POISONED_TOPICS)]
    return simulate(scenario(faults=faults), seed)


@pytest.mark.parametrize("body", POISON_BODIES)
def test_poison_on_every_topic_is_answered_once_and_every_worker_keeps_serving(body):
    """Reliability A10/A14: each poison message is dropped as poison exactly once; the invariants and the SLO hold."""
    for seed in range(3):
        result = poison_run(body, seed)
        assert failed(result) == [], (body, seed)
        poisoned = [row for row in result.recorder.rpc_rows if row[-1].startswith("poison:")]
        assert len(poisoned) == len(POISONED_TOPICS), (body, seed)
        assert result.summary["instances"]["errors_by_reason"] == {}, (body, seed)
        assert all(verdict["ok"] for verdict in result.summary["slo"]), (body, seed)
