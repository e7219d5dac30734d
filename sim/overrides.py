"""Scenario overrides from the command line: ``--set key=value`` and ``--sweep key=v1,v2``.

Keys are dotted field paths as ``common.scenario.with_overrides`` takes them; values are
read as YAML, so ``1`` is a number, ``queue`` a string and ``{constant: 60}`` a mapping.
"""

from __future__ import annotations

import re

import yaml

from common.analysis import sweep as plan_
from common.scenario_yaml import load_yaml

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


class SweepError(ValueError):
    """Bad ``--set``/``--sweep``/``--seeds`` input; ``str()`` is the message, one line per problem."""


def parse_sweep_arg(text: str) -> tuple[str, list]:
    """``"key=v1,v2"`` -> ``("key", [v1, v2])`` with each value read as YAML."""
    key, sep, values = text.partition("=")
    key = key.strip()
    example = "expected KEY=VALUE,VALUE,... (e.g. cloud.scheduler=queue,simple)"
    if not sep:
        raise SweepError(f"--sweep {text!r}: {example}")
    _check_key("--sweep", text, key, example)
    stripped = values.strip()
    try:
        if stripped.startswith("["):
            parsed = load_yaml(stripped)
            if not isinstance(parsed, list):
                raise SweepError(f"--sweep {text!r}: expected a YAML list after {key}=")
        else:
            pieces = [piece.strip() for piece in values.split(",")]
            if any(piece == "" for piece in pieces):
                raise SweepError(f"--sweep {text!r}: empty value ({example})")
            parsed = [load_yaml(piece) for piece in pieces]
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SweepError(f"--sweep {text!r}: not a YAML value ({problem})") from None
    if not parsed:
        raise SweepError(f"--sweep {text!r}: no values ({example})")
    shown = [plan_.format_value(v) for v in parsed]
    repeated = sorted({v for v in shown if shown.count(v) > 1})
    if repeated:
        raise SweepError(f"--sweep {text!r}: value repeated: {', '.join(repeated)}")
    return key, parsed


def parse_sweep_args(texts) -> dict:
    parameters = {}
    for text in texts or ():
        key, values = parse_sweep_arg(text)
        if key in parameters:
            raise SweepError(f"--sweep {key}: given twice; put every value in one --sweep {key}=V1,V2,...")
        parameters[key] = values
    return parameters


def _check_key(option: str, text: str, key: str, example: str):
    if not key:
        raise SweepError(f"{option} {text!r}: {example}")
    if not _KEY.match(key):
        raise SweepError(f"{option} {text!r}: {key!r} is not a dotted field path such as workload.arrivals.rate")
    if key in plan_.RESERVED:
        raise SweepError(f"{option} {text!r}: {key} cannot be {'swept' if option == '--sweep' else 'set'} here (use --seed and --seeds)")


def parse_set_arg(text: str) -> tuple[str, object]:
    """``"key=value"`` -> ``("key", value)``, the whole of the value read as one YAML value."""
    key, sep, value = text.partition("=")
    key = key.strip()
    example = "expected KEY=VALUE (e.g. cloud.hosts.count=20)"
    if not sep:
        raise SweepError(f"--set {text!r}: {example}")
    _check_key("--set", text, key, example)
    if not value.strip():
        raise SweepError(f"--set {text!r}: empty value ({example})")
    try:
        return key, load_yaml(value)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SweepError(f"--set {text!r}: not a YAML value ({problem})") from None


def parse_set_args(texts) -> dict:
    overrides = {}
    for text in texts or ():
        key, value = parse_set_arg(text)
        if key in overrides:
            raise SweepError(f"--set {key}: given twice")
        overrides[key] = value
    return overrides
