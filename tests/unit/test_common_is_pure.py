"""common/ is pure: no I/O, clocks, randomness or runner; sim/ and real/ stay apart."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_COMMON = {
    "redis", "fakeredis", "kombu", "amqp", "ldap3", "libvirt", "socket", "subprocess",
    "time", "random", "uuid", "threading", "simpy", "sim", "real",
}


def imports(path):
    """-> [(line, top-level module name)] for every import in the file, however nested,
    including ``__import__("x")`` and ``importlib.import_module("x")`` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def offenders(package, forbidden):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no .py files under {package}/"
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in imports(path)
        if name in forbidden
    ]


def test_the_scanner_sees_nested_and_dynamic_imports(tmp_path):
    """Imports inside functions, from-imports and dynamic imports are all found."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, time.x\nfrom redis import Redis\n"
        "def f():\n    import socket\n    from . import sim\n"
        "    __import__('uuid')\n    importlib.import_module('simpy.core')\n"
    )
    assert imports(probe) == [(1, "os"), (1, "time"), (2, "redis"), (4, "socket"), (6, "uuid"), (7, "simpy")]


def test_common_imports_no_io_clock_randomness_or_runner():
    """No file under common/ imports a client, a clock, randomness, SimPy, sim or real."""
    found = offenders("common", FORBIDDEN_IN_COMMON)
    assert not found, "common/ must stay pure:\n" + "\n".join(found)


@pytest.mark.parametrize("package, other", [("sim", "real"), ("real", "sim")])
def test_modes_do_not_import_each_other(package, other):
    """sim/ never imports real/, and real/ never imports sim/."""
    found = offenders(package, {other})
    assert not found, f"{package}/ must not import {other}/:\n" + "\n".join(found)
