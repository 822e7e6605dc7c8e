#!/usr/bin/env bash
# Prepares the bundle scripts/gpu-check.sh runs on the GPU machine, on this (CPU-only) machine:
# the CUDA build of the binaries it needs, stripped and compressed, and a CIFAR-10 subset, in
# .gpu/ (git-ignored), which the device tool carries beside the tree.
#
#   bash scripts/gpu-prepare.sh            # then: run scripts/gpu-check.sh with carry [".gpu"]
#
# The GPU machine has nvcc 13.0 and PyTorch but no Rust toolchain, so the binaries are built
# here: with the CUDA 13.0 toolkit from PyPI wheels (scripts/cuda-toolkit.sh; the driver there
# is 13.0, and a driver loads PTX of its own release or older), compute capability 9.0 (H200),
# dev profile (dependencies at opt-level 3, our crates at 1: a release build would run candle's
# kernels through nvcc a second time). Env: CUDA_TOOLKIT_DIR (default ../cuda-toolkit beside the
# checkout), CARGO_TARGET_DIR (default ../target-cuda), TRAIN_PER_BATCH and TEST_IMAGES (subset
# size, default 2000 and 2000).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
toolkit=${CUDA_TOOLKIT_DIR:-$root/../cuda-toolkit}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/../target-cuda}
bash scripts/cuda-toolkit.sh "$toolkit" >/dev/null
# shellcheck disable=SC1091
source "$toolkit/env.sh"

bundle=.gpu
rm -rf "$bundle/bin" && mkdir -p "$bundle/bin"
start=$(date +%s)
# The test binaries (cargo names each executable in its JSON messages) and the CLI.
json=$bundle/tests.json
: >"$json"
nice -n 5 cargo test --features cuda -p nin-layers --lib --test devices --no-run \
    --message-format=json >>"$json"
nice -n 5 cargo test --features cuda -p nin-zoo --test devices --no-run \
    --message-format=json >>"$json"
nice -n 5 cargo build --features cuda -p nin-cli
echo "CUDA build: $(( $(date +%s) - start )) s" >&2
python3 - "$bundle/bin" "$json" <<'PY'
import json, shutil, sys
dest, messages = sys.argv[1], sys.argv[2]
for line in open(messages):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    # nin-layers-lib, nin-layers-devices, nin-zoo-devices
    crate = m["package_id"].split("#")[-1].split("@")[0]
    target = "lib" if "lib" in m["target"]["kind"] else m["target"]["name"]
    shutil.copy(m["executable"], f"{dest}/{crate}-{target}")
    print(f"{crate}-{target}")
PY
rm "$json"
cp "$CARGO_TARGET_DIR/debug/nin" "$bundle/bin/nin"
strip --strip-debug "$bundle"/bin/*
ls -la "$bundle/bin"
tar -C "$bundle" -cJf "$bundle/bin.tar.xz" bin
rm -rf "$bundle/bin"

data=${CIFAR10_ARCHIVE:-$root/../shared/data/cifar-10-binary.tar.gz}
if [[ ! -f $bundle/cifar10-subset.tar.gz ]]; then
    python3 scripts/cifar-subset.py "$data" "$bundle/cifar10-subset.tar.gz" \
        "${TRAIN_PER_BATCH:-2000}" "${TEST_IMAGES:-2000}"
fi
du -b "$bundle"/* | sort -n
echo "tree + bundle (what the device tool carries): $(( ( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) + $(du -cb "$bundle" | tail -1 | cut -f1) ) / 1048576 )) MiB (limit 64)"
