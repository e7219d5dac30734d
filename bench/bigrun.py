"""The big run: scenarios/10k-hosts.yaml (or a scaled-down copy) against its goal.

Run by hand, never by the test suite:

    python bench/bigrun.py [--scales 0.05,0.1] [--json FILE] [--profile FILE]

Goal (issue 13): 10,000 hosts x 100,000 launches within 90 s of wall time and 2 GB of
peak RSS on the machine that measures it, every invariant and SLO holding.

Each scale f runs the scenario with f times its hosts, launches and arrival rate
(``common.scenario.with_overrides``; networks, quotas and timing unchanged, so the load
per host and the simulated duration stay the same) in a child process of its own, so
that each size's peak RSS is its own. The child reports wall time, CPU time and peak RSS
(``resource.getrusage``). Then this process times a bare SimPy baseline of as many events
as the run performed effects (bench/scale.py's) and reports sim/baseline: compare that
ratio between machines, not the seconds. ``--profile FILE`` writes a cProfile of the
smallest scale's run (slower: profile a small scale).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):  # a source tree that was never installed; scale.py beside this
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scale import BASELINE_RUNS, HEARTBEAT, baseline, failures  # noqa: E402

DEFAULT_SCENARIO = ROOT / "scenarios" / "10k-hosts.yaml"
#: The goal at full scale: wall seconds and peak RSS in MiB.
GOAL_WALL_SECONDS = 90.0
GOAL_RSS_MB = 2048.0


def log(message: str) -> None:
    print(f"[bigrun {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def scaled(base, scale: float):
    """``base`` with ``scale`` times its hosts, requests and arrival rate."""
    from common.scenario import with_overrides

    if scale == 1:
        return base
    return with_overrides(base, {
        "cloud.hosts.count": max(1, round(base.cloud.hosts.count * scale)),
        "workload.requests": max(1, round(base.workload.requests * scale)),
        "workload.arrivals.rate": base.workload.arrivals.rate * scale,
    }, source=f"{base.name} at scale {scale:g}")


def run_child(path: str, scale: float, seed: int | None, profile: str | None) -> dict:
    """In the child process: one run at ``scale``; -> its row."""
    from sim.run import simulate
    from sim.scenario_file import load

    scenario = scaled(load(path)[0], scale)
    hosts = scenario.cloud.hosts.count
    started, cpu_started = time.perf_counter(), time.process_time()
    last = [started]

    def heartbeat(issued, finished, now):
        t = time.perf_counter()
        if t - last[0] >= HEARTBEAT:
            last[0] = t
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            log(f"  {hosts:,} hosts: {issued:,} issued, {finished:,} finished, sim t={now:,.0f} s, "
                f"{t - started:,.0f} s wall, peak RSS {rss:,.0f} MiB")

    if profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(simulate, scenario, seed, heartbeat)
        profiler.dump_stats(profile)
    else:
        result = simulate(scenario, seed, progress=heartbeat)
    summary = result.summary
    return {
        "scale": scale, "hosts": hosts, "requests": scenario.workload.requests,
        "launches": summary["instances"]["launched"], "rejected": dict(summary["requests"]["rejected"]),
        "effects": summary["effects"], "sim_time": summary["sim_time"],
        "wall_seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ok": summary["ok"], "failures": failures(summary), "fingerprint": summary["fingerprint"],
        "time_to_running_p95": summary["time_to_running"]["p95"],
    }


def run_scale(path: str, scale: float, seed: int | None, profile: str | None) -> dict:
    """One scale in a child process (its own peak RSS), then the baseline here."""
    command = [sys.executable, __file__, "--child", str(scale), "--scenario", path]
    if seed is not None:
        command += ["--seed", str(seed)]
    if profile:
        command += ["--profile", profile]
    log(f"scale {scale:g}: starting")
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    log(f"scale {scale:g}: {row['wall_seconds']:.1f} s wall, {row['effects']:,} effects, ok={row['ok']}")
    for line in row["failures"]:
        log(f"scale {scale:g}: NOT OK: {line}")
    bare = min((baseline(row["effects"]) for _ in range(BASELINE_RUNS)), key=lambda b: b["wall_seconds"])
    row["baseline_wall_seconds"] = bare["wall_seconds"]
    return row


def table(rows: list[dict]) -> str:
    header = (f"{'hosts':>6} {'launches':>9} {'wall s':>7} {'cpu s':>7} {'peak RSS MiB':>12} {'effects':>11} "
              f"{'effects/launch':>14} {'baseline s':>10} {'sim/baseline':>12} {'ok':>4}")
    lines = [header]
    for r in rows:
        per_launch = r["effects"] / max(1, r["launches"])
        ratio = r["wall_seconds"] / r["baseline_wall_seconds"]
        lines.append(f"{r['hosts']:>6,} {r['launches']:>9,} {r['wall_seconds']:>7.1f} {r['cpu_seconds']:>7.1f} "
                     f"{r['peak_rss_mb']:>12,.0f} {r['effects']:>11,} {per_launch:>14.1f} "
                     f"{r['baseline_wall_seconds']:>10.2f} {ratio:>11.1f}x {'yes' if r['ok'] else 'NO':>4}")
    return "\n".join(lines)


def extrapolate(rows: list[dict], field: str) -> float:
    """``field`` at full scale: a line through the two largest scales (a fixed part and a
    part that grows with the size), or in proportion to the one scale there is."""
    last = rows[-1]
    if last["scale"] == 1 or len(rows) < 2:
        return last[field] / last["scale"]
    first = rows[-2]
    slope = (last[field] - first[field]) / (last["scale"] - first["scale"])
    return last[field] + slope * (1 - last["scale"])


def against_goal(rows: list[dict]) -> str:
    """The full size against the goal: measured, or extrapolated from the scales run."""
    wall, rss = extrapolate(rows, "wall_seconds"), extrapolate(rows, "peak_rss_mb")
    how = "measured" if rows[-1]["scale"] == 1 else "extrapolated from the scales run"
    return (f"full size ({how}): {wall:,.0f} s wall ({wall / GOAL_WALL_SECONDS:.1f}x the {GOAL_WALL_SECONDS:g} s goal), "
            f"{rss:,.0f} MiB peak RSS ({rss / GOAL_RSS_MB:.2f}x the {GOAL_RSS_MB:,.0f} MiB goal)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0.05,0.1", help="fractions of the full size, smallest first (1: full)")
    parser.add_argument("--scenario", default=str(DEFAULT_SCENARIO))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", default=None, metavar="FILE", help="also write every row to FILE")
    parser.add_argument("--profile", default=None, metavar="FILE", help="cProfile the smallest scale into FILE")
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(args.scenario, args.child, args.seed, args.profile)))
        return 0
    scales = [float(s) for s in args.scales.split(",")]
    rows = [run_scale(args.scenario, s, args.seed, args.profile if i == 0 else None) for i, s in enumerate(scales)]
    print(table(rows))
    print(against_goal(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
