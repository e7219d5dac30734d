"""Fuzz the scenario loader and run-scenario with hypothesis: every input is either a
scenario (which then runs to an exit status of 0 or 1) or a ScenarioError of one line
naming the source; nothing else escapes.

Three generators: a valid scenario with fields set to hostile values (huge, tiny,
infinite, empty, wrongly typed), raw YAML built from pathological shapes (alias bombs,
deep nesting, long integers) and token soup, and small runnable scenarios fed to
``run-scenario`` in-process. Derandomized, so CI always runs the same examples; the
minimal failures found are kept in tests/fixtures/scenarios/bad/.
"""

import math
import random

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.scenario import Scenario, ScenarioError, parse, parse_yaml
from common.scenario_bounds import MAX_PERIODIC_TICKS, MAX_SAMPLES
from common.workload import Workload
from sim.cli import run_scenario_main

SOURCE = "fuzz.yaml"
LOADER = settings(max_examples=1000, derandomize=True, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
TEXTS = settings(LOADER, max_examples=600)  # the slowest: pathological documents of up to ~10 KB
RUNS = settings(max_examples=20, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def base() -> dict:
    return {
        "name": "fuzz",
        "cloud": {"hosts": {"count": 2, "vcpus": 4, "memory_mb": 8192},
                  "network": {"manager": "flat", "fixed_range": "10.0.0.0/24", "floating_range": "4.4.4.0/28"},
                  "projects": [{"id": "p1", "quota": {"instances": 5, "cores": 8, "floating_ips": 2}}]},
        "workload": {"arrivals": {"rate": 2}, "requests": 3, "lifetime": 5, "instance_types": {"m1.tiny": 1},
                     "floating_ips": 0.5, "floating_delay": 1},
    }


#: Field paths a user writes (as key tuples: type names hold dots); a hostile value goes into some of them.
PATHS = [tuple(p.split(".")) for p in (
    "cloud.hosts.count", "cloud.hosts.vcpus", "cloud.hosts.memory_mb", "cloud.hosts.workers",
    "cloud.instance_types", "cloud.images", "cloud.projects", "cloud.max_cores", "cloud.api_workers",
    "cloud.network.fixed_range", "cloud.network.floating_range", "cloud.network.manager",
    "workload.requests", "workload.arrivals.rate", "workload.instance_types",
    "workload.lifetime", "workload.floating_delay", "workload.instances_per_request", "workload.projects",
    "metrics.interval", "timing.report_interval", "timing.api", "drain_timeout", "seed", "name", "faults",
)] + [("workload", "instance_types", "m1.tiny"), ("cloud", "projects", 0, "quota", "instances"),
      ("cloud", "projects", 0, "quota", "floating_ips")]

HOSTILE = st.one_of(
    st.integers(), st.integers(min_value=10**12, max_value=10**40), st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e-9, 1e8, 1e300, -0.0, 0.5]),
    st.text(max_size=20), st.none(), st.booleans(), st.just({}), st.just([]),
    st.dictionaries(st.text(max_size=5), st.floats(allow_nan=True), max_size=3),
    st.lists(st.integers(), max_size=3), st.just({"exponential": {"mean": 1e9}}),
    st.just({"uniform": [1, 1e12]}), st.just([{"kill": "compute", "at": 1, "host": 99}]),
)


def put(data: dict, path: tuple, value) -> dict:
    """Set ``path`` to ``value``; a path through a value an earlier change replaced is skipped."""
    node = data
    for part in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return data
    if isinstance(node, dict):
        node[path[-1]] = value
    return data


def assert_refused_in_one_line(error: ScenarioError):
    text = str(error)
    assert "\n" not in text and text.startswith(f"{SOURCE}: ")


def assert_bounded(scenario: Scenario):
    """What validated can run: its workload draws requests, and its estimated work is
    within the documented bounds."""
    workload = Workload(scenario, random.Random(0))
    for index in range(3):
        gap, _ = workload.draw(index)
        assert math.isfinite(gap)
    span = scenario.estimated_span()
    assert math.isfinite(span)
    assert span / scenario.metrics.interval <= MAX_SAMPLES
    assert (scenario.cloud.hosts.count + scenario.cloud.network.hosts + scenario.cloud.schedulers) * span / scenario.timing.report_interval \
        <= MAX_PERIODIC_TICKS


@LOADER
@given(st.lists(st.tuples(st.sampled_from(PATHS), HOSTILE), min_size=1, max_size=3))
def test_hostile_field_values_are_a_scenario_or_a_one_line_refusal(changes):
    """A valid scenario with hostile values in some fields validates (within bounds) or is refused in one line."""
    data = base()
    for path, value in changes:
        put(data, path, value)
    try:
        assert_bounded(parse(data, SOURCE))
    except ScenarioError as e:
        assert_refused_in_one_line(e)


def alias_bomb(levels: int, fanout: int) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * fanout)}]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * fanout)}]")
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


SHAPES = st.one_of(
    st.builds(alias_bomb, st.integers(1, 12), st.integers(1, 12)),
    st.builds(lambda n: "name: " + "[" * n + "]" * n, st.integers(1, 3000)),
    st.builds(lambda n: "name: " + "{a: " * n + "1" + "}" * n, st.integers(1, 3000)),
    st.builds(lambda n: "seed: " + "7" * n, st.integers(1, 6000)),
    st.builds(lambda n: "name: x\ncloud:\n" + "  " * 1 + "a:\n" * n, st.integers(1, 200)),
)
TOKENS = st.sampled_from(["name: x", "cloud:", "workload:", "  hosts: {count: 2}", "&a", "*a", "[", "]", "{", "}",
                          ": ", "- ", "\n", "  ", ".inf", ".nan", "!!python/object:os.system", "<<: *a", "'",
                          '"', "\t", "\x00", "\xff", "---", "...", "%YAML 1.1", "? ", "|", "1e999", "0x1F"])


@TEXTS
@given(st.one_of(SHAPES, st.lists(TOKENS, max_size=40).map("".join), st.binary(max_size=200)))
def test_any_text_is_a_scenario_or_a_one_line_refusal(text):
    """Pathological YAML (alias bombs, deep nesting, long integers, token soup, bytes) never escapes as another error."""
    try:
        assert_bounded(parse_yaml(text, SOURCE))
    except ScenarioError as e:
        assert_refused_in_one_line(e)


def small_runs():
    """Scenarios small enough to run in a fraction of a second, with fields that have broken runs before."""
    return st.fixed_dictionaries({
        "quota": st.sampled_from([0, 1, 5]),
        "floating_quota": st.sampled_from([0, 1, 2]),
        "weights": st.dictionaries(st.sampled_from(["m1.tiny", "m1.small", "m1.large"]),
                                   st.sampled_from([1e-300, 1e-6, 1.0, 1e6]), min_size=1, max_size=3),
        "scheduler": st.sampled_from(["queue", "chance", "simple"]),
        "memory_mb": st.sampled_from([4096, 8192]),
        "requests": st.integers(1, 4),
        "lifetime": st.sampled_from([None, 0, 3, {"exponential": {"mean": 2}}]),
        "floating": st.sampled_from([0.0, 1.0]),
        "interval": st.sampled_from([0.5, 10.0]),
    })


@RUNS
@given(small_runs())
def test_run_scenario_on_small_generated_scenarios_exits_0_1_or_2(tmp_path_factory, knobs):
    """run-scenario in-process on generated small scenarios ends with 0, 1 or 2, never an exception."""
    data = base()
    data["cloud"]["scheduler"] = knobs["scheduler"]
    data["cloud"]["hosts"]["memory_mb"] = knobs["memory_mb"]
    data["cloud"]["projects"][0]["quota"] = {"instances": knobs["quota"], "cores": knobs["quota"] * 4,
                                             "floating_ips": knobs["floating_quota"]}
    data["workload"].update(requests=knobs["requests"], lifetime=knobs["lifetime"], instance_types=knobs["weights"],
                            floating_ips=knobs["floating"])
    data["metrics"] = {"interval": knobs["interval"]}
    data["drain_timeout"] = 300
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        run_scenario_main([str(path), "--out", str(folder / "run"), "--no-progress", "--no-plots"])
    except SystemExit as done:
        assert done.code in (0, 1, 2)
