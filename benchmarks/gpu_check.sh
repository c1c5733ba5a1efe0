#!/usr/bin/env bash
# One-shot GPU check of the CuPy backend, sized for a short GPU slot: at most 6 minutes on an H200.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh        # from the repository root
#
# Steps, each under its own timeout (T_* below, together at most 360 s with the kill grace):
#   install    pip install --no-deps --no-build-isolation -e .   (NNX_GPU_CHECK_INSTALL=0 skips it)
#   probe      the environment; the check STOPS here when CuPy cannot compile or run a kernel
#   smoke      benchmarks/gpu_smoke.py: kernels, the three paths' parity and determinism, CUDA-event timings
#              (tutorial, moons, blas-bound, and Adam on minibatches: the minibatch and mnist-shaped fits),
#              then every path under SGD/Adam/RMSprop, full batch and minibatches: bits, errors, captures;
#              the plans' neighbours (single-block threads, sliced work items) timed beside the default
#   tests      pytest -m gpu
#   bench-gpu  nnx bench, GPU targets: tutorial, crossover, large-hidden, blas-bound
#   bench-cpu  nnx bench, numba: tutorial, crossover, large-hidden (the same machine's CPU rows)
#   results    benchmarks/gpu_results.py writes RESULTS.md from the files above
# Numba's kernels compile in the background from the probe on (prewarm, at low priority), so
# bench-cpu loads them from the cache instead of compiling inside its time limit.
#
# $OUT (default ./gpu-check-out) receives at most 8 files: environment.json, steps.json,
# smoke.json, gpu-tests.xml, bench.json, RESULTS.md and logs.tar.gz (every step's log).
# Exit status: 0 every step passed, 1 a step failed or timed out, 3 CuPy unusable (stopped early).
# NNX_GPU_CHECK_DRY_RUN=1 lists the steps, their limits and commands without running them.
set -u
export PYTHONUNBUFFERED=1

T_INSTALL=25
T_PROBE=25
T_SMOKE=80
T_TESTS=75
T_BENCH_GPU=85
T_BENCH_CPU=40
T_RESULTS=10
T_PREWARM=180  # background, overlapping the GPU steps
KILL_GRACE=2   # seconds between timeout's TERM and KILL

PY="${PYTHON:-python3}"
OUT="${OUT:-$PWD/gpu-check-out}"
DRY="${NNX_GPU_CHECK_DRY_RUN:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nnx-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
LOGS="$WORK/logs"
mkdir -p "$OUT" "$LOGS"
export NUMBA_CACHE_DIR="$WORK/numba-cache"
# nnx keeps its kernels here too: a fresh cache, and no need for platformdirs (not in every GPU image).
export NNX_CACHE_DIR="$WORK/nnx-cache"
STEPS=()
FAILED=0
STOPPED=false
START=$(date +%s.%N)

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

write_steps() {
    local IFS=,
    printf '{"finished": "%s", "stopped_early": %s, "dry_run": %s, "seconds": %s, "steps": [%s]}\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$STOPPED" "$([ "$DRY" = 1 ] && echo true || echo false)" \
        "$(elapsed "$START")" "${STEPS[*]}" > "$WORK/steps.json"
}

# step NAME LIMIT COMMAND...: run under `timeout`, log to $LOGS/NAME.log, record the outcome.
step() {
    local name="$1" limit="$2" started status rc
    shift 2
    started=$(date +%s.%N)
    if [ "$DRY" = 1 ]; then
        echo "step $name $limit: $*"
        rc=0
        status=dry-run
    else
        echo "== $name (limit ${limit} s): $*"
        timeout --kill-after="$KILL_GRACE" "$limit" "$@" > "$LOGS/$name.log" 2>&1
        rc=$?
        tail -n 15 "$LOGS/$name.log"
    fi
    case $rc in
        0) [ "$DRY" = 1 ] || status=ok ;;
        124|137) status=timeout ;;
        *) status="failed ($rc)" ;;
    esac
    [ $rc -eq 0 ] || FAILED=1
    STEPS+=("{\"name\": \"$name\", \"status\": \"$status\", \"seconds\": $(elapsed "$started"), \"limit\": $limit}")
    write_steps
    echo "== $name: $status after $(elapsed "$started") s"
    return $rc
}

# Copy the results into $OUT (at most 8 files) and pack every log into one archive.
finish() {
    write_steps
    for f in environment.json steps.json smoke.json gpu-tests.xml bench.json RESULTS.md; do
        [ -f "$WORK/$f" ] && cp "$WORK/$f" "$OUT/$f"
    done
    tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs $(cd "$WORK" && ls bench-*.json 2>/dev/null)
    echo "== gpu check finished in $(elapsed "$START") s; results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}

if [ "${NNX_GPU_CHECK_INSTALL:-1}" = 1 ]; then
    step install "$T_INSTALL" "$PY" -m pip install --no-deps --no-build-isolation -e . -q
fi

if ! step probe "$T_PROBE" "$PY" benchmarks/gpu_smoke.py probe --out "$WORK/environment.json"; then
    STOPPED=true
    echo "!! stopping early: CuPy cannot compile or run a CUDA kernel here:" >&2
    grep -E "CuPy cannot|Error|error" "$LOGS/probe.log" | tail -n 3 >&2
    finish
    exit 3
fi

PREWARM_PID=""
if [ "$DRY" = 1 ]; then
    echo "background prewarm-numba $T_PREWARM: $PY benchmarks/gpu_smoke.py prewarm-numba"
else
    timeout --kill-after="$KILL_GRACE" "$T_PREWARM" nice -n 10 "$PY" benchmarks/gpu_smoke.py prewarm-numba \
        > "$LOGS/prewarm-numba.log" 2>&1 &
    PREWARM_PID=$!
fi

step smoke "$T_SMOKE" "$PY" benchmarks/gpu_smoke.py smoke --out "$WORK/smoke.json"
step tests "$T_TESTS" "$PY" -m pytest -m gpu -q -rfE -p no:cacheprovider -o console_output_style=classic \
    --junitxml="$WORK/gpu-tests.xml"
step bench-gpu "$T_BENCH_GPU" "$PY" -m nnx bench -w tutorial,crossover,large-hidden,blas-bound \
    -b cupy,cupy/no-graphs,cupy/op-by-op,cupy/products-only --no-references --min-time 0.05 --rounds 3 \
    --json "$WORK/bench-gpu.json"
[ -n "$PREWARM_PID" ] && wait "$PREWARM_PID"
step bench-cpu "$T_BENCH_CPU" "$PY" -m nnx bench -w tutorial,crossover,large-hidden -b numba --no-references \
    --min-time 0.05 --rounds 3 --json "$WORK/bench-cpu.json"
step results "$T_RESULTS" "$PY" benchmarks/gpu_results.py "$WORK" --merge-bench --out "$WORK/RESULTS.md"
finish
exit $FAILED
