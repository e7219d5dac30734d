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

PACKAGES = ("novalab", "simpy", "fakeredis", "redis", "pydantic", "PyYAML", "rich", "matplotlib")


def git_commit(start: Path) -> str:
    """The checked-out commit, read from .git without running git; "" when unknown.
    In a linked worktree ``.git`` is a file naming its own git directory, whose
    ``commondir`` holds the shared refs."""
    for folder in (start, *start.parents):
        dot_git = folder / ".git"
        if dot_git.is_file():
            text = dot_git.read_text().strip()
            if not text.startswith("gitdir: "):
                return ""
            git_dir = (folder / text[len("gitdir: "):]).resolve()
            common = git_dir / "commondir"
            refs_dir = (git_dir / common.read_text().strip()).resolve() if common.is_file() else git_dir
        elif dot_git.is_dir():
            git_dir = refs_dir = dot_git
        else:
            continue
        head = git_dir / "HEAD"
        if not head.is_file():
            return ""
        ref = head.read_text().strip()
        if not ref.startswith("ref: "):
            return ref
        name = ref[5:]
        loose = refs_dir / name
        if loose.is_file():
            return loose.read_text().strip()
        packed = refs_dir / "packed-refs"
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


def provenance() -> dict:
    """The commit and package versions a run records (the CLI hands them to either mode)."""
    return {"git_commit": git_commit(Path(__file__).resolve().parent), "versions": versions()}


def save_run_dir(out: Path, files: dict[str, bytes]) -> None:
    """Save a run directory's files (common.analysis.report.run_files made them)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_table(path: Path, columns, rows) -> None:
    """A CSV file: a header of ``columns``, then ``rows`` (lists in column order)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
