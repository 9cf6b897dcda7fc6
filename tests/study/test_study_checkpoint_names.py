"""Checkpoint file names as training loops write them: the epoch or step is the number keyed
``epoch``/``step``, never a metric that follows it (``acc0.91``, ``val_loss=0.52``), and a name
that cannot be told apart is refused naming ``steps=`` / ``--steps``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from tiny_models import TinyNet, write_source

from geomxai.study import analyze_checkpoints, step_from_name


@pytest.mark.parametrize(
    ("name", "index", "expected"),
    [
        ("model_epoch3_acc0.91.pt", "epoch", 3),
        ("ckpt-epoch=3-val_loss=0.52.ckpt", "epoch", 3),
        ("epoch=3-step=120.ckpt", "epoch", 3),
        ("epoch=3-step=120.ckpt", "step", 120),
        ("resnet18_epoch_7.pth", "epoch", 7),
        ("global_step=400.safetensors", "epoch", 400),
        ("step0.safetensors", "step", 0),
        ("ckpt_12.pt", "epoch", 12),
        ("epoch_0003.pt", "epoch", 3),
    ],
)
def test_the_keyed_number_is_the_step(name, index, expected):
    assert step_from_name(f"ckpts/{name}", index) == expected


@pytest.mark.parametrize("name", ["ckpt_3_0.52.pt", "run2_17.pt", "model_0.5.pt"])
def test_a_name_without_a_keyed_number_is_refused_naming_steps(name):
    with pytest.raises(ValueError, match=r"steps=\[\.\.\.\].*--steps") as err:
        step_from_name(name)
    assert name in str(err.value) and "\n" not in str(err.value)


def _files(tmp_path, names):
    torch.manual_seed(0)
    net, saved = TinyNet(), {}
    for i, name in enumerate(names):
        with torch.no_grad():
            net.features[1].weight.mul_(1.0 + 0.2 * i)
        torch.save(net.state_dict(), tmp_path / name)
        saved[name] = {k: v.clone() for k, v in net.state_dict().items()}
    return saved


def test_a_glob_of_epochs_with_metrics_is_analysed_in_epoch_order(tmp_path):
    names = ["epoch1_acc0.80.pt", "epoch2_acc0.75.pt", "epoch3_acc0.90.pt"]
    saved = _files(tmp_path, names)
    kw = {"layers": ["features"], "probe_size": 32, "fractions": 3, "progress": False}
    with pytest.warns(UserWarning):  # a 32-sample probe is small
        ds = analyze_checkpoints(TinyNet(), str(tmp_path / "*.pt"), "digits", **kw)
        by_hand = analyze_checkpoints(
            TinyNet(), {e: saved[n] for e, n in zip((1, 2, 3), names, strict=True)}, "digits", **kw
        )
    assert ds["epoch"].values.tolist() == [1, 2, 3]
    np.testing.assert_allclose(
        ds["effective_rank"].values, by_hand["effective_rank"].values, rtol=1e-6
    )


def test_ambiguous_file_names_are_refused_and_steps_fix_them(tmp_path):
    names = ["ckpt_1_0.80.pt", "ckpt_2_0.75.pt"]
    _files(tmp_path, names)
    kw = {"layers": ["features"], "probe_size": 32, "fractions": 3, "progress": False}
    with pytest.raises(ValueError, match=r"'ckpt_1_0.80.pt'.*steps="):
        analyze_checkpoints(TinyNet(), str(tmp_path / "*.pt"), "digits", **kw)
    with pytest.warns(UserWarning):
        ds = analyze_checkpoints(TinyNet(), str(tmp_path / "*.pt"), "digits", steps=[10, 20], **kw)
    assert ds["epoch"].values.tolist() == [10, 20]


def test_steps_follow_the_natural_order_of_the_names(tmp_path):
    names = ["ckpt_2_0.75.pt", "ckpt_10_0.80.pt"]  # string order would put ckpt_10 first
    saved = {}
    for seed, name in enumerate(names):  # two unrelated nets: any mix-up shows
        torch.manual_seed(seed)
        saved[name] = TinyNet().state_dict()
        torch.save(saved[name], tmp_path / name)
    kw = {"layers": ["features"], "probe_size": 32, "fractions": 3, "progress": False}
    with pytest.warns(UserWarning):
        ds = analyze_checkpoints(TinyNet(), str(tmp_path / "*.pt"), "digits", steps=[2, 10], **kw)
        by_hand = analyze_checkpoints(
            TinyNet(), {2: saved[names[0]], 10: saved[names[1]]}, "digits", **kw
        )
    np.testing.assert_allclose(
        ds["effective_rank"].values, by_hand["effective_rank"].values, rtol=1e-6
    )


def test_the_command_line_refuses_an_ambiguous_name_in_one_line_and_takes_steps(tmp_path, caplog):
    from geomxai.cli import main

    names = ["ckpt_1_0.80.pt", "ckpt_2_0.75.pt"]
    _files(tmp_path, names)
    source = write_source(tmp_path / "net.py")
    out = tmp_path / "r.nc"
    argv = ["analyze", "--model", f"{source}:TinyNet", "--checkpoints", str(tmp_path / "*.pt")]
    argv += ["--data", "digits", "--layers", "features", "--probe-size", "32", "--out", str(out)]
    with caplog.at_level(logging.ERROR):
        assert main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "--steps" in errors[0] and "\n" not in errors[0]
    with pytest.warns(UserWarning):
        assert main([*argv, "--steps", "5,9"]) == 0
    import xarray as xr

    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds["epoch"].values.tolist() == [5, 9]
    with caplog.at_level(logging.ERROR):
        assert main([*argv, "--steps", "5"]) == 2
    assert "one step per checkpoint" in caplog.records[-1].getMessage()
