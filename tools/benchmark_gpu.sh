#!/usr/bin/env bash
# The GPU rows of the README's "Speed and memory" in one go:
#   tools/benchmark_gpu.sh PUBLISHED_REPO OUT_DIR
# PUBLISHED_REPO is a local checkout of github.com/wimmerth/anyup (its hubconf.py is used, no
# weights are downloaded). Runs the CUDA tests (the Triton kernel's first run on hardware among
# them), then AnyUp with the matmul, sdpa and triton attention kernels and the published code at
# each size, in float32 and under bf16 autocast, and the four-map call; the kernels per forward;
# every table goes to stdout and OUT_DIR/gpu_benchmarks.md, every row to OUT_DIR/*.json.
# DEVICE (default cuda), SIZES (default "448 1024"), REPEATS (default 10) and PYTHON override.
set -euo pipefail
if [ "$#" -ne 2 ]; then
    echo "usage: $0 PUBLISHED_REPO OUT_DIR" >&2
    exit 2
fi
PUBLISHED=$1
OUT_DIR=$2
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-448 1024}
REPEATS=${REPEATS:-10}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
# Works from a checkout that is not installed, too.
export PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/gpu_benchmarks.md"
: >"$REPORT"

bench() { # NAME, then tools/benchmark.py arguments
    local name=$1
    shift
    echo "### $name" | tee -a "$REPORT"
    "$PYTHON" "$HERE/benchmark.py" --device "$DEVICE" --repeats "$REPEATS" --markdown \
        --json "$OUT_DIR/$name.json" "$@" | grep -v '^{' | tee -a "$REPORT"
}

if [ "$DEVICE" = cuda ]; then
    # Failures are reported, not fatal: the timings below are wanted either way.
    { "$PYTHON" -m pytest -q -p no:cacheprovider "$HERE/../tests/test_core" -k cuda -rs \
        2>&1 || true; } | tail -n 8 | tee -a "$REPORT"
fi
# Kernels per forward (counted by operation, and profiled on the device) for the Triton and
# the matmul attention; the first call for each shape runs under set_sync_debug_mode('error').
for kernel in triton matmul; do
    echo "### kernels per forward, $kernel attention" | tee -a "$REPORT"
    # shellcheck disable=SC2046  # SIZES is a list of sizes, each with its feature size
    "$PYTHON" "$HERE/count_kernels.py" --device "$DEVICE" --attention-kernel "$kernel" \
        --sizes $(for s in $SIZES; do echo "$s:$((s / 14))"; done) 2>&1 | tee -a "$REPORT" ||
        echo "(kernel count failed, see above)" | tee -a "$REPORT"
done
for autocast in none bf16; do
    for kernel in matmul sdpa triton; do
        # shellcheck disable=SC2086  # SIZES is a list
        # A failing Triton row (its kernels' first compilation on hardware) must not cost the
        # other rows; any other failure stops the script.
        bench "anyup_${kernel}_${autocast}" --sizes $SIZES --methods anyup \
            --attention-kernel "$kernel" --autocast "$autocast" --breakdown ||
            { [ "$kernel" = triton ] && echo "(triton rows failed, see above)" | tee -a "$REPORT"; }
    done
    for size in $SIZES; do
        # Its default (dense) path where that fits, else its own query chunking.
        chunk=()
        if [ "$size" -gt 448 ]; then chunk=(--published-q-chunk 16384); fi
        bench "published_${size}_${autocast}" --sizes "$size" --methods published \
            --published-repo "$PUBLISHED" "${chunk[@]}" --autocast "$autocast" \
            --dense-limit-gb 100
    done
done
first_size=${SIZES%% *}
bench multi_map --sizes "$first_size" --methods multi_map --maps 4
