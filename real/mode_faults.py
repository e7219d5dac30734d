"""The scenario's fault plan as real mode plays it: (wall seconds, callable(run)) steps.

The names follow this mode's daemons: compute ``host<N>``, ``net<N>``, ``sched<N>``.
Sim-only kinds (hypervisor, crash points) are said and skipped, not refused, because one
file drives both modes.
"""

from __future__ import annotations

import sys
from typing import Any

from common import rpc
from real import broker_faults, store_faults
from real.daemon import StartupError


def plan(run) -> tuple:
    """-> the steps of ``run``'s scenario; StartupError for a plan real mode cannot play."""
    scenario = run.scenario
    problems = scenario.fault_problems(scenario.real.hosts)
    problems += store_faults.problems(scenario, run.config)
    problems += broker_faults.refusals(scenario)
    if problems:
        raise StartupError("the fault plan does not fit real mode: " + "; ".join(problems))
    names: dict[str, list[str]] = {}
    for spec in run.roster:
        names.setdefault(spec.topic, []).append(spec.host)
    steps: list[tuple[float, Any]] = []
    for index, fault in enumerate(scenario.faults):
        # The same file drives both modes, so sim-only faults are said, not refused.
        why = None
        if fault.hypervisor is not None:
            why = "sim-only, libvirt cannot be slowed on demand"
        elif fault.after_effects is not None:
            why = "sim-only, a daemon's effects are not counted from outside"
        if why:
            what = f"skipped faults.{index} ({fault.describe()}): {why}"
            print(f"run-scenario --mode real: {what}", file=sys.stderr)
            run.fault_log.append((fault.at or 0.0, what))
            continue
        if fault.webhook_outage is not None:
            steps.append((fault.at / run.scale, lambda run, f=fault: run._webhook_outage(f)))
            continue
        if fault.broker_outage is not None:
            steps.extend(broker_faults.steps(fault, run.scale))
            continue
        if fault.store_wipe is not None or fault.store_outage is not None or fault.store_stall is not None:
            steps.extend(store_faults.steps(fault, run.scale))
            continue
        if fault.poison is not None:
            kind, position = rpc.poison_target(fault.poison)
            topic = kind if position is None else rpc.host_topic(kind, names[kind][position - 1])
            steps.append((fault.at / run.scale,
                         lambda run, t=topic, f=fault, k=kind: run._publish_poison(t, rpc.poison_body(f.body, k),
                                                                                     f.describe())))
            continue
        kind, host = fault.kill, names[fault.kill][fault.host - 1]
        steps.append((fault.at / run.scale, lambda run, k=kind, h=host: run._play_fault("kill", k, h)))
        if fault.restart_after is not None:
            steps.append(((fault.at + fault.restart_after) / run.scale,
                         lambda run, k=kind, h=host: run._play_fault("restart", k, h)))
    return tuple(steps)

