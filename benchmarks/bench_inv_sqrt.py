"""Ways to get the group ZCA matrices on a device, forward + backward, timed against each other.

The ZCA matrix of each group is ``(C + eps I)^-1/2`` from a symmetric eigendecomposition. On a GPU
the batch of small (16 x 16) problems is the costly part of whitening a feature layer: this times,
for the covariances of an (n, d) float32 batch split in groups, the eigendecomposition routes

- ``eigh``: ``torch.linalg.eigh`` in float64 on the device (cuSOLVER's batched Jacobi; torch
  checks convergence, which waits for the device);
- ``eigh32``: the same in float32;
- ``magma``: ``eigh`` in float64 with MAGMA as torch's preferred linear-algebra library;
- ``host``: the float64 matrices copied to the CPU, LAPACK there, results copied back;

and Newton-Schulz (matmuls only; an approximation) at 5 and 10 iterations, each as
``W = f(C); grad(W, C, dW)`` with the covariances' own moments (``whiten``: also the moments
and the matrix product, i.e. ``zca_whiten(x)`` forward + backward). Ratios are to ``eigh``.

    python benchmarks/bench_inv_sqrt.py --device cuda
"""

from __future__ import annotations

import argparse

import torch
from _machine import result_header, write_results  # beside this script
from torch.utils.benchmark import Timer

from geomxai.whitening import eigh_routine, inv_sqrt_psd, ns_inv_sqrt, zca_whiten


def _eigh32(sym):
    evals, evecs = torch.linalg.eigh(sym.float())
    return evals.to(sym.dtype), evecs.to(sym.dtype)


def _magma(sym):
    saved = torch.backends.cuda.preferred_linalg_library()
    torch.backends.cuda.preferred_linalg_library("magma")
    try:
        return torch.linalg.eigh(sym)
    finally:
        torch.backends.cuda.preferred_linalg_library(saved)


def _host(sym):
    evals, evecs = torch.linalg.eigh(sym.cpu())
    return evals.to(sym.device, non_blocking=True), evecs.to(sym.device, non_blocking=True)


ROUTES = {
    "eigh": torch.linalg.eigh,
    "eigh32": _eigh32,
    "magma": _magma,
    "host": _host,
}


def median_ms(fn, min_run_time: float) -> float:
    fn()
    fn()
    timer = Timer(stmt="fn()", globals={"fn": fn})
    return 1e3 * timer.blocked_autorange(min_run_time=min_run_time).median


def bench(d: int, g: int, *, n: int, device, min_run_time: float) -> dict:
    gen = torch.Generator().manual_seed(d)
    x = torch.randn(n, d, generator=gen) @ torch.randn(d, d, generator=gen) / d**0.5
    x = x.to(device).requires_grad_(True)
    dy = torch.randn(n, d, generator=gen).to(device)
    xg = x.detach().double()
    xg = (xg - xg.mean(0))[:, : d - d % g].reshape(n, -1, g).transpose(0, 1)
    cov = (xg.mT @ xg / n).requires_grad_(True)
    dw = torch.randn_like(cov)

    def matrices(fn):
        return lambda: torch.autograd.grad(fn(cov), cov, dw)

    def whiten():
        return torch.autograd.grad(zca_whiten(x, group_size=g), x, dy)

    rows = {}
    for name, eigh in ROUTES.items():
        with eigh_routine(eigh):
            rows[f"{name}/matrices"] = median_ms(
                matrices(lambda c: inv_sqrt_psd(c, 1e-5)), min_run_time
            )
            rows[f"{name}/whiten"] = median_ms(whiten, min_run_time)
    for iters in (5, 10):
        rows[f"ns{iters}/matrices"] = median_ms(
            matrices(lambda c, k=iters: ns_inv_sqrt(c, eps=1e-5, iters=k)), min_run_time
        )
    base = rows["eigh/matrices"]
    return {
        "d": d,
        "group_size": g,
        "n": n,
        "ms": rows,
        "ratio_to_eigh": {k: v / base for k, v in rows.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dims", type=int, nargs="+", default=[392, 512])
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = {
        **result_header("inv_sqrt", device),
        "cases": [],
    }
    for d in args.dims:
        row = bench(d, args.group_size, n=args.batch, device=device, min_run_time=args.min_run_time)
        results["cases"].append(row)
        print(f"\nd={d}, g={args.group_size}, n={args.batch} on {results['hardware']}")
        for name, ms in row["ms"].items():
            print(f"  {name:<20}{ms:9.3f} ms{row['ratio_to_eigh'][name]:8.2f} x eigh")
    write_results(results, args.out, f"inv_sqrt_{device.type}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
