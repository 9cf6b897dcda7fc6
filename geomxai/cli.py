"""The ``geomxai`` command: study, train, analyze, report, layers."""

from __future__ import annotations

import argparse
import logging
import sys

from geomxai._allocator import tune_cpu_allocator

log = logging.getLogger("geomxai")


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
    from geomxai.study import run_study

    index = run_study(
        args.profile,
        overrides=args.set,
        runs_root=args.runs,
        reports_root=args.reports,
        workers=args.workers,
    )
    print(f"report: {index}")
    return 0


def cmd_analyze(args) -> int:
    import json

    from geomxai.study import analyze_model, analyze_runs, save_results
    from geomxai.study._study import linked

    # ValueError, not SystemExit: main() turns it into one error line and exit status 2.
    options = {"probe_size": args.probe_size, "layers": args.layers}
    if args.model:
        if args.run_dirs:
            raise ValueError(
                "geomxai analyze takes RUN_DIR arguments or --model/--data, not both; got "
                f"--model {args.model} and {len(args.run_dirs)} run director(ies)"
            )
        if not args.data:
            raise ValueError(
                "geomxai analyze --model needs --data (a dataset name or imagefolder:PATH)"
            )
        results = analyze_model(args.model, args.data, weights=args.weights, **options)
    else:
        if not args.run_dirs:
            raise ValueError("geomxai analyze needs RUN_DIR arguments or --model/--data")
        if args.weights or args.data:
            raise ValueError(
                "--weights and --data go with --model; run directories carry their own"
            )
        results = analyze_runs(
            args.run_dirs, workers=args.workers, scheduler=args.scheduler, **options
        )
        results = linked(results, runs=json.dumps([str(d) for d in args.run_dirs]))
    out = save_results(results, args.out)
    print(f"results: {out}")
    return 0


def cmd_report(args) -> int:
    import xarray as xr

    from geomxai.report import build_report

    with xr.open_dataset(args.results) as ds:
        index = build_report(ds.load(), args.out)
    print(f"report: {index}")
    return 0


def cmd_layers(args) -> int:
    import torch

    from geomxai.collect import format_layers
    from geomxai.study._sources import resolve_model

    c, h, w = args.input_shape
    model = resolve_model(
        args.model, weights=args.weights, num_classes=args.num_classes, in_channels=c, image_size=h
    )
    example = torch.zeros(1, c, h, w) if args.shapes else None
    print(format_layers(model, example))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geomxai",
        description="Representation geometry and gradient-saliency quality.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("study", help="train every regime, analyse every checkpoint, write a report")
    p.add_argument("--profile", default="quick", help="configs/NAME.toml or a path (default quick)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a train field")
    p.add_argument("--runs", default="runs", help="where run directories go (default runs/)")
    p.add_argument("--reports", default="reports", help="where the report goes (default reports/)")
    p.add_argument("--workers", type=int, default=1, help="dask workers for the analysis")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("train", help="train one run from a TOML config")
    p.add_argument("--config", required=True, help="a TOML profile, e.g. configs/quick.toml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("analyze", help="measure geometry and attribution on checkpoints")
    p.add_argument("run_dirs", nargs="*", help="run directories written by `geomxai train`")
    p.add_argument("--model", help="a checkpoint, torchvision:ARCH or a geomxai model name")
    p.add_argument("--weights", help="a state_dict file for --model")
    p.add_argument("--data", help="dataset for --model: a name or imagefolder:PATH")
    p.add_argument("--layers", nargs="+", help="layer names or globs (default: the feature layer)")
    p.add_argument("--probe-size", type=int, default=512, help="probe images (default 512)")
    p.add_argument("--workers", type=int, default=1, help="dask workers (1 = serial)")
    p.add_argument("--scheduler", help="address of a running dask scheduler")
    p.add_argument("--out", default="results.nc", help="netCDF file to write")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="build the HTML report of a results file")
    p.add_argument("results", help="a results.nc written by `geomxai analyze` or `study`")
    p.add_argument("--out", default="report", help="output directory")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("layers", help="list the hookable layer names of a model")
    p.add_argument("model", help="a checkpoint, torchvision:ARCH or a geomxai model name")
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
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Errors that name their fix are shown as they are, without a traceback.
        if args.verbose:
            raise
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
