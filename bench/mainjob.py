"""Main-job benchmark: how fast does the simulator run ``scenarios/500-hosts.yaml``, per store?

Run by hand, never by the test suite:

    python bench/mainjob.py [--stores memory,fakeredis] [--repeat 1] [--profile] [--json FILE]

For each sim store (``sim.store``), the scenario runs in-process through
``sim.run.simulate``. In the same process and run, a bare SimPy baseline is timed before
and after each simulation (the fastest kept): 8 SimPy processes looping on
``yield env.timeout(0.001)`` until they have scheduled 1,000,000 events, the same loop
as ``bench/scale.py``'s baseline. Speed is reported only as ratios measured in this run:

* main job / 1,000,000 bare timeouts (the issue's goal: at most 5x);
* main job / as many bare events as the run performed effects: what one effect costs
  against one bare SimPy event, ``bench/scale.py``'s ``sim/baseline`` column (goal: at
  most 10x);
* the runtime alone: effects that do nothing but one store read (``HGET`` on the store,
  with the scenario's store latency), against the same number of bare events.

Each ratio is given for wall time (what the issue asks) and for the process's CPU time,
which other jobs on a shared machine disturb less. ``--profile`` adds one cProfile run
per store and prints where its time went, by area (store, runtime, SimPy, API, ...).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # running from a source tree that was never installed
    sys.path.insert(0, str(ROOT))

import simpy  # noqa: E402

from common import effects as fx  # noqa: E402
from common.scenario import with_overrides  # noqa: E402
from sim.memstore import STORES, make_store  # noqa: E402
from sim.recorder import Recorder  # noqa: E402
from sim.run import simulate  # noqa: E402
from sim.runtime import SimRuntime  # noqa: E402
from sim.scenario_file import load  # noqa: E402

DEFAULT_SCENARIO = ROOT / "scenarios" / "500-hosts.yaml"
#: The issue's yardstick: this many bare SimPy timeouts.
BARE_EVENTS = 1_000_000
#: Processes sharing the baseline's events, and the simulated step each one waits (as bench/scale.py).
BASELINE_PROCESSES = 8
BASELINE_STEP = 0.001
#: Effects of the runtime-only measurement.
RUNTIME_EFFECTS = 200_000
#: Goals from the issue.
MAIN_JOB_GOAL, EFFECT_GOAL = 5.0, 10.0
#: Profile areas: the first whose marker is in a function's file name takes its own time.
AREAS = (
    ("store", ("sim/memstore.py", "sim/store.py", "fakeredis", "/redis/", "sortedcontainers")),
    ("runtime", ("sim/runtime.py", "common/effects/")),
    ("SimPy", ("simpy",)),
    ("API (EC2, signing, directory)", ("common/ec2/", "common/signing.py", "sim/api.py", "common/directory.py",
                                       "sim/directory.py", "ldap3", "common/ldap_escaping.py", "xml/", "urllib/",
                                       "hmac.py")),
    ("broker and services", ("sim/broker.py", "sim/services.py", "common/rpc.py", "json/")),
    ("managers", ("common/",)),
)


def log(message: str) -> None:
    print(f"[mainjob {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(run) -> tuple[float, float, object]:
    """-> (wall s, CPU s, result) of ``run()``."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bare(events: int) -> tuple[float, float]:
    """(wall s, CPU s) of ``events`` bare SimPy timeouts shared by 8 looping processes."""
    env = simpy.Environment()
    remaining = [events]

    def ticker():
        timeout = env.timeout
        while remaining[0] > 0:
            remaining[0] -= 1
            yield timeout(BASELINE_STEP)

    def run():
        for _ in range(BASELINE_PROCESSES):
            env.process(ticker())
        env.run()

    wall, cpu, _ = timed(run)
    return wall, cpu


def runtime_only(scenario, events: int) -> tuple[float, float]:
    """(wall s, CPU s) of ``events`` HGET effects through the sim runtime on the scenario's store."""
    env = simpy.Environment()
    runtime = SimRuntime(env, scenario.seed, make_store(scenario.sim.store, scenario.seed), None, scenario.timing,
                         Recorder())
    remaining = [events]

    def work():
        while remaining[0] > 0:
            remaining[0] -= 1
            yield fx.HGet("instance:i-1", "state")

    def run():
        for i in range(BASELINE_PROCESSES):
            runtime.start(runtime.agent(f"bench{i}"), work())
        env.run()

    wall, cpu, _ = timed(run)
    return wall, cpu


def areas(profile: cProfile.Profile) -> list[tuple[str, float]]:
    """Own time per area, as fractions of the profiled total."""
    totals: Counter = Counter()
    for (filename, _, _), (_, _, own, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        name = next((area for area, markers in AREAS if any(m in filename for m in markers)), "builtins, other")
        totals[name] += own
    whole = sum(totals.values()) or 1.0
    return [(name, seconds / whole) for name, seconds in totals.most_common()]


def measure(base, store: str, repeat: int, profile: bool) -> dict:
    """Run the scenario on ``store`` ``repeat`` times, each between two baselines; keep the fastest."""
    scenario = with_overrides(base, {"sim.store": store}, source=f"{base.name} on {store}")
    rows = []
    for i in range(repeat):
        before = bare(BARE_EVENTS)
        log(f"{store}: run {i + 1}/{repeat} (baseline {before[0]:.2f} s wall)")
        wall, cpu, result = timed(lambda: simulate(scenario))
        after = bare(BARE_EVENTS)
        summary = result.summary  # type: ignore[attr-defined]
        rows.append({"wall": wall, "cpu": cpu, "bare_wall": min(before[0], after[0]),
                     "bare_cpu": min(before[1], after[1]), "effects": summary["effects"],
                     "store_commands": summary["store_commands"], "fingerprint": summary["fingerprint"],
                     "ok": summary["ok"]})
        log(f"{store}: {wall:.1f} s wall, {cpu:.1f} s CPU, {summary['effects']:,} effects, ok={summary['ok']}")
        del result, summary
    best = dict(min(rows, key=lambda r: r["wall"]))
    best["bare_wall"] = min(r["bare_wall"] for r in rows)
    best["bare_cpu"] = min(r["bare_cpu"] for r in rows)
    best["deterministic"] = len({r["fingerprint"] for r in rows}) == 1
    best["ok"] = all(r["ok"] for r in rows)
    effect_wall, effect_cpu = runtime_only(scenario, RUNTIME_EFFECTS)
    bare_wall, bare_cpu = bare(RUNTIME_EFFECTS)
    best["runtime_only"] = {"wall": effect_wall / bare_wall, "cpu": effect_cpu / bare_cpu}
    if profile:
        log(f"{store}: profiled run")
        profiler = cProfile.Profile()
        profiler.runcall(simulate, scenario)
        best["profile"] = areas(profiler)
    return best


def ratios(row: dict) -> dict:
    """The goals' ratios of one store's row, wall and CPU."""
    per_event = {kind: row[kind] / (row[f"bare_{kind}"] * row["effects"] / BARE_EVENTS) for kind in ("wall", "cpu")}
    return {
        "main_job": {kind: row[kind] / row[f"bare_{kind}"] for kind in ("wall", "cpu")},
        "effect": per_event,
        "runtime_only": row["runtime_only"],
    }


def report(name: str, rows: dict[str, dict]) -> None:
    print(f"novalab main-job benchmark: {name}, baseline {BARE_EVENTS:,} bare SimPy timeouts "
          f"({BASELINE_PROCESSES} processes), measured in the same run")
    print()
    header = ("store", "wall s", "CPU s", "effects", "main job/1M wall", "CPU", "effect/event wall", "CPU",
              "runtime only wall", "CPU", "ok")
    lines = [header]
    for store, row in rows.items():
        r = ratios(row)
        lines.append((store, f"{row['wall']:.1f}", f"{row['cpu']:.1f}", f"{row['effects']:,}",
                      f"{r['main_job']['wall']:.1f}x", f"{r['main_job']['cpu']:.1f}x",
                      f"{r['effect']['wall']:.1f}x", f"{r['effect']['cpu']:.1f}x",
                      f"{r['runtime_only']['wall']:.1f}x", f"{r['runtime_only']['cpu']:.1f}x",
                      "yes" if row["ok"] and row["deterministic"] else "NO"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for store, row in rows.items():
        r = ratios(row)
        print(f"{store}: main job {r['main_job']['wall']:.1f}x 1M bare timeouts (goal <= {MAIN_JOB_GOAL:g}x: "
              f"{'met' if r['main_job']['wall'] <= MAIN_JOB_GOAL else 'MISSED'}); one effect "
              f"{r['effect']['wall']:.1f}x a bare event (goal <= {EFFECT_GOAL:g}x: "
              f"{'met' if r['effect']['wall'] <= EFFECT_GOAL else 'MISSED'}); baseline {row['bare_wall']:.2f} s wall")
    fingerprints = {row["fingerprint"] for row in rows.values()}
    if len(rows) > 1:
        print(f"fingerprints: {'the same on every store' if len(fingerprints) == 1 else 'DIFFER between stores'}")
    for store, row in rows.items():
        if "profile" in row:
            shares = ", ".join(f"{area} {share:.0%}" for area, share in row["profile"])
            print(f"profile of {store} (own time by area, cProfile): {shares}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated sim stores (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per store; the fastest is reported (default: 1)")
    parser.add_argument("--profile", action="store_true", help="one more cProfile run per store: time by area")
    parser.add_argument("--scenario", default=str(DEFAULT_SCENARIO), help="default: scenarios/500-hosts.yaml")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every number to this file")
    args = parser.parse_args(argv)
    stores = [s for s in args.stores.split(",") if s]
    unknown = [s for s in stores if s not in STORES]
    if not stores or unknown:
        parser.error(f"--stores: expected some of {', '.join(STORES)}, got {args.stores!r}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    base, _ = load(args.scenario)
    log(f"python {sys.version.split()[0]}, simpy {getattr(simpy, '__version__', '?')}; stores {stores}")
    rows = {store: measure(base, store, args.repeat, args.profile) for store in stores}
    report(base.name, rows)
    if args.json_path:
        payload = {"scenario": base.name, "bare_events": BARE_EVENTS, "stores": rows,
                   "ratios": {store: ratios(row) for store, row in rows.items()}}
        Path(args.json_path).write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json_path}")
    return 0 if all(row["ok"] and row["deterministic"] for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
