"""Studies: analyse runs over checkpoints, regimes and seeds into one xarray Dataset.

This package reads run directories (through :mod:`geomxai.rundir`) and writes results; it
imports neither the trainer nor the report. Training a profile's runs and writing its report is
:func:`geomxai.pipeline.run_study`. ``geomxai.study.run_study`` and ``find_profile`` still
resolve, for code written before the move: a module ``__getattr__`` forwards them to
:mod:`geomxai.pipeline` on first use, so ``import geomxai.study`` itself loads neither.
"""

from geomxai.study._analyze import (
    AnalysisOptions,
    Probe,
    add_dynamics,
    analyze_checkpoint,
    analyze_run,
    analyze_runs,
    checkpoints_of,
    combine_runs,
    make_probe,
    measure,
)
from geomxai.study._checkpoints import analyze_checkpoints, read_state, step_from_name
from geomxai.study._control import CONTROL_METRICS, INVARIANCE_RTOL, reparametrization_control
from geomxai.study._design import (
    BASELINES,
    DEFAULT_CONTRASTS,
    DOSE_REGIME,
    EFFECT_WEIGHTS,
    EFFECTS,
    FACTORIAL_CELLS,
    PAPER_STATED_DIFFERENCES,
    dose_response,
    factorial_effects,
    paired_contrasts,
    power_analysis,
    runs_dataset,
)
from geomxai.study._inputs import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalization
from geomxai.study._link import (
    FIDELITY_METRICS,
    GEOMETRY_METRICS,
    link_geometry_fidelity,
)
from geomxai.study._preprocess import PreprocessingWarning
from geomxai.study._probe import ProbeSizeWarning
from geomxai.study._runlink import (
    WITHIN_RUN_NOTE,
    bh_adjust,
    partial_spearman,
    run_link,
    within_run_link,
)
from geomxai.study._sources import load_state_dict_file, resolve_model
from geomxai.study._study import (
    analyze_model,
    linked,
    open_results,
    open_results_file,
    save_results,
    squeeze_results,
    stamp,
)

__all__ = [
    "BASELINES",
    "CONTROL_METRICS",
    "DEFAULT_CONTRASTS",
    "DOSE_REGIME",
    "EFFECTS",
    "EFFECT_WEIGHTS",
    "FACTORIAL_CELLS",
    "FIDELITY_METRICS",
    "GEOMETRY_METRICS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INVARIANCE_RTOL",
    "PAPER_STATED_DIFFERENCES",
    "WITHIN_RUN_NOTE",
    "AnalysisOptions",
    "PreprocessingWarning",
    "Probe",
    "ProbeSizeWarning",
    "add_dynamics",
    "analyze_checkpoint",
    "analyze_checkpoints",
    "analyze_model",
    "analyze_run",
    "analyze_runs",
    "bh_adjust",
    "checkpoints_of",
    "combine_runs",
    "dose_response",
    "factorial_effects",
    "imagenet_normalization",
    "link_geometry_fidelity",
    "linked",
    "load_state_dict_file",
    "make_probe",
    "measure",
    "open_results",
    "open_results_file",
    "paired_contrasts",
    "partial_spearman",
    "read_state",
    "power_analysis",
    "reparametrization_control",
    "resolve_model",
    "run_link",
    "runs_dataset",
    "save_results",
    "squeeze_results",
    "stamp",
    "step_from_name",
    "within_run_link",
]

_MOVED_TO_PIPELINE = ("STUDY_DEFAULTS", "find_profile", "run_study")


def __getattr__(name: str):
    if name in _MOVED_TO_PIPELINE:
        # Imported here, at first use, not at the top: the pipeline imports this package.
        from geomxai import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'geomxai.study' has no attribute {name!r}")
