"""Statistics of a study: pure functions of a runs table, used by every report.

The unit is a *run* (one trained model). A runs table (:func:`runs_dataset`) has one dim ``run``
with the coords ``regime``, ``seed`` and every varied field; every statistic here reads it and
never trains, analyses or renders anything:

* :func:`paired_contrasts` and :func:`factorial_effects`: differences between cells paired by
  seed, each summarised by the one t-interval over seeds;
* :func:`dose_response`: how a metric moves along one varied field;
* :func:`run_link` (pooled and within cells) and :func:`within_run_link`: geometry against
  fidelity across runs, and co-movement over training;
* :func:`power_analysis`: what the seed count can detect;
* :func:`convergence_summary`: where each cell's learning curves settle;
* :func:`adjust` and :func:`verdict`: the multiplicity correction of a family of claims and the
  one rule that turns a difference into "better" or "worse";
* :func:`tracked_pairs`, :func:`control_word` and :func:`identical_cells`: what a results
  file's link and control say, and which of its cells trained the same networks, read one way
  by every report.
"""

from geomxai.stats._contrasts import factorial_effects, paired_contrasts
from geomxai.stats._convergence import FLAT_TOLERANCE, convergence_summary
from geomxai.stats._dose import dose_response
from geomxai.stats._link import (
    WITHIN_RUN_NOTE,
    partial_spearman,
    run_link,
    within_cell_link,
    within_run_link,
)
from geomxai.stats._multiplicity import (
    CORRECTION_LABELS,
    CORRECTIONS,
    VERDICTS,
    adjust,
    bh_adjust,
    holm_adjust,
    verdict,
)
from geomxai.stats._power import DEFAULT_CONTRASTS, power_analysis
from geomxai.stats._readout import (
    CONTROL_WORDS,
    control_word,
    identical_cells,
    results_alpha,
    tracked_pairs,
)
from geomxai.stats._runs import (
    BASELINES,
    DOSE_REGIME,
    EFFECT_WEIGHTS,
    EFFECTS,
    FACTORIAL_CELLS,
    RUN_DIM,
    runs_dataset,
)
from geomxai.stats._tinterval import t_interval

__all__ = [
    "BASELINES",
    "CONTROL_WORDS",
    "CORRECTIONS",
    "CORRECTION_LABELS",
    "DEFAULT_CONTRASTS",
    "DOSE_REGIME",
    "EFFECTS",
    "EFFECT_WEIGHTS",
    "FACTORIAL_CELLS",
    "FLAT_TOLERANCE",
    "RUN_DIM",
    "VERDICTS",
    "WITHIN_RUN_NOTE",
    "adjust",
    "bh_adjust",
    "control_word",
    "convergence_summary",
    "dose_response",
    "factorial_effects",
    "holm_adjust",
    "identical_cells",
    "paired_contrasts",
    "partial_spearman",
    "power_analysis",
    "results_alpha",
    "run_link",
    "runs_dataset",
    "t_interval",
    "tracked_pairs",
    "verdict",
    "within_cell_link",
    "within_run_link",
]
