"""The models of the answer across settings (issue 25): cnn_gap, the CIFAR ResNet-20 family and
the width-64 micro ViT. Each builds, has the declared feature layer and traits, and trains one
step in each regime."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geomxai.models import FEATURE_LAYER, MODEL_TRAITS, ModelTraits, build_model, model_traits
from geomxai.train import StaticStep, TrainConfig, TrainForward, build_from_spec, model_spec

WIDTHS = {"cnn_gap": 128, "resnet20": 64, "resnet20_w8": 32, "vit_micro_w64": 64}
REGIMES = ("regular", "sgt", "dbn", "saliencydecor")


@pytest.mark.parametrize("name", sorted(WIDTHS))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_builds_with_the_declared_feature_layer(seed, name, channels, size):
    model = build_model(name, in_channels=channels, num_classes=7, image_size=size).eval()
    x = torch.randn(3, channels, size, size)
    logits, features, whitened = model.forward_all(x)
    assert logits.shape == (3, 7)
    assert features.shape == (3, WIDTHS[name]) and model.feature_dim == WIDTHS[name]
    assert torch.equal(features, whitened)
    assert dict(model.named_modules())[FEATURE_LAYER] is model.body
    torch.testing.assert_close(model(x), logits)


@pytest.mark.parametrize(
    ("name", "traits"),
    [
        ("cnn_gap", ModelTraits()),
        ("resnet20", ModelTraits()),
        ("resnet20_w8", ModelTraits()),
        ("vit_micro_w64", ModelTraits(is_sequence_model=True, whiten_in_path=False)),
    ],
)
def test_traits_are_declared_like_their_family(name, traits):
    assert model_traits(name) == traits
    model = build_model(name, in_channels=1, num_classes=10, image_size=28)
    assert model.is_sequence_model == traits.is_sequence_model
    assert model.whiten_in_path == traits.whiten_in_path
    assert model_traits("vit_micro_w64") is MODEL_TRAITS["vit_micro"]


def test_cnn_gap_features_are_the_spatial_mean_of_its_last_stage(seed):
    model = build_model("cnn_gap", in_channels=1, num_classes=10, image_size=28).eval()
    relus = [m for m in model.body if isinstance(m, nn.ReLU)]
    assert len(relus) == 3
    seen = {}
    handle = relus[-1].register_forward_hook(lambda m, i, o: seen.update(out=o))
    try:
        features = model.body(torch.rand(4, 1, 28, 28))
    finally:
        handle.remove()
    assert seen["out"].shape == (4, 128, 7, 7)  # two 2x2 max-pools: 28 -> 7
    torch.testing.assert_close(features, seen["out"].mean(dim=(2, 3)))


@pytest.mark.parametrize(("name", "width"), [("resnet20", 16), ("resnet20_w8", 8)])
def test_resnet20_has_19_convolutions_of_widths_w_2w_4w(name, width):
    body = build_model(name, in_channels=1, num_classes=10, image_size=28).body
    convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19  # 19 conv layers + the linear head = ResNet-20
    assert sorted({c.out_channels for c in convs}) == [width, 2 * width, 4 * width]
    assert not [m for m in body.modules() if isinstance(m, nn.Linear)]
    seen = {}
    handle = body.layer3.register_forward_hook(lambda m, i, o: seen.update(out=o))
    try:
        body.eval()(torch.rand(2, 1, 28, 28))
    finally:
        handle.remove()
    assert seen["out"].shape == (2, 4 * width, 7, 7)  # stride-2 stages: 28 -> 14 -> 7


def test_resnet20_shortcut_is_parameter_free_where_the_shape_changes():
    body = build_model("resnet20_w8", in_channels=1, num_classes=10, image_size=28).body
    block = body.layer2[0]
    x = torch.rand(2, 8, 14, 14)
    short = block._shortcut(x)
    assert short.shape == (2, 16, 7, 7)
    torch.testing.assert_close(short[:, :8], x[:, :, ::2, ::2])
    assert torch.count_nonzero(short[:, 8:]) == 0


def test_vit_micro_w64_patches_blocks_and_cls_feature(seed):
    model = build_model("vit_micro_w64", in_channels=1, num_classes=10, image_size=28).eval()
    vit = model.body.vit
    assert (vit.patch_size, len(vit.encoder.layers), vit.hidden_dim) == (7, 4, 64)
    assert (
        build_model(
            "vit_micro_w64", in_channels=3, num_classes=10, image_size=32
        ).body.vit.patch_size
        == 4
    )
    seen = {}
    handle = vit.encoder.register_forward_hook(lambda m, i, o: seen.update(out=o))
    try:
        features = model.body(torch.rand(2, 1, 28, 28))
    finally:
        handle.remove()
    assert seen["out"].shape == (2, 17, 64)  # 16 patches of 7x7 and the CLS token
    torch.testing.assert_close(features, seen["out"][:, 0])


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("name", ["cnn_gap", "resnet20_w8", "vit_micro_w64"])
def test_one_training_step_in_each_regime(seed, name, regime):
    config = TrainConfig(regime=regime, model=name, dataset="fashion-mnist", group_size=8)
    spec = model_spec(config, in_channels=1, num_classes=4, image_size=28)
    model = build_from_spec(spec).train()
    if regime in ("dbn", "saliencydecor"):
        assert model.whiten.__class__.__name__ == "GroupWhitening"
        # The paper's ViT: whitening feeds only the auxiliary loss; dbn whitens in the path.
        expect_in_path = not (name == "vit_micro_w64" and regime == "saliencydecor")
        assert model.whiten_in_path is expect_in_path
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    step = StaticStep(TrainForward(model), model, opt, config=config, params=params)
    terms = step(torch.rand(8, 1, 28, 28), torch.arange(8) % 4)
    assert torch.isfinite(terms).all()
    changed = [not torch.equal(a, p) for a, p in zip(before, params, strict=True)]
    names = [n for n, _ in model.named_parameters()]
    assert all(changed), [n for n, c in zip(names, changed, strict=True) if not c]
