"""The analysis notebooks run top to bottom in a fresh kernel, from the repository root.

Each notebook makes its own small sweep when its parameters are left at None, so this is
an end-to-end check of run-scenario's sweep API, the run directory schema and the
figures, as a notebook user meets them. fidelity.ipynb makes a small real run instead, so
it needs the real-mode services (skipped without them, failed in CI).
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ["queue-behaviour.ipynb", "ip-pool-behaviour.ipynb", "fidelity.ipynb"]
CELL_TIMEOUT = 300  # seconds per cell: a guard against a hang, not a speed target
#: Figures each notebook shows when run with its default parameters (ip-pool-behaviour:
#: three for flat pool sizes, three for flat against flatdhcp against vlan).
MIN_FIGURES = {"queue-behaviour.ipynb": 3, "ip-pool-behaviour.ipynb": 6, "fidelity.ipynb": 2}
#: Notebooks that make a real run of their own when left at their defaults.
REAL = {"fidelity.ipynb"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_starts_with_a_papermill_parameters_cell(name):
    """The first code cell is tagged "parameters" and defaults run_dir (and any other *_dir) to None."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    namespace = {}
    exec(first.source, namespace)
    assert namespace["run_dir"] is None
    assert all(value is None for key, value in namespace.items() if key.endswith("_dir"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_saved_without_outputs(name):
    """The repository holds the notebooks' source only: CI executes them."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert not [cell for cell in code if cell.get("outputs") or cell.get("execution_count") is not None]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_without_errors(name, tmp_path, monkeypatch, request):
    """Executed in a fresh kernel with cwd = repo root, no cell raises, and the figures
    it promises are there. (The kernel inherits TMPDIR, so the sweep or run the notebook
    makes for itself lands in this test's temporary directory.)"""
    if name in REAL:
        request.getfixturevalue("redis_url"), request.getfixturevalue("amqp_url")
        try:
            import libvirt  # noqa: F401
        except ImportError as e:
            from conftest import service_unavailable

            service_unavailable("libvirt-python", str(e))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{name}: a cell failed:\n{e}")
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.get("output_type") == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= MIN_FIGURES[name], f"{name} showed {len(images)} figures"
