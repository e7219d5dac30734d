"""Read a scenario file for ``novalab validate`` and ``run-scenario --mode real``.

The sim reads its files with ``sim/scenario_file.py``, the same checks: real/ and sim/
never import each other, and common/ does no I/O, so each side keeps its few lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.scenario import Scenario, ScenarioError, parse_yaml
from common.scenario_yaml import MAX_SCENARIO_BYTES, file_problem


def read(path) -> bytes:
    """The file's bytes, its type and size checked before opening (a FIFO would block
    the open, a huge file fill memory). Raises ScenarioError naming the file."""
    source = str(path)
    try:
        info = os.stat(path)
        problem = file_problem(info.st_mode, info.st_size)
        if problem:
            raise ScenarioError(source, [problem])
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO swapped in after the check
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)
    except ScenarioError:
        raise
    except FileNotFoundError:
        raise ScenarioError(source, ["no such file"]) from None
    except (OSError, ValueError) as e:  # ELOOP, EACCES, a NUL in the name
        raise ScenarioError(source, [f"cannot read: {getattr(e, 'strerror', None) or e}"]) from None
    if len(raw) > MAX_SCENARIO_BYTES:
        raise ScenarioError(source, [f"is larger than {MAX_SCENARIO_BYTES:,} bytes"])
    return raw


def load(path) -> tuple[Scenario, bytes]:
    """-> (scenario, the file's bytes); ScenarioError naming the file."""
    raw = read(path)
    return parse_yaml(raw, str(path), read_beside=lambda name: read(Path(path).parent / name)), raw
