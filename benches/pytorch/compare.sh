#!/usr/bin/env bash
# Side-by-side rounds of `nin bench` and bench_nin.py, interleaved so that a change in the
# machine's load hits both frameworks alike; every row goes to one CSV. The table in
# docs/performance.md is the median of each configuration over the rounds.
#
#   bash benches/pytorch/compare.sh OUT.csv [ROUNDS] [THREADS]
#
# Needs a release build of `nin` (cargo build --release -p nin-cli) and PyTorch. Not part of CI.
set -euo pipefail
out=${1:?usage: compare.sh OUT.csv [ROUNDS] [THREADS]}
rounds=${2:-3}
threads=${3:-2}
nin=${NIN_BIN:-target/release/nin}
here=$(dirname "$0")
for round in $(seq "$rounds"); do
    echo "round $round of $rounds" >&2
    for model in nin nin_bn; do
        "$nin" bench --model "$model" --bench both --batch-size 32,128 --threads "$threads" \
            --warmup 2 --iters 7 --csv "$out"
        python3 "$here/bench_nin.py" --model "$model" --bench both --batch-size 32,128 \
            --threads "$threads" --warmup 2 --iters 7 --csv "$out"
    done
    "$nin" bench --bench infer --batch-size 1 --threads "$threads" --warmup 3 --iters 30 \
        --csv "$out"
    python3 "$here/bench_nin.py" --bench infer --batch-size 1 --threads "$threads" --warmup 3 \
        --iters 30 --csv "$out"
    # The other families' training step at batch 32 (bench_nin.py reads their configurations
    # from `nin list --json`).
    for model in ${FAMILIES:-cic_1d cic_3d drnin_l3 dcnin_s}; do
        "$nin" bench --model "$model" --bench train --batch-size 32 --threads "$threads" \
            --warmup 1 --iters 5 --csv "$out"
        python3 "$here/bench_nin.py" --model "$model" --bench train --batch-size 32 \
            --threads "$threads" --warmup 1 --iters 5 --nin "$nin" --csv "$out"
    done
done
