"""Checkpoints that hold tensors and plain data only, written atomically, read without pickle code."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import pickle
import shutil
import zipfile
from collections.abc import Mapping
from numbers import Integral
from pathlib import Path
from typing import Any

import torch

from geomxai._checks import Interval
from geomxai._fs import naming_errors, write_atomic

FORMAT = "geomxai-checkpoint"
"""A checkpoint's ``format`` entry (public as ``geomxai.train.CHECKPOINT_FORMAT``)."""
VERSION = 1
"""The ``version`` entry this trainer writes (public as ``geomxai.train.CHECKPOINT_VERSION``)."""

# The first bytes of the two formats torch.save writes: a zip archive (torch >= 1.6), or the
# legacy pickle stream, which opens with protocol 2 and torch's magic number as a LONG1.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_PICKLE_MAGIC = b"\x80"  # PROTO, then the protocol (2 to 5)

# A bool is not an integer here either, although Python counts True as 1: one rule, the package's.
_INTEGER = Interval(Integral, None, None)
_POSITIVE = Interval(Integral, 1, None)

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


IDENTITY_FIELDS = ("config_hash", "seed", "regime")
"""What a checkpoint's ``identity`` entry holds: the run it belongs to."""

_FREE_MARGIN = 64 * 1024
"""Bytes a write leaves free beyond the file itself (the folder entry, the file system's own)."""


def run_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of the run a config describes: a hash of every field a resume keeps, and
    the seed and regime, which results are labelled with.

    Fields a resumed run may change (``epochs``, ``resume``, ``progress``, ``out_dir``) are left
    out of the hash, and a field the config lacks counts as its default, so a run keeps one
    identity over resumes, moves and geomxai versions that add fields.

    Raises
    ------
    ValueError
        ``config`` is not a valid TrainConfig (the message names the field).
    """
    from geomxai.train._config import RESUMABLE_CHANGES, TrainConfig

    full = TrainConfig.from_dict({**config, "resume": False}).to_dict()
    kept = {k: v for k, v in sorted(full.items()) if k not in RESUMABLE_CHANGES}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]
    return {"config_hash": digest, "seed": full["seed"], "regime": full["regime"]}


def _need(nbytes: int) -> str:
    return f"need about {max(nbytes / 2**20, 0.1):.1f} MB"


def _no_space(path: Path, nbytes: int, free: int | None = None) -> OSError:
    have = "" if free is None else f", {free / 2**20:.1f} MB free"
    return OSError(errno.ENOSPC, f"No space left on device ({_need(nbytes)}{have})", str(path))


def save_checkpoint(path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors and plain data) to ``path`` atomically.

    The file is written next to its destination under a temporary name, flushed to disk and
    renamed, so a crash leaves either the old file or the new one, never half of one. The
    payload is stamped with ``format``, ``version`` and ``writer`` (``"geomxai X.Y.Z"``), and,
    when it has a ``config``, with ``identity`` (:func:`run_identity`: config hash, seed,
    regime), by which the analysis refuses a checkpoint copied in from another run.

    The payload is serialised in memory first: its size is then known, so a disk without room
    for it is refused before anything is written, and a disk that fills during the write
    raises an ordinary ``OSError`` (torch's own writer would end in "unexpected pos").

    Raises
    ------
    OSError
        ``ENOSPC`` "No space left on device (need about N MB ...)" naming ``path``, or what else
        the write met; the previous file at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "writer": _writer(), **payload}
    if isinstance(payload.get("config"), Mapping) and "identity" not in payload:
        try:
            payload["identity"] = run_identity(payload["config"])
        except (KeyError, TypeError, ValueError):
            pass  # not a TrainConfig (a hand-made checkpoint): nothing to identify it by
    buffer = io.BytesIO()
    with naming_errors(path):
        torch.save(payload, buffer)
    data = buffer.getbuffer()
    nbytes = data.nbytes
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    # A file being replaced frees its blocks only after the rename; count it as taken.
    if free is not None and free < nbytes + _FREE_MARGIN:
        raise _no_space(path, nbytes, free)
    try:
        return write_atomic(path, lambda fh: fh.write(data), binary=True)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(path, nbytes) from err
        raise


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
    if not _INTEGER.accepts(version):
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
        wrong = not (_INTEGER.accepts(value) if kind is int else isinstance(value, kind))
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


def _spec_model(spec: dict, path):
    """The model ``spec`` describes, built on the meta device (no memory is allocated, so a
    spec that asks for 10**13 classes costs nothing); CheckpointError naming ``path`` if it
    cannot be built."""
    from geomxai.train._build import build_from_spec

    for key in ("in_channels", "num_classes", "image_size"):
        value = spec.get(key)
        if not _POSITIVE.accepts(value):
            raise CheckpointError(
                f"{str(path)!r}: its model_spec cannot be built: {key} must be a positive integer; got "
                f"{value!r}, so the file was edited or damaged; use a checkpoint written by "
                "`geomxai train`"
            )
    try:
        with torch.device("meta"):
            return build_from_spec(spec)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{str(path)!r}: its model_spec cannot be built ({type(err).__name__}: {err})"
        ) from err


def check_weights(spec: dict, weights: Mapping, path) -> None:
    """Refuse weights that do not fit ``spec`` (names and shapes, before any model of that
    size is built) or that hold NaN or infinite values; the CheckpointError names ``path``."""
    expected = {k: tuple(v.shape) for k, v in _spec_model(spec, path).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        shapes = [
            f"{k}: spec {expected[k]}, weights {got[k]}"
            for k in sorted(set(expected) & set(got))
            if expected[k] != got[k]
        ][:3]
        raise CheckpointError(
            f"{str(path)!r}: its weights do not fit its model_spec ("
            + "; ".join(
                part
                for part in (
                    f"missing {missing}" if missing else "",
                    f"unexpected {extra}" if extra else "",
                    "; ".join(shapes),
                )
                if part
            )
            + "); the file was edited or damaged"
        )
    bad = [
        k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise CheckpointError(
            f"{str(path)!r}: its weights hold NaN or infinite values (in {', '.join(bad[:3])}"
            + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            + "); a diverged or damaged model cannot be analysed or resumed. Use an earlier "
            "checkpoint of the run"
        )


def _is_int(value) -> bool:
    return _INTEGER.accepts(value)


def _plain_number(value) -> bool:
    # Any float, NaN and inf included: a diverged epoch records them.
    return isinstance(value, float) or _INTEGER.accepts(value)


def check_metrics_entry(payload: dict[str, Any], path, epoch: int) -> dict[str, Any] | None:
    """The checkpoint's copy of its epoch's metrics line (None if it has none), after checking
    it is one: a mapping of names to plain numbers, strings or null, with ``epoch`` = ``epoch``.
    """
    if "metrics" not in payload:
        return None
    metrics = payload["metrics"]
    where = f"{str(path)!r}: its 'metrics' entry"
    if not isinstance(metrics, dict):
        raise CheckpointError(
            f"{where} must be a mapping of names to numbers (a metrics.jsonl line); got "
            f"{type(metrics).__name__}, so the file was edited or damaged"
        )
    for key, value in metrics.items():
        if not isinstance(key, str) or not (
            value is None or isinstance(value, str) or _plain_number(value)
        ):
            raise CheckpointError(
                f"{where} must map names to plain numbers or strings; got {key!r}: "
                f"{type(value).__name__}, so the file was edited or damaged"
            )
    if metrics.get("epoch") != epoch or not _is_int(metrics.get("epoch")):
        raise CheckpointError(
            f"{where} is for epoch {metrics.get('epoch')!r}, but the checkpoint holds epoch "
            f"{epoch}; the file was edited or damaged"
        )
    return metrics


def check_resume_payload(payload: dict[str, Any], path, *, epoch: int) -> None:
    """Refuse a checkpoint that a resume cannot continue from, before anything of the run is
    touched: every entry the resume restores is checked here, and a CheckpointError names
    ``path``.

    Checked: ``epoch`` equals the file's epoch ``epoch``; the weights fit ``model_spec`` and are
    finite; the optimizer state loads into an SGD over those weights, with momentum buffers of
    the parameters' shapes; the scheduler has a finite ``base_lr`` and a step count; the
    metrics copy is a metrics line of that epoch.
    """
    path = str(path)
    check_payload(payload, path, RESUME_KEYS)
    if payload["epoch"] != epoch or epoch < 0:
        raise CheckpointError(
            f"{path!r}: its 'epoch' entry says {payload['epoch']}, but the file is the "
            f"checkpoint of epoch {epoch}; the file was edited or damaged. Move it out of the "
            "run's checkpoints/ folder to resume from the one before"
        )
    check_weights(payload["model_spec"], payload["model"], path)
    scheduler = payload["scheduler"]
    base_lr, step = scheduler.get("base_lr"), scheduler.get("step")
    if not (_plain_number(base_lr) and math.isfinite(base_lr) and base_lr > 0) or not (
        _is_int(step) and step >= 0
    ):
        raise CheckpointError(
            f"{path!r}: its 'scheduler' entry must hold a finite positive 'base_lr' and a "
            f"non-negative integer 'step'; got {scheduler!r:.200}, so the file was edited or "
            "damaged"
        )
    model = _spec_model(payload["model_spec"], path)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [torch.nn.Parameter(payload["model"][n].detach().clone()) for n in names]
    trial = torch.optim.SGD(params, lr=1.0, momentum=0.9)
    try:
        trial.load_state_dict(payload["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        raise CheckpointError(
            f"{path!r}: its 'optimizer' entry does not fit the model's parameters "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the file "
            "was edited or damaged"
        ) from err
    for name, param in zip(names, params, strict=True):
        buf = trial.state.get(param, {}).get("momentum_buffer")
        if buf is not None and (
            not isinstance(buf, torch.Tensor)
            or buf.shape != param.shape
            or not bool(torch.isfinite(buf).all())
        ):
            raise CheckpointError(
                f"{path!r}: its optimizer's momentum for {name} is not a finite tensor of the "
                f"parameter's shape {tuple(param.shape)}; the file was edited or damaged"
            )
    check_metrics_entry(payload, path, epoch)


def read_identity(path) -> dict[str, Any] | None:
    """The ``identity`` of a checkpoint (see :func:`run_identity`) without reading its tensors
    (they are memory-mapped, not loaded); derived from its ``config`` for checkpoints written
    before identities; None when it has neither."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        payload = read_checkpoint(path)  # raises the CheckpointError that says what it is
    if not isinstance(payload, dict):
        return None
    identity = payload.get("identity")
    if isinstance(identity, dict) and all(k in identity for k in IDENTITY_FIELDS):
        return {k: identity[k] for k in IDENTITY_FIELDS}
    if isinstance(payload.get("config"), Mapping):
        try:
            return run_identity(payload["config"])
        except (KeyError, TypeError, ValueError):
            return None
    return None


def check_run_identity(run_dir, run_config: Mapping[str, Any], checkpoints) -> None:
    """Refuse checkpoints of another run among ``checkpoints`` of the run in ``run_dir``.

    Each checkpoint's identity (config hash, seed, regime) must equal that of the run's
    ``config.json``: a checkpoint copied in from another run would otherwise be analysed and
    labelled with this run's regime and seed. Checkpoints with no identity and no config (not
    written by `geomxai train`) pass.

    Raises
    ------
    CheckpointError
        A checkpoint belongs to another run; the message names it, what differs, and the fix.
    ValueError
        ``config.json`` is not a valid TrainConfig (naming it).
    """
    run_dir = Path(run_dir)
    try:
        expected = run_identity(run_config)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{str(run_dir / 'config.json')!r} is not a valid run config ({err}); it was "
            "edited or damaged: restore it from a checkpoint's 'config' entry or retrain"
        ) from err
    for path in checkpoints:
        found = read_identity(path)
        if found is None or found == expected:
            continue
        diffs = [
            f"{k} {found[k]!r} (the run's: {expected[k]!r})"
            for k in IDENTITY_FIELDS
            if found[k] != expected[k]
        ]
        raise CheckpointError(
            f"{str(path)!r} belongs to another run: its " + ", ".join(diffs) + " differ from "
            f"{str(run_dir / 'config.json')!r}. Move it out of the run's checkpoints/ folder, "
            "or analyse it on its own (geomxai analyze --model FILE)"
        )


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
        geomxai cannot build (sizes are checked against the weights before the model is built,
        so a spec that asks for 10**13 classes allocates nothing); weights that do not fit the
        spec or hold NaN or infinite values.
    """
    from geomxai.train._build import build_from_spec
    from geomxai.train._config import TrainConfig

    payload = check_payload(read_checkpoint(path, map_location=map_location), path)
    check_weights(payload["model_spec"], payload["model"], path)
    try:
        model = build_from_spec(payload["model_spec"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
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
