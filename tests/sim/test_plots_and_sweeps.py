"""Plots in the run directory, and sweeps: run-scenario as a user meets them."""

import csv
import io
import json
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from common.analysis import plots
from common.analysis import sweep as sweeps
from common.scenario import with_overrides
from sim.cli import run_scenario_main
from sim.recorder import Recorder
from sim.run import simulate
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]
FIVE_HOSTS = str(ROOT / "scenarios" / "5-hosts.yaml")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = """
name: tiny
seed: 4
cloud: {hosts: {count: 3, vcpus: 4}, network: {fixed_range: 10.1.0.0/28}}
workload: {arrivals: {rate: 1}, requests: 12, lifetime: {constant: 60}}
slo: {max_error_fraction: 0.5}
"""


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_scenario_main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_png(data: bytes, what: str):
    assert data.startswith(PNG_SIGNATURE), f"{what} is not a PNG"
    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    height, width = image.shape[:2]
    assert height > 100 and width > 100, f"{what} is {width}x{height}"
    assert image.std() > 0, f"{what} is blank"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- plots ------------------------------------------------------------------------


def test_a_run_writes_its_four_plots_as_valid_pngs(tmp_path, capsys):
    """run-scenario writes one non-empty PNG per figure that matplotlib reads back."""
    out_dir = tmp_path / "run"
    code, out, _ = run([FIVE_HOSTS, "--out", str(out_dir), "--no-progress"], capsys)
    assert code == 0, out
    written = sorted(p.name for p in out_dir.glob("*.png"))
    assert written == sorted(plots.RUN_FIGURES)
    for name in written:
        assert_png((out_dir / name).read_bytes(), name)


def test_no_plots_writes_no_png(tmp_path, capsys):
    """--no-plots leaves the run directory without figures, the rest unchanged."""
    out_dir = tmp_path / "run"
    code, _, _ = run([FIVE_HOSTS, "--out", str(out_dir), "--no-progress", "--no-plots"], capsys)
    assert code == 0
    assert not list(out_dir.glob("*.png"))
    assert {"manifest.json", "summary.json", "instances.csv", "rpc.csv", "timeseries.csv"} <= {p.name for p in out_dir.iterdir()}


def test_figures_build_from_rows_read_back_from_csv(tmp_path, capsys):
    """The plot functions take the run directory's CSV rows as text (what real mode and
    notebooks have), not only the recorder's tuples."""
    out_dir = tmp_path / "run"
    run([FIVE_HOSTS, "--out", str(out_dir), "--no-progress", "--no-plots"], capsys)
    with open(out_dir / "timeseries.csv", newline="") as f:
        series = [tuple(row) for row in csv.reader(f)][1:]
    instances = read_csv(out_dir / "instances.csv")
    figures = plots.run_figures(series, instances, subtitle="from csv")
    assert sorted(figures) == sorted(plots.RUN_FIGURES)
    for name, data in figures.items():
        assert_png(data, name)


def test_figures_of_an_empty_run_are_still_pngs():
    """No samples and no instances give labelled empty figures, not an exception."""
    for name, data in plots.run_figures([], []).items():
        assert data.startswith(PNG_SIGNATURE), name


def test_decimation_keeps_peaks_and_troughs():
    """A long series is cut to at most MAX_POINTS points without losing its extremes."""
    times = list(range(100_000))
    values = [0.0] * 100_000
    values[31_337], values[77_777] = 500.0, -3.0
    t, v = plots.decimate(times, values, max_points=1000)
    assert len(t) <= 1000 and t == sorted(t)
    assert max(v) == 500.0 and min(v) == -3.0


def test_time_to_running_cdf_counts_instances_that_never_ran():
    """Instances without a time to running are counted apart, not as zero."""
    values, never = plots.times_to_running([{"time_to_running": 3.0}, {"time_to_running": ""}, {"time_to_running": "1.5"}])
    assert values == [1.5, 3.0] and never == 1


def test_recorder_aggregates_host_queues_per_topic():
    """Each topic's T.<host> queues are summed and maxed under their own label: a
    network.<host> or scheduler.<host> message is not counted as compute.<host>."""

    class Broker:
        def queue_depths(self):
            return {"compute": 1, "compute.h1": 2, "compute.h2": 5, "network": 0, "network.n1": 7,
                    "scheduler": 0, "scheduler.s1": 3, "scheduler.s2": 1}

    recorder = Recorder()
    recorder.sample(0.0, Broker(), None, {}, [])
    depths = {name: value for _, metric, name, value in recorder.series if metric == "queue_depth"}
    assert depths == {
        "compute": 1, "compute.<host> (sum)": 7, "compute.<host> (max)": 5,
        "network": 0, "network.<host> (sum)": 7, "network.<host> (max)": 7,
        "scheduler": 0, "scheduler.<host> (sum)": 4, "scheduler.<host> (max)": 3,
    }


def test_sampled_host_queue_depths_match_the_summary_topics():
    """A run's queue-depth series name the same T.<host> groups as its summary, and the
    sampled deepest host queue never exceeds that group's recorded peak."""
    scenario, _ = load(FIVE_HOSTS)
    result = simulate(scenario, 1)
    lines = plots.series_by_name(result.recorder.series, "queue_depth")
    host_groups = {topic for topic in result.summary["queues"] if topic.endswith(".<host>")}
    assert {"compute.<host>", "network.<host>"} <= host_groups
    assert {name for name in lines if "<host>" in name} == {f"{g} ({k})" for g in host_groups for k in ("sum", "max")}
    for group in host_groups:
        assert max(lines[f"{group} (max)"][1]) <= result.summary["queues"][group]["peak_depth"]
        assert all(m <= s for m, s in zip(lines[f"{group} (max)"][1], lines[f"{group} (sum)"][1], strict=True))


# -- sweeps -----------------------------------------------------------------------


def test_plan_is_every_combination_times_seeds():
    """Combinations in order (first parameter slowest), seeds counted up from the base."""
    runs = sweeps.plan({"a": [1, 2], "b": ["x", "y", "z"]}, base_seed=7, seeds=2)
    assert len(runs) == 12
    assert [(r["params"]["a"], r["params"]["b"], r["seed"]) for r in runs[:4]] == [
        (1, "x", 7), (1, "x", 8), (1, "y", 7), (1, "y", 8)]
    assert len({r["name"] for r in runs}) == 12 and runs[0]["name"] == "01-a=1-b=x-seed7"


@pytest.mark.parametrize("value", [1, 2.5, "queue", True, None, "10.0.0.0/24", {"constant": 60}, [1, 2]])
def test_a_table_value_reads_back_as_the_same_yaml_value(value):
    """Swept values are written so that YAML reads them back unchanged."""
    assert yaml.safe_load(sweeps.format_value(value)) == value


def test_sweep_runs_every_combination_and_tabulates_each_summary(tmp_path, capsys):
    """2 values x 2 seeds: 4 run directories, a 4-row sweep.csv whose cells are the runs'
    summary.json values, and the same fingerprint as running that combination alone."""
    sweep_dir = tmp_path / "sweep"
    code, out, err = run(
        [FIVE_HOSTS, "--sweep", "cloud.scheduler=queue,simple", "--seeds", "2", "--out", str(sweep_dir), "--no-plots"],
        capsys,
    )
    rows = read_csv(sweep_dir / "sweep.csv")
    assert len(rows) == 4
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == sorted(r["run_dir"] for r in rows)
    assert [(r["cloud.scheduler"], r["seed"]) for r in rows] == [("queue", "1"), ("queue", "2"), ("simple", "1"), ("simple", "2")]
    assert "[4/4]" in err and "sweep" in out
    for row in rows:
        run_dir = sweep_dir / row["run_dir"]
        summary = json.loads((run_dir / "summary.json").read_text())
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["overrides"] == {"cloud.scheduler": row["cloud.scheduler"]}
        assert manifest["seed"] == summary["seed"] == int(row["seed"])
        inst, ttr = summary["instances"], summary["time_to_running"]
        assert int(row["launched"]) == inst["launched"]
        assert int(row["ever_errored"]) == inst["ever_errored"]
        assert float(row["error_fraction"]) == inst["ever_errored"] / inst["launched"]
        for q in ("p50", "p95", "p99"):
            assert float(row[f"ttr_{q}"]) == ttr[q]
        for topic, stats in summary["queues"].items():
            assert int(row[f"peak_depth:{topic}"]) == stats["peak_depth"]
        for pool, stats in summary["pools"].items():
            assert int(row[f"pool_peak_used:{pool}"]) == stats["peak_used"]
            assert int(row[f"pool_size:{pool}"]) == stats["size"]
        assert float(row["peak_host_vcpu_ratio"]) == summary["peak_host_vcpu_ratio"]
        assert int(row["hosts_ever_overcommitted"]) == summary["hosts_ever_overcommitted"]
        assert row["ok"] == str(summary["ok"])
        assert row["fingerprint"] == summary["fingerprint"]
    assert code == (0 if all(r["ok"] == "True" for r in rows) else 1)
    scenario, _ = load(FIVE_HOSTS)
    alone = simulate(with_overrides(scenario, {"cloud.scheduler": rows[3]["cloud.scheduler"]}), int(rows[3]["seed"]))
    assert alone.summary["fingerprint"] == rows[3]["fingerprint"]
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert meta["parameters"] == {"cloud.scheduler": ["queue", "simple"]} and meta["seeds"] == [1, 2]


def test_sweep_exits_1_when_a_run_fails_its_slo(tmp_path, capsys):
    """A run that fails its SLO fails the sweep, and its row says which check failed."""
    code, out, _ = run(
        [str(ROOT / "scenarios/cloud-too-small.yaml"), "--seeds", "1", "--out", str(tmp_path / "s"), "--no-plots", "--no-progress"],
        capsys,
    )
    rows = read_csv(tmp_path / "s" / "sweep.csv")
    assert code == 1 and "FAILED" in out
    assert len(rows) == 1 and rows[0]["ok"] == "False" and "slo error_fraction" in rows[0]["failed"]


def test_set_and_sweep_values_are_yaml(tmp_path, capsys):
    """--set applies to every run; numbers and mappings arrive as YAML values."""
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(TINY)
    sweep_dir = tmp_path / "s"
    code, _, _ = run(
        [str(scenario), "--set", "workload.requests=5", "--sweep", "workload.lifetime=[{constant: 30}, {constant: 90}]",
         "--sweep", "workload.arrivals.rate=0.5,2", "--out", str(sweep_dir), "--no-plots", "--no-progress"],
        capsys,
    )
    rows = read_csv(sweep_dir / "sweep.csv")
    assert code in (0, 1) and len(rows) == 4
    assert {r["launched"] for r in rows} == {"5"}
    assert [yaml.safe_load(r["workload.lifetime"]) for r in rows[:2]] == [{"constant": 30}] * 2
    assert [yaml.safe_load(r["workload.arrivals.rate"]) for r in rows[:2]] == [0.5, 2]
    manifest = json.loads((sweep_dir / rows[1]["run_dir"] / "manifest.json").read_text())
    assert manifest["overrides"] == {"workload.requests": 5, "workload.lifetime": {"constant": 30}, "workload.arrivals.rate": 2}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--sweep", "cloud.schedular=queue,simple"], "cloud.schedular: unknown field (expected one of:"),
        (["--sweep", "cloud.scheduler=queue,fifo"], "cloud.scheduler=fifo: cloud.scheduler: Input should be 'queue', 'chance' or 'simple'"),
        (["--sweep", "workload.arrivals.rate=1,-2"], "workload.arrivals.rate: Input should be greater than 0"),
        (["--sweep", "cloud.hostz.count=3"], "cloud.hostz.count: no such field"),
        (["--sweep", "workload.arrivals.rate"], "expected KEY=VALUE,VALUE,..."),
        (["--sweep", "workload.arrivals.rate=1,,2"], "empty value"),
        (["--sweep", "seed=1,2"], "seed cannot be swept"),
        (["--sweep", "cloud.scheduler=queue", "--sweep", "cloud.scheduler=simple"], "given twice"),
        (["--sweep", "cloud.scheduler=queue,queue"], "value repeated: queue"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--sweep", "cloud.scheduler=queue", "--mode", "real"], "sim mode only"),
        (["--set", "cloud.hosts.count=2", "--mode", "real"], "sim mode only"),
        (["--set", "cloud.hosts.count=many"], "cloud.hosts.count: Input should be a valid integer"),
        (["--set", "cloud.hosts.count=2", "--sweep", "cloud.hosts.count=3,4"], "both set (--set) and swept (--sweep)"),
    ],
)
def test_bad_sweep_exits_2_before_anything_runs(tmp_path, capsys, args, expected):
    """A bad key, value or option is one clear message, exit 2, and no directory."""
    out_dir = tmp_path / "s"
    code, out, err = run([FIVE_HOSTS, *args, "--out", str(out_dir)], capsys)
    assert code == 2, (out, err)
    assert expected in err
    assert not out_dir.exists()
