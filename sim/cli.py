"""Command line: ``run-scenario`` and ``novalab``.

Exit status: 0 when every invariant and SLO holds; 1 when one fails; 2 for bad input
(a scenario file that does not validate, bad options, a mode that is not available).

A mode's runner is found through the ``novalab.modes`` entry points, so this module
names no runner but the simulator's own: sim/ never imports real/.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _add_run_arguments(parser):
    parser.add_argument("scenario", help="scenario YAML file")
    parser.add_argument("--mode", default="sim", help="sim (default) or real")
    parser.add_argument("--seed", type=int, default=None, help="overrides the scenario's seed")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<name>-seed<N>-<time>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _runner(mode: str):
    for entry in metadata.entry_points(group="novalab.modes"):
        if entry.name == mode:
            return entry.load()
    if mode == "sim":  # running from a source tree that was never installed
        from sim.mode import run

        return run
    return None


def run(args) -> int:
    runner = _runner(args.mode)
    if runner is None:
        print(f"run-scenario: unknown mode {args.mode!r} (expected sim or real)", file=sys.stderr)
        return EXIT_BAD_INPUT
    return runner(args)


def run_scenario_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="run-scenario", description="Run a novalab scenario and audit the cloud it leaves behind."
    )
    _add_run_arguments(parser)
    sys.exit(run(parser.parse_args(argv)))


def novalab_main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="novalab", description="novalab: a testbed of the 2010 Nova architecture.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_arguments(sub.add_parser("run", help="run a scenario (same as run-scenario)"))
    validate = sub.add_parser("validate", help="check scenario files without running them")
    validate.add_argument("scenarios", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "run":
        sys.exit(run(args))
    sys.exit(_validate(args.scenarios))


def _validate(paths) -> int:
    from common.scenario import ScenarioError
    from sim.scenario_file import load

    status = EXIT_OK
    for path in paths:
        try:
            scenario, _ = load(path)
        except ScenarioError as e:
            print(e, file=sys.stderr)
            status = EXIT_BAD_INPUT
        else:
            print(f"{path}: ok ({scenario.name}, {scenario.cloud.hosts.count} hosts, {scenario.workload.requests} requests)")
    return status
