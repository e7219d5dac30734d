"""``novalab calibrate REAL_RUN_DIR [--out FILE]``: fit the sim's timing from a real run.

Reads the real run directory only (``manifest.json`` for the scenario, seed and time
scale; ``instances.csv``; ``logs/api-access.log``), measures how many store round trips and
broker hops the sim spends on each stretch of an instance's life (``probe_path``: the
scenario simulated with one unit of latency per store trip, then per hop, nothing else),
fits with ``common.analysis.calibration`` and writes a calibration file: a ``timing``
section in scenario form and its ``provenance`` (run directory, scenario hash, commit,
date, time scale, sample sizes). A scenario uses it with ``calibration: FILE``.

It lives in sim/ because the launch path is the simulator's; ``novalab calibrate`` (real/cli.py)
hands over to it through the ``novalab.tools`` entry point, as ``novalab run`` does to
``run-scenario``. From a source tree: ``python -m sim.calibrate REAL_RUN_DIR``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
from pathlib import Path
from typing import cast

import yaml

from common.analysis import calibration, report
from common.invariants import Snapshot
from common.scenario import ScenarioError, with_overrides
from common.workload import ApiCall
from sim import output
from sim.fidelity import FidelityError, mirrored_scenario, read_run_dir, real_manifest
from sim.run import Simulation
from sim.scenario_file import digest, load

#: Launches the probe simulates: the path is the same for each, a few show it is.
PROBE_REQUESTS = 3


def probe_path(scenario) -> calibration.LaunchPath:
    """Store trips and hops of each fitted stretch, as the sim performs this scenario."""
    store = _probe(scenario, store=1.0, rpc=0.0)
    hops = _probe(scenario, store=0.0, rpc=1.0)
    return calibration.LaunchPath(
        launch_store_ops=store["launch"], launch_hops=hops["launch"],
        delete_store_ops=store["delete"], delete_hops=hops["delete"],
        request_store_ops=store["request"], request_hops=hops["request"],
    )


def _probe(scenario, store: float, rpc: float) -> dict:
    zero = {"constant": 0.0}
    probe = with_overrides(scenario, {
        "timing.store": store, "timing.rpc": rpc, "timing.api": zero, "timing.network_driver": zero,
        "timing.hypervisor": {"boot_time": zero, "destroy_time": zero, "reboot_time": zero,
                              "spawn_failure_probability": 0.0},
        "timing.image_fetch.latency": zero, "timing.inline_zero_latency": False,
        # Far apart, so no launch waits for another; kept briefly, then terminated.
        "workload.arrivals": {"process": "constant", "rate": 0.001}, "workload.requests": PROBE_REQUESTS,
        "workload.lifetime": {"constant": 100.0}, "workload.floating_ips": 0.0, "faults": [],
    }, f"{scenario.name} (calibration probe)")
    simulation = Simulation(probe, probe.seed)
    requests: list[float] = []
    api = simulation.api

    def timed_perform(agent, call: ApiCall):
        begun = simulation.env.now
        answer = yield from api.perform(agent, call)
        if call.action == "RunInstances":
            requests.append(simulation.env.now - begun)
        return answer

    simulation.runtime.register(ApiCall, timed_perform)  # the API's performer, timed
    result = simulation.run()
    rows = report.instance_rows(dict(cast(Snapshot, result.snapshot).store))
    launch = [r["spawning_at"] - r["created_at"] for r in rows if r["spawning_at"] != ""]
    delete = [r["deleted_at"] - r["shutting_down_at"] for r in rows if r["deleted_at"] != ""]
    if not launch or not delete:
        raise calibration.CalibrationError(f"the probe of {scenario.name} launched or deleted nothing")
    return {"launch": round(statistics.median(launch)), "delete": round(statistics.median(delete)),
            "request": round(statistics.median(requests)) if requests else 0}


def calibrate(real_dir, scenario_path=None, method: str = "time_to_running") -> dict:
    """The calibration document (``timing`` and ``provenance``) of a real run directory."""
    real_dir = Path(real_dir)
    manifest = real_manifest(real_dir, "calibrate fits the sim to a real run")
    scenario_path = scenario_path or manifest["scenario_path"]
    scenario, raw = load(scenario_path)
    if digest(raw) != manifest.get("scenario_hash"):
        print(f"calibrate: {scenario_path} changed since the run (hash differs from the manifest's)", file=sys.stderr)
    simulated, _ = mirrored_scenario(scenario)
    path = probe_path(simulated)
    access_log = real_dir / "logs" / "api-access.log"
    api = calibration.api_latencies(access_log.read_text().splitlines()) if access_log.exists() else []
    time_scale = float(manifest.get("time_scale") or scenario.real.time_scale)
    timing, samples = calibration.fit(read_run_dir(real_dir).instance_rows, path, time_scale, api, method)
    return {
        "provenance": {
            "real_run": str(real_dir),
            "scenario": manifest.get("scenario"),
            "scenario_hash": manifest.get("scenario_hash"),
            "seed": manifest.get("seed"),
            "real_run_commit": manifest.get("git_commit"),
            "calibrated_by_commit": output.git_commit(Path(__file__).resolve().parent),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "time_scale": time_scale,
            "method": method,
            "units": "scenario seconds (real times multiplied by time_scale where they were wall seconds)",
            "sim_path": {"launch": {"store_ops": path.launch_store_ops, "hops": path.launch_hops},
                         "delete": {"store_ops": path.delete_store_ops, "hops": path.delete_hops},
                         "run_instances_request": {"store_ops": path.request_store_ops, "hops": path.request_hops}},
            "samples": samples,
        },
        "timing": timing,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="novalab calibrate",
                                     description="Fit the simulator's timing from a real run directory.")
    parser.add_argument("run_dir", help="a run directory of run-scenario --mode real")
    parser.add_argument("--out", default=None, help="calibration YAML to write (default: RUN_DIR/calibration.yaml)")
    parser.add_argument("--scenario", default=None, help="scenario file (default: the one the manifest names)")
    parser.add_argument("--method", choices=calibration.METHODS, default="time_to_running",
                        help="time_to_running (default): typical store trip and hop, the boot carries the spread of "
                             "a whole launch; phases: each stretch from its own spread")
    args = parser.parse_args(argv)
    try:
        document = calibrate(args.run_dir, args.scenario, args.method)
    except (FidelityError, ScenarioError, calibration.CalibrationError) as e:
        print(f"novalab calibrate: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.run_dir) / "calibration.yaml"
    header = ("# Timing fitted from a real run by novalab calibrate. Use it from a scenario with\n"
              "# `calibration: <this file, relative to the scenario>`.\n")
    out.write_text(header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100))
    samples = document["provenance"]["samples"]
    print(f"novalab calibrate: wrote {out} ({', '.join(f'{k} n={n}' for k, n in samples.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
