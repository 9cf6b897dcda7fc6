"""The study pipeline: train every regime of a profile, analyse every checkpoint, write the report.

This is the one place that strings the parts together (config -> :mod:`geomxai.train` -> run
directories -> :mod:`geomxai.study` -> ``results.nc`` -> :mod:`geomxai.report`). It sits above
them, beside the CLI, so none of the parts imports the one after it: ``study`` reads run
directories and writes results, ``report`` reads results, and only this module knows all three.
``geomxai study`` calls :func:`run_study`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import xarray as xr

from geomxai._fs import check_nonempty_path, check_path_component
from geomxai._hints import close_matches
from geomxai._lock import DirectoryLock
from geomxai.data import DatasetNotFoundError, load_dataset
from geomxai.report import build_report
from geomxai.study import (
    AnalysisOptions,
    Probe,
    analyze_runs,
    linked,
    make_probe,
    save_results,
)
from geomxai.train import TrainConfig, parse_override, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["STUDY_DEFAULTS", "find_profile", "run_study"]

log = logging.getLogger(__name__)

STUDY_DEFAULTS = {
    "name": None,
    "regimes": ["regular", "sgt", "dbn", "saliencydecor"],
    "seeds": [0],
    # None: a missing dataset stops the study. quick.toml sets "digits", so `make study` runs on
    # any machine; a paper profile silently trained on 8x8 digits would mislead.
    "fallback_dataset": None,
}
"""The ``[study]`` table of a profile, where the profile does not set a key."""


def find_profile(profile: str) -> Path:
    """``configs/NAME.toml`` next to the working directory or the source tree, or a path."""
    candidates = [Path(profile)]
    if not profile.endswith(".toml"):
        for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
            candidates.append(base / "configs" / f"{profile}.toml")
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(c) for c in candidates)
    bases = {Path.cwd() / "configs", Path(__file__).resolve().parents[1] / "configs"}
    known = sorted({p.stem for base in bases if base.is_dir() for p in base.glob("*.toml")})
    close = close_matches(Path(profile).stem, known)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise FileNotFoundError(
        f"no study profile {profile!r}{hint}. Profiles: {', '.join(known) or '(none found)'} "
        f"(or give a path to a TOML file); looked at {looked}"
    )


def run_study(
    profile: str = "quick",
    *,
    overrides=None,
    runs_root="runs",
    reports_root="reports",
    workers: int = 1,
) -> Path:
    """Train the profile's regimes and seeds, analyse every checkpoint, write the report.

    Parameters
    ----------
    profile : str
        A profile name (``configs/NAME.toml``) or a path to a TOML file: the train fields at its
        top level, ``[study]`` (regimes, seeds, name, fallback_dataset) and ``[analysis]``
        (:class:`~geomxai.study.AnalysisOptions` fields).
    overrides : list of str, optional
        ``KEY=VALUE`` train-field overrides, as ``geomxai study --set``.
    runs_root, reports_root : path-like
        Run directories go to ``runs_root/NAME/<regime>-s<seed>/``; results and the report to
        ``reports_root/NAME/``.
    workers : int
        Dask workers for the analysis (1 = serial).

    Returns
    -------
    Path
        The report's ``index.html``.

    Raises
    ------
    ValueError
        The study name is not one folder name (``../x``, ``a/b``, empty, ``.``), or a root is
        an empty path: names never reach outside ``runs_root`` and ``reports_root``.
    geomxai._lock.DirectoryLockedError
        Another process runs the same study (``runs_root/NAME`` is locked), or trains one of
        its runs; the message names it.
    """
    runs_root = check_nonempty_path(runs_root, "runs_root (--runs)")
    reports_root = check_nonempty_path(reports_root, "reports_root (--reports)")
    path = find_profile(profile)
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    study = {**STUDY_DEFAULTS, **raw.get("study", {})}
    name = check_path_component(
        path.stem if study["name"] is None else study["name"], f"the [study] name of {path.name}"
    )
    analysis = AnalysisOptions(**raw.get("analysis", {}))
    base = TrainConfig.from_toml(path, dict(parse_override(o) for o in overrides or []))
    note = None
    try:
        load_dataset(base.dataset)
    except DatasetNotFoundError as err:
        fallback = study["fallback_dataset"]
        if not fallback:
            raise DatasetNotFoundError(
                f"{err} (profile {path.name} sets no [study] fallback_dataset, so the study stops "
                "rather than run on other data)"
            ) from err
        note = (
            f"{base.dataset} is not installed here; this study ran on {fallback!r} instead. ({err})"
        )
        log.warning("%s is not available; falling back to %s", base.dataset, fallback)
        base = base.replace(dataset=fallback, train_subset=None, test_subset=None)
    # One study of this name at a time: a second one would train, analyse and report into the
    # same folders. Each run's own lock (taken by train) also refuses a lone `geomxai train`.
    with DirectoryLock(
        runs_root / name,
        what="study",
        hint="wait for that study to finish or stop it, or give this one another [study] name",
    ):
        run_dirs = []
        for regime in study["regimes"]:
            for seed in study["seeds"]:
                config = base.replace(regime=regime, seed=seed)  # checks both before any path
                out = runs_root / name / f"{config.regime}-s{config.seed}"
                config = config.replace(out_dir=str(out), resume=(out / "checkpoints").is_dir())
                log.info("training %s seed %d -> %s", regime, seed, out)
                run_dirs.append(train(config))
        probe: Probe = make_probe(base.dataset, analysis.probe_size)
        results = analyze_runs(run_dirs, options=analysis, probe=probe, workers=workers)
        results = linked(results, study=name, note=note, profile=str(path))
        n_ex = int(results.sizes.get("example", 0))
        results["probe_images"] = xr.DataArray(
            probe.images[:n_ex].numpy(), dims=("example", "channel", "height", "width")
        )
        results.attrs["analysis_options"] = analysis.key()  # already JSON
        out_dir = reports_root / name
        save_results(results, out_dir / "results.nc")
        return build_report(results, out_dir)
