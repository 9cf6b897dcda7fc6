"""The Python half of ``scripts/gpu_check.sh``: missing dependencies, the training-run check, and
the summary JSON.

    python scripts/gpu_check.py deps [--install] [--wheels DIR]
    python scripts/gpu_check.py runs --device cuda --out DIR [--epochs 8] [--budget-s 90]
    python scripts/gpu_check.py runs --device cpu --out DIR --dry-run
    python scripts/gpu_check.py summary --out DIR [--dry-run]

``runs`` trains each regime for a few hundred steps with ``cuda_graph`` on (on CUDA), once
straight and once killed in the middle of an epoch and resumed, and compares the two final
weights (and, on CUDA, with the same run eager): a captured run resumed mid-way must equal an
uninterrupted one. ``--dry-run`` does the same on the CPU with ``cuda_graph`` off and a tiny
subset, where the resumed run must be bitwise the straight one. ``summary`` gathers what the
parts wrote into ``gpu_check.json``: the machine, torch, the date, each part's exit status and
time, the GPU tests' outcome, the step ratios against their targets and the runs' verdicts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import math
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------- deps


TEST_TOOLS = ("pytest", "pytest-timeout", "hypothesis")
"""From the ``dev`` extra: what ``pytest -m gpu`` needs besides the package."""


def requirements() -> list[str]:
    """The package's runtime requirements from pyproject.toml and the test tools of its ``dev``
    extra (markers that do not apply dropped), torch excluded: the machine's own is kept."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = project.get("optional-dependencies", {}).get("dev", [])
    deps = project["dependencies"] + [d for d in dev if _name(d) in TEST_TOOLS]
    out = []
    for dep in deps:
        spec, _, marker = dep.partition(";")
        if marker and not _marker_applies(marker.strip()):
            continue
        name = _name(spec)
        if name != "torch":
            out.append(spec.strip())
    return out


def _name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _marker_applies(marker: str) -> bool:
    try:
        from packaging.markers import Marker
    except ImportError:  # no packaging: keep the requirement, pip decides
        return True
    return Marker(marker).evaluate()


def missing(specs: list[str]) -> list[str]:
    """The requirements not installed, or installed at a version outside their range."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        Requirement = None
    out = []
    for spec in specs:
        try:
            version = importlib.metadata.version(_name(spec))
        except importlib.metadata.PackageNotFoundError:
            out.append(spec)
            continue
        if Requirement is not None and not Requirement(spec).specifier.contains(
            version, prereleases=True
        ):
            out.append(spec)
    return out


def deps_main(args) -> int:
    need = missing(requirements())
    torch_version = _torch_version()
    print(f"torch {torch_version} stays; missing or out of range: {need or 'nothing'}")
    if not need or not args.install:
        return 0
    # torch is pinned to what is installed, so no requirement can replace it.
    pin = Path(args.constraints)
    pin.write_text(f"torch=={torch_version}\n" if torch_version else "")
    cmd = [sys.executable, "-m", "pip", "install", "-c", str(pin), *need]
    if args.wheels:
        cmd[4:4] = ["--no-index", "--find-links", args.wheels]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def _torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------------- runs

RUN_PLAN = {
    # model: regimes trained (ResNet-18: the masked ones, the targets' subject)
    "cnn2": ("regular", "dbn", "sgt", "saliencydecor"),
    "resnet18": ("sgt", "saliencydecor"),
}


def _run_config(model: str, regime: str, out_dir: Path, *, device: str, dry_run: bool, epochs):
    from geomxai.train import TrainConfig

    whitened = regime in ("dbn", "saliencydecor")
    fields = {
        "regime": regime,
        "model": model,
        "dataset": "blocks",  # synthetic 32x32: no files on the device machine
        "epochs": epochs,
        "batch_size": 32 if dry_run else 128,
        "train_subset": 128 if dry_run else None,
        "test_subset": 64 if dry_run else 1000,
        "group_size": 16,
        "lr": 0.05,
        "device": device,
        "cuda_graph": device.startswith("cuda"),
        "channels_last": True,
        "progress": False,
        "deterministic": True,
        "out_dir": str(out_dir),
    }
    if whitened:  # the host-sync-free whitening a captured step needs (ZCA to fp32)
        fields.update(whitening_method="newton_schulz", whitening_iters="auto")
    return TrainConfig(**fields)


class _Killed(KeyboardInterrupt):
    """The interruption of the resumed run (a KeyboardInterrupt, as a Ctrl-C would be)."""


def _train_killed_at(config, dataset, step: int) -> None:
    """Train ``config`` and kill it just before its ``step``-th optimisation step (1-based)."""
    from geomxai.train import StaticStep, train

    real = StaticStep.__call__
    calls = {"n": 0}

    def dying(self, x, y):
        calls["n"] += 1
        if calls["n"] == step:
            raise _Killed(f"killed before step {step}")
        return real(self, x, y)

    StaticStep.__call__ = dying
    try:
        train(config, dataset=dataset)
    except _Killed:
        return
    finally:
        StaticStep.__call__ = real
    raise RuntimeError(f"the run ended before step {step}; nothing was interrupted")


def _compare(a: dict, b: dict, *, rtol: float, atol: float) -> dict:
    import torch

    worst_abs, worst_rel, bitwise, close = 0.0, 0.0, True, True
    for key, value in a.items():
        other = b[key]
        if not value.is_floating_point():
            bitwise &= torch.equal(value, other)
            close &= torch.equal(value, other)
            continue
        diff = (value.double() - other.double()).abs()
        worst_abs = max(worst_abs, float(diff.max()) if diff.numel() else 0.0)
        scale = value.double().abs().clamp_min(1e-12)
        worst_rel = max(worst_rel, float((diff / scale).max()) if diff.numel() else 0.0)
        bitwise &= torch.equal(value, other)
        close &= torch.allclose(other, value, rtol=rtol, atol=atol)
    return {
        "bitwise_equal": bool(bitwise),
        "within_tolerance": bool(close),
        "rtol": rtol,
        "atol": atol,
        "max_abs_diff": worst_abs,
        "max_rel_diff": worst_rel,
    }


def _run_summary(run_dir: Path, seconds: float) -> dict:
    from geomxai.train import read_metrics

    rows = read_metrics(run_dir)
    speeds = [r["images_per_s"] for r in rows[1:]] or [r["images_per_s"] for r in rows]
    return {
        "seconds": seconds,
        "epochs": len(rows),
        "steps": rows[-1]["steps"],
        "final_test_acc": rows[-1]["test_acc"],
        "final_loss_total": rows[-1]["loss_total"],
        # The first epoch holds the warm-up and the capture.
        "images_per_s_median_after_first_epoch": sorted(speeds)[len(speeds) // 2],
    }


def runs_main(args) -> int:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _machine import result_header

    from geomxai.data import load_dataset
    from geomxai.train import read_checkpoint, train

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("runs --device cuda: no CUDA device here; use --dry-run --device cpu")
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "runs"
    if work.exists():
        shutil.rmtree(work)
    epochs = args.epochs or (2 if args.dry_run else 8)
    models = args.models or (["cnn2"] if args.dry_run else list(RUN_PLAN))
    # The dry run draws a smaller set (make_blocks is a Python loop); it trains on 128 anyway.
    dataset = load_dataset("blocks", **({"n_train": 256, "n_test": 128} if args.dry_run else {}))
    start = time.perf_counter()
    results = {
        **result_header("gpu_check_runs", device),
        "dry_run": args.dry_run,
        "dataset": "blocks",
        "epochs": epochs,
        "runs": {},
    }
    # A captured run replays kernels on other streams than the eager warm-up: not bitwise.
    tol = {"rtol": 1e-4, "atol": 1e-5}
    for model in models:
        for regime in RUN_PLAN[model]:
            name = f"{model}_{regime}"
            if time.perf_counter() - start > args.budget_s:
                results["runs"][name] = {"skipped": f"over the budget of {args.budget_s} s"}
                continue
            cfg = _run_config(
                model,
                regime,
                work / name / "straight",
                device=args.device,
                dry_run=args.dry_run,
                epochs=epochs,
            )
            t0 = time.perf_counter()
            straight = train(cfg, dataset=dataset)
            entry = {"config": json.loads(cfg.to_json())}
            entry["straight"] = _run_summary(straight, time.perf_counter() - t0)
            steps_per_epoch = entry["straight"]["steps"] // epochs
            # Killed in the middle of the epoch after the first half of the run, then resumed.
            kill_epoch = epochs // 2 + 1
            kill_step = (kill_epoch - 1) * steps_per_epoch + max(1, steps_per_epoch // 2)
            resumed_cfg = cfg.replace(out_dir=str(work / name / "resumed"))
            t0 = time.perf_counter()
            _train_killed_at(resumed_cfg, dataset, kill_step)
            resumed = train(resumed_cfg.replace(resume=True), dataset=dataset)
            entry["resumed"] = _run_summary(resumed, time.perf_counter() - t0)
            entry["killed_before_step"] = kill_step
            last = f"epoch_{epochs:04d}.pt"
            a = read_checkpoint(straight / "checkpoints" / last)["model"]
            b = read_checkpoint(resumed / "checkpoints" / last)["model"]
            entry["resumed_vs_straight"] = _compare(a, b, **tol)
            ok = entry["resumed_vs_straight"][
                "bitwise_equal" if args.dry_run else "within_tolerance"
            ]
            if cfg.cuda_graph:
                eager_cfg = cfg.replace(cuda_graph=False, out_dir=str(work / name / "eager"))
                t0 = time.perf_counter()
                eager = train(eager_cfg, dataset=dataset)
                entry["eager"] = _run_summary(eager, time.perf_counter() - t0)
                c = read_checkpoint(eager / "checkpoints" / last)["model"]
                entry["captured_vs_eager"] = _compare(c, a, **tol)
            entry["ok"] = bool(ok)
            results["runs"][name] = entry
            print(f"{name}: {json.dumps({k: v for k, v in entry.items() if k != 'config'})}")
    results["seconds"] = time.perf_counter() - start
    path = out / ("gpu_check_runs_dryrun.json" if args.dry_run else "gpu_check_runs.json")
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    if not args.keep_runs:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.get("ok", True) for r in results["runs"].values()) else 1


# -------------------------------------------------------------------------------- summary


def _hardware() -> dict:
    info: dict = {"host_cpu": platform.processor() or platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_runtime"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = props.name
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["gpu_count"] = torch.cuda.device_count()
    except Exception as err:  # the summary must still be written
        info["torch_error"] = repr(err)
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        res = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        info["nvidia_smi"] = res.stdout.strip()
    return info


def _pytest_summary(out: Path) -> dict | None:
    xml = out / "pytest_gpu.xml"
    if xml.exists():
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        if suite is None:
            return None
        failures = []
        for case in suite.iter("testcase"):
            bad = case.find("failure")
            bad = bad if bad is not None else case.find("error")
            if bad is not None:
                message = (bad.get("message") or "")[:300]
                failures.append(f"{case.get('classname')}::{case.get('name')}: {message}")
        return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {
            "failed": failures
        }
    log = out / "logs" / "pytest.log"
    if log.exists():  # a dry run collects only
        found = re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", log.read_text())
        return {"collected": int(found.group(1)) if found else None}
    return None


def _step_headlines(bench: dict) -> dict:
    """Per model variant: the ratios the issue sets targets for, with the verdicts."""
    targets = bench.get("targets", {})
    out = {}
    for key, res in bench.get("models", {}).items():
        regimes = res["regimes"]
        row = {
            "regular_ms": regimes["regular"]["seconds_per_step"] * 1e3,
            "sgt": regimes["sgt"]["ratio_to_regular"],
            "sgt_detached": regimes["sgt_detached"]["ratio_to_regular"],
            "whitening_over_sgt": res.get("whitening_over_sgt"),
            "whitening_over_sgt_detached": res.get("whitening_over_sgt_detached"),
            "floors": res.get("floors_measured"),
        }
        if "saliencydecor" in regimes:
            row["saliencydecor_images_per_s_over_regular"] = (
                regimes["saliencydecor"]["images_per_s"] / regimes["regular"]["images_per_s"]
            )
        row["met"] = {
            name: (row.get(name) is not None and row[name] <= limit)
            for name, limit in targets.items()
        }
        if key.startswith("resnet18") and "saliencydecor_images_per_s_over_regular" in row:
            row["met"]["resnet18_saliencydecor_images_per_s_over_regular>=0.40"] = (
                row["saliencydecor_images_per_s_over_regular"] >= 0.40
            )
        out[key] = row
    return out


def _merge_step_results(out: Path, names: list[str], target: str) -> dict | None:
    """One step-benchmark JSON from the per-model ones (each model ran under its own timeout)."""
    parts = [json.loads((out / n).read_text()) for n in names if (out / n).exists()]
    if not parts:
        return None
    merged = {**parts[0], "models": {}}
    for part in parts:
        merged["models"].update(part["models"])
    (out / target).write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def summary_main(args) -> int:
    out = Path(args.out)
    parts = []
    log = out / "gpu_check_parts.jsonl"
    if log.exists():
        parts = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    suffix = "cpu_dryrun" if args.dry_run else "cuda"
    step_names = [f"train_step_{suffix}_{m}.json" for m in ("cnn2", "resnet18")]
    bench = _merge_step_results(out, step_names, f"train_step_{suffix}.json")
    runs_file = out / ("gpu_check_runs_dryrun.json" if args.dry_run else "gpu_check_runs.json")
    runs = json.loads(runs_file.read_text()) if runs_file.exists() else None
    summary = {
        "check": "scripts/gpu_check.sh",
        "dry_run": args.dry_run,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "hardware": _hardware(),
        "git_commit": _git_commit(),
        "parts": parts,
        "seconds_total": sum(p.get("seconds", 0) for p in parts),
        "pytest_gpu": _pytest_summary(out),
        "step_ratios": _step_headlines(bench) if bench else None,
        "runs": (
            {
                name: {
                    k: r.get(k)
                    for k in ("ok", "skipped", "resumed_vs_straight", "captured_vs_eager")
                    if k in r
                }
                for name, r in runs["runs"].items()
            }
            if runs
            else None
        ),
        "files": sorted(
            str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "runs" not in p.parts
        ),
    }
    path = out / "gpu_check.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    failed = [p["part"] for p in parts if p.get("rc") not in (0, None)]
    print(
        "parts: "
        + ", ".join(f"{p['part']} rc={p.get('rc')} {p.get('seconds', 0):.0f}s" for p in parts)
    )
    return 1 if failed else 0


def _git_commit() -> str | None:
    if not (ROOT / ".git").exists():
        return None
    res = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return res.stdout.strip() or None


# ----------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    deps = sub.add_parser("deps", help="list (and with --install, install) missing requirements")
    deps.add_argument("--install", action="store_true")
    deps.add_argument("--wheels", default=None, help="install from this wheel folder only")
    deps.add_argument("--constraints", default="/tmp/geomxai_gpu_check_constraints.txt")
    runs = sub.add_parser("runs", help="captured training runs, straight and resumed")
    runs.add_argument("--device", default="cuda")
    runs.add_argument("--out", required=True)
    runs.add_argument("--work", default=None, help="run directories (default OUT/runs, removed)")
    runs.add_argument("--models", nargs="+", choices=list(RUN_PLAN), default=None)
    runs.add_argument("--epochs", type=int, default=0, help="default 8 (dry run 2)")
    runs.add_argument("--budget-s", type=float, default=math.inf, help="start no run after this")
    runs.add_argument("--dry-run", action="store_true", help="CPU, cuda_graph off, tiny subset")
    runs.add_argument("--keep-runs", action="store_true")
    summ = sub.add_parser("summary", help="gather the parts' results into gpu_check.json")
    summ.add_argument("--out", required=True)
    summ.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    return {"deps": deps_main, "runs": runs_main, "summary": summary_main}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
