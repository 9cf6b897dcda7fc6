"""Helpers of the reliability tests: tiny train fields, one-line errors, a read-only location."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from pathlib import Path

TRAIN_FIELDS = {
    "dataset": "digits",
    "model": "cnn2",
    "regime": "regular",
    "epochs": 1,
    "batch_size": 32,
    "train_subset": 64,
    "test_subset": 32,
    "group_size": 8,
    "lr": 0.05,
    "progress": False,
    "device": "cpu",
}


def toml_config(path: Path, out_dir: Path, **changes) -> Path:
    """A TOML profile for `geomxai train` with the tiny fields above."""
    fields = {**TRAIN_FIELDS, "out_dir": str(out_dir), **changes}
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
    return path


def one_error_line(text: str) -> str:
    """The single ERROR record of a CLI call (and that there is exactly one, no traceback)."""
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1, text
    assert "Traceback" not in text
    return errors[0]


# -- a read-only location ----------------------------------------------------------------------
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class ReadOnly:
    """Makes folders read-only for this process, for root too (chmod does not stop root).

    Every way geomxai writes goes through ``os.open`` (mkstemp, the lock file), ``open``
    (appends), ``os.mkdir``, ``os.replace``, ``os.unlink`` or ``os.chmod``; each raises, for a
    path under a read-only folder, the OSError a read-only mount (EROFS) or a folder without
    permission (EACCES) raises, naming the path. Reads are untouched.
    """

    def __init__(self, monkeypatch):
        self.roots: list[tuple[str, int]] = []
        real_open, real_io_open = os.open, io.open

        def check(target, code_for=None):
            if isinstance(target, int):
                return
            path = os.path.realpath(os.fsdecode(target))
            for root, code in self.roots:
                if path == root or path.startswith(root + os.sep):
                    raise OSError(code, os.strerror(code), os.fsdecode(target))

        def guarded(real):
            def call(path, *args, **kwargs):
                check(path)
                return real(path, *args, **kwargs)

            return call

        def guarded_two(real):
            def call(src, dst, *args, **kwargs):
                check(src)
                check(dst)
                return real(src, dst, *args, **kwargs)

            return call

        def os_open(path, flags, *args, **kwargs):
            if flags & _WRITE_FLAGS:
                check(path)
            return real_open(path, flags, *args, **kwargs)

        def py_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+"):
                check(file)
            return real_io_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(io, "open", py_open)
        monkeypatch.setattr(builtins, "open", py_open)
        for name in ("mkdir", "unlink", "remove", "rmdir", "chmod"):
            monkeypatch.setattr(os, name, guarded(getattr(os, name)))
        for name in ("replace", "rename"):
            monkeypatch.setattr(os, name, guarded_two(getattr(os, name)))

    def __call__(self, path, code: int = errno.EROFS) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.roots.append((os.path.realpath(path), code))
        return path


# A one-run study on digits (one epoch, tiny subsets): the study-level lock and claim tests.
STUDY_DESIGN = """\
[study]
name = "s"
seeds = [0]

[train]
dataset = "digits"
model = "cnn2"
epochs = 1
batch_size = 32
train_subset = 64
test_subset = 32
group_size = 8
lr = 0.05
device = "cpu"

[[cells]]
name = "regular"
regime = "regular"
"""
