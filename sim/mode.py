"""``run-scenario --mode sim``: load, simulate, write the run directory (with plots), print the
summary. With ``--sweep``/``--seeds`` the work goes to ``sim.sweep``."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from common.analysis import report
from common.scenario import ScenarioError, with_overrides
from sim import sweep
from sim.one_run import run_one, timestamp
from sim.overrides import SweepError, parse_set_args
from sim.scenario_file import load

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def run(args) -> int:
    if getattr(args, "sweep", None) or getattr(args, "seeds", None) is not None:
        return sweep.run(args)
    try:
        scenario, raw = load(args.scenario)
        overrides = parse_set_args(getattr(args, "set", None))
        if overrides:
            label = ", ".join(f"{k}={v}" for k, v in overrides.items())
            scenario = with_overrides(scenario, overrides, f"{args.scenario} with {label}")
    except (ScenarioError, SweepError) as e:
        message = str(e)
        print(message if message.startswith(("--set", str(args.scenario))) else f"run-scenario: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    seed = scenario.seed if args.seed is None else args.seed
    if not 0 <= seed < 1 << 64:
        print(f"run-scenario: --seed must be from 0 to 2**64 - 1, got {seed}", file=sys.stderr)
        return EXIT_BAD_INPUT
    err = Console(stderr=True)
    stamp = timestamp()
    out = Path(args.out) if args.out else Path("runs") / f"{scenario.name}-seed{seed}-{stamp}"
    summary = run_one(
        scenario, raw, args.scenario, seed, out,
        plots=not getattr(args, "no_plots", False), stamp=stamp, overrides=overrides, console=err,
        progress=not args.no_progress,
    )
    print_summary(Console(width=max(100, Console().width)), summary, out)
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def print_summary(console, summary, out):
    console.print(report.summary_renderable(summary, out))
