"""``run-scenario FILE --sweep key=v1,v2 [--sweep ...] [--seeds N]``: parameter sweeps.

Every combination of the swept values x seeds (the scenario's seed, or ``--seed``, then
+1, +2, ...) runs in its own process (``ProcessPoolExecutor``, one worker per core by
default) and writes its own run directory under one sweep directory:

    <sweep dir>/
      sweep.json              what was swept: scenario, hash, parameters, seeds, the runs
      sweep.csv               one row per run: swept values, seed, run directory, headline metrics
      01-scheduler=queue-rate=1-seed1/   a run directory, as run-scenario writes one
      ...

Values are YAML scalars (``workload.arrivals.rate=1,2.5``, ``cloud.scheduler=queue,simple``);
a value list that starts with ``[`` is read as one YAML flow list, for values that hold
commas (``workload.lifetime=[{constant: 60}, {constant: 120}]``). Every combination is
validated against the scenario schema before anything runs. ``--set key=value`` changes a
field for every run (recorded in sweep.json and each run's manifest, not a table column).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common.analysis import sweep as plan_
from common.scenario import ScenarioError, with_overrides
from sim import output
from sim.one_run import run_one, timestamp
from sim.overrides import SweepError, parse_set_args, parse_sweep_args
from sim.scenario_file import digest, load

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class SweepResult:
    sweep_dir: Path
    parameters: dict
    runs: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    columns: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(row["ok"] for row in self.rows)

    @property
    def failed(self) -> list:
        return [row for row in self.rows if not row["ok"]]


# -- parsing and validation ---------------------------------------------------------


def validate(scenario, parameters: dict, source: str, overrides: dict | None = None) -> list:
    """The scenario of every combination (on top of ``overrides``), validated; raises
    SweepError listing each distinct problem once (with the first combination that shows it)."""
    scenarios: list = []
    problems: dict = {}
    overrides = dict(overrides or {})
    both = sorted(set(overrides) & set(parameters))
    if both:
        raise SweepError(f"{', '.join(both)}: both set (--set) and swept (--sweep); give it once")
    for combo in plan_.combinations(parameters):
        merged = {**overrides, **combo}
        label = ", ".join(f"{k}={plan_.format_value(v)}" for k, v in merged.items())
        try:
            scenarios.append(with_overrides(scenario, merged, f"{source} with {label}") if merged else scenario)
        except ScenarioError as e:
            for problem in e.problems:
                problems.setdefault(problem, f"{e.source}: {problem}")
    if problems:
        raise SweepError("\n".join(problems.values()))
    return scenarios


# -- running ------------------------------------------------------------------------


def _execute(task: dict) -> dict:
    """Worker process: one run of the sweep; returns its summary."""
    scenario, raw = load(task["scenario_path"])
    if task["overrides"]:
        scenario = with_overrides(scenario, task["overrides"], task["scenario_path"])
    return run_one(
        scenario, raw, task["scenario_path"], task["seed"], Path(task["out"]),
        plots=task["plots"], stamp=task["stamp"], overrides=task["overrides"], sweep=task["sweep"],
    )


#: Runs of one sweep: each writes a run directory (~1 MB with plots) and takes seconds
#: to minutes, so 10,000 is already days of work and ~10 GB.
MAX_SWEEP_RUNS = 10_000
#: Parallel runs: each is a process holding one simulation (~100 MB and up).
MAX_JOBS = 256


def run_sweep(scenario_path, parameters: dict, *, seeds: int = 1, seed: int | None = None, out=None,
              jobs: int | None = None, plots: bool = True, overrides: dict | None = None, echo=None) -> SweepResult:
    """Run a sweep and write its directory; returns the table. Raises ScenarioError or
    SweepError for bad input, before anything runs.

    ``parameters``: ``{dotted field path: [values]}`` (may be empty: seeds only).
    ``overrides``: ``{dotted field path: value}`` applied to every run (``--set``).
    ``echo``: called with one progress line per finished run (None: quiet)."""
    scenario, raw = load(scenario_path)
    base_seed = scenario.seed if seed is None else seed
    _check_counts(seeds, jobs, base_seed, parameters)
    for key in (*parameters, *(overrides or {})):
        if key in plan_.RESERVED:
            raise SweepError(f"{key} cannot be swept or set (use --seed and --seeds for seeds)")
    overrides = dict(overrides or {})
    validate(scenario, parameters, str(scenario_path), overrides)
    stamp = timestamp()
    sweep_dir = Path(out) if out else Path("runs") / f"{scenario.name}-sweep-{stamp}"
    runs = plan_.plan(parameters, base_seed, seeds)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    output.write_json(
        sweep_dir / "sweep.json",
        {
            "scenario": scenario.name,
            "scenario_path": str(scenario_path),
            "scenario_hash": digest(raw),
            "mode": "sim",
            "parameters": {k: list(v) for k, v in parameters.items()},
            "overrides": overrides,
            "seeds": list(range(base_seed, base_seed + seeds)),
            "runs": [{"run": r["run"], "params": r["params"], "seed": r["seed"], "run_dir": r["name"]} for r in runs],
            **output.provenance(),
            "started_at": stamp,
        },
    )
    workers = min(jobs or os.cpu_count() or 1, len(runs))
    if echo is not None:
        combos = len(runs) // seeds
        echo(f"sweep: {combos} combination(s) x {seeds} seed(s) = {len(runs)} run(s) on {workers} process(es) -> {sweep_dir}")
    common_task = {"scenario_path": str(scenario_path), "plots": plots, "stamp": stamp, "sweep": str(sweep_dir)}
    rows = _run_all(runs, common_task, overrides, sweep_dir, workers, echo)
    ordered = [rows[r["run"]] for r in runs]
    columns = plan_.columns(parameters, ordered)
    output.write_table(sweep_dir / "sweep.csv", columns, plan_.table_rows(ordered, columns))
    return SweepResult(sweep_dir, parameters, runs, ordered, columns)


def _check_counts(seeds: int, jobs: int | None, base_seed: int, parameters: dict) -> None:
    if seeds < 1:
        raise SweepError(f"--seeds must be at least 1, got {seeds}")
    if jobs is not None and not 1 <= jobs <= MAX_JOBS:
        raise SweepError(f"--jobs must be from 1 to {MAX_JOBS}, got {jobs}")
    combos = 1
    for values in parameters.values():
        combos *= max(1, len(values))
    if seeds * combos > MAX_SWEEP_RUNS:
        raise SweepError(f"{combos} combinations x {seeds} seeds is {seeds * combos:,} runs; a sweep runs at most "
                         f"{MAX_SWEEP_RUNS:,}")
    if not 0 <= base_seed < 1 << 64:
        raise SweepError(f"--seed must be from 0 to 2**64 - 1, got {base_seed}")


def _run_all(runs: list, common_task: dict, overrides: dict, sweep_dir: Path, workers: int, echo) -> dict:
    """Run every planned run on ``workers`` processes; -> run number -> table row. A
    run that crashes gets a crashed row and the others go on."""
    rows = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {}
        for entry in runs:
            task = {
                **common_task,
                "overrides": {**overrides, **entry["params"]},
                "seed": entry["seed"],
                "out": str(sweep_dir / entry["name"]),
            }
            futures[pool.submit(_execute, task)] = entry
        for done, future in enumerate(as_completed(futures), 1):
            entry = futures[future]
            try:
                summary = future.result()
            except Exception as e:  # a crashed run is a failed run, and the sweep goes on
                row = plan_.crashed_row(entry, entry["name"], f"{type(e).__name__}: {e}")
                line = f"CRASHED ({type(e).__name__}: {e})"
            else:
                row = plan_.sweep_row(entry, entry["name"], summary)
                line = _progress_line(row)
            rows[entry["run"]] = row
            if echo is not None:
                echo(f"[{done}/{len(runs)}] {entry['name']}: {line}")
    return rows


def _progress_line(row) -> str:
    verdict = "ok" if row["ok"] else f"FAILED ({row['failed']})"
    p95 = "-" if row["ttr_p95"] is None else f"{row['ttr_p95']:.1f} s"
    return f"{verdict} · p95 {p95} · errored {row['error_fraction']:.1%}"


# -- command line -----------------------------------------------------------------------


def run(args) -> int:
    """``run-scenario`` with ``--sweep`` or ``--seeds``."""
    try:
        parameters = parse_sweep_args(args.sweep)
        overrides = parse_set_args(getattr(args, "set", None))
        seeds = 1 if args.seeds is None else args.seeds
        err = None if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
        result = run_sweep(
            args.scenario, parameters, seeds=seeds, seed=args.seed, out=args.out, jobs=getattr(args, "jobs", None),
            plots=not getattr(args, "no_plots", False), overrides=overrides, echo=err,
        )
    except (ScenarioError, SweepError) as e:
        message = str(e)
        if isinstance(e, SweepError) and not message.startswith(("--sweep", "--set", str(args.scenario))):
            message = f"run-scenario: {message}"
        print(message, file=sys.stderr)
        return EXIT_BAD_INPUT
    print_table(Console(width=max(160, Console().width)), result)
    return EXIT_OK if result.ok else EXIT_FAILED


def print_table(console, result: SweepResult):
    rows = result.rows
    topics = [c for c in result.columns if c.startswith(plan_.TOPIC_PREFIX) and any(row.get(c) for row in rows)]
    pools = [c.split(":", 1)[1] for c in result.columns if c.startswith(plan_.POOL_SIZE_PREFIX)]
    table = Table(title=f"sweep · {len(rows)} runs · {result.sweep_dir}")
    right: dict[str, Any] = {"justify": "right"}
    table.add_column("run", **right)
    for key in result.parameters:
        table.add_column(key.rsplit(".", 1)[-1])
    for name in ("seed", "ok", "launched", "errored"):
        table.add_column(name, **right)
    for q in (50, 95, 99):
        table.add_column(f"ttr p{q}\n(s)", **right)
    for column in topics:
        table.add_column(f"peak depth\n{column.split(':', 1)[1]}", **right)
    many_pools = len(pools) > 2  # vlan: a pool per project network; show the fullest
    if many_pools:
        table.add_column("fullest pool\nused/size", **right)
    else:
        for pool in pools:
            table.add_column(f"pool {pool}\nused/size", **right)
    table.add_column("peak vCPU\nratio", **right)
    table.add_column("hosts\nover", **right)

    def number(value, fmt):
        return "-" if value is None or value == "" else format(value, fmt)

    for row in rows:
        cells = [str(row["run"]), *(str(row.get(k, "")) for k in result.parameters), str(row["seed"])]
        cells.append("ok" if row["ok"] else "FAILED")
        cells.append(number(row.get("launched"), ","))
        cells.append(number(row.get("error_fraction"), ".1%"))
        cells += [number(row.get(f"ttr_p{q}"), ".1f") for q in (50, 95, 99)]
        cells += [number(row.get(c), ",") for c in topics]
        if many_pools:
            cells.append(_fullest_pool(row, pools))
        else:
            for pool in pools:
                used, size = plan_.pool_columns(pool)
                cells.append(f"{number(row.get(used), ',')}/{number(row.get(size), ',')}")
        cells.append(number(row.get("peak_host_vcpu_ratio"), ".2f"))
        cells.append(number(row.get("hosts_ever_overcommitted"), ","))
        table.add_row(*cells, style=None if row["ok"] else "red")
    console.print(table)
    for row in result.failed:
        console.print(f"[red]run {row['run']} ({row['run_dir']}) failed:[/red] {row['failed']}", highlight=False)
    verdict = "[green]every run holds its invariants and SLOs[/green]" if result.ok else f"[red]{len(result.failed)} of {len(rows)} runs FAILED[/red]"
    console.print(f"{verdict} · table: {result.sweep_dir / 'sweep.csv'}")


def _fullest_pool(row, pools) -> str:
    best = None
    for pool in pools:
        used, size = (row.get(c) for c in plan_.pool_columns(pool))
        if used in (None, "") or not size:
            continue
        if best is None or used / size > best[1] / best[2]:
            best = (pool, used, size)
    return "-" if best is None else f"{best[0]} {best[1]:,}/{best[2]:,}"
