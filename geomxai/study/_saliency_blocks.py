"""The blocks of :func:`~geomxai.study.measure` computed from the saliency maps: masking
fidelity, RISE's deletion and insertion curves, saliency quality, localisation against
ground-truth masks, and the example maps."""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr

from geomxai.study._nan import _scalar, _with_reason
from geomxai.study._options import AnalysisOptions
from geomxai.study._probe import Probe


def _masking_block(
    model,
    probe: Probe,
    sal: torch.Tensor,
    options: AnalysisOptions,
    *,
    fill: str | None = None,
    random_curves: dict | None = None,
) -> xr.Dataset:
    """MoRF, LeRF and random-order masking curves of the saliency maps, their areas, the gap.

    ``fill`` (default ``options.fill``) replaces masked positions. The random-order curve does
    not depend on the maps' values, only their shape: with ``random_curves`` (fill -> curve)
    it is computed once per fill and reused."""
    from geomxai.attribution import masking_auc, masking_curve

    fill = options.fill if fill is None else fill
    fractions = np.linspace(0.0, 1.0, options.fractions)
    ds = xr.Dataset(coords={"fraction": fractions})
    for order in ("morf", "lerf", "random"):
        if order == "random" and random_curves is not None and fill in random_curves:
            curve = random_curves[fill]
        else:
            curve = masking_curve(
                model,
                probe.images,
                probe.labels,
                sal,
                fractions=fractions,
                order=order,
                fill=fill,
                batch_size=options.batch_size,
                seed=options.seed,
            )
        if order == "random" and random_curves is not None:
            random_curves[fill] = curve
        ds[f"{order}_curve"] = ("fraction", np.asarray(curve.values, float))
        ds[f"{order}_auc"] = float(masking_auc(curve))
        ds[f"{order}_auc_paper"] = float(masking_auc(curve, scale="paper"))
    ds["fidelity_gap"] = ds["lerf_auc"] - ds["morf_auc"]
    return ds


def _faithfulness_block(
    model, probe: Probe, sal: torch.Tensor, options: AnalysisOptions
) -> xr.Dataset:
    """RISE's deletion and insertion curves of the target's softmax probability: the probe
    means over ``fraction``, the mean areas, and each sample's area (over ``sample``)."""
    from geomxai.attribution import deletion_curve, insertion_curve

    fractions = np.linspace(0.0, 1.0, options.fractions)
    ds = xr.Dataset(coords={"fraction": fractions})
    why = "the target's probability is not finite for any probe sample"
    for mode, curve_of in (("deletion", deletion_curve), ("insertion", insertion_curve)):
        # The fills are RISE's (zero for deletion; a blur, or the mean, to insert into), not
        # options.fill: these curves follow the reference they are compared with.
        curves = curve_of(
            model,
            probe.images,
            probe.labels,
            sal,
            fractions=fractions,
            batch_size=options.batch_size,
            seed=options.seed,
        )
        probability = np.asarray(curves["probability"].values, dtype=float)
        mean_curve = (
            np.nanmean(probability, axis=0)
            if np.isfinite(probability).any(axis=0).all()
            else np.full(fractions.size, np.nan)
        )
        ds[f"{mode}_curve"] = _with_reason(xr.DataArray(mean_curve, dims="fraction"), why)
        per_sample = np.asarray(curves["auc"].values, dtype=float)
        ds[f"{mode}_auc"] = _sample_mean(per_sample, f"{mode}_auc", why)
        ds[f"{mode}_auc_per_sample"] = _with_reason(xr.DataArray(per_sample, dims="sample"), why)
    return ds


def _sample_mean(per_sample, name: str, why: str) -> xr.DataArray:
    """The mean over probe samples of a per-sample metric (NaN samples skipped)."""
    values = np.asarray(per_sample, dtype=float)
    mean = _scalar(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return _with_reason(xr.DataArray(mean), f"{name} is NaN for every probe sample ({why})")


def _saliency_block(sal: torch.Tensor) -> xr.Dataset:
    """Saliency quality without ground truth: top-q contrast and Gini, averaged over the probe."""
    from geomxai.attribution import gini, topq_contrast

    return xr.Dataset(
        {
            "topq_contrast": _sample_mean(topq_contrast(sal), "topq_contrast", "all-zero maps"),
            "gini": _sample_mean(gini(sal), "gini", "all-zero maps"),
        }
    )


def _localisation_block(sal: torch.Tensor, masks: torch.Tensor | None) -> xr.Dataset:
    """Saliency against ground-truth masks; empty for data without masks."""
    if masks is None:
        return xr.Dataset()
    from geomxai.attribution import mask_auroc, mass_inside, pointing_game

    why = "all-zero maps, or masks that are all foreground or all background"
    return xr.Dataset(
        {
            "mask_auroc": _sample_mean(mask_auroc(sal, masks), "mask_auroc", why),
            "mass_inside": _sample_mean(mass_inside(sal, masks), "mass_inside", why),
            "pointing_game": _sample_mean(pointing_game(sal, masks), "pointing_game", why),
        }
    )


def _examples_block(sal: torch.Tensor, options: AnalysisOptions) -> xr.Dataset:
    """A few saliency maps for figures, and every probe map for the stability metric.

    Per-step (n, t) and per-feature (n, d) maps are stored as one row, (n, 1, t) or (n, 1, d),
    so every input kind shares the schema's ``(height, width)`` dims.
    """
    maps = sal.detach().cpu().numpy().astype(np.float32)
    if maps.ndim == 2:
        maps = maps[:, None, :]
    n_ex = min(options.n_examples, len(maps))
    return xr.Dataset(
        {
            "saliency_maps": (("example", "height", "width"), maps[:n_ex].copy()),
            "probe_saliency": (("sample", "height", "width"), maps),
        }
    )
