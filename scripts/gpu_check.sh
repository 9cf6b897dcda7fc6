#!/usr/bin/env bash
# The trainer's whole GPU check in one call, within 8 minutes on an H100 (issue 27).
#
# On a machine with a CUDA GPU and its own torch:
#   1. install   the package without touching torch (pip install --no-deps -e ., then what is
#                missing, with torch pinned; --wheels DIR installs from a wheel folder only)
#   2. pytest    the CUDA tests (pytest -m gpu), JUnit XML kept
#   3. bench     bench_train_step.py --cuda-graph for cnn2 and ResNet-18: every regime, fp32 and
#                bf16, eager (ZCA and Newton-Schulz 'auto') and captured
#   4. runs      a few hundred steps of each regime with cuda_graph on, straight and killed
#                mid-epoch then resumed, compared with each other and with an eager run
#   5. profile   torch.profiler summaries of the sgt and saliencydecor steps (--no-profile skips)
#   6. summary   gpu_check.json: hardware, torch, date, each part's status and time, the GPU
#                tests' outcome, the step ratios against their targets, the runs' verdicts
#
# Every figure is JSON under $OUT (the device machine's result folder), else under --out DIR,
# else benchmarks/results/ (by hand). Each part runs under its own timeout and all of them under
# one budget (--budget-s, 450 s by default), so a slow part cannot lose the others' results.
#
# --dry-run skips what needs CUDA and runs everything else on the CPU: the argument handling,
# the dependency check (nothing installed), the collection of the GPU tests, tiny CPU versions
# of the benchmark, the runs and the profile, and the JSON writing (into a temporary folder
# unless --out or $OUT says where). tests/train/test_gpu_check.py runs it.
#
#   scripts/gpu_check.sh                    # on a GPU machine
#   scripts/gpu_check.sh --dry-run --out /tmp/gpu_check
#   PYTHON=.venv/bin/python scripts/gpu_check.sh --dry-run
set -u -o pipefail

usage() {
    sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --dry-run  --out DIR  --budget-s N  --wheels DIR  --no-install  --no-profile"
    echo "         --only PART[,PART...]  (install, pytest, bench, runs, profile)"
}

DRY=0
OUTDIR="${OUT:-}"
BUDGET=450
WHEELS=""
INSTALL=1
PROFILE=1
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUTDIR="${2:?--out needs a folder}"; shift ;;
        --budget-s) BUDGET="${2:?--budget-s needs seconds}"; shift ;;
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
        --no-install) INSTALL=0 ;;
        --no-profile) PROFILE=0 ;;
        --only) ONLY=",${2:?--only needs part names},"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$BUDGET" in
    ''|*[!0-9]*) echo "gpu_check.sh: --budget-s must be a whole number of seconds; got '$BUDGET'" >&2
                 exit 2 ;;
esac

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python}"
if ! command -v "$PY" >/dev/null 2>&1; then
    PY=python3
fi
if [ -z "$OUTDIR" ]; then
    if [ "$DRY" = 1 ]; then OUTDIR="$(mktemp -d -t gpu_check.XXXXXX)"; else OUTDIR="$ROOT/benchmarks/results"; fi
fi
mkdir -p "$OUTDIR/logs" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"
PARTS="$OUTDIR/gpu_check_parts.jsonl"
: > "$PARTS"
START=$SECONDS
export PYTHONUNBUFFERED=1

if [ "$DRY" = 0 ]; then
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "gpu_check.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False);" \
             "run it on a GPU machine, or use --dry-run" >&2
        exit 2
    fi
fi

wanted() {  # a part runs unless --only names others
    [ -z "$ONLY" ] || case "$ONLY" in *",$1,"*) return 0 ;; *) return 1 ;; esac
}

# part NAME LIMIT_S COMMAND...: run under min(LIMIT_S, what is left of the budget) and append
# {"part", "rc", "seconds", "timed_out", "limit_s", "log"} to gpu_check_parts.jsonl.
part() {
    local name="$1" limit="$2"; shift 2
    local left=$((BUDGET - (SECONDS - START)))
    [ "$left" -lt "$limit" ] && limit=$left
    local log="$OUTDIR/logs/$name.log"
    if [ "$limit" -lt 5 ]; then
        echo "{\"part\": \"$name\", \"rc\": null, \"skipped\": \"budget spent\", \"seconds\": 0}" >> "$PARTS"
        echo "== $name: skipped, the budget of ${BUDGET}s is spent"
        return 0
    fi
    echo "== $name (at most ${limit}s): $*"
    local t0=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
    rc=$?
    local took=$((SECONDS - t0)) timed_out=false
    { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && timed_out=true
    echo "{\"part\": \"$name\", \"rc\": $rc, \"seconds\": $took, \"timed_out\": $timed_out, \"limit_s\": $limit, \"log\": \"logs/$name.log\"}" >> "$PARTS"
    tail -n 5 "$log" | sed 's/^/   /'
    echo "   rc=$rc in ${took}s"
    return 0
}

install_step() {
    if [ "$DRY" = 1 ]; then
        echo "dry run: would run $PY -m pip install --no-deps -e . and then install what is missing"
        "$PY" scripts/gpu_check.py deps
        return $?
    fi
    "$PY" -m pip install --no-deps --no-build-isolation -e . || "$PY" -m pip install --no-deps -e . || return $?
    if [ -n "$WHEELS" ]; then
        "$PY" scripts/gpu_check.py deps --install --wheels "$WHEELS" || return $?
    else
        "$PY" scripts/gpu_check.py deps --install || return $?
    fi
    "$PY" -c "import geomxai.train, geomxai.data; print('geomxai imports')"
}

GPU_TESTS=$(grep -rl "mark.gpu" tests --include='*.py' | sort | tr '\n' ' ')

if wanted install && [ "$INSTALL" = 1 ]; then
    export -f install_step
    export DRY PY WHEELS
    part install 60 bash -c install_step
fi

if wanted pytest; then
    if [ "$DRY" = 1 ]; then
        # shellcheck disable=SC2086
        part pytest 120 "$PY" -m pytest -m gpu --collect-only -q -p no:cacheprovider $GPU_TESTS
    else
        # shellcheck disable=SC2086
        part pytest 110 "$PY" -m pytest -m gpu -q -p no:cacheprovider \
            --junitxml="$OUTDIR/pytest_gpu.xml" $GPU_TESTS
    fi
fi

if wanted bench; then
    if [ "$DRY" = 1 ]; then
        tiny=(--device cpu --threads 1 --repeats 1 --steps 1 --batch 4)
        part bench_cnn2 60 "$PY" benchmarks/bench_train_step.py "${tiny[@]}" --models cnn2_28 \
            --out "$OUTDIR/train_step_cpu_dryrun_cnn2.json"
        # regular, sgt and sgt_detached (always timed), at batch 2: the same code as on a GPU.
        part bench_resnet18 90 "$PY" benchmarks/bench_train_step.py "${tiny[@]}" --batch 2 \
            --models resnet18_32 --regimes sgt \
            --out "$OUTDIR/train_step_cpu_dryrun_resnet18.json"
    else
        part bench_cnn2 70 "$PY" benchmarks/bench_train_step.py --device cuda --cuda-graph \
            --models cnn2_28 --repeats 7 --steps 10 --out "$OUTDIR/train_step_cuda_cnn2.json"
        part bench_resnet18 120 "$PY" benchmarks/bench_train_step.py --device cuda --cuda-graph \
            --models resnet18_32 --repeats 5 --steps 10 \
            --out "$OUTDIR/train_step_cuda_resnet18.json"
    fi
fi

if wanted runs; then
    if [ "$DRY" = 1 ]; then
        part runs 90 "$PY" scripts/gpu_check.py runs --device cpu --dry-run --out "$OUTDIR"
    else
        part runs 100 "$PY" scripts/gpu_check.py runs --device cuda --out "$OUTDIR" --budget-s 70
    fi
fi

if wanted profile && [ "$PROFILE" = 1 ]; then
    ns=(--set whitening_method=newton_schulz --set whitening_iters=auto)
    if [ "$DRY" = 1 ]; then
        part profile 60 "$PY" benchmarks/profile_train_step.py --device cpu --model cnn2_28 \
            --regimes sgt saliencydecor --steps 1 --batch 4 --rows 10 "${ns[@]}" \
            --out "$OUTDIR/profile_cpu_dryrun.txt" --json "$OUTDIR/profile_cpu_dryrun.json"
    else
        part profile 40 bash -c "
            '$PY' benchmarks/profile_train_step.py --device cuda --model cnn2_28 \
                --regimes sgt saliencydecor --steps 5 ${ns[*]} \
                --out '$OUTDIR/profile_cuda_cnn2_28_ns.txt' \
                --json '$OUTDIR/profile_cuda_cnn2_28_ns.json' &&
            '$PY' benchmarks/profile_train_step.py --device cuda --model resnet18_32 \
                --regimes sgt saliencydecor --steps 3 ${ns[*]} \
                --out '$OUTDIR/profile_cuda_resnet18_32_ns.txt' \
                --json '$OUTDIR/profile_cuda_resnet18_32_ns.json'"
    fi
fi

summary_args=(--out "$OUTDIR")
[ "$DRY" = 1 ] && summary_args+=(--dry-run)
"$PY" scripts/gpu_check.py summary "${summary_args[@]}"
rc=$?
echo "gpu_check.sh: $((SECONDS - START))s in all; results in $OUTDIR"
exit $rc
