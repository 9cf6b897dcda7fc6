"""Start-up cost of the command line: ``geomxai layers cnn2`` against a bare ``import torch``.

Both are timed as whole processes from the outside (start to exit, interpreter start-up
included), in turn (A B A B ...), and the ratio is taken pair by pair, so a machine whose speed
drifts during the benchmark moves both sides of a pair alike. CPU seconds and peak memory are the
kernel's accounting of each finished child (``os.wait4``). The target (issue 26): the command
within 0.5 s of the bare import.

Run: ``python benchmarks/bench_cli_startup.py [--runs 7] [--out FILE]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
COMMANDS = {
    "geomxai layers cnn2": [str(VENV_BIN / "geomxai"), "layers", "cnn2"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def run_once(argv: list[str]) -> dict:
    """Wall, CPU (user + system) seconds and peak resident MiB of one whole process."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: nothing blocks the child
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-500:]
            raise RuntimeError(f"{' '.join(argv)} exited {code}: {tail}")
    # ru_maxrss is in KiB on Linux.
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_mib": usage.ru_maxrss / 1024,
    }


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="pairs to time (default 7)")
    parser.add_argument("--out", help="JSON file (default benchmarks/results/cli_startup.json)")
    args = parser.parse_args(argv)
    (name_a, cmd_a), (name_b, cmd_b) = COMMANDS.items()
    run_once(cmd_a), run_once(cmd_b)  # warm-up: file caches, .pyc files
    pairs = [(run_once(cmd_a), run_once(cmd_b)) for _ in range(args.runs)]
    # Imported after the timing: a child's peak memory starts at this process's own (fork
    # copies it), so this process stays small while it measures.
    import torch
    from _machine import result_header, write_results

    results = result_header("cli_startup", torch.device("cpu"))
    results["runs"] = args.runs
    results["commands"] = {name_a: cmd_a[1:], name_b: cmd_b[1:]}
    print(f"{'':28s}{'min':>9s}{'median':>9s}{'max':>9s}")
    for key in ("wall_s", "cpu_s", "peak_mib"):
        a = summary([p[0][key] for p in pairs])
        b = summary([p[1][key] for p in pairs])
        ratio = summary([p[0][key] / p[1][key] for p in pairs])
        diff = summary([p[0][key] - p[1][key] for p in pairs])
        results[key] = {name_a: a, name_b: b, "ratio": ratio, "difference": diff}
        for label, row in (("A", a), ("B", b), ("A/B", ratio), ("A-B", diff)):
            print(f"{key + ' ' + label:28s}" + "".join(f"{row[k]:9.3f}" for k in row))
    extra = results["wall_s"]["difference"]["median"]
    print(
        f"\n{name_a} / {name_b}: wall ratio {results['wall_s']['ratio']['median']:.2f} "
        f"(median of {args.runs} pairs), {extra:+.2f} s; target: within 0.5 s"
    )
    write_results(results, args.out, "cli_startup.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
