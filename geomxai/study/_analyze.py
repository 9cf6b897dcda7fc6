"""Analyse checkpoints: load, collect features, measure geometry and attribution, one Dataset."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from geomxai.data import dataset_tensors, load_dataset
from geomxai.models import FEATURE_LAYER
from geomxai.train._checkpoint import load_checkpoint

log = logging.getLogger(__name__)

CACHE_VERSION = 3


@dataclass(frozen=True)
class AnalysisOptions:
    """What to measure on every checkpoint. Part of the cache key.

    Attributes
    ----------
    probe_size : int
        The first ``probe_size`` test images form the fixed probe set.
    layers : tuple of str or None
        Layers whose geometry is measured; ``None`` = the model's feature layer.
    fractions : int
        Number of masked fractions, evenly spaced in [0, 1].
    saliency_method : str
        Method of :func:`geomxai.attribution.saliency` used for every saliency metric.
    fill : str
        Fill of the masking curves.
    top_k : int
        Eigenvectors tracked for axis swapping.
    n_examples : int
        Saliency maps kept per checkpoint for figures and the stability metric's probe.
    seed : int
        Seed of random-order masking and uniform fills.
    batch_size : int
        Batch size of every forward and backward pass.
    """

    probe_size: int = 512
    layers: tuple[str, ...] | None = None
    fractions: int = 11
    saliency_method: str = "abs_gradient"
    fill: str = "uniform"
    top_k: int = 16
    n_examples: int = 8
    seed: int = 0
    batch_size: int = 256
    entanglement: bool = True

    def __post_init__(self):
        if self.probe_size < 2:
            raise ValueError(f"probe_size must be at least 2; got probe_size={self.probe_size}")
        if self.fractions < 2:
            raise ValueError(f"fractions must be at least 2; got fractions={self.fractions}")
        if self.layers is not None and not isinstance(self.layers, tuple):
            object.__setattr__(self, "layers", tuple(self.layers))

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Probe:
    """The fixed probe set: images, labels and (for ``blocks``) ground-truth masks."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None
    dataset: str = ""
    extra: dict = field(default_factory=dict)


def make_probe(dataset: str, size: int, **dataset_options) -> Probe:
    """The first ``size`` test images of a dataset: the same images at every checkpoint."""
    bundle = load_dataset(dataset, **dataset_options)
    images, labels = dataset_tensors(bundle.test)
    n = min(size, len(labels))
    masks = None if bundle.test_masks is None else bundle.test_masks[:n].clone()
    # Copies, not views: a view pickles (and is scattered to every dask worker) with the whole
    # test set behind it.
    images = images[:n].to(torch.float32, copy=True)
    return Probe(images, labels[:n].to(torch.long, copy=True), masks, dataset)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _probe_digest(probe: Probe) -> str:
    """A digest of the probe's contents, so a cache entry never answers for other images."""
    h = hashlib.sha256()
    for t in (probe.images, probe.labels, probe.masks):
        if t is not None:
            t = t.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def _scalar(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def measure(model: torch.nn.Module, probe: Probe, options: AnalysisOptions) -> xr.Dataset:
    """Every geometry and attribution metric of one model on the probe set.

    Returns a Dataset without ``epoch``, ``regime`` or ``seed`` dims; :func:`analyze_run` adds them.
    Variables that cannot be computed are NaN and the reason is stored in the Dataset's attrs
    under ``nan_reason_<variable>``.
    """
    from geomxai.attribution import (
        gini,
        gradient_entanglement,
        masking_auc,
        masking_curve,
        saliency,
        topq_contrast,
    )
    from geomxai.collect import collect_features
    from geomxai.dynamics import top_eigvecs
    from geomxai.geometry import (
        correlation_spectrum,
        correlation_summary,
        effective_rank,
        participation_ratio,
    )

    model = model.eval()
    default = getattr(model, "feature_layer", None) or FEATURE_LAYER
    if options.layers is None and default not in dict(model.named_modules()):
        top = [name for name, _ in model.named_children()][:10]
        raise ValueError(
            f"{type(model).__name__} has no feature layer named {default!r} (geomxai's models "
            "have one); name the layers to measure with layers=[...] (--layers on the command "
            f"line). Top-level modules: {', '.join(top) or '(none)'}"
        )
    layers = list(options.layers or (default,))
    x, y = probe.images, probe.labels
    ds = xr.Dataset()
    reasons: dict[str, str] = {}

    # ---- geometry, per layer
    feats = collect_features(model, x, layers, batch_size=options.batch_size)
    layer_names = [v for v in feats.data_vars if v in layers] or list(feats.data_vars)
    geo: dict[str, list[float]] = {
        k: []
        for k in (
            "effective_rank",
            "participation_ratio",
            "mean_abs_corr",
            "corr_offdiag_fro",
            "spectrum_alpha",
            "spectrum_r2",
            "n_dead",
        )
    }
    spectra, eigvals, eigvecs = [], [], []
    for name in layer_names:
        h = feats[name]
        geo["effective_rank"].append(_scalar(effective_rank(h)))
        geo["participation_ratio"].append(_scalar(participation_ratio(h)))
        try:
            summary = correlation_summary(h)
            spectrum = correlation_spectrum(h)
            geo["mean_abs_corr"].append(summary["mean_abs_offdiag"])
            geo["corr_offdiag_fro"].append(summary["offdiag_fro"])
            geo["spectrum_alpha"].append(summary["alpha"])
            geo["spectrum_r2"].append(summary["alpha_r2"])
            geo["n_dead"].append(float(summary["n_dead"]))
            spectra.append(np.asarray(spectrum.values, dtype=float))
        except ValueError as err:  # fewer than 2 live units
            for k in ("mean_abs_corr", "corr_offdiag_fro", "spectrum_alpha", "spectrum_r2"):
                geo[k].append(math.nan)
                reasons[k] = str(err)
            geo["n_dead"].append(math.nan)
            spectra.append(np.array([]))
        k = min(options.top_k, h.shape[1])
        vals, vecs = top_eigvecs(h, k)
        eigvals.append(np.asarray(vals))
        eigvecs.append(np.asarray(vecs))
    for k, values in geo.items():
        ds[k] = xr.DataArray(np.asarray(values, dtype=float), dims="layer")
    # Spectra are padded to the layer's width, not the live-unit count, so checkpoints whose
    # number of dead units differs still line up along ``component`` (NaN past the live ones).
    width = max(int(feats[name].shape[1]) for name in layer_names)
    ds["corr_spectrum"] = xr.DataArray(
        np.stack([np.pad(s, (0, width - s.size), constant_values=np.nan) for s in spectra]),
        dims=("layer", "component"),
    )
    ds["corr_spectrum"].attrs["nan_reason"] = "components past the number of live units"
    kmax = max(v.shape[1] for v in eigvecs)
    dmax = max(v.shape[0] for v in eigvecs)
    ds["top_eigvals"] = xr.DataArray(
        np.stack([np.pad(v, (0, kmax - v.size), constant_values=np.nan) for v in eigvals]),
        dims=("layer", "axis"),
    )
    ds["top_eigvecs"] = xr.DataArray(
        np.stack(
            [
                np.pad(v, ((0, dmax - v.shape[0]), (0, kmax - v.shape[1])), constant_values=np.nan)
                for v in eigvecs
            ]
        ),
        dims=("layer", "unit", "axis"),
    )
    for name in ("top_eigvals", "top_eigvecs"):
        ds[name].attrs["nan_reason"] = "padding past a layer's width or its top_k axes"
    ds = ds.assign_coords(
        layer=layer_names,
        component=np.arange(1, width + 1),
        axis=np.arange(1, kmax + 1),
        unit=np.arange(dmax),
    )

    # ---- accuracy on the probe
    with torch.no_grad():
        logits = torch.cat([model(xb) for xb in x.split(options.batch_size)])
    ds["probe_acc"] = float((logits.argmax(1) == y).float().mean())

    # ---- saliency and its quality
    sal = saliency(model, x, y, method=options.saliency_method)
    fractions = np.linspace(0.0, 1.0, options.fractions)
    for order in ("morf", "lerf", "random"):
        curve = masking_curve(
            model,
            x,
            y,
            sal,
            fractions=fractions,
            order=order,
            fill=options.fill,
            batch_size=options.batch_size,
            seed=options.seed,
        )
        ds[f"{order}_curve"] = xr.DataArray(np.asarray(curve.values, float), dims="fraction")
        ds[f"{order}_auc"] = masking_auc(curve)
        ds[f"{order}_auc_paper"] = masking_auc(curve, scale="paper")
    ds["fidelity_gap"] = ds["lerf_auc"] - ds["morf_auc"]
    ds = ds.assign_coords(fraction=fractions)
    ds["topq_contrast"] = _scalar(np.nanmean(np.asarray(topq_contrast(sal))))
    ds["gini"] = _scalar(np.nanmean(np.asarray(gini(sal))))
    if probe.masks is not None:
        from geomxai.attribution import mask_auroc, mass_inside, pointing_game

        ds["mask_auroc"] = _scalar(np.nanmean(np.asarray(mask_auroc(sal, probe.masks))))
        ds["mass_inside"] = _scalar(np.nanmean(np.asarray(mass_inside(sal, probe.masks))))
        ds["pointing_game"] = _scalar(np.nanmean(np.asarray(pointing_game(sal, probe.masks))))
    if options.entanglement and FEATURE_LAYER in dict(model.named_modules()):
        ds["entanglement"] = _scalar(gradient_entanglement(model, x, y, layer=FEATURE_LAYER))
    else:
        ds["entanglement"] = math.nan
        reasons["entanglement"] = "the model has no feature layer named 'body'"
    n_ex = min(options.n_examples, len(y))
    ds["saliency_maps"] = xr.DataArray(
        sal[:n_ex].detach().cpu().numpy().astype(np.float32), dims=("example", "height", "width")
    )
    # All probe maps, for stability between consecutive checkpoints.
    ds["probe_saliency"] = xr.DataArray(
        sal.detach().cpu().numpy().astype(np.float32), dims=("sample", "height", "width")
    )
    ds.attrs.update({f"nan_reason_{k}": v for k, v in reasons.items()})
    return ds


def analyze_checkpoint(
    path, probe: Probe, options: AnalysisOptions, *, cache_dir=None
) -> xr.Dataset:
    """:func:`measure` on one checkpoint file, cached under ``cache_dir`` by content and options."""
    path = Path(path)
    cache = None
    if cache_dir is not None:
        key = hashlib.sha256(
            f"{_file_digest(path)}|{options.key()}|{_probe_digest(probe)}|v{CACHE_VERSION}".encode()
        ).hexdigest()[:24]
        cache = Path(cache_dir) / f"{path.stem}-{key}.nc"
        if cache.is_file():
            with xr.open_dataset(cache) as cached:
                return cached.load()
    model, config = load_checkpoint(path)
    ds = measure(model, probe, options)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        ds.to_netcdf(tmp, engine="h5netcdf")
        tmp.replace(cache)
    return ds


def _merge_reasons(tagged: list[tuple[str, dict]]) -> dict[str, str]:
    """The ``nan_reason_*`` attrs of several parts, one entry per variable.

    ``tagged`` pairs a label (``"epoch 3"``, ``"sgt-s0"``) with a part's attrs. One message shared
    by every part that has it is kept as it is; differing messages are each prefixed by their label.
    """
    found: dict[str, list[tuple[str, str]]] = {}
    for label, attrs in tagged:
        for key, message in attrs.items():
            if key.startswith("nan_reason_"):
                found.setdefault(key, []).append((label, str(message)))
    merged = {}
    for key, entries in found.items():
        messages = list(dict.fromkeys(m for _, m in entries))
        merged[key] = (
            messages[0] if len(messages) == 1 else "; ".join(f"{lb}: {m}" for lb, m in entries)
        )
    return merged


def _epoch_of(path: Path) -> int:
    return int(path.stem.split("_")[-1])


def checkpoints_of(run_dir) -> list[Path]:
    """The per-epoch checkpoints of a run directory, in epoch order."""
    run_dir = Path(run_dir)
    paths = sorted((run_dir / "checkpoints").glob("epoch_*.pt"), key=_epoch_of)
    if not paths:
        raise FileNotFoundError(
            f"no checkpoints under {str(run_dir / 'checkpoints')!r}; is {str(run_dir)!r} a run "
            "directory written by `geomxai train`?"
        )
    return paths


def read_metrics(run_dir) -> dict[int, dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {int(m["epoch"]): m for m in lines}


def add_dynamics(ds: xr.Dataset) -> xr.Dataset:
    """Axis swaps and saliency stability of each epoch against the previous one (NaN at the first)."""
    from geomxai.dynamics import axis_swaps, saliency_stability

    names = ("swap_rate", "matched_overlap", "subspace_overlap", "degenerate_swap_rate")
    out = {n: np.full((ds.sizes["epoch"], ds.sizes["layer"]), np.nan) for n in names}
    stability = np.full(ds.sizes["epoch"], np.nan)
    for t in range(1, ds.sizes["epoch"]):
        for j in range(ds.sizes["layer"]):
            a = ds["top_eigvecs"].isel(epoch=t - 1, layer=j)
            b = ds["top_eigvecs"].isel(epoch=t, layer=j)
            keep_units = np.isfinite(a.values).all(1)
            keep_axes = np.isfinite(a.values).all(0) & np.isfinite(b.values).all(0)
            va = a.values[keep_units][:, keep_axes]
            vb = b.values[keep_units][:, keep_axes]
            la = ds["top_eigvals"].isel(epoch=t - 1, layer=j).values[keep_axes]
            lb = ds["top_eigvals"].isel(epoch=t, layer=j).values[keep_axes]
            result = axis_swaps(va, vb, eigvals_a=la, eigvals_b=lb)
            for n in names:
                out[n][t, j] = float(result[n])
        sa = ds["probe_saliency"].isel(epoch=t - 1).values
        sb = ds["probe_saliency"].isel(epoch=t).values
        stability[t] = float(np.nanmean(np.asarray(saliency_stability(sa, sb))))
    for n in names:
        ds[n] = xr.DataArray(out[n], dims=("epoch", "layer"))
        ds[n].attrs["nan_reason"] = "no previous checkpoint at the first epoch"
    ds["saliency_stability"] = xr.DataArray(stability, dims="epoch")
    ds["saliency_stability"].attrs["nan_reason"] = "no previous checkpoint at the first epoch"
    return ds


def analyze_run(
    run_dir,
    *,
    options: AnalysisOptions | None = None,
    probe: Probe | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: bool = True,
    **option_overrides,
) -> xr.Dataset:
    """Every checkpoint of one run, measured on a fixed probe set, as one Dataset over ``epoch``.

    Parameters
    ----------
    run_dir : path-like
        A run directory written by :func:`geomxai.train.train`.
    options : AnalysisOptions, optional
        What to measure; keyword overrides (``probe_size=...``) are applied on top.
    probe : Probe, optional
        Defaults to the first ``probe_size`` test images of the run's dataset.
    workers, scheduler
        ``workers > 1`` or a scheduler address analyses checkpoints in parallel through dask.

    Returns
    -------
    xr.Dataset
        Dims ``epoch``, ``layer``, ``fraction``, ``component``, ... with ``test_acc`` and the
        training losses from ``metrics.jsonl``; the run's config as JSON in ``attrs["config"]``.
        Results of checkpoints already analysed with the same options are read from
        ``run_dir/analysis/`` instead of recomputed.
    """
    run_dir = Path(run_dir)
    options = options or AnalysisOptions()
    if option_overrides:
        options = AnalysisOptions(
            **{**asdict(options), **{k: v for k, v in option_overrides.items() if v is not None}}
        )
    paths = checkpoints_of(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    if probe is None:
        probe = make_probe(config["dataset"], options.probe_size)
    cache_dir = run_dir / "analysis"
    if workers > 1 or scheduler:
        from geomxai.study._parallel import map_checkpoints

        parts = map_checkpoints(
            paths, probe, options, cache_dir, workers=workers, scheduler=scheduler
        )
    else:
        parts = [
            analyze_checkpoint(p, probe, options, cache_dir=cache_dir)
            for p in tqdm(paths, desc=f"analyse {run_dir.name}", disable=not progress, unit="ckpt")
        ]
    epochs = [_epoch_of(p) for p in paths]
    # Each checkpoint's NaN reasons are kept: concat alone would keep only the first one's attrs.
    reasons = _merge_reasons(
        [(f"epoch {e}", part.attrs) for e, part in zip(epochs, parts, strict=True)]
    )
    ds = xr.concat(
        parts,
        dim="epoch",
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    ds.attrs = {}
    ds = ds.assign_coords(epoch=epochs)
    ds = add_dynamics(ds)
    metrics = read_metrics(run_dir)
    for key in ("test_acc", "train_acc", "loss_ce", "loss_kl", "loss_decor", "loss_total"):
        ds[key] = xr.DataArray([_scalar(metrics.get(e, {}).get(key)) for e in epochs], dims="epoch")
        missing = [e for e in epochs if not math.isfinite(_scalar(metrics.get(e, {}).get(key)))]
        if missing:
            ds[key].attrs["nan_reason"] = (
                "epoch 0 is the initial model, before any training step; " if missing == [0] else ""
            ) + f"metrics.jsonl has no finite {key} for epoch(s) {missing}"
    if 0 in epochs and math.isnan(float(ds["test_acc"].sel(epoch=0))):
        ds["test_acc"].attrs["nan_reason"] = (
            "epoch 0 is the initial model; its test accuracy is probe_acc"
        )
    ds.attrs.update(reasons)
    ds.attrs.update(
        {
            "config": json.dumps(config, sort_keys=True),
            "regime": config.get("regime", ""),
            "seed": int(config.get("seed", 0)),
            "dataset": config.get("dataset", ""),
            "analysis": options.key(),
            "run_dir": str(run_dir),
        }
    )
    return ds


def analyze_runs(run_dirs, **kwargs) -> xr.Dataset:
    """Several runs merged along ``regime`` and ``seed`` (from each run's config).

    Takes :func:`analyze_run`'s keyword arguments. With ``workers > 1`` and no scheduler, one
    local dask cluster serves every run, so its start-up is paid once.
    """
    run_dirs = list(run_dirs)
    if kwargs.get("workers", 1) > 1 and not kwargs.get("scheduler") and len(run_dirs) > 1:
        from geomxai.study._parallel import local_cluster

        with local_cluster(kwargs["workers"]) as address:
            return analyze_runs(run_dirs, **{**kwargs, "scheduler": address})
    runs = [analyze_run(r, **kwargs) for r in run_dirs]
    if not runs:
        raise ValueError("analyze_runs needs at least one run directory")
    tagged = []
    for ds in runs:
        attrs = dict(ds.attrs)
        ds = ds.drop_vars(["probe_saliency", "top_eigvecs"], errors="ignore")
        ds = ds.expand_dims(regime=[attrs["regime"]], seed=[attrs["seed"]])
        ds.attrs = {}
        tagged.append((attrs, ds))
    keys = [(a["regime"], a["seed"]) for a, _ in tagged]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two runs share a (regime, seed) pair: {keys}")
    # "drop_conflicts", not "drop": the latter also strips every variable's attrs (nan_reason).
    merged = xr.combine_by_coords(
        [ds for _, ds in tagged], join="outer", combine_attrs="drop_conflicts"
    )
    labels = [f"{a['regime']}-s{a['seed']}" for a, _ in tagged]
    merged.attrs.update(_merge_reasons(list(zip(labels, (a for a, _ in tagged), strict=True))))
    for name in merged.data_vars:
        # A variable's reason that differs between runs was dropped as a conflict: keep them all.
        per_run = [
            (label, {"nan_reason_": ds[name].attrs["nan_reason"]})
            for label, (_, ds) in zip(labels, tagged, strict=True)
            if name in ds and "nan_reason" in ds[name].attrs
        ]
        if per_run:
            merged[name].attrs["nan_reason"] = _merge_reasons(per_run)["nan_reason_"]
    if len({ds.sizes["epoch"] for _, ds in tagged}) > 1:
        merged.attrs["nan_reason_epochs"] = (
            "runs have different numbers of checkpoints; a run's values are NaN at epochs it "
            "does not have"
        )
    merged.attrs["configs"] = json.dumps(
        {f"{a['regime']}-s{a['seed']}": json.loads(a["config"]) for a, _ in tagged}, sort_keys=True
    )
    merged.attrs["dataset"] = tagged[0][0]["dataset"]
    merged.attrs["analysis"] = tagged[0][0]["analysis"]
    return merged
