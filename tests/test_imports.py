"""Import cost follows use: the lazy root, and no part importing the one above it."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap

import pytest

import geomxai


def _loaded_after(statement: str) -> list[str]:
    """The geomxai modules in ``sys.modules`` after ``statement`` runs in a fresh interpreter."""
    code = (
        f"import json, sys\n{statement}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('geomxai'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _under(modules: list[str], *packages: str) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_the_root_package_loads_nothing():
    assert _loaded_after("import geomxai") == ["geomxai"]


@pytest.mark.parametrize(
    "package", ["geometry", "attribution", "collect", "dynamics", "whitening", "models"]
)
def test_metrics_and_parts_load_no_trainer(package):
    loaded = _loaded_after(f"import geomxai.{package}")
    assert _under(loaded, "geomxai.train", "geomxai.study", "geomxai.report") == []


def test_study_loads_neither_trainer_nor_report():
    loaded = _loaded_after("import geomxai.study")
    assert _under(loaded, "geomxai.train", "geomxai.report", "geomxai.pipeline") == []


def test_report_loads_neither_study_nor_trainer():
    loaded = _loaded_after("import geomxai.report")
    assert _under(loaded, "geomxai.train", "geomxai.study", "geomxai.pipeline") == []


def test_the_run_directory_reader_is_a_leaf():
    assert _loaded_after("import geomxai.rundir") == ["geomxai", "geomxai.rundir"]


def test_root_names_resolve_on_use():
    import geomxai.train

    assert geomxai.load_checkpoint is geomxai.train.load_checkpoint
    assert geomxai.CheckpointError is geomxai.train.CheckpointError
    assert geomxai.load_checkpoint.__module__ == "geomxai.train._checkpoint"
    assert geomxai.__version__
    assert geomxai.rundir.read_run is not None  # subpackages and modules are attributes
    assert {"load_checkpoint", "study", "pipeline"} <= set(dir(geomxai))
    with pytest.raises(AttributeError, match="did you mean 'load_checkpoint'"):
        _ = geomxai.load_chekpoint


def test_moved_names_still_resolve():
    import geomxai.collect
    import geomxai.moments
    import geomxai.pipeline
    import geomxai.study

    assert geomxai.collect.FeatureMoments is geomxai.moments.FeatureMoments
    # The study engine lives above geomxai.study (which imports no part above it): its old
    # forwards are gone rather than kept as an arrow back up.
    assert not hasattr(geomxai.study, "run_study")
    assert geomxai.pipeline.run_study.__module__ == "geomxai.pipeline"
    with pytest.raises(AttributeError):
        _ = geomxai.study.no_such_name


def _third_party_after(code: str) -> list[str]:
    """The heavy optional libraries in ``sys.modules`` after ``code`` runs in a fresh process."""
    heavy = ("timm", "captum", "dask", "xarray", "torchvision", "scipy", "pandas", "matplotlib")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import json, sys\n{code}\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_layers_command_loads_only_what_it_uses():
    # `geomxai layers cnn2` builds a model and lists its modules: none of these is needed, and
    # together they cost seconds of start-up (issue 26).
    loaded = _third_party_after("from geomxai.cli import main\nmain(['layers', 'cnn2'])")
    assert loaded == []


def test_lazy_packages_still_resolve_every_public_name():
    import geomxai.collect
    import geomxai.study

    for package in (geomxai.study, geomxai.collect):
        for name in package.__all__:
            assert getattr(package, name) is not None
        assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="did you mean 'analyze_model'"):
        _ = geomxai.study.analyze_modle


def _imported_modules(source: str) -> list[str]:
    """Every module (and ``module.name`` of ``from module import name``) a source imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def _private_geomxai(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "geomxai" and any(
        p.startswith("_") and not p.startswith("__") for p in parts[1:]
    )


def _code_of(path) -> list[str]:
    """A script's source, or a notebook's code cells (IPython magics and shell lines dropped)."""
    if path.suffix != ".ipynb":
        return [path.read_text()]
    cells = json.loads(path.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return [
        "\n".join(line for line in s.splitlines() if not line.lstrip().startswith(("%", "!")))
        for s in sources
    ]


def _warning_categories(source: str) -> list[str]:
    """Warning classes named in strings (``"ignore::geomxai.study.ProbeSizeWarning"`` in a
    ``filterwarnings`` mark or ini line): pytest imports them as an import statement would."""
    return [
        match
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for match in re.findall(r"::(geomxai(?:\.\w+)+)", node.value)
    ]


def _outside_files(root) -> list:
    """The code outside the package: tests, benchmarks, scripts, notebooks, analyses, conftest."""
    files = [
        p
        for folder in ("tests", "benchmarks", "scripts", "notebooks", "analyses")
        for p in sorted((root / folder).rglob("*"))
        if p.suffix in (".py", ".ipynb") and ".ipynb_checkpoints" not in p.parts
    ]
    return files + [p for p in [root / "conftest.py"] if p.is_file()]


def _embedded_code(source: str) -> list[str]:
    """Code held in string constants (a child process's ``python -c`` script): each string that
    parses as Python with an import in it, dedented. The child imports what it names as surely
    as the file would."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "import" not in node.value:
                continue
            try:
                ast.parse(textwrap.dedent(node.value))
            except SyntaxError:
                continue
            found.append(textwrap.dedent(node.value))
    return found


# The one file of tests that may reach inside the package: each name it gives the tests is
# listed there with why (a seam for a fault or a count, or a helper still tested on its own).
_INTERNALS = "tests/_internals.py"


def _private_imports(root) -> set[tuple[str, str]]:
    """Every (file, private geomxai module or name) that code outside the package imports:
    import statements, code strings run in child processes, warning categories in strings."""
    return {
        (p.relative_to(root).as_posix(), module)
        for p in _outside_files(root)
        for source in _code_of(p)
        for code in [source, *_embedded_code(source)]
        for module in _imported_modules(code) + _warning_categories(code)
        if _private_geomxai(module)
    }


def test_code_outside_the_package_imports_only_public_names():
    # Tests, benchmarks, scripts, notebooks and analyses use geomxai as a user would: a private
    # module (geomxai.x._y, geomxai._z) or name may change in any commit, a public one is kept;
    # a test of one package's private module is outside that package too (issue 22). What a
    # test truly needs from inside goes through tests/_internals.py, named with its reason.
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = _outside_files(root)
    assert any(p.suffix == ".ipynb" for p in files) and any(p.suffix == ".py" for p in files)
    assert any(p.parts[-2] == "tests" for p in files)
    found = _private_imports(root)
    assert sorted(f for f in found if f[0] != _INTERNALS) == []


def test_every_internal_a_test_uses_is_named_with_its_reason():
    # tests/_internals.py may only hold what a test uses, each name with why; one no test uses
    # any more leaves it.
    from pathlib import Path

    import _internals

    root = Path(__file__).resolve().parents[1]
    reasons = {**_internals.SEAMS, **_internals.HELPERS}
    assert sorted(_internals.__all__) == sorted(reasons)
    assert all(isinstance(why, str) and why for why in reasons.values())
    used = set()
    for p in _outside_files(root):
        if p.relative_to(root).as_posix() == _INTERNALS:
            continue
        for source in _code_of(p):
            for code in [source, *_embedded_code(source)]:
                for node in ast.walk(ast.parse(code)):
                    if isinstance(node, ast.ImportFrom) and node.module == "_internals":
                        used.update(a.name for a in node.names)
    assert sorted(set(reasons) - used) == []
    assert sorted(used - set(reasons)) == []


def test_the_scan_sees_private_imports():
    # The check above would pass on code it cannot read; this is what it must catch.
    source = (  # split where no piece parses, or the scan of code strings would match this file
        "import geomxai.whitening." + "_zca as z\nfrom geomxai.study._study import cpu_name\n"
        "from geomxai.train import _loop\nfrom geomxai import _fill\nimport geomxai.train\n"
        "from geomxai import __version__\n"
    )
    assert [m for m in _imported_modules(source) if _private_geomxai(m)] == [
        "geomxai.whitening._zca",
        "geomxai.study._study.cpu_name",
        "geomxai.train._loop",
        "geomxai._fill",
    ]
    private = "geomxai.study." + "_probe.ProbeSizeWarning"  # split, or this file would match
    marked = f'@pytest.mark.filterwarnings("ignore::{private}")\ndef test_x():\n    pass\n'
    assert _warning_categories(marked) == [private]
    assert _warning_categories('"ignore::geomxai.study.ProbeSizeWarning"') == [
        "geomxai.study.ProbeSizeWarning"
    ]
    # A child process's script, as tests write it (a dedented triple-quoted string).
    child = (
        'textwrap.dedent(\n    """\n    import sys\n    from geomxai.train.'
        + '_loop import x\n    """\n)\n'
    )
    assert [m for c in _embedded_code(child) for m in _imported_modules(c)] == [
        "sys",
        "geomxai.train." + "_loop.x",
    ]
    assert _embedded_code('"not code: import it"') == []


def _foreign_private(relative: str, module: str) -> bool:
    """Whether a module of the package at ``relative`` may not import ``module``: it may import
    the private modules of its own subpackage and the leaf modules ``geomxai._x``, no other."""
    parts = module.split(".")
    if parts[0] != "geomxai" or len(parts) < 3 or parts[1].startswith("_"):
        return False
    if not _private_geomxai(module):
        return False
    own = relative.split("/")[1] if relative.count("/") >= 2 else None
    return parts[1] != own


def test_no_module_imports_another_subpackages_private_module():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = [
        f"{p.relative_to(root).as_posix()} imports {module}"
        for p in sorted((root / "geomxai").rglob("*.py"))
        for module in _imported_modules(p.read_text())
        if _foreign_private(p.relative_to(root).as_posix(), module)
    ]
    assert found == []
    assert _foreign_private("geomxai/report/_tables.py", "geomxai.study._link.x")
    assert _foreign_private("geomxai/cli.py", "geomxai.train._loop")
    assert not _foreign_private("geomxai/study/_a.py", "geomxai.study._b.x")
    assert not _foreign_private("geomxai/study/_a.py", "geomxai._fs.write_bytes_atomic")
    assert not _foreign_private("geomxai/study/_a.py", "geomxai.collect.REDUCTIONS")


# ---- No import cycle in geomxai/ (issue 22): the graph of which module imports which, read
# with ast. A package that re-exports a name (eagerly or through its lazy table) stands for the
# module that defines it; the package's own __init__ running first is not an edge.


def _package_modules(root) -> dict[str, object]:
    """Every module of the package under ``root`` (``geomxai.study._runs``) and its path."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _reexports(modules: dict) -> dict[str, dict[str, str]]:
    """For each package, the module each of its re-exported names comes from."""
    found = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        table = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                table.update({a.asname or a.name: node.module for a in node.names})
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "attach"
                and len(node.args) == 2
            ):  # geomxai._lazy.attach(__name__, {"._module": [names]})
                for module, names in ast.literal_eval(node.args[1]).items():
                    table.update(
                        dict.fromkeys(names, name + module if module[0] == "." else module)
                    )
        found[name] = table
    return found


def _import_graph(root, *, deferred: bool = False) -> dict[str, set[str]]:
    """``{module: the geomxai modules it imports}``: module-level imports (those under ``if
    TYPE_CHECKING`` excluded); with ``deferred``, the imports inside functions too."""
    modules = _package_modules(root)
    reexports = _reexports(modules)

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def target(base: str, name: str) -> str | None:
        # ``from base import name``: a submodule, a name re-exported from another module
        # (followed through a package that re-exports a package's name), or base's own.
        if f"{base}.{name}" in modules:
            return f"{base}.{name}"
        source = reexports.get(base, {}).get(name)
        if source and source != base:
            return target(source, name) if source in reexports else owner(source)
        return owner(base)

    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        edges = set()
        for node in _import_nodes(tree.body, deferred=deferred):
            if isinstance(node, ast.Import):
                edges.update(owner(a.name) for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            edges.update(target(base, a.name) for a in node.names)
        graph[module] = {m for m in edges if m and m != module}
    return graph


def _import_nodes(body: list, *, deferred: bool):
    """The import statements of a block: those it runs when the module is imported (none
    under ``if TYPE_CHECKING``), and with ``deferred`` those inside functions too."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _import_nodes(node.orelse, deferred=deferred)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if deferred:
                yield from _import_nodes(node.body, deferred=deferred)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        else:
            for child in ("body", "orelse", "finalbody", "handlers", "cases"):
                block = getattr(node, child, None)
                if isinstance(block, list):
                    yield from _import_nodes(block, deferred=deferred)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


@pytest.mark.parametrize("deferred", [False, True], ids=["module-level", "with-deferred"])
def test_no_import_cycle_in_the_package(deferred):
    # Module level, a cycle is an import that fails or half-initialises a module depending on
    # which side is imported first. A deferred import (inside a function, to keep import cost
    # down) breaks no import, but the two modules are still one piece that names itself twice.
    from pathlib import Path

    graph = _import_graph(Path(geomxai.__file__).parent, deferred=deferred)
    assert "geomxai.study._runs" in graph and graph["geomxai.study._runs"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_sees_a_cycle(tmp_path):
    # The check above would pass on a graph it cannot read; this is what it must catch.
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg._a import f\n")
    (package / "_a.py").write_text("def f():\n    from pkg._b import g\n")
    (package / "_b.py").write_text(
        "from typing import TYPE_CHECKING\nfrom pkg import f\n"
        "if TYPE_CHECKING:\n    from pkg._c import h\n"
    )
    (package / "_c.py").write_text("from pkg._b import g\n")
    assert _cycle(_import_graph(package)) is None
    assert _import_graph(package)["pkg._b"] == {"pkg._a"}
    assert _cycle(_import_graph(package, deferred=True)) == ["pkg._a", "pkg._b", "pkg._a"]
