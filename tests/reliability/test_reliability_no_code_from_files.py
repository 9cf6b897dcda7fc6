"""No code from files: every path that loads a file geomxai did not necessarily write refuses a
pickle payload, and the payload never runs.

The payload's ``__reduce__`` calls ``open(marker, "w")``: if any loader unpickled it, the marker
file would exist. Each loading path is tried with each way of packing the payload.
"""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from reliability_helpers import one_error_line

from geomxai import CheckpointError, load_checkpoint, read_checkpoint
from geomxai.study import analyze_run, load_state_dict_file, resolve_model
from geomxai.train import CHECKPOINT_FORMAT, TrainConfig, train

pytestmark = pytest.mark.timeout(300)


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _zip(path, obj):
    torch.save(obj, path)


def _legacy(path, obj):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def _plain(path, obj):
    path.write_bytes(pickle.dumps(obj))


PACKINGS = {
    "zip-checkpoint": lambda path, p: _zip(
        path, {"format": CHECKPOINT_FORMAT, "version": 1, "model": p}
    ),
    "legacy-checkpoint": lambda path, p: _legacy(
        path, {"format": CHECKPOINT_FORMAT, "model_spec": p}
    ),
    "zip-state-dict": lambda path, p: _zip(path, {"state_dict": {"w": p}}),
    "bare-object": _zip,
    "plain-pickle": _plain,
}


def _through_cli(cli, *argv):
    status, text = cli(*argv)
    assert status == 2
    one_error_line(text)


def _resume(tmp_path, run, evil):
    shutil.copy(evil, run / "checkpoints" / "epoch_0001.pt")
    config = TrainConfig.from_dict(read_checkpoint(run / "checkpoints" / "epoch_0000.pt")["config"])
    train(config.replace(out_dir=str(run), resume=True, epochs=2))


def _analyze(tmp_path, run, evil):
    shutil.copy(evil, run / "checkpoints" / "epoch_0001.pt")
    analyze_run(run, probe_size=8, progress=False, cache=False)


LOADERS = {
    "read_checkpoint": lambda tmp_path, run, evil, cli: read_checkpoint(evil),
    "load_checkpoint": lambda tmp_path, run, evil, cli: load_checkpoint(evil),
    "load_state_dict_file": lambda tmp_path, run, evil, cli: load_state_dict_file(evil),
    "resolve_model": lambda tmp_path, run, evil, cli: resolve_model(str(evil)),
    "resolve_model-weights": lambda tmp_path, run, evil, cli: resolve_model(
        "cnn2", weights=evil, in_channels=1, image_size=8
    ),
    "train-resume": lambda tmp_path, run, evil, cli: _resume(tmp_path, run, evil),
    "analyze_run": lambda tmp_path, run, evil, cli: _analyze(tmp_path, run, evil),
    "cli-analyze-model": lambda tmp_path, run, evil, cli: _through_cli(
        cli, "analyze", "--model", evil, "--data", "digits", "--out", tmp_path / "r.nc"
    ),
    "cli-analyze-weights": lambda tmp_path, run, evil, cli: _through_cli(
        cli,
        "analyze",
        "--model",
        "cnn2",
        "--weights",
        evil,
        "--data",
        "digits",
        "--out",
        tmp_path / "r.nc",
    ),
    "cli-layers": lambda tmp_path, run, evil, cli: _through_cli(cli, "layers", evil),
}


@pytest.mark.parametrize("packing", list(PACKINGS))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_pickle_payload_is_refused_and_never_runs(
    tmp_path, run, cli, monkeypatch, loader, packing
):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PAYLOAD_RAN"
    evil = tmp_path / "evil.pt"
    PACKINGS[packing](evil, Payload(marker))
    try:
        LOADERS[loader](tmp_path, run, evil, cli)
    except CheckpointError:
        pass
    else:
        if not loader.startswith("cli-"):
            pytest.fail(f"{loader} accepted a {packing} payload")
    assert not marker.exists(), f"{loader} ran the {packing} payload"


def test_the_refusal_says_why(tmp_path):
    evil = tmp_path / "evil.pt"
    PACKINGS["zip-checkpoint"](evil, Payload(tmp_path / "m"))
    with pytest.raises(CheckpointError, match="never unpickles code"):
        load_checkpoint(evil)
    PACKINGS["plain-pickle"](evil, Payload(tmp_path / "m"))
    with pytest.raises(CheckpointError, match="plain Python pickle, not a torch file"):
        load_checkpoint(evil)
    assert not (tmp_path / "m").exists()
