"""What the analysis did to the inputs, on record: the transform, the resize and its factor.

A transform chosen for a user (a timm model's own data config) can resize a 32-pixel probe to
224 pixels and normalise it, which changes every number measured and takes minutes; the results
must say so, and a resize by more than :data:`RESIZE_WARN_FACTOR` is announced.
"""

from __future__ import annotations

import warnings

import torch

RESIZE_WARN_FACTOR = 2.0
"""A preprocessing that changes an image side by more than this factor (up or down) warns."""


class PreprocessingWarning(UserWarning):
    """The inputs were resized by more than :data:`RESIZE_WARN_FACTOR` before the analysis."""


class RecordingTransform:
    """A per-sample transform that remembers the first input's and output's shapes."""

    def __init__(self, transform):
        self.transform = transform
        self.in_shape: tuple[int, ...] | None = None
        self.out_shape: tuple[int, ...] | None = None

    def __call__(self, x):
        y = self.transform(x)
        if self.in_shape is None:
            self.in_shape = _shape(x)
            self.out_shape = _shape(y)
        return y

    def __repr__(self) -> str:
        return repr(self.transform)


def _shape(x) -> tuple[int, ...] | None:
    if isinstance(x, torch.Tensor):
        return tuple(int(s) for s in x.shape)
    size = getattr(x, "size", None)  # a PIL image: (width, height)
    if isinstance(size, tuple) and len(size) == 2:
        return (int(size[1]), int(size[0]))
    return None


def describe(transform) -> str:
    """A one-line description of a transform (``"none"`` for None)."""
    if transform is None:
        return "none"
    return " ".join(repr(transform).split())


def record(transform, *, where: str, stacklevel: int = 3, loaded=None) -> dict:
    """The attrs describing ``transform`` after it ran: ``preprocessing`` (the transform),
    ``input_size`` and ``resize_factor`` (when it saw an image), with a
    :class:`PreprocessingWarning` when an image side changed by more than the factor.

    ``loaded``: ``(original (h, w) or None, side)`` where the dataset resized its images to
    ``side`` pixels square on loading, before ``transform`` saw them (``imagefolder:``,
    ``caltech101``): the size on record is then the file's, not the loaded one.
    """
    attrs = {"preprocessing": describe(transform)}
    before = after = None
    if isinstance(transform, RecordingTransform) and transform.in_shape is not None:
        before, after = transform.in_shape, transform.out_shape
    if loaded is not None:
        original, side = loaded
        on_loading = f"resized to {side}x{side} on loading"
        attrs["preprocessing"] = (
            on_loading if transform is None else f"{on_loading}, then {describe(transform)}"
        )
        if original is not None:
            before = original
            if after is None:
                after = (side, side)
    if before is None or after is None or len(before) < 2 or len(after) < 2:
        return attrs
    h0, w0 = before[-2:]
    h1, w1 = after[-2:]
    if min(h0, w0, h1, w1) <= 0:
        return attrs
    factor = max(h1 / h0, w1 / w0, h0 / h1, w0 / w1)
    attrs["input_size"] = f"{h0}x{w0} -> {h1}x{w1}"
    attrs["resize_factor"] = float(max(h1 / h0, w1 / w0))
    if factor > RESIZE_WARN_FACTOR:
        warnings.warn(
            f"{where}: the inputs were resized from {h0}x{w0} to {h1}x{w1} pixels (a factor of "
            f"{factor:.1f}) by the preprocessing {attrs['preprocessing']}; every number "
            "measures the resized images, and a large resize costs time. Give transform= (or "
            "normalize='none', --normalize none) and image_size= to choose the size yourself",
            PreprocessingWarning,
            stacklevel=stacklevel,
        )
    return attrs
