"""The one place the tests reach into geomxai's private modules (issue 22).

Every other test file uses geomxai as a user would, and ``tests/test_imports.py`` refuses a
private import anywhere else in the tree (code strings run in child processes included). What
is here is what a test still needs from inside the package, each with why; a refactor that
renames one of these breaks this file alone, and says which tests to look at.

Two kinds, each name with its reason: :data:`SEAMS`, what a test replaces to make a fault
happen at an exact point, count calls, or fake a configuration; and :data:`HELPERS`, private
helpers still tested on their own below the public function named beside each (they should move
to tests through that function; until then they are named here, not imported by the test).
"""

from __future__ import annotations

import geomxai._fs as fs
import geomxai.data._torchvision as data_torchvision
import geomxai.geometry._similarity as geometry_similarity
import geomxai.report._report as report_report
import geomxai.study._cache as study_cache
import geomxai.study._control as study_control
import geomxai.study._model as study_model
import geomxai.study._parallel as study_parallel
import geomxai.train._distributed as train_distributed
import geomxai.train._loop as train_loop
import geomxai.train._rundir as train_rundir
import geomxai.train._step as train_step
import geomxai.whitening._layer as whitening_layer
from geomxai._fill import table_fill
from geomxai._fs import (
    FREE_MARGIN,
    STALE_AFTER_S,
    atomic_path,
    check_nonempty_path,
    check_path_component,
    remove_stale_temps,
    write_atomic,
    write_bytes_atomic,
    write_text_atomic,
)
from geomxai.attribution._entanglement import _correlation as entanglement_correlation
from geomxai.attribution._layout import batch_stats, layout_of, position_fill
from geomxai.attribution._road import _road_impute_scipy as road_impute_scipy
from geomxai.attribution._road import impute_road
from geomxai.study._cache import _read_cache as read_cache
from geomxai.study._cache import _write_cache as write_cache
from geomxai.study._inputs import check_image_layout
from geomxai.study._nan import _merge_reasons as merge_reasons
from geomxai.train._distributed import DistEnv
from geomxai.train._rundir import append_metrics
from geomxai.whitening._groups import refuse_nonfinite
from geomxai.whitening._newton_schulz import auto_lower_bound
from geomxai.whitening._zca import zca_matrices

SEAMS = {
    "train_loop": "a training step that dies mid-epoch or turns the loss NaN, the finite-check "
    "interval, a guard around one epoch, the optimizer built with a tensor rate, two ranks",
    "train_step": "a KL term that blows up, a spy on the masking a step applies, a count of "
    "the input gradients one step takes",
    "train_distributed": "the process group a run sees, to fake two ranks on one machine",
    "DistEnv": "the process group a run sees, to fake two ranks on one machine",
    "whitening_layer": "the layer's non-finite refusal skipped, to show what it guards",
    "study_cache": "the measurement replaced by a fixed large Dataset (the race is the "
    "cache's, not the metrics') or by a counter of computed entries",
    "study_parallel": "a count of the local clusters the parallel analysis starts",
    "study_model": "analyze_model's inner step replaced, to count or fail at one point",
    "study_control": "the control's change measures and its invariant-by-construction table",
    "data_torchvision": "the Debian data folders the loaders look in, pointed at nothing",
    "geometry_similarity": "the CKA route (Gram or covariance) forced either way",
    "report_report": "one figure's saving made to fail; figure helpers on a single model",
    "fs": "a rename that fails, the host tag in temporary-file names",
    "train_rundir": "the metrics append made to fail as a full disk would",
}
"""Modules and names a test replaces (monkeypatch) or reads to make a fault happen at an exact
point, count calls, or pretend to be a configuration this machine is not; no public argument
injects these, and a real fault (a killed process, a full disk) would be slow or need root."""

HELPERS = {
    "table_fill": "the masking fill of a table (train's masking of tabular runs)",
    "FREE_MARGIN": "the free-space margin of atomic writes (every writer)",
    "STALE_AFTER_S": "when a leftover temporary file counts as stale (every writer)",
    "atomic_path": "atomic writes (save_results, collect_features_to_netcdf, the monitor)",
    "check_nonempty_path": "path checks of every command's --out, --runs and --reports",
    "check_path_component": "path checks of run and design names",
    "remove_stale_temps": "the cleanup of leftover temporaries (train's run directory)",
    "write_atomic": "atomic writes (checkpoints, run directories)",
    "write_bytes_atomic": "atomic writes (save_results, the study's per-run files)",
    "write_text_atomic": "atomic writes (config.json, metrics.jsonl)",
    "append_metrics": "train's metrics.jsonl append",
    "read_cache": "the analysis cache (analyze_checkpoint's cache_dir)",
    "write_cache": "the analysis cache (analyze_checkpoint's cache_dir)",
    "entanglement_correlation": "the correlation entanglement uses (entanglement_of)",
    "batch_stats": "the per-position statistics of the masking fills (masking_curve)",
    "layout_of": "the input layouts saliency and masking accept (as_batch, masking_curve)",
    "position_fill": "the masking fills per layout (masking_curve)",
    "impute_road": "the ROAD fill (road_impute, masking_curve with fill='road')",
    "road_impute_scipy": "the ROAD fill's SciPy reference (road_impute)",
    "check_image_layout": "analyze_model's channels-last check",
    "merge_reasons": "the NaN reasons of merged results (combine_runs, analyze_run)",
    "refuse_nonfinite": "the whitening's refusal of non-finite statistics (GroupWhitening)",
    "auto_lower_bound": "the spectrum bound of iters='auto' (ns_iterations)",
    "zca_matrices": "the ZCA matrices of a batch (zca_whiten, inv_sqrt_psd)",
}
"""Private helpers still tested on their own, with a slow reference or a property, below the
public function named beside each; each should move to a test through that function."""

__all__ = [  # every name of SEAMS and HELPERS (tests/test_imports.py checks it)
    "DistEnv",
    "FREE_MARGIN",
    "STALE_AFTER_S",
    "append_metrics",
    "atomic_path",
    "auto_lower_bound",
    "batch_stats",
    "check_image_layout",
    "check_nonempty_path",
    "check_path_component",
    "data_torchvision",
    "entanglement_correlation",
    "fs",
    "geometry_similarity",
    "impute_road",
    "layout_of",
    "merge_reasons",
    "position_fill",
    "read_cache",
    "refuse_nonfinite",
    "remove_stale_temps",
    "report_report",
    "road_impute_scipy",
    "study_cache",
    "study_control",
    "study_model",
    "study_parallel",
    "table_fill",
    "train_distributed",
    "train_loop",
    "train_rundir",
    "train_step",
    "whitening_layer",
    "write_atomic",
    "write_bytes_atomic",
    "write_cache",
    "write_text_atomic",
    "zca_matrices",
]
