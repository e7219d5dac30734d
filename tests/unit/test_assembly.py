"""The run's assembly, built once from the scenario: roster, settings, daemon configuration."""

from pathlib import Path

import pytest

from common import assembly, keys
from common.effects import Batch, HGet, HSet, Now
from common.scenario import with_overrides
from real.config import FROM_SCENARIO, DaemonConfig
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]


def scenario(name="vlan", **overrides):
    loaded, _ = load(ROOT / "scenarios" / f"{name}.yaml")
    return with_overrides(loaded, overrides) if overrides else loaded


def test_roster_starts_network_hosts_first_and_pads_compute_names():
    """Network hosts come before compute hosts (whose start-up needs networks); names sort as numbered."""
    specs = assembly.roster(scenario(**{"cloud.hosts.count": 12, "cloud.scheduler": "simple"}))
    assert [s.topic for s in specs][:1] == ["network"]
    computes = [s.host for s in specs if s.topic == "compute"]
    assert computes[0] == "host01" and computes[-1] == "host12" and computes == sorted(computes)
    assert specs[-1].name == "scheduler.sched1"


def test_roster_runs_the_scenarios_count_of_schedulers_and_network_hosts():
    """cloud.schedulers and cloud.network.hosts give sched1..schedN and net1..netN."""
    specs = assembly.roster(scenario(**{"cloud.schedulers": 3, "cloud.network.hosts": 2, "cloud.scheduler": "simple"}))
    assert [s.host for s in specs if s.topic == "scheduler"] == ["sched1", "sched2", "sched3"]
    assert [s.host for s in specs if s.topic == "network"] == ["net1", "net2"]


def test_queue_names_list_each_topic_once_and_each_services_own_queue():
    """Workers of a kind share their topic's queue and each has <topic>.<host>."""
    specs = assembly.roster(scenario(**{"cloud.schedulers": 2, "cloud.hosts.count": 1, "cloud.scheduler": "simple"}))
    assert assembly.queue_names(specs) == ["network", "compute", "scheduler", "network.net1", "compute.host1",
                                           "scheduler.sched1", "scheduler.sched2"]


def test_queue_dispatch_runs_no_scheduler():
    """With the 2010 queue dispatch there is no scheduler service in the roster."""
    assert "scheduler" not in {s.topic for s in assembly.roster(scenario(**{"cloud.scheduler": "queue"}))}


def test_real_mode_runs_its_own_number_of_compute_hosts():
    """``compute_count`` (real.hosts) replaces cloud.hosts.count."""
    assert sum(s.topic == "compute" for s in assembly.roster(scenario(), compute_count=3)) == 3


@pytest.mark.parametrize("name", ["flat", "flatdhcp", "vlan", "real-small"])
def test_a_daemon_configured_from_a_scenario_runs_the_managers_the_sim_runs(name):
    """DaemonConfig.from_scenario(...).settings() equals the sim's settings: one mapping, no copy by hand."""
    s = scenario(name)
    daemon = DaemonConfig.from_scenario(s).settings()
    sim = assembly.Settings.from_scenario(s)
    for field in ("network", "max_cores", "service_down_time", "floating_range", "report_interval",
                  "periodic_interval", "domain_sync_interval", "host_memory_mb"):
        assert getattr(daemon, field) == getattr(sim, field), field
    assert daemon.scheduler_config() == sim.scheduler_config()


def test_every_scenario_path_of_the_daemon_table_exists():
    """Each FROM_SCENARIO entry names a real daemon field and a real scenario field."""
    s = scenario()
    for name, path in FROM_SCENARIO.items():
        assert name in DaemonConfig.model_fields
        node = s
        for part in path.split("."):
            node = getattr(node, part)


def test_start_up_is_one_list_of_steps_per_kind():
    """Compute reconciles its host; a network host seeds networks, rebuilds what it serves, returns leaks;
    both then mark themselves in the store (the store watch's marker)."""
    settings = assembly.Settings.from_scenario(scenario("flat"))
    for topic, host, expected in (("compute", "host1", ["init_host"]),
                                  ("network", "net2", ["create_networks", "init_host", "sweep_leaked_addresses"])):
        manager = _Recording()
        effects = _drain(assembly.start_up(topic, host, manager, settings))
        assert manager.steps == expected
        assert effects == [Now(), HSet(keys.ASSERTED, {f"{topic}.{host}": "1.0"})]


def test_only_compute_and_network_heartbeats_watch_the_store():
    """A scheduler's heartbeat is its ZADD; a compute host's whose entry was gone reads its marker."""
    settings = assembly.Settings.from_scenario(scenario("flat"))
    for topic, watched in (("compute", True), ("network", True), ("scheduler", False)):
        manager = _Recording()
        manager.store_check_due, manager.held = False, {}
        effects = _drain(assembly.heartbeat(topic, "h1", manager, settings), reply=1)
        assert (HGet(keys.ASSERTED, f"{topic}.h1") in effects) is watched


class _Recording:
    """A manager stand-in that records which start-up steps ran."""

    def __init__(self):
        self.steps = []

    def __getattr__(self, name):
        def step(*args):
            self.steps.append(name)
            return None
            yield

        return step


def _drain(gen, reply=None):
    """Run ``gen``, answering Now with 1.0, the heartbeat's Batch with ``[reply, None]`` (not parked) and
    anything else with ``reply``; -> the effects it yielded
    (the stand-in manager's steps yield none of their own)."""
    effects, answer = [], None
    for _ in range(10):
        try:
            effect = gen.send(answer)
        except StopIteration:
            return effects
        effects.append(effect)
        answer = 1.0 if effect == Now() else [reply, None] if isinstance(effect, Batch) else reply
    raise AssertionError("start-up kept yielding")
