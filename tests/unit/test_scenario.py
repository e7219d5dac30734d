"""The scenario schema: shipped files parse, each mistake is one problem naming its field."""

import copy
import random
from pathlib import Path

import pytest
import yaml

from common import distributions as d
from common import rpc
from common.scenario import ScenarioError, parse, parse_yaml, with_overrides

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))
BASE = {"name": "t", "cloud": {"hosts": {"count": 2}}, "workload": {"arrivals": {"rate": 1}, "requests": 10}}


def problem(**changes):
    """Parse BASE with ``changes`` (path parts joined by ``__`` -> value); -> its one problem."""
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    with pytest.raises(ScenarioError) as raised:
        parse(data, "t.yaml")
    problems = raised.value.problems
    assert len(problems) == 1, problems
    assert str(raised.value) == f"t.yaml: {problems[0]}"
    return problems[0]


def test_the_shipped_scenarios_exist():
    """The repository ships at least the 5-host and 500-host scenarios."""
    assert {"5-hosts.yaml", "500-hosts.yaml"} <= {p.name for p in SCENARIOS}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_shipped_scenario_parses(path):
    """Every file in scenarios/ is a valid scenario named like its file."""
    scenario = parse(yaml.safe_load(path.read_text()), str(path))
    assert scenario.name == path.stem


def test_defaults_of_a_minimal_scenario():
    """Unset fields take the documented defaults."""
    s = parse(copy.deepcopy(BASE))
    assert (s.cloud.scheduler, s.cloud.hosts.vcpus, s.max_cores, s.cloud.network.fixed_range) == ("simple", 16, 16, "10.0.0.0/16")
    assert s.timing.hypervisor.boot_time == d.LogNormal(20.0, 45.0)
    assert s.workload.lifetime == d.Exponential(600.0)


def test_not_a_mapping():
    """A top level that is not a mapping is one problem saying so."""
    with pytest.raises(ScenarioError, match="expected a mapping of sections at the top level, got list"):
        parse([1, 2], "t.yaml")


def test_unknown_field_lists_the_allowed_ones():
    """A misspelt field names its path and every field allowed there."""
    assert problem(cloud__hosts__cnt=3) == "cloud.hosts.cnt: unknown field (expected one of: count, memory_mb, vcpus, workers)"
    assert problem(bogus=1).startswith("bogus: unknown field (expected one of: calibration, cloud, description,")


def test_unknown_field_inside_a_list_and_a_dict():
    """Unknown fields in list items and dict values still list the item model's fields."""
    assert problem(cloud__projects=[{"id": "a", "quota": {"x": 1}}]) == "cloud.projects.0.quota.x: unknown field (expected one of: cores, floating_ips, instances)"
    assert problem(cloud__instance_types={"m1.small": {"vcpus": 1, "memory_mb": 1, "gpus": 1}}) == (
        "cloud.instance_types.m1.small.gpus: unknown field (expected one of: disk_gb, memory_mb, vcpus)"
    )


def test_missing_section():
    """A missing required section is named."""
    data = copy.deepcopy(BASE)
    del data["workload"]
    with pytest.raises(ScenarioError) as raised:
        parse(data)
    assert raised.value.problems == ("workload: required field is missing",)


def test_wrong_type_names_the_value():
    """A value of the wrong type names the path, what was expected and what was given."""
    assert problem(workload__requests="many") == (
        "workload.requests: Input should be a valid integer, unable to parse string as an integer (got 'many')"
    )


@pytest.mark.parametrize("count", [0, -1])
def test_non_positive_hosts(count):
    """cloud.hosts.count must be positive."""
    assert problem(cloud__hosts__count=count) == f"cloud.hosts.count: Input should be greater than 0 (got {count})"


def test_unknown_distribution():
    """A distribution kind not in KINDS is named with the kinds allowed."""
    assert problem(timing__store={"gamma": {"k": 1}}) == (
        "timing.store: unknown distribution 'gamma'; expected one of: constant, uniform, exponential, lognormal, normal, empirical"
    )


def test_bad_distribution_parameters():
    """A lognormal whose p95 is below its median says so at its path."""
    assert problem(timing__hypervisor={"boot_time": {"lognormal": {"median": 5, "p95": 2}}}).startswith(
        "timing.hypervisor.boot_time: lognormal needs 0 < median < p95"
    )


@pytest.mark.parametrize(
    "cidr, what",
    [
        ("10.0.0.1/24", "expected a network in CIDR form"),
        ("banana", "expected a network in CIDR form"),
        ("10.0.0.0/31", "needs at least 4 addresses"),
        ("10.0.0.0/8", "larger than /12"),
        ("fd00::/120", "expected an IPv4 network"),
    ],
)
def test_bad_cidr(cidr, what):
    """cloud.network.fixed_range must be a network of sensible size."""
    text = problem(cloud__network={"fixed_range": cidr})
    assert text.startswith("cloud.network.fixed_range: ") and what in text and repr(cidr) in text


def test_ipv6_floating_range():
    """cloud.network.floating_range must be IPv4, as every 2010 network manager is."""
    text = problem(cloud__network={"floating_range": "2001:db8::/120"})
    assert text.startswith("cloud.network.floating_range: ") and "expected an IPv4 network" in text


def test_unknown_scheduler():
    """cloud.scheduler must be queue, chance or simple."""
    assert problem(cloud__scheduler="fifo") == "cloud.scheduler: Input should be 'queue', 'chance' or 'simple' (got 'fifo')"


def test_workload_with_unknown_instance_type():
    """A workload instance type not in cloud.instance_types names both fields."""
    text = problem(workload__instance_types={"m1.huge": 1})
    assert text.startswith("workload.instance_types: m1.huge not in cloud.instance_types (expected one of: ")
    assert "m1.medium" in text


def test_workload_with_unknown_project():
    """A workload project not in cloud.projects names it."""
    assert problem(workload__projects={"nobody": 1}) == (
        "workload.projects: nobody not in cloud.projects (expected one of: demo)"
    )


def test_workload_with_unknown_image():
    """A workload image not in cloud.images names it."""
    assert problem(workload__image="ami-x") == "workload.image: 'ami-x' is not in cloud.images (expected one of: ami-tiny)"


def test_instance_type_bigger_than_max_cores():
    """A workload type that can never fit under max_cores is refused."""
    text = problem(workload__instance_types={"m1.large": 1}, cloud__max_cores=2)
    assert text == "workload.instance_types.m1.large: 4 vCPUs can never fit under cloud.max_cores 2"


@pytest.mark.parametrize(
    "changes, paths",
    [
        ({"workload__instance_types": {"m1.huge": 1}}, {"workload.instance_types"}),
        ({"workload__projects": {"nobody": 1}}, {"workload.projects"}),
        ({"workload__image": "ami-x"}, {"workload.image"}),
        ({"workload__instance_types": {"m1.large": 1}, "cloud__max_cores": 2}, {"workload.instance_types.m1.large", "cloud.max_cores"}),
    ],
)
def test_cross_reference_problem_is_reported_at_its_field_path(changes, paths):
    """The module promises '<field.path>: <what was expected>' for every problem."""
    assert problem(**changes).split(": ")[0] in paths


def test_duplicate_and_missing_projects():
    """Project ids must be unique, and there must be one."""
    assert problem(cloud__projects=[{"id": "a"}, {"id": "a"}]) == "cloud: project ids must be unique; repeated: a"
    assert problem(cloud__projects=[]) == "cloud: at least one project is needed"


def test_several_mistakes_are_all_reported():
    """Independent mistakes each get their own line."""
    data = copy.deepcopy(BASE)
    data["cloud"]["hosts"]["count"] = 0
    data["workload"]["requests"] = -1
    with pytest.raises(ScenarioError) as raised:
        parse(data)
    assert [p.split(":")[0] for p in raised.value.problems] == ["cloud.hosts.count", "workload.requests"]


# -- distributions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        (0.002, d.Constant(0.002)),
        (5, d.Constant(5.0)),
        ({"constant": 1}, d.Constant(1.0)),
        ({"uniform": [0.001, 0.003]}, d.Uniform(0.001, 0.003)),
        ({"exponential": {"mean": 600}}, d.Exponential(600.0)),
        ({"lognormal": {"median": 20, "p95": 45}}, d.LogNormal(20.0, 45.0)),
        ({"normal": {"mean": 20, "stddev": 3}}, d.Normal(20.0, 3.0)),
        ({"empirical": [0, 1, 1, 4]}, d.Empirical((0.0, 1.0, 1.0, 4.0))),
    ],
)
def test_distribution_parse_and_to_spec_round_trip(spec, expected):
    """parse(spec) gives the distribution; parse(to_spec()) gives it back again."""
    assert d.parse(spec) == expected
    assert d.parse(expected.to_spec()) == expected


@pytest.mark.parametrize(
    "dist, low, high",
    [
        (d.Constant(2.0), 2.0, 2.0),
        (d.Uniform(1.0, 3.0), 1.0, 3.0),
        (d.Exponential(5.0), 0.0, float("inf")),
        (d.Exponential(0.0), 0.0, 0.0),
        (d.LogNormal(20.0, 45.0), 0.0, float("inf")),
        (d.Normal(1.0, 5.0), 0.0, float("inf")),
        (d.Empirical((0.5, 0.6, 3.0)), 0.5, 3.0),
    ],
)
def test_distribution_samples_in_range_and_reproducibly(dist, low, high):
    """Samples lie in the support, and the same seed gives the same draws."""
    draws = [dist.sample(random.Random(1)) for _ in range(2)]
    many = [dist.sample(rng) for rng in [random.Random(7)] for _ in range(200)]
    assert draws[0] == draws[1]
    assert all(low <= x <= high for x in many)


def test_lognormal_is_set_by_median_and_p95():
    """About half the draws are under the median and about 95% under p95."""
    rng, dist = random.Random(1), d.LogNormal(20.0, 45.0)
    draws = sorted(dist.sample(rng) for _ in range(4000))
    assert 18 < draws[2000] < 22 and 40 < draws[3800] < 50
    assert dist.mean == pytest.approx(sum(draws) / len(draws), rel=0.05)


def test_empirical_interpolates_between_its_quantiles():
    """Half the draws of [0, 1, 9] fall under 1 (the median), and between quantiles the values spread evenly."""
    rng, dist = random.Random(3), d.Empirical((0.0, 1.0, 9.0))
    draws = sorted(dist.sample(rng) for _ in range(4000))
    assert 0.9 < draws[2000] < 1.1
    assert 0.45 < draws[1000] < 0.55 and 4.6 < draws[3000] < 5.4
    assert dist.mean == pytest.approx(sum(draws) / len(draws), rel=0.05) and dist.mean == 2.75


def test_empirical_with_equal_quantiles_is_a_constant():
    """Two equal quantiles give that value every time."""
    rng = random.Random(1)
    assert {d.Empirical((2.0, 2.0)).sample(rng) for _ in range(10)} == {2.0}


@pytest.mark.parametrize(
    "spec, message",
    [
        (True, "expected a number or a one-key mapping"),
        ({"constant": 1, "uniform": [1, 2]}, "expected a number or a one-key mapping"),
        ({"zipf": 1}, "unknown distribution 'zipf'"),
        (-1, "constant must not be negative"),
        ({"uniform": [3, 1]}, "uniform high 1.0 is below low 3.0"),
        ({"uniform": 3}, "uniform takes [low, high]"),
        ({"exponential": 5}, "exponential takes a mapping of parameters"),
        ({"exponential": {"mean": 5, "rate": 1}}, "exponential takes exactly ['mean']"),
        ({"normal": {"mean": 1, "stddev": -1}}, "normal stddev must not be negative"),
        ({"constant": float("nan")}, "must be a finite number"),
        ({"constant": "1"}, "must be a finite number"),
        ({"empirical": [1]}, "empirical takes a list of 2 to 1001 quantiles"),
        ({"empirical": {"median": 1}}, "empirical takes a list"),
        ({"empirical": list(range(1002))}, "empirical takes a list of 2 to 1001 quantiles"),
        ({"empirical": [1, 3, 2]}, "empirical quantiles must not decrease: quantile 2 is 2.0, below 3.0"),
        ({"empirical": [-1, 3]}, "empirical quantile 0 must not be negative"),
        ({"empirical": [0, "x"]}, "empirical quantile 1 must be a finite number"),
    ],
)
def test_distribution_parse_errors(spec, message):
    """Each bad spec is a ValueError saying what is wrong."""
    with pytest.raises(ValueError) as raised:
        d.parse(spec)
    assert message in str(raised.value)


# -- with_overrides --------------------------------------------------------------------


def test_with_overrides_changes_nested_fields():
    """Dotted paths change nested fields, distributions included; the rest is unchanged."""
    s = parse(copy.deepcopy(BASE))
    t = with_overrides(s, {"cloud.hosts.count": 9, "timing.rpc": {"uniform": [0.001, 0.002]}})
    assert (t.cloud.hosts.count, t.timing.rpc) == (9, d.Uniform(0.001, 0.002))
    assert t.model_copy(update={"cloud": s.cloud, "timing": s.timing}) == s
    assert with_overrides(s, {}) == s


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"cloud.hosts.cnt": 1}, "<overrides>: cloud.hosts.cnt: unknown field (expected one of: count, memory_mb, vcpus, workers)"),
        ({"nope.x": 1}, "<overrides>: nope.x: no such field"),
        ({"cloud.hosts.count.x": 1}, "<overrides>: cloud.hosts.count.x: no such field"),
        ({"workload.requests": 0}, "<overrides>: workload.requests: Input should be greater than 0 (got 0)"),
    ],
)
def test_with_overrides_rejects_unknown_paths_and_bad_values(overrides, message):
    """A path naming no field, or a value the schema refuses, is a ScenarioError."""
    with pytest.raises(ScenarioError) as raised:
        with_overrides(parse(copy.deepcopy(BASE)), overrides)
    assert str(raised.value) == message


def test_a_fault_names_one_kind():
    """A fault with neither kill nor hypervisor says which to give."""
    assert problem(faults=[{"at": 5}]) == ("faults.0: give exactly one of kill, hypervisor, store_outage (seconds), "
                                           "store_wipe (true), store_stall (seconds), poison (a topic), webhook_outage (seconds) "
                                           "or broker_outage (seconds)")


def test_a_webhook_outage_needs_receivers():
    """A webhook_outage in a scenario without a webhooks section is refused, saying why."""
    assert problem(faults=[{"at": 5, "webhook_outage": 10}]) == (
        "faults.0: a webhook_outage needs a webhooks section (receivers to take down)")


def test_webhook_projects_must_be_cloud_projects():
    """webhooks.projects naming a project the cloud lacks is refused with the known ones."""
    assert problem(webhooks={"projects": ["nosuch"]}).startswith("webhooks.projects: nosuch not in cloud.projects")


def test_a_fault_on_a_host_the_cloud_lacks_is_refused():
    """Killing compute 3 of a 2-host cloud names the count."""
    assert problem(faults=[{"at": 5, "kill": "compute", "host": 3}]) == "faults.0: kill compute 3: the cloud has 2 compute services"


def test_killing_the_scheduler_of_a_queue_cloud_is_refused():
    """With queue dispatch there is no scheduler service to kill."""
    assert problem(cloud__scheduler="queue", faults=[{"at": 5, "kill": "scheduler"}]) == (
        "faults.0: kill scheduler: cloud.scheduler is queue, so there is no scheduler service")


def test_a_fault_on_a_scheduler_past_cloud_schedulers_is_refused():
    """Killing scheduler 3 of cloud.schedulers 2 names the count; scheduler 2 is fine."""
    assert problem(cloud__schedulers=2, faults=[{"at": 5, "kill": "scheduler", "host": 3}]) == (
        "faults.0: kill scheduler 3: the cloud has 2 scheduler services")
    fine = {**copy.deepcopy(BASE), "faults": [{"at": 5, "kill": "scheduler", "host": 2}]}
    fine["cloud"]["schedulers"] = 2
    assert parse(fine).faults[0].host == 2


def test_hypervisor_settings_do_not_go_with_kill():
    """duration on a kill is a mistake, not silently ignored."""
    assert problem(faults=[{"at": 5, "kill": "network", "duration": 10}]) == (
        "faults.0: duration goes with hypervisor, not with kill")


def test_a_hypervisor_fault_must_change_something():
    """A hypervisor fault with no slowdown and no failure probability is refused."""
    assert problem(faults=[{"at": 5, "hypervisor": 1}]) == (
        "faults.0: a hypervisor fault needs boot_slowdown > 1 or spawn_failure_probability")


def test_a_valid_fault_plan_describes_itself():
    """The labels in the summary read like the plan."""
    s = parse({**copy.deepcopy(BASE), "faults": [{"at": 5, "kill": "compute", "host": 2, "restart_after": 30},
                                                  {"at": 9, "hypervisor": 1, "boot_slowdown": 3, "duration": 60}]})
    assert [f.describe() for f in s.faults] == ["kill compute 2, restart after 30 s", "hypervisor 1: boots x3 for 60 s"]


def test_a_broker_outage_needs_a_time_and_takes_nothing_else():
    """broker_outage is a duration at a time; a host on it is a mistake, not ignored."""
    s = parse({**copy.deepcopy(BASE), "faults": [{"at": 30, "broker_outage": 10}]})
    assert [f.describe() for f in s.faults] == ["broker outage for 10 s"]
    assert problem(faults=[{"broker_outage": 10}]) == "faults.0: a broker outage needs at (seconds)"
    assert problem(faults=[{"at": 5, "broker_outage": 10, "host": 2}]) == (
        "faults.0: host goes with kill, not with broker_outage")


def test_a_fault_plan_survives_overrides():
    """with_overrides dumps and re-validates: faults with their defaults come back unchanged."""
    s = parse({**copy.deepcopy(BASE), "faults": [{"at": 5, "kill": "compute", "restart_after": 30},
                                                  {"at": 9, "hypervisor": 2, "spawn_failure_probability": 0.5}]})
    assert with_overrides(s, {"workload.requests": 3}).faults == s.faults


def test_a_kill_takes_a_time_or_a_crash_point_not_both():
    """at and after_effects together are ambiguous, and one of them is needed."""
    message = "faults.0: a kill needs exactly one of at (seconds) or after_effects (a crash point)"
    assert problem(faults=[{"at": 5, "after_effects": 9, "kill": "compute"}]) == message
    assert problem(faults=[{"kill": "compute"}]) == message


def test_a_crash_point_describes_itself():
    """A kill after k effects says so in its label."""
    s = parse({**copy.deepcopy(BASE), "faults": [{"after_effects": 40, "kill": "network", "restart_after": 5}]})
    assert s.faults[0].describe() == "kill network 1 after 40 effects, restart after 5 s"


def test_a_store_outage_takes_a_time_and_nothing_of_the_other_kinds():
    """A store outage needs at; restart_after belongs to kills."""
    assert problem(faults=[{"store_outage": 5}]) == "faults.0: a store outage needs at (seconds)"
    assert problem(faults=[{"at": 1, "store_outage": 5, "restart_after": 3}]) == (
        "faults.0: restart_after goes with kill, not with store_outage")


def test_a_store_stall_takes_a_time_or_a_store_command_and_nothing_of_the_other_kinds():
    """A store stall needs exactly one of at or after_effects; a kill's fields are refused."""
    assert problem(faults=[{"store_stall": 10}]) == (
        "faults.0: a store stall needs exactly one of at (seconds) or after_effects (a crash point)")
    assert problem(faults=[{"at": 1, "after_effects": 9, "store_stall": 10}]) == (
        "faults.0: a store stall needs exactly one of at (seconds) or after_effects (a crash point)")
    assert problem(faults=[{"at": 1, "store_stall": 10, "host": 2}]) == (
        "faults.0: host goes with kill, not with store_stall")
    assert parse({**copy.deepcopy(BASE), "faults": [{"after_effects": 300, "store_stall": 20}]},
                 "t.yaml").faults[0].describe() == "store stall for 20 s from store command 300"


def test_a_poison_fault_names_a_topic_a_time_and_a_body():
    """A poison fault takes at, a kind's topic or one service's queue, and one of the known bodies."""
    fault = parse({**copy.deepcopy(BASE), "faults": [{"at": 3, "poison": "compute.2", "body": "badargs"}]}).faults[0]
    assert rpc.poison_target(fault.poison) == ("compute", 2) and fault.describe() == "poison (badargs) on compute.2"
    assert problem(faults=[{"poison": "compute"}]) == "faults.0: a poison message needs at (seconds)"
    assert problem(faults=[{"at": 1, "poison": "compute", "host": 2}]) == (
        "faults.0: host goes with kill, not with poison")
    assert problem(faults=[{"at": 1, "kill": "compute", "body": "binary"}]) == "faults.0: body goes with poison, not with kill"
    assert "poison" in problem(faults=[{"at": 1, "poison": "compute.x"}])
    assert "body" in problem(faults=[{"at": 1, "poison": "compute", "body": "xml"}])


# -- calibration files -----------------------------------------------------------------

CALIBRATION = {"provenance": {"real_run": "runs/x"},
               "timing": {"store": 0.003, "hypervisor": {"boot_time": {"empirical": [0.01, 0.02, 0.5]}}}}


def with_calibration(calibration, name="cal.yaml"):
    """BASE naming ``name`` as its calibration, read through a fake file reader; -> the scenario."""
    files = {name: yaml.safe_dump(calibration).encode()} if calibration is not None else {}

    def read_beside(wanted):
        if wanted not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[wanted]

    return parse_yaml(yaml.safe_dump({**BASE, "calibration": "cal.yaml"}), "t.yaml", read_beside=read_beside)


def test_a_calibration_replaces_only_the_timing_fields_it_lists():
    """store and the boot time come from the file; rpc and the destroy time keep their defaults."""
    scenario = with_calibration(CALIBRATION)
    assert scenario.timing.store == d.Constant(0.003)
    assert scenario.timing.hypervisor.boot_time == d.Empirical((0.01, 0.02, 0.5))
    assert scenario.timing.rpc == parse(BASE).timing.rpc
    assert scenario.timing.hypervisor.destroy_time == parse(BASE).timing.hypervisor.destroy_time
    assert scenario.calibration == "cal.yaml"


@pytest.mark.parametrize(
    "calibration, message",
    [
        (None, "t.yaml: calibration: cannot read 'cal.yaml' beside the scenario file (No such file or directory)"),
        ({"timing": {"store": -1}}, "t.yaml: calibration cal.yaml: timing.store: constant must not be negative"),
        ({"timing": {"stor": 1}}, "t.yaml: calibration cal.yaml: timing.stor: unknown field"),
        ({"timing": {"store": 1}, "seed": 3}, "t.yaml: calibration cal.yaml: seed: unknown section (expected: timing, provenance)"),
        ({"provenance": {}}, "t.yaml: calibration cal.yaml: timing: expected a mapping of timing fields"),
        ([1, 2], "t.yaml: calibration cal.yaml: expected a mapping with a timing section, got list"),
    ],
)
def test_a_bad_calibration_names_the_file_and_the_field(calibration, message):
    """A missing file, a bad value, an unknown field or section: one ScenarioError naming both files."""
    with pytest.raises(ScenarioError) as raised:
        with_calibration(calibration)
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_calibrated_scenario_not_read_from_a_file_is_refused():
    """Without a way to read beside the scenario, naming a calibration is an error, not ignored."""
    with pytest.raises(ScenarioError, match=r"calibration: 'cal\.yaml' cannot be read"):
        parse_yaml(yaml.safe_dump({**BASE, "calibration": "cal.yaml"}), "t.yaml")


def test_the_largest_scenario_is_at_the_bounds_and_its_networks_fit():
    """scenarios/10k-hosts.yaml loads through the file loader, sits at the host and
    request bounds, and each project's network holds its share of the peak (instances
    alive plus addresses waiting out the reclaim timeout) with room to spare."""
    from common import network
    from common.scenario_bounds import MAX_HOSTS, MAX_REQUESTS
    from sim.scenario_file import load

    scenario, _ = load(Path(__file__).resolve().parents[2] / "scenarios" / "10k-hosts.yaml")
    cloud, spec = scenario.cloud, scenario.workload
    assert (cloud.hosts.count, spec.requests) == (MAX_HOSTS, MAX_REQUESTS)
    assert (cloud.scheduler, cloud.network.manager, spec.floating_ips) == ("simple", "vlan", 0.33)
    networks = network.plan(cloud.network.config())
    assert len(networks) >= len(cloud.projects)
    mean_life = spec.lifetime.mean
    share = spec.arrivals.rate / len(cloud.projects)
    peak = share * (mean_life + cloud.network.disassociate_timeout)
    assert peak < 0.8 * min(len(n.addresses) for n in networks)
    # Simple never refuses when the peak fits in the cloud's cores with room to spare.
    types = cloud.instance_types
    weights = spec.instance_types
    mean_vcpus = sum(types[t].vcpus * w for t, w in weights.items()) / sum(weights.values())
    assert spec.arrivals.rate * mean_life * mean_vcpus < 0.8 * cloud.hosts.count * cloud.hosts.vcpus
