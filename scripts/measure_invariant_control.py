"""Issue 23 measurement (a few minutes, one CPU thread): cnn2 on digits, regular and dbn (whitening in the path), 8 epochs; per final model:
live units, entanglement on live/all units, and which metrics pass the control."""

import json
import sys
import warnings

import torch

from geomxai import load_checkpoint
from geomxai.attribution import gradient_entanglement
from geomxai.rundir import read_run
from geomxai.study import make_probe, reparametrization_control
from geomxai.train import TrainConfig, train

torch.set_num_threads(1)
warnings.simplefilter("ignore")
out = {}
for regime in ("regular", "dbn"):
    cfg = TrainConfig(
        dataset="digits",
        model="cnn2",
        regime=regime,
        epochs=8,
        batch_size=32,
        group_size=8,
        lr=0.05,
        progress=False,
        seed=0,
        out_dir=f"{sys.argv[1] if len(sys.argv) > 1 else 'runs/measure-control'}/{regime}",
    )
    run_dir = train(cfg)
    run = read_run(run_dir)
    model, _ = load_checkpoint(run.checkpoints[run.epochs[-1]])
    probe = make_probe("digits", 360)
    ds = reparametrization_control(model, probe.images, probe.labels)
    out[regime] = {
        "probe_acc": float(ds.accuracy.sel(model="original")),
        "n_live_units": float(ds.n_live_units.sel(model="original")),
        "n_dead_units": float(ds.n_dead_units.sel(model="original")),
        "entanglement_live": gradient_entanglement(model, probe.images, probe.labels),
        "entanglement_all": gradient_entanglement(model, probe.images, probe.labels, units="all"),
        "logit_change_over_spread": float(ds.logit_max_rel_diff),
        "saliency_change_over_norm": float(ds.saliency_max_rel_diff),
        "verdict": {str(k): str(v) for k, v in ds.verdict.to_series().items()},
        "relative_change": {str(k): float(v) for k, v in ds.relative_change.to_series().items()},
    }
print(json.dumps(out, indent=1))
