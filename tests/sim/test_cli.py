"""run-scenario and novalab as a user meets them: exit status, messages, run directory."""

import csv
import json
from pathlib import Path

import pytest

from real.cli import main as novalab_main
from sim.cli import run_scenario_main

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
name: tiny
cloud: {hosts: {count: 2}}
workload: {arrivals: {rate: 1}, requests: 5, lifetime: {constant: 120}}
"""


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_scenario_main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD.replace("count: 2", "count: 2, colour: red"), "cloud.hosts.colour: unknown field (expected one of: count, memory_mb, vcpus, workers)"),
        (GOOD.replace("requests: 5", "requests: many"), "workload.requests: Input should be a valid integer"),
        (GOOD.replace("count: 2", "count: -2"), "cloud.hosts.count: Input should be greater than 0"),
        (GOOD.replace("rate: 1", "rate: 1, burst: 3"), "workload.arrivals.burst: unknown field"),
        (GOOD + "scheduler: fifo\n", "scheduler: unknown field"),
        ("name: [oops\n", "not valid YAML"),
        ("", "the file is empty"),
    ],
)
def test_bad_scenario_file_exits_2_with_one_clear_error(tmp_path, capsys, text, expected):
    """Each bad scenario gives exit status 2 and one message naming the file and field."""
    path = write(tmp_path, text)
    code, _out, err = run([path, "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert expected in err and path in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_scenario_file_exits_2(tmp_path, capsys):
    """A file that does not exist is named in the error."""
    code, _, err = run([str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "nope.yaml: no such file" in err


def test_good_run_writes_the_run_directory(tmp_path, capsys):
    """A passing run exits 0 and writes manifest, summary and three CSVs that agree."""
    out_dir = tmp_path / "run"
    code, out, _ = run([write(tmp_path, GOOD), "--out", str(out_dir), "--seed", "9", "--no-progress"], capsys)
    assert code == 0 and "all invariants and SLOs hold" in out
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["seed"] == 9 and manifest["mode"] == "sim" and manifest["scenario_hash"].startswith("sha256:")
    assert manifest["versions"]["simpy"]
    summary = json.loads((out_dir / "summary.json").read_text())
    with open(out_dir / "instances.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["instances"]["launched"] == 5
    assert all(row["state"] == "deleted" and float(row["time_to_running"]) > 0 for row in rows)
    with open(out_dir / "rpc.csv") as f:
        methods = {row["method"] for row in csv.DictReader(f)}
    assert {"allocate_fixed_ip", "run_instance", "terminate_instance"} <= methods
    with open(out_dir / "timeseries.csv") as f:
        metrics = {row["metric"] for row in csv.DictReader(f)}
    assert {"queue_depth", "pool_free", "instances", "host_vcpu_use"} <= metrics


def test_failed_slo_exits_1(tmp_path, capsys):
    """A run whose SLO fails exits 1 and says FAILED."""
    code, out, _ = run([str(ROOT / "scenarios/cloud-too-small.yaml"), "--out", str(tmp_path / "r"), "--no-progress"], capsys)
    assert code == 1 and "FAILED" in out


def test_validate_checks_every_shipped_scenario(capsys):
    """novalab validate accepts every scenario the project ships."""
    paths = sorted(str(p) for p in (ROOT / "scenarios").glob("*.yaml"))
    with pytest.raises(SystemExit) as exit_info:
        novalab_main(["validate", *paths])
    out, _ = capsys.readouterr()
    assert exit_info.value.code == 0 and out.count(": ok") == len(paths)
