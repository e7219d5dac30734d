"""Read a scenario file: YAML on disk to a validated Scenario."""

from __future__ import annotations

import hashlib
from pathlib import Path

from common.scenario import Scenario, ScenarioError, parse_yaml


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
    return parse_yaml(raw, source, read_beside=lambda name: (path.parent / name).read_bytes()), raw


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()
