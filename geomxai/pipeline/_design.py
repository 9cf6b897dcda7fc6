"""A study design: one TOML file, parsed and validated once, before any work.

A design names the data and model (the ``[train]`` table: :class:`~geomxai.train.TrainConfig`
fields shared by every run), the cells (``[[cells]]``: a name and the fields it changes), the
seeds, the probe and what to measure (``[analysis]``), and the statistics wanted
(``[statistics]``: paired contrasts against named baselines, the 2x2 factorial, dose-responses
over named fields, the run-level link, power with the differences it sizes for). Everything is
checked here, so a typo in the last table stops the study before the first run trains.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from geomxai._checks import Interval
from geomxai._design_keys import (
    CHECKPOINT_POLICIES,
    DESIGN_STUDY_KEYS,
    KEEP_POLICIES,
    PROFILE_STUDY_KEYS,
)
from geomxai._fs import check_nonempty_path, check_path_component
from geomxai._hints import close_matches, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Cell",
    "Design",
    "DesignError",
    "DoseSpec",
    "StatisticsSpec",
    "find_design",
    "load_design",
]

DESIGN_TABLES = ("study", "train", "cells", "analysis", "statistics", "paper")
"""The top-level tables a design file may have."""


FACTORIAL_POSITIONS = ("regular", "sgt", "dbn", "saliencydecor")
"""The 2x2 design's positions (masking x whitening), in :data:`geomxai.stats.FACTORIAL_CELLS`
order; a design maps each to one of its cells."""

log = logging.getLogger(__name__)

_MAX_DESIGN_BYTES = 1 << 20  # a design is a few kB; /dev/zero or a data file is refused early


class DesignError(ValueError):
    """A design file that cannot run; the message names the file, the table and the fix."""


@dataclass(frozen=True)
class Cell:
    """One trained configuration: a name and the :class:`TrainConfig` fields it changes."""

    name: str
    overrides: Mapping[str, Any]

    @property
    def regime(self) -> str:
        return str(self.overrides.get("regime", "regular"))


@dataclass(frozen=True)
class DoseSpec:
    """A dose-response: the cells along which one field varies (the others held)."""

    field: str
    cells: tuple[str, ...]


@dataclass(frozen=True)
class StatisticsSpec:
    """What the statistics stage computes, and how a claim is called."""

    confidence: float = 0.95
    alpha: float = 0.05
    correction: str = "bh"
    treatment: str | None = None
    baselines: tuple[str, ...] = ()
    factorial: Mapping[str, str] | None = None
    doses: tuple[DoseSpec, ...] = ()
    accuracy: tuple[str, ...] = ("test_acc",)
    fidelity: tuple[str, ...] | None = None
    geometry: tuple[str, ...] | None = None
    dynamics: tuple[str, ...] = ()
    link: bool = True
    link_control: str | None = "test_acc"
    link_n_boot: int = 2000
    within_cell: bool = True
    within_run: bool = True
    within_run_n_boot: int = 1000
    power_contrasts: tuple[str, ...] = ()
    power_metrics: tuple[str, ...] = ()
    power_stated: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    power_source: str = ""


@dataclass(frozen=True)
class Design:
    """A parsed, validated study design (see :func:`load_design`)."""

    name: str
    title: str
    source: str
    train: Mapping[str, Any]
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    runs_dir: Path
    out_dir: Path
    analysis: Mapping[str, Any]
    checkpoints: str = "all"
    keep: str = "all"
    control: bool = False
    keep_checkpoint: bool = False
    probe_size: int = 512
    statistics: StatisticsSpec = field(default_factory=StatisticsSpec)
    fallback_dataset: str | None = None
    paper: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    # -- the plan ---------------------------------------------------------------------------
    def cell(self, name: str) -> Cell:
        for c in self.cells:
            if c.name == name:
                return c
        raise KeyError(
            f"no cell {name!r} in design {self.name!r}" + did_you_mean(name, self.cell_names)
        )

    @property
    def cell_names(self) -> list[str]:
        return [c.name for c in self.cells]

    def plan(self, seeds: Sequence[int] | None = None) -> list[tuple[Cell, int]]:
        """Every (cell, seed) of the design, seed-major: every cell at the first seed, then
        every cell at the next, so a study cut short covers every cell with fewer seeds.
        ``seeds`` must be seeds of the design."""
        if seeds is not None:
            unknown = [s for s in seeds if s not in self.seeds]
            if unknown:
                raise ValueError(
                    f"--seeds must be seeds of the design ({list(self.seeds)}); got {unknown}"
                )
        return [(c, s) for s in (self.seeds if seeds is None else seeds) for c in self.cells]

    def config(self, cell: Cell | str, seed: int):
        """The :class:`~geomxai.train.TrainConfig` of one run (validated)."""
        from geomxai.train import TrainConfig

        cell = self.cell(cell) if isinstance(cell, str) else cell
        values = {**self.train, **cell.overrides, "seed": int(seed), "progress": False}
        return TrainConfig.from_dict(values)

    @property
    def varied(self) -> list[str]:
        """The training fields some cell changes (``regime`` first): the runs' coordinates."""
        names = {k for c in self.cells for k in c.overrides}
        return ["regime", *sorted(names - {"regime"})]

    def to_dict(self) -> dict[str, Any]:
        """The design as plain data (JSON-able), as stored in a results file's attrs."""
        out = dataclasses.asdict(self)
        out["runs_dir"], out["out_dir"] = str(self.runs_dir), str(self.out_dir)
        return json.loads(json.dumps(out, default=_plain))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def spread_epochs(epochs: Sequence[int]) -> list[int]:
    """About six checkpoints spread over training (roughly doubling gaps, where the curves move
    most) plus the last two, so the final swap rate and saliency stability compare adjacent
    checkpoints.

    >>> spread_epochs(list(range(16)))
    [1, 2, 4, 7, 11, 14, 15]
    >>> spread_epochs([0, 1, 2])
    [1, 2]
    """
    last = max(epochs)
    keep = {e for e in (1, 2, 4, 7, 11) if e < last - 1} | {max(last - 1, 1), last}
    return sorted(e for e in keep if e in epochs)


# -- finding and reading -----------------------------------------------------------------------


def _config_folders() -> list[Path]:
    return [Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs"]


def find_design(design) -> Path:
    """A design's path: a path to a TOML file, or a name under ``configs/`` (next to the working
    directory or the source tree)."""
    text = str(design)
    candidates = [Path(text)]
    if not text.endswith(".toml"):
        candidates += [folder / f"{text}.toml" for folder in _config_folders()]
    for path in candidates:
        if path.is_file():
            return path
        if path.exists():
            raise DesignError(f"{path}: not a regular file; a design is a TOML file")
    known = sorted({p.stem for f in _config_folders() if f.is_dir() for p in f.glob("*.toml")})
    close = close_matches(Path(text).stem, known)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise DesignError(
        f"no study design {text!r}{hint}: give a path to a TOML file or one of "
        f"{', '.join(known) or '(none found)'} under configs/"
    )


def _read(path: Path) -> dict:
    if not path.is_file():
        raise DesignError(f"{path}: not a file; a design is a TOML file")
    if path.stat().st_size > _MAX_DESIGN_BYTES:
        raise DesignError(
            f"{path}: {path.stat().st_size} bytes; a design is a small TOML file (under 1 MiB)"
        )
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise DesignError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError:
        raise DesignError(f"{path}: not a UTF-8 text file; a design is a TOML file") from None


class _Table:
    """One table of a design file, read key by key with errors that name file, table and key."""

    def __init__(self, path: Path, name: str, raw, known: Sequence[str] | None = None):
        self.path, self.name = path, name
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            self.fail(None, f"must be a table; got {type(raw).__name__}")
        self.raw = dict(raw)
        if known is not None:
            for key in self.raw:
                if key not in known:
                    self.fail(
                        key,
                        "is not a known key"
                        + did_you_mean(key, known)
                        + f"; known: {', '.join(known)}",
                    )

    def fail(self, key, message: str):
        where = f"[{self.name}]" + (f" {key}" if key is not None else "")
        raise DesignError(f"{self.path}: {where} {message}")

    def get(self, key, default=None):
        return self.raw.get(key, default)

    def string(self, key, default=None, *, choices: Sequence[str] | None = None) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string; got {value!r}")
        if choices is not None and value not in choices:
            self.fail(
                key,
                f"must be one of {', '.join(choices)}; got {value!r}"
                + did_you_mean(value, choices),
            )
        return value

    def boolean(self, key, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false; got {value!r}")
        return value

    def integer(self, key, default: int, *, low: int = 0) -> int:
        value = self.raw.get(key, default)
        if not Interval(Integral, low, None).accepts(value):
            self.fail(key, f"must be an integer >= {low}; got {value!r}")
        return value

    def fraction(self, key, default: float) -> float:
        value = self.raw.get(key, default)
        if not Interval(Real, 0, 1, closed="neither").accepts(value):
            self.fail(key, f"must be a number in (0, 1); got {value!r}")
        return float(value)

    def strings(self, key, default=None) -> tuple[str, ...] | None:
        value = self.raw.get(key, default)
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            self.fail(key, f"must be a list of strings; got {value!r}")
        if not all(isinstance(v, str) and v for v in value):
            self.fail(key, f"must be a list of non-empty strings; got {value!r}")
        return tuple(value)


def _seeds(study: _Table) -> tuple[int, ...]:
    seeds = study.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(Interval(Integral, 0, 2**32 - 1).accepts(s) for s in seeds)
    ):
        study.fail("seeds", f"must be a non-empty list of integers in [0, 2**32); got {seeds!r}")
    if len(set(seeds)) < len(seeds):
        study.fail("seeds", f"must not repeat a seed; got {seeds!r}")
    return tuple(seeds)


def _cells(path: Path, raw, train: Mapping[str, Any]) -> tuple[Cell, ...]:
    from geomxai.train import TrainConfig

    if raw is None:
        raw = [{"name": r, "regime": r} for r in FACTORIAL_POSITIONS]
    if not isinstance(raw, list) or not raw or not all(isinstance(c, Mapping) for c in raw):
        raise DesignError(
            f"{path}: [[cells]] must be a list of tables, each with a name and the training "
            'fields it changes (e.g. [[cells]] name = "sgt" regime = "sgt")'
        )
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed", "out_dir", "resume"}
    cells, seen = [], set()
    for i, entry in enumerate(raw):
        table = _Table(path, f"cells {i + 1}", entry)
        name = table.string("name")
        if name is None:
            table.fail("name", "is missing: every cell has a name (its runs are <name>-s<seed>)")
        try:
            check_path_component(name, f"cell name {name!r}")
        except ValueError as err:
            table.fail("name", str(err))
        if name in seen:
            table.fail("name", f"{name!r} names two cells; cell names must be unique")
        seen.add(name)
        overrides = {k: v for k, v in entry.items() if k != "name"}
        for key in overrides:
            if key not in known:
                table.fail(
                    key, "is not a training field a cell may change" + did_you_mean(key, known)
                )
        cells.append(Cell(name, dict(overrides)))
        try:
            TrainConfig.from_dict({**train, **overrides, "progress": False})
        except (TypeError, ValueError) as err:
            table.fail(None, f"cell {name!r} is not a valid training configuration: {err}")
    return tuple(cells)


def _train(path: Path, raw) -> dict[str, Any]:
    from geomxai.train import TrainConfig

    table = _Table(path, "train", raw)
    values = dict(table.raw)
    for key in ("seed", "out_dir", "resume"):
        if key in values:
            table.fail(key, "is set by the study for each run; remove it from the design")
    try:
        TrainConfig.from_dict({**values, "progress": False})
    except (TypeError, ValueError) as err:
        table.fail(None, f"is not a valid training configuration: {err}")
    return values


def _analysis(path: Path, raw) -> tuple[dict[str, Any], dict[str, Any]]:
    from geomxai.study import AnalysisOptions

    table = _Table(path, "analysis", raw)
    own = {
        "checkpoints": table.string("checkpoints", "all", choices=CHECKPOINT_POLICIES),
        "keep": table.string("keep", "all", choices=KEEP_POLICIES),
        "control": table.boolean("control", False),
        "keep_checkpoint": table.boolean("keep_checkpoint", False),
    }
    options = {k: v for k, v in table.raw.items() if k not in own}
    known = [f.name for f in dataclasses.fields(AnalysisOptions)]
    for key in options:
        if key not in known:
            table.fail(
                key,
                "is not an analysis option"
                + did_you_mean(key, [*known, *own])
                + f"; known: {', '.join([*known, *own])}",
            )
    try:
        opts = AnalysisOptions(**options)
    except (TypeError, ValueError) as err:
        table.fail(None, f"is not a valid set of analysis options: {err}")
    own["probe_size"] = opts.probe_size
    return options, own


def _cell_refs(table: _Table, key: str, names: Sequence[str], cells: Sequence[str]) -> None:
    for n in names:
        if n not in cells:
            table.fail(
                key,
                f"names no cell of the design: {n!r}"
                + did_you_mean(n, cells)
                + f"; cells: {', '.join(cells)}",
            )


_STATISTICS_KEYS = (
    "confidence",
    "alpha",
    "correction",
    "treatment",
    "baselines",
    "factorial",
    "dose",
    "accuracy",
    "fidelity",
    "geometry",
    "dynamics",
    "link",
    "within_run",
    "power",
)


def _statistics(path: Path, raw, cells: tuple[Cell, ...]) -> StatisticsSpec:
    from geomxai.stats import CORRECTIONS, EFFECTS

    table = _Table(path, "statistics", raw, _STATISTICS_KEYS)
    names = [c.name for c in cells]
    values: dict[str, Any] = {
        "confidence": table.fraction("confidence", 0.95),
        "alpha": table.fraction("alpha", 0.05),
        "correction": table.string("correction", "bh", choices=tuple(CORRECTIONS)),
    }
    treatment = table.string("treatment")
    baselines = table.strings("baselines", []) or ()
    if baselines and treatment is None:
        table.fail("treatment", "is missing: baselines are compared with the treatment cell")
    _cell_refs(table, "treatment", [treatment] if treatment else [], names)
    _cell_refs(table, "baselines", baselines, names)
    values.update(treatment=treatment, baselines=tuple(b for b in baselines if b != treatment))
    factorial = table.get("factorial")
    if factorial is not None:
        ft = _Table(path, "statistics.factorial", factorial, FACTORIAL_POSITIONS)
        missing = [p for p in FACTORIAL_POSITIONS if p not in ft.raw]
        if missing:
            ft.fail(
                None, f"must map every position of the 2x2 to a cell; missing {', '.join(missing)}"
            )
        _cell_refs(ft, "cells", [ft.string(p) for p in FACTORIAL_POSITIONS], names)
        values["factorial"] = {p: ft.raw[p] for p in FACTORIAL_POSITIONS}
    doses = table.get("dose", [])
    if isinstance(doses, Mapping):
        doses = [doses]
    if not isinstance(doses, list):
        table.fail("dose", "must be a table or a list of tables ([[statistics.dose]])")
    specs = []
    for i, d in enumerate(doses):
        dt = _Table(path, f"statistics.dose {i + 1}", d, ("field", "cells"))
        fname = dt.string("field")
        dcells = dt.strings("cells")
        if fname is None or not dcells or len(dcells) < 2:
            dt.fail(None, "needs a field and at least two cells along it")
        _cell_refs(dt, "cells", dcells, names)
        regimes = {cells[names.index(c)].regime for c in dcells}
        if len(regimes) > 1:
            dt.fail("cells", f"must share one regime (only {fname} varies); got {sorted(regimes)}")
        specs.append(DoseSpec(fname, dcells))
    values["doses"] = tuple(specs)
    for key in ("accuracy", "fidelity", "geometry", "dynamics"):
        got = table.strings(key)
        if got is not None:
            values[key] = got
    link = table.get("link", True)
    if isinstance(link, bool):
        values["link"] = link
    else:
        lt = _Table(path, "statistics.link", link, ("control", "n_boot", "within_cell"))
        values["link"] = True
        values["link_control"] = lt.string("control", "test_acc")
        values["link_n_boot"] = lt.integer("n_boot", 2000, low=100)
        values["within_cell"] = lt.boolean("within_cell", True)
    within = table.get("within_run", True)
    if isinstance(within, bool):
        values["within_run"] = within
    else:
        wt = _Table(path, "statistics.within_run", within, ("n_boot",))
        values["within_run"] = True
        values["within_run_n_boot"] = wt.integer("n_boot", 1000, low=100)
    power = table.get("power")
    if power is not None:
        pt = _Table(path, "statistics.power", power, ("contrasts", "metrics", "stated", "source"))
        contrasts = pt.strings("contrasts", []) or ()
        for c in contrasts:
            parts = c.split("-", 1) if c not in EFFECTS else []
            if c in EFFECTS:
                if values.get("factorial") is None:
                    pt.fail("contrasts", f"{c!r} needs a [statistics.factorial] table")
                continue
            # a contrast is "<cell>-<cell>"; cell names may hold "-", so try every split
            if not any(
                c[:i] in names and c[i + 1 :] in names for i in range(len(c)) if c[i] == "-"
            ):
                pt.fail(
                    "contrasts",
                    f"{c!r} is neither an effect ({', '.join(EFFECTS)}) nor '<cell>-<cell>'",
                )
            del parts
        stated = pt.get("stated", {})
        st = _Table(path, "statistics.power.stated", stated)
        clean: dict[str, dict[str, float]] = {}
        for metric, per in st.raw.items():
            inner = _Table(path, f"statistics.power.stated.{metric}", per)
            for contrast, value in inner.raw.items():
                if contrast not in contrasts:
                    inner.fail(
                        contrast, f"is not one of the power contrasts ({', '.join(contrasts)})"
                    )
                if not Interval(Real, None, None).accepts(value):
                    inner.fail(contrast, f"must be a finite number; got {value!r}")
                clean.setdefault(metric, {})[contrast] = float(value)
        values.update(
            power_contrasts=tuple(contrasts),
            power_metrics=pt.strings("metrics", []) or (),
            power_stated=clean,
            power_source=pt.string("source", "") or "",
        )
    return StatisticsSpec(**values)


def _paper(path: Path, raw, cells: tuple[Cell, ...]) -> dict:
    """``[paper.NAME]`` tables: numbers a design cites, each with its metric, the scale that
    turns the paper's unit into geomxai's (the paper's value is divided by it) and its source,
    and a value per cell."""
    table = _Table(path, "paper", raw)
    names = [c.name for c in cells]
    out = {}
    for key, entry in table.raw.items():
        t = _Table(path, f"paper.{key}", entry, ("metric", "scale", "source", "values"))
        metric = t.string("metric")
        if metric is None:
            t.fail("metric", "is missing: the geomxai metric the paper's numbers are of")
        scale = t.get("scale", 1.0)
        if not Interval(Real, 0, None, closed="neither").accepts(scale):
            t.fail("scale", f"must be a positive number; got {scale!r}")
        values = _Table(path, f"paper.{key}.values", t.get("values"))
        _cell_refs(values, "values", list(values.raw), names)
        for cell, v in values.raw.items():
            if not Interval(Real, None, None).accepts(v):
                values.fail(cell, f"must be a finite number; got {v!r}")
        out[key] = {
            "metric": metric,
            "scale": float(scale),
            "source": t.string("source", "") or "",
            "values": {c: float(v) for c, v in values.raw.items()},
        }
    return out


def _from_profile(path: Path, raw: dict) -> dict:
    """A profile of the layout before designs (training fields at the top level, ``[study]
    regimes``) read as the design it means: one cell per regime, every checkpoint analysed,
    the regimes compared with saliencydecor. Said in a warning, with the fix."""
    if "train" in raw or "cells" in raw:
        return raw
    top = {k: v for k, v in raw.items() if not isinstance(v, Mapping)}
    study = raw.get("study", {})
    if not top and not (isinstance(study, Mapping) and "regimes" in study):
        return raw
    log.warning(
        "%s has the profile layout of older geomxai (training fields at the top level); it is "
        "read as a design with one cell per regime. Write it as a design ([train], [[cells]], "
        "[statistics]; docs/study.md) to choose its cells and statistics",
        path,
    )
    out = {k: v for k, v in raw.items() if isinstance(v, Mapping) and k != "study"}
    out["train"] = {k: v for k, v in top.items() if k not in ("seed", "out_dir", "resume")}
    regimes = ["regular", "sgt", "dbn", "saliencydecor"]
    new_study = {}
    if isinstance(study, Mapping):
        for key in study:
            if key not in PROFILE_STUDY_KEYS:
                raise DesignError(
                    f"{path}: [study] {key} is not a known key"
                    + did_you_mean(key, PROFILE_STUDY_KEYS)
                    + f"; known: {', '.join(PROFILE_STUDY_KEYS)}"
                )
        regimes = study.get("regimes", regimes)
        new_study = {k: v for k, v in study.items() if k != "regimes"}
    elif study:
        raise DesignError(f"{path}: [study] must be a table; got {type(study).__name__}")
    if not isinstance(regimes, list) or not all(isinstance(r, str) for r in regimes):
        raise DesignError(
            f"{path}: [study] regimes must be a list of regime names; got {regimes!r}"
        )
    out["study"] = new_study
    out["cells"] = [{"name": r, "regime": r} for r in regimes]
    analysis = dict(out.get("analysis", {}))
    analysis.setdefault("checkpoints", "all")
    analysis.setdefault("keep", "all")
    out["analysis"] = analysis
    if "statistics" not in out and "saliencydecor" in regimes and len(regimes) > 1:
        stats_table: dict = {
            "treatment": "saliencydecor",
            "baselines": [r for r in regimes if r != "saliencydecor"],
        }
        if set(FACTORIAL_POSITIONS) <= set(regimes):
            stats_table["factorial"] = {r: r for r in FACTORIAL_POSITIONS}
        out["statistics"] = stats_table
    return out


def load_design(design, *, out_dir=None, runs_dir=None, overrides=None) -> Design:
    """Read and validate a design file (every table, before any work).

    Parameters
    ----------
    design : str or path-like
        A TOML file, or the name of one under ``configs/``.
    out_dir, runs_dir : path-like, optional
        Override the design's ``[study] out`` (per-run results, ``results.nc`` and the report)
        and ``[study] runs`` (run directories with checkpoints).
    overrides : mapping, optional
        Training fields set on top of the ``[train]`` table (``geomxai study --set KEY=VALUE``).

    Returns
    -------
    Design

    Raises
    ------
    DesignError
        Anything that would stop the study later: an unknown table or key, a cell that is not a
        valid training configuration, statistics naming a cell the design lacks. The message
        names the file, the table and the key.
    """
    path = find_design(design)
    raw = _from_profile(path, _read(path))
    if "train" in raw and not isinstance(raw["train"], Mapping):
        _Table(path, "train", raw["train"])  # names the key and its type
    for key in raw:
        if key not in DESIGN_TABLES and not isinstance(raw[key], Mapping):
            raise DesignError(
                f"{path}: {key} is set at the top level, outside any table; a design keeps "
                "training fields in [train] (and an older profile has no [train] table)"
            )
        if key not in DESIGN_TABLES:
            raise DesignError(
                f"{path}: unknown table [{key}]"
                + did_you_mean(key, DESIGN_TABLES)
                + f"; a design has {', '.join(DESIGN_TABLES)}"
            )
    study = _Table(
        path,
        "study",
        raw.get("study"),
        DESIGN_STUDY_KEYS,
    )
    name = study.string("name", path.stem)
    try:
        check_path_component(name, f"the [study] name of {path.name}")
    except ValueError as err:
        raise DesignError(f"{path}: {err}") from None
    train_raw = raw.get("train") or {}
    if overrides:
        if not isinstance(train_raw, Mapping):
            train_raw = {}
        train_raw = {**train_raw, **dict(overrides)}
    train = _train(path, train_raw)
    cells = _cells(path, raw.get("cells"), train)
    analysis, own = _analysis(path, raw.get("analysis"))
    statistics = _statistics(path, raw.get("statistics"), cells)
    paper = _paper(path, raw.get("paper"), cells)
    for key in ("runs", "out"):  # every path a design holds
        try:
            check_nonempty_path(study.string(key, "."), f"[study] {key}")
        except ValueError as err:
            raise DesignError(f"{path}: {err}") from None
    runs = Path(runs_dir) if runs_dir is not None else Path(study.string("runs", f"runs/{name}"))
    out = Path(out_dir) if out_dir is not None else Path(study.string("out", f"reports/{name}"))
    return Design(
        name=name,
        title=study.string("title", name),
        description=study.string("description") or "",
        source=str(path),
        train=train,
        cells=cells,
        seeds=_seeds(study),
        runs_dir=runs,
        out_dir=out,
        analysis=analysis,
        statistics=statistics,
        fallback_dataset=study.string("fallback_dataset"),
        paper=dict(paper),
        **own,
    )
