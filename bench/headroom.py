"""Headroom: how fast could the main job be if a part of the simulator cost nothing?

Run by hand, never by the test suite:

    python bench/headroom.py [--scenario scenarios/500-hosts.yaml] [--repeat 1]

The main job (memory store) runs four times in this process, each between two bare
baselines of 1,000,000 SimPy timeouts (``bench/mainjob.py``'s): as shipped; with every
effect's trace text a constant (the fingerprint's cost gone); with heartbeats running
their own code but their effects performed in place, no SimPy event, trace or latency
(their cost gone, the hosts still live to every reader); and with both. Each is reported as CPU over the bare
baseline's CPU, the issue's main-job ratio (goal: at most 5x). What is left with both
parts gone is the work of the API path, the managers, the broker model and SimPy around
the other effects: a floor that cutting those two parts cannot go under.

The ablations patch the simulator in this process only; their fingerprints are not
comparable with a shipped run's (the trace ablation's are all alike by construction).
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):  # a source tree that was never installed; mainjob.py beside this
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from mainjob import BARE_EVENTS, bare, timed  # noqa: E402

from common.errors import NovaError  # noqa: E402
from common.scenario import with_overrides  # noqa: E402
from sim import runtime as sim_runtime  # noqa: E402
from sim import services as sim_services  # noqa: E402
from sim.run import simulate  # noqa: E402
from sim.scenario_file import load  # noqa: E402

DEFAULT_SCENARIO = ROOT / "scenarios" / "500-hosts.yaml"


@contextmanager
def no_trace():
    """Every effect's trace text is one constant: what the fingerprint costs, gone."""
    original = sim_runtime.SimRuntime._plan

    def plan(self, agent, kind):
        handler, _, delay, latency = original(self, agent, kind)
        entry = self._plans[kind] = (handler, lambda effect: "", delay, latency)
        return entry

    sim_runtime.SimRuntime._plan = plan
    try:
        yield
    finally:
        sim_runtime.SimRuntime._plan = original


@contextmanager
def free_heartbeats():
    """Each heartbeat runs its own code (``SimService.beat``), but its effects are
    performed in place by their registered handlers: no SimPy event, trace or latency.
    What heartbeats cost the runtime, gone; every reader still sees what they wrote.
    For scenarios without store stalls (a stalled store's handler waits, which needs
    the runtime)."""
    original = sim_services.SimService.heartbeat

    def heartbeat(self, interval, offset):
        env, agent, lookup = self.runtime.env, self.agent, self.runtime.performers.lookup
        yield env.timeout(offset)
        while agent.alive:
            beat, result, error = self.beat(), None, None
            while True:
                try:
                    effect = beat.send(result) if error is None else beat.throw(error)
                except (StopIteration, NovaError):
                    break  # done, or lost as a real beat is (the store is down)
                try:
                    result, error = lookup(type(effect))[0](agent, effect), None
                except NovaError as e:
                    result, error = None, e
            yield env.timeout(interval)

    sim_services.SimService.heartbeat = heartbeat
    try:
        yield
    finally:
        sim_services.SimService.heartbeat = original


VARIANTS = {
    "as shipped": (),
    "no trace": (no_trace,),
    "free heartbeats": (free_heartbeats,),
    "both": (no_trace, free_heartbeats),
}


def log(message: str) -> None:
    print(f"[headroom {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default=str(DEFAULT_SCENARIO), help="default: scenarios/500-hosts.yaml")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; the fastest is kept (default: 1)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    base, _ = load(args.scenario)
    scenario = with_overrides(base, {"sim.store": "memory"}, source=f"{base.name} on memory")
    rows = []
    for name, patches in VARIANTS.items():
        best = None
        for _ in range(args.repeat):
            before = bare(BARE_EVENTS)
            with ExitStack() as stack:
                for patch in patches:
                    stack.enter_context(patch())
                _, cpu, result = timed(lambda: simulate(scenario))
            after = bare(BARE_EVENTS)
            summary = result.summary  # type: ignore[attr-defined]
            row = (cpu / min(before[1], after[1]), cpu, summary["effects"], summary["ok"])
            best = row if best is None or row[0] < best[0] else best
            log(f"{name}: {cpu:.1f} s CPU, {row[0]:.1f}x, {summary['effects']:,} effects, ok={summary['ok']}")
        rows.append((name, *best))  # type: ignore[misc]
    print(f"novalab headroom: {base.name} on the memory store, CPU over {BARE_EVENTS:,} bare SimPy timeouts' CPU")
    print()
    print(f"{'variant':>16}  {'CPU s':>6}  {'effects':>9}  {'main job/1M':>11}  ok")
    for name, ratio, cpu, effects, ok in rows:
        print(f"{name:>16}  {cpu:6.1f}  {effects:9,}  {ratio:10.1f}x  {'yes' if ok else 'NO'}")
    floor = rows[-1][1]
    print()
    print(f"with neither the trace nor the heartbeats costing anything the main job is still {floor:.1f}x "
          f"(goal <= 5x: {'within reach' if floor <= 5 else 'out of reach by cutting these two'})")
    return 0 if all(row[4] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
