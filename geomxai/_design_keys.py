"""The keys a design file's ``[study]`` and ``[analysis]`` tables may hold, owned once.

The design reader (:mod:`geomxai.pipeline`) reads them; the trainer (``geomxai train --config``
on a design or profile) refuses a typo in them, and cannot import the reader, which sits above
it. Both take the lists from here.
"""

from __future__ import annotations

DESIGN_STUDY_KEYS = ("name", "title", "description", "seeds", "runs", "out", "fallback_dataset")
"""``[study]`` keys of a design (a ``[train]`` table or ``[[cells]]``)."""

PROFILE_STUDY_KEYS = ("name", "regimes", "seeds", "fallback_dataset")
"""``[study]`` keys of a profile of the older layout (training fields at the top level)."""

CHECKPOINT_POLICIES = ("all", "final", "spread")
"""Which checkpoints of a run the analysis measures: every one, the last, or about six spread
over training plus the last two."""

KEEP_POLICIES = ("all", "final")
"""Which per-checkpoint arrays a per-run result keeps: those of every analysed checkpoint (the
over-epochs figures of a small study), or the final checkpoint's only (a study of many runs)."""

STUDY_ANALYSIS_KEYS = {
    "checkpoints": CHECKPOINT_POLICIES,
    "keep": KEEP_POLICIES,
    "control": bool,
    "keep_checkpoint": bool,
}
"""The ``[analysis]`` keys the study reads itself, beside the AnalysisOptions fields: the
choices of a string key, or ``bool``."""
