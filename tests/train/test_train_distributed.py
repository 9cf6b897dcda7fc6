"""Multi-process training on the CPU (gloo, two processes): global-batch whitening, DDP runs."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_runs import tiny_config

from geomxai.data import load_dataset
from geomxai.train import (
    SyncGroupWhitening,
    TrainConfig,
    Trainer,
    convert_sync_whitening,
    decorrelation_term,
    train,
)
from geomxai.whitening import GroupWhitening, decorrelation_loss

WORLD = 2
RUNS = {
    "dbn": {"regime": "dbn"},
    "sd": {"regime": "saliencydecor", "mask_fill": "zero"},
    "sd_train_grad": {
        "regime": "saliencydecor",
        "mask_fill": "zero",
        "mask_gradient_mode": "train",
    },
    "sd_detached": {"regime": "saliencydecor", "mask_fill": "zero", "detach_clean": True},
}


def _whitening_problem():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(16, 12, generator=g) @ torch.randn(12, 12, generator=g) + 3.0
    weights = torch.randn(16, 12, generator=g)
    return full, weights


def _config(out_dir, **changes) -> TrainConfig:
    # gloo on the CPU, also on a machine with GPUs
    return tiny_config(out_dir, **{"device": "cpu", **changes})


def _worker(rank: int, port: int, out_dir: str) -> None:
    # What torchrun would set; Trainer finds the process group through these.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        full, weights = _whitening_problem()
        rows = full.view(WORLD, -1, 12)[rank].clone().requires_grad_(True)
        layer = convert_sync_whitening(GroupWhitening(12, group_size=5, momentum=0.5))
        assert isinstance(layer, SyncGroupWhitening)
        y = layer(rows)
        (y * weights.view(WORLD, -1, 12)[rank]).sum().backward()
        results["whiten"] = {
            "y": y.detach(),
            "grad": rows.grad,
            "running_mean": layer.running_mean.clone(),
            "running_cov": layer.running_cov.clone(),
        }
        h = rows.detach().clone().requires_grad_(True)
        decor = decorrelation_term(h, group_size=5)
        decor.backward()
        results["decor"] = {"value": decor.detach(), "grad": h.grad}

        digits = load_dataset("digits")
        for name, changes in RUNS.items():
            trainer = Trainer(_config(os.path.join(out_dir, name), **changes), dataset=digits)
            trainer.fit()
            results[name] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn")
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_sync_whitening_equals_whitening_of_the_global_batch(ddp_results):
    _, ranks = ddp_results
    full, weights = _whitening_problem()
    x = full.clone().requires_grad_(True)
    ref = GroupWhitening(12, group_size=5, momentum=0.5)
    y = ref(x)
    (y * weights).sum().backward()
    for r, res in enumerate(ranks):
        part = slice(r * 8, (r + 1) * 8)
        torch.testing.assert_close(res["whiten"]["y"], y.detach()[part], rtol=1e-5, atol=1e-5)
        # The gradient reaching each rank's rows includes every rank's use of the global stats.
        torch.testing.assert_close(res["whiten"]["grad"], x.grad[part], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(res["whiten"]["running_mean"], ref.running_mean)
        torch.testing.assert_close(res["whiten"]["running_cov"], ref.running_cov)


def test_decorrelation_loss_is_that_of_the_global_batch(ddp_results):
    _, ranks = ddp_results
    full, _ = _whitening_problem()
    h = full.clone().requires_grad_(True)
    want = decorrelation_loss(h, group_size=5)
    want.backward()
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res["decor"]["value"], want.detach())
        # Summed over ranks (DDP then averages parameter gradients): world x the true gradient.
        torch.testing.assert_close(
            res["decor"]["grad"], WORLD * h.grad[r * 8 : (r + 1) * 8], rtol=1e-4, atol=1e-7
        )


@pytest.mark.parametrize("name", list(RUNS))
def test_ranks_agree_and_match_one_process_on_the_global_batch(ddp_results, tmp_path, name):
    out, ranks = ddp_results
    for key, value in ranks[0][name].items():
        assert torch.equal(value, ranks[1][name][key]), key
    # Only rank 0 wrote the run directory.
    assert (out / name / "checkpoints" / "epoch_0001.pt").is_file()
    single = Trainer(_config(tmp_path / name, **RUNS[name]), dataset=load_dataset("digits"))
    single.fit()
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0][name][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_train_refuses_a_batch_that_does_not_split_over_ranks(tmp_path, monkeypatch):
    from _internals import train_distributed as _distributed
    from _internals import train_loop as _loop

    from geomxai.train import ConfigError

    def two_ranks(device):
        return _distributed.DistEnv(rank=0, world_size=2)

    monkeypatch.setattr(_loop, "setup_distributed", two_ranks)
    with pytest.raises(ConfigError, match="batch_size is the global batch"):
        train(_config(tmp_path / "odd", batch_size=33), dataset=load_dataset("digits"))
