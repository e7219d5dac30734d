"""Read a scenario file: YAML on disk to a validated Scenario."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from common.scenario import Scenario, ScenarioError, parse_yaml
from common.scenario_yaml import MAX_SCENARIO_BYTES, file_problem


def load(path) -> tuple[Scenario, bytes]:
    """-> (scenario, the file's bytes). Raises ScenarioError naming the file."""
    raw = read(path)
    # A calibration file named by the scenario is read the same way, beside it.
    return parse_yaml(raw, str(path), read_beside=lambda name: read(Path(path).parent / name)), raw


def read(path) -> bytes:
    """The bytes of a scenario file, its type and size checked before it is opened (a
    FIFO would block the open; a huge file would fill memory). ScenarioError otherwise."""
    source = str(path)
    try:
        info = os.stat(path)
        problem = file_problem(info.st_mode, info.st_size)
        if problem:
            raise ScenarioError(source, [problem])
        # O_NONBLOCK: a FIFO swapped in after the check still cannot block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)
    except ScenarioError:
        raise
    except FileNotFoundError:
        raise ScenarioError(source, ["no such file"]) from None
    except (OSError, ValueError) as e:  # ELOOP, EACCES, a name with a NUL byte, ...
        raise ScenarioError(source, [f"cannot read: {getattr(e, 'strerror', None) or e}"]) from None
    if len(raw) > MAX_SCENARIO_BYTES:
        raise ScenarioError(source, [f"is larger than {MAX_SCENARIO_BYTES:,} bytes"])
    return raw


def digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()
