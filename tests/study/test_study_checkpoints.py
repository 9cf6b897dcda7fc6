"""analyze_checkpoints: any training loop's checkpoints analysed as a run, dynamics included;
the reduce and entanglement_layer options; the preprocessing on record."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import geomxai
from geomxai.study import (
    AnalysisOptions,
    PreprocessingWarning,
    analyze_checkpoints,
    analyze_model,
    analyze_run,
    combine_runs,
    make_probe,
    step_from_name,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from tiny_runs import tiny_config  # noqa: E402


class SmallCNN(nn.Module):
    """A user's own model: no ``body``, a ``features`` layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(self.conv(x)))


def _digits(n=256):
    probe = make_probe("digits", n)
    return probe.images, probe.labels


@pytest.fixture(scope="module")
def plain_loop(tmp_path_factory):
    """A plain PyTorch loop that saves a state_dict before training and after each epoch."""
    folder = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    model = SmallCNN()
    from geomxai.data import dataset_tensors, load_dataset

    x, y = dataset_tensors(load_dataset("digits").train)
    x, y = x[:512].float(), y[:512].long()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    states = {0: {k: v.clone() for k, v in model.state_dict().items()}}
    torch.save(model.state_dict(), folder / "epoch_0.pt")
    for epoch in range(1, 4):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
        torch.save(model.state_dict(), folder / f"epoch_{epoch}.pt")
        states[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    return folder, states


def test_a_plain_loops_checkpoints_give_swaps_stability_and_cka_over_epochs(plain_loop):
    folder, _ = plain_loop
    ds = analyze_checkpoints(
        SmallCNN(),
        str(folder / "*.pt"),
        "digits",
        layers=["features", "conv"],
        probe_size=128,
        entanglement_layer="features",
        progress=False,
    )
    assert ds["epoch"].values.tolist() == [0, 1, 2, 3]
    assert ds.attrs["checkpoint_index"] == "epoch" and ds.attrs["regime"] == "SmallCNN"
    for name in ("swap_rate", "subspace_overlap", "cka_previous"):
        values = ds[name].sel(layer="features").values
        assert np.isnan(values[0]) and np.isfinite(values[1:]).all(), name
    stability = ds["saliency_stability"].values
    assert np.isnan(stability[0]) and np.all((stability[1:] > -1) & (stability[1:] <= 1))
    m = ds["cka_checkpoints"].sel(layer="features").transpose("epoch", "epoch_b").values
    np.testing.assert_allclose(m, m.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-9)
    prev = ds["cka_previous"].sel(layer="features").values
    np.testing.assert_allclose(prev[1:], [m[t, t - 1] for t in range(1, 4)], atol=1e-9)
    np.testing.assert_allclose(ds["cka_final"].sel(layer="features").values, m[:, -1], atol=1e-9)
    # Training moved the representation: the first checkpoint is not the last.
    assert m[0, -1] < 0.999
    assert np.isfinite(ds["entanglement"].values).all()
    assert ds.attrs["entanglement_layer"] == "features"
    assert "probe_features" not in ds  # not kept, as in analyze_run


def test_every_form_of_checkpoints_gives_the_same_result(plain_loop):
    folder, states = plain_loop
    kw = {"layers": ["features"], "probe_size": 64, "progress": False}
    files = analyze_checkpoints(SmallCNN(), folder, "digits", **kw)
    memory = analyze_checkpoints(SmallCNN(), states, "digits", **kw)
    pairs = analyze_checkpoints(SmallCNN(), list(states.items()), "digits", **kw)
    listed = analyze_checkpoints(
        SmallCNN(), list(states.values()), "digits", steps=list(states), **kw
    )
    # DDP's key prefix is removed.
    ddp = {e: {f"module.{k}": v for k, v in s.items()} for e, s in states.items()}
    wrapped = analyze_checkpoints(SmallCNN(), ddp, "digits", **kw)
    for other in (memory, pairs, listed, wrapped):
        xr.testing.assert_allclose(files, other)


def test_safetensors_checkpoints(plain_loop, tmp_path):
    from safetensors.torch import save_file

    _, states = plain_loop
    for epoch, state in states.items():
        save_file(state, str(tmp_path / f"step{epoch * 100}.safetensors"))
    ds = analyze_checkpoints(
        SmallCNN(),
        tmp_path,
        "digits",
        layers=["features"],
        probe_size=64,
        index="step",
        progress=False,
    )
    assert ds["epoch"].values.tolist() == [0, 100, 200, 300]
    assert ds.attrs["checkpoint_index"] == "step"
    assert ds["step"].values.tolist() == [0, 100, 200, 300]


def test_equals_analyze_run_on_the_trainers_checkpoints(tmp_path):
    run = geomxai.train.train(tiny_config(tmp_path / "run", epochs=2))
    probe = make_probe("digits", 64)
    ours = analyze_run(run, probe=probe, cache=False, progress=False)
    paths = sorted((Path(run) / "checkpoints").glob("epoch_*.pt"))
    theirs = analyze_checkpoints("cnn2", paths, probe, progress=False)
    measured = [v for v in ours.data_vars if v in theirs.data_vars]
    assert {"swap_rate", "saliency_stability", "cka_previous", "cka_checkpoints"} <= set(measured)
    assert set(ours.data_vars) - set(measured) <= set(geomxai.schema.names("training"))
    # The trainer also knows each checkpoint's optimizer step; a list of files does not.
    ours = ours.drop_vars("step", errors="ignore")
    xr.testing.assert_allclose(ours[measured], theirs[measured])
    # One or several such results are what the report reads.
    merged = combine_runs([theirs])
    assert merged.sizes["regime"] == 1 and "probe_saliency" not in merged


def test_metrics_of_the_loop_become_the_training_variables(plain_loop):
    _, states = plain_loop
    ds = analyze_checkpoints(
        SmallCNN(),
        states,
        "digits",
        layers=["features"],
        probe_size=64,
        progress=False,
        metrics={1: {"test_acc": 0.5}, 2: {"test_acc": 0.7}, 3: {"test_acc": 0.8}},
    )
    np.testing.assert_allclose(ds["test_acc"].values, [np.nan, 0.5, 0.7, 0.8])
    assert "[0]" in ds["test_acc"].attrs["nan_reason"]


def test_steps_and_errors(plain_loop, tmp_path):
    _, states = plain_loop
    assert step_from_name("run/ckpt-step=1200.safetensors") == 1200
    assert step_from_name("epoch_0003.pt") == 3
    torch.save(states[0], tmp_path / "last.pt")
    with pytest.raises(ValueError, match="holds no number"):
        analyze_checkpoints(SmallCNN(), [tmp_path / "last.pt"], "digits", layers=["features"])
    with pytest.raises(ValueError, match="carry no step"):
        analyze_checkpoints(SmallCNN(), [states[0], states[1]], "digits", layers=["features"])
    torch.save(states[0], tmp_path / "a_1.pt")
    torch.save(states[1], tmp_path / "b_1.pt")
    with pytest.raises(ValueError, match=r"share the step\(s\) \[1\]"):
        analyze_checkpoints(SmallCNN(), [tmp_path / "a_1.pt", tmp_path / "b_1.pt"], "digits")
    with pytest.raises(FileNotFoundError, match="no checkpoint file matches"):
        analyze_checkpoints(SmallCNN(), str(tmp_path / "*.safetensors"), "digits")
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(geomxai.CheckpointError, match="does not fit Sequential"):
        analyze_checkpoints(other, states, "digits", layers=["0"], progress=False)


# ---- reduce= and entanglement_layer=


def test_reduce_changes_the_units_and_is_recorded(plain_loop):
    _, states = plain_loop
    model = SmallCNN()
    model.load_state_dict(states[3])
    images, labels = _digits(128)
    kw = {"layers": ["conv"], "probe_size": 128}
    pooled = analyze_model(model, (images, labels), **kw)
    flat = analyze_model(model, (images, labels), reduce="flatten", **kw)
    assert int(pooled["n_units"].squeeze()) == 8
    assert int(flat["n_units"].squeeze()) == 8 * 8 * 8
    assert pooled.attrs["reduction"] == '{"conv": "mean"}'
    assert flat.attrs["reduction"] == '{"conv": "flatten"}'
    assert float(pooled.effective_rank.squeeze()) != float(flat.effective_rank.squeeze())


class _Tokens(nn.Module):
    """(n, 64) -> (n, 4 tokens, 8) -> logits; tokens differ, so the index matters."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 8)
        self.mix = nn.Identity()
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        tokens = self.mix(self.embed(x.reshape(len(x), 4, 16)))
        return self.head(tokens.flatten(1))


def test_a_token_index_and_token_mean():
    torch.manual_seed(0)
    model = _Tokens()
    images, labels = _digits(128)
    x = images.reshape(len(images), -1)
    kw = {"layers": ["mix"], "probe_size": 128}
    first = analyze_model(model, (x, labels), **kw)
    third = analyze_model(model, (x, labels), reduce=2, **kw)
    mean = analyze_model(model, (x, labels), reduce="token_mean", **kw)
    assert first.attrs["reduction"] == '{"mix": "cls"}'
    assert third.attrs["reduction"] == '{"mix": "callable:token[2]"}'
    assert mean.attrs["reduction"] == '{"mix": "token_mean"}'
    ranks = {float(d.effective_rank.squeeze()) for d in (first, third, mean)}
    assert len(ranks) == 3


def test_reduce_and_entanglement_layer_are_checked_and_keep_old_cache_keys():
    assert "reduce" not in AnalysisOptions().key()
    assert "entanglement_layer" not in AnalysisOptions().key()
    assert '"reduce": "flatten"' in AnalysisOptions(reduce="flatten").key()
    per_layer = AnalysisOptions(reduce={"b": "mean", "a": 3})
    assert per_layer.reduce == (("a", 3), ("b", "mean"))
    with pytest.raises(ValueError, match="token index"):
        AnalysisOptions(reduce="pool")
    with pytest.raises(ValueError, match="token index"):
        AnalysisOptions(reduce=True)
    with pytest.raises(TypeError, match="entanglement_layer"):
        AnalysisOptions(entanglement_layer=3)


def test_entanglement_at_another_layer(plain_loop):
    _, states = plain_loop
    model = SmallCNN()
    model.load_state_dict(states[3])
    images, labels = _digits(128)
    none = analyze_model(model, (images, labels), layers=["features"], probe_size=128)
    assert np.isnan(float(none.entanglement.squeeze()))
    at = analyze_model(
        model, (images, labels), layers=["features"], probe_size=128, entanglement_layer="features"
    )
    value = float(at.entanglement.squeeze())
    assert 0 <= value <= 1 and at.attrs["entanglement_layer"] == "features"


def test_a_large_resize_warns_and_is_recorded(plain_loop):
    from torchvision.transforms import Resize

    images, labels = _digits(64)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16, 10))
    with pytest.warns(PreprocessingWarning, match=r"8x8 to 32x32 .*factor of 4.0"):
        ds = analyze_model(
            model, (images, labels), layers=["1"], transform=Resize(32), probe_size=64
        )
    assert ds.attrs["input_size"] == "8x8 -> 32x32" and ds.attrs["resize_factor"] == 4.0
    assert "Resize" in ds.attrs["preprocessing"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PreprocessingWarning)
        small = analyze_model(
            model, (images, labels), layers=["1"], transform=Resize(12), probe_size=64
        )
    assert small.attrs["resize_factor"] == 1.5
    plain = analyze_model(model, (images, labels), layers=["1"], probe_size=64)
    assert plain.attrs["preprocessing"] == "none"


def test_the_resize_warning_points_at_the_callers_line(plain_loop):
    from torchvision.transforms import Resize

    _, states = plain_loop
    images, labels = _digits(32)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16, 10))
    kw = {"layers": ["1"], "transform": Resize(32), "probe_size": 32}
    with pytest.warns(PreprocessingWarning) as said:
        analyze_model(model, (images, labels), **kw)
    with pytest.warns(PreprocessingWarning) as again:
        analyze_checkpoints(
            SmallCNN(), {0: states[0]}, "digits", progress=False, **kw | {"layers": ["features"]}
        )
    for record in (*said, *again):
        if issubclass(record.category, PreprocessingWarning):
            assert record.filename == __file__, record.filename


def test_the_command_line_analyzes_a_loops_checkpoints(plain_loop, tmp_path, capsys):
    from geomxai.cli import main

    folder, _ = plain_loop
    source = tmp_path / "my_models.py"
    source.write_text(
        "from torch import nn\n\n\n"
        "class SmallCNN(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())\n"
        "        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten())\n"
        "        self.head = nn.Linear(32, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.features(self.conv(x)))\n"
    )
    out = tmp_path / "loop.nc"
    argv = ["analyze", "--model", f"{source}:SmallCNN", "--checkpoints", str(folder / "*.pt")]
    argv += ["--data", "digits", "--layers", "features", "--probe-size", "64", "--out", str(out)]
    assert main(argv) == 0
    assert f"results: {out}" in capsys.readouterr().out
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds["epoch"].values.tolist() == [0, 1, 2, 3]
        assert np.isfinite(ds["swap_rate"].values[..., 1:, :]).all()
        assert ds.sizes["regime"] == 1
    # One error line naming what is missing, exit status 2.
    assert main(["analyze", "--checkpoints", str(folder / "*.pt"), "--data", "digits"]) == 2
    assert (
        main(
            [
                "analyze",
                "--model",
                "cnn2",
                "--checkpoints",
                str(folder),
                "--data",
                "digits",
                "--weights",
                "w.pt",
            ]
        )
        == 2
    )
