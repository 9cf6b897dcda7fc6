"""Checkpoints that hold tensors and plain data only, written atomically, read without pickle code."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from geomxai.train._rundir import write_atomic

FORMAT = "geomxai-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A file that is not a readable geomxai checkpoint: foreign, truncated or carrying code."""


def save_checkpoint(path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors and plain data) to ``path`` atomically.

    The file is written next to its destination under a temporary name, flushed to disk and
    renamed, so a crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    return write_atomic(path, lambda fh: torch.save(payload, fh), binary=True)


def read_checkpoint(path, *, map_location="cpu") -> dict[str, Any]:
    """The raw contents of a geomxai checkpoint, read with ``weights_only=True``.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        The file is truncated or corrupt, carries pickled code (which is never run), or is not a
        geomxai checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {str(path)!r}: it holds objects other than tensors and plain data, "
            "and geomxai never unpickles code. Re-save its state_dict with torch.save "
            f"(details: {str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read {str(path)!r}: the file is truncated or corrupt ({err})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a geomxai checkpoint (no format={FORMAT!r} entry). For a bare "
            "state_dict of a torchvision or own model, build the model and call load_state_dict, "
            "or use `geomxai analyze --model torchvision:NAME --weights FILE`"
        )
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {payload['version']}; this geomxai reads up to "
            f"{VERSION}. Upgrade geomxai"
        )
    return payload


def load_checkpoint(path, *, map_location="cpu"):
    """Rebuild the model of a geomxai checkpoint, in eval mode, with its config.

    Parameters
    ----------
    path : path-like
        A ``.pt`` file written by :func:`geomxai.train.train`.
    map_location : str or torch.device
        Where the tensors go.

    Returns
    -------
    model : geomxai.models.FeatureModel
    config : geomxai.train.TrainConfig
    """
    from geomxai.train._build import build_from_spec
    from geomxai.train._config import TrainConfig

    payload = read_checkpoint(path, map_location=map_location)
    model = build_from_spec(payload["model_spec"])
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{str(path)!r}: weights do not fit its model spec ({err})") from err
    config = TrainConfig.from_dict({**payload["config"], "resume": False})
    return model.eval(), config
