"""The lowest versions pyproject.toml allows, as pip pins, for the packages a
simulation imports: ``python tests/min_versions.py`` prints ``simpy==4.1 ...``.

tests/min_versions.sh installs them in a throwaway venv and runs the determinism tests
there: a lower bound is a promise that those versions give the same runs.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: What ``sim.run`` imports (directly or through common/); the other dependencies
#: (kombu, matplotlib, ...) serve real mode and the plots, not the sim's trace.
SIM_PACKAGES = ("simpy", "fakeredis", "redis", "sortedcontainers", "PyYAML", "pydantic", "rich", "ldap3")


def lower_bounds(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """Package name -> its ``>=`` bound in [project].dependencies."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    bounds = {}
    for requirement in dependencies:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)", requirement)
        if match:
            bounds[match.group(1)] = match.group(2)
    return bounds


def pins() -> list[str]:
    bounds = lower_bounds()
    missing = [name for name in SIM_PACKAGES if name not in bounds]
    if missing:
        raise SystemExit(f"min_versions: no lower bound in pyproject.toml for {', '.join(missing)}")
    return [f"{name}=={bounds[name]}" for name in SIM_PACKAGES]


if __name__ == "__main__":
    print(" ".join(pins()))
    sys.exit(0)
