"""The study: train every regime, analyse every checkpoint, write results and the report."""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
import xarray as xr

from geomxai.data import DatasetNotFoundError, load_dataset
from geomxai.models import MODELS
from geomxai.study._analyze import AnalysisOptions, Probe, analyze_runs, make_probe, measure
from geomxai.study._link import link_geometry_fidelity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

STUDY_DEFAULTS = {
    "name": None,
    "regimes": ["regular", "sgt", "dbn", "saliencydecor"],
    "seeds": [0],
    # None: a missing dataset stops the study. quick.toml sets "digits", so `make study` runs on
    # any machine; a paper profile silently trained on 8x8 digits would mislead.
    "fallback_dataset": None,
}


def find_profile(profile: str) -> Path:
    """``configs/NAME.toml`` next to the working directory or the source tree, or a path."""
    candidates = [Path(profile)]
    if not profile.endswith(".toml"):
        for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
            candidates.append(base / "configs" / f"{profile}.toml")
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no study profile {profile!r}; looked at {looked}")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """A one-line description of the machine, for reports."""
    text = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stamp(ds: xr.Dataset, **extra) -> xr.Dataset:
    """Date, hardware and commit in a results Dataset's attrs."""
    ds.attrs.update(
        {
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "hardware": hardware(),
            "commit": commit(),
            **{k: v for k, v in extra.items() if v is not None},
        }
    )
    return ds


def linked(results: xr.Dataset, **attrs) -> xr.Dataset:
    """Results of several runs with their geometry <-> fidelity link, stamped.

    The link travels in the results file, so the report and any later reader see the same
    numbers; its variables have their own dims (geometry, fidelity). It covers trained
    checkpoints only: the untrained epoch-0 models would dominate the ranks.
    """
    link = link_geometry_fidelity(results, min_epoch=1)
    return stamp(results.merge(link, combine_attrs="override"), **attrs)


def save_results(ds: xr.Dataset, path) -> Path:
    """Write results to netCDF (h5netcdf) atomically: a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_netcdf(tmp, engine="h5netcdf")
    tmp.replace(path)
    return path


def open_results(paths, *, parallel: bool = False) -> xr.Dataset:
    """Open one or many results files lazily (dask-backed ``open_mfdataset``)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    return xr.open_mfdataset(
        [str(p) for p in paths], engine="h5netcdf", combine="by_coords", parallel=parallel
    )


def analyze_model(
    model: str,
    data: str,
    *,
    weights=None,
    layers=None,
    probe_size: int = 512,
    options: AnalysisOptions | None = None,
) -> xr.Dataset:
    """Analyse any model (a checkpoint, ``torchvision:ARCH``, or a geomxai name) on a dataset.

    The result has the same layout as :func:`analyze_runs` with one regime (the model's name),
    seed 0 and epoch 0, so reports and notebooks read it the same way. The dynamics (axis swaps,
    saliency stability) compare consecutive checkpoints, so they are absent here.
    """
    from geomxai.study._sources import resolve_model

    bundle = load_dataset(data)
    c, h, _ = bundle.input_shape
    net = resolve_model(
        model, weights=weights, num_classes=bundle.num_classes, in_channels=c, image_size=h
    )
    options = options or AnalysisOptions(
        probe_size=probe_size, layers=tuple(layers) if layers else None
    )
    probe = make_probe(data, options.probe_size)
    ds = measure(net, probe, options).drop_vars(["probe_saliency", "top_eigvecs"], errors="ignore")
    ds = ds.expand_dims(regime=[model], seed=[0], epoch=[0])
    if weights:
        source = str(weights)
    elif model.startswith("torchvision:") or model in MODELS:
        source = "random init"
    else:
        source = "the checkpoint's own"
    return stamp(ds, dataset=data, model=model, weights=source)


def run_study(
    profile: str = "quick",
    *,
    overrides=None,
    runs_root="runs",
    reports_root="reports",
    workers: int = 1,
) -> Path:
    """Train the profile's regimes and seeds, analyse every checkpoint, write the report.

    Returns the path of the report's ``index.html``.
    """
    from geomxai.report import build_report
    from geomxai.train import TrainConfig, parse_override, train

    path = find_profile(profile)
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    study = {**STUDY_DEFAULTS, **raw.get("study", {})}
    name = study["name"] or path.stem
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
    run_dirs = []
    for regime in study["regimes"]:
        for seed in study["seeds"]:
            out = Path(runs_root) / name / f"{regime}-s{seed}"
            config = base.replace(
                regime=regime, seed=seed, out_dir=str(out), resume=(out / "checkpoints").is_dir()
            )
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
    out_dir = Path(reports_root) / name
    save_results(results, out_dir / "results.nc")
    return build_report(results, out_dir)
