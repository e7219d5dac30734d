"""The run directory, same schema in both modes:

manifest.json   what ran: scenario name, hash and path, seed, mode, commit, versions
summary.json    the summary printed at the end, with invariant and SLO verdicts
instances.csv   one row per instance: when it first reached each state
rpc.csv         one row per handled RPC message
timeseries.csv  long format: time, metric, series, value
"""

from __future__ import annotations

import csv
import json
import platform
from importlib import metadata
from pathlib import Path

from common import report

PACKAGES = ("novalab", "simpy", "fakeredis", "redis", "pydantic", "PyYAML", "rich")


def git_commit(start: Path) -> str:
    """The checked-out commit, read from .git without running git; "" when unknown."""
    for folder in (start, *start.parents):
        head = folder / ".git" / "HEAD"
        if head.is_file():
            ref = head.read_text().strip()
            if not ref.startswith("ref: "):
                return ref
            name = ref[5:]
            loose = folder / ".git" / name
            if loose.is_file():
                return loose.read_text().strip()
            packed = folder / ".git" / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + name):
                        return line.split(" ")[0]
            return ""
    return ""


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_run_dir(out: Path, *, manifest: dict, summary: dict, store: dict, rpc_rows, series) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    with open(out / "instances.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=report.INSTANCE_COLUMNS)
        writer.writeheader()
        writer.writerows(report.instance_rows(store))
    with open(out / "rpc.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(report.RPC_COLUMNS)
        writer.writerows(rpc_rows)
    with open(out / "timeseries.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("time", "metric", "series", "value"))
        writer.writerows(series)
