"""The loop: run directory contract, resume equality, NaN stop, refused configs, data paths."""

from __future__ import annotations

import json

import pytest
import torch
from _internals import train_loop as loop_module
from tiny_runs import tiny_config
from torch.utils.data import Dataset, TensorDataset

import geomxai
from geomxai.data import DatasetBundle, load_dataset
from geomxai.train import (
    ConfigError,
    TrainConfig,
    TrainingDivergedError,
    list_checkpoints,
    read_checkpoint,
    read_metrics,
    train,
)

METRIC_KEYS = {
    "epoch",
    "loss_ce",
    "loss_kl",
    "loss_decor",
    "loss_total",
    "train_acc",
    "test_acc",
    "images_per_s",
    "seconds",
    "lr",
}


@pytest.fixture(scope="module")
def digits() -> DatasetBundle:
    return load_dataset("digits")


def _config(tmp_path, name="run", **changes) -> TrainConfig:
    return tiny_config(tmp_path / name, **{"epochs": 2, **changes})


def _state(path):
    return read_checkpoint(path)["model"]


@pytest.mark.parametrize("regime", ["regular", "sgt", "dbn", "saliencydecor"])
def test_run_directory_contract(tmp_path, digits, regime):
    config = _config(tmp_path, regime=regime, epochs=1)
    run_dir = train(config, dataset=digits)
    assert run_dir == tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    assert sorted(list_checkpoints(run_dir)) == [0, 1]
    (line,) = read_metrics(run_dir)
    assert METRIC_KEYS <= set(line) and line["epoch"] == 1
    assert (line["loss_kl"] > 0) == config.uses_masking
    assert (line["loss_decor"] > 0) == config.uses_decorrelation
    assert line["loss_total"] == pytest.approx(
        line["loss_ce"]
        + config.kl_weight * line["loss_kl"]
        + config.decor_weight * line["loss_decor"],
        rel=1e-5,
    )
    assert 0.0 <= line["test_acc"] <= 1.0 and line["images_per_s"] > 0
    # Plain torch reads every checkpoint with weights_only=True.
    raw = torch.load(run_dir / "checkpoints" / "epoch_0001.pt", weights_only=True)
    assert {
        "config",
        "model_spec",
        "model",
        "optimizer",
        "scheduler",
        "rng",
        "epoch",
        "metrics",
    } <= set(raw)
    assert raw["epoch"] == 1 and raw["metrics"] == line
    model, loaded = geomxai.load_checkpoint(run_dir / "checkpoints" / "epoch_0001.pt")
    assert loaded == config.replace(resume=False)
    initial = _state(run_dir / "checkpoints" / "epoch_0000.pt")
    assert read_checkpoint(run_dir / "checkpoints" / "epoch_0000.pt")["metrics"]["epoch"] == 0
    assert any(not torch.equal(initial[k], v) for k, v in model.state_dict().items())


def test_resume_after_a_crash_equals_a_straight_run(tmp_path, digits, monkeypatch):
    straight = train(_config(tmp_path, "straight", regime="saliencydecor"), dataset=digits)

    # The same run, killed in the middle of epoch 2 (4 steps per epoch).
    calls = {"n": 0}
    real_step = loop_module.train_step

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop_module, "train_step", dying_step)
    config = _config(tmp_path, "resumed", regime="saliencydecor")
    with pytest.raises(KeyboardInterrupt):
        train(config, dataset=digits)
    monkeypatch.setattr(loop_module, "train_step", real_step)
    resumed = tmp_path / "resumed"
    assert sorted(list_checkpoints(resumed)) == [0, 1]

    train(config.replace(resume=True), dataset=digits)
    for epoch in (1, 2):
        a = read_checkpoint(straight / "checkpoints" / f"epoch_{epoch:04d}.pt")
        b = read_checkpoint(resumed / "checkpoints" / f"epoch_{epoch:04d}.pt")
        for key, value in a["model"].items():
            assert torch.equal(value, b["model"][key]), (epoch, key)
        assert a["scheduler"] == b["scheduler"]
    rows = read_metrics(resumed)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["loss_total"] == read_metrics(straight)[1]["loss_total"]


def test_resume_may_extend_epochs_and_a_finished_run_is_left_alone(tmp_path, digits):
    config = _config(tmp_path, epochs=1)
    run_dir = train(config, dataset=digits)
    first = (run_dir / "checkpoints" / "epoch_0001.pt").stat().st_mtime_ns
    train(config.replace(resume=True), dataset=digits)  # nothing left to do
    assert (run_dir / "checkpoints" / "epoch_0001.pt").stat().st_mtime_ns == first
    train(config.replace(resume=True, epochs=2, progress=True), dataset=digits)
    assert sorted(list_checkpoints(run_dir)) == [0, 1, 2]
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2


def test_resume_with_a_different_config_is_refused(tmp_path, digits):
    config = _config(tmp_path, epochs=1, regime="sgt")
    train(config, dataset=digits)
    with pytest.raises(ConfigError, match=r"mask_ratio \(run: 0.25, now: 0.5\)"):
        train(config.replace(resume=True, mask_ratio=0.5), dataset=digits)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config, dataset=digits)


@pytest.mark.parametrize("interval", [1, 50], ids=["read-every-step", "read-every-50"])
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, digits, monkeypatch, interval
):
    from _internals import train_step as step_module

    # 50 is the GPU's interval: by the time the host reads the flags, the NaN KL has spread to
    # every term through the weights; the message must still name the term that went bad first.
    monkeypatch.setattr(loop_module, "check_interval", lambda device: interval)

    calls = {"n": 0}
    real_kl = step_module.kl_consistency

    def kl_that_blows_up(*args, **kwargs):
        calls["n"] += 1
        out = real_kl(*args, **kwargs)
        return out * float("nan") if calls["n"] == 6 else out

    monkeypatch.setattr(step_module, "kl_consistency", kl_that_blows_up)
    config = _config(tmp_path, regime="sgt", epochs=3)
    expected = r"loss_kl became NaN or infinite in epoch 2 at step 2 of 4"
    with pytest.raises(TrainingDivergedError, match=expected):
        train(config, dataset=digits)
    run_dir = tmp_path / "run"
    assert sorted(list_checkpoints(run_dir)) == [0, 1]
    good = read_checkpoint(run_dir / "checkpoints" / "epoch_0001.pt")
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1]
    assert not list((run_dir / "checkpoints").glob(".*tmp"))


def test_nonfinite_weights_after_the_last_step_are_not_saved(tmp_path, digits, monkeypatch):
    real_step = loop_module.train_step
    calls = {"n": 0}

    def poisoning_step(*args, **kwargs):
        calls["n"] += 1
        terms = real_step(*args, **kwargs)
        if calls["n"] == 8:  # the last step of epoch 2: finite losses, a NaN gradient
            next(iter(kwargs["params"])).grad.fill_(float("nan"))
        return terms

    monkeypatch.setattr(loop_module, "train_step", poisoning_step)
    with pytest.raises(TrainingDivergedError, match="weights became NaN or infinite in epoch 2"):
        train(_config(tmp_path, epochs=3), dataset=digits)
    assert sorted(list_checkpoints(tmp_path / "run")) == [0, 1]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"regime": "sgd"}, "regime must be one of"),
        ({"mask_ratio": 0.0}, "mask_ratio must lie in"),
        ({"mask_ratio": 1.0}, "mask_ratio must lie in"),
        ({"group_size": 1}, "group_size must be 2 or more"),
        ({"decor_kind": "cosine"}, "decor_kind must be one of"),
    ],
)
def test_invalid_fields_are_refused_at_construction(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        _config(tmp_path, **changes)


def _bundle(name="tiny", shape=(1, 8, 8), classes=4, n=64):
    x = torch.rand(n, *shape)
    y = torch.arange(n) % classes
    return DatasetBundle(
        name=name,
        train=TensorDataset(x, y),
        test=TensorDataset(x[:16], y[:16]),
        classes=tuple(str(i) for i in range(classes)),
        input_shape=shape,
        source="test",
    )


@pytest.mark.parametrize(
    ("changes", "bundle", "match"),
    [
        ({"regime": "dbn", "group_size": 64}, None, "group_size must not exceed the feature width"),
        ({"dataset": "tiny"}, _bundle(shape=(1, 2, 2)), "does not fit dataset 'tiny'"),
        ({"dataset": "tiny"}, _bundle(shape=(1, 8, 6)), "square images"),
        ({"dataset": "other"}, _bundle(), "dataset must match the config"),
        ({"batch_size": 4096}, None, "batch_size must not exceed"),
        ({"device": "cuda:99"}, None, "device must be"),
        ({"device": "tpu"}, None, "device must be"),
    ],
)
def test_inconsistent_settings_are_refused_before_any_work(
    tmp_path, digits, changes, bundle, match
):
    config = _config(tmp_path, **changes)
    with pytest.raises(ConfigError, match=match):
        train(config, dataset=bundle if bundle is not None else digits)
    assert not (tmp_path / "run").exists()


def test_resume_against_data_with_other_classes_is_refused(tmp_path):
    config = _config(tmp_path, dataset="tiny", epochs=1, train_subset=None, test_subset=None)
    train(config, dataset=_bundle())
    with pytest.raises(ConfigError, match="does not match"):
        train(config.replace(resume=True, epochs=2), dataset=_bundle(classes=5))


class _ItemDataset(Dataset):
    """A dataset that is not tensor-backed, to exercise the DataLoader path."""

    def __init__(self, tensors):
        self.x, self.y = tensors

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_dataloader_path_trains_exactly_like_the_tensor_path(tmp_path, digits):
    items = DatasetBundle(
        name="digits",
        train=_ItemDataset(digits.train.tensors),
        test=_ItemDataset(digits.test.tensors),
        classes=digits.classes,
        input_shape=digits.input_shape,
        source="test",
    )
    a = train(_config(tmp_path, "tensors", epochs=1), dataset=digits)
    b = train(_config(tmp_path, "loader", epochs=1, data_on_device=False), dataset=items)
    # Tensor data kept in host memory (pinned on CUDA) and copied per batch.
    c = train(_config(tmp_path, "host", epochs=1, data_on_device=False), dataset=digits)
    timing = ("images_per_s", "seconds")
    strip = [{k: v for k, v in row.items() if k not in timing} for row in read_metrics(a)]
    assert [{k: v for k, v in row.items() if k not in timing} for row in read_metrics(c)] == strip
    sa, sb = (
        _state(a / "checkpoints" / "epoch_0001.pt"),
        _state(b / "checkpoints" / "epoch_0001.pt"),
    )
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # A non-tensor dataset read into memory once (data_on_device=True).
    d = train(_config(tmp_path, "read", epochs=1), dataset=items)
    sd = _state(d / "checkpoints" / "epoch_0001.pt")
    assert all(torch.equal(sa[k], sd[k]) for k in sa)


def test_options_compile_channels_last_augment(tmp_path, digits, monkeypatch):
    compiled = []

    def fake_compile(module, **kwargs):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    config = _config(
        tmp_path, epochs=1, compile=True, channels_last=True, augment=True, regime="saliencydecor"
    )
    run_dir = train(config, dataset=digits)
    assert len(compiled) == 1
    assert read_metrics(run_dir)[0]["loss_kl"] > 0


def test_caller_state_is_left_as_it_was(tmp_path, digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    flags = torch.are_deterministic_algorithms_enabled()
    train(_config(tmp_path, epochs=1), dataset=digits)
    assert torch.equal(torch.rand(3), expected)
    assert torch.are_deterministic_algorithms_enabled() == flags


@pytest.mark.gpu
@pytest.mark.parametrize("regime", ["regular", "saliencydecor"])
def test_cuda_run_with_bf16_channels_last(tmp_path, digits, regime):
    config = _config(
        tmp_path, regime=regime, device="cuda", amp=True, channels_last=True, deterministic=False
    )
    run_dir = train(config, dataset=digits)
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss_total"])) for r in rows)
    state = _state(run_dir / "checkpoints" / "epoch_0002.pt")
    assert all(v.device.type == "cpu" for v in state.values())
    model, _ = geomxai.load_checkpoint(run_dir / "checkpoints" / "epoch_0002.pt")
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
