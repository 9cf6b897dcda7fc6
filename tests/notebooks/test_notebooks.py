"""The notebooks run top to bottom (small mode) and are committed with their outputs stripped.

A run is judged by what it shows, not only by running: every figure cell shows a picture, every
cell that ends in an expression displays it, nothing is printed to stderr, and the self-checks
the notebooks print hold. A self-check is a printed line of one of three forms:

- ``<what>: True`` (``False`` fails);
- ``<value> (stored: <value>)``, a number recomputed beside the stored one (they must agree);
- ``<what>, recomputed: <values>`` and ``<what>, analysis: <values>`` (the two must agree).
"""

from __future__ import annotations

import ast
import base64
import io
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300

# A last cell appended in memory: the kernel reports which Python runs it.
KERNEL_PREFIX_MARK = "GEOMXAI-KERNEL-PREFIX="

# Self-checks each notebook prints at least (see the module docstring); the others print none.
MIN_SELF_CHECKS = {
    "01_quickstart": 5,
    "03_axis_swapping": 1,
    "05_bring_your_own": 6,
    "06_own_training_loop": 3,
}

TRUTH = re.compile(r"^(?P<what>.+): (?P<verdict>True|False)$")
NUMBER = r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?"
STORED = re.compile(rf"(?P<value>{NUMBER}) \(stored: (?P<stored>{NUMBER})\)")
SIDE = re.compile(r"^(?P<what>.+), (?P<side>recomputed|analysis):\s*(?P<values>.+)$")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DISPLAY_METHODS = ("round", "head", "tail", "to_dataframe", "to_pandas")


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

    *cells, last = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert _stream(last, "stdout").strip() == KERNEL_PREFIX_MARK + sys.prefix, (
        "the notebook ran in another Python than the test's; is ipykernel installed in the venv?"
    )
    assert not list(tmp_path.glob("runs")), "small mode wrote runs into the working directory"
    for i, cell in enumerate(cells):
        where = f"{path.name}, code cell {i + 1}"
        assert not _stream(cell, "stderr"), f"{where} printed to stderr:\n{_stream(cell, 'stderr')}"
        if "plt.show()" in cell.source:
            _check_figure(cell, where)
        if _ends_in_a_value(cell.source):
            assert any(out.output_type == "execute_result" for out in cell.outputs), (
                f"{where} ends in an expression but displayed nothing"
            )
    checks, failed = _self_checks("".join(_stream(cell, "stdout") for cell in cells))
    assert not failed, f"{path.name}: self-checks that do not hold: {failed}"
    assert checks >= MIN_SELF_CHECKS.get(path.stem, 0), (
        f"{path.name} printed {checks} self-check(s), fewer than {MIN_SELF_CHECKS[path.stem]}"
    )


def _stream(cell, name: str) -> str:
    return "".join(
        out.text for out in cell.outputs if out.output_type == "stream" and out.name == name
    )


def _check_figure(cell, where: str) -> None:
    """The cell displayed a PNG that decodes to a picture with something on it."""
    from PIL import Image

    pngs = [
        base64.b64decode(out.data["image/png"])
        for out in cell.outputs
        if out.output_type == "display_data" and "image/png" in out.get("data", {})
    ]
    assert pngs, f"{where} calls plt.show() but displayed no figure"
    for png in pngs:
        assert png[:8] == PNG_MAGIC, where
        with Image.open(io.BytesIO(png)) as image:
            pixels = np.asarray(image.convert("L"))
        assert min(pixels.shape) >= 100 and pixels.std() > 1.0, f"{where}: a blank figure"


def _ends_in_a_value(source: str) -> bool:
    """Whether the cell ends in a value shown for the reader: a name, or a table made for display.

    Other calls (``print``, ``plt.show()``, ``ax.legend()``) may or may not return something, so
    they are not judged.
    """
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return False
    if not body or not isinstance(body[-1], ast.Expr):
        return False
    value = body[-1].value
    if isinstance(value, ast.Call):  # a table made for display: df.round(3), ds.to_dataframe()
        return isinstance(value.func, ast.Attribute) and value.func.attr in DISPLAY_METHODS
    return isinstance(value, (ast.Name, ast.Attribute, ast.Subscript))


def _self_checks(stdout: str) -> tuple[int, list[str]]:
    """How many self-checks ``stdout`` prints (module docstring) and those that do not hold."""
    count, failed, sides = 0, [], {}
    for line in stdout.splitlines():
        line = line.strip()
        if match := TRUTH.match(line):
            count += 1
            if match["verdict"] == "False":
                failed.append(line)
        for match in STORED.finditer(line):
            count += 1
            if float(match["value"]) != float(match["stored"]):
                failed.append(line)
        if match := SIDE.match(line):
            sides.setdefault(match["what"], {})[match["side"]] = " ".join(match["values"].split())
    for what, pair in sides.items():
        count += 1
        if len(pair) != 2 or pair["recomputed"] != pair["analysis"]:
            failed.append(f"{what}: {pair}")
    return count, failed


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
