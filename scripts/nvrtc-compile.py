#!/usr/bin/env python3
"""Compiles crates/layers/src/cuda/kernels.cu to PTX with NVRTC through ctypes, as nin-layers does
at run time, and checks that every kernel is exported for f32 and f64. Needs libnvrtc (e.g. the
nvidia-cuda-nvrtc wheel, via LD_LIBRARY_PATH), not a GPU.

    python3 scripts/nvrtc-compile.py [OUT.ptx]
"""
import ctypes
import os
import sys

KERNELS = ["elu_fwd", "elu_bwd", "relu_mask", "bias_act", "pool_fwd", "pool_bwd", "bn_moments",
           "bn_fwd", "bn_bwd_sums", "bn_bwd_dx", "im2col", "col2im"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main():
    src = open(os.path.join(ROOT, "crates/layers/src/cuda/kernels.cu"), "rb").read()
    nvrtc = ctypes.CDLL("libnvrtc.so.13")
    major, minor = ctypes.c_int(), ctypes.c_int()
    nvrtc.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    prog = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, b"kernels.cu", 0, None, None):
        sys.exit("nvrtcCreateProgram failed")
    rc = nvrtc.nvrtcCompileProgram(prog, 0, None)
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if rc:
        sys.exit(f"NVRTC {major.value}.{minor.value} rejected kernels.cu:\n{log.value.decode()}")
    nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetPTX(prog, ptx)
    text = ptx.value.decode()
    missing = [f"{k}_{t}" for k in KERNELS for t in ("f32", "f64") if f".entry {k}_{t}(" not in text]
    if missing:
        sys.exit(f"PTX lacks {', '.join(missing)}")
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(text)
    print(f"NVRTC {major.value}.{minor.value}: kernels.cu -> {len(text)} bytes of PTX, "
          f"{2 * len(KERNELS)} kernels")


if __name__ == "__main__":
    main()
