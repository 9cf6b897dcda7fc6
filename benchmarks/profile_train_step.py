"""Where the time of one training step goes: ``torch.profiler`` over a few steps of each regime.

Builds the same model, batch and optimiser as ``bench_train_step.py`` and prints, per regime, the
operators with the most self time on the device (CUDA) or the CPU, so a ratio that misses its
target can be traced to the operators that cost it.

    python benchmarks/profile_train_step.py --device cuda --regimes dbn saliencydecor
    python benchmarks/profile_train_step.py --model resnet18_32 --rows 25 --out prof.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_train_step import CASES, MODELS, build_case, fixed_batch  # beside this script
from torch.profiler import ProfilerActivity, profile


def profile_case(name: str, key: str, *, device, amp: bool, steps: int, rows: int) -> str:
    case = build_case(CASES[name], key, device=device, amp=amp, channels_last=True)
    x, y = fixed_batch(key, device)
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
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="cnn2_28", choices=list(MODELS))
    parser.add_argument("--regimes", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for the body")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    text = "".join(
        profile_case(
            name, args.model, device=device, amp=args.amp, steps=args.steps, rows=args.rows
        )
        for name in args.regimes
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
