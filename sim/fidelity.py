"""After a real run, simulate the same scenario and seed and say how far apart they are.

Why here: the real runner must not import the simulator (nor the other way round), so
neither mode can do this alone. ``run-scenario`` (``sim/cli.py``) finds the real runner
through the ``novalab.modes`` entry points; when it returns, ``sim/cli.py`` hands the real
run directory to ``compare_run_dir``. Everything this needs is in that directory (the
manifest names the scenario file and the seed; ``instances.csv``, ``rpc.csv`` and
``summary.json`` are the real side), so the same step can be repeated on an old real run
directory with ``python -m sim.fidelity REAL_RUN_DIR``.

The simulation mirrors what real mode ran: ``real.hosts`` compute hosts and
``real.requests`` requests when the scenario sets them. It is written to
``<real run>/sim/`` (no plots) and the comparison (``common.analysis.fidelity``) to
``<real run>/fidelity.json``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from common.analysis import fidelity
from common.scenario import ScenarioError, with_overrides
from sim import output
from sim.one_run import run_one, timestamp
from sim.scenario_file import load


class FidelityError(ValueError):
    """A run directory that cannot be compared; ``str()`` says what is missing."""


def read_run_dir(run_dir: Path) -> fidelity.RunData:
    """Instance rows, RPC rows and the summary of a run directory (either mode)."""
    try:
        with open(run_dir / "instances.csv", newline="") as f:
            instance_rows = list(csv.DictReader(f))
        with open(run_dir / "rpc.csv", newline="") as f:
            rpc_rows = list(csv.DictReader(f))
        summary = json.loads((run_dir / "summary.json").read_text())
    except FileNotFoundError as e:
        raise FidelityError(f"{run_dir}: not a run directory ({Path(e.filename).name} is missing)") from None
    return fidelity.RunData(instance_rows, rpc_rows, summary)


def mirrored_scenario(scenario):
    """The scenario as real mode ran it: its compute hosts and request count."""
    overrides = {"cloud.hosts.count": scenario.real.hosts}
    if scenario.real.requests is not None:
        overrides["workload.requests"] = scenario.real.requests
    return with_overrides(scenario, overrides, f"{scenario.name} as real mode runs it"), overrides


def real_manifest(real_dir: Path, purpose: str) -> dict:
    """The manifest of a real run directory; FidelityError for anything else."""
    try:
        manifest = json.loads((real_dir / "manifest.json").read_text())
    except FileNotFoundError:
        raise FidelityError(f"{real_dir}: not a run directory (manifest.json is missing)") from None
    if manifest.get("mode") != "real":
        raise FidelityError(f"{real_dir}: a {manifest.get('mode')!r} run; {purpose}")
    return manifest


def compare_run_dir(real_dir, scenario_path=None, label: str | None = None) -> dict:
    """Simulate what the real run in ``real_dir`` ran and write ``fidelity.json`` there;
    returns the report. ``scenario_path`` defaults to the one the manifest names;
    ``label`` names another comparison of the same run (``fidelity-<label>.json``, the
    simulation in ``sim-<label>/``) so that it does not replace the first."""
    real_dir = Path(real_dir)
    manifest = real_manifest(real_dir, "fidelity compares a real run with the sim")
    real = read_run_dir(real_dir)
    scenario_path = scenario_path or manifest["scenario_path"]
    scenario, raw = load(scenario_path)
    simulated, overrides = mirrored_scenario(scenario)
    seed = manifest["seed"]
    sim_dir = real_dir / (f"sim-{label}" if label else "sim")
    run_one(simulated, raw, scenario_path, seed, sim_dir, plots=False, stamp=timestamp(), overrides=overrides)
    report = fidelity.compare(real, read_run_dir(sim_dir))
    report = {"real_run": str(real_dir), "sim_run": str(sim_dir), "scenario": scenario.name, "seed": seed,
              "calibration": scenario.calibration, **report}
    output.write_json(real_dir / (f"fidelity-{label}.json" if label else "fidelity.json"), report)
    return report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m sim.fidelity REAL_RUN_DIR", file=sys.stderr)
        return 2
    try:
        report = compare_run_dir(argv[0])
    except (FidelityError, ScenarioError) as e:
        print(f"fidelity: {e}", file=sys.stderr)
        return 2
    print(fidelity.headline(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
