"""Loss terms and one step of each regime against a slow, written-out reference."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from geomxai.train import (
    TrainConfig,
    TrainForward,
    build_from_spec,
    kl_consistency,
    mask_low_saliency,
    model_spec,
    train_step,
)
from geomxai.whitening import GroupWhitening, decorrelation_loss


def _model(config: TrainConfig, *, name_image=8):
    spec = model_spec(config, in_channels=1, num_classes=4, image_size=name_image)
    torch.manual_seed(0)
    return build_from_spec(spec)


def _batch(n=24, size=8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 4, (n,), generator=g)


def _config(regime, **kw):
    return TrainConfig(regime=regime, group_size=8, dataset="digits", **kw)


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _step(model, config, x, y, seed=5):
    params = list(model.parameters())
    terms = train_step(
        TrainForward(model),
        model,
        x,
        y,
        config=config,
        params=params,
        generator=torch.Generator().manual_seed(seed),
    )
    return dict(zip(["ce", "kl", "decor", "total", "correct"], terms.tolist(), strict=True))


def _eval_gradient(model, x, y):
    """dCE/dx of a copy of the model in eval mode (running statistics)."""
    frozen = copy.deepcopy(model).eval()
    x = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(F.cross_entropy(frozen(x), y), x)
    return gx


def _reference(model, config, x, y, seed=5):
    """The objective written out directly from design.md, one term at a time."""
    # The eval-mode masking gradient sees the running statistics as they were before this
    # batch's training-mode forward updates them (as the reference computes it first).
    eval_gx = _eval_gradient(model, x, y)
    x = x.clone().requires_grad_(True)
    logits, feats, _ = model.forward_all(x)
    ce = F.cross_entropy(logits, y)
    terms = {"ce": ce, "kl": torch.zeros(()), "decor": torch.zeros(())}
    if config.uses_masking:
        if config.mask_gradient_mode == "train":
            (gx,) = torch.autograd.grad(ce, x, retain_graph=True)
        else:
            gx = eval_gx
        xm = mask_low_saliency(
            x.detach(),
            gx,
            ratio=config.mask_ratio,
            by=config.mask_by,
            fill=config.mask_fill,
            generator=torch.Generator().manual_seed(seed),
        )
        logits_m, feats_m, _ = model.forward_all(xm)
        p = F.softmax(logits, dim=1)
        if config.detach_clean:
            p = p.detach()
        kl = (p * (p.log() - F.log_softmax(logits_m, dim=1))).sum(1).mean()
        terms["kl"] = kl
        if config.uses_decorrelation:
            h = feats_m if config.detach_clean else feats
            terms["decor"] = decorrelation_loss(h, group_size=config.group_size)
    total = ce + config.kl_weight * terms["kl"] + config.decor_weight * terms["decor"]
    model.zero_grad()
    total.backward()
    terms["total"] = total
    return {k: float(v.detach()) for k, v in terms.items()}


@pytest.mark.parametrize(
    ("regime", "detach", "mode"),
    [
        ("regular", False, "eval"),
        ("dbn", False, "eval"),
        ("sgt", False, "eval"),
        ("sgt", True, "eval"),
        ("sgt", False, "train"),
        ("sgt", True, "train"),
        ("saliencydecor", False, "eval"),
        ("saliencydecor", True, "eval"),
        ("saliencydecor", False, "train"),
        ("saliencydecor", True, "train"),
    ],
)
def test_step_matches_the_written_out_objective(regime, detach, mode):
    # A large decor_weight makes a wrong decorrelation gradient visible in the comparison.
    config = _config(
        regime, detach_clean=detach, decor_weight=0.5, kl_weight=2.0, mask_gradient_mode=mode
    )
    model = _model(config)
    ref_model = copy.deepcopy(model)
    x, y = _batch()
    got = _step(model, config, x, y)
    want = _reference(ref_model, config, x, y)
    for key in ("ce", "kl", "decor", "total"):
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
    for a, b in zip(_grads(model), _grads(ref_model), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert got["correct"] == float((model(x).argmax(1) == y).sum())
    assert (got["kl"] > 0) == config.uses_masking
    assert (got["decor"] > 0) == config.uses_decorrelation
    assert isinstance(model.whiten, GroupWhitening) == config.uses_whitening


@pytest.mark.parametrize("kind", ["covariance", "whitened"])
def test_other_decorrelation_kinds_run(kind):
    config = _config("saliencydecor", decor_kind=kind)
    model = _model(config)
    terms = _step(model, config, *_batch())
    assert terms["decor"] > 0 and all(p.grad is not None for p in model.parameters())


def test_masked_forward_leaves_running_statistics_to_the_clean_batch():
    config = _config("saliencydecor")
    model = _model(config)
    clean_only = copy.deepcopy(model)
    x, y = _batch()
    _step(model, config, x, y)
    clean_only.forward_all(x)  # one training-mode forward of the clean batch
    for name, buf in model.named_buffers():
        torch.testing.assert_close(buf, dict(clean_only.named_buffers())[name], msg=name)
    assert int(model.whiten.num_batches_tracked) == 1


@pytest.mark.parametrize("detach", [False, True])
def test_batchnorm_models_step_and_keep_clean_running_statistics(detach):
    from torch import nn

    from geomxai.models import FeatureModel

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    model = FeatureModel(body, feature_dim=4 * 64, num_classes=4)
    clean_only = copy.deepcopy(model)
    config = _config("sgt", detach_clean=detach)
    x, y = _batch()
    terms = _step(model, config, x, y)
    assert terms["kl"] > 0
    clean_only(x)
    for name, buf in model.named_buffers():
        torch.testing.assert_close(buf, dict(clean_only.named_buffers())[name], msg=name)


def test_frozen_running_stats_restores_buffers_of_every_dtype():
    """Buffers are saved and restored per (dtype, device) group with _foreach ops."""
    from torch import nn

    from geomxai.train import frozen_running_stats

    module = nn.Module()
    module.register_buffer("mask", torch.tensor([True, False]))
    module.register_buffer("count", torch.tensor(3))
    module.register_buffer("fp16", torch.ones(2, dtype=torch.float16))
    module.register_buffer("stats", torch.arange(4.0))
    before = {k: v.clone() for k, v in module.named_buffers()}
    with frozen_running_stats(module):
        module.mask.logical_not_()
        module.count.add_(1)
        module.fp16.mul_(3)
        module.stats.zero_()
    for name, buf in module.named_buffers():
        assert buf.dtype == before[name].dtype and torch.equal(buf, before[name]), name


def test_vit_aux_placement_whitens_for_the_loss_only():
    config = TrainConfig(regime="saliencydecor", model="vit_micro", group_size=8, dataset="digits")
    model = _model(config)
    assert not model.whiten_in_path and isinstance(model.whiten, GroupWhitening)
    x, y = _batch(n=16)
    terms = _step(model, config, x, y)
    assert terms["decor"] > 0 and terms["kl"] > 0
    # Whitened features were computed (running statistics moved) ...
    assert int(model.whiten.num_batches_tracked) == 1
    # ... but the logits never depend on the whitening.
    model.eval()
    before = model(x)
    model.whiten.running_cov.mul_(3.0)
    torch.testing.assert_close(model(x), before)


def test_kl_direction_and_value():
    clean = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    masked = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    p, q = F.softmax(clean, 1), F.softmax(masked, 1)
    want = (p * (p / q).log()).sum(1).mean()
    torch.testing.assert_close(kl_consistency(clean, masked), want)
    reverse = (q * (q / p).log()).sum(1).mean()
    assert not torch.allclose(kl_consistency(clean, masked), reverse)
    assert float(kl_consistency(clean, clean)) == pytest.approx(0.0, abs=1e-7)


def test_detach_clean_stops_the_gradient_to_the_clean_logits():
    clean = torch.randn(4, 3, requires_grad=True)
    masked = torch.randn(4, 3, requires_grad=True)
    kl_consistency(clean, masked, detach_clean=True).backward()
    assert clean.grad is None and masked.grad is not None
    clean2 = clean.detach().clone().requires_grad_(True)
    kl_consistency(clean2, masked.detach()).backward()
    assert clean2.grad is not None and clean2.grad.abs().sum() > 0


def test_train_forward_is_forward_all_in_float32():
    config = _config("saliencydecor")
    model = _model(config)
    x, _ = _batch(n=8)
    a = TrainForward(model)(x)
    model2 = copy.deepcopy(model)
    model.whiten.num_batches_tracked.zero_()
    b = model2.forward_all(x)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_masking_gradient_is_that_of_the_cross_entropy_only(monkeypatch, mode):
    """The input gradient handed to the mask is dCE/dx of the clean batch, attached or detached,
    in the model's eval mode (the default, as the reference) or its training mode."""
    from _internals import train_step as step_module

    seen = []
    original = step_module.mask_low_saliency

    def spy(x, grad, **kw):
        seen.append(grad.clone())
        return original(x, grad, **kw)

    monkeypatch.setattr(step_module, "mask_low_saliency", spy)
    x, y = _batch()
    for detach in (False, True):
        config = _config(
            "saliencydecor", detach_clean=detach, decor_weight=1.0, mask_gradient_mode=mode
        )
        model = _model(config)
        # Running statistics away from their initial identity, so eval and train mode differ.
        with torch.no_grad():
            model.forward_all(x * 3 + 1)
        ref = copy.deepcopy(model)
        _step(model, config, x, y)
        assert model.training
        if mode == "eval":
            gx = _eval_gradient(ref, x, y)
        else:
            xr = x.clone().requires_grad_(True)
            (gx,) = torch.autograd.grad(F.cross_entropy(ref(xr), y), xr)
        torch.testing.assert_close(seen[-1], gx)
        other = _eval_gradient(ref, x, y) if mode == "train" else None
        if other is not None:
            assert not torch.allclose(seen[-1], other)


def test_eval_mode_masking_gradient_does_not_couple_the_batch():
    """In eval mode an image's masking gradient is its own: the same with or without the rest
    of the batch (in training mode the batch whitening couples them)."""
    from geomxai.train import eval_input_gradient

    config = _config("saliencydecor")
    model = _model(config)
    x, y = _batch()
    with torch.no_grad():
        model.forward_all(x)
    whole = eval_input_gradient(model, x, y)
    half = eval_input_gradient(model, x[:12], y[:12])
    # CE is a batch mean: half the batch doubles each image's gradient, and changes nothing else.
    torch.testing.assert_close(whole[:12] * 2, half)
    assert model.training
