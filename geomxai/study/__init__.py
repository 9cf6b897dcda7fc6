"""Studies: analyse runs over checkpoints, regimes and seeds into one xarray Dataset.

This package reads run directories (through :mod:`geomxai.rundir`) and writes results; it
imports neither the trainer nor the report. The statistics over trained
runs are :mod:`geomxai.stats`; a whole study (train, analyse, statistics, report, from one
design file) is :mod:`geomxai.pipeline`, above this package.

Every name is imported on first use (the table below says from where), so a command that only
builds a model (``geomxai layers``) loads no xarray, SciPy or dataset code. A new public name
joins the table under its module.
"""

from geomxai._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "._cache": ["analyze_checkpoint"],
        "._checkpoints": ["analyze_checkpoints", "read_state", "step_from_name"],
        "._degeneracy": ["warnings_of"],
        "._control": ["CONTROL_METRICS", "INVARIANCE_RTOL", "reparametrization_control"],
        "._dynamics": ["add_dynamics"],
        "._inputs": ["IMAGENET_MEAN", "IMAGENET_STD", "imagenet_normalization"],
        "._measure": ["measure"],
        "._model": ["analyze_model"],
        "._options": ["AnalysisOptions"],
        "._preprocess": ["PreprocessingWarning"],
        "._link": ["FIDELITY_METRICS", "GEOMETRY_METRICS", "link_geometry_fidelity"],
        "._provenance": ["cpu_name", "hardware", "stamp"],
        "._probe": ["Probe", "ProbeSizeWarning", "make_probe"],
        "._runs": ["analyze_run", "analyze_runs", "checkpoints_of", "combine_runs"],
        "._summary": [
            "control_record",
            "current_layout",
            "epoch_record",
            "run_record",
            "run_result",
            "variant_names",
        ],
        "._sources": ["is_model_file", "load_state_dict_file", "parse_model_args", "resolve_model"],
        "._results_io": [
            "linked",
            "open_results",
            "open_results_file",
            "save_results",
            "squeeze_results",
        ],
    },
)
