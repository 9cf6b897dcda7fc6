"""Studies: analyse runs over checkpoints, regimes and seeds into one xarray Dataset."""

from geomxai.study._analyze import (
    AnalysisOptions,
    Probe,
    analyze_checkpoint,
    analyze_run,
    analyze_runs,
    checkpoints_of,
    make_probe,
    measure,
)
from geomxai.study._link import (
    FIDELITY_METRICS,
    GEOMETRY_METRICS,
    link_geometry_fidelity,
)
from geomxai.study._sources import load_state_dict_file, resolve_model
from geomxai.study._study import (
    analyze_model,
    find_profile,
    open_results,
    run_study,
    save_results,
)

__all__ = [
    "FIDELITY_METRICS",
    "GEOMETRY_METRICS",
    "AnalysisOptions",
    "Probe",
    "analyze_checkpoint",
    "analyze_model",
    "analyze_run",
    "analyze_runs",
    "checkpoints_of",
    "find_profile",
    "link_geometry_fidelity",
    "load_state_dict_file",
    "make_probe",
    "measure",
    "open_results",
    "resolve_model",
    "run_study",
    "save_results",
]
