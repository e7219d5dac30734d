"""Command line: ``run-scenario`` (``novalab run`` hands over to it).

Exit status: 0 when every invariant and SLO holds; 1 when one fails; 2 for bad input
(a scenario file that does not validate, bad options, a mode that is not available).

A mode's runner is found through the ``novalab.modes`` entry points, so this module
names no runner but the simulator's own: sim/ never imports real/.

Sim-mode options beyond a single run: ``--no-plots`` (no PNGs in the run directory),
``--set KEY=VALUE`` (change a scenario field), ``--sweep KEY=V1,V2,...`` / ``--seeds N`` /
``--jobs N`` (a parameter sweep, see ``sim/sweep.py``), ``--cluster ADDRESS`` (the sweep's runs on
a Dask distributed scheduler, see ``sim/sweep_exec.py``).

After a real run (``--mode real``), this module also simulates the same scenario and seed
and writes ``fidelity.json`` into the real run directory (``sim/fidelity.py``): it is the one
place that may use both modes, since it reaches the real runner only through its entry
point and reads back nothing but the run directory the real runner reports
(``args.run_dir``). ``--no-fidelity`` skips it.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata
from pathlib import Path

from sim import output

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _add_run_arguments(parser):
    parser.add_argument("scenario", help="scenario YAML file")
    parser.add_argument("--mode", default="sim", help="sim (default) or real")
    parser.add_argument("--seed", type=int, default=None, help="overrides the scenario's seed")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<name>-seed<N>-<time>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (or, in a sweep, no progress lines)")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots into the run directory")
    parser.add_argument("--no-fidelity", action="store_true",
                        help="after a real run, do not simulate it and write fidelity.json")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="real mode: a daemon configuration (YAML) whose settings override the scenario's")
    parser.add_argument("--production", action="store_true",
                        help="real mode on a real site: every harness shortcut off, refused (exit 2, naming each "
                        "setting) unless --config describes one (README, 'Run it for real')")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE", default=None,
        help="change one scenario field by dotted path, the value read as YAML "
        "(e.g. cloud.hosts.count=20 or 'workload.lifetime={constant: 60}'); repeat for more fields",
    )
    sweep = parser.add_argument_group(
        "sweeps",
        "Run every combination of swept values x seeds in parallel processes, each in its own run "
        "directory under one sweep directory (--out, default runs/<name>-sweep-<time>), and write "
        "sweep.csv, one row per run. Exit 1 if any run fails an invariant or SLO.",
    )
    sweep.add_argument(
        "--sweep", action="append", metavar="KEY=V1,V2,...", default=None,
        help="a scenario field by dotted path and its values, read as YAML scalars "
        "(e.g. cloud.scheduler=queue,simple or workload.arrivals.rate=1,2.5; "
        "KEY=[...] reads one YAML list, for values with commas); repeat for more fields",
    )
    sweep.add_argument("--seeds", type=int, default=None, metavar="N",
                       help="run each combination with N seeds: the scenario's seed (or --seed), +1, ... (default 1)")
    sweep.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="parallel runs in a sweep (default: the number of cores; with --cluster, runs "
                       "submitted at a time, default twice the cluster's worker threads)")
    sweep.add_argument(
        "--cluster", default=None, metavar="ADDRESS",
        help="run the sweep on the workers of a Dask distributed scheduler (e.g. tcp://host:8786; needs "
        "pip install 'novalab[cluster]'); run directories and sweep.csv are still written here",
    )


def _runner(mode: str):
    for entry in metadata.entry_points(group="novalab.modes"):
        if entry.name == mode:
            return entry.load()
    if mode == "sim":  # running from a source tree that was never installed
        from sim.mode import run

        return run
    return None


def run(args) -> int:
    cluster = getattr(args, "cluster", None)
    if args.mode == "sim" and (getattr(args, "production", False) or getattr(args, "config", None)):
        print("run-scenario: --production and --config are for --mode real", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.mode != "sim" and (args.sweep or args.seeds is not None or args.set or cluster is not None):
        print(f"run-scenario: --set, --sweep, --seeds and --cluster run in sim mode only, not with --mode {args.mode}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    if cluster is not None and not args.sweep and args.seeds is None:
        print("run-scenario: --cluster runs a sweep's runs: give --sweep KEY=V1,V2,... or --seeds N", file=sys.stderr)
        return EXIT_BAD_INPUT
    runner = _runner(args.mode)
    if runner is None:
        print(f"run-scenario: unknown mode {args.mode!r} (expected sim or real)", file=sys.stderr)
        return EXIT_BAD_INPUT
    problem = out_problem(args.out)
    if problem:
        print(f"run-scenario: --out {args.out}: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # The commit and versions are read here, once, for whichever mode runs.
    args.provenance = output.provenance()
    status = runner(args)
    run_dir = getattr(args, "run_dir", None)
    if args.mode == "real" and run_dir and status in (EXIT_OK, EXIT_FAILED) \
            and not getattr(args, "no_fidelity", False):
        from sim import fidelity  # the simulator, only once a real run has finished

        try:
            report = fidelity.compare_run_dir(run_dir, args.scenario)
        except (fidelity.FidelityError, ValueError) as e:
            print(f"run-scenario: fidelity: {e}", file=sys.stderr)
            return status
        from common.analysis.fidelity import headline

        print(f"{headline(report)} · {run_dir}/fidelity.json")
    return status


def out_problem(out) -> str | None:
    """Why ``--out`` cannot become a run directory, or None: checked before the run, so
    a long simulation never ends in an unwritable path."""
    if out is None:
        return None
    if not out or "\0" in out:
        return "not a usable path"
    path = Path(out)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            return "exists and is not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else "is not writable"
    parent = path.parent
    while not parent.exists():  # the run directory's parents are created too
        if parent.is_symlink() or parent == parent.parent:
            return "its parent cannot be created"
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable"


def run_scenario_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="run-scenario", description="Run a novalab scenario and audit the cloud it leaves behind."
    )
    _add_run_arguments(parser)
    sys.exit(run(parser.parse_args(argv)))
