"""collect_features: values against a manual forward, reductions, data forms, restored state."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torchvision
import xarray as xr
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from geomxai.collect import collect_features
from geomxai.models import cnn2, vit_micro


def close(a, b, **kw) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, **kw)


@pytest.fixture
def seed() -> int:
    torch.manual_seed(0)
    return 0


# -- values equal a manual forward -------------------------------------------------------------
def test_cnn2_values(seed):
    model = cnn2(in_channels=1, image_size=8).eval()
    x = torch.randn(7, 1, 8, 8)
    ds = collect_features(model, x, ["body.1", "body", "head"], batch_size=3)
    with torch.no_grad():
        close(ds["body.1"], model.body[:2](x).mean((2, 3)))
        close(ds["body"], model.body(x))
        close(ds["head"], model(x))
    assert ds["body.1"].dims == ("sample", "unit_body.1")
    assert ds["body.1"].dtype == np.float32


def test_in_place_relu_after_the_layer_does_not_corrupt(seed):
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True), nn.Flatten())
    x = torch.randn(5, 1, 6, 6)
    ds = collect_features(model, x, "0", reduce="flatten")
    with torch.no_grad():
        expected = model[0](x).flatten(1)
    assert (expected < 0).any()
    close(ds["0"], expected)


def test_torchvision_resnet18_values_and_repeated_relu(seed):
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(3, 3, 32, 32)
    ds = collect_features(model, x, ["layer1.0.relu", "layer4", "avgpool", "fc"])
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        block = model.layer1[0]
        first_relu = torch.relu(block.bn1(block.conv1(stem)))
        block_out = block(stem)
        l4 = model.layer4(model.layer3(model.layer2(model.layer1(stem))))
        close(ds["layer1.0.relu"], first_relu.mean((2, 3)))
        # The block's one ReLU module runs twice; the second call is the block's output.
        close(ds["layer1.0.relu#1"], block_out.mean((2, 3)))
        close(ds["layer4"], l4.mean((2, 3)))
        close(ds["avgpool"], l4.mean((2, 3)))
        close(ds["fc"], model(x))
    assert ds["layer1.0.relu#1"].attrs["layer"] == "layer1.0.relu"
    assert ds["layer1.0.relu#1"].attrs["call"] == 1
    assert json.loads(ds.attrs["layers"]) == [
        "layer1.0.relu",
        "layer1.0.relu#1",
        "layer4",
        "avgpool",
        "fc",
    ]


def test_torchvision_resnet50(seed):
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(2, 3, 32, 32)
    ds = collect_features(model, x, "layer4")
    assert ds.sizes["unit_layer4"] == 2048
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        h = model.layer4(model.layer3(model.layer2(model.layer1(h))))
    close(ds["layer4"], h.mean((2, 3)))


def test_geomxai_vit_cls_token(seed):
    model = vit_micro(image_size=8).eval()
    x = torch.randn(4, 3, 8, 8)
    ds = collect_features(model, x, ["body.vit.encoder", "body"])
    with torch.no_grad():
        vit = model.body.vit
        tokens = vit._process_input(x)
        tokens = torch.cat([vit.class_token.expand(4, -1, -1), tokens], dim=1)
        close(ds["body.vit.encoder"], vit.encoder(tokens)[:, 0])
        close(ds["body"], model.body(x))
    assert ds["body.vit.encoder"].attrs["reduction"] == "cls"
    assert json.loads(ds["body.vit.encoder"].attrs["output_shape"]) == [5, 32]


def test_torchvision_vision_transformer_tuple_output(seed):
    model = torchvision.models.VisionTransformer(
        image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()
    x = torch.randn(3, 3, 16, 16)
    attn = "encoder.layers.encoder_layer_0.self_attention"
    ds = collect_features(model, x, [attn, "encoder.ln"])
    with torch.no_grad():
        tokens = model._process_input(x)
        tokens = torch.cat([model.class_token.expand(3, -1, -1), tokens], dim=1)
        layer = model.encoder.layers[0]
        normed = layer.ln_1(tokens + model.encoder.pos_embedding)
        # MultiheadAttention returns (output, weights): the output is recorded.
        out, _ = layer.self_attention(normed, normed, normed, need_weights=False)
        close(ds[attn], out[:, 0])
        close(ds["encoder.ln"], model.encoder(tokens)[:, 0])


# -- reductions ----------------------------------------------------------------------------------
MAP = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5).sin()
TOKENS = MAP[:, :, :, 0]  # (n=2, tokens=3, d=4)


@pytest.mark.parametrize(
    ("x", "reduce", "expected", "label"),
    [
        (MAP, "flatten", MAP.reshape(2, -1), "flatten"),
        (MAP, "mean", MAP.mean((2, 3)), "mean"),
        (MAP, "max", MAP.amax((2, 3)), "max"),
        (MAP, "auto", MAP.mean((2, 3)), "mean"),
        (TOKENS, "cls", TOKENS[:, 0], "cls"),
        (TOKENS, "token_mean", TOKENS.mean(1), "token_mean"),
        (TOKENS, "auto", TOKENS[:, 0], "cls"),
        (TOKENS[:, 0], "auto", TOKENS[:, 0], "flatten"),
        (TOKENS[:, 0], "mean", TOKENS[:, 0], "mean"),  # no spatial dims: unchanged
        (MAP, lambda t: t.std(dim=(2, 3)), MAP.std(dim=(2, 3)), "callable:<lambda>"),
        (MAP, lambda t: t[:, :2], MAP[:, :2].reshape(2, -1), "callable:<lambda>"),
    ],
)
def test_every_reduction(x, reduce, expected, label):
    model = nn.Sequential(nn.Identity())
    ds = collect_features(model, x, "0", reduce=reduce)
    close(ds["0"], expected)
    assert ds["0"].attrs["reduction"] == label
    assert json.loads(ds.attrs["reduction"]) == {"0": label}


def test_auto_averages_the_length_of_a_1d_conv():
    model = nn.Sequential(nn.Conv1d(2, 3, 3))
    x = torch.randn(4, 2, 9)
    ds = collect_features(model, x, "0")
    with torch.no_grad():
        close(ds["0"], model(x).mean(2))
    assert ds["0"].attrs["reduction"] == "mean"


def test_reduce_per_layer_mapping(seed):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    x = torch.randn(3, 1, 5, 5)
    ds = collect_features(model, x, ["0", "1"], reduce={"0": "max"})
    assert json.loads(ds.attrs["reduction"]) == {"0": "max", "1": "mean"}
    with pytest.raises(ValueError, match="not selected: 2"):
        collect_features(model, x, ["0", "1"], reduce={"2": "max"})


@pytest.mark.parametrize(
    ("reduce", "match"),
    [
        ("median", "reduce must be one of"),
        (None, "got None"),
        ("cls", r"expects a token sequence \(n, tokens, d\).*\(2, 3, 4, 5\)"),
        (lambda t: t.sum(), "must return a tensor"),
    ],
)
def test_bad_reductions_raise(reduce, match):
    model = nn.Sequential(nn.Identity())
    with pytest.raises(ValueError, match=match):
        collect_features(model, MAP, "0", reduce=reduce)


def test_sequence_first_output_is_refused():
    class SeqFirst(nn.Module):
        def forward(self, x):  # (n, t, d) -> (t, n, d), as nn.Transformer's default layout
            return x.transpose(0, 1)

    model = nn.Sequential(SeqFirst())
    with pytest.raises(ValueError, match=r"shape \(5, 4\) for a batch of 2.*batch in dim 0"):
        collect_features(model, torch.randn(2, 5, 4), "0")
    ds = collect_features(model, torch.randn(2, 5, 4), "0", reduce=lambda t: t[0])
    assert ds.sizes["unit_0"] == 4


# -- data forms, labels, sample coordinate -------------------------------------------------------
class XOnly(Dataset):
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def test_data_forms_agree(seed):
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    reference = collect_features(model, (x, y), "1", batch_size=4)
    assert reference.label.values.tolist() == y.tolist()
    assert reference.sample.values.tolist() == list(range(10))
    assert reference.attrs["sample_index"] == "dataset"
    forms = [
        TensorDataset(x, y),
        DataLoader(TensorDataset(x, y), batch_size=3),
        (x.numpy(), y.numpy()),
    ]
    for data in forms:
        xr.testing.assert_identical(collect_features(model, data, "1", batch_size=4), reference)
    for data in (x, x.numpy(), XOnly(x), DataLoader(x, batch_size=5)):
        ds = collect_features(model, data, "1")
        assert "label" not in ds.coords
        close(ds["1"], reference["1"])


def test_shuffled_loader_reports_iteration_order(seed):
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(10, 4), torch.arange(10)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    ds = collect_features(model, loader, "0")
    assert ds.attrs["sample_index"] == "iteration"
    with torch.no_grad():
        close(ds["0"], model(x[ds.label.values]))  # labels carry the dataset index here


def test_labels_that_are_not_one_per_sample_are_not_a_coordinate(seed):
    model = nn.Sequential(nn.Linear(4, 3))
    x, masks = torch.randn(6, 4), torch.zeros(6, 2, 2)
    ds = collect_features(model, TensorDataset(x, masks), "0")
    assert "label" not in ds.coords


def test_max_samples_stops_early(seed):
    model = nn.Sequential(nn.Linear(4, 3))
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    x = torch.randn(20, 4)
    ds = collect_features(model, x, "0", max_samples=6, batch_size=4)
    assert ds.sizes["sample"] == 6 and calls == [4, 2]
    with torch.no_grad():
        close(ds["0"], model(x[:6]))


@pytest.mark.parametrize("data", [torch.zeros(0, 4), TensorDataset(torch.zeros(0, 4))])
def test_empty_data_raises(data, hooks_left):
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="no samples"):
        collect_features(model, data, "0")
    assert hooks_left(model) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer; got batch_size=0"),
        ({"max_samples": 0}, "max_samples must be a positive integer or None; got max_samples=0"),
        ({"max_samples": 2.5}, "got 2.5"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        collect_features(nn.Sequential(nn.Linear(4, 3)), torch.zeros(2, 4), "0", **kwargs)


def test_bad_data_raises():
    with pytest.raises(TypeError, match="data must be a DataLoader"):
        collect_features(nn.Sequential(nn.Linear(4, 3)), [[0.0] * 4], "0")
    with pytest.raises(TypeError, match="batch must be a tensor"):
        collect_features(nn.Sequential(nn.Linear(4, 3)), DataLoader([{"x": 1}]), "0")


def test_non_finite_features_are_kept_with_a_warning():
    class Log(nn.Module):
        def forward(self, x):
            return torch.log(x)

    model = nn.Sequential(Log())
    x = torch.tensor([[1.0, 2.0], [-1.0, 3.0], [0.0, 1.0]])
    with pytest.warns(RuntimeWarning, match=r"non-finite.*'0': 2"):
        ds = collect_features(model, x, "0")
    assert np.isnan(ds["0"].values[1, 0]) and np.isneginf(ds["0"].values[2, 0])


# -- the model's state ---------------------------------------------------------------------------
def test_train_mode_grad_flags_and_buffers_restored(seed):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())
    model.train()
    model[1].eval()  # a frozen BatchNorm inside a training model must stay as it was
    model[0].bias.requires_grad_(False)
    stats = model[1].running_mean.clone()
    x = torch.randn(6, 1, 5, 5)
    ds = collect_features(model, x, "2", reduce="flatten")
    assert [m.training for m in model.modules()] == [True, True, False, True, True]
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(model[1].running_mean, stats)
    model.eval()
    with torch.no_grad():
        close(ds["2"], model[:3](x).flatten(1))  # dropout was off: eval mode during collection
    assert torch.is_grad_enabled()


def test_float64_model_gives_float64_features(seed):
    model = nn.Sequential(nn.Linear(3, 2)).double()
    ds = collect_features(model, torch.randn(4, 3, dtype=torch.float64), "0")
    assert ds["0"].dtype == np.float64


def test_device_argument():
    model = nn.Sequential(nn.Linear(3, 2))
    ds = collect_features(model, torch.randn(4, 3), "0", device="cpu")
    assert ds.sizes["sample"] == 4
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            collect_features(model, torch.randn(4, 3), "0", device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="DataParallel needs its GPUs there")
def test_data_parallel_model(seed):
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    x = torch.randn(5, 4)
    ds = collect_features(
        nn.DataParallel(net), x, ["module.0", "1"], reduce={"module.1": "flatten"}
    )
    assert list(ds.data_vars) == ["0", "1"]
    assert ds.attrs["model_wrapper"] == "DataParallel"
    assert ds["1"].attrs["reduction"] == "flatten"
    assert ds.attrs["model"] == "torch.nn.modules.container.Sequential"
    with torch.no_grad():
        close(ds["0"], net[0](x))


def test_distributed_data_parallel_model(seed, tmp_path):
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not built")
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        wrapped = nn.parallel.DistributedDataParallel(net)
        x = torch.randn(5, 4)
        ds = collect_features(wrapped, x, "module.1")
    finally:
        dist.destroy_process_group()
    assert ds.attrs["model_wrapper"] == "DistributedDataParallel"
    with torch.no_grad():
        close(ds["1"], net(x))


def test_layer_that_never_runs(seed, hooks_left):
    model = vit_micro(image_size=8)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="'whiten' did not run"):
        collect_features(model, x, ["body", "whiten"])
    with pytest.warns(UserWarning, match="did not run.*out_proj"):
        ds = collect_features(model, x, "body.vit.encoder.layers.encoder_layer_0.self_attention*")
    assert list(ds.data_vars) == ["body.vit.encoder.layers.encoder_layer_0.self_attention"]
    assert hooks_left(model) == 0


def test_attrs_are_netcdf_safe(seed):
    model = cnn2(in_channels=1, image_size=8)
    ds = collect_features(model, torch.randn(3, 1, 8, 8), "body.*")
    for attrs in [ds.attrs, *(v.attrs for v in ds.data_vars.values())]:
        for value in attrs.values():
            assert isinstance(value, (str, int))
    assert ds.attrs["model"] == "geomxai.models._base.FeatureModel"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        json.loads(ds.attrs["reduction"])


# -- the input's dtype and shape -----------------------------------------------------------------
class TestInputDtypeAndShape:
    """Floating data is cast to the model's dtype; what a model cannot take is named, clearly."""

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_floating_data_is_cast_to_the_model_dtype(self, dtype, seed):
        model = cnn2(in_channels=1, image_size=8)
        x = torch.randn(6, 1, 8, 8).to(dtype)
        ds = collect_features(model, x, ["body.3", "body"])
        expected = collect_features(model, x.float(), ["body.3", "body"])
        assert ds["body"].dtype == np.float32
        xr.testing.assert_identical(ds, expected)

    def test_a_float64_model_takes_float32_data(self, seed):
        model = nn.Sequential(nn.Linear(3, 2)).double()
        x = torch.randn(4, 3)
        ds = collect_features(model, x, "0")
        assert ds["0"].dtype == np.float64
        close(ds["0"], model(x.double()).detach())

    def test_the_same_cast_for_moments_and_netcdf(self, seed, tmp_path):
        from geomxai.collect import collect_features_to_netcdf, collect_moments

        model = cnn2(in_channels=1, image_size=8)
        x = torch.randn(6, 1, 8, 8, dtype=torch.float16)
        moments = collect_moments(model, x, "body")["body"]
        assert moments.count == 6
        path = collect_features_to_netcdf(model, x, "body", tmp_path / "f.nc")
        with xr.open_dataset(path) as ds:
            close(ds["body"], collect_features(model, x.float(), "body")["body"])

    @pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
    def test_integer_images_are_refused_with_the_fix(self, dtype, hooks_left, seed):
        model = cnn2(in_channels=1, image_size=8)
        x = torch.randint(0, 2, (6, 1, 8, 8)).to(dtype)
        with pytest.raises(ValueError, match=r"integer values .*x\.float\(\) / 255") as info:
            collect_features(model, x, "body")
        assert isinstance(info.value.__cause__, RuntimeError)  # torch's own error, chained
        assert hooks_left(model) == 0

    def test_models_that_take_integers_get_them(self, seed):
        embed = nn.Sequential(nn.Embedding(10, 4), nn.Flatten())
        ids = torch.randint(0, 10, (5, 3))
        ds = collect_features(embed, ids, "1")
        close(ds["1"], embed(ids).detach())

        class Scales(nn.Module):  # a model that converts uint8 images itself
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 2, 3)

            def forward(self, x):
                return self.conv(x.float() / 255)

        model = Scales()
        images = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
        close(
            collect_features(model, images, "conv", reduce="flatten")["conv"],
            model(images).flatten(1).detach(),
        )

    @pytest.mark.parametrize(
        ("shape", "hint"),
        [
            ((6, 8, 8), r"takes \(n, 1, H, W\) \(add the channel dim: x\[:, None\]\)"),
            ((1, 8, 8), r"takes \(n, 1, H, W\) \(add the channel dim"),  # torch: unbatched
            ((6, 8, 8, 1), r"takes \(n, 1, H, W\) \(channels last\? move them"),
            ((6, 3, 8, 8), r"'body\.0' \(Conv2d, in_channels=1\) takes \(n, 1, H, W\)"),
        ],
    )
    def test_a_shape_the_first_conv_cannot_take_is_named(self, shape, hint, hooks_left, seed):
        model = cnn2(in_channels=1, image_size=8)
        with pytest.raises(ValueError, match=rf"shape {re_shape(shape)} .* cannot take: .*{hint}"):
            collect_features(model, torch.randn(*shape), "body")
        assert hooks_left(model) == 0

    def test_sequences_and_tabular_data_pass_where_the_model_takes_them(self, seed):
        seq = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU())
        x = torch.randn(5, 3, 12)  # (n, c, t)
        close(collect_features(seq, x, "1", reduce="mean")["1"], seq(x).mean(-1).detach())
        with pytest.raises(ValueError, match=r"'0' \(Conv1d, in_channels=3\) takes \(n, 3, L\)"):
            collect_features(seq, torch.randn(5, 12), "1")
        mlp = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
        table = torch.randn(7, 4)  # (n, d)
        close(collect_features(mlp, table, "1")["1"], mlp(table).detach())
        with pytest.raises(ValueError, match=r"takes \(n, 4\) features; the data has 3 value"):
            collect_features(mlp, torch.randn(7, 3), "1")

    def test_a_flatten_before_the_first_linear_layer_is_no_mismatch(self, seed):
        class Broken(nn.Module):
            def __init__(self):
                super().__init__()
                self.flat, self.fc = nn.Flatten(), nn.Linear(16, 2)

            def forward(self, x):
                raise RuntimeError("a bug in the model, not the data")

        # 1 x 4 x 4 values per sample fit the first layer after a flatten: the model's own
        # error is not disguised as a shape problem.
        with pytest.raises(RuntimeError, match="a bug in the model"):
            collect_features(Broken(), torch.randn(3, 1, 4, 4), "fc")


def re_shape(shape: tuple[int, ...]) -> str:
    import re

    return re.escape(str(tuple(shape)))
