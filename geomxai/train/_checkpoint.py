"""Checkpoints that hold tensors and plain data only, written atomically, read without pickle code."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from geomxai._fs import write_atomic

FORMAT = "geomxai-checkpoint"
VERSION = 1

# The first bytes of the two formats torch.save writes: a zip archive (torch >= 1.6), or the
# legacy pickle stream, which opens with protocol 2 and torch's magic number as a LONG1.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_PICKLE_MAGIC = b"\x80"  # PROTO, then the protocol (2 to 5)

_LOAD_KEYS = {"config": dict, "model_spec": dict, "model": Mapping}
"""What :func:`load_checkpoint` needs, and the type each entry must have."""

RESUME_KEYS = {
    **_LOAD_KEYS,
    "optimizer": dict,
    "scheduler": dict,
    "epoch": int,
}
"""What resuming a run from a checkpoint needs, and the type each entry must have."""


class CheckpointError(RuntimeError):
    """A file that is not a readable geomxai checkpoint: foreign, truncated or carrying code."""


def _writer() -> str:
    from geomxai import __version__

    return f"geomxai {__version__}"


def save_checkpoint(path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors and plain data) to ``path`` atomically.

    The file is written next to its destination under a temporary name, flushed to disk and
    renamed, so a crash leaves either the old file or the new one, never half of one. The
    payload is stamped with ``format``, ``version`` and ``writer`` (``"geomxai X.Y.Z"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "writer": _writer(), **payload}
    return write_atomic(path, lambda fh: torch.save(payload, fh), binary=True)


def _what_file(path: Path) -> str:
    """What kind of file ``path`` is, from its first bytes, for a message about a failed load."""
    with open(path, "rb") as fh:
        head = fh.read(len(_LEGACY_MAGIC))
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC):
        return "torch" if zipfile.is_zipfile(path) else "cut-zip"
    if head.startswith(_LEGACY_MAGIC):
        return "torch"
    if head.startswith(_PICKLE_MAGIC) and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    return "foreign"


def read_checkpoint(path, *, map_location="cpu") -> dict[str, Any]:
    """The raw contents of a geomxai checkpoint, read with ``weights_only=True``.

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        The path is a folder; the file is not a torch file at all (random bytes, text, a plain
        pickle); it is truncated or corrupt; it carries pickled code (which is never run); or
        it is a torch file but not a geomxai checkpoint. The message says which.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is a folder, not a checkpoint file; a checkpoint is a file written "
            "by `geomxai train` (run_dir/checkpoints/epoch_NNNN.pt)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except Exception as err:
        raise _load_error(path, err) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a geomxai checkpoint (no format={FORMAT!r} entry). For a bare "
            "state_dict of a torchvision or own model, build the model and call load_state_dict, "
            "or use `geomxai analyze --model torchvision:NAME --weights FILE`"
        )
    version = payload.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(
            f"{str(path)!r}: its checkpoint version must be an integer; got {version!r}"
        )
    if version > VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {version}; this geomxai reads up to "
            f"{VERSION}. Upgrade geomxai"
        )
    return payload


def _load_error(path: Path, err: Exception) -> CheckpointError:
    """The CheckpointError that says what ``torch.load`` met, judged by the file's first bytes
    (torch reports random bytes and refused code with one and the same "Weights only load
    failed")."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    kind = _what_file(path)
    if kind == "empty":
        return CheckpointError(f"{str(path)!r} is empty, not a checkpoint (a write cut short?)")
    if kind == "cut-zip":
        return CheckpointError(
            f"cannot read {str(path)!r}: the file is truncated or corrupt (a torch zip archive "
            "without its end); retrain or copy it again"
        )
    if kind == "pickle":
        return CheckpointError(
            f"{str(path)!r} is not a checkpoint: it is a plain Python pickle, not a torch file, "
            "and geomxai never unpickles code. Save tensors with torch.save"
        )
    if kind == "foreign":
        return CheckpointError(
            f"{str(path)!r} is not a checkpoint: it is not a PyTorch file (neither torch.save's "
            "zip archive nor its legacy format). Give a .pt file written by `geomxai train`"
        )
    if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
        return CheckpointError(
            f"refused to load {str(path)!r}: it holds objects other than tensors and plain data, "
            "and geomxai never unpickles code. Re-save its state_dict with torch.save "
            f"(details: {detail})"
        )
    return CheckpointError(
        f"cannot read {str(path)!r}: the file is truncated or corrupt ({detail})"
    )


def check_payload(payload: dict[str, Any], path, keys=None) -> dict[str, Any]:
    """``payload`` if it has every entry of ``keys`` (name -> type), else a CheckpointError
    naming the missing or mistyped entry and what wrote the file.

    ``model`` must also map names to tensors.
    """
    keys = _LOAD_KEYS if keys is None else keys
    writer = payload.get("writer")
    by = (
        f"written by {writer}"
        if isinstance(writer, str)
        else "its writer is not named, so it was not written by this geomxai's trainer"
    )
    for key, kind in keys.items():
        if key not in payload:
            raise CheckpointError(
                f"{str(path)!r} has no {key!r} entry ({by}); a checkpoint written by "
                "`geomxai train` has one, so this file was written or edited by other code"
            )
        value = payload[key]
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if not wrong and key == "model":
            wrong = not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
            )
        if wrong:
            expected = "a mapping of names to tensors" if key == "model" else kind.__name__
            raise CheckpointError(
                f"{str(path)!r}: its {key!r} entry must be {expected}; got "
                f"{type(value).__name__} ({by})"
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

    Raises
    ------
    FileNotFoundError
        No such file.
    CheckpointError
        Anything :func:`read_checkpoint` refuses; an entry the model needs (``config``,
        ``model_spec``, ``model``) missing or of the wrong type; a model spec or config this
        geomxai cannot build; weights that do not fit the spec.
    """
    from geomxai.train._build import build_from_spec
    from geomxai.train._config import TrainConfig

    payload = check_payload(read_checkpoint(path, map_location=map_location), path)
    try:
        model = build_from_spec(payload["model_spec"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{str(path)!r}: its model_spec cannot be built ({type(err).__name__}: {err})"
        ) from err
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{str(path)!r}: weights do not fit its model spec ({err})") from err
    try:
        config = TrainConfig.from_dict({**payload["config"], "resume": False})
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{str(path)!r}: its config is not a valid TrainConfig ({err})"
        ) from err
    return model.eval(), config
