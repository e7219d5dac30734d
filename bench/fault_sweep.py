"""Sweep a fault kind over many seeds: how many runs break an invariant, and how often
the fault bit. Not a speed benchmark: the reliability acceptance (I1-I7 over at least
200 seeds per fault kind, with 0 violations).

    python bench/fault_sweep.py KIND --seeds 200 [--jobs 2]   # KIND: store_stall, store_wipe, ...

Each seed runs the kind's scenario in-process (``sim.run.simulate``) with the fault
moved to a different moment and given a different length per seed (so one sweep
catches workflows at every step), and the workload drawn from the seed. One line per
run that breaks an invariant; then the totals: runs, runs the fault bit in, runs with
violations (by invariant), and the reliability counters the runs add up to.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common.scenario import with_overrides
from sim.run import simulate
from sim.scenario_file import load

ROOT = Path(__file__).resolve().parents[1]


def _stall(seed: int) -> dict:
    """At a moment (even seeds) or from a store command (odd: a store crash point)."""
    seconds = (3, 8, 12, 20)[seed % 4]
    if seed % 2:
        return {"after_effects": 50 + (seed * 37) % 1400, "store_stall": seconds}
    return {"at": 5 + (seed * 7.3) % 50, "store_stall": seconds}


def _stall_counts(summary: dict) -> Counter:
    quota = summary["quota"]
    return Counter({"callers timed out": summary["store_stall"]["timed_out"],
                    "commands run late": summary["store_stall"]["ran_late"],
                    "reservations given back by failed requests": quota.get("failed", 0),
                    "reservations given back past their deadline": quota.get("expired", 0),
                    "usage corrections": quota.get("corrections", 0)})


def _played(summary: dict) -> bool:
    """The fault plan's step happened (it is listed in the summary, not skipped)."""
    return any(not f["what"].startswith("skipped") for f in summary.get("faults", ()))


def _counts(*paths: str):
    """Counters read from the summary at dotted ``paths`` (missing: 0)."""
    def read(summary: dict) -> Counter:
        out: Counter[str] = Counter()
        for path in paths:
            value: object = summary
            for part in path.split("."):
                value = value.get(part, 0) if isinstance(value, dict) else 0
            out[path] = int(value) if isinstance(value, (int, float)) else 0
        return out
    return read


_TOPICS = ("compute", "network", "scheduler", "compute.1", "compute.2", "network.1")
_BODIES = ("nested", "binary", "huge", "badargs")

#: kind -> (scenario, the fault for a seed, did it bite?, counters to add up).
KINDS = {
    "store_stall": (ROOT / "scenarios" / "store-stall.yaml", _stall,
                    lambda summary: summary["store_stall"]["timed_out"] > 0, _stall_counts),
    "store_wipe": (ROOT / "scenarios" / "crash-restart.yaml",
                   lambda seed: {"at": 5 + (seed * 7.3) % 60, "store_wipe": True}, _played,
                   _counts("recovered.losses_noticed", "recovered.orphaned_domains", "recovered.pools")),
    "broker_outage": (ROOT / "scenarios" / "broker-outage.yaml",
                      lambda seed: {"at": 5 + (seed * 7.3) % 80, "broker_outage": (3, 15, 45, 60)[seed % 4]}, _played,
                      _counts("broker_restarts", "messages_lost_at_broker_restart")),
    "host_never_returns": (ROOT / "scenarios" / "host-never-returns.yaml",
                           lambda seed: {"at": 10 + (seed * 7.3) % 60, "kill": "compute", "host": 1 + seed % 4},
                           _played, _counts("stranded_messages", "instances.deleted")),
    "poison": (ROOT / "scenarios" / "crash-restart.yaml",
               lambda seed: {"at": 2 + (seed * 3.7) % 60, "poison": _TOPICS[seed % len(_TOPICS)],
                             "body": _BODIES[(seed // len(_TOPICS)) % len(_BODIES)]},
               lambda summary: summary["poison_messages"] > 0, _counts("poison_messages")),
    "webhook_outage": (ROOT / "scenarios" / "webhooks.yaml",
                       lambda seed: {"at": 5 + (seed * 7.3) % 60, "webhook_outage": (10, 30, 60, 120)[seed % 4]},
                       _played, _counts("webhooks.delivered", "webhooks.failed_attempts", "webhooks.given_up")),
}


def one(kind: str, seed: int) -> tuple[int, bool, list, Counter]:
    """Worker: one seed of ``kind``; -> (seed, bit, [(invariant, first violation)], counters)."""
    path, fault, bit, counts = KINDS[kind]
    scenario = with_overrides(load(path)[0], {"faults": [fault(seed)]})
    result = simulate(scenario, seed)
    broken = [(v.name, v.violations[0]) for v in result.verdicts if not v.ok]
    return seed, bit(result.summary), broken, counts(result.summary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--seeds", type=int, default=200, help="seeds 0..N-1 (at most 100,000)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (at most 64)")
    args = parser.parse_args(argv)
    if not 1 <= args.seeds <= 100_000 or not 1 <= args.jobs <= 64:  # bounds: a sweep ends, and fits a machine
        parser.error("--seeds must be 1..100000 and --jobs 1..64")
    started = time.perf_counter()
    bitten, broken_runs = 0, 0
    by_invariant: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for seed, bit, broken, counts in pool.map(one, [args.kind] * args.seeds, range(args.seeds)):
            bitten += bit
            totals.update(counts)
            if broken:
                broken_runs += 1
                by_invariant.update(name for name, _ in broken)
                print(f"seed {seed}: {broken}", flush=True)
    print(f"{args.kind}: {args.seeds} runs, the fault bit in {bitten}, {broken_runs} with violations"
          f" {dict(sorted(by_invariant.items()))}; {time.perf_counter() - started:.0f} s wall")
    for name, n in totals.items():
        print(f"  {name}: {n:,}")
    return 1 if broken_runs else 0


if __name__ == "__main__":
    sys.exit(main())
