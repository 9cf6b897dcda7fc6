"""Cost of group whitening, forward + backward, as a ratio to one ``nn.Linear(d, d)``.

For each width ``d`` and group size ``g`` it times, on the same float32 batch (n = 128 by default):
batched group ZCA (one ``eigh`` over the groups), Newton-Schulz (IterNorm, 5 iterations), and
single-group (full) ZCA, each as ``y = f(x); grad(y, x, dy)``, and divides by the time of
``y = linear(x); grad(y, (x, weight, bias), dy)`` measured in the same run. Times are medians from
``torch.utils.benchmark.Timer.blocked_autorange``.

    python benchmarks/bench_whitening.py --threads 1     # CPU: benchmarks/results/whitening_cpu.*
    python benchmarks/bench_whitening.py --device cuda   # where a GPU exists
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch
from _machine import hardware_name  # benchmarks/_machine.py, beside this script
from torch import nn
from torch.utils.benchmark import Timer

from geomxai.whitening import newton_schulz_whiten, zca_whiten

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn, *, min_run_time: float) -> float:
    fn()  # warm-up: allocator, LAPACK workspaces, CUDA kernels
    return (
        Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median
    )


def bench_width(
    d: int, groups: list[int], *, batch: int, device, min_run_time: float, full_max: int
) -> list[dict]:
    gen = torch.Generator().manual_seed(d)
    x = (torch.randn(batch, d, generator=gen) @ torch.randn(d, d, generator=gen) / d**0.5).to(
        device
    )
    x.requires_grad_(True)
    dy = torch.randn(batch, d, generator=gen).to(device)
    linear = nn.Linear(d, d).to(device)
    params = (x, linear.weight, linear.bias)

    def linear_step():
        torch.autograd.grad(linear(x), params, dy)

    def whitening_step(fn, **kw):
        return lambda: torch.autograd.grad(fn(x, **kw), x, dy)

    cases = []
    for g in groups:
        if g <= d:
            cases.append(("zca", g, whitening_step(zca_whiten, group_size=g)))
            cases.append(
                ("newton_schulz", g, whitening_step(newton_schulz_whiten, group_size=g, iters=5))
            )
    if d <= full_max:
        cases.append(("zca", None, whitening_step(zca_whiten, group_size=None)))
    rows = []
    for method, g, step in cases:
        # The CPU is shared: the Linear baseline is re-measured next to every case, so each ratio
        # compares two timings taken under the same load.
        base = median_seconds(linear_step, min_run_time=min_run_time)
        # Full ZCA at large d takes seconds per call; one short block is enough for a median there.
        t = median_seconds(step, min_run_time=min_run_time if g is not None else min_run_time / 4)
        rows.append(
            {
                "d": d,
                "method": method,
                "group_size": g,
                "ms": 1e3 * t,
                "linear_ms": 1e3 * base,
                "ratio": t / base,
            }
        )
        label = f"g={g}" if g is not None else "full"
        print(
            f"  d={d:5d} {method:14s} {label:7s} {1e3 * t:9.3f} ms  {t / base:8.1f} x linear "
            f"({1e3 * base:.3f} ms)",
            flush=True,
        )
    return rows


def to_markdown(meta: dict, rows: list[dict], groups: list[int]) -> str:
    cols = [*(f"g={g}" for g in groups), "full"]
    lines = [
        f"Forward + backward time as a multiple of one `nn.Linear(d, d)` forward + backward (batch "
        f"{meta['batch']}, float32 input; statistics in float64). Device: {meta['device']} "
        f"({meta['hardware']}), torch {meta['torch']}, {meta['threads']} CPU thread(s), {meta['date']}.",
        "",
        "Each cell: ratio to the Linear baseline re-measured next to it (its time in brackets); the "
        "Linear column is the median of those baselines.",
        "",
        "| d | Linear (ms) | method | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for d in sorted({r["d"] for r in rows}):
        for method in ("zca", "newton_schulz"):
            cells = []
            for g in [*groups, None]:
                hit = [
                    r
                    for r in rows
                    if r["d"] == d and r["method"] == method and r["group_size"] == g
                ]
                cells.append(f"{hit[0]['ratio']:.1f}x ({hit[0]['ms']:.2f} ms)" if hit else "-")
            base = statistics.median(r["linear_ms"] for r in rows if r["d"] == d)
            lines.append(f"| {d} | {base:.3f} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--groups", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--min-run-time", type=float, default=0.2, help="seconds per measurement")
    parser.add_argument(
        "--full-max", type=int, default=2048, help="largest d for full (one-group) ZCA"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda was asked for but no CUDA device is available", file=sys.stderr)
        return 2
    meta = {
        "device": str(device),
        "hardware": hardware_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
    }
    print(
        f"bench_whitening on {meta['device']} ({meta['hardware']}), {meta['threads']} threads",
        flush=True,
    )
    rows = []
    for d in args.dims:
        rows += bench_width(
            d,
            args.groups,
            batch=args.batch,
            device=device,
            min_run_time=args.min_run_time,
            full_max=args.full_max,
        )
    table = to_markdown(meta, rows, args.groups)
    print()
    print(table)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"whitening_{device.type}"
    write_atomic(
        args.out_dir / f"{stem}.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    write_atomic(args.out_dir / f"{stem}.md", table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
