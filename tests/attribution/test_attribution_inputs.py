"""The attribution functions' input contract, one table for every function that runs the model.

Categories: non-finite pixels are refused; floating inputs of any dtype are cast to the model's
dtype; empty maps, gradients and NaN curves give a clear error rather than NaN or a numpy one.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from geomxai.attribution import (
    cascading_randomization,
    entanglement_from_gradients,
    fidelity_gap,
    gini,
    gradient_entanglement,
    mask_auroc,
    masking_auc,
    masking_curve,
    mass_inside,
    pointing_game,
    saliency,
    topq_contrast,
)

FRACTIONS = [0.0, 0.25, 0.5, 1.0]


def _maps(model, x, y):
    return saliency(model, x.float(), y)


# Every public function that runs the model on images: name -> call(model, x, y).
MODEL_CALLS = {
    "saliency": lambda m, x, y: saliency(m, x, y, batch_size=4),
    "saliency-smoothgrad": lambda m, x, y: saliency(m, x, y, method="smoothgrad", n_samples=3),
    "saliency-ig": lambda m, x, y: saliency(m, x, y, method="integrated_gradients", n_steps=4),
    "masking_curve": lambda m, x, y: masking_curve(
        m, x, y, _maps(m, x, y), fractions=FRACTIONS, batch_size=4
    ),
    "masking_curve-road": lambda m, x, y: masking_curve(
        m, x, y, _maps(m, x, y), fractions=FRACTIONS, fill="road"
    ),
    "gradient_entanglement": lambda m, x, y: gradient_entanglement(m, x, y, batch_size=4),
    "cascading_randomization": lambda m, x, y: cascading_randomization(m, x, y),
}


def _state(model: nn.Module):
    return (
        [m.training for m in model.modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


class TestNonFiniteInput:
    """NaN or inf pixels are refused before the model runs, with a count and what to do."""

    @pytest.mark.parametrize("call", list(MODEL_CALLS), ids=list(MODEL_CALLS))
    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    def test_a_bad_pixel_is_refused(self, call, bad, tiny_cnn, images, hooks_left):
        x, y = images
        x = x.clone()
        x[2, 1, 3, 4] = bad
        training, params = _state(tiny_cnn)
        message = r"x contains 1 NaN or infinite value\(s\) out of 768; .*drop the images"
        with pytest.raises(ValueError, match=message):
            MODEL_CALLS[call](tiny_cnn, x, y)
        assert hooks_left(tiny_cnn) == 0
        assert [m.training for m in tiny_cnn.modules()] == training
        for key, value in tiny_cnn.state_dict().items():
            torch.testing.assert_close(value, params[key])
        assert all(p.grad is None for p in tiny_cnn.parameters())

    def test_many_bad_pixels_are_counted(self, tiny_cnn, images):
        x, y = images
        x = x.clone()
        x[0] = float("nan")
        with pytest.raises(ValueError, match=r"contains 128 NaN or infinite value\(s\) out of 768"):
            saliency(tiny_cnn, x, y)

    def test_non_finite_saliency_maps_are_refused_by_the_curve(self, tiny_cnn, images):
        x, y = images
        maps = saliency(tiny_cnn, x, y)
        maps[1, 0, 0] = float("nan")
        with pytest.raises(ValueError, match=r"saliency contains 1 NaN or infinite value"):
            masking_curve(tiny_cnn, x, y, maps, fractions=FRACTIONS)


class TestInputDtype:
    """float16, bfloat16 and float64 images are cast to the model's parameter dtype."""

    @pytest.mark.parametrize("call", list(MODEL_CALLS), ids=list(MODEL_CALLS))
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_a_float32_model_takes_any_floating_images(self, call, dtype, tiny_cnn, images):
        x, y = images
        x = x.to(dtype)
        got = MODEL_CALLS[call](tiny_cnn, x, y)
        # The cast is exact for these values, so the result is that of the float32 images.
        expected = MODEL_CALLS[call](tiny_cnn, x.float(), y)
        if isinstance(got, torch.Tensor):
            assert got.dtype == torch.float32  # the dtype the gradients were taken in
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        elif isinstance(got, xr.DataArray):
            xr.testing.assert_identical(got, expected)
        else:
            assert got == expected

    def test_a_float64_model_takes_float32_images(self, tiny_cnn, images):
        x, y = images
        model = tiny_cnn.double()
        maps = saliency(model, x, y)
        assert maps.dtype == torch.float64
        torch.testing.assert_close(maps, saliency(model, x.double(), y))
        curve = masking_curve(model, x, y, maps, fractions=FRACTIONS)
        xr.testing.assert_identical(
            curve, masking_curve(model, x.double(), y, maps, fractions=FRACTIONS)
        )
        assert gradient_entanglement(model, x, y) == gradient_entanglement(model, x.double(), y)

    @pytest.mark.parametrize("call", ["saliency", "masking_curve", "gradient_entanglement"])
    def test_integer_images_are_refused_with_the_fix(self, call, tiny_cnn, images):
        x, y = images
        pixels = (x * 255).to(torch.uint8)
        with pytest.raises(ValueError, match=re.escape("x.float() / 255")):
            MODEL_CALLS[call](tiny_cnn, pixels, y)


class TestEmptyInput:
    """Empty maps and gradients, and NaN curve values: a clear error, never NaN or numpy's."""

    GAPS = {
        "gini": lambda s, m: gini(s),
        "topq_contrast": lambda s, m: topq_contrast(s),
        "mask_auroc": mask_auroc,
        "mass_inside": mass_inside,
        "pointing_game": pointing_game,
    }

    @pytest.mark.parametrize("metric", list(GAPS), ids=list(GAPS))
    @pytest.mark.parametrize("shape", [(0, 4, 4), (3, 0, 0), (3, 0, 5)])
    def test_empty_maps_are_refused(self, metric, shape):
        s, m = np.zeros(shape), np.zeros(shape, dtype=bool)
        with pytest.raises(ValueError, match=re.escape("at least one map of at least one pixel")):
            self.GAPS[metric](s, m)

    @pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0, 0)])
    def test_empty_gradients_are_refused(self, shape):
        with pytest.raises(ValueError, match="at least one sample and one unit"):
            entanglement_from_gradients(np.zeros(shape), np.eye(shape[1]))

    def test_gradients_without_pairs_are_still_undefined_not_an_error(self):
        # Not empty: every sample has a gradient, but none spans two units (documented NaN).
        assert np.isnan(entanglement_from_gradients(np.eye(3)[:2] * 0.0, np.eye(3)))

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_nan_curve_values_are_refused_by_the_area(self, bad):
        curve = xr.DataArray([1.0, bad, 0.2], dims="fraction", coords={"fraction": [0.0, 0.5, 1.0]})
        with pytest.raises(
            ValueError, match=r"curve values contains 1 NaN .*\.dropna\('fraction'\)"
        ):
            masking_auc(curve)
        nan_fraction = curve.fillna(0.5).assign_coords(fraction=[0.0, np.nan, 1.0])
        with pytest.raises(ValueError, match="fractions must lie in"):
            masking_auc(nan_fraction)

    def test_nan_curve_values_are_refused_by_the_gap_naming_the_curve(self):
        fr = {"fraction": [0.0, 0.5, 1.0]}
        good = xr.DataArray([1.0, 0.8, 0.6], dims="fraction", coords=fr)
        bad = xr.DataArray([1.0, np.nan, 0.1], dims="fraction", coords=fr)
        with pytest.raises(ValueError, match="morf_curve values contains 1 NaN"):
            fidelity_gap(good, bad)
        with pytest.raises(ValueError, match="lerf_curve values contains 1 NaN"):
            fidelity_gap(bad, good)
