"""Results before and after a refactor: make a results file from tiny runs, compare two of them.

    python compare_results.py make OUT.nc          # train (or reuse) tiny runs, analyse, link, save
    python compare_results.py compare REF.nc NEW.nc  # every variable, max abs difference, attrs diff

``make`` trains tiny cnn2 runs (2 epochs, the test suite's ``train_tiny`` settings) once into
``$REF_RUNS`` (default /tmp/ref_runs) and reuses them afterwards; the analysis cache of each run
(``run_dir/analysis``) is deleted before every analysis, so ``measure`` really runs each time.
Three groups are written into one netCDF file:

- ``digits``: regular, sgt, dbn, saliencydecor at seed 0 and regular at seed 1 on digits, default
  layers (the feature layer), with the geometry <-> fidelity link over epoch >= 1 (as a study);
- ``layers``: regular and saliencydecor on digits, two layers (``body`` and ``body.2``);
- ``blocks``: regular and saliencydecor on the synthetic ``blocks`` set (ground-truth masks, so
  the localisation variables exist).

Run ``make`` with the old code on ``PYTHONPATH`` for the reference (``git archive HEAD`` into a
folder), then with the new code, then ``compare``.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import xarray as xr

RUNS = Path(os.environ.get("REF_RUNS", "/tmp/ref_runs"))
GROUPS = ("digits", "layers", "blocks")


def _train(dataset: str, regime: str, seed: int) -> Path:
    from geomxai.rundir import run_name
    from geomxai.train import TrainConfig, train

    out = RUNS / f"{dataset}-{run_name(regime, seed)}"
    if (out / "checkpoints").is_dir() and len(list((out / "checkpoints").glob("epoch_*.pt"))) == 3:
        return out
    shutil.rmtree(out, ignore_errors=True)
    config = TrainConfig(
        regime=regime,
        dataset=dataset,
        model="cnn2",
        epochs=2,
        train_subset=256,
        test_subset=128,
        batch_size=64,
        device="cpu",
        seed=seed,
        out_dir=str(out),
        progress=False,
    )
    return Path(train(config))


def _analyse(run_dirs: list[Path], **options) -> xr.Dataset:
    from geomxai.study import analyze_runs, link_geometry_fidelity

    for run in run_dirs:
        shutil.rmtree(run / "analysis", ignore_errors=True)  # no cache: measure must run
    results = analyze_runs(run_dirs, progress=False, probe_size=64, batch_size=64, **options)
    link = link_geometry_fidelity(results, min_epoch=1, n_boot=200)
    return results.merge(link, combine_attrs="override")


def make(out: Path) -> None:
    import geomxai

    print(f"geomxai from {Path(geomxai.__file__).parent}")
    digits = [_train("digits", r, 0) for r in ("regular", "sgt", "dbn", "saliencydecor")]
    digits.append(_train("digits", "regular", 1))
    blocks = [_train("blocks", r, 0) for r in ("regular", "saliencydecor")]
    groups = {
        "digits": _analyse(digits),
        "layers": _analyse([digits[0], digits[3]], layers=("body", "body.2")),
        "blocks": _analyse(blocks),
    }
    out.unlink(missing_ok=True)
    for i, (name, ds) in enumerate(groups.items()):
        ds.to_netcdf(out, group=name, mode="w" if i == 0 else "a", engine="h5netcdf")
    print(f"wrote {out}")


def _max_abs(a: xr.DataArray, b: xr.DataArray) -> float:
    if a.dtype.kind not in "fiub" or b.dtype.kind not in "fiub":
        return 0.0 if a.equals(b) else math.inf
    a, b = xr.align(a, b, join="outer")
    x, y = np.asarray(a.values, float), np.asarray(b.values, float)
    both_nan = np.isnan(x) & np.isnan(y)
    diff = np.abs(x - y)
    diff[both_nan] = 0.0
    diff[np.isnan(diff)] = math.inf  # NaN on one side only
    return float(diff.max()) if diff.size else 0.0


def _attrs_diff(where: str, old: dict, new: dict) -> list[str]:
    """One line per attr removed or changed; the attrs only added share one line."""
    lines, added = [], []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            lines.append(f"  {where}: attr {key!r} removed (was {str(old[key])[:70]!r})")
        elif key not in old:
            added.append(key)
        elif str(old[key]) != str(new[key]):
            lines.append(
                f"  {where}: attr {key!r} changed {str(old[key])[:60]!r} -> {str(new[key])[:60]!r}"
            )
    if added:
        lines.append(f"  {where}: attrs added: {', '.join(added)}")
    return lines


def compare(ref: Path, new: Path) -> int:
    failures = 0
    for group in GROUPS:
        a = xr.open_dataset(ref, group=group, engine="h5netcdf").load()
        b = xr.open_dataset(new, group=group, engine="h5netcdf").load()
        print(f"\n== group {group}")
        print(f"{'variable':<26} {'dims':<42} {'max abs diff':>13}  result")
        names = sorted(set(a.variables) | set(b.variables))
        attr_lines = _attrs_diff("dataset", a.attrs, b.attrs)
        for name in names:
            if name not in b.variables or name not in a.variables:
                side = "new" if name not in a.variables else "reference"
                print(f"{name:<26} {'':<42} {'':>13}  only in {side}")
                failures += name not in b.variables
                continue
            va, vb = a[name], b[name]
            dims = str(tuple(va.dims))
            try:
                xr.testing.assert_allclose(va, vb)
                ok = "ok"
            except AssertionError:
                ok = "DIFFERS"
                failures += 1
            diff = _max_abs(va, vb)
            print(f"{name:<26} {dims[:42]:<42} {diff:>13.3g}  {ok}")
            attr_lines += _attrs_diff(name, va.attrs, vb.attrs)
        if attr_lines:
            print(f"-- attrs that differ in group {group} (values are not compared here):")
            print("\n".join(attr_lines))
    print(f"\n{failures} variable(s) differ or are missing")
    return failures


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(1 if compare(Path(sys.argv[2]), Path(sys.argv[3])) else 0)
    else:
        print(__doc__)
        sys.exit(2)
