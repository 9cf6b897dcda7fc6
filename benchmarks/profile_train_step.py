"""Where the time of one training step goes: ``torch.profiler`` over a few steps of each regime.

Builds the same model, batch, optimiser and step (:class:`geomxai.train.StaticStep`) as
``bench_train_step.py`` and prints, per regime, the operators with the most self time on the
device (CUDA) or the CPU, so a ratio that misses its target can be traced to the operators that
cost it. ``--json`` also writes the same figures as JSON (per regime: ms per step, kernel time
and launches per step, the top operators), which ``scripts/gpu_check.sh`` keeps.

    python benchmarks/profile_train_step.py --device cuda --regimes dbn saliencydecor
    python benchmarks/profile_train_step.py --model resnet18_32 --rows 25 --out prof.txt
    python benchmarks/profile_train_step.py --set whitening_method=newton_schulz --json p.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _machine import result_header  # beside this script
from bench_train_step import CASES, MODELS, build_case, fixed_batch  # beside this script
from torch.profiler import ProfilerActivity, profile

from geomxai.train import parse_override


def profile_case(
    name: str,
    key: str,
    *,
    device,
    amp: bool,
    steps: int,
    rows: int,
    extra: dict | None = None,
    batch: int = 0,
) -> tuple[str, dict]:
    """The tables of one regime's profiled steps, and their figures as a dict."""
    case = build_case(
        CASES[name], key, device=device, amp=amp, channels_last=True, extra=extra or {}
    )
    x, y = fixed_batch(key, device, batch)
    case.time(x, y, 3)  # warm-up
    activities = [ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    with profile(activities=activities) as prof:
        seconds = case.time(x, y, steps)
    averages = prof.key_averages()
    device_us = sum(getattr(e, "self_device_time_total", 0.0) for e in averages) / steps
    launches = sum(e.count for e in averages if e.key.startswith("cudaLaunchKernel")) / steps
    text = (
        f"== {key} {name} amp={amp}: {seconds * 1e3:.2f} ms/step (profiled), "
        f"device kernels {device_us / 1e3:.2f} ms/step, {launches:.0f} launches/step\n"
    )
    text += averages.table(sort_by=sort, row_limit=rows) + "\n"
    if device.type == "cuda":  # a small model can be bound by the host launching kernels
        text += averages.table(sort_by="self_cpu_time_total", row_limit=rows) + "\n"
    key_of = (
        (lambda e: getattr(e, "self_device_time_total", 0.0))
        if device.type == "cuda"
        else (lambda e: e.self_cpu_time_total)
    )
    top = sorted(averages, key=key_of, reverse=True)[:rows]
    figures = {
        "ms_per_step_profiled": seconds * 1e3,
        "device_kernel_ms_per_step": device_us / 1e3,
        "launches_per_step": launches,
        "top_operators": [
            {
                "name": e.key,
                "calls_per_step": e.count / steps,
                "self_ms_per_step": key_of(e) / 1e3 / steps,
                "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            }
            for e in top
        ],
    }
    return text, figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="cnn2_28", choices=list(MODELS))
    parser.add_argument("--regimes", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for the body")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--batch", type=int, default=0, help="batch size (default: the model's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig field for every regime, e.g. whitening_method=newton_schulz",
    )
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    extra = dict(parse_override(text) for text in args.set)
    texts, figures = [], {}
    for name in args.regimes:
        text, figures[name] = profile_case(
            name,
            args.model,
            device=device,
            amp=args.amp,
            steps=args.steps,
            rows=args.rows,
            extra=extra,
            batch=args.batch,
        )
        texts.append(text)
    text = "".join(texts)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        results = {
            **result_header("profile_train_step", device),
            "model": args.model,
            "amp": args.amp,
            "steps": args.steps,
            "batch": args.batch or MODELS[args.model][3],
            "config": extra,
            "regimes": figures,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
