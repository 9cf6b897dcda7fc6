"""The training configuration: one frozen dataclass, validated before any work starts."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from geomxai._checks import Interval
from geomxai._design_keys import DESIGN_STUDY_KEYS, PROFILE_STUDY_KEYS, STUDY_ANALYSIS_KEYS
from geomxai._fill import TRAINING_FILLS
from geomxai._fs import check_path_component
from geomxai._hints import close_matches, did_you_mean
from geomxai.train._masking import MASK_BY
from geomxai.whitening import DECORRELATION_KINDS, WHITENING_METHODS, check_iters

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "resume",
        "progress",
        "out_dir",
        "checkpoint_every_steps",
        "checkpoint_steps_epochs",
        "tensorboard_dir",
    }
)
"""Fields of :class:`TrainConfig` a resumed run may change: how long to go on, display, where
the directory now is, which extra (sub-epoch) checkpoints it keeps and where it logs; none of
them changes a weight. Declared beside the config, so the checkpoint's run identity and the run
directory's resume check read it from this leaf."""
REGIMES = ("regular", "sgt", "dbn", "saliencydecor")
"""The four training regimes, defined once here; other parts import ``geomxai.train.REGIMES``."""
PLACEMENTS = ("auto", "path", "aux")
MASK_GRADIENT_MODES = ("eval", "train")


class ConfigError(ValueError):
    """An invalid training configuration; the message names the field."""


MAX_CONFIG_BYTES = 1 << 20
"""The largest config file geomxai reads (1 MiB; a profile is a few hundred bytes)."""

MAX_SEED = 2**63 - 1
"""The largest seed: torch's generators take 64 bits, numpy's streams are derived from it."""


def read_config_file(path) -> str:
    """The text of a config file, refusing what is not a regular file of a sane size.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ConfigError
        ``path`` is a folder, a device (``/dev/zero``), a pipe, larger than
        :data:`MAX_CONFIG_BYTES`, or not UTF-8 text; the message names it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no config file at {str(path)!r}; check the path")
    if not path.is_file():
        raise ConfigError(
            f"{str(path)!r} is not a regular file (a folder, a device or a pipe); give a TOML "
            "config file such as configs/quick.toml"
        )
    with open(path, "rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{str(path)!r} is larger than {MAX_CONFIG_BYTES // 1024} KiB; a config is a few "
            "lines of TOML, so this is not one"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{str(path)!r} is not UTF-8 text, so not a TOML config") from err


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Saved with every checkpoint.

    Defaults follow design.md: SGD with momentum 0.9, lr 0.01 with cosine annealing, batch 128,
    decorrelation weight 0.01, KL weight 1.0, masking ratio 0.25, group size 16.

    Examples
    --------
    >>> cfg = TrainConfig(regime="sgt", epochs=1)
    >>> cfg.replace(mask_ratio=0.5).mask_ratio
    0.5
    >>> TrainConfig(regime="sgd")
    Traceback (most recent call last):
    ...
    geomxai.train._config.ConfigError: regime must be one of regular, sgt, dbn, saliencydecor; got 'sgd' (did you mean 'sgt'?)
    """

    regime: str = "regular"
    dataset: str = "fashion-mnist"
    model: str = "cnn2"
    epochs: int = 2
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    out_dir: str = "runs/default"
    train_subset: int | None = None
    test_subset: int | None = None
    resume: bool = False
    augment: bool = False
    # sub-epoch checkpoints (step_NNNNNNNN.pt every N optimizer steps, in the first epochs)
    checkpoint_every_steps: int | None = None
    checkpoint_steps_epochs: int | None = None
    # SaliencyDecor / baselines
    group_size: int = 16
    decor_weight: float = 0.01
    kl_weight: float = 1.0
    mask_ratio: float = 0.25
    whitening_eps: float = 1e-5
    whitening_momentum: float = 0.1
    whitening_method: str = "zca"
    whitening_iters: int | str = 5
    whitening_placement: str = "auto"
    decor_kind: str = "offdiag"
    mask_by: str = "abs"
    mask_fill: str = "uniform"
    detach_clean: bool = False
    mask_gradient_mode: str = "eval"
    # speed
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    cuda_graph: bool = False
    data_on_device: bool = True
    num_workers: int = 0
    deterministic: bool = True
    progress: bool = True
    # logging: each epoch's metrics also as TensorBoard scalars in this folder (None: only
    # metrics.jsonl)
    tensorboard_dir: str | None = None

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        _check_types(self)
        _choice("regime", self.regime, REGIMES)
        _choice("whitening_placement", self.whitening_placement, PLACEMENTS)
        _choice("decor_kind", self.decor_kind, DECORRELATION_KINDS)
        _choice("mask_by", self.mask_by, MASK_BY)
        _choice("mask_fill", self.mask_fill, TRAINING_FILLS)
        _choice("mask_gradient_mode", self.mask_gradient_mode, MASK_GRADIENT_MODES)
        _choice("whitening_method", self.whitening_method, WHITENING_METHODS)
        try:
            check_iters(self.whitening_iters, name="whitening_iters")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must lie in (0, 1); got mask_ratio={self.mask_ratio}")
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be 2 or more (a group of 1 only rescales); got group_size={self.group_size}"
            )
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1; got {name}={getattr(self, name)}")
        for name in ("seed", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be non-negative; got {name}={getattr(self, name)}")
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed must be at most 2**63 - 1; got seed={self.seed}")
        for name in ("train_subset", "test_subset", "checkpoint_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be None or at least 1; got {name}={value}")
        if self.checkpoint_steps_epochs is not None:
            if self.checkpoint_every_steps is None:
                raise ConfigError(
                    "checkpoint_steps_epochs limits the sub-epoch checkpoints to the first "
                    "epochs, but checkpoint_every_steps is None (none are written); set "
                    "checkpoint_every_steps or leave checkpoint_steps_epochs unset"
                )
            if self.checkpoint_steps_epochs < 1:
                raise ConfigError(
                    "checkpoint_steps_epochs must be None (every epoch) or at least 1; got "
                    f"checkpoint_steps_epochs={self.checkpoint_steps_epochs}"
                )
        for name in ("lr", "decor_weight", "kl_weight", "whitening_eps", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be non-negative; got {name}={getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must lie in [0, 1); got momentum={self.momentum}")
        if self.lr == 0:
            raise ConfigError("lr must be positive; got lr=0")
        if not 0.0 < self.whitening_momentum <= 1.0:
            raise ConfigError(
                f"whitening_momentum must lie in (0, 1]; got whitening_momentum={self.whitening_momentum}"
            )
        if self.cuda_graph:
            _check_cuda_graph(self)

    # ------------------------------------------------------------------ derived
    @property
    def uses_whitening(self) -> bool:
        return self.regime in ("dbn", "saliencydecor")

    @property
    def uses_masking(self) -> bool:
        return self.regime in ("sgt", "saliencydecor")

    @property
    def uses_decorrelation(self) -> bool:
        return self.regime == "saliencydecor" and self.decor_weight > 0

    # ------------------------------------------------------------------ conversion
    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise with the closest field names."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                close = close_matches(key, known)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"unknown config field {key!r}{hint}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read a TOML profile (top-level keys, or a ``[train]`` table) with optional overrides.

        The path must be a regular file of at most :data:`MAX_CONFIG_BYTES` (``/dev/zero`` or a
        pipe would be read without end); a ValueError names it otherwise. ``[train]``,
        ``[study]`` and ``[analysis]`` must be tables, and the last two, which training does not
        use, are checked too (their keys and the types of their values, the analysis options by
        :class:`geomxai.study.AnalysisOptions`): a typo there would otherwise be found only when
        a study reads the file, after training.
        """
        text = read_config_file(path)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{str(path)!r} is not valid TOML ({err})") from err
        _check_shared_tables(path, data)
        data = dict(data.get("train", data))
        # Tables other programs read from the same profile (the study's regimes and seeds, the
        # analysis options) are not training fields; they were checked above.
        for table in ("study", "analysis"):
            data.pop(table, None)
        data.update(overrides or {})
        return cls.from_dict(data)

    def run_dir(self) -> Path:
        return Path(self.out_dir)


def _check_shared_tables(path, data: dict) -> None:
    """Refuse what a profile holds for other programs in a shape they cannot read.

    ``[train]``, ``[study]`` and ``[analysis]`` are tables (``train = 5``, ``[[train]]`` and
    ``study = 5`` are not); ``[study]`` and ``[analysis]`` have only known keys, each with a
    value of its type. One ConfigError naming the file, the table and the key.
    """
    where = repr(str(path))

    def fail(table: str, key, message: str):
        at = f"[{table}]" + (f" {key}" if key is not None else "")
        raise ConfigError(f"{where}: {at} {message}")

    for table in ("train", "study", "analysis"):
        if table in data and not isinstance(data[table], dict):
            # The design reader's words: [[train]] is "got list".
            fail(table, None, f"must be a table; got {type(data[table]).__name__}")
    study = data.get("study", {})
    design = "train" in data or "cells" in data
    known = DESIGN_STUDY_KEYS if design else PROFILE_STUDY_KEYS
    for key, value in study.items():
        if key not in known:
            fail(
                "study",
                key,
                "is not a known key" + did_you_mean(key, known) + "; known: " + ", ".join(known),
            )
        if key == "seeds":
            if (
                not isinstance(value, list)
                or not value
                or not all(Interval(Integral, 0, 2**32 - 1).accepts(v) for v in value)
                or len(set(value)) != len(value)
            ):
                fail(
                    "study",
                    key,
                    f"must be a non-empty list of distinct integers in [0, 2**32); got {value!r}",
                )
        elif key == "regimes":
            if not isinstance(value, list) or not all(v in REGIMES for v in value):
                fail(
                    "study",
                    key,
                    f"must be a list of regime names ({', '.join(REGIMES)}); got {value!r}",
                )
        elif not isinstance(value, str) or not value.strip() or "\0" in value:
            fail("study", key, f"must be a non-empty string without NUL bytes; got {value!r}")
        if key == "name":
            try:
                check_path_component(value, "a study name")
            except ValueError as err:
                fail("study", key, str(err))
    analysis = data.get("analysis")
    if analysis:
        _check_analysis_table(analysis, lambda key, message: fail("analysis", key, message))


def _check_analysis_table(table: dict, fail) -> None:
    # At call time, through the public name: only a profile with an [analysis] table needs the
    # analysis options, and importing geomxai.train must not load the study package.
    from geomxai.study import AnalysisOptions

    options = {k: v for k, v in table.items() if k not in STUDY_ANALYSIS_KEYS}
    known = [f.name for f in dataclasses.fields(AnalysisOptions)]
    for key, kind in STUDY_ANALYSIS_KEYS.items():
        if key not in table:
            continue
        if kind is bool and not isinstance(table[key], bool):
            fail(key, f"must be true or false; got {table[key]!r}")
        if kind is not bool and table[key] not in kind:
            fail(key, f"must be one of {', '.join(kind)}; got {table[key]!r}")
    for key in options:
        if key not in known:
            every = [*known, *STUDY_ANALYSIS_KEYS]
            fail(
                key,
                "is not an analysis option"
                + did_you_mean(key, every)
                + "; known: "
                + ", ".join(every),
            )
    try:
        AnalysisOptions(**options)
    except (TypeError, ValueError) as err:
        fail(None, f"is not a valid set of analysis options: {err}")


_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a finite number",
    "bool": "true or false",
    "int|str": "an integer or a string",
}


def _check_types(config: TrainConfig) -> None:
    """Every field's value has its declared type: ``1.5`` is not an epoch count, ``"yes"`` is not
    ``true``, and a NaN or infinite rate would train with a term silently off or diverge.

    Checked before anything else (and before any file is written), so a CLI ``--set`` typo is
    refused with the field and its type named rather than failing later inside the trainer.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        declared = str(f.type).replace(" ", "")
        optional = declared.endswith("|None")
        kind = declared.removesuffix("|None")
        if value is None and optional:
            continue
        if kind == "bool":
            ok = isinstance(value, bool)
        # Python's own int and float (the config is written as JSON), by the package's one
        # rule for numbers: a bool is not one, a float is finite.
        elif kind == "int":
            ok = isinstance(value, int) and Interval(Integral, None, None).accepts(value)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and Interval(Real, None, None).accepts(value)
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind == "int|str":
            ok = isinstance(value, str) or (
                isinstance(value, int) and Interval(Integral, None, None).accepts(value)
            )
        else:  # pragma: no cover - a new field type must be added above
            raise TypeError(f"TrainConfig.{f.name} has an unchecked type {declared}")
        if not ok:
            expected = _TYPE_NAMES[kind] + (" or None" if optional else "")
            raise ConfigError(
                f"{f.name} must be {expected}; got {f.name}={value!r} ({type(value).__name__})"
            )
        if kind == "float" and not isinstance(value, float):
            object.__setattr__(config, f.name, float(value))  # lr=1 from TOML is 1.0
    for name in ("out_dir", "dataset", "model", "device"):
        if not getattr(config, name).strip():
            raise ConfigError(f"{name} must not be empty; got {name}={getattr(config, name)!r}")
    for name in ("out_dir", "tensorboard_dir"):
        if "\0" in (getattr(config, name) or ""):
            raise ConfigError(
                f"{name} must be a path without NUL bytes; got {name}={getattr(config, name)!r}"
            )
    if config.tensorboard_dir is not None and not config.tensorboard_dir.strip():
        raise ConfigError(
            "tensorboard_dir must be None (no TensorBoard log) or a folder; got "
            f"tensorboard_dir={config.tensorboard_dir!r}"
        )


def _check_cuda_graph(config: TrainConfig) -> None:
    """``cuda_graph=true`` captures the whole step in a CUDA graph: a CUDA device, eager
    kernels, and a step that never waits for the host (see :mod:`geomxai.train._graph`).

    The loop drops every epoch's last partial batch, so the batch shape is always static; one
    process and a device that resolves to CUDA are checked when training starts.
    """
    if config.device != "auto" and not config.device.startswith("cuda"):
        raise ConfigError(
            f"cuda_graph=true needs a CUDA device; got device={config.device!r}. Set "
            "device='cuda' (or 'auto' on a machine with a GPU), or cuda_graph=false"
        )
    if config.compile:
        raise ConfigError(
            "cuda_graph=true captures the eager step and cannot be combined with compile=true; "
            "set one of them to false"
        )
    if config.uses_whitening and config.whitening_method == "zca":
        raise ConfigError(
            f"cuda_graph=true needs a step without host synchronisation, but regime="
            f"{config.regime!r} whitens with whitening_method='zca', whose eigendecomposition "
            "reads its convergence status on the host; set whitening_method='newton_schulz' "
            "(whitening_iters='auto' makes it ZCA to fp32)"
        )


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        hint = did_you_mean(value, allowed, n=1)
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}{hint}")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line, the value read as TOML (so 0.5, true, "x" all work).

    Examples
    --------
    >>> parse_override("mask_ratio=0.5"), parse_override("regime=sgt")
    (('mask_ratio', 0.5), ('regime', 'sgt'))
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value; got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as regime=sgt
    return key, value
