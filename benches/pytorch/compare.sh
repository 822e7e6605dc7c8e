#!/usr/bin/env bash
# Side-by-side rounds of `nin bench` and bench_nin.py over the matrix the speed issues name: every
# preset's training step at batch 32 and 128 and its inference at batch 1, 32 and 128, plus each
# framework's f32 GEMM ceiling (`--bench gemm`, 2048³) in every round, so that each step's share
# of the machine's peak is measured in the same run. Programs are interleaved preset by preset, so
# that a change in the machine's load hits them alike; every row goes to one CSV, and
# summarize.py turns it into the table of docs/performance.md (medians over the rounds).
#
#   bash benches/pytorch/compare.sh OUT.csv [ROUNDS] [THREADS]
#
# Environment: NIN_BIN (default target/release/nin); BASELINE_BIN, a second nin binary timed in
# the same rounds (its rows go to OUT.baseline.csv, for before/after tables); MODELS (default
# every preset of the zoo's speed table); PYTHON (default python3, with PyTorch). Needs a release
# build of `nin` (cargo build --release -p nin-cli). Not part of CI.
set -euo pipefail
out=${1:?usage: compare.sh OUT.csv [ROUNDS] [THREADS]}
rounds=${2:-3}
threads=${3:-2}
nin=${NIN_BIN:-target/release/nin}
python=${PYTHON:-python3}
here=$(dirname "$0")
models=${MODELS:-nin nin_bn cic_1d cic_3d drnin_l3 dcnin_s}

# One preset in one program: training at 32 and 128, inference at 1, 32 and 128.
run_nin() { # BIN CSV MODEL
    "$1" bench --model "$3" --bench train --batch-size 32,128 --threads "$threads" \
        --warmup 1 --iters 5 --csv "$2"
    "$1" bench --model "$3" --bench infer --batch-size 1,32,128 --threads "$threads" \
        --warmup 2 --iters 10 --csv "$2"
}
run_torch() { # MODEL
    "$python" "$here/bench_nin.py" --model "$1" --bench train --batch-size 32,128 \
        --threads "$threads" --warmup 1 --iters 5 --nin "$nin" --csv "$out"
    "$python" "$here/bench_nin.py" --model "$1" --bench infer --batch-size 1,32,128 \
        --threads "$threads" --warmup 2 --iters 10 --nin "$nin" --csv "$out"
}

for round in $(seq "$rounds"); do
    echo "round $round of $rounds" >&2
    "$nin" bench --bench gemm --threads "$threads" --csv "$out"
    "$python" "$here/bench_nin.py" --bench gemm --threads "$threads" --csv "$out"
    if [[ -n ${BASELINE_BIN:-} ]]; then
        "$BASELINE_BIN" bench --bench gemm --threads "$threads" --csv "${out%.csv}.baseline.csv" \
            2>/dev/null || true
    fi
    for model in $models; do
        run_nin "$nin" "$out" "$model"
        if [[ -n ${BASELINE_BIN:-} ]]; then
            run_nin "$BASELINE_BIN" "${out%.csv}.baseline.csv" "$model"
        fi
        run_torch "$model"
    done
done
