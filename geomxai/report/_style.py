"""One look for every figure: a fixed colour per regime, labelled axes, readable sizes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are written headless; notebooks set their own backend first

import matplotlib.pyplot as plt  # noqa: E402

REGIME_COLOURS = {
    "regular": "#4c72b0",
    "sgt": "#dd8452",
    "dbn": "#55a868",
    "saliencydecor": "#c44e52",
}
_EXTRA = ["#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]


def regime_colour(regime: str) -> str:
    """The colour of a regime, the same in every figure of every report."""
    if regime in REGIME_COLOURS:
        return REGIME_COLOURS[regime]
    return _EXTRA[sum(map(ord, regime)) % len(_EXTRA)]


def new_figure(width: float = 6.0, height: float = 4.0, **kwargs):
    plt.rcParams.update(
        {
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt.subplots(figsize=(width, height), **kwargs)


def plain(text) -> str:
    r"""``text`` as matplotlib draws it letter for letter: every ``$`` escaped.

    A name from the data (a regime, a checkpoint, a layer, a saliency method) such as
    ``$\foo$.pt`` or ``a_$x^2$`` would otherwise be read as mathtext, which fails on an unknown
    command or typesets the rest. Every label the report draws from data goes through this.

    Examples
    --------
    >>> plain("a_$x^2$")
    'a_\\$x^2\\$'
    """
    return str(text).replace("$", r"\$")


def save(fig, path) -> str:
    """Lay out, write as PNG (the format is explicit: a path need not say it) and close."""
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)
    return str(path)
