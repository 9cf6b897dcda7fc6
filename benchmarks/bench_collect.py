"""Feature collection: overhead against plain inference, and memory of streaming moments.

1. Overhead. ``collect_features`` with the spatial-mean reduction on four stages of a torchvision
   ResNet-18 (random weights, 32x32 inputs), against the same model's plain ``no_grad`` forward
   over the same batches. Runs are interleaved (the order alternates each repeat) and each side's
   median is taken, so drift in a shared machine's load hits both sides alike. Target: ratio
   <= 1.10.
2. Memory. ``collect_moments`` over 6k and over 60k random 28x28 images through geomxai's
   ``cnn2``, each in a fresh subprocess; the figure is the peak resident set size
   (``getrusage``), which counts tensors too (tracemalloc would miss torch's allocator). The
   images are generated batch by batch, so the input holds no 60k-image array either. Target:
   the 60k peak within 10% of the 6k peak, i.e. memory constant in the number of samples.

Prints both ratios with their targets and writes ``benchmarks/results/collect.json``.

Usage: ``python benchmarks/bench_collect.py [--device cuda] [--batches 8] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

from geomxai.collect import collect_features, collect_moments
from geomxai.models import cnn2

RESULTS = Path(__file__).resolve().parent / "results" / "collect.json"
OVERHEAD_TARGET = 1.10
MEMORY_TARGET = 1.10
OVERHEAD_LAYERS = ["layer1", "layer2", "layer3", "layer4"]
MEMORY_LAYERS = ["body.1", "body.4", "body"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def overhead(device: torch.device, *, batches: int, batch_size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(device)
    x = torch.randn(batches * batch_size, 3, 32, 32)  # on the host, as a loader would give it

    def timed(run) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        _sync(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    def plain(data: torch.Tensor = x) -> None:
        with torch.no_grad():
            for i in range(0, len(data), batch_size):
                model(data[i : i + batch_size].to(device))

    def collect(data: torch.Tensor = x) -> None:
        collect_features(model, data, OVERHEAD_LAYERS, reduce="mean", batch_size=batch_size)

    plain(x[:batch_size]), collect(x[:batch_size])  # warm-up: allocator, kernels, lazy imports
    wall: dict[str, list[float]] = {"plain": [], "collect": []}
    cpu: dict[str, list[float]] = {"plain": [], "collect": []}
    for r in range(repeats):
        # Alternate the order, so a slow drift in a shared machine's load favours neither side.
        order = (("plain", plain), ("collect", collect))
        for name, run in order if r % 2 == 0 else order[::-1]:
            w, c = timed(run)
            wall[name].append(w)
            cpu[name].append(c)
    plain_s, collect_s = statistics.median(wall["plain"]), statistics.median(wall["collect"])
    ratio = collect_s / plain_s
    paired = statistics.median(c / p for c, p in zip(wall["collect"], wall["plain"], strict=True))
    cpu_ratio = statistics.median(cpu["collect"]) / statistics.median(cpu["plain"])
    return {
        "model": "torchvision resnet18, random weights",
        "input_shape": [3, 32, 32],
        "batch_size": batch_size,
        "batches": batches,
        "layers": OVERHEAD_LAYERS,
        "reduce": "mean",
        "repeats": repeats,
        "plain_s": wall["plain"],
        "collect_s": wall["collect"],
        "plain_s_median": plain_s,
        "collect_s_median": collect_s,
        "ratio": ratio,
        # Two cross-checks for a shared machine: the median of the per-repeat ratios (each pair
        # ran back to back), and the ratio of process CPU time (all threads; on a GPU this
        # measures the host side only), which a busy neighbour's load does not inflate.
        "paired_ratio_median": paired,
        "cpu_ratio": cpu_ratio,
        "plain_cpu_s": cpu["plain"],
        "collect_cpu_s": cpu["collect"],
        "target": OVERHEAD_TARGET,
        "pass": ratio <= OVERHEAD_TARGET,
    }


class RandomBatches(Dataset):
    """Batch ``i`` of random 28x28 images, regenerated on demand so nothing accumulates."""

    def __init__(self, samples: int, batch_size: int):
        self.samples, self.batch_size = samples, batch_size

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = min(self.batch_size, self.samples - i * self.batch_size)
        gen = torch.Generator().manual_seed(i)
        return torch.randn(n, 1, 28, 28, generator=gen), torch.randint(10, (n,), generator=gen)


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_worker(samples: int, device: torch.device, batch_size: int) -> dict:
    torch.manual_seed(0)
    model = cnn2(in_channels=1, image_size=28).to(device)
    # batch_size=None: each dataset item is already a batch.
    loader = DataLoader(RandomBatches(samples, batch_size), batch_size=None)
    # A one-batch warm-up, then the resident set before the measured run: what the run adds on
    # top of the interpreter, torch and the model is reported next to the peak.
    collect_moments(model, loader, MEMORY_LAYERS, max_samples=batch_size)
    baseline_mib = _current_rss_mib()
    start = time.perf_counter()
    moments = collect_moments(model, loader, MEMORY_LAYERS)
    _sync(device)
    seconds = time.perf_counter() - start
    assert all(m.count == samples for m in moments.values())
    out = {
        "samples": samples,
        "seconds": seconds,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_run_mib": baseline_mib,
    }
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def memory(device: torch.device, *, sizes: tuple[int, int], batch_size: int) -> dict:
    runs = []
    for samples in sizes:
        cmd = [
            sys.executable,
            __file__,
            "--memory-worker",
            str(samples),
            "--device",
            str(device),
            "--batch-size",
            str(batch_size),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"memory worker for {samples} samples failed:\n{done.stderr}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ratio = runs[1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    result = {
        "model": "geomxai cnn2, 1x28x28 random images",
        "layers": MEMORY_LAYERS,
        "batch_size": batch_size,
        "runs": runs,
        "ratio": ratio,
        "target": MEMORY_TARGET,
        "pass": ratio <= MEMORY_TARGET,
    }
    if device.type == "cuda":
        result["cuda_ratio"] = runs[1]["peak_cuda_mib"] / runs[0]["peak_cuda_mib"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, nargs=2, default=(6_000, 60_000))
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--memory-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    if args.memory_worker is not None:
        print(json.dumps(memory_worker(args.memory_worker, device, args.batch_size)))
        return 0

    over = overhead(device, batches=args.batches, batch_size=args.batch_size, repeats=args.repeats)
    print(
        f"collection overhead, {over['model']}, {args.batches} x {args.batch_size} images "
        f"32x32, spatial mean of {', '.join(OVERHEAD_LAYERS)}: "
        f"{over['collect_s_median']:.3f} s vs plain {over['plain_s_median']:.3f} s = "
        f"{over['ratio']:.3f}x (target <= {OVERHEAD_TARGET:.2f}) "
        f"{'PASS' if over['pass'] else 'MISS'}; median paired ratio {over['paired_ratio_median']:.3f}x, "
        f"CPU-time ratio {over['cpu_ratio']:.3f}x"
    )
    mem = memory(device, sizes=tuple(args.samples), batch_size=args.batch_size)
    small, large = mem["runs"]
    print(
        f"peak RSS, streaming moments of {', '.join(MEMORY_LAYERS)} ({mem['model']}): "
        f"{small['samples']} samples {small['peak_rss_mib']:.1f} MiB "
        f"({small['rss_before_run_mib']:.1f} before the run), "
        f"{large['samples']} samples {large['peak_rss_mib']:.1f} MiB "
        f"({large['rss_before_run_mib']:.1f} before) = "
        f"{mem['ratio']:.3f}x (target <= {MEMORY_TARGET:.2f}) "
        f"{'PASS' if mem['pass'] else 'MISS'}"
    )
    if "cuda_ratio" in mem:
        print(f"peak CUDA memory ratio {mem['cuda_ratio']:.3f}x")

    result = {
        "benchmark": "collect",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "overhead": over,
        "memory": mem,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 1 if args.strict and not (over["pass"] and mem["pass"]) else 0


if __name__ == "__main__":
    sys.exit(main())
