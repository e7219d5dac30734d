"""Calibration and the sim-versus-real comparison, with a sim run standing in for the real one."""

import json
import shutil
from pathlib import Path

import yaml

from common.scenario import with_overrides
from sim import calibrate, fidelity
from sim.cli import run_scenario_main
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "scenarios" / "real-small.yaml"


def dressed_as_real(tmp_path, scenario_path=SMALL):
    """A sim run directory of ``scenario_path`` whose manifest says real (scale 1), as calibrate reads it."""
    out = tmp_path / "run"
    try:
        run_scenario_main([str(scenario_path), "--out", str(out), "--no-plots", "--no-progress"])
    except SystemExit:
        pass
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "mode": "real", "time_scale": 1.0}))
    return out


def test_a_run_calibrated_on_itself_is_not_told_apart_from_the_sim(tmp_path):
    """Fit the timing from a run, name the fit from a copy of the scenario: the sim's times to running pass the KS test."""
    run = dressed_as_real(tmp_path)
    document = calibrate.calibrate(run, str(SMALL))
    assert document["provenance"]["samples"]["hypervisor.boot_time"] == len(
        [r for r in (run / "instances.csv").read_text().splitlines()[1:] if r.split(",")[-1]])
    (tmp_path / "calibration.yaml").write_text(yaml.safe_dump(document))
    data = yaml.safe_load(SMALL.read_text())
    (tmp_path / "calibrated.yaml").write_text(yaml.safe_dump({**data, "calibration": "calibration.yaml"}))
    report = fidelity.compare_run_dir(run, str(tmp_path / "calibrated.yaml"))
    assert report["time_to_running_rejected"] is False, report["time_to_running_ks"]
    assert report["calibration"] == "calibration.yaml"
    written = json.loads((run / "fidelity.json").read_text())
    assert json.loads((run / "sim" / "manifest.json").read_text())["calibration"]["file"] == "calibration.yaml"
    assert {"time_to_running_ks", "time_to_running_p_value", "time_to_running_n_real", "time_to_running_n_sim",
            "time_to_running_rejected", "rpc_queue_wait", "instance_states", "error_reasons"} <= set(written)


def test_the_probe_counts_one_hop_less_without_a_scheduler():
    """The launch path of a queue-dispatched cloud skips the scheduler's hop; both have store trips."""
    scenario, _ = load(SMALL)
    simple = calibrate.probe_path(scenario)
    queue = calibrate.probe_path(with_overrides(scenario, {"cloud.scheduler": "queue"}))
    assert queue.launch_hops == simple.launch_hops - 1
    assert queue.launch_store_ops > 0 and simple.delete_hops >= 1


def test_comparing_a_sim_run_is_refused_with_a_reason(tmp_path, capsys):
    """fidelity and calibrate want a real run directory and say so."""
    out = tmp_path / "run"
    try:
        run_scenario_main([str(SMALL), "--out", str(out), "--no-plots", "--no-progress"])
    except SystemExit:
        pass
    assert fidelity.main([str(out)]) == 2
    assert "a 'sim' run; fidelity compares a real run with the sim" in capsys.readouterr().err
    assert calibrate.main([str(tmp_path / "nothing")]) == 2
    assert "not a run directory (manifest.json is missing)" in capsys.readouterr().err


def test_a_calibrated_scenario_moves_with_its_calibration_file(tmp_path):
    """The calibration is found beside the scenario file, wherever that is."""
    shutil.copy(SMALL, tmp_path / "s.yaml")
    with open(tmp_path / "s.yaml", "a") as f:
        f.write("calibration: fit/cal.yaml\n")
    (tmp_path / "fit").mkdir()
    (tmp_path / "fit" / "cal.yaml").write_text("timing: {store: 0.25}\n")
    scenario, _ = load(tmp_path / "s.yaml")
    assert scenario.timing.store.value == 0.25
