"""The notebooks run top to bottom (small mode) and are committed with their outputs stripped."""

from __future__ import annotations

import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300

# A last cell appended in memory: the kernel reports which Python runs it.
KERNEL_PREFIX_MARK = "GEOMXAI-KERNEL-PREFIX="


def _ids(paths):
    return [p.stem for p in paths]


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks under {NOTEBOOK_DIR}"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """One runs folder for the module: notebooks reuse the tiny runs an earlier one trained."""
    return tmp_path_factory.mktemp("notebook-runs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, runs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOMXAI_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("GEOMXAI_NOTEBOOK_RUNS", str(runs_dir))
    for name in ("GEOMXAI_NOTEBOOK_WEIGHTS", "GEOMXAI_NOTEBOOK_IMAGES"):
        monkeypatch.delenv(name, raising=False)
    # Two threads: the suite shares a small machine; the kernel inherits this environment.
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(f"import sys\nprint({KERNEL_PREFIX_MARK!r} + sys.prefix)")
    )
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        # The working directory of the kernel: notebooks must not write into the repository.
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    printed = "".join(
        out.get("text", "") for out in nb.cells[-1].outputs if out.get("output_type") == "stream"
    )
    assert printed.strip() == KERNEL_PREFIX_MARK + sys.prefix, (
        "the notebook ran in another Python than the test's; is ipykernel installed in the venv?"
    )
    assert not list(tmp_path.glob("runs")), "small mode wrote runs into the working directory"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} hold outputs or execution counts; strip them with "
        f"`jupyter nbconvert --clear-output --inplace {path.relative_to(NOTEBOOK_DIR.parent)}`"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_reads_small_flag_first(path):
    nb = nbformat.read(path, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert 'os.environ.get("GEOMXAI_NOTEBOOK_SMALL") == "1"' in first.source
