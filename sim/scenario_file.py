"""Read a scenario file: YAML on disk to a validated Scenario."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from common.scenario import Scenario, ScenarioError, parse


def load(path) -> tuple[Scenario, bytes]:
    """-> (scenario, the file's bytes). Raises ScenarioError naming the file."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(source, ["no such file"]) from None
    except IsADirectoryError:
        raise ScenarioError(source, ["is a directory, expected a YAML file"]) from None
    except OSError as e:
        raise ScenarioError(source, [f"cannot read: {e.strerror}"]) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ScenarioError(source, [f"{where}not valid YAML ({problem})"]) from None
    if data is None:
        raise ScenarioError(source, ["the file is empty"])
    return parse(data, source), raw


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()
