"""Size limits of the project's code: no module of common/, sim/, real/ or bench/ over
600 lines, no function or method body over 70 lines, unless a ``# long: <reason>``
comment says why (for a module: in its first 5 lines; for a function: on its ``def``
line or the line above it). tests/ is not checked: a test module may be larger, since
it lists cases side by side."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("common", "sim", "real", "bench")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 70
LONG = "# long:"


def modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def has_reason(line: str) -> bool:
    """Whether ``line`` carries ``# long: <reason>`` with a reason after the colon."""
    _, found, reason = line.partition(LONG)
    return bool(found and reason.strip())


def long_modules():
    for path in modules():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(has_reason(line) for line in lines[:5]):
            yield f"{path.relative_to(ROOT)}: {len(lines)} lines (limit {MAX_MODULE_LINES})"


def long_functions():
    for path in modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            size = node.end_lineno - node.lineno
            # lineno is the ``def`` line (decorators come before it); index lineno - 2 is the line above
            nearby = lines[node.lineno - 2:node.lineno] if node.lineno > 1 else lines[:1]
            if size > MAX_FUNCTION_LINES and not any(has_reason(line) for line in nearby):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {size} lines (limit {MAX_FUNCTION_LINES})"


def test_no_module_is_over_the_line_limit():
    """Every module is at most 600 lines or says why it is longer."""
    offenders = list(long_modules())
    print("\n".join(offenders))
    assert not offenders, "modules over the limit:\n" + "\n".join(offenders)


def test_no_function_is_over_the_line_limit():
    """Every function body is at most 70 lines or says why it is longer."""
    offenders = list(long_functions())
    print("\n".join(offenders))
    assert not offenders, "functions over the limit:\n" + "\n".join(offenders)


def test_a_reason_needs_words():
    """A bare ``# long:`` without a reason does not excuse anything."""
    assert has_reason("def f():  # long: one table, read top to bottom")
    assert not has_reason("def f():  # long:")
    assert not has_reason("def f():")
