"""``run-scenario FILE --sweep key=v1,v2 [--sweep ...] [--seeds N]``: parameter sweeps.

Every combination of the swept values x seeds (the scenario's seed, or ``--seed``, then
+1, +2, ...) runs in its own process (``ProcessPoolExecutor``, one worker per core by
default), or with ``--cluster ADDRESS`` on the workers of a Dask distributed scheduler
(``sim/sweep_exec.py``), and gets its own run directory under one sweep directory:

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

Nothing grows with the number of runs but the plan: a bounded number of runs is submitted
at a time, and each row goes to ``sweep.csv`` as its run finishes (``sim/sweep_table.py``),
so a sweep stopped by Ctrl-C keeps the rows of the runs that finished.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common.analysis import sweep as plan_
from common.scenario import ScenarioError, with_overrides
from sim import output, sweep_exec
from sim.one_run import timestamp
from sim.overrides import SweepError, parse_set_args, parse_sweep_args
from sim.scenario_file import digest, load, read
from sim.sweep_table import SweepTable, read_rows

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


#: Failed rows a SweepResult keeps to report (the table on disk has every one).
MAX_FAILED_KEPT = 20


@dataclass
class SweepResult:
    """What a sweep did. The rows themselves are in ``sweep.csv``, not in memory."""

    sweep_dir: Path
    parameters: dict
    runs: list = field(default_factory=list)
    columns: list = field(default_factory=list)
    finished: int = 0
    failed_count: int = 0
    failed: list = field(default_factory=list)  # the first MAX_FAILED_KEPT failed rows
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed_count == 0 and self.finished == len(self.runs)

    @property
    def rows(self) -> list:
        """Every row, read back from ``sweep.csv`` in run order (as long as the sweep)."""
        return list(read_rows(self.sweep_dir / "sweep.csv", self.parameters))

    def count(self, row: dict) -> None:
        self.finished += 1
        if not row["ok"]:
            self.failed_count += 1
            if len(self.failed) < MAX_FAILED_KEPT:
                self.failed.append(row)


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


#: Runs of one sweep: each writes a run directory (~1 MB with plots) and takes seconds
#: to minutes, so 10,000 is already days of work and ~10 GB.
MAX_SWEEP_RUNS = 10_000
#: Parallel runs: each is a process holding one simulation (~100 MB and up).
MAX_JOBS = 256


def run_sweep(scenario_path, parameters: dict, *, seeds: int = 1, seed: int | None = None, out=None,
              jobs: int | None = None, plots: bool = True, overrides: dict | None = None, echo=None,
              cluster: str | None = None) -> SweepResult:
    """Run a sweep and write its directory; returns what it did. Raises ScenarioError or
    SweepError for bad input (a cluster that cannot be reached, too), before anything runs.
    Ctrl-C (KeyboardInterrupt) stops it: runs not started are cancelled, the finished
    runs' rows stay in sweep.csv, and the KeyboardInterrupt goes on to the caller.

    ``parameters``: ``{dotted field path: [values]}`` (may be empty: seeds only).
    ``overrides``: ``{dotted field path: value}`` applied to every run (``--set``).
    ``cluster``: a Dask scheduler's address (``tcp://host:8786``) to run on; None: local processes.
    ``echo``: called with one progress line per finished run (None: quiet)."""
    scenario, raw = load(scenario_path)
    base_seed = scenario.seed if seed is None else seed
    _check_counts(seeds, jobs, base_seed, parameters)
    for key in (*parameters, *(overrides or {})):
        if key in plan_.RESERVED:
            raise SweepError(f"{key} cannot be swept or set (use --seed and --seeds for seeds)")
    overrides = dict(overrides or {})
    validate(scenario, parameters, str(scenario_path), overrides)
    beside = {} if scenario.calibration is None else {
        scenario.calibration: read(Path(scenario_path).parent / scenario.calibration)}
    client = None if cluster is None else sweep_exec.connect(cluster)
    try:
        stamp = timestamp()
        sweep_dir = Path(out) if out else Path("runs") / f"{scenario.name}-sweep-{stamp}"
        runs = plan_.plan(parameters, base_seed, seeds)
        _write_sweep_json(sweep_dir, scenario, scenario_path, raw, parameters, overrides, base_seed, seeds, runs, stamp)
        result = SweepResult(sweep_dir, parameters, runs)
        common_task = {"scenario_path": str(scenario_path), "raw": raw, "beside": beside, "plots": plots,
                       "stamp": stamp, "sweep": str(sweep_dir)}
        tasks = ((entry, {**common_task, "overrides": {**overrides, **entry["params"]}, "seed": entry["seed"],
                          "out": None if client is not None else str(sweep_dir / entry["name"])}) for entry in runs)
        if client is None:
            workers = min(jobs or os.cpu_count() or 1, len(runs))
            where = f"{workers} process(es)"
            finished = sweep_exec.local_results(tasks, workers)
        else:
            where = f"the cluster at {cluster} ({sweep_exec.cluster_slots(client)} thread(s) now)"
            finished = sweep_exec.cluster_results(client, tasks, jobs)
        if echo is not None:
            echo(f"sweep: {len(runs) // seeds} combination(s) x {seeds} seed(s) = {len(runs)} run(s) on {where} -> "
                 f"{sweep_dir}")
        _collect(finished, result, echo)
        return result
    finally:
        if client is not None:
            client.close()


def _write_sweep_json(sweep_dir, scenario, scenario_path, raw, parameters, overrides, base_seed, seeds, runs, stamp):
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


def _collect(finished, result: SweepResult, echo) -> None:
    """Each run's row into sweep.csv as it finishes (a crashed run gets a crashed row and
    the others go on); its files into its run directory if the worker returned them."""
    table = SweepTable(result.sweep_dir / "sweep.csv", result.parameters)
    try:
        with contextlib.closing(finished):
            for entry, future in finished:
                name = entry["name"]
                try:
                    summary, files = future.result()
                    if files is not None:
                        sweep_exec.save_run_dir(result.sweep_dir / name, files)
                except Exception as e:  # a crashed run is a failed run, and the sweep goes on
                    row = plan_.crashed_row(entry, name, f"{type(e).__name__}: {e}")
                    line = f"CRASHED ({type(e).__name__}: {e})"
                else:
                    row = plan_.sweep_row(entry, name, summary)
                    line = _progress_line(row)
                table.add(row)
                result.count(row)
                if echo is not None:
                    echo(f"[{result.finished}/{len(result.runs)}] {name}: {line}")
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        table.close()
        result.columns = table.columns
        sweep_exec.remove_partials(result.sweep_dir)


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


def _progress_line(row) -> str:
    verdict = "ok" if row["ok"] else f"FAILED ({row['failed']})"
    p95 = "-" if row["ttr_p95"] is None else f"{row['ttr_p95']:.1f} s"
    return f"{verdict} · p95 {p95} · errored {row['error_fraction']:.1%}"


# -- command line -----------------------------------------------------------------------


#: Exit status after Ctrl-C, as a shell reports a process that SIGINT ended (128 + 2).
EXIT_INTERRUPTED = 130


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
            cluster=getattr(args, "cluster", None),
        )
    except (ScenarioError, SweepError) as e:
        message = str(e)
        if isinstance(e, SweepError) and not message.startswith(("--sweep", "--set", str(args.scenario))):
            message = f"run-scenario: {message}"
        print(message, file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("run-scenario: sweep interrupted; sweep.csv has a row for each run that finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_table(Console(width=max(160, Console().width)), result)
    return EXIT_OK if result.ok else EXIT_FAILED


#: Rows printed as a table at the end; a longer sweep prints its verdict, and sweep.csv has the rows.
MAX_PRINTED_ROWS = 200


def print_table(console, result: SweepResult):
    if result.finished <= MAX_PRINTED_ROWS:
        _print_rows(console, result, result.rows)
    for row in result.failed:
        console.print(f"[red]run {row['run']} ({row['run_dir']}) failed:[/red] {row['failed']}", highlight=False)
    if result.failed_count > len(result.failed):
        console.print(f"[red]... and {result.failed_count - len(result.failed):,} more failed runs[/red] (sweep.csv)")
    if result.ok:
        verdict = f"[green]every run holds its invariants and SLOs[/green] ({result.finished:,} runs)"
    else:
        verdict = f"[red]{result.failed_count:,} of {result.finished:,} runs FAILED[/red]"
    console.print(f"{verdict} · table: {result.sweep_dir / 'sweep.csv'}")


def _print_rows(console, result: SweepResult, rows: list):
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


def _fullest_pool(row, pools) -> str:
    best = None
    for pool in pools:
        used, size = (row.get(c) for c in plan_.pool_columns(pool))
        if used in (None, "") or not size:
            continue
        if best is None or used / size > best[1] / best[2]:
            best = (pool, used, size)
    return "-" if best is None else f"{best[0]} {best[1]:,}/{best[2]:,}"
