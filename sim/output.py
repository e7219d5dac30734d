"""The run directory, same schema in both modes:

manifest.json   what ran: scenario name, hash and path, seed, mode, commit, versions
summary.json    the summary printed at the end, with invariant and SLO verdicts
instances.csv   one row per instance: when it first reached each state
rpc.csv         one row per handled RPC message
timeseries.csv  long format: time, metric, series, value
*.png           figures (unless plots are turned off): see common.analysis.plots.RUN_FIGURES

A sweep directory holds one run directory per run, ``sweep.json`` (what was swept) and
``sweep.csv`` (one row per run: swept values, seed, run directory, headline metrics).
"""

from __future__ import annotations

import csv
import json
import platform
from importlib import metadata
from pathlib import Path

from common.analysis import report

PACKAGES = ("novalab", "simpy", "fakeredis", "redis", "pydantic", "PyYAML", "rich", "matplotlib")


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
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_run_dir(out: Path, *, manifest: dict, summary: dict, store: dict, rpc_rows, series, plots: bool = True) -> list[Path]:
    """Write the run directory; returns the plot files written (none when ``plots`` is off)."""
    out.mkdir(parents=True, exist_ok=True)
    instances = report.instance_rows(store)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    with open(out / "instances.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=report.INSTANCE_COLUMNS)
        writer.writeheader()
        writer.writerows(instances)
    with open(out / "rpc.csv", "w", newline="") as f:
        rpc_writer = csv.writer(f)
        rpc_writer.writerow(report.RPC_COLUMNS)
        rpc_writer.writerows(rpc_rows)
    with open(out / "timeseries.csv", "w", newline="") as f:
        series_writer = csv.writer(f)
        series_writer.writerow(("time", "metric", "series", "value"))
        series_writer.writerows(series)
    if not plots:
        return []
    subtitle = f"{summary.get('scenario', '')} · seed {summary.get('seed', '')} · {summary.get('mode', '')}"
    return write_plots(out, series, instances, subtitle=subtitle)


def write_plots(out: Path, series, instances, *, subtitle: str = "") -> list[Path]:
    """The run's figures as PNG files in ``out`` (built by common.analysis.plots)."""
    from common.analysis import plots  # matplotlib is imported only when plots are wanted

    written = []
    for name, data in plots.run_figures(series, instances, subtitle=subtitle).items():
        path = out / name
        path.write_bytes(data)
        written.append(path)
    return written


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_table(path: Path, columns, rows) -> None:
    """A CSV file: a header of ``columns``, then ``rows`` (lists in column order)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
