"""The ``geomxai`` command: study, train, analyze, report, layers."""

from __future__ import annotations

import argparse
import errno
import logging
import sys

from geomxai._allocator import tune_cpu_allocator
from geomxai._fs import check_nonempty_path, check_writable

log = logging.getLogger("geomxai")

_NOT_YOURS = (
    "choose a location you can write (out_dir=, --out, --runs/--reports, --cache DIR, or "
    "--no-cache for analyze) or change its permissions"
)
_FIXES = {
    errno.EACCES: _NOT_YOURS,
    errno.EPERM: _NOT_YOURS,
    errno.EROFS: (
        "choose a location on a writable file system (out_dir=, --out, --runs/--reports, "
        "--cache DIR, or --no-cache for analyze)"
    ),
    errno.ENOSPC: (
        "free space on that disk or choose another, then run again; every file is written "
        "whole or not at all, so what was there before is as it was (a run resumes with "
        "--set resume=true)"
    ),
    errno.EDQUOT: "free space within your quota or choose another disk, then run again",
    errno.EISDIR: "a folder stands where a file must go: give a file path or move the folder",
    errno.ENOTDIR: "a file stands where a folder must be: choose another path or move the file",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EEXIST: "something already stands at that path: choose another path or move it",
    errno.ENOENT: "check the path",
}


def os_error_message(err: OSError) -> str:
    """One line for a person: the path, what the system said, and what to do.

    Examples
    --------
    >>> os_error_message(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"))
    "'/mnt/ro/run': read-only file system; choose a location on a writable file system ..."
    """
    if err.errno is None or not err.strerror:  # our own messages already say what to do
        return str(err)
    where = f"{err.filename!r}" if err.filename is not None else "a file"
    if err.filename2 is not None:
        where += f" -> {err.filename2!r}"
    fix = _FIXES.get(err.errno, "run with -v for the details")
    reason = err.strerror[:1].lower() + err.strerror[1:]
    return f"{where}: {reason}; {fix}"


def _config_with_overrides(path, overrides):
    from geomxai.train import TrainConfig, parse_override

    return TrainConfig.from_toml(path, dict(parse_override(o) for o in overrides or []))


def cmd_train(args) -> int:
    from geomxai.train import train

    config = _config_with_overrides(args.config, args.set)
    run_dir = train(config)
    print(f"run directory: {run_dir}")
    return 0


def cmd_study(args) -> int:
    from geomxai.pipeline import ALL, run_study

    design = args.design or args.profile or "quick"
    if args.plan:
        return _study_plan(design, args)
    stages = args.stage or list(ALL)
    if "all" in stages:
        stages = list(ALL)
    out = run_study(
        design,
        overrides=args.set,
        runs_root=args.runs,
        reports_root=args.reports,
        stages=stages,
        seeds=args.seeds,
    )
    if out is not None:
        print(f"{'report' if str(out).endswith('.html') else 'results'}: {out}")
    return 0


def _study_plan(design, args) -> int:
    """``geomxai study DESIGN --plan``: the design checked whole and each run's state, printed."""
    from geomxai.pipeline import Across, across_status, open_study, run_status

    study = open_study(design, overrides=args.set, runs_root=args.runs, reports_root=args.reports)
    if isinstance(study, Across):
        rows = across_status(study)
        print(f"{study.name} ({study.source}): compares {len(rows)} settings; out {study.out_dir}")
        width = max(len(r["setting"]) for r in rows)
        for r in rows:
            state = "in the tables" if r["whole"] else f"pending: {r['next']}"
            print(
                f"  {r['setting']:<{width}}  {r['analysed']}/{r['planned']} runs analysed  {state}"
            )
        whole = sum(r["whole"] for r in rows)
        print(f"  {whole} in the tables, {len(rows) - whole} pending")
        return 0
    rows = run_status(study, args.seeds)
    print(
        f"{study.name} ({study.source}): {len(rows)} runs; runs in {study.runs_dir}, "
        f"results in {study.out_dir}"
    )
    width = max(len(r["run"]) for r in rows)
    for r in rows:
        print(f"  {r['run']:<{width}}  {r['status']:<11}  {r['trained']}/{r['epochs']} epochs")
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print("  " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    return 0


def cmd_analyze(args) -> int:
    import json

    from geomxai.study import analyze_model, analyze_runs, linked, save_results

    # ValueError, not SystemExit: main() turns it into one error line and exit status 2.
    out = check_nonempty_path(args.out, "--out")
    # Before the analysis, which may take hours, not after it.
    check_writable(out)
    options = {"probe_size": args.probe_size, "layers": args.layers}
    for flag, value in (
        ("saliency_method", args.saliency_method),
        ("batch_size", args.batch_size),
        ("reduce", _reduce_option(args.reduce)),
        ("entanglement_layer", args.entanglement_layer),
    ):
        if value is not None:
            options[flag] = value
    model_only = {
        "--num-classes": args.num_classes,
        "--image-size": args.image_size,
        "--normalize": args.normalize,
        "--no-labels": args.no_labels or None,
        "--probe-split": args.probe_split,
        "--model-arg": args.model_arg,
    }
    if args.steps is not None and args.checkpoints is None:
        raise ValueError("--steps goes with --checkpoints (one step per checkpoint file)")
    if args.checkpoints is not None:
        results = _analyze_checkpoints_command(args, options)
    elif args.model:
        if args.run_dirs:
            raise ValueError(
                "geomxai analyze takes RUN_DIR arguments or --model/--data, not both; got "
                f"--model {args.model} and {len(args.run_dirs)} run director(ies)"
            )
        if not args.data:
            raise ValueError(
                "geomxai analyze --model needs --data (a dataset name or imagefolder:PATH)"
            )
        if args.cache is not None or args.no_cache:
            raise ValueError("--cache and --no-cache go with RUN_DIR arguments; --model has none")
        from geomxai.study import AnalysisOptions

        results = analyze_model(
            _own_model(args.model, args.model_arg),
            args.data,
            weights=args.weights,
            options=AnalysisOptions(
                **{**options, "layers": tuple(args.layers) if args.layers else None}
            ),
            num_classes=args.num_classes,
            labels=not args.no_labels,
            device=args.device,
            image_size=args.image_size,
            normalize=args.normalize,
            probe_split=args.probe_split or "test",
        )
    else:
        if not args.run_dirs:
            raise ValueError("geomxai analyze needs RUN_DIR arguments or --model/--data")
        if args.weights or args.data:
            raise ValueError(
                "--weights and --data go with --model; run directories carry their own"
            )
        given = [flag for flag, value in model_only.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} go(es) with --model; a run directory's checkpoints carry "
                "their own head and data"
            )
        if args.device is not None:
            options["device"] = args.device
        cache = False if args.no_cache else True if args.cache is None else args.cache
        if cache is not False and cache is not True:
            cache = check_nonempty_path(cache, "--cache")
        results = analyze_runs(
            args.run_dirs, workers=args.workers, scheduler=args.scheduler, cache=cache, **options
        )
        results = linked(results, runs=json.dumps([str(d) for d in args.run_dirs]))
    out = save_results(results, out)
    print(f"results: {out}")
    table = summary_table(results)
    if table:
        print(table)
    return 0


def _analyze_checkpoints_command(args, options: dict):
    """``geomxai analyze --model SPEC --checkpoints PATTERN --data NAME``: the checkpoints of any
    training loop (a glob, a folder or one file of state_dicts), as one run."""
    from geomxai.study import AnalysisOptions, analyze_checkpoints, combine_runs

    if not args.model or not args.data:
        raise ValueError(
            "--checkpoints needs --model (the architecture they were saved from: a geomxai "
            "model name, torchvision:ARCH, timm:NAME or path/to/file.py:ClassName) and --data"
        )
    refused = {
        "RUN_DIR arguments": args.run_dirs or None,
        "--weights": args.weights,
        "--num-classes": args.num_classes,
        "--probe-split": args.probe_split,
        "--cache": args.cache,
        "--no-cache": args.no_cache or None,
    }
    given = [flag for flag, value in refused.items() if value is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} do(es) not go with --checkpoints (each checkpoint brings its own "
            "weights and head)"
        )
    layers = tuple(args.layers) if args.layers else None
    run = analyze_checkpoints(
        _own_model(args.model, args.model_arg),
        args.checkpoints,
        args.data,
        steps=args.steps,
        options=AnalysisOptions(**{**options, "layers": layers}),
        labels=not args.no_labels,
        device=args.device,
        image_size=args.image_size,
        normalize=args.normalize,
    )
    return combine_runs([run])


def _reduce_option(values):
    """``--reduce``: one reduction for every layer (``flatten``, ``mean``, a token index) or
    ``LAYER=REDUCTION`` pairs, as ``AnalysisOptions.reduce`` takes them (which checks them)."""
    if not values:
        return None

    def one(text):
        text = text.strip()
        return int(text) if text.lstrip("-").isdigit() else text

    pairs = [v for v in values if "=" in v]
    if not pairs:
        if len(values) > 1:
            raise ValueError(
                f"--reduce takes one reduction, or LAYER=REDUCTION pairs; got {' '.join(values)}"
            )
        return one(values[0])
    if len(pairs) != len(values):
        raise ValueError(
            "--reduce takes one reduction for every layer or LAYER=REDUCTION pairs, not both; "
            f"got {' '.join(values)}"
        )
    return {k.strip(): one(v) for k, v in (p.split("=", 1) for p in pairs)}


def _steps_option(text: str) -> list[int]:
    """``--steps 1,2,3``: whole numbers, comma-separated."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--steps takes whole numbers separated by commas (--steps 1,2,3); got {text!r}"
        ) from None


def _own_model(spec: str, model_args):
    """``spec`` as it is, or for ``path/to/file.py:ClassName`` the module it builds (the file is
    imported here, on this explicit request only); ``--model-arg`` goes with such a spec."""
    from geomxai.study import is_model_file, parse_model_args, resolve_model

    if not is_model_file(spec):
        if model_args:
            raise ValueError(
                f"--model-arg goes with --model path/to/file.py:ClassName; --model {spec} takes "
                "none"
            )
        return spec
    return resolve_model(spec, model_args=parse_model_args(model_args))


# The numbers a reader looks at first, in this order; those a results file lacks are left out.
HEADLINE = (
    "probe_acc",
    "test_acc",
    "effective_rank",
    "mean_abs_corr",
    "entanglement",
    "morf_auc",
    "lerf_auc",
    "fidelity_gap",
    "gini",
    "mask_auroc",
    "saliency_stability",
)


def summary_table(results, names=HEADLINE) -> str:
    """The headline numbers of a results Dataset as a text table: one row per metric (and
    layer), one column per regime (or model), at the last checkpoint, the mean over seeds.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset({"probe_acc": ("regime", [0.75])}, coords={"regime": ["cnn2"]})
    >>> print(summary_table(ds))
    headline numbers (last checkpoint):
                    cnn2
    probe accuracy  0.75
    """
    import numpy as np

    from geomxai import schema

    rows = []
    regimes = None
    seeds = 1
    for name in names:
        if name not in results.data_vars:
            continue
        var = results[name]
        if "epoch" in var.dims:
            var = var.isel(epoch=-1)
        if "seed" in var.dims:
            seeds = max(seeds, int(var.sizes["seed"]))
            var = var.mean("seed", skipna=True)
        if "regime" not in var.dims:
            var = var.expand_dims(regime=[str(results.attrs.get("model", "value"))])
        extra = [d for d in var.dims if d not in ("regime", "layer")]
        if extra or var.dtype.kind not in "fiu":
            continue  # curves, maps: not one number
        regimes = [str(r) for r in var["regime"].values]
        label = schema.VARIABLES[name].label if name in schema.VARIABLES else name
        layers = [str(x) for x in var["layer"].values] if "layer" in var.dims else [None]
        for layer in layers:
            values = var.sel(layer=layer) if layer is not None else var
            text = [
                "n/a" if not np.isfinite(v) else f"{v:.4g}"
                for v in np.asarray(values.transpose("regime").values, dtype=float)
            ]
            rows.append((label if layer is None else f"{label} [{layer}]", text))
    if not rows:
        return ""
    first = max(len(r[0]) for r in rows)
    widths = [max(len(regimes[i]), *(len(r[1][i]) for r in rows)) for i in range(len(regimes))]
    title = "headline numbers (last checkpoint" + (f"; mean of {seeds} seeds" if seeds > 1 else "")
    lines = [
        title + "):",
        " " * first + "".join(f"  {r:>{w}}" for r, w in zip(regimes, widths, strict=True)),
    ]
    for label, text in rows:
        lines.append(
            f"{label:<{first}}" + "".join(f"  {t:>{w}}" for t, w in zip(text, widths, strict=True))
        )
    return "\n".join(lines)


def cmd_report(args) -> int:
    from geomxai import schema
    from geomxai.report import build_report
    from geomxai.study import open_results_file

    out = check_nonempty_path(args.out, "--out")
    check_writable(out, folder=True)
    with open_results_file(args.results) as ds:
        results = ds.load()
    if results.attrs.get("kind") != "across-settings" and not any(
        name in schema.VARIABLES for name in results.data_vars
    ):
        raise ValueError(
            f"{args.results!r} is a netCDF file but holds none of geomxai's result variables; "
            "give a results file written by `geomxai analyze` or `geomxai study`"
        )
    # After the check above: a file that is not geomxai's at all has no layout to name.
    from geomxai.report import REBUILD, check_schema_version

    check_schema_version(results, where=repr(str(args.results)), fix=REBUILD)
    if results.attrs.get("kind") == "across-settings":  # a comparison of studies
        from geomxai.report import build_across_report

        index = build_across_report(results, out)
    elif "design" in results.attrs:  # a study's results: its own sections
        from geomxai.report import build_study_report

        index = build_study_report(results, out)
    else:
        index = build_report(results, out)
    print(f"report: {index}")
    return 0


def cmd_layers(args) -> int:
    import torch

    from geomxai.collect import format_layers
    from geomxai.study import parse_model_args, resolve_model

    c, h, w = args.input_shape
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be a positive integer; got {args.num_classes}")
    if min(args.input_shape) < 1:
        raise ValueError(f"--input-shape C H W must be positive; got {c} {h} {w}")
    model = resolve_model(
        args.model,
        weights=args.weights,
        num_classes=args.num_classes,
        in_channels=c,
        image_size=h,
        model_args=parse_model_args(args.model_arg),
    )
    example = torch.zeros(1, c, h, w) if args.shapes else None
    print(format_layers(model, example))
    return 0


def _version() -> str:
    from geomxai import __version__

    return __version__


def _add_analyze_parser(sub) -> None:
    """``geomxai analyze``: the one command with many options (runs or any model, its data,
    the cache, the device), kept apart so :func:`build_parser` stays a short list."""
    p = sub.add_parser("analyze", help="measure geometry and attribution on checkpoints")
    p.add_argument("run_dirs", nargs="*", help="run directories written by `geomxai train`")
    p.add_argument(
        "--model",
        help="a checkpoint, torchvision:ARCH, timm:NAME, a geomxai model name, or your own "
        "class as path/to/file.py:ClassName (that file is imported only then)",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="a constructor argument of --model path/to/file.py:ClassName (repeatable; the "
        "value is read as a Python literal: 10, 0.5, True, (3, 32), else as a string)",
    )
    p.add_argument("--weights", help="a state_dict file for --model")
    p.add_argument(
        "--checkpoints",
        metavar="PATTERN",
        help="with --model and --data: the state_dicts of your own training loop, a glob "
        "('ckpts/*.pt', quoted), a folder or a file; each one's step is the number keyed "
        "epoch or step in its file name (epoch3_acc0.91.pt: 3), else its only number",
    )
    p.add_argument(
        "--steps",
        type=_steps_option,
        metavar="N,N,...",
        help="with --checkpoints: the step (or epoch) of each file, in the natural order of "
        "the file names (ckpt_2 before ckpt_10), for names that do not say it",
    )
    p.add_argument("--data", help="dataset for --model: a name or imagefolder:PATH")
    p.add_argument(
        "--probe-split",
        choices=("test", "all"),
        help="--model with --data NAME: take the probe from the held-out test split (default), "
        "or from every image (all), for a folder too small to hold out enough",
    )
    p.add_argument("--layers", nargs="+", help="layer names or globs (default: the feature layer)")
    p.add_argument("--probe-size", type=int, default=512, help="probe images (default 512)")
    p.add_argument("--workers", type=int, default=1, help="dask workers (1 = serial)")
    p.add_argument("--scheduler", help="address of a running dask scheduler")
    p.add_argument("--device", help="where the passes run: cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument(
        "--saliency-method",
        help="saliency method of every saliency metric: gradient, abs_gradient (default), "
        "input_x_gradient, smoothgrad, integrated_gradients",
    )
    p.add_argument("--batch-size", type=int, help="samples per forward/backward pass (256)")
    p.add_argument(
        "--reduce",
        action="append",
        metavar="R",
        help="how a layer's output becomes one vector per sample: auto (default: conv maps "
        "mean-pooled, token 0 of a sequence), mean, max, flatten, cls, token_mean, a token "
        "index; or LAYER=R, repeatable, per layer",
    )
    p.add_argument(
        "--entanglement-layer",
        metavar="LAYER",
        help="the layer gradient entanglement is measured at (default: the feature layer)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        help="--model: image side (imagefolder:/caltech101 load at it; default 64, or a timm "
        "model's own input size)",
    )
    p.add_argument(
        "--normalize",
        choices=("none", "imagenet"),
        help="--model: normalise images with the ImageNet mean and std, or not at all (default: "
        "a timm model's own data config, nothing for others)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        help="--model: rebuild the head at random with N outputs (a 1000-class head on an "
        "N-class folder)",
    )
    p.add_argument(
        "--no-labels",
        action="store_true",
        help="--model: geometry only (no accuracy, saliency or fidelity); for unlabelled data "
        "or a head that does not fit the classes",
    )
    p.add_argument("--out", default="results.nc", help="netCDF file to write")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache",
        metavar="DIR",
        help="cache each checkpoint's results in DIR (default: RUN_DIR/analysis, or no cache "
        "with a warning where the run directory is not writable)",
    )
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write a cache")
    p.set_defaults(func=cmd_analyze)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geomxai",
        description="Representation geometry and gradient-saliency quality.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"geomxai {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "study",
        help="run a study design: train its runs, analyse them, compute its statistics, report",
    )
    p.add_argument(
        "design", nargs="?", help="a design file (configs/NAME.toml) or its NAME (default quick)"
    )
    p.add_argument("--profile", help="the same as DESIGN (kept for older scripts)")
    p.add_argument(
        "--stage",
        action="append",
        choices=("train", "analyse", "runs", "statistics", "report", "all"),
        help="run only these stages (repeatable; default all: train, analyse, statistics, "
        "report); `runs` trains and analyses run by run and may run in several processes",
    )
    p.add_argument("--seeds", type=int, nargs="+", help="only these seeds of the design")
    p.add_argument(
        "--plan",
        action="store_true",
        help="check the design whole and print each run's state (to do, in progress, trained, "
        "analysed); run nothing",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a train field")
    p.add_argument("--runs", help="put run directories under RUNS/NAME (default: the design's)")
    p.add_argument(
        "--reports", help="put results and the report under REPORTS/NAME (default: the design's)"
    )
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("train", help="train one run from a TOML config")
    p.add_argument("--config", required=True, help="a TOML profile, e.g. configs/quick.toml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field")
    p.set_defaults(func=cmd_train)

    _add_analyze_parser(sub)

    p = sub.add_parser("report", help="build the HTML report of a results file")
    p.add_argument("results", help="a results.nc written by `geomxai analyze` or `study`")
    p.add_argument("--out", default="report", help="output directory")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("layers", help="list the hookable layer names of a model")
    p.add_argument(
        "model",
        help="a checkpoint, torchvision:ARCH, timm:NAME, a geomxai model name or "
        "path/to/file.py:ClassName",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        metavar="KEY=VALUE",
        help="a constructor argument of path/to/file.py:ClassName (repeatable)",
    )
    p.add_argument("--weights", help="a state_dict file")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--input-shape", type=int, nargs=3, default=(3, 32, 32), metavar=("C", "H", "W"))
    p.add_argument("--shapes", action="store_true", help="run an example input and show shapes")
    p.set_defaults(func=cmd_layers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Our process: keep freed tensor memory instead of page-faulting it back every CPU step.
    tune_cpu_allocator()
    try:
        return args.func(args)
    except OSError as err:
        # A read-only location, a full disk, a missing file: the path and the fix, one line.
        if args.verbose:
            raise
        log.error("%s", os_error_message(err))
        return 2
    except (ValueError, RuntimeError) as err:
        # Errors that name their fix are shown as they are, without a traceback.
        if args.verbose:
            raise
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
