#!/usr/bin/env bash
# The whole GPU check of issue 18, in one call on the GPU machine (from the repository root,
# with .gpu/ from scripts/gpu-prepare.sh carried beside the tree):
#
#   1. the device tests (every op and every family, GPU against CPU to 1e-4, forward and
#      backward), with NIN_REQUIRE_GPU=1 so that a GPU that fails to open fails them;
#   2. NIN's training step and inference at batch 128 and 512, nin-zoo (our GEMM backward, then
#      candle's: NIN_CUDA_CONV_BACKWARD=candle) against PyTorch CUDA on the same GPU, fp32;
#   3. a short timed NIN training on the carried CIFAR-10 subset: images/s and test accuracy.
#
# Everything goes under $OUT (default runs/gpu-check): summary.md, the logs, the CSVs, the run
# folder. A failed step is recorded and the next one still runs.
#
#   bash scripts/gpu-check.sh                  # on the GPU machine
#   NIN_CHECK_DEVICE=cpu bash scripts/gpu-check.sh   # the same steps on the CPU, small (rehearsal)
#
# Env: NIN_CHECK_DEVICE (cuda, or cpu for the rehearsal), BENCH_ITERS (default 20),
# TRAIN_EPOCHS (default 4).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-runs/gpu-check}
mkdir -p "$out"
out=$(cd "$out" && pwd)
device=${NIN_CHECK_DEVICE:-cuda}
summary=$out/summary.md
status=0
t0=$(date +%s)

note() { echo "$*" | tee -a "$summary"; }
# step NAME CMD...: runs CMD with its output in $out/NAME.log, records pass/fail and seconds.
step() {
    local name=$1 start rc
    shift
    start=$(date +%s)
    "$@" >"$out/$name.log" 2>&1
    rc=$?
    note "- $name: $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)") in $(( $(date +%s) - start )) s"
    [[ $rc == 0 ]] || { status=1; tail -n 30 "$out/$name.log"; }
    return $rc
}

echo "# GPU check ($device), $(date -u +%FT%TZ)" >"$summary"

# --- the machine and the bundle -------------------------------------------------------------
{
    uname -a; ldd --version 2>&1 | head -1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    nvcc --version 2>&1 | tail -2
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} >"$out/machine.txt"
bin=$root/.gpu/bin
if [[ ! -x $bin/nin ]]; then
    mkdir -p .gpu && tar -C .gpu -xJf .gpu/bin.tar.xz || { note "no .gpu/bin.tar.xz: run scripts/gpu-prepare.sh and carry .gpu"; exit 2; }
fi
# candle and our kernels load libcuda, libcublas, libcurand and libnvrtc at run time: the
# toolkit's, and those of PyTorch's CUDA wheels.
libs=$(python3 - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
dirs = sorted({os.path.dirname(p) for r in roots for p in glob.glob(f"{r}/**/lib*.so*", recursive=True)})
print(":".join(dirs))
PY
)
# The toolkit's libraries first: its NVRTC is the driver's release, and PTX from a newer NVRTC
# (PyTorch's wheels may carry one) would not load.
cuda_lib=$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")/../lib64
export LD_LIBRARY_PATH=$cuda_lib:/usr/local/cuda/lib64${libs:+:$libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ldd "$bin/nin" >>"$out/machine.txt" 2>&1
if [[ $device == cuda ]]; then export NIN_REQUIRE_GPU=1; fi

# --- 1. device tests ------------------------------------------------------------------------
note "## Device tests"
step nvrtc-compile "$bin/nin-layers-lib" --exact cuda::tests::kernels_compile_with_nvrtc
step layers-devices "$bin/nin-layers-devices" --test-threads 1 --nocapture
step zoo-devices "$bin/nin-zoo-devices" --test-threads 1 --nocapture

# --- 2. benchmarks against PyTorch ----------------------------------------------------------
note "## Benchmarks (fp32, median of ${BENCH_ITERS:-20} steps)"
iters=${BENCH_ITERS:-20}
batches=128,512
[[ $device == cpu ]] && { batches=8; iters=2; }
for backward in gemm candle; do
    NIN_CUDA_CONV_BACKWARD=$backward step "bench-nin-$backward" "$bin/nin" bench --model nin \
        --bench both --batch-size "$batches" --device "$device" --warmup 3 --iters "$iters" \
        --csv "$out/bench-nin-$backward.csv"
done
step bench-pytorch python3 benches/pytorch/bench_nin.py --model nin --bench both \
    --batch-size "$batches" --device "$device" --warmup 3 --iters "$iters" \
    --csv "$out/bench-pytorch.csv"
for f in "$out"/bench-*.csv; do
    [[ -f $f ]] && note "$(basename "$f"): $(tail -n +2 "$f" | cut -d, -f1-6 | tr '\n' ';')"
done

# --- 3. a short timed training on real CIFAR-10 ---------------------------------------------
note "## Training (NIN, CIFAR-10 subset in .gpu/cifar10-subset.tar.gz)"
epochs=${TRAIN_EPOCHS:-4}
limit=()
[[ $device == cpu ]] && { epochs=1; limit=(--limit-train 256 --limit-eval 256); }
rm -rf "$out/train-run"
start=$(date +%s)
step train "$bin/nin" train --model nin --recipe cpu_quick --epochs "$epochs" --seed 0 \
    --data .gpu/cifar10-subset.tar.gz --device "$device" --out "$out/train-run" --quiet \
    "${limit[@]}"
note "train: $(( $(date +%s) - start )) s wall for $epochs epochs; last lines:"
tail -n "$(( epochs + 2 ))" "$out/train.log" | sed 's/^/    /' | tee -a "$summary"

note "total: $(( $(date +%s) - t0 )) s; exit $status"
exit $status
