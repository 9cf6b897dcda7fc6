"""Checkpoints: round trip, refused code, truncation, foreign files, atomic writes."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import geomxai
from geomxai import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from geomxai.train import TrainConfig, build_from_spec, model_spec


def _payload(config: TrainConfig):
    spec = model_spec(config, in_channels=1, num_classes=10, image_size=28)
    model = build_from_spec(spec)
    return model, {
        "config": config.to_dict(),
        "model_spec": spec,
        "model": model.state_dict(),
        "epoch": 1,
    }


def test_round_trip(tmp_path, seed):
    config = TrainConfig(regime="regular", epochs=3, out_dir=str(tmp_path))
    model, payload = _payload(config)
    path = save_checkpoint(tmp_path / "c.pt", payload)
    loaded, loaded_config = load_checkpoint(path)
    assert loaded_config == config
    assert not loaded.training
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    # Readable by plain torch with weights_only, as promised.
    assert torch.load(path, weights_only=True)["epoch"] == 1


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "geomxai-checkpoint", "model": Exploit()}, path)
    with pytest.raises(CheckpointError, match="never unpickles code"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    config = TrainConfig(out_dir=str(tmp_path))
    _, payload = _payload(config)
    path = save_checkpoint(tmp_path / "c.pt", payload)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_foreign_state_dict_is_named(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a geomxai checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    config = TrainConfig(out_dir=str(tmp_path))
    _, payload = _payload(config)
    path = save_checkpoint(tmp_path / "c.pt", payload)
    before = path.read_bytes()

    def exploding_save(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**payload, "epoch": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_public_name():
    assert geomxai.load_checkpoint is load_checkpoint
