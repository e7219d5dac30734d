"""Scale benchmark: does the simulator's cost per launch stay flat as the cloud grows?

Run by hand, never by the test suite:

    python bench/scale.py [--sizes 50,500,2000,10000] [--schedulers queue,chance,simple]
                          [--managers flat,flatdhcp,vlan] [--launches-per-host 1] [--json FILE]

A matrix: every scheduler x network manager x size. For each cell and size N (hosts),
scenarios/500-hosts.yaml is scaled with ``common.scenario.with_overrides`` to a constant
load per host: N hosts, k*N launches (k = ``--launches-per-host``) arriving at N/100 per
second, quotas that never refuse, fixed (and for vlan, per-project and floating) address
ranges sized with N, the base scenario's lifetimes (see ``scaled``). Each run is a fresh
child process (``--one``), so its peak RSS is its own and nothing a previous size left
behind (heap, caches) weighs on the next.

In the same child, after the simulation, a bare SimPy baseline schedules as many events
as the simulation performed effects (a few processes each doing ``yield env.timeout(small)``
in a loop) and is timed. Speed is reported only as ratios measured in the same run:

* cost per launch relative to the cell's smallest size (flatness; goal <= 1.5x);
* sim wall / baseline wall (how much more one effect costs than one bare SimPy event).

Progress lines (and a heartbeat while a size runs) go to stderr; the tables to stdout.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import ipaddress
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
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
DEFAULT_SIZES = (50, 500, 2000, 10000)
SCHEDULERS = ("queue", "chance", "simple")
MANAGERS = ("flat", "flatdhcp", "vlan")
#: Launches per host. A host's heartbeats over a run cost ~270 effects whatever k is, a
#: launch ~70: k = 1 keeps the full default matrix (36 runs, 12,550 hosts per cell) to
#: about half an hour on a 2-core machine once every cell is flat (bench/README.md).
DEFAULT_LAUNCHES_PER_HOST = 1
#: Arrivals per second per host (the base scenario's 5/s over 500 hosts).
ARRIVALS_PER_HOST = 5 / 500
#: Fraction of launches that also allocate and associate a floating address (vlan).
FLOATING_FRACTION = 0.3
#: Address ranges hold this many times the launches they may have to serve at once.
ADDRESS_HEADROOM = 2
#: Processes sharing the baseline's events, and the simulated step each one waits.
BASELINE_PROCESSES = 8
BASELINE_STEP = 0.001
#: Baseline runs per sim run; the fastest is kept.
BASELINE_RUNS = 3
#: Goal for the cost per launch, any size over the smallest.
FLATNESS_GOAL = 1.5
#: Wall seconds between two progress lines while one size runs.
HEARTBEAT = 30.0
#: Wall seconds one run may take before it is killed and reported as timed out.
DEFAULT_RUN_TIMEOUT = 3600.0


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the scaled scenario ----------------------------------------------------------------


def prefix_for(addresses: int, smallest: int, largest: int) -> int:
    """The longest IPv4 prefix holding at least ``addresses`` addresses, between
    ``/smallest`` (the smallest network) and ``/largest`` (the largest)."""
    bits = max(addresses - 1, 1).bit_length()
    return max(largest, min(smallest, 32 - bits))


def network_overrides(manager: str, launches: int, projects: int) -> dict:
    """The ``cloud.network`` section for ``manager``, its ranges sized for ``launches``:
    every launch may hold its address at once (DHCP keeps released ones for the reclaim
    timeout), with ``ADDRESS_HEADROOM``. Vlan: one network per project, each for its
    share of the launches, and floating addresses for ``FLOATING_FRACTION`` of them."""
    need = ADDRESS_HEADROOM * launches
    net: dict = {"manager": manager, "fixed_range": f"10.0.0.0/{prefix_for(need, 24, 12)}", "hosts": 1, "workers": 16}
    if manager == "vlan":
        size = 1 << (32 - prefix_for(need // projects + 16, 26, 14))  # +16: the reserved addresses
        networks = projects + 1  # a spare, as a deployment keeps
        span = size * (1 << max(networks - 1, 1).bit_length())
        net.update(fixed_range=f"10.0.0.0/{32 - (span - 1).bit_length()}", network_size=size, num_networks=networks)
        floating = prefix_for(int(ADDRESS_HEADROOM * FLOATING_FRACTION * launches) + 1, 24, 16)
        net["floating_range"] = str(ipaddress.ip_network(f"4.0.0.0/{floating}"))
    return net


def scaled(base, scheduler: str, manager: str, hosts: int, per_host: int):
    """``base`` with ``hosts`` hosts, ``per_host`` launches each at ``ARRIVALS_PER_HOST``
    per host per second, the scheduler and network manager of the cell, quotas that
    never refuse and address ranges sized for the launches."""
    launches = per_host * hosts
    projects = []
    for project in base.cloud.projects:
        data = project.model_dump(mode="python")
        quota = data["quota"]
        quota["instances"] = max(quota["instances"], launches)
        quota["cores"] = max(quota["cores"], 8 * launches)
        quota["floating_ips"] = max(quota["floating_ips"], launches)
        projects.append(data)
    overrides = {
        "cloud.hosts.count": hosts,
        "cloud.scheduler": scheduler,
        "cloud.network": network_overrides(manager, launches, len(projects)),
        "cloud.projects": projects,
        "workload.requests": launches,
        "workload.arrivals.rate": ARRIVALS_PER_HOST * hosts,
        "workload.floating_ips": FLOATING_FRACTION if manager == "vlan" else 0.0,
    }
    return with_overrides(base, overrides, source=f"{base.name} as {scheduler}/{manager} on {hosts} hosts")


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


# -- one run (in the child) -------------------------------------------------------------


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


def simulate_cell(spec: dict) -> dict:
    """Run one (scheduler, manager, size) in this process; -> its row."""
    base, _ = load(spec["scenario"])
    scenario = scaled(base, spec["scheduler"], spec["manager"], spec["hosts"], spec["per_host"])
    label = f"{spec['scheduler']}/{spec['manager']} {spec['hosts']:,} hosts"
    requests = scenario.workload.requests
    started = time.perf_counter()
    seen = {"issued": 0, "finished": 0, "now": 0.0}
    stop = threading.Event()

    def progress(issued, finished, now):
        seen.update(issued=issued, finished=finished, now=now)

    def heartbeat():  # on the wall clock, so a long stretch without progress (the audit) still shows
        while not stop.wait(HEARTBEAT):
            log(f"  {label}: {seen['issued']:,}/{requests:,} issued, {seen['finished']:,} finished, "
                f"sim t={seen['now']:,.0f} s, {time.perf_counter() - started:,.0f} s wall")

    threading.Thread(target=heartbeat, daemon=True).start()
    profiler = cProfile.Profile() if spec.get("profile") else None
    if profiler is not None:
        profiler.enable()
    cpu_started = time.process_time()
    try:
        result = simulate(scenario, spec["seed"], progress=progress)
    finally:
        stop.set()
    cpu = time.process_time() - cpu_started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(spec["profile"])
    wall = time.perf_counter() - started
    summary = result.summary
    row = {
        "scheduler": spec["scheduler"], "manager": spec["manager"], "hosts": spec["hosts"],
        "requests": requests, "arrival_rate": scenario.workload.arrivals.rate,
        "network": scenario.cloud.network.model_dump(mode="json"),
        "launches": summary["instances"]["launched"], "rejected": {str(k): v for k, v in summary["requests"]["rejected"].items()},
        "effects": summary["effects"], "sim_time": summary["sim_time"],
        "wall_seconds": wall,  # simulation built, run, audited and summarized
        "cpu_seconds": cpu,  # this process's CPU time over the same: less disturbed by other jobs
        "run_wall_seconds": result.wall_seconds,  # what simulate() itself times: run + audit
        "ok": summary["ok"], "failures": failures(summary), "fingerprint": summary["fingerprint"],
        "time_to_running_p95": summary["time_to_running"]["p95"],
        "peak_host_vcpu_ratio": summary.get("peak_host_vcpu_ratio"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # before the baseline
    }
    del result, summary, scenario
    gc.collect()
    bare = min((baseline(row["effects"]) for _ in range(BASELINE_RUNS)), key=lambda b: b["wall_seconds"])
    row["baseline_wall_seconds"] = bare["wall_seconds"]
    return row


def child_main(raw: str) -> int:
    print(json.dumps(simulate_cell(json.loads(raw))), flush=True)
    return 0


# -- the matrix (in the parent) ---------------------------------------------------------


def run_child(spec: dict, timeout: float) -> dict:
    """One run in a fresh interpreter; -> its row (a failed or timed-out run gets a row
    that says so, and the matrix goes on)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(spec)]
    stub = {"scheduler": spec["scheduler"], "manager": spec["manager"], "hosts": spec["hosts"], "ok": False}
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**stub, "failures": [f"timed out after {timeout:.0f} s"], "crashed": "timeout"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {**stub, "failures": [f"child exited {done.returncode}"], "crashed": f"exit {done.returncode}"}
    return json.loads(lines[-1])


def measure(spec: dict, repeat: int, timeout: float) -> dict:
    """Run one cell's size ``repeat`` times; keep the fastest, and every run's numbers."""
    samples = []
    for i in range(repeat):
        label = f"{spec['scheduler']}/{spec['manager']} {spec['hosts']:,} hosts" + (
            f" (repeat {i + 1}/{repeat})" if repeat > 1 else "")
        log(f"{label}: starting ({spec['per_host'] * spec['hosts']:,} launches at "
            f"{ARRIVALS_PER_HOST * spec['hosts']:g}/s)")
        row = run_child(spec, timeout)
        if "crashed" in row:
            log(f"{label}: NOT OK: {row['failures'][0]}")
            return row
        log(f"{label}: done in {row['wall_seconds']:.1f} s, {row['effects']:,} effects, "
            f"peak RSS {row['peak_rss_mb']:,.0f} MB, baseline {row['baseline_wall_seconds']:.2f} s, ok={row['ok']}")
        for line in row["failures"]:
            log(f"{label}: NOT OK: {line}")
        samples.append(row)
    best = dict(min(samples, key=lambda s: s["wall_seconds"]))
    best["baseline_wall_seconds"] = min(s["baseline_wall_seconds"] for s in samples)
    # CPU on its own: the fastest wall sample is not always the one other jobs disturbed least.
    best["cpu_seconds"] = min(s["cpu_seconds"] for s in samples)
    best["ok"] = all(s["ok"] for s in samples)
    best["deterministic"] = len({s["fingerprint"] for s in samples}) == 1
    best["samples"] = [{k: s[k] for k in ("wall_seconds", "run_wall_seconds", "baseline_wall_seconds",
                                          "cpu_seconds", "peak_rss_mb", "fingerprint")} for s in samples]
    if repeat > 1:
        best["wall_seconds_median"] = statistics.median(s["wall_seconds"] for s in samples)
    return best


def derive(rows: list[dict]) -> None:
    """Add the per-unit figures and the ratios (all from this run) to one cell's rows."""
    done = [r for r in rows if "crashed" not in r]
    for row in done:
        row["effects_per_wall_second"] = row["effects"] / row["wall_seconds"]
        row["wall_ms_per_launch"] = 1000 * row["wall_seconds"] / max(row["launches"], 1)
        row["cpu_ms_per_launch"] = 1000 * row["cpu_seconds"] / max(row["launches"], 1)
        row["effects_per_launch"] = row["effects"] / max(row["launches"], 1)
        row["sim_over_baseline"] = row["wall_seconds"] / row["baseline_wall_seconds"]
    if not done or done[0]["hosts"] != rows[0]["hosts"]:
        return  # no smallest size to compare with
    first = done[0]
    for row in done:
        row["cost_per_launch_vs_smallest"] = row["wall_ms_per_launch"] / first["wall_ms_per_launch"]
        row["cpu_per_launch_vs_smallest"] = row["cpu_ms_per_launch"] / first["cpu_ms_per_launch"]
        row["effects_per_launch_vs_smallest"] = row["effects_per_launch"] / first["effects_per_launch"]
        row["sim_over_baseline_vs_smallest"] = row["sim_over_baseline"] / first["sim_over_baseline"]


# -- report ---------------------------------------------------------------------------


def _cell(row: dict, key: str, fmt: str) -> str:
    return "-" if row.get(key) is None else format(row[key], fmt)


COLUMNS = (
    ("scheduler", lambda r: r["scheduler"]),
    ("manager", lambda r: r["manager"]),
    ("hosts", lambda r: f"{r['hosts']:,}"),
    ("launches", lambda r: _cell(r, "launches", ",")),
    ("wall s", lambda r: _cell(r, "wall_seconds", ".1f")),
    ("effects", lambda r: _cell(r, "effects", ",")),
    ("effects/launch", lambda r: _cell(r, "effects_per_launch", ".1f")),
    ("effects/wall s", lambda r: _cell(r, "effects_per_wall_second", ",.0f")),
    ("wall ms/launch", lambda r: _cell(r, "wall_ms_per_launch", ".2f")),
    ("flatness", lambda r: _cell(r, "cost_per_launch_vs_smallest", ".2f") + "x"),
    ("CPU flatness", lambda r: _cell(r, "cpu_per_launch_vs_smallest", ".2f") + "x"),
    ("baseline s", lambda r: _cell(r, "baseline_wall_seconds", ".2f")),
    ("sim/baseline", lambda r: _cell(r, "sim_over_baseline", ".1f") + "x"),
    ("peak RSS MB", lambda r: _cell(r, "peak_rss_mb", ",.0f")),
    ("ok", lambda r: "yes" if r["ok"] else r.get("crashed", "NO")),
)


def render(header: list[str], body: list[list[str]], left: int = 0) -> str:
    """A text table; the first ``left`` columns left-aligned, the rest right-aligned."""
    cells = [header, *body]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    return render([name for name, _ in COLUMNS], [[fmt(r) for _, fmt in COLUMNS] for r in rows], left=2)


def verdicts(cells: dict) -> list[dict]:
    """One verdict per (scheduler, manager): its worst flatness ratio against the goal."""
    out = []
    for (scheduler, manager), rows in cells.items():
        ratios = [(r["cost_per_launch_vs_smallest"], r["hosts"]) for r in rows if "cost_per_launch_vs_smallest" in r]
        worst, at = max(ratios) if ratios else (None, None)
        worst_cpu = max((r["cpu_per_launch_vs_smallest"] for r in rows if "cpu_per_launch_vs_smallest" in r),
                        default=None)
        complete = len(ratios) == len(rows) and all(r["ok"] for r in rows)
        if worst is None:
            verdict = "no ratio (smallest size failed)"
        elif worst > FLATNESS_GOAL:
            verdict = "MISSED"
        else:
            verdict = "met" if complete else "met on the sizes that ran"
        out.append({"scheduler": scheduler, "manager": manager, "worst_ratio": worst, "at_hosts": at,
                    "worst_cpu_ratio": worst_cpu,
                    "sizes": [r["hosts"] for r in rows], "all_ok": complete, "verdict": verdict})
    return out


def verdict_table(lines: list[dict]) -> str:
    body = [[v["scheduler"], v["manager"], "-" if v["worst_ratio"] is None else f"{v['worst_ratio']:.2f}x",
             "-" if v["at_hosts"] is None else f"{v['at_hosts']:,}",
             "-" if v["worst_cpu_ratio"] is None else f"{v['worst_cpu_ratio']:.2f}x", f"{FLATNESS_GOAL}x", v["verdict"]]
            for v in lines]
    header = ["scheduler", "manager", "worst flatness", "at hosts", "worst CPU flatness", "goal", "verdict"]
    return render(header, body, left=2)


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "simpy": getattr(simpy, "__version__", "?"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def _names(raw: str, allowed: tuple[str, ...], option: str, parser) -> list[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if not names or unknown:
        parser.error(f"{option} takes a comma-separated subset of {','.join(allowed)}, got {raw!r}")
    return list(dict.fromkeys(names))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                        help="comma-separated host counts; ratios are taken against the smallest (default: %(default)s)")
    parser.add_argument("--schedulers", default=",".join(SCHEDULERS), help="default: %(default)s")
    parser.add_argument("--managers", default=",".join(MANAGERS), help="default: %(default)s")
    parser.add_argument("--launches-per-host", type=int, default=DEFAULT_LAUNCHES_PER_HOST,
                        help="launches per host, k (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the fastest wall and the least CPU are reported (default: 1)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_RUN_TIMEOUT,
                        help="wall seconds one run may take before it is killed (default: %(default)g)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every number to this file")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="run each size under cProfile and write DIR/<scheduler>-<manager>-<hosts>.prof")
    parser.add_argument("--scenario", default=str(DEFAULT_SCENARIO), help="base scenario (default: 500-hosts.yaml)")
    parser.add_argument("--seed", type=int, default=None, help="default: the scenario's seed")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child's run (JSON)
    args = parser.parse_args(argv)
    if args.one is not None:
        return args
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not args.sizes or any(s < 1 for s in args.sizes):
        parser.error("--sizes needs at least one positive host count")
    args.schedulers = _names(args.schedulers, SCHEDULERS, "--schedulers", parser)
    args.managers = _names(args.managers, MANAGERS, "--managers", parser)
    for name in ("launches_per_host", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run_matrix(args, seed: int) -> dict:
    cells: dict = {}
    for scheduler in args.schedulers:
        for manager in args.managers:
            rows = []
            for hosts in args.sizes:
                spec = {"scenario": args.scenario, "scheduler": scheduler, "manager": manager, "hosts": hosts,
                        "per_host": args.launches_per_host, "seed": seed}
                if args.profile:
                    spec["profile"] = str(Path(args.profile) / f"{scheduler}-{manager}-{hosts}.prof")
                rows.append(measure(spec, args.repeat, args.timeout))
            derive(rows)
            cells[(scheduler, manager)] = rows
    return cells


def report(args, base, seed: int, cells: dict, total: float, facts: dict) -> bool:
    """Print the tables; -> whether every run was ok."""
    print(f"novalab scale matrix: {base.name} scaled to {', '.join(f'{s:,}' for s in args.sizes)} hosts, "
          f"{args.launches_per_host} launches per host, arrivals {ARRIVALS_PER_HOST * 100:g}/s per 100 hosts, seed {seed}")
    print(f"machine: python {facts['python']} ({facts['implementation']}), simpy {facts['simpy']}, "
          f"os.cpu_count()={facts['cpu_count']}, {facts['platform']}")
    print(f"repeat {args.repeat} (fastest kept), each run in a fresh process; total {total:.0f} s")
    print()
    rows = [r for cell in cells.values() for r in cell]
    print(table(rows))
    print()
    print(verdict_table(verdicts(cells)))
    print()
    print("flatness: wall ms/launch over the same cell's at the smallest size (CPU: the same with the run's CPU "
          "time; the verdict is on wall). baseline: "
          f"{BASELINE_PROCESSES} SimPy processes looping on env.timeout({BASELINE_STEP:g}) until as many events as "
          f"the run's effects (fastest of {BASELINE_RUNS})")
    bad = [r for r in rows if not r["ok"]]
    for r in bad:
        print(f"NOT OK: {r['scheduler']}/{r['manager']} at {r['hosts']:,} hosts:")
        for line in r["failures"]:
            print(f"  {line}")
    return not bad


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one is not None:
        return child_main(args.one)
    base, _ = load(args.scenario)
    seed = base.seed if args.seed is None else args.seed
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    facts = machine()
    log(f"python {facts['python']}, simpy {facts['simpy']}, {facts['cpu_count']} CPUs; sizes {args.sizes}, "
        f"schedulers {args.schedulers}, managers {args.managers}, {args.launches_per_host} launches/host, seed {seed}")
    started = time.perf_counter()
    cells = run_matrix(args, seed)
    total = time.perf_counter() - started
    ok = report(args, base, seed, cells, total, facts)
    if args.json_path:
        payload = {
            "machine": facts, "scenario": base.name, "seed": seed, "repeat": args.repeat,
            "launches_per_host": args.launches_per_host, "arrivals_per_host": ARRIVALS_PER_HOST,
            "floating_fraction": FLOATING_FRACTION, "address_headroom": ADDRESS_HEADROOM,
            "baseline": {"processes": BASELINE_PROCESSES, "step": BASELINE_STEP, "runs": BASELINE_RUNS},
            "flatness_goal": FLATNESS_GOAL, "total_wall_seconds": total,
            "runs": [r for cell in cells.values() for r in cell], "verdicts": verdicts(cells),
        }
        Path(args.json_path).write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
