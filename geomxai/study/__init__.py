"""Studies: analyse runs over checkpoints, regimes and seeds into one xarray Dataset.

This package reads run directories (through :mod:`geomxai.rundir`) and writes results; it
imports neither the trainer nor the report. Training a profile's runs and writing its report is
:func:`geomxai.pipeline.run_study`. ``geomxai.study.run_study`` and ``find_profile`` still
resolve, for code written before the move: they are forwarded to :mod:`geomxai.pipeline` on
first use, so ``import geomxai.study`` itself loads neither.

Every name is imported on first use (the table below says from where), so a command that only
builds a model (``geomxai layers``) loads no xarray, SciPy or dataset code. A new public name
joins the table under its module.
"""

from geomxai._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._analyze": [
            "AnalysisOptions",
            "Probe",
            "add_dynamics",
            "analyze_checkpoint",
            "analyze_run",
            "analyze_runs",
            "checkpoints_of",
            "combine_runs",
            "make_probe",
            "measure",
        ],
        "._checkpoints": ["analyze_checkpoints", "read_state", "step_from_name"],
        "._control": ["CONTROL_METRICS", "INVARIANCE_RTOL", "reparametrization_control"],
        "._design": [
            "BASELINES",
            "DEFAULT_CONTRASTS",
            "DOSE_REGIME",
            "EFFECT_WEIGHTS",
            "EFFECTS",
            "FACTORIAL_CELLS",
            "PAPER_STATED_DIFFERENCES",
            "dose_response",
            "factorial_effects",
            "paired_contrasts",
            "power_analysis",
            "runs_dataset",
        ],
        "._inputs": ["IMAGENET_MEAN", "IMAGENET_STD", "imagenet_normalization"],
        "._link": ["FIDELITY_METRICS", "GEOMETRY_METRICS", "link_geometry_fidelity"],
        "._preprocess": ["PreprocessingWarning"],
        "._probe": ["ProbeSizeWarning"],
        "._runlink": [
            "WITHIN_RUN_NOTE",
            "bh_adjust",
            "partial_spearman",
            "run_link",
            "within_run_link",
        ],
        "._sources": ["load_state_dict_file", "resolve_model"],
        "._study": [
            "analyze_model",
            "linked",
            "open_results",
            "open_results_file",
            "save_results",
            "squeeze_results",
            "stamp",
        ],
    },
)

_MOVED_TO_PIPELINE = ("STUDY_DEFAULTS", "find_profile", "run_study")
_lazy_getattr = __getattr__


def __getattr__(name: str):
    if name in _MOVED_TO_PIPELINE:
        # Imported here, at first use, not at the top: the pipeline imports this package.
        from geomxai import pipeline

        return getattr(pipeline, name)
    return _lazy_getattr(name)
