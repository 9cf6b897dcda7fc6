"""Whole training runs of each regime: images/s as a ratio to ``regular``, and test accuracy.

Where ``bench_train_step.py`` times one step on a fixed batch, this runs :func:`geomxai.train.train`
end to end from a profile (data loading, masking, evaluation, checkpoints and all) and reads each
run's ``metrics.jsonl``: training images/s (training images over training seconds, evaluation and
checkpointing excluded), seconds per epoch including them, and the last test accuracy. The
regimes run one after another in one process, on the same data and hardware.

    python benchmarks/bench_train_run.py --config configs/paper-fashion-mnist.toml --epochs 5
    python benchmarks/bench_train_run.py --set device=cpu --epochs 2   # 5,000 images on the CPU

The figures go to ``results/train_run_<device>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _machine import result_header, write_results  # beside this script

from geomxai.train import TrainConfig, parse_override, read_metrics, resolve_device, train

CPU_SUBSET = (5000, 1000)  # (train, test) images on the CPU unless --set train_subset=N
CASES = {
    "regular": {"regime": "regular"},
    "dbn": {"regime": "dbn"},
    "sgt": {"regime": "sgt"},
    "saliencydecor": {"regime": "saliencydecor"},
    "saliencydecor_detached": {"regime": "saliencydecor", "detach_clean": True},
}


def run_case(config: TrainConfig) -> dict:
    run_dir = train(config)
    rows = read_metrics(run_dir)
    # The first epoch carries warm-up (kernel selection, compilation); report it apart.
    steady = rows[1:] or rows
    return {
        "images_per_s": statistics.median(r["images_per_s"] for r in steady),
        "first_epoch_images_per_s": rows[0]["images_per_s"],
        "seconds_per_epoch": statistics.median(r["seconds"] for r in steady),
        "test_acc": rows[-1]["test_acc"],
        "epochs": len(rows),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/paper-fashion-mnist.toml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=None, help="JSON path (default results/train_run_<dev>)")
    args = parser.parse_args(argv)
    overrides = dict(parse_override(text) for text in args.set)
    base = TrainConfig.from_toml(args.config, {**overrides, "epochs": args.epochs})
    device = resolve_device(base.device)
    if device.type == "cpu" and "train_subset" not in overrides:
        # The whole of a paper profile takes the better part of an hour on a few CPU cores.
        base = base.replace(train_subset=CPU_SUBSET[0], test_subset=CPU_SUBSET[1])
        print(f"on the CPU: {CPU_SUBSET[0]} training and {CPU_SUBSET[1]} test images")
    results = {
        **result_header("train_run", device),
        "config": base.to_dict(),
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            config = base.replace(
                **CASES[name], out_dir=str(Path(tmp) / name), progress=False, resume=False
            )
            results["cases"][name] = run_case(config)
    regular = results["cases"].get("regular")
    print(f"\n{args.config} on {results['hardware']} ({device.type}), {args.epochs} epochs")
    print(f"{'regime':<24}{'images/s':>10}{'x regular':>11}{'s/epoch':>9}{'test acc':>10}")
    for name, row in results["cases"].items():
        ratio = regular["images_per_s"] / row["images_per_s"] if regular else float("nan")
        row["time_ratio_to_regular"] = ratio
        print(
            f"{name:<24}{row['images_per_s']:>10.0f}{ratio:>11.2f}"
            f"{row['seconds_per_epoch']:>9.1f}{row['test_acc']:>10.4f}"
        )
    write_results(results, args.out, f"train_run_{device.type}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
