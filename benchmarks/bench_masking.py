"""MoRF masking curve: geomxai against Quantus ``PixelFlipping`` and against the forward-pass floor.

On 1000 Fashion-MNIST test images and the paper's 2-layer CNN (briefly trained with SGD so that
accuracy is not trivial), it computes the MoRF accuracy curve at 16 fractions (1/16, ..., 16/16
of the 784 pixels) with a zero fill, three ways, in the same run:

- ``geomxai.attribution.masking_curve(..., order="morf", fill="zero")``;
- Quantus ``PixelFlipping(features_in_step=49, perturb_baseline="black")``. Quantus removes
  ``features_in_step`` more pixels per step, ``ceil(784 / 49) = 16`` steps, in the order of
  ``np.argsort(-a)``; its "black" baseline is each image's minimum, which is 0 for every one of
  these images (checked below), i.e. the zero fill. Quantus reports the model output for class
  ``y``; given a model that outputs the one-hot of its argmax and ``softmax=False``, that output
  is 1 exactly when the image is classified correctly, so the mean over images is accuracy.
  ``np.argsort`` is not stable, so both implementations get a saliency map whose ties are
  already broken the way geomxai breaks them (stable: lower row-major index first); the script
  checks that geomxai's curve is the same on the raw and on the tie-broken maps;
- the floor: the same number of plain forward passes (16 x 1000 images) at the best batch size.

Reported: the largest absolute difference between the two curves (must be 0: same masks, same
model), geomxai's time against Quantus's and against the floor (targets on the CPU: within 1.1x
of the floor, no slower than Quantus). On a shared machine a multi-second run is rarely left
alone, so each runner is timed on one batch, ``--repeats`` times interleaved with the others, and
the minimum times ``n / batch_size`` estimates the full run (geomxai and Quantus pay their per-call
set-up on every batch there, the floor pays none); full runs are timed once as a cross-check.

    python benchmarks/bench_masking.py                 # CPU, 1 thread: results/masking_cpu.json
    python benchmarks/bench_masking.py --device cuda   # where a GPU exists: masking_cuda.json

Needs the ``bench`` extra (``pip install quantus``); geomxai itself never imports Quantus.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import math
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _machine import hardware_name, write_results  # beside this script
from torch import nn

from geomxai.attribution import masking_curve, saliency
from geomxai.models import cnn2

RESULTS = Path(__file__).resolve().parent / "results"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Train and test images (n, 1, 28, 28) in [0, 1] and labels, plus where they came from."""
    try:
        from geomxai.data import dataset_tensors, load_dataset

        with tempfile.TemporaryDirectory() as root:
            bundle = load_dataset("fashion-mnist", root=root)
            xtr, ytr = dataset_tensors(bundle.train)
            xte, yte = dataset_tensors(bundle.test)
        return xtr, ytr, xte, yte, "geomxai.data.load_dataset"
    except ImportError:
        pass

    def images(name):
        return torch.from_numpy(_read_idx(DEBIAN_DIR / name).copy()).float().div(255)[:, None]

    def labels(name):
        return torch.from_numpy(_read_idx(DEBIAN_DIR / name).astype(np.int64))

    return (
        images("train-images-idx3-ubyte.gz"),
        labels("train-labels-idx1-ubyte.gz"),
        images("t10k-images-idx3-ubyte.gz"),
        labels("t10k-labels-idx1-ubyte.gz"),
        str(DEBIAN_DIR),
    )


def train_briefly(model: nn.Module, x, y, *, steps: int, device, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None


class ArgmaxOneHot(nn.Module):
    """Outputs the one-hot of the wrapped model's prediction: Quantus's output for y = correct."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        return nn.functional.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)


def tie_broken(s: torch.Tensor) -> torch.Tensor:
    """Distinct values in geomxai's (stable) MoRF order: rank 1 gets h*w, rank h*w gets 1."""
    flat = s.flatten(1)
    p = flat.shape[1]
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    values = torch.arange(p, 0, -1, dtype=torch.float32).expand_as(flat).contiguous()
    return torch.empty_like(values).scatter_(1, order, values).view_as(s)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> tuple[float, object]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    parser.add_argument("--n", type=int, default=1000, help="test images")
    parser.add_argument("--steps", type=int, default=300, help="SGD steps of brief training")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-sizes", default="50,100,200")
    parser.add_argument("--out", default=None, help="JSON path (default results/masking_<dev>)")
    args = parser.parse_args(argv)

    import quantus  # the bench extra; geomxai itself never imports it

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    n_fractions, n_pixels = 16, 28 * 28
    step = n_pixels // n_fractions  # 49 pixels per step, 16 steps
    fractions = np.arange(1, n_fractions + 1) / n_fractions

    xtr, ytr, xte, yte, source = load_fashion_mnist()
    x, y = xte[: args.n].contiguous(), yte[: args.n].contiguous()
    torch.manual_seed(0)
    model = cnn2(in_channels=1, image_size=28).to(device)
    t_train, _ = timed(
        lambda: train_briefly(model, xtr, ytr, steps=args.steps, device=device), device
    )
    with torch.no_grad():
        clean_acc = float((model(x.to(device)).argmax(1).cpu() == y).float().mean())
    print(
        f"data: {source}; trained {args.steps} SGD steps in {t_train:.1f}s; "
        f"clean accuracy on {args.n} test images: {clean_acc:.3f}"
    )

    s = saliency(model, x, y, method="gradient")
    s_tb = tie_broken(s)
    flat = s.flatten(1)
    n_tied_images = int((torch.sort(flat, dim=1).values.diff(dim=1) == 0).any(dim=1).sum())
    if not bool((x.flatten(1).amin(1) == 0).all()):
        raise SystemExit("an image has a non-zero minimum: Quantus's 'black' would not be zero")

    xd, yd = x.to(device), y.to(device)
    qmodel = ArgmaxOneHot(model).eval()
    metric = quantus.PixelFlipping(
        features_in_step=step,
        perturb_baseline="black",
        abs=False,
        normalise=False,
        disable_warnings=True,
        display_progressbar=False,
    )
    x_np, y_np, a_np = x.numpy(), y.numpy(), s_tb[:, None].numpy()

    # Each runner computes the curve on the first `n` images in batches of `bs`.
    def ours(n, bs, sal=s_tb):
        return masking_curve(
            model,
            xd[:n],
            yd[:n],
            sal[:n],
            fractions=fractions,
            order="morf",
            fill="zero",
            batch_size=bs,
        ).values

    def floor(n, bs):
        with torch.no_grad():
            for _ in range(n_fractions):
                for i in range(0, n, bs):
                    model(xd[i : min(i + bs, n)])

    def quantus_curve(n, bs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "perturbation caused no change": zeros on zeros
            scores = metric(
                model=qmodel,
                x_batch=x_np[:n],
                y_batch=y_np[:n],
                a_batch=a_np[:n],
                channel_first=True,
                softmax=False,
                device=str(device),
                batch_size=bs,
            )
        return np.asarray(scores, dtype=np.float64).mean(axis=0)

    runners = {"geomxai": ours, "floor": floor, "quantus": quantus_curve}

    # Correctness first.
    curve = ours(args.n, max(batch_sizes))
    curve_raw = ours(args.n, max(batch_sizes), s)
    q_curve = quantus_curve(args.n, max(batch_sizes))
    max_diff = float(np.abs(curve - q_curve).max())
    raw_vs_tb = float(np.abs(curve - curve_raw).max())
    print(f"MoRF accuracy, geomxai: {np.round(curve, 3).tolist()}")
    print(f"MoRF accuracy, Quantus: {np.round(q_curve, 3).tolist()}")
    print(
        f"largest |geomxai - Quantus| = {max_diff:.2e}; raw vs tie-broken maps: "
        f"{raw_vs_tb:.2e} ({n_tied_images} of {args.n} maps have tied values)"
    )

    # Timing. On a shared machine a multi-second run is rarely left alone, so the estimate is
    # per batch: each runner does one batch of `bs` images (16 fractions, one call, so geomxai
    # and Quantus pay their per-call set-up on every batch while the floor pays none), repeated
    # and interleaved; the minimum, times n / bs, estimates the full run. Full runs at the best
    # batch size are timed once as a cross-check.
    chunk = {(k, b): math.inf for k in runners for b in batch_sizes}
    for b in batch_sizes:  # warm-up
        for fn in runners.values():
            fn(b, b)
    for _ in range(args.repeats):
        for b in batch_sizes:
            for k, fn in runners.items():
                t, _ = timed(lambda fn=fn, b=b: fn(b, b), device)
                chunk[(k, b)] = min(chunk[(k, b)], t)
    est = {key: t * args.n / key[1] for key, t in chunk.items()}
    best = {k: min(batch_sizes, key=lambda b, k=k: est[(k, b)]) for k in runners}
    t_ours, t_floor, t_q = (est[(k, best[k])] for k in ("geomxai", "floor", "quantus"))
    full = {k: timed(lambda k=k: runners[k](args.n, best[k]), device)[0] for k in runners}

    result = {
        "meta": {
            "device": device.type,
            "hardware": hardware_name(device),
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "torch": torch.__version__,
            "quantus": quantus.__version__,
            "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "data": source,
            "n_images": args.n,
            "train_steps": args.steps,
            "clean_accuracy": clean_acc,
            "repeats": args.repeats,
            "timing": "min over repeats of one batch, times n / batch_size",
        },
        "fractions": fractions.tolist(),
        "curve_geomxai": curve.tolist(),
        "curve_quantus": q_curve.tolist(),
        "max_abs_diff": max_diff,
        "raw_vs_tiebroken_max_abs_diff": raw_vs_tb,
        "images_with_tied_saliency": n_tied_images,
        "seconds_estimated": {k: {str(b): est[(k, b)] for b in batch_sizes} for k in runners},
        "seconds_full_run_once": full,
        "best_batch_size": best,
        "ratio_to_floor": t_ours / t_floor,
        "ratio_to_floor_same_batch": est[("geomxai", best["floor"])] / t_floor,
        "speedup_vs_quantus": t_q / t_ours,
    }
    print(
        f"estimated full run: geomxai {t_ours * 1e3:.0f} ms (batch {best['geomxai']}), "
        f"floor {t_floor * 1e3:.0f} ms (batch {best['floor']}), "
        f"Quantus {t_q * 1e3:.0f} ms (batch {best['quantus']})"
    )
    print("full runs timed once: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in full.items()))
    print(
        f"ratio to floor: {result['ratio_to_floor']:.3f} "
        f"(same batch: {result['ratio_to_floor_same_batch']:.3f}); "
        f"speed-up over Quantus: {result['speedup_vs_quantus']:.2f}x"
    )
    write_results(result, args.out, f"masking_{device.type}.json")
    if max_diff != 0.0:
        print("FAIL: the curves differ", file=sys.stderr)
        sys.exit(1)
    return result


if __name__ == "__main__":
    main()
