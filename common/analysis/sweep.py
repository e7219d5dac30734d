"""Sweeps: every combination of swept values x seeds, and one table row per run. Pure.

A sweep is ``{dotted field path: [value, ...]}`` (paths as ``common.scenario.with_overrides``
takes them) and a number of seeds; the runtimes run each combination, write a run
directory per run, and collect the rows built here into ``sweep.csv``.
"""

from __future__ import annotations

import itertools
import json
import re

#: The headline columns of a sweep row, after the swept parameters. Topic and pool
#: columns (``peak_depth:<topic>``, ``pool_peak_used:<id>``, ``pool_size:<id>``) are
#: added between ``ttr_p99`` and ``peak_host_vcpu_ratio`` for whatever topics and pools
#: the runs had.
HEAD_COLUMNS = ("run", "seed", "run_dir", "ok", "failed")
METRIC_COLUMNS = (
    "launched", "ever_errored", "error_fraction", "errors_by_reason",
    "ttr_count", "ttr_p50", "ttr_p95", "ttr_p99",
)
TAIL_COLUMNS = ("peak_host_vcpu_ratio", "hosts_ever_overcommitted", "fingerprint")

#: Fields a sweep may not set: the seed comes from --seed/--seeds.
RESERVED = ("seed",)


def combinations(parameters: dict) -> list[dict]:
    """Every combination of the swept values, the first parameter varying slowest."""
    keys = list(parameters)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(parameters[k] for k in keys))]


def plan(parameters: dict, base_seed: int, seeds: int) -> list[dict]:
    """The runs of a sweep in order: ``{"run": n, "params": {...}, "seed": s, "name": dir}``
    for each combination x seed (seeds ``base_seed .. base_seed + seeds - 1``)."""
    runs: list[dict] = []
    for params in combinations(parameters):
        for seed in range(base_seed, base_seed + seeds):
            index = len(runs) + 1
            runs.append({"run": index, "params": params, "seed": seed, "name": run_name(index, params, seed)})
    width = len(str(len(runs)))
    for entry in runs:  # zero-pad the index so directories list in run order
        entry["name"] = run_name(entry["run"], entry["params"], entry["seed"], width)
    return runs


def run_name(index: int, params: dict, seed: int, width: int = 2) -> str:
    """A directory name: ``03-scheduler=queue-rate=2-seed1`` (last path component of
    each key; the index keeps names unique)."""
    parts = [f"{index:0{width}d}"]
    for key, value in params.items():
        parts.append(f"{key.rsplit('.', 1)[-1]}={format_value(value)}")
    parts.append(f"seed{seed}")
    name = "-".join(parts)
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name)[:120]


def format_value(value) -> str:
    """A swept value as text that reads back as the same YAML value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


TOPIC_PREFIX = "peak_depth:"
POOL_USED_PREFIX, POOL_SIZE_PREFIX = "pool_peak_used:", "pool_size:"


def topic_column(topic: str) -> str:
    """``peak_depth:compute``: the peak number of ready messages in the topic's queue(s)."""
    return TOPIC_PREFIX + topic


def pool_columns(pool: str) -> tuple[str, str]:
    """``(pool_peak_used:flat, pool_size:flat)``."""
    return POOL_USED_PREFIX + pool, POOL_SIZE_PREFIX + pool


def failed_checks(summary: dict) -> list[str]:
    """Names of the invariants and SLOs a run failed: ``["I2", "slo error_fraction"]``."""
    out = [v["name"] for v in summary.get("invariants", ()) if not v["ok"]]
    out += [f"slo {s['name']}" for s in summary.get("slo", ()) if not s["ok"]]
    return out


def sweep_row(run: dict, run_dir: str, summary: dict) -> dict:
    """One table row from a run's plan entry and its summary (as in summary.json)."""
    inst = summary["instances"]
    ttr = summary["time_to_running"]
    launched = inst["launched"]
    row = {
        "run": run["run"],
        **{key: format_value(value) for key, value in run["params"].items()},
        "seed": run["seed"],
        "run_dir": run_dir,
        "ok": bool(summary["ok"]),
        "failed": " ".join(failed_checks(summary)),
        "launched": launched,
        "ever_errored": inst["ever_errored"],
        "error_fraction": inst["ever_errored"] / launched if launched else 0.0,
        "errors_by_reason": "; ".join(f"{reason}: {n}" for reason, n in inst["errors_by_reason"].items()),
        "ttr_count": ttr["count"],
        "ttr_p50": ttr["p50"],
        "ttr_p95": ttr["p95"],
        "ttr_p99": ttr["p99"],
    }
    for topic, q in summary["queues"].items():
        row[topic_column(topic)] = q["peak_depth"]
    for pool, p in summary["pools"].items():
        used, size = pool_columns(pool)
        row[used] = p.get("peak_used")
        row[size] = p.get("size")
    for column in TAIL_COLUMNS:
        row[column] = summary.get(column)
    return row


def crashed_row(run: dict, run_dir: str, error: str) -> dict:
    """The row of a run that raised instead of finishing."""
    return {
        "run": run["run"],
        **{key: format_value(value) for key, value in run["params"].items()},
        "seed": run["seed"],
        "run_dir": run_dir,
        "ok": False,
        "failed": f"crashed: {error}",
    }


def columns(parameters, rows) -> list[str]:
    """The table's columns: run, the swept parameters, seed, run_dir, ok, failed, the
    headline metrics, a peak depth per topic and peak use / size per pool seen in any row."""
    topics = sorted({c for row in rows for c in row if c.startswith(TOPIC_PREFIX)})
    names = sorted({c.split(":", 1)[1] for row in rows for c in row if c.startswith(POOL_SIZE_PREFIX)})
    pools = [column for name in names for column in pool_columns(name)]
    return ["run", *parameters, *HEAD_COLUMNS[1:], *METRIC_COLUMNS, *topics, *pools, *TAIL_COLUMNS]


def table_rows(rows, cols) -> list[list]:
    """Rows as lists in column order; None and missing cells are ""."""
    return [["" if row.get(c) is None else row.get(c) for c in cols] for row in rows]
