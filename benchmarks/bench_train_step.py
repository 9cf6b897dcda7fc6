"""Cost of one training step of each regime, as a ratio to a ``regular`` step.

Same model, same batch, same optimiser (SGD, momentum 0.9): the full step (``zero_grad``, the
regime's forward and backward passes from :func:`geomxai.train.train_step`, ``optimizer.step``) is
timed for ``regular``, ``dbn``, ``sgt`` and ``saliencydecor``, the last two with the clean branch
of the KL attached (default) and detached. The regimes are interleaved within each repeat (so a
slow spell of a shared machine hits all of them alike) and the median over repeats is reported.

Arithmetic floors (forward = 1, backward = 2): ``sgt`` 7/3 = 2.33x attached, 2.0x detached; the
targets are <= 2.45x and <= 2.1x, and whitening + decorrelation (``saliencydecor`` over ``sgt``)
<= 5% extra.

    python benchmarks/bench_train_step.py                 # CPU: results/train_step_cpu.json
    python benchmarks/bench_train_step.py --device cuda   # also images/s (fp32 and bf16)
    python benchmarks/bench_train_step.py --device cuda --compile --batch 512
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _machine import result_header, write_results  # beside this script

from geomxai.train import (
    TrainConfig,
    TrainForward,
    build_from_spec,
    model_spec,
    parse_override,
    train_step,
)

CASES = {
    "regular": {"regime": "regular"},
    "dbn": {"regime": "dbn"},
    "sgt": {"regime": "sgt"},
    "sgt_detached": {"regime": "sgt", "detach_clean": True},
    "saliencydecor": {"regime": "saliencydecor"},
    "saliencydecor_detached": {"regime": "saliencydecor", "detach_clean": True},
}
MODELS = {
    # name: (model, in_channels, image_size, batch, CPU repeats, CPU steps per repeat)
    "cnn2_28": ("cnn2", 1, 28, 128, 21, 3),
    "resnet18_32": ("resnet18", 3, 32, 128, 4, 1),
}


class _Case:
    """One regime on one model, ready to step."""

    def __init__(
        self,
        changes,
        *,
        model,
        in_channels,
        image_size,
        device,
        amp,
        channels_last,
        compile=False,
        extra=None,
    ):
        fields = {**(extra or {}), **changes}
        self.config = TrainConfig(model=model, amp=amp, compile=compile, **fields)
        spec = model_spec(
            self.config, in_channels=in_channels, num_classes=10, image_size=image_size
        )
        torch.manual_seed(0)
        self.model = build_from_spec(spec).to(device)
        self.channels_last = channels_last and not model.startswith("vit")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net = TrainForward(self.model, amp=amp)
        if compile:  # as the trainer does with compile=true
            self.net = torch.compile(self.net)
        self.params = list(self.model.parameters())
        self.opt = torch.optim.SGD(self.params, lr=0.01, momentum=0.9)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.device = device

    def step(self, x, y):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.opt.zero_grad(set_to_none=True)
        train_step(
            self.net,
            self.model,
            x,
            y,
            config=self.config,
            params=self.params,
            generator=self.gen,
        )
        self.opt.step()

    def time(self, x, y, steps: int) -> float:
        """Seconds per step over ``steps`` consecutive steps."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(x, y)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - start) / steps


def build_case(changes: dict, key: str, *, device, **options) -> _Case:
    """One regime (``changes`` to TrainConfig) on the model of ``MODELS[key]``."""
    model, c, size = MODELS[key][:3]
    return _Case(changes, model=model, in_channels=c, image_size=size, device=device, **options)


def fixed_batch(key: str, device, batch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random images and labels for every regime (default batch: the model's)."""
    _, c, size, default_batch = MODELS[key][:4]
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch or default_batch, c, size, size, generator=gen).to(device)
    return x, torch.randint(0, 10, (len(x),), generator=gen).to(device)


def bench_model(
    key: str,
    *,
    device,
    repeats,
    steps,
    amp=False,
    channels_last=True,
    compile=False,
    batch=0,
    extra=None,
) -> dict:
    model, c, size, _, cpu_repeats, cpu_steps = MODELS[key]
    repeats = repeats or (cpu_repeats if device.type == "cpu" else 15)
    steps = steps or (cpu_steps if device.type == "cpu" else 20)
    x, y = fixed_batch(key, device, batch)
    batch = len(x)
    options = {"amp": amp, "channels_last": channels_last, "compile": compile, "extra": extra}
    cases = {
        name: build_case(changes, key, device=device, **options) for name, changes in CASES.items()
    }
    for case in cases.values():  # warm-up: allocator, kernels, LAPACK workspaces, compilation
        case.time(x, y, 3 if device.type == "cuda" else 1)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(repeats):
        # Rotate the order each repeat, so no regime always follows the same neighbour.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(cases[name].time(x, y, steps))
    median = {name: statistics.median(s) for name, s in samples.items()}
    base = median["regular"]
    rows = {
        name: {
            "seconds_per_step": median[name],
            "ratio_to_regular": median[name] / base,
            "images_per_s": batch / median[name],
            "samples": samples[name],
        }
        for name in cases
    }
    return {
        "model": model,
        "input": [batch, c, size, size],
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile,
        "config": extra or {},
        "repeats": repeats,
        "steps_per_repeat": steps,
        "regimes": rows,
        "whitening_over_sgt": median["saliencydecor"] / median["sgt"],
        "whitening_over_sgt_detached": median["saliencydecor_detached"] / median["sgt_detached"],
    }


def print_table(title: str, result: dict) -> None:
    print(
        f"\n{title}  (input {result['input']}, median of {result['repeats']} x "
        f"{result['steps_per_repeat']} steps)"
    )
    print(f"{'regime':<24}{'ms/step':>10}{'x regular':>11}{'images/s':>11}")
    for name, row in result["regimes"].items():
        print(
            f"{name:<24}{row['seconds_per_step'] * 1e3:>10.2f}{row['ratio_to_regular']:>11.2f}"
            f"{row['images_per_s']:>11.0f}"
        )
    print(
        f"saliencydecor / sgt: {result['whitening_over_sgt']:.3f} (attached), "
        f"{result['whitening_over_sgt_detached']:.3f} (detached)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=0, help="default: per model and device")
    parser.add_argument(
        "--steps", type=int, default=0, help="steps per repeat (default: per model)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: as is)")
    parser.add_argument(
        "--no-channels-last", action="store_true", help="keep convnets in NCHW memory format"
    )
    parser.add_argument("--batch", type=int, default=0, help="batch size (default: 128)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig field for every regime, e.g. whitening_method=newton_schulz",
    )
    parser.add_argument(
        "--compile", action="store_true", help="CUDA: also time torch.compile'd bf16 steps"
    )
    parser.add_argument(
        "--out", default=None, help="JSON path (default results/train_step_<dev>.json)"
    )
    args = parser.parse_args(argv)
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        **result_header("train_step", device),
        "targets": {"sgt": 2.45, "sgt_detached": 2.1, "whitening_over_sgt": 1.05},
        "models": {},
    }
    for key in args.models:
        layout = not args.no_channels_last
        common = {"device": device, "repeats": args.repeats, "steps": args.steps}
        common.update(batch=args.batch, extra=dict(parse_override(text) for text in args.set))
        result = bench_model(key, channels_last=layout, **common)
        results["models"][key] = result
        fmt = "channels_last" if layout else "NCHW"
        print_table(f"{key} on {results['hardware']} ({device.type}, fp32, {fmt})", result)
        if device.type != "cuda":
            continue
        variants = {"bf16_channels_last": {}}
        if args.compile:
            variants["bf16_channels_last_compiled"] = {"compile": True}
        for suffix, extra in variants.items():
            fast = bench_model(key, amp=True, channels_last=True, **extra, **common)
            results["models"][f"{key}_{suffix}"] = fast
            print_table(f"{key} on {results['hardware']} (bf16 autocast, {suffix})", fast)
    write_results(results, args.out, f"train_step_{device.type}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
