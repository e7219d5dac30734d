"""Sweeps on a Dask distributed cluster, and sweep.csv written as runs finish."""

import csv
import importlib.util
import json
import socket
import sys
from concurrent.futures import Future
from pathlib import Path

import pytest
from conftest import service_unavailable

from common.analysis import sweep as plan_
from sim import sweep, sweep_exec
from sim.cli import run_scenario_main
from sim.run import simulate
from sim.scenario_file import load
from sim.sweep_table import SweepTable, read_rows

TINY = """
name: tiny
seed: 4
cloud: {hosts: {count: 3, vcpus: 4}, network: {fixed_range: 10.1.0.0/28}}
workload: {arrivals: {rate: 1}, requests: 12, lifetime: {constant: 60}}
slo: {max_error_fraction: 0.5}
"""
SWEEP = ["--sweep", "cloud.scheduler=queue,simple", "--seeds", "2", "--no-plots", "--no-progress"]
#: summary.json fields that measure the machine, not the simulation.
WALL_CLOCK = ("wall_seconds", "effects_per_wall_second")


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_scenario_main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def need_distributed():
    if importlib.util.find_spec("distributed") is None:  # the test extra installs it
        service_unavailable("Dask distributed", "not installed: pip install 'novalab[cluster]'")


@pytest.fixture(scope="module")
def cluster_address():
    need_distributed()
    from distributed import LocalCluster

    # Two single-threaded worker processes, as separate machines would be; no dashboard.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def run_dir_contents(run_dir: Path) -> dict:
    """A run directory's files, summary.json without its wall-clock fields and
    manifest.json without the sweep's directory and start time."""
    contents = {}
    for path in sorted(run_dir.iterdir()):
        if path.name in ("summary.json", "manifest.json"):
            data = json.loads(path.read_text())
            for key in (*WALL_CLOCK, "sweep", "started_at"):
                data.pop(key, None)
            contents[path.name] = data
        else:
            contents[path.name] = path.read_bytes()
    return contents


def test_a_cluster_sweep_gives_the_local_sweeps_results_and_files(tiny, tmp_path, capsys, cluster_address):
    """The same sweep on a two-worker LocalCluster and in local processes: the same
    sweep.csv (fingerprints included) and the same files in every run directory."""
    local_code, _, _ = run([str(tiny), *SWEEP, "--jobs", "2", "--out", str(tmp_path / "local")], capsys)
    code, out, _ = run([str(tiny), *SWEEP, "--cluster", cluster_address, "--out", str(tmp_path / "dask")], capsys)
    assert code == local_code and "4 runs" in out
    local_csv, dask_csv = ((tmp_path / d / "sweep.csv").read_bytes() for d in ("local", "dask"))
    assert dask_csv == local_csv
    rows = read_csv(tmp_path / "dask" / "sweep.csv")
    assert [int(r["run"]) for r in rows] == [1, 2, 3, 4] and all(r["fingerprint"] for r in rows)
    for row in rows:
        assert run_dir_contents(tmp_path / "dask" / row["run_dir"]) == run_dir_contents(tmp_path / "local" / row["run_dir"])
    assert not list((tmp_path / "dask").glob(".*"))


def test_a_cluster_run_matches_the_same_run_alone(tiny, tmp_path, capsys, cluster_address):
    """A run done by a cluster worker has the fingerprint of simulating it here."""
    code, _, err = run([str(tiny), "--seeds", "1", "--no-plots", "--cluster", cluster_address,
                        "--out", str(tmp_path / "s")], capsys)
    [row] = read_csv(tmp_path / "s" / "sweep.csv")
    assert code in (0, 1) and "on the cluster at" in err
    assert row["fingerprint"] == simulate(load(tiny)[0], 4).summary["fingerprint"]


@pytest.mark.parametrize("address", ["bogus://nowhere", "no-port-here", "tcp://127.0.0.1:{closed}"])
def test_a_bad_cluster_address_exits_2_before_anything_runs(tiny, tmp_path, capsys, monkeypatch, address):
    """An address that is not a reachable Dask scheduler: one clear message, exit 2, no directory."""
    need_distributed()
    monkeypatch.setattr(sweep_exec, "CONNECT_TIMEOUT", 1.0)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = address.format(closed=s.getsockname()[1])
    code, _, err = run([str(tiny), *SWEEP, "--cluster", address, "--out", str(tmp_path / "s")], capsys)
    assert code == 2, err
    assert f"--cluster {address}: cannot reach a Dask scheduler" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_cluster_without_dask_installed_says_how_to_install_it(tiny, tmp_path, capsys, monkeypatch):
    """Without Dask distributed, --cluster names the extra to install, exit 2."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: importing it fails
    code, _, err = run([str(tiny), *SWEEP, "--cluster", "tcp://127.0.0.1:8786", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "pip install 'novalab[cluster]'" in err
    assert not (tmp_path / "s").exists()


def test_cluster_without_a_sweep_exits_2(tiny, tmp_path, capsys):
    """--cluster runs a sweep's runs; a single run with it is refused."""
    code, _, err = run([str(tiny), "--cluster", "tcp://127.0.0.1:8786", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "--cluster runs a sweep's runs" in err


# -- sweep.csv as runs finish -------------------------------------------------------------


def test_each_row_is_in_sweep_csv_when_its_progress_line_is_shown(tiny, tmp_path):
    """While the sweep runs, sweep.csv already holds a row for every run that finished."""
    seen = []
    sweep.run_sweep(tiny, {"cloud.scheduler": ["queue", "simple"]}, seeds=2, out=tmp_path / "s", jobs=2, plots=False,
                    echo=lambda line: line.startswith("[") and seen.append(len(read_csv(tmp_path / "s" / "sweep.csv"))))
    assert seen == [1, 2, 3, 4]  # one more row with each "[n/4] ..." progress line


def fake_row(run: int, pools=("flat",)) -> dict:
    row = {"run": run, "seed": run, "run_dir": f"{run:02d}-seed{run}", "ok": True, "failed": "", "launched": 10 * run}
    for pool in pools:
        used, size = plan_.pool_columns(pool)
        row[used], row[size] = run, 16
    return row


def test_the_table_streams_rows_and_puts_them_in_run_order_at_the_end(tmp_path):
    """Rows land on disk as added, in finishing order; close() leaves them in run order."""
    table = SweepTable(tmp_path / "sweep.csv", {})
    for run in (3, 1):
        table.add(fake_row(run))
    assert [r["run"] for r in read_csv(tmp_path / "sweep.csv")] == ["3", "1"]
    table.add(fake_row(2))
    table.close()
    assert [r["run"] for r in read_rows(tmp_path / "sweep.csv", {})] == [1, 2, 3]


def test_a_row_with_a_new_pool_widens_the_header_and_keeps_the_earlier_rows(tmp_path):
    """A later run with a pool none before had: every row is still there, under the wider header."""
    table = SweepTable(tmp_path / "sweep.csv", {})
    table.add(fake_row(2))
    table.add(fake_row(1, pools=("flat", "vlan-1")))
    table.close()
    rows = list(read_rows(tmp_path / "sweep.csv", {}))
    assert [(r["run"], r["pool_size:flat"], r["pool_size:vlan-1"]) for r in rows] == [(1, 16, 16), (2, 16, None)]
    assert table.columns == plan_.columns({}, [fake_row(1, pools=("flat", "vlan-1"))])


def finished_future(value=None, error=None) -> Future:
    future: Future = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
    return future


def test_a_run_that_raises_gets_its_row_and_the_sweep_goes_on(tiny, tmp_path):
    """A crashed run is a failed row naming the exception; the runs after it still count."""
    summary = simulate(load(tiny)[0], 4).summary
    entries = plan_.plan({}, 4, 2)
    results = ((entry, future) for entry, future in [(entries[0], finished_future(error=RuntimeError("worker lost"))),
                                                     (entries[1], finished_future((summary, None)))])
    result = sweep.SweepResult(tmp_path, {}, entries)
    sweep._collect(results, result, echo=None)
    rows = result.rows
    assert rows[0]["failed"] == "crashed: RuntimeError: worker lost" and rows[1]["fingerprint"] == summary["fingerprint"]
    assert result.finished == 2 and result.failed_count == 1 + (not summary["ok"]) and not result.ok


def test_ctrl_c_keeps_the_finished_rows_and_exits_130(tiny, tmp_path, capsys, monkeypatch):
    """Ctrl-C mid-sweep: exit 130 with a message, and sweep.csv holds the run that finished."""
    summary = simulate(load(tiny)[0], 4).summary

    def interrupted(tasks, workers):
        entry, _ = next(tasks)
        yield entry, finished_future((summary, None))
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_exec, "local_results", interrupted)
    code, _, err = run([str(tiny), *SWEEP, "--out", str(tmp_path / "s")], capsys)
    assert code == 130 and "sweep interrupted" in err
    assert [r["fingerprint"] for r in read_csv(tmp_path / "s" / "sweep.csv")] == [summary["fingerprint"]]
