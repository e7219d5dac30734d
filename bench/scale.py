"""Scale benchmark: does the simulator's cost per launch stay flat as the cloud grows?

Run by hand, never by the test suite:

    python bench/scale.py [--sizes 50,500,5000] [--repeat 1] [--json FILE]

For each size N (hosts), scenarios/500-hosts.yaml is scaled with
``common.scenario.with_overrides``: N hosts, 10*N launches, arrival rate 5*N/500 per
second (the same load per host and about the same simulated duration), and project
quotas of at least 10*N instances and 40*N cores; everything else is kept. Each scaled
scenario runs in-process through ``sim.run.simulate`` (no progress bar).

In the same run, for each size, a bare SimPy baseline schedules as many events as the
simulation performed effects (a handful of processes each doing ``yield
env.timeout(small)`` in a loop) and is timed. Speed is reported only as ratios measured
in the same run:

* cost per launch relative to the smallest size (flatness; the goal is <= 1.5x from 50
  to 5,000 hosts);
* sim wall / baseline wall (how much more one effect costs than one bare SimPy event).

Progress lines go to stderr; the table goes to stdout. Sizes run one after another and
each result is dropped before the next size starts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # running from a source tree that was never installed
    sys.path.insert(0, str(ROOT))

import simpy  # noqa: E402

from common.scenario import with_overrides  # noqa: E402
from sim.run import simulate  # noqa: E402
from sim.scenario_file import load  # noqa: E402

DEFAULT_SCENARIO = ROOT / "scenarios" / "500-hosts.yaml"
DEFAULT_SIZES = (50, 500, 5000)
#: Processes sharing the baseline's events, and the simulated step each one waits.
BASELINE_PROCESSES = 8
BASELINE_STEP = 0.001
#: Baseline runs per sim run; the fastest is kept.
BASELINE_RUNS = 3
#: Goal for the cost per launch, largest size over smallest.
FLATNESS_GOAL = 1.5
#: Wall seconds between two progress lines while one size runs.
HEARTBEAT = 30.0


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the scaled scenario ----------------------------------------------------------------


def scaled(base, hosts: int):
    """``base`` with N hosts, 10*N launches at 5*N/500 per second, and quotas that fit."""
    requests = 10 * hosts
    projects = []
    for project in base.cloud.projects:
        data = project.model_dump(mode="python")
        quota = data["quota"]
        quota["instances"] = max(quota["instances"], 10 * hosts)
        quota["cores"] = max(quota["cores"], 40 * hosts)
        projects.append(data)
    return with_overrides(
        base,
        {
            "cloud.hosts.count": hosts,
            "workload.requests": requests,
            "workload.arrivals.rate": 5 * hosts / 500,
            "cloud.projects": projects,
        },
        source=f"{base.name} scaled to {hosts} hosts",
    )


# -- the bare SimPy baseline ----------------------------------------------------------


def baseline(events: int, processes: int = BASELINE_PROCESSES, step: float = BASELINE_STEP) -> dict:
    """Time ``events`` bare SimPy timeouts shared by ``processes`` looping processes."""
    env = simpy.Environment()
    remaining = [events]

    def ticker():
        timeout = env.timeout
        while remaining[0] > 0:
            remaining[0] -= 1
            yield timeout(step)

    started = time.perf_counter()
    for _ in range(processes):
        env.process(ticker())
    env.run()
    wall = time.perf_counter() - started
    return {"events": events, "processes": processes, "wall_seconds": wall}


# -- one size -----------------------------------------------------------------------


def failures(summary: dict) -> list[str]:
    """What made ``summary["ok"]`` false, one line each."""
    out = []
    for v in summary.get("invariants", []):
        if not v["ok"]:
            shown = "; ".join(str(x) for x in v["violations"][:3])
            more = f" (+{len(v['violations']) - 3} more)" if len(v["violations"]) > 3 else ""
            out.append(f"invariant {v['name']} ({v['title']}): {len(v['violations'])} violation(s): {shown}{more}")
    for s in summary.get("slo", []):
        if not s["ok"]:
            out.append(f"slo {s['name']}: {s['value']} > limit {s['limit']}")
    return out


def run_once(base, hosts: int, seed: int) -> dict:
    scenario = scaled(base, hosts)
    started = time.perf_counter()
    last = [started]
    requests = scenario.workload.requests  # the closure must not hold the scenario (deleted below)

    def heartbeat(issued, finished, now):
        t = time.perf_counter()
        if t - last[0] >= HEARTBEAT:
            last[0] = t
            log(
                f"  {hosts} hosts: {issued:,}/{requests:,} issued, {finished:,} finished, "
                f"sim t={now:,.0f} s, {t - started:,.0f} s wall"
            )

    result = simulate(scenario, seed, progress=heartbeat)
    wall = time.perf_counter() - started
    summary = result.summary
    row = {
        "hosts": hosts,
        "requests": scenario.workload.requests,
        "arrival_rate": scenario.workload.arrivals.rate,
        "launches": summary["instances"]["launched"],
        "rejected": dict(summary["requests"]["rejected"]),
        "effects": summary["effects"],
        "sim_time": summary["sim_time"],
        "wall_seconds": wall,  # Simulation built, run, audited and summarized
        "run_wall_seconds": result.wall_seconds,  # what simulate() itself times: run + audit
        "ok": summary["ok"],
        "failures": failures(summary),
        "fingerprint": summary["fingerprint"],
        "time_to_running_p95": summary["time_to_running"]["p95"],
        "peak_host_vcpu_ratio": summary.get("peak_host_vcpu_ratio"),
    }
    del result, summary, scenario
    return row


def measure(base, hosts: int, seed: int, repeat: int) -> dict:
    """Run one size ``repeat`` times (each followed by its baseline); keep the fastest."""
    samples = []
    for i in range(repeat):
        label = f"{hosts} hosts" + (f" (repeat {i + 1}/{repeat})" if repeat > 1 else "")
        log(f"{label}: starting ({10 * hosts:,} launches at {5 * hosts / 500:g}/s)")
        row = run_once(base, hosts, seed)
        gc.collect()
        log(f"{label}: sim done in {row['wall_seconds']:.1f} s, {row['effects']:,} effects, ok={row['ok']}")
        for line in row["failures"]:
            log(f"{label}: NOT OK: {line}")
        # The baseline is cheap next to the sim: take the fastest of a few to damp timer noise.
        bare = min((baseline(row["effects"]) for _ in range(BASELINE_RUNS)), key=lambda b: b["wall_seconds"])
        gc.collect()
        log(f"{label}: baseline of {bare['events']:,} bare SimPy events done in {bare['wall_seconds']:.2f} s")
        row["baseline_wall_seconds"] = bare["wall_seconds"]
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        samples.append(row)
    fingerprints = {s["fingerprint"] for s in samples}
    best = dict(min(samples, key=lambda s: s["wall_seconds"]))
    best["baseline_wall_seconds"] = min(s["baseline_wall_seconds"] for s in samples)
    best["ok"] = all(s["ok"] for s in samples)
    best["deterministic"] = len(fingerprints) == 1
    best["samples"] = [
        {"wall_seconds": s["wall_seconds"], "run_wall_seconds": s["run_wall_seconds"],
         "baseline_wall_seconds": s["baseline_wall_seconds"], "fingerprint": s["fingerprint"]}
        for s in samples
    ]
    if repeat > 1:
        best["wall_seconds_median"] = statistics.median(s["wall_seconds"] for s in samples)
    return best


# -- report ---------------------------------------------------------------------------


def derive(rows: list[dict]) -> None:
    """Add the per-unit figures and the ratios (all from this run) to each row."""
    for row in rows:
        row["effects_per_wall_second"] = row["effects"] / row["wall_seconds"]
        row["wall_ms_per_launch"] = 1000 * row["wall_seconds"] / max(row["launches"], 1)
        row["effects_per_launch"] = row["effects"] / max(row["launches"], 1)
        row["baseline_events_per_wall_second"] = row["effects"] / row["baseline_wall_seconds"]
        row["sim_over_baseline"] = row["wall_seconds"] / row["baseline_wall_seconds"]
    first = rows[0]
    for row in rows:
        row["cost_per_launch_vs_smallest"] = row["wall_ms_per_launch"] / first["wall_ms_per_launch"]
        row["effects_per_launch_vs_smallest"] = row["effects_per_launch"] / first["effects_per_launch"]
        row["sim_over_baseline_vs_smallest"] = row["sim_over_baseline"] / first["sim_over_baseline"]


def table(rows: list[dict]) -> str:
    columns = [
        ("hosts", lambda r: f"{r['hosts']:,}"),
        ("launches", lambda r: f"{r['launches']:,}"),
        ("wall s", lambda r: f"{r['wall_seconds']:.1f}"),
        ("effects", lambda r: f"{r['effects']:,}"),
        ("effects/launch", lambda r: f"{r['effects_per_launch']:.1f}"),
        ("effects/wall s", lambda r: f"{r['effects_per_wall_second']:,.0f}"),
        ("wall ms/launch", lambda r: f"{r['wall_ms_per_launch']:.2f}"),
        ("cost/launch vs smallest", lambda r: f"{r['cost_per_launch_vs_smallest']:.2f}x"),
        ("baseline s", lambda r: f"{r['baseline_wall_seconds']:.2f}"),
        ("sim/baseline", lambda r: f"{r['sim_over_baseline']:.1f}x"),
        ("ok", lambda r: "yes" if r["ok"] else "NO"),
    ]
    cells = [[name for name, _ in columns]] + [[fmt(r) for _, fmt in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "simpy": getattr(simpy, "__version__", "?"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                        help="comma-separated host counts (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the fastest is reported (default: 1)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every number to this file")
    parser.add_argument("--scenario", default=str(DEFAULT_SCENARIO), help="base scenario (default: 500-hosts.yaml)")
    parser.add_argument("--seed", type=int, default=None, help="default: the scenario's seed")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or any(s < 1 for s in sizes):
        parser.error("--sizes needs at least one positive host count")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    base, _ = load(args.scenario)
    seed = base.seed if args.seed is None else args.seed
    facts = machine()
    log(f"python {facts['python']}, simpy {facts['simpy']}, {facts['cpu_count']} CPUs; sizes {sizes}, seed {seed}")
    started = time.perf_counter()
    rows = []
    for hosts in sizes:
        rows.append(measure(base, hosts, seed, args.repeat))
        gc.collect()
    total = time.perf_counter() - started
    derive(rows)

    print(f"novalab scale benchmark: {base.name} scaled to {', '.join(f'{s:,}' for s in sizes)} hosts "
          f"(10 launches per host, arrivals 5/s per 500 hosts), seed {seed}")
    print(f"machine: python {facts['python']} ({facts['implementation']}), simpy {facts['simpy']}, "
          f"os.cpu_count()={facts['cpu_count']}, {facts['platform']}")
    print(f"repeat {args.repeat} (fastest kept); total {total:.0f} s")
    print()
    print(table(rows))
    print()
    smallest, largest = rows[0], rows[-1]
    flat = largest["cost_per_launch_vs_smallest"]
    verdict = "within" if flat <= FLATNESS_GOAL else "OVER"
    print(f"flatness: cost per launch at {largest['hosts']:,} hosts is {flat:.2f}x that at {smallest['hosts']:,} "
          f"({verdict} the {FLATNESS_GOAL}x goal); effects per launch {largest['effects_per_launch_vs_smallest']:.2f}x, "
          f"cost per effect vs bare SimPy {largest['sim_over_baseline_vs_smallest']:.2f}x")
    print(f"baseline: {BASELINE_PROCESSES} SimPy processes looping on env.timeout({BASELINE_STEP:g}) until as many "
          f"events as the simulation's effects "
          f"(fastest of {BASELINE_RUNS})")
    bad = [r for r in rows if not r["ok"]]
    for r in bad:
        print(f"NOT OK at {r['hosts']:,} hosts:")
        for line in r["failures"]:
            print(f"  {line}")
    if args.json_path:
        payload = {
            "machine": facts,
            "scenario": base.name,
            "seed": seed,
            "repeat": args.repeat,
            "baseline": {"processes": BASELINE_PROCESSES, "step": BASELINE_STEP, "runs": BASELINE_RUNS},
            "flatness_goal": FLATNESS_GOAL,
            "total_wall_seconds": total,
            "sizes": rows,
        }
        Path(args.json_path).write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json_path}")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
