"""How far a simulated run is from a real run of the same scenario and seed. Pure: rows in,
a JSON-ready report out; the caller reads both run directories and writes the report.

Each run is given as a ``RunData``: its instance rows (``instances.csv`` as dicts), its
RPC rows (``rpc.csv`` as dicts, columns of ``report.RPC_COLUMNS``) and its ``summary.json``.
Values may be numbers or the strings a CSV reader returns; an empty cell is "no value".

The report (``compare``) holds:

- ``time_to_running_ks``: the two-sample Kolmogorov-Smirnov distance between the two
  runs' times to running (the largest gap between their empirical CDFs), with
  ``time_to_running_p_value``, both sample sizes, and ``time_to_running_rejected``:
  whether the test says "not the same distribution" at ``alpha`` (0.05);
- ``rpc_queue_wait``: per topic, the KS distance of queue waits (delivered - published)
  where both runs recorded them, and otherwise which run lacks them (a real daemon sees
  no publish time: the broker alone knows it);
- ``rpc_handling``: per topic and method, the KS distance of handling times (handled -
  delivered), which both modes record;
- ``instance_states`` and ``error_reasons``: counts side by side.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from scipy import stats

from common.analysis import report
from common.analysis.stats import percentile

#: Significance level of the KS test: rejecting at 5 % is the usual convention.
ALPHA = 0.05


@dataclass(frozen=True)
class RunData:
    instance_rows: list = field(default_factory=list)
    rpc_rows: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def number(value) -> float | None:
    """A CSV cell or a number as a float; None for an empty cell."""
    if value is None or value == "":
        return None
    return float(value)


def ks(first, second, alpha: float = ALPHA) -> dict:
    """Two-sample KS test of two samples; with an empty sample, the sizes and a reason."""
    first, second = list(first), list(second)
    out = {"n_real": len(first), "n_sim": len(second)}
    if not first or not second:
        return {**out, "ks": None, "p_value": None, "rejected": None,
                "note": "no samples in the " + ("real" if not first else "simulated") + " run"}
    result = stats.ks_2samp(first, second)
    return {**out, "ks": float(result.statistic), "p_value": float(result.pvalue),
            "rejected": bool(result.pvalue < alpha)}


def times_to_running(rows) -> list[float]:
    return [t for t in (number(row.get("time_to_running")) for row in rows) if t is not None]


def _by_topic(rows, start: str, end: str, per_method: bool = False) -> dict[str, list[float]]:
    """``end - start`` of each RPC row that has both, by topic (``T.<host>`` counts as T)."""
    out: dict[str, list[float]] = {}
    for row in rows:
        begun, ended = number(row.get(start)), number(row.get(end))
        if begun is None or ended is None:
            continue
        key = str(row.get("queue", "")).partition(".")[0]
        if per_method:
            key = f"{key} {row.get('method', '?')}"
        out.setdefault(key, []).append(ended - begun)
    return out


def side_by_side(real: Counter, sim: Counter) -> dict:
    return {key: {"real": real.get(key, 0), "sim": sim.get(key, 0)} for key in sorted(set(real) | set(sim))}


def compare(real: RunData, sim: RunData, alpha: float = ALPHA) -> dict:
    """The fidelity report of ``sim`` against ``real`` (see the module docstring)."""
    ttr = ks(times_to_running(real.instance_rows), times_to_running(sim.instance_rows), alpha)
    waits_real = _by_topic(real.rpc_rows, "published_at", "delivered_at")
    waits_sim = _by_topic(sim.rpc_rows, "published_at", "delivered_at")
    queue_wait = {}
    for topic in sorted(set(waits_real) | set(waits_sim) | set(_by_topic(real.rpc_rows, "delivered_at", "handled_at"))):
        lacking = [name for name, waits in (("real", waits_real), ("sim", waits_sim)) if topic not in waits]
        if lacking:
            queue_wait[topic] = {"ks": None, "note": f"{' and '.join(lacking)} run has no publish times for {topic}"}
        else:
            queue_wait[topic] = ks(waits_real[topic], waits_sim[topic], alpha)
    handling_real = _by_topic(real.rpc_rows, "delivered_at", "handled_at", per_method=True)
    handling_sim = _by_topic(sim.rpc_rows, "delivered_at", "handled_at", per_method=True)
    handling = {key: ks(handling_real.get(key, ()), handling_sim.get(key, ()), alpha)
                for key in sorted(set(handling_real) | set(handling_sim))}
    return {
        "alpha": alpha,
        "time_to_running_ks": ttr["ks"],
        "time_to_running_p_value": ttr["p_value"],
        "time_to_running_n_real": ttr["n_real"],
        "time_to_running_n_sim": ttr["n_sim"],
        "time_to_running_rejected": ttr["rejected"],
        "time_to_running_percentiles": {
            name: {f"p{q}": percentile(times_to_running(run.instance_rows), q) for q in (10, 50, 90, 99)}
            for name, run in (("real", real), ("sim", sim))
        },
        "rpc_queue_wait": queue_wait,
        "rpc_handling": handling,
        "instance_states": side_by_side(Counter(row.get("state", "") for row in real.instance_rows),
                                        Counter(row.get("state", "") for row in sim.instance_rows)),
        "error_reasons": side_by_side(_errors(real), _errors(sim)),
    }


def _errors(run: RunData) -> Counter:
    """Error reasons of instances (grouped as the summary groups them) and rejected requests."""
    reasons = Counter(report.reason_group(row["error"]) for row in run.instance_rows if row.get("error"))
    for reason, count in ((run.summary.get("requests") or {}).get("rejected") or {}).items():
        reasons[f"rejected: {reason}"] += count
    return reasons


def headline(fidelity: dict) -> str:
    """One line: the KS distance of times to running, its p-value, the sample sizes, the verdict."""
    if fidelity["time_to_running_ks"] is None:
        return (f"fidelity: no KS distance (times to running: {fidelity['time_to_running_n_real']} real, "
                f"{fidelity['time_to_running_n_sim']} simulated)")
    verdict = "differ" if fidelity["time_to_running_rejected"] else "not distinguishable"
    return (f"fidelity: time to running KS {fidelity['time_to_running_ks']:.3f}, "
            f"p {fidelity['time_to_running_p_value']:.3g}, n real {fidelity['time_to_running_n_real']}, "
            f"n sim {fidelity['time_to_running_n_sim']} ({verdict} at alpha {fidelity['alpha']:g})")
