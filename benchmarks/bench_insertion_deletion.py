"""Deletion and insertion curves (RISE): geomxai against Quantus on the same model and inputs.

Two tiny set-ups, each trained here in seconds on data that ships with scikit-learn:

- **images**: the paper's 2-layer CNN (``cnn2``) on the 8x8 handwritten digits (pixels scaled to
  [0, 1]), 300 SGD steps on the first 1297 images, evaluated on the other 500;
- **tabular**: an MLP (30 -> 16 -> 2) on the breast-cancer table (569 x 30, standardised),
  300 full-batch Adam steps.

Saliency is the gradient map of the true class (``saliency(..., method="gradient")``), with its
ties broken in geomxai's stable MoRF order before either implementation sees it (``np.argsort``
in Quantus is not stable). Both curves follow the **softmax probability of the true class**:

- deletion: ``geomxai.attribution.deletion_curve(fill="zero")`` against Quantus
  ``PixelFlipping(features_in_step=s, perturb_baseline="black", softmax=True)``. Quantus removes
  ``s`` more positions per step in the order of ``argsort(-a)`` and reports the probability
  after each step; its "black" baseline is each input's minimum, which is 0 for every digit
  image (checked below); the standardised table gets the baseline value 0.0;
- insertion: Quantus has no insertion metric, so its ``PixelFlipping`` loop is given the start
  image as input (the same Gaussian blur geomxai uses, ``geomxai.attribution.gaussian_blur``, sigma 1
  pixel, for images; the per-feature batch mean for the table) and a ``perturb_func`` that puts
  the original values back at the indices it is handed: Quantus's machinery, RISE's insertion.

geomxai's curves include fraction 0 (the clean or start input); Quantus's start after its first
step, so the curves are compared at fractions ``1/m, ..., 1`` and the per-sample areas over those
same fractions (Quantus's ``calculate_auc`` uses ``dx=1``, i.e. ``m`` times geomxai's area over
fractions spaced ``1/m``). Reported: the largest absolute difference of the per-sample curves
and areas, and the time of each (minimum over ``--repeats`` interleaved full runs, same batch).

    python benchmarks/bench_insertion_deletion.py       # results/insertion_deletion.json

Needs the ``bench`` extra (``pip install quantus``); geomxai itself never imports Quantus.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from _machine import result_header, write_results  # beside this script
from torch import nn

from geomxai.attribution import deletion_curve, gaussian_blur, insertion_curve, saliency
from geomxai.models import cnn2

TOLERANCE = 1e-5  # float32 softmax in Quantus against float64 in geomxai


def tie_broken(s: torch.Tensor) -> torch.Tensor:
    """Distinct values in geomxai's (stable) MoRF order: rank 1 gets P, rank P gets 1."""
    flat = s.flatten(1)
    p = flat.shape[1]
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    values = torch.arange(p, 0, -1, dtype=torch.float32).expand_as(flat).contiguous()
    return torch.empty_like(values).scatter_(1, order, values).view_as(s)


def digits_setup(steps: int):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    xtr, ytr, xte, yte = x[:1297], y[:1297], x[1297:], y[1297:]
    torch.manual_seed(0)
    model = cnn2(in_channels=1, image_size=8)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ytr), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    if not bool((xte.flatten(1).amin(1) == 0).all()):
        raise SystemExit("a digit has a non-zero minimum: Quantus's 'black' would not be zero")
    start = gaussian_blur(xte, 1.0)
    return model, xte, yte, start, {"blur_sigma": 1.0}, "black", "blur"


def tabular_setup(steps: int):
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target, dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    start = x.mean(0, keepdim=True).expand_as(x).contiguous()
    return model, x, y, start, {}, 0.0, "mean"


def reveal(arr, indices, originals, **kwargs):
    """Quantus perturb_func for insertion: the original values at ``indices`` (batch, k)."""
    out = arr.copy()
    rows = np.arange(arr.shape[0])[:, None]
    out[rows, indices] = originals[rows, indices]
    return out


def run_case(name, setup, *, steps, n_steps, repeats):
    import quantus

    model, x, y, start, fill_kw, black, insertion_fill = setup(steps)
    with torch.no_grad():
        clean_acc = float((model(x).argmax(1) == y).float().mean())
    n = x.shape[0]
    s = tie_broken(saliency(model, x, y, method="gradient"))
    positions = s[0].numel()
    step = positions // n_steps
    if step * n_steps != positions:
        raise SystemExit(f"{positions} positions do not split into {n_steps} steps")
    fractions = np.arange(n_steps + 1) / n_steps
    x_np, y_np = x.numpy(), y.numpy()
    a_np = (s[:, None] if x.ndim == 4 else s).numpy()

    def ours(mode):
        if mode == "deletion":
            return deletion_curve(model, x, y, s, fractions=fractions, fill="zero", batch_size=n)
        return insertion_curve(
            model, x, y, s, fractions=fractions, fill=insertion_fill, batch_size=n, **fill_kw
        )

    def theirs(mode):
        if mode == "deletion":
            metric = quantus.PixelFlipping(
                features_in_step=step,
                perturb_baseline=black,
                abs=False,
                normalise=False,
                disable_warnings=True,
            )
            inputs = x_np
        else:
            metric = quantus.PixelFlipping(
                features_in_step=step,
                perturb_func=reveal,
                perturb_func_kwargs={"originals": x_np.reshape(n, -1)},
                abs=False,
                normalise=False,
                disable_warnings=True,
            )
            inputs = start.numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            curves = metric(
                model=model,
                x_batch=inputs,
                y_batch=y_np,
                a_batch=a_np,
                channel_first=True,
                softmax=True,
                device="cpu",
                batch_size=n,  # one batch: `reveal` indexes the originals by batch row
            )
        return np.asarray(curves, dtype=np.float64)

    out = {"n_samples": n, "n_positions": positions, "steps": n_steps, "clean_accuracy": clean_acc}
    for mode in ("deletion", "insertion"):
        ds = ours(mode)
        q = theirs(mode)
        mine = ds.probability.values[:, 1:]
        mine_auc = np.trapezoid(mine, fractions[1:], axis=1)
        # Quantus's calculate_auc is np.trapz(curve, dx=1), and np.trapz is gone from NumPy
        # 2.4, so its definition is applied here (and put on geomxai's scale, dx = 1/m).
        q_auc = np.trapezoid(q, dx=1.0, axis=1) / n_steps
        t_ours, t_q = np.inf, np.inf
        for _ in range(repeats):  # interleaved, so both see the same machine load
            t0 = time.perf_counter()
            ours(mode)
            t_ours = min(t_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs(mode)
            t_q = min(t_q, time.perf_counter() - t0)
        out[mode] = {
            "fill": ds.attrs["fill"],
            "max_abs_diff_curve": float(np.abs(mine - q).max()),
            "max_abs_diff_auc": float(np.abs(mine_auc - q_auc).max()),
            "mean_auc_geomxai": float(mine_auc.mean()),
            "mean_auc_quantus": float(q_auc.mean()),
            "mean_auc_geomxai_from_fraction_0": float(ds.auc.mean()),
            "seconds_geomxai": t_ours,
            "seconds_quantus": t_q,
            "speedup_vs_quantus": t_q / t_ours,
        }
        r = out[mode]
        print(
            f"{name:8s} {mode:9s} max|curve diff| {r['max_abs_diff_curve']:.1e}, "
            f"max|AUC diff| {r['max_abs_diff_auc']:.1e}; mean AUC geomxai "
            f"{r['mean_auc_geomxai']:.4f}, Quantus {r['mean_auc_quantus']:.4f}; "
            f"time geomxai {t_ours * 1e3:.1f} ms, Quantus {t_q * 1e3:.1f} ms "
            f"({r['speedup_vs_quantus']:.2f}x)"
        )
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="JSON path (default results/...)")
    args = parser.parse_args(argv)
    import quantus

    torch.set_num_threads(args.threads)
    result = result_header("insertion_deletion", torch.device("cpu"))
    result.update({"quantus": quantus.__version__, "tolerance": TOLERANCE})
    result["images"] = run_case(
        "digits", digits_setup, steps=args.steps, n_steps=16, repeats=args.repeats
    )
    result["tabular"] = run_case(
        "cancer", tabular_setup, steps=args.steps, n_steps=30, repeats=args.repeats
    )
    worst = max(
        result[case][mode][key]
        for case in ("images", "tabular")
        for mode in ("deletion", "insertion")
        for key in ("max_abs_diff_curve", "max_abs_diff_auc")
    )
    result["max_abs_diff"] = worst
    result["agree"] = worst <= TOLERANCE
    write_results(result, args.out, "insertion_deletion.json")
    if not result["agree"]:
        print(f"FAIL: geomxai and Quantus differ by {worst:.2e} > {TOLERANCE}", file=sys.stderr)
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
