#!/usr/bin/env bash
# Assembles a CUDA toolkit (nvcc, cicc/nvvm, runtime headers, CCCL, NVRTC) from NVIDIA's PyPI
# wheels into one prefix, for building `--features cuda` on machines without a CUDA install.
#
#   scripts/cuda-toolkit.sh DIR        # then: source DIR/env.sh
#
# All wheels are of one release (13.0, matching the driver of the H200 machines: a driver runs
# PTX of its own release or older, and candle embeds nvcc's PTX in the binaries). Recipe and
# pitfalls: docs/performance.md, "Building with CUDA on a machine without a GPU".
set -euo pipefail
dir=${1:?usage: scripts/cuda-toolkit.sh DIR}
version=${CUDA_WHEEL_VERSION:-13.0.88}
cccl_version=${CUDA_CCCL_VERSION:-13.0.85}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
T=$dir/nvidia/cu13
if [[ ! -x $T/bin/nvcc || ! -d $T/nvvm || ! -e $T/lib/libnvrtc.so.13 ]]; then
    wheels=${CUDA_WHEELS:-$dir/wheels}
    mkdir -p "$wheels"
    pkgs=(nvidia-cuda-nvcc==$version nvidia-cuda-runtime==$version nvidia-cuda-crt==$version
          nvidia-cuda-nvrtc==$version nvidia-cuda-cccl==$cccl_version nvidia-nvvm==$version)
    python3 -m pip download -q --no-deps -d "$wheels" "${pkgs[@]}"
    shopt -s nullglob
    whl() { local f=("$wheels"/"$1"-"$2"-*.whl); echo "${f[0]:?no $1 $2 wheel in $wheels}"; }
    python3 -m pip install -q --no-deps --upgrade --target "$dir" \
        "$(whl nvidia_cuda_nvcc "$version")" "$(whl nvidia_cuda_runtime "$version")" \
        "$(whl nvidia_cuda_crt "$version")" "$(whl nvidia_cuda_nvrtc "$version")" \
        "$(whl nvidia_cuda_cccl "$cccl_version")"
    # nvcc finds cicc in nvvm/ beside bin/, and `pip --target` will not merge a second wheel
    # into an existing nvidia/ folder: install nvvm apart and copy it over.
    rm -rf "$dir/nvvm-wheel"
    python3 -m pip install -q --no-deps --target "$dir/nvvm-wheel" "$(whl nvidia_nvvm "$version")"
    cp -r "$dir/nvvm-wheel/nvidia/cu13/." "$T/"
    rm -rf "$dir/nvvm-wheel"
fi
# cudarc (candle's CUDA bindings) panics on toolkit versions it does not know unless told one
# it does; 13000 is also the truth for these wheels. The compute capability is the H200's.
cat >"$dir/env.sh" <<ENV
export PATH=$T/bin:\$PATH CUDA_ROOT=$T CUDA_PATH=$T CUDA_HOME=$T
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
export LD_LIBRARY_PATH=$T/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
ENV
echo "CUDA toolkit $version in $T; source $dir/env.sh"
