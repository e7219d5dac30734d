"""Turn a finished run into rows and a summary. Pure: the runners write the files.

The instance table is read from the store snapshot, not from anything the sim alone
keeps, so a real run yields the same table from its Redis.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from common import keys, lifecycle, webhooks
from common.analysis.stats import percentile
from common.recovery import COUNTS

INSTANCE_COLUMNS = (
    "id", "project_id", "instance_type", "vcpus", "host", "fixed_ip", "state", "error",
    "created_at", *(f"{s}_at" for s in lifecycle.STATES if s != lifecycle.SCHEDULING),
    "time_to_running",
)

RPC_COLUMNS = (
    "delivery_tag", "queue", "method", "msg_id", "published_at", "delivered_at",
    "handled_at", "consumer", "redelivered", "outcome",
)


def queue_depth_rows(now: float, depths: dict) -> list[tuple]:
    """Time-series rows for queue depths: one per shared topic queue, and each topic's
    ``T.<host>`` queues as ``T.<host> (sum)`` and ``(max)`` (they are different
    consumers, so one topic's host queues are never summed with another's)."""
    rows = []
    host_queues: dict[str, list[int]] = {}
    for queue, depth in sorted(depths.items()):
        topic, dot, _ = queue.partition(".")
        if dot:
            host_queues.setdefault(topic, []).append(depth)
        else:
            rows.append((now, "queue_depth", topic, depth))
    for topic, values in host_queues.items():
        rows.append((now, "queue_depth", f"{topic}.<host> (sum)", sum(values)))
        rows.append((now, "queue_depth", f"{topic}.<host> (max)", max(values)))
    return rows


def instance_rows(store: dict) -> list[dict]:
    """One row per instance, from a store dump: when it first reached each state."""
    rows = []
    for instance_id in sorted(store.get(keys.INSTANCES, ())):
        record = store.get(keys.instance(instance_id)) or {}
        row: dict[str, Any] = {column: "" for column in INSTANCE_COLUMNS}
        for column in ("project_id", "instance_type", "vcpus", "host", "fixed_ip", "state", "error"):
            row[column] = record.get(column, "")
        row["id"] = instance_id
        for entry in store.get(keys.transitions(instance_id), ()):
            src, dst, at = lifecycle.decode_transition(entry)
            column = "created_at" if src is None else f"{dst}_at"
            if row.get(column) == "":
                row[column] = at
        if row["running_at"] != "" and row["created_at"] != "":
            row["time_to_running"] = row["running_at"] - row["created_at"]
        rows.append(row)
    return rows


def reason_group(reason: str) -> str:
    """Fold an error message to its kind: ``spawn failed: domain i-1 ...`` -> ``spawn
    failed``; ``no fixed address: NoMoreAddresses: ...`` keeps the exception name."""
    head, sep, rest = reason.partition(": ")
    if not sep:
        return re.sub(r"\d+(\.\d+)?", "N", reason)
    match = re.match(r"([A-Z][A-Za-z]+)(:|$)", rest)
    return f"{head}: {match.group(1)}" if match else head


def summarize(*, scenario, seed, mode, store, series, broker_stats, verdicts, fingerprint,
              sim_time, effects, wall_seconds, rejected, extra=None) -> dict:
    rows = instance_rows(store)
    states = Counter(row["state"] for row in rows)
    ttr = [row["time_to_running"] for row in rows if row["time_to_running"] != ""]
    errors = Counter(reason_group(row["error"]) for row in rows if row["error"])
    topics: dict[str, dict] = {}
    for queue, stats in sorted(broker_stats.items()):
        topic = queue if "." not in queue else queue.split(".")[0] + ".<host>"
        entry = topics.setdefault(topic, {"peak_depth": 0, "published": 0, "wait_p95_max": 0.0, "queues": 0})
        entry["peak_depth"] = max(entry["peak_depth"], stats["peak_depth"])
        entry["published"] += stats["published"]
        entry["wait_p95_max"] = max(entry["wait_p95_max"], stats["wait_p95"] or 0.0)
        entry["queues"] += 1
    pools: dict[str, dict] = {}
    for _t, metric, name, value in series:
        if metric == "pool_size":
            pools.setdefault(name, {})["size"] = value
        elif metric == "pool_free":
            pool = pools.setdefault(name, {})
            pool["min_free"] = min(pool.get("min_free", value), value)
            pool["free_at_end"] = value
    for pool in pools.values():
        pool["peak_used"] = pool.get("size", 0) - pool.get("min_free", 0)
    launched = len(rows)
    ever_errored = sum(1 for row in rows if row["error_at"] != "")
    slo = slo_verdicts(scenario.slo, ttr, ever_errored, launched)
    summary = {
        "scenario": scenario.name,
        "seed": seed,
        "mode": mode,
        "requests": {
            "rejected": {f"{action} {code}": n for (action, code), n in sorted(rejected.items())},
        },
        "instances": {
            "launched": launched,
            "ever_errored": ever_errored,
            **{state: states.get(state, 0) for state in lifecycle.STATES},
            "errors_by_reason": dict(errors.most_common()),
        },
        "time_to_running": {
            "count": len(ttr),
            "p50": percentile(ttr, 50),
            "p95": percentile(ttr, 95),
            "p99": percentile(ttr, 99),
            "max": max(ttr) if ttr else None,
        },
        "queues": topics,
        "pools": pools,
        "recovered": recovered(store),
        "quota": quota_summary(store),
        "invariants": [
            {"name": v.name, "title": v.title, "ok": v.ok, "violations": list(v.violations)} for v in verdicts
        ],
        "slo": slo,
        "fingerprint": fingerprint,
        "sim_time": sim_time,
        "effects": effects,
        "wall_seconds": wall_seconds,
        "effects_per_wall_second": effects / wall_seconds if wall_seconds else None,
        **(extra or {}),
    }
    summary["ok"] = all(v.ok for v in verdicts) and all(s["ok"] for s in slo)
    return summary


def recovered(store: dict) -> dict[str, int]:
    """What services re-asserted after the store lost its data (common.recovery), from
    the store's own count; empty when it never did."""
    counts = store.get(keys.RECOVERED) or {}
    return {name: int(counts[name]) for name in sorted(counts, key=_recovered_order)}


def _recovered_order(name: str):
    return (COUNTS.index(name) if name in COUNTS else len(COUNTS), name)


def quota_summary(store: dict) -> dict:
    """What was given back or corrected (the ``quota:audit`` counters: reservations,
    instances and cores given back by failed requests and by the reaper, the reconcile's
    corrections) and how many reservations are still outstanding at the end."""
    audit = store.get(keys.QUOTA_AUDIT) or {}
    return {"reservations_outstanding": len(store.get(keys.RESERVATIONS) or {}),
            **{name: int(value) for name, value in sorted(audit.items())}}


def _quota_rows(quota: dict) -> list[tuple[str, str]]:
    """The quota summary's nonzero counters as (label, value) rows."""
    rows = []
    for name, label in (("failed", "given back by failed requests"), ("expired", "given back past their deadline")):
        if quota.get(name):
            rows.append((f"reservations {label}", f"{quota[name]:,} ({quota.get(f'{name}_instances', 0):,} instances,"
                                                   f" {quota.get(f'{name}_cores', 0):,} cores)"))
    if quota.get("corrections"):
        changes = ", ".join(f"{quota[f'corrected_{field}']:+,} {field.replace('_', ' ')}"
                            for field in ("instances", "cores", "floating_ips") if quota.get(f"corrected_{field}"))
        rows.append(("usage corrected by the reconcile", f"{quota['corrections']:,} times ({changes})"))
    if quota.get("not_reconciled"):
        rows.append(("reconciles skipped (too much to read)", f"{quota['not_reconciled']:,}"))
    if quota.get("reservations_outstanding"):
        rows.append(("reservations outstanding at the end", f"{quota['reservations_outstanding']:,}"))
    return rows


def slo_verdicts(slo, ttr, errored: int, launched: int) -> list[dict]:
    out = []
    for q in (50, 95, 99):
        limit = getattr(slo, f"time_to_running_p{q}")
        if limit is not None:
            value = percentile(ttr, q)
            out.append({"name": f"time_to_running_p{q}", "limit": limit, "value": value,
                        "ok": value is not None and value <= limit})
    if slo.max_error_fraction is not None:
        value = errored / launched if launched else 0.0
        out.append({"name": "error_fraction", "limit": slo.max_error_fraction, "value": value,
                    "ok": value <= slo.max_error_fraction})
    return out


def summary_rows(summary: dict) -> list[tuple[str, str, str]]:
    """The summary as (section, label, value) rows for a terminal table."""
    rows = []
    add = lambda section, label, value: rows.append((section, label, value))  # noqa: E731
    inst = summary["instances"]
    add("instances", "launched", f"{inst['launched']:,}")
    for state in (lifecycle.RUNNING, lifecycle.DELETED, lifecycle.ERROR):
        add("instances", state, f"{inst[state]:,}")
    unsettled = sum(inst[s] for s in lifecycle.TRANSITIONAL)
    if unsettled:
        add("instances", "unsettled", f"{unsettled:,}")
    add("instances", "ever errored", f"{inst['ever_errored']:,}")
    for reason, n in inst["errors_by_reason"].items():  # folded to kinds by reason_group: few
        add("instances", f"  error: {reason}", f"{n:,}")
    for name, n in summary["requests"]["rejected"].items():
        add("requests", f"rejected {name}", f"{n:,}")
    api = summary.get("api") or {}
    for action, entry in api.get("by_action", {}).items():
        add("api", f"{action} (p50 / p95)", f"{entry['count']:,} ({entry['p50_s']:.3g} / {entry['p95_s']:.3g} s)")
    for name, n in api.get("errors", {}).items():
        add("api", f"refused {name}", f"{n:,}")
        for message, count in api.get("reasons", {}).get(name, {}).items():
            add("api", f"  {message}", f"{count:,}")
    if "admission_queue_peak" in api:
        add("api", "admission queue peak (waiting requests)", f"{api['admission_queue_peak']:,}")
    ttr = summary["time_to_running"]
    for key, label in (("peak_host_vcpu_ratio", "peak vCPU claimed / host vCPUs"),
                       ("hosts_ever_overcommitted", "hosts ever overcommitted")):
        if key in summary:
            value = summary[key]
            add("hosts", label, f"{value:.2f}" if isinstance(value, float) else f"{value:,}")
    for q in ("p50", "p95", "p99"):
        add("time to running", q, "-" if ttr[q] is None else f"{ttr[q]:.1f} s")
    for topic, q in summary["queues"].items():
        add("queues", f"peak depth {topic}", f"{q['peak_depth']:,}")
    if summary.get("stranded_messages"):
        add("queues", "stranded on dead hosts' queues", f"{summary['stranded_messages']:,}")
    unused = [nid for nid, pool in summary["pools"].items() if not pool.get("peak_used")]
    for nid, pool in summary["pools"].items():
        if nid in unused and len(summary["pools"]) > 1:
            continue
        size = pool.get("size", 0)
        used = pool.get("peak_used", 0)
        share = f" ({used / size:.0%})" if size else ""
        add("pools", f"{nid} peak used / size", f"{used:,} / {size:,}{share}")
        add("pools", f"{nid} free at end", f"{pool.get('free_at_end', 0):,}")
    if unused and len(summary["pools"]) > 1:
        add("pools", "networks never used", f"{len(unused):,} of {len(summary['pools']):,}")
    for label, value in webhooks.summary_rows(summary.get("webhooks")):
        add("web hooks", label, value)
    for label, value in _quota_rows(summary.get("quota") or {}):
        add("quota", label, value)
    for fault in summary.get("faults", []):
        add("faults", f"at {fault['at']:,.1f} s", fault["what"])
    if summary.get("network"):
        _network_rows(summary["network"], add)
    for name, n in summary.get("recovered", {}).items():
        add("recovered", name.replace("_", " "), f"{n:,}")
    for v in summary["invariants"]:
        add("invariants", f"{v['name']} {v['title']}", "ok" if v["ok"] else f"FAILED ({len(v['violations'])})")
    for s in summary["slo"]:
        value = "-" if s["value"] is None else f"{s['value']:.3g}"
        add("slo", f"{s['name']} <= {s['limit']:g}", f"{'ok' if s['ok'] else 'FAILED'} ({value})")
    clock = "simulated time" if summary["mode"] == "sim" else "scenario time (wall x time scale)"
    add("run", clock, f"{summary['sim_time']:,.0f} s")
    add("run", "effects", f"{summary['effects']:,}")
    add("run", "wall time", f"{summary['wall_seconds']:.1f} s")
    add("run", "trace fingerprint", summary["fingerprint"])
    return rows


def _network_rows(net: dict, add):
    """A real run's own network (real.run_network): namespaces, guests, probes, skips."""
    add("network", "namespaces", f"{net['fabric']} and {len(net['hosts'])} hosts")
    add("network", "guests leased / plugged", f"{net['guests_leased']:,} / {net['guests']:,}")
    if net.get("guests_lost_with_store"):
        add("network", "guests whose record a store loss took", f"{net['guests_lost_with_store']:,}")
    add("network", "lease events heard (dnsmasq hook)", f"{net['lease_events']:,}")
    probes = net["floating_probes"]
    add("network", "floating pings from outside reached / failed", f"{probes['reached']:,} / {probes['failed']:,}")
    for step in net.get("skipped", []):
        add("network", f"skipped: {step['step']}", step["reason"])


def manifest(*, scenario, scenario_path, scenario_hash: str, seed: int, mode: str, started_at: str,
             provenance: dict, **extra) -> dict:
    """What ran, the same keys in both modes: scenario, hash, seed, mode, commit,
    package versions (``provenance``), start time, and the mode's own ``extra``."""
    return {
        "scenario": scenario.name,
        "scenario_path": str(scenario_path),
        "scenario_hash": scenario_hash,
        "seed": seed,
        "mode": mode,
        "git_commit": provenance.get("git_commit", ""),
        "versions": provenance.get("versions", {}),
        "started_at": started_at,
        **extra,
    }


def run_files(*, manifest: dict, summary: dict, store: dict, rpc_rows, series, plots: bool = False,
              subtitle: str = "", time_label: str | None = None) -> dict[str, bytes]:
    """The run directory's files as bytes, by name, the same schema in both modes (the
    one writer of a run directory; the runner only saves them). With ``plots`` the
    figures come too (matplotlib is imported only then)."""
    def table(header, rows, dict_rows=False) -> bytes:
        buffer = io.StringIO()
        if dict_rows:
            by_name = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
            by_name.writeheader()
            by_name.writerows(rows)
        else:
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        return buffer.getvalue().encode()

    instances = instance_rows(store)
    files = {
        "manifest.json": (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
        "summary.json": (json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n").encode(),
        "instances.csv": table(INSTANCE_COLUMNS, instances, dict_rows=True),
        "rpc.csv": table(RPC_COLUMNS, rpc_rows),
        "timeseries.csv": table(("time", "metric", "series", "value"), series),
    }
    if plots:
        from common.analysis import plots as figures

        extra = {"time_label": time_label} if time_label else {}
        files.update(figures.run_figures(series, instances, subtitle=subtitle, **extra))
    return files


def summary_renderable(summary: dict, out) -> object:
    """The summary as a rich renderable (a table plus verdict lines); the runner prints it."""
    table = Table(title=f"{summary['scenario']} · seed {summary['seed']} · {summary['mode']}")
    table.add_column("section", style="dim")
    table.add_column("measure")
    table.add_column("value", justify="right")
    previous = None
    for section, label, value in summary_rows(summary):
        table.add_row(section if section != previous else "", label, value, style="red" if "FAILED" in value else None)
        previous = section
    lines: list[Table | Text] = [table]
    for v in summary["invariants"]:
        for line in v["violations"][:5]:
            lines.append(Text.assemble((v["name"], "red"), " ", line))
    verdict = ("all invariants and SLOs hold", "green") if summary["ok"] else ("FAILED", "red")
    lines.append(Text.assemble(verdict, f" · run directory: {out}"))
    return Group(*lines)
