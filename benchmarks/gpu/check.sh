#!/usr/bin/env bash
# The GPU check (issue 12, point 4): every path of polytask on CUDA, in at most 6 minutes on
# one GPU, from the source tree with the GPU machine's own Python and torch.
#
#   bash benchmarks/gpu/fetch_wheels.sh          # once, where pip reaches a package index
#   bash benchmarks/gpu/check.sh [OUT_DIR]       # on the GPU machine (no internet needed)
#
# OUT_DIR (default benchmarks/results/gpu_check) receives at most four files, no folders:
#   gpu_check.json   date, GPU, torch / CUDA versions, every part's cases, status and seconds
#   gpu_check.log    this script's output (PASS / FAIL lines, timings, the step-cost table)
#   step_cost.json   benchmarks/balancing/step_cost.py's results on the GPU (part e)
#   throughput.json  benchmarks/throughput.py --gpu, when that file exists (part f)
# Exit status: 0 when every check passed, 1 otherwise; every part runs whatever failed before.
#
# Parts (each its own process, with its own time budget; seconds are printed per part):
#   install     wheels of what the machine lacks (benchmarks/gpu/wheels: pydantic & co.,
#               seqeval, torchjd + its solvers) into $GPU_CHECK_SITE with pip --no-index
#               --target, skipped when $PYTHON already imports pydantic; PYTHONPATH=src:SITE
#   balancing   a. every balancing method at every level it supports, 3 steps (backward,
#               SGD step, after_step) on CUDA and on the CPU: every .grad equal within
#               1e-4 x max|grad| (float32; randomised methods seeded: CPU generator draws)
#   precision   b. training at fp32 / bf16 / fp16 for every encoder kind (cnn, bilstm words +
#               chars with CRF, transformer from a tiny random BERT, mlp, tabular, lenet):
#               finite losses every step, skipped_steps a number, CUDA memory used
#   cli         c. python -m polytask train / eval / predict / compare --device cuda; eval and
#               predict on CUDA equal the CPU's on the same run; the loaded model on CUDA
#   resume      d. trainer.deterministic: true, kill -9 after a checkpoint + --resume ends
#               with torch.equal weights (best/, checkpoints/last/) to an uninterrupted run
#   stepcost    e. step_cost.py --libs polytask torchjd on CUDA, MLP 1024 -> 4 x 2048, batch
#               512, K = 2, 10, 40 (one process per K, within the time left), and the issue's
#               targets as PASS / MISS (a miss is a measurement: it does not fail the check)
#   throughput  f. benchmarks/throughput.py --gpu, only when that file exists (60 s)
#
# Environment:
#   PYTHON            interpreter (default python3; with GPU_CHECK_DEVICE=cpu, .venv/bin/python
#                     when it exists)
#   GPU_CHECK_DEVICE  cuda (default), cuda:N, or cpu: a dry run, every check CPU vs CPU, small
#                     step-cost model, generous budgets
#   GPU_CHECK_SITE    where the wheels install (default /tmp/polytask-site)
#   GPU_CHECK_ROUNDS  step-cost rounds per configuration (default 5 on CUDA, 2 on the CPU)
#   GPU_CHECK_BUDGET  seconds for the whole script (default 350; the step-cost table gets what
#                     the other parts leave, K = 40 last: it says when a K was not measured)
#   GPU_CHECK_KEEP=1  keep the scratch folder (runs, projects) and print its path
#
# On the project's device machine (tool `run`), carry the wheels, which git ignores:
#   run(command="bash benchmarks/gpu/check.sh $OUT", carry=["benchmarks/gpu/wheels"],
#       timeout_s=420)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
DEV="${GPU_CHECK_DEVICE:-cuda}"
if [ -z "${PYTHON:-}" ]; then
    if [ "$DEV" = cpu ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
case "$PYTHON" in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
PY="$PYTHON"
SITE="${GPU_CHECK_SITE:-/tmp/polytask-site}"
OUT_DIR="${1:-benchmarks/results/gpu_check}"
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
rm -f "$OUT_DIR"/gpu_check.json "$OUT_DIR"/gpu_check.log "$OUT_DIR"/step_cost.json \
    "$OUT_DIR"/throughput.json
WORK="$(mktemp -d /tmp/polytask-gpucheck.XXXXXX)"

if [ "$DEV" = cpu ]; then
    THREADS=1 SLOW=4 ROUNDS="${GPU_CHECK_ROUNDS:-2}"
else
    THREADS=4 SLOW=1 ROUNDS="${GPU_CHECK_ROUNDS:-5}"
fi
# seconds for the whole script (the issue: <= 6 minutes on a GPU); the step-cost table gets
# what parts a-d leave of it
TOTAL_BUDGET="${GPU_CHECK_BUDGET:-$((350 * SLOW))}"

export PYTHONPATH="$ROOT/src:$SITE"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=1
export PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1

T_START=$(date +%s.%N)
elapsed() { awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%d", b - a }'; }
# the throughput benchmark's share of the budget (only on a GPU, only when the script exists)
F_RESERVE=0
[ -f benchmarks/throughput.py ] && [ "$DEV" != cpu ] && F_RESERVE=65
# clamp BUDGET RESERVE: BUDGET, or less where the whole script's budget minus RESERVE (what
# later parts need at least) runs out first; never below 15 s
clamp() {
    local left=$((TOTAL_BUDGET - $(elapsed) - $2))
    local b=$(($1 < left ? $1 : left))
    echo $((b > 15 ? b : 15))
}

# run_part NAME BUDGET_S CMD...: runs CMD under `timeout`, appends NAME rc seconds budget to
# the timings that gpu_check.json reports
run_part() {
    local name=$1 budget=$2
    shift 2
    echo
    echo "=== $name (budget ${budget} s, $(elapsed) s elapsed)"
    local t0 t1 rc
    t0=$(date +%s.%N)
    if declare -F "$1" >/dev/null; then # a function of this script: in a child bash
        timeout -k 5 "$budget" bash -c "$*"
    else
        timeout -k 5 "$budget" "$@"
    fi
    rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "TIMEOUT  $name: stopped after ${budget} s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$budget" >>"$WORK/timings.tsv"
    echo "=== $name: rc $rc in ${secs} s"
    return 0
}

install_wheels() {
    if "$PY" -c "import pydantic" 2>/dev/null; then
        echo "$PY imports pydantic already: no wheels installed"
    else
        local wheels=("$ROOT"/benchmarks/gpu/wheels/*.whl)
        if [ ! -e "${wheels[0]}" ]; then
            echo "FAIL  install: no wheels in benchmarks/gpu/wheels (run fetch_wheels.sh and carry it)"
            return 1
        fi
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --disable-pip-version-check --target "$SITE" "${wheels[@]}"; then
            echo "installed ${#wheels[@]} wheels into $SITE"
        else # no pip: these wheels install by unpacking (no scripts, no .data folders)
            echo "pip failed: unpacking the ${#wheels[@]} wheels into $SITE instead"
            "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
                "$SITE" "${wheels[@]}" || return 1
        fi
    fi
    "$PY" - <<'EOF'
import importlib.metadata as md
import platform

import torch

import polytask

def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "missing"

gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"GPU {gpu}, polytask {polytask.__version__} from {polytask.__file__}")
print("  " + ", ".join(f"{n} {v(n)}" for n in (
    "pydantic", "pydantic-core", "seqeval", "numpy", "scipy", "transformers", "torchjd",
    "qpsolvers", "quadprog", "cvxpy", "clarabel", "ecos")))
import pydantic, seqeval  # noqa: E401,F401 - polytask's own dependencies must import
print("PASS  install: polytask and its dependencies import")
EOF
}

stepcost() {
    local sizes=() ks=(2 10 40)
    # the methods the targets compare: those both libraries have, and the loss weightings
    local STEPCOST_METHODS=(upgrad mgda cagrad pcgrad imtl_g nash_mtl aligned_mtl dualproj
        gradvac con_fig graddrop fixed uw dwa rlw famo)
    if [ "$DEV" = cpu ]; then
        sizes=(--input 32 --width 64 --depth 2 --batch 32 --steps 1 --warmup 1)
        ks=(2 10)
    else
        sizes=(--input 1024 --width 2048 --depth 4 --batch 512 --steps 3 --warmup 2)
    fi
    local reserve=$((15 + F_RESERVE))
    local deadline=$((TOTAL_BUDGET - reserve)) left
    local n=${#ks[@]} i=0 k budget rc
    for k in "${ks[@]}"; do
        left=$((deadline - $(elapsed)))
        # later K cost more: K=2 gets 1/4 of what is left, K=10 2/5 of the rest, K=40 the rest
        case $((n - i)) in 3) budget=$((left / 4)) ;; 2) budget=$((left * 2 / 5)) ;; *) budget=$left ;; esac
        i=$((i + 1))
        if [ "$budget" -lt 10 ]; then
            echo "step cost K=$k: not measured (no time left in the budget)"
            continue
        fi
        echo "--- step cost K=$k (budget ${budget} s)"
        timeout -k 5 "$budget" "$PY" benchmarks/balancing/step_cost.py --device "$DEV" \
            "${sizes[@]}" --K "$k" --rounds "$ROUNDS" --threads "$THREADS" --retries 1 \
            --libs polytask torchjd --no-memory --no-nash --merge --out "$WORK/step_cost.json" \
            --methods "${STEPCOST_METHODS[@]}"
        rc=$?
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "step cost K=$k: stopped after its ${budget} s (the table says what was measured)"
            echo "K=$k" >>"$WORK/stepcost_timeouts"
        elif [ "$rc" -ne 0 ]; then
            echo "FAIL  stepcost: step_cost.py --K $k exited with $rc"
            echo "K=$k rc=$rc" >>"$WORK/stepcost_errors"
        fi
    done
    [ -f "$WORK/step_cost.json" ] && cp "$WORK/step_cost.json" "$OUT_DIR/step_cost.json"
    "$PY" benchmarks/gpu/checks.py stepcost --device "$DEV" --json "$OUT_DIR/step_cost.json" \
        --result "$WORK/stepcost.json" --work "$WORK" --expected-k "${ks[@]}"
}

export DEV PY SITE ROOT WORK OUT_DIR THREADS ROUNDS TOTAL_BUDGET T_START F_RESERVE
export -f elapsed install_wheels stepcost

main() {
    echo "polytask GPU check: device $DEV, python $PY, out $OUT_DIR, $(date -u +%FT%TZ)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader 2>/dev/null
    local part
    run_part install "$(clamp $((60 * SLOW)) 200)" install_wheels
    for part in balancing precision cli resume; do
        local budget
        case $part in
            balancing) budget=60 ;; precision) budget=90 ;; cli) budget=100 ;; resume) budget=90 ;;
        esac
        run_part "$part" "$(clamp $((budget * SLOW)) $((30 + F_RESERVE)))" \
            "$PY" benchmarks/gpu/checks.py "$part" \
            --device "$DEV" --work "$WORK" --result "$WORK/$part.json" --threads "$THREADS"
    done
    run_part stepcost "$(clamp 100000 "$F_RESERVE")" stepcost
    if [ "$F_RESERVE" -gt 0 ]; then
        run_part throughput "$(clamp 60 -5)" \
            "$PY" benchmarks/throughput.py --gpu --rounds 1 --steps 30 --json "$OUT_DIR/throughput.json"
    else
        echo
        echo "=== throughput: skipped ($([ "$DEV" = cpu ] && echo "dry run on the CPU" ||
            echo "no benchmarks/throughput.py"))"
    fi
    echo
    echo "=== total $(elapsed) s"
    "$PY" benchmarks/gpu/checks.py assemble --device "$DEV" --work "$WORK" --out "$OUT_DIR" \
        --total "$(elapsed)"
}

main 2>&1 | tee "$OUT_DIR/gpu_check.log"
rc=${PIPESTATUS[0]}
if [ "${GPU_CHECK_KEEP:-0}" = 1 ]; then echo "scratch folder kept: $WORK"; else rm -rf "$WORK"; fi
exit "$rc"
