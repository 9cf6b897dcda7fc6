"""Training on tables: masking of tabular features, the fills, and every regime end to end."""

from __future__ import annotations

import json

import pytest
import torch
from _internals import table_fill
from hypothesis import given, settings
from hypothesis import strategies as st

from geomxai.train import (
    REGIMES,
    ConfigError,
    TrainConfig,
    fill_values,
    low_saliency_mask,
    mask_low_saliency,
    train,
)


def _reference_mask(grad: torch.Tensor, ratio: float, by: str) -> torch.Tensor:
    """Slow and obvious: per row, sort the feature scores and take the first k."""
    n, d = grad.shape
    k = max(1, int(ratio * d))
    out = torch.zeros(n, d, dtype=torch.bool)
    for i in range(n):
        score = grad[i].abs() if by == "abs" else -grad[i]
        flat = score.tolist()
        for j in sorted(range(d), key=lambda j: flat[j])[:k]:
            out[i, j] = True
    return out


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    d=st.integers(1, 40),
    ratio=st.floats(0.01, 0.99),
    by=st.sampled_from(["abs", "signed"]),
    seed=st.integers(0, 2**16),
)
def test_tabular_mask_matches_reference(n, d, ratio, by, seed):
    # Distinct scores, |g| and -g alike, so the k lowest are one set whatever the tie rule.
    gen = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, (n, d), generator=gen) * 2 - 1
    g = (torch.randperm(n * d, generator=gen).view(n, d) + 1).float() * sign
    mask = low_saliency_mask(g, ratio=ratio, by=by)
    assert mask.shape == (n, d)
    assert torch.equal(mask, _reference_mask(g, ratio, by))
    assert (mask.sum(1) == max(1, int(ratio * d))).all()


def test_tabular_masking_replaces_the_lowest_gradient_features():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    g = torch.tensor([[0.1, -3.0, 0.0, 2.0], [4.0, 0.3, -0.2, 1.0]])
    out = mask_low_saliency(x, g, ratio=0.5, fill="zero")
    assert out.tolist() == [[0.0, 2.0, 0.0, 4.0], [5.0, 0.0, 0.0, 8.0]]
    assert x.tolist() == [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]  # not modified


def test_table_fills_are_per_feature_over_the_batch():
    x = torch.tensor([[0.0, 10.0, -1.0], [2.0, 30.0, 1.0], [4.0, 20.0, 0.0]])
    assert torch.equal(fill_values(x, fill="zero"), torch.zeros_like(x))
    assert fill_values(x, fill="mean").tolist() == [[2.0, 20.0, 0.0]] * 3
    v = fill_values(x, fill="uniform", generator=torch.Generator().manual_seed(0))
    assert ((v >= x.amin(0)) & (v <= x.amax(0))).all()
    # Seeded: the same generator state gives the same draws.
    w = fill_values(x, fill="uniform", generator=torch.Generator().manual_seed(0))
    assert torch.equal(v, w)


@pytest.mark.parametrize("fill", ["zero", "mean", "uniform"])
def test_a_row_fill_does_not_read_the_row(fill):
    """A row's fill depends on the batch's per-feature statistics only, never on the row alone
    (the per-row range of the image fill is what leaks the class of a table)."""
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    v = table_fill(x, fill, generator=torch.Generator().manual_seed(2))
    if fill != "uniform":  # every row gets the same values
        assert torch.equal(v, v[:1].expand_as(v))
    # Move one row that holds no feature's extreme to the middle of every range: the ranges
    # do not move, so neither do the uniform draws nor the zeros of any row, its own included.
    inside = ((x > x.amin(0)) & (x < x.amax(0))).all(1).nonzero()[0, 0]
    y = x.clone()
    y[inside] = (x.amin(0) + x.amax(0)) / 2
    u = table_fill(y, fill, generator=torch.Generator().manual_seed(2))
    if fill == "mean":
        torch.testing.assert_close(u - v, (y - x).mean(0).expand_as(v))
    else:
        assert torch.equal(u, v)


def test_table_fill_refuses():
    with pytest.raises(ValueError, match="blur"):
        table_fill(torch.zeros(2, 3), "blur")
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        table_fill(torch.zeros(2, 3, 4), "zero")


def _config(tmp_path, regime, **changes) -> TrainConfig:
    values = {
        "dataset": "wine",
        "model": "mlp",
        "regime": regime,
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.05,
        "momentum": 0.9,
        "group_size": 16,
        "mask_fill": "zero",
        "progress": False,
        "out_dir": str(tmp_path / regime),
    }
    return TrainConfig(**{**values, **changes})


@pytest.mark.parametrize("regime", REGIMES)
def test_every_regime_trains_a_table(tmp_path, regime):
    run = train(_config(tmp_path, regime))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    accs = [line["test_acc"] for line in lines if "test_acc" in line]
    assert len(accs) == 2
    # wine is easy: two epochs of an MLP on its standardised features are far above chance (0.40).
    assert accs[-1] > 0.8
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "mlp" and config["dataset"] == "wine"


def test_masking_step_sees_tabular_gradients(tmp_path, monkeypatch):
    """The saliency-masked batch is a table: (n, d) rows with the chosen fraction replaced."""
    from _internals import train_step as step

    seen = []
    original = step.mask_low_saliency

    def spy(x, grad, **kwargs):
        out = original(x, grad, **kwargs)
        seen.append((x, out))
        return out

    monkeypatch.setattr(step, "mask_low_saliency", spy)
    train(_config(tmp_path, "sgt", epochs=1, mask_ratio=0.25))
    x, out = seen[0]
    assert x.dim() == 2 and x.shape[1] == 13
    replaced = (out != x).sum(1)
    assert (replaced <= 3).all() and (out[out != x] == 0).all()  # int(0.25 * 13) = 3, zeros


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"model": "cnn2"}, "use model='mlp'"), ({"augment": True}, "augment=false")],
)
def test_tabular_refusals_name_the_fix(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        train(_config(tmp_path, "regular", **changes))
    assert not (tmp_path / "regular").exists()  # a refused config leaves no directory
