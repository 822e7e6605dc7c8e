#!/usr/bin/env bash
# The CUDA compile check, on a machine without a GPU or a CUDA install: assembles the CUDA 13.0
# toolkit from PyPI wheels (scripts/cuda-toolkit.sh), builds every crate and target of the
# workspace with its `cuda` features, and compiles our kernels (crates/layers/src/cuda/
# kernels.cu) with NVRTC from the nvidia-cuda-nvrtc wheel (the `kernels_compile_with_nvrtc`
# test and scripts/nvrtc-compile.py: they need libnvrtc, not a GPU).
#
#   bash scripts/cuda-check.sh
#
# Not in .ci/run: the first build takes about 9 minutes of both cores on an idle 2-core machine
# (nvcc compiling candle's kernels), against CI's budget of 30 minutes in all. Env:
# CUDA_TOOLKIT_DIR (default ../cuda-toolkit), CARGO_TARGET_DIR (default ../target-cuda: kept
# apart from the CPU build, which it would otherwise invalidate).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
toolkit=${CUDA_TOOLKIT_DIR:-$root/../cuda-toolkit}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/../target-cuda}
start=$(date +%s)
bash scripts/cuda-toolkit.sh "$toolkit"
# shellcheck disable=SC1091
source "$toolkit/env.sh"
features=nin-zoo/cuda,nin-cli/cuda,nin-train/cuda,nin-layers/cuda
nice -n 5 cargo build --workspace --all-targets --features "$features"
# Our kernels through the wheel's NVRTC, twice: from Python (no build needed), then as nin-layers
# compiles them at run time.
python3 scripts/nvrtc-compile.py
nice -n 5 cargo test -p nin-layers --features cuda --lib -- cuda::tests::kernels_compile_with_nvrtc
echo "cuda-check: ok in $(( $(date +%s) - start )) s"
