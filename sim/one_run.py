"""One simulated run: simulate a scenario with one seed and write its run directory.
Both ``sim.mode`` (a single run) and ``sim.sweep`` (many) call ``run_one``."""

from __future__ import annotations

import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from common.analysis import report
from common.scenario import calibration_entry
from sim import output
from sim.run import simulate
from sim.scenario_file import digest


def timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def run_one(scenario, raw: bytes, scenario_path, seed: int, out: Path, *, plots: bool = True, stamp: str | None = None,
            overrides: dict | None = None, sweep: str | None = None, console=None, progress: bool = False) -> dict:
    """Simulate one scenario with one seed and write its run directory; returns the summary.

    ``overrides`` (already applied to ``scenario``) and ``sweep`` (the sweep directory it
    belongs to) are recorded in the manifest."""
    if progress:
        result = _simulate_with_progress(scenario, seed, console or Console(stderr=True), enabled=True)
    else:
        result = simulate(scenario, seed)
    summary, files = run_files(
        result, scenario, raw, scenario_path, seed, plots=plots, stamp=stamp, overrides=overrides, sweep=sweep,
        read_beside=lambda name: (Path(scenario_path).parent / name).read_bytes())
    output.save_run_dir(out, files)
    return summary


def run_files(result, scenario, raw: bytes, scenario_path, seed: int, *, plots: bool, stamp: str | None,
              overrides: dict | None, sweep: str | None, read_beside) -> tuple[dict, dict[str, bytes]]:
    """-> (the summary, the run directory's files by name) of a finished simulation.
    ``read_beside(name)``: the bytes of a file named by the scenario (its calibration),
    so a worker without the scenario's folder can make them too."""
    manifest = report.manifest(
        scenario=scenario, scenario_path=scenario_path, scenario_hash=digest(raw), seed=seed, mode="sim",
        started_at=stamp or timestamp(), provenance=output.provenance(), overrides=dict(overrides or {}),
        calibration=calibration_entry(scenario, read_beside),
        **({"sweep": sweep} if sweep is not None else {}),
    )
    summary = result.summary
    files = report.run_files(
        manifest=manifest, summary=summary, store=result.snapshot.store, rpc_rows=result.recorder.rpc_rows,
        series=result.recorder.series, plots=plots,
        subtitle=f"{summary.get('scenario', '')} · seed {summary.get('seed', '')} · sim")
    return summary, files


def _simulate_with_progress(scenario, seed, console, enabled: bool):
    total = scenario.workload.requests
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} requests settled"),
        TextColumn("sim t={task.fields[sim_time]:,.0f} s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not enabled, transient=False) as progress:
        task = progress.add_task(scenario.name, total=total, sim_time=0.0)

        def update(issued, finished, sim_time):
            progress.update(task, completed=finished, sim_time=sim_time)

        result = simulate(scenario, seed, progress=update)
        progress.update(task, completed=total, sim_time=result.summary["sim_time"])
    return result
