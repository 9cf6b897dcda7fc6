"""GeometryMonitor in a plain loop, the Lightning and Hugging Face callbacks on it, and the
trainer's TensorBoard log, each read back with TensorBoard's own reader."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import geomxai
from geomxai import GeometryMonitor
from geomxai.study import combine_runs, make_probe

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (pip install tensorboard)",
).EventAccumulator


def _scalars(folder) -> dict[str, list]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def digits():
    probe = make_probe("digits", 256)
    return probe.images, probe.labels


def test_a_plain_loop_monitor_logs_snapshots_that_analyze_checkpoints_reads(digits, tmp_path):
    x, y = digits
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    monitor = GeometryMonitor((x[:128], y[:128]), ["body"], every_n_steps=3, out_dir=tmp_path)
    taken = []
    for step in range(8):
        model.train()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[128:]), y[128:]).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        rng = torch.get_rng_state()
        record = monitor.step(model, step)
        # Nothing the loop holds is changed: gradients, train flags, the random stream.
        assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
        assert model.training and model.body[3].training
        assert torch.equal(rng, torch.get_rng_state())
        if record is not None:
            taken.append(step)
        opt.step()
    monitor.step(model, 8, force=True)  # the final model, off the grid
    assert monitor.step(model, 8, force=True) is None  # never twice
    monitor.close()
    assert taken == [0, 3, 6] and sorted(monitor.checkpoints) == [0, 3, 6, 8]
    lines = [json.loads(t) for t in (tmp_path / "monitor.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 3, 6, 8]
    assert "swap_rate" not in lines[0]["layers"]["body"]
    assert all(0 <= r["layers"]["body"]["swap_rate"] <= 1 for r in lines[1:])

    scalars = _scalars(tmp_path / "tensorboard")
    rank = scalars["geometry/body/effective_rank"]
    assert [s for s, _ in rank] == [0, 3, 6, 8]
    np.testing.assert_allclose(
        [v for _, v in rank], [r["layers"]["body"]["effective_rank"] for r in lines], rtol=1e-6
    )
    assert [s for s, _ in scalars["dynamics/body/cka_previous"]] == [3, 6, 8]
    assert [s for s, _ in scalars["saliency/stability"]] == [3, 6, 8]
    assert len(scalars["probe/accuracy"]) == 4

    ds = monitor.analyze(Net(), progress=False)
    assert ds["epoch"].values.tolist() == [0, 3, 6, 8] and ds.attrs["checkpoint_index"] == "step"
    # The full analysis of the snapshots measures what the monitor logged live.
    np.testing.assert_allclose(
        ds["effective_rank"].sel(layer="body").values,
        [r["layers"]["body"]["effective_rank"] for r in lines],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        ds["saliency_stability"].values[1:], [r["saliency_stability"] for r in lines[1:]], rtol=1e-5
    )


def test_monitor_arguments_are_checked(digits):
    x, y = digits
    with pytest.raises(ValueError, match="every_n_steps"):
        GeometryMonitor((x, y), "body", every_n_steps=0, tensorboard=False)
    with pytest.raises(ValueError, match="same length"):
        GeometryMonitor((x, y[:3]), "body", tensorboard=False)
    with pytest.raises(TypeError, match="floating"):
        GeometryMonitor((x.long(), y), "body", tensorboard=False)
    monitor = GeometryMonitor((x, y), "body", tensorboard=False, save_weights=False)
    with pytest.raises(ValueError, match="no weight snapshots"):
        monitor.analyze(Net())


def test_the_lightning_callback_produces_a_report(digits, tmp_path):
    pl = pytest.importorskip(
        "lightning.pytorch", reason="lightning is not installed (extra: lightning)"
    )
    from geomxai.monitor import LightningGeometryCallback
    from geomxai.report import build_report

    x, y = digits

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = Net()

        def forward(self, inputs):
            return self.net(inputs)

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            return nn.functional.cross_entropy(self(inputs), targets)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.2)

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    callback = LightningGeometryCallback(
        probe=(x[:128], y[:128]), layers=["net.body"], every_n_steps=4, out_dir=tmp_path / "mon"
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(Module(), loader)
    monitor = callback.monitor
    assert sorted(monitor.checkpoints) == [0, 4, 8, 12, 16]  # 8 batches x 2 epochs
    assert len(_scalars(tmp_path / "mon" / "tensorboard")["dynamics/net.body/swap_rate"]) == 4
    ds = monitor.analyze(Module(), progress=False, name="lightning")
    index = build_report(combine_runs([ds]), tmp_path / "report")
    html = index.read_text()
    assert index.is_file() and "lightning" in html


def test_the_hugging_face_callback(digits, tmp_path):
    pytest.importorskip(
        "transformers", reason="transformers is not installed (extra: transformers)"
    )
    from transformers import TrainerControl, TrainerState

    from geomxai.monitor import HFGeometryCallback

    x, y = digits

    class Output(dict):
        pass

    class HFNet(Net):  # returns a ModelOutput-like mapping, read through its logits
        def forward(self, x):
            return Output(logits=super().forward(x))

    model = HFNet()
    callback = HFGeometryCallback(
        probe=(x[:64], y[:64]), layers=["body"], every_n_steps=2, out_dir=tmp_path
    )
    args = None  # TrainingArguments needs accelerate; the callback does not read them
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model=model)
    for step in (1, 2, 3):
        state.global_step = step
        callback.on_step_end(args, state, control, model=model)
    callback.on_train_end(args, state, control, model=model)
    assert sorted(callback.monitor.checkpoints) == [0, 2, 3]
    assert "saliency_stability" in callback.monitor.history[-1]


def test_the_trainer_logs_to_tensorboard_when_asked(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
    from tiny_runs import tiny_config

    run = geomxai.train.train(
        tiny_config(tmp_path / "run", epochs=2, tensorboard_dir=str(tmp_path / "tb"))
    )
    scalars = _scalars(tmp_path / "tb")
    rows = [json.loads(t) for t in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in scalars["metrics/test_acc"]] == [1, 2]
    np.testing.assert_allclose(
        [v for _, v in scalars["metrics/loss_total"]], [r["loss_total"] for r in rows], rtol=1e-6
    )
    with pytest.raises(geomxai.train.ConfigError, match="tensorboard_dir"):
        tiny_config(tmp_path / "x", tensorboard_dir=" ")


def test_importing_the_monitor_loads_no_framework():
    import subprocess

    code = (
        "import sys, geomxai\n"
        "geomxai.GeometryMonitor\n"
        "import geomxai.monitor\n"
        "print(sorted(m for m in ('lightning', 'transformers', 'tensorboard') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
