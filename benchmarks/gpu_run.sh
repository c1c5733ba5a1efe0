#!/usr/bin/env bash
# The CuPy backend's GPU verification: GPU tests, the whole suite on cupy, and the
# benchmarks behind benchmarks/RESULTS.md (speed-ups vs Numba, share of bare cuBLAS,
# launch-bound tutorial, crossover). Everything lands in $OUT (default ./gpu-run).
# Needs CuPy for the machine's CUDA already installed (pip install 'nnx[cuda12]' or
# 'nnx[cuda13]'); nnx itself is installed from this checkout without dependencies.
set -uo pipefail
OUT="${OUT:-$PWD/gpu-run}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
status=0
step() { echo "== $*" | tee -a "$OUT/steps.txt"; "$@" || { status=1; echo "!! failed: $*" | tee -a "$OUT/steps.txt"; }; }

step nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv -f "$OUT/gpu.csv"
step "$PY" -m pip install --no-deps --no-build-isolation -e . --log "$OUT/install.log" -q
step "$PY" -c "import cupy, nnx; print('cupy', cupy.__version__); print(nnx.available_backends())" \
    > "$OUT/backends.txt"
NNX_BACKEND=cupy step "$PY" -m pytest -m gpu -rs -q --junitxml="$OUT/gpu-tests.xml" -o console_output_style=classic \
    > "$OUT/gpu-tests.txt" 2>&1
NNX_BACKEND=cupy step "$PY" -m pytest -rs -q --benchmark-disable > "$OUT/all-tests-cupy.txt" 2>&1
for workload in tutorial large-hidden blas-bound crossover; do
    step "$PY" -m nnx bench -w "$workload" --sizes full -b cupy -b cupy/products-only -b numba \
        --json "$OUT/bench-$workload.json" > "$OUT/bench-$workload.txt" 2>&1
done
exit $status
