"""Cost of one training step of each regime, as a ratio to a ``regular`` step.

Same model, same batch, same optimiser (SGD, momentum 0.9): the full step (``zero_grad``, the
regime's forward and backward passes from :func:`geomxai.train.train_step`, ``optimizer.step``) is
timed for ``regular``, ``dbn``, ``sgt`` and ``saliencydecor``, the last two with the clean branch
of the KL attached (default) and detached. The regimes are interleaved within each repeat (so a
slow spell of a shared machine hits all of them alike) and the median over repeats is reported.

Every step goes through :class:`geomxai.train.StaticStep`, as in the trainer (eagerly, or
captured with ``--cuda-graph``).

Arithmetic floors (forward = 1, backward = 2) with the masking gradient from the clean forward
(``mask_gradient_mode="train"``, or the default ``"eval"`` on a model that computes the same in
both modes, such as cnn2 under ``sgt``): ``sgt`` 7/3 = 2.33x attached, 2.0x detached; the targets
are <= 2.45x and <= 2.1x, and whitening + decorrelation (``saliencydecor`` over ``sgt``) <= 5%
extra. With an eval forward of its own (the default on a model with BatchNorm or whitening)
the step has one forward more: 8/3 both ways. A model's backward need not cost two forwards,
nor an input-gradient-only backward one, so the bare passes of the ``regular`` model are timed
in the same rotation and give the floors for *this* model, over ``F + B`` (``Bx``: backward to
the input only; ``B'``: to the weights and the input): from the clean forward, attached
``(F + Bx) + (F + B) + B`` and detached ``(F + B') + (F + B)``; with an eval forward,
``(F + Bx) + 2 (F + B)`` both ways. The gap between a regime's ratio and its floor is what
masking, the KL, the buffer restore and the optimiser cost.

``--clock process`` times with the process's CPU time instead of the wall clock: on a shared
machine other jobs then slow a step (cache, cores' turbo) but do not add their time to it; with
``--threads 1`` it is the step's own work.

    python benchmarks/bench_train_step.py                 # CPU: results/train_step_cpu.json
    python benchmarks/bench_train_step.py --device cuda   # also images/s (fp32 and bf16)
    python benchmarks/bench_train_step.py --device cuda --compile --batch 512
    python benchmarks/bench_train_step.py --device cuda --cuda-graph  # also captured steps
    python benchmarks/bench_train_step.py --device cpu --threads 1 --clock process
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from _machine import result_header, write_results  # beside this script

from geomxai.train import (
    StaticStep,
    TrainConfig,
    TrainForward,
    build_from_spec,
    model_spec,
    parse_override,
    prepare_for_capture,
    same_in_both_modes,
)

CASES = {
    "regular": {"regime": "regular"},
    "dbn": {"regime": "dbn"},
    "sgt": {"regime": "sgt"},
    "sgt_detached": {"regime": "sgt", "detach_clean": True},
    "saliencydecor": {"regime": "saliencydecor"},
    "saliencydecor_detached": {"regime": "saliencydecor", "detach_clean": True},
}
MASKED = ("sgt", "saliencydecor")
"""The regimes that take a masking gradient."""
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
        cuda_graph=False,
        extra=None,
    ):
        fields = {**(extra or {}), **changes}
        self.config = TrainConfig(
            model=model, amp=amp, compile=compile, cuda_graph=cuda_graph, **fields
        )
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
        if cuda_graph:  # as the trainer does with cuda_graph=true
            prepare_for_capture(self.opt)
        # The trainer's step: eager, or (cuda_graph) two eager steps and then the capture, so
        # the three warm-up calls end with it.
        self.static = StaticStep(
            self.net,
            self.model,
            self.opt,
            config=self.config,
            params=self.params,
            generator=self.gen,
            capture=cuda_graph,
            warmup=2,
        )

    def step(self, x, y):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.static(x, y)

    def time(self, x, y, steps: int, clock=time.perf_counter) -> float:
        """Seconds per step over ``steps`` consecutive steps."""
        return _seconds_per_call(self.step, x, y, steps, self.device, clock)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
"""``--clock``: the wall clock, or the CPU time of all the process's threads."""


def _seconds_per_call(step, x, y, steps: int, device, clock=time.perf_counter) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    for _ in range(steps):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (clock() - start) / steps


PASSES = ("forward", "forward_backward", "forward_input_grad", "forward_backward_input_grad")
"""Bare passes of the ``regular`` model: F, F + B, F + Bx, F + B' (see the module docstring)."""


class _Pass:
    """One bare pass of a case's model and cross-entropy: no optimiser, no masking."""

    def __init__(self, case: _Case, kind: str):
        self.case, self.kind = case, kind

    def step(self, x, y):
        case, kind = self.case, self.kind
        if case.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        to_input = kind.endswith("input_grad")
        if to_input:
            x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(case.net(x)[0], y)
        if kind == "forward_input_grad":
            torch.autograd.grad(loss, x)
        elif kind != "forward":
            loss.backward(inputs=[x, *case.params] if to_input else case.params)
            for p in case.params:
                p.grad = None

    def time(self, x, y, steps: int, clock=time.perf_counter) -> float:
        return _seconds_per_call(self.step, x, y, steps, self.case.device, clock)


def floors_by_gradient(passes: dict[str, float]) -> dict[str, dict[str, float]]:
    """``sgt``'s floors from the bare passes' seconds, as ratios to ``F + B``, for each way of
    taking the masking gradient: from the clean forward, or with an eval forward of its own."""
    fwd, regular = passes["forward"], passes["forward_backward"]
    backward = regular - fwd
    with_eval = (passes["forward_input_grad"] + 2 * regular) / regular
    return {
        "clean_forward": {
            "sgt": (passes["forward_input_grad"] + regular + backward) / regular,
            "sgt_detached": (passes["forward_backward_input_grad"] + regular) / regular,
        },
        "eval_forward": {"sgt": with_eval, "sgt_detached": with_eval},
    }


def gradient_path(case: _Case) -> str:
    """How :func:`geomxai.train.train_step` takes this case's masking gradient."""
    if case.config.mask_gradient_mode == "train" or same_in_both_modes(case.model):
        return "clean_forward"
    return "eval_forward"


def measured_floors(passes: dict[str, float], path: str = "clean_forward") -> dict[str, float]:
    """``sgt``'s floors from the bare passes' seconds for the gradient ``path``."""
    return floors_by_gradient(passes)[path]


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
    cuda_graph=False,
    batch=0,
    extra=None,
    clock="wall",
    regimes=None,
) -> dict:
    model, c, size, _, cpu_repeats, cpu_steps = MODELS[key]
    repeats = repeats or (cpu_repeats if device.type == "cpu" else 15)
    steps = steps or (cpu_steps if device.type == "cpu" else 20)
    x, y = fixed_batch(key, device, batch)
    batch = len(x)
    options = {
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile,
        "cuda_graph": cuda_graph,
        "extra": extra,
    }
    # regular (the base) and sgt (the floors' regime) always run.
    wanted = set(regimes or CASES) | {"regular", "sgt", "sgt_detached"}
    cases = {
        name: build_case(changes, key, device=device, **options)
        for name, changes in CASES.items()
        if name in wanted
    }
    timed = {**cases, **{kind: _Pass(cases["regular"], kind) for kind in PASSES}}
    tick = CLOCKS[clock]
    for case in timed.values():  # warm-up: allocator, kernels, LAPACK workspaces, compilation
        case.time(x, y, 3 if device.type == "cuda" else 1, tick)
    samples: dict[str, list[float]] = {name: [] for name in timed}
    names = list(timed)
    for r in range(repeats):
        # Rotate the order each repeat, so no regime always follows the same neighbour.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(timed[name].time(x, y, steps, tick))
    median = {name: statistics.median(s) for name, s in samples.items()}
    passes = {kind: median[kind] for kind in PASSES}
    base = median["regular"]
    paths = {name: gradient_path(case) for name, case in cases.items()}
    floors = floors_by_gradient(passes)
    ratio = {name: median[name] / base for name in cases}
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
        "cuda_graph": cuda_graph,
        "config": extra or {},
        "repeats": repeats,
        "steps_per_repeat": steps,
        "clock": clock,
        "regimes": rows,
        "passes_seconds": passes,
        # The floors of the way sgt's step takes its masking gradient on this model, then both.
        "floors_measured": floors[paths["sgt"]],
        "floors_by_gradient": floors,
        "masking_gradient_from": {n: p for n, p in paths.items() if CASES[n]["regime"] in MASKED},
        "sgt_over_floor": {
            n: ratio[n] / floors[paths[n]][n] for n in ("sgt", "sgt_detached") if n in ratio
        },
        "whitening_over_sgt": _over(median, "saliencydecor", "sgt"),
        "whitening_over_sgt_detached": _over(median, "saliencydecor_detached", "sgt_detached"),
    }


def _over(median: dict, name: str, base: str) -> float | None:
    return median[name] / median[base] if name in median and base in median else None


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
    ratios = {
        kind: result[key]
        for kind, key in (
            ("attached", "whitening_over_sgt"),
            ("detached", "whitening_over_sgt_detached"),
        )
        if result[key] is not None
    }
    if ratios:
        print("saliencydecor / sgt: " + ", ".join(f"{v:.3f} ({k})" for k, v in ratios.items()))
    ms = {kind: seconds * 1e3 for kind, seconds in result["passes_seconds"].items()}
    print(
        f"bare passes: F {ms['forward']:.2f} ms, F+B {ms['forward_backward']:.2f}, "
        f"F+Bx {ms['forward_input_grad']:.2f}, F+B' {ms['forward_backward_input_grad']:.2f}"
    )
    for path, floors in result["floors_by_gradient"].items():
        users = [n for n, p in result["masking_gradient_from"].items() if p == path]
        print(
            f"  floors, gradient from the {path.replace('_', ' ')}: sgt {floors['sgt']:.2f}, "
            f"sgt_detached {floors['sgt_detached']:.2f}  ({', '.join(users) or 'no regime here'})"
        )
    over = result["sgt_over_floor"]
    print("sgt over its floor: " + ", ".join(f"{n} {v:.3f}" for n, v in over.items()))


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
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall (default) or process: the process's CPU time (a shared machine; see above)",
    )
    parser.add_argument(
        "--regimes",
        nargs="+",
        choices=list(CASES),
        default=None,
        help="the cases to time (default: all; regular, sgt and sgt_detached always run)",
    )
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
        "--cuda-graph",
        action="store_true",
        help="CUDA: also time steps captured as CUDA graphs (fp32 and bf16; whitening_method "
        "newton_schulz with whitening_iters auto, the host-sync-free ZCA, unless --set says "
        "otherwise), and that whitening eager in fp32",
    )
    parser.add_argument(
        "--out", default=None, help="JSON path (default results/train_step_<dev>.json)"
    )
    args = parser.parse_args(argv)
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if args.cuda_graph and device.type != "cuda":
        parser.error(f"--cuda-graph needs --device cuda; got device {device}")
    if args.clock == "process" and device.type == "cuda":
        parser.error("--clock process times the host only; on cuda use the wall clock")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        **result_header("train_step", device),
        "command": "python benchmarks/bench_train_step.py " + " ".join(argv or sys.argv[1:]),
        "targets": {"sgt": 2.45, "sgt_detached": 2.1, "whitening_over_sgt": 1.05},
        "models": {},
    }
    for key in args.models:
        layout = not args.no_channels_last
        common = {"device": device, "repeats": args.repeats, "steps": args.steps}
        common.update(batch=args.batch, extra=dict(parse_override(text) for text in args.set))
        common.update(clock=args.clock, regimes=args.regimes)
        result = bench_model(key, channels_last=layout, **common)
        results["models"][key] = result
        fmt = "channels_last" if layout else "NCHW"
        print_table(f"{key} on {results['hardware']} ({device.type}, fp32, {fmt})", result)
        if device.type != "cuda":
            continue
        variants = {"bf16_channels_last": {"amp": True}}
        if args.compile:
            variants["bf16_channels_last_compiled"] = {"amp": True, "compile": True}
        if args.cuda_graph:
            # The eigh of whitening_method="zca" syncs with the host and cannot be captured;
            # Newton-Schulz for the static step count of "auto" is ZCA to fp32 with no sync.
            ns = {"whitening_method": "newton_schulz", "whitening_iters": "auto"}
            ns.update(common["extra"])
            graph = {"cuda_graph": True, "extra": ns}
            variants["newton_schulz"] = {"amp": False, "extra": ns}
            variants["cuda_graph"] = {"amp": False, **graph}
            variants["bf16_channels_last_cuda_graph"] = {"amp": True, **graph}
        for suffix, extra in variants.items():
            fast = bench_model(key, channels_last=True, **{**common, **extra})
            results["models"][f"{key}_{suffix}"] = fast
            precision = "bf16 autocast" if extra["amp"] else "fp32"
            print_table(f"{key} on {results['hardware']} ({precision}, {suffix})", fast)
    write_results(results, args.out, f"train_step_{device.type}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
