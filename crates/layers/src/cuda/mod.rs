//! What the CUDA side of the custom ops shares: the kernels' source (`kernels.cu`), compiled once
//! per process with NVRTC and loaded into each device as one module, the launch geometry, and
//! reading an operand as a device slice.
//!
//! NVRTC at run time rather than nvcc at build time: the build then needs no CUDA compiler for
//! our kernels (candle's own already need one), the PTX always matches the driver's NVRTC, and a
//! CPU-only machine can still check that the source compiles (`kernels_compile_with_nvrtc`,
//! which needs libnvrtc but no GPU).

use std::sync::OnceLock;

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};
use candle_core::{CudaStorage, DType, Layout, Storage, Tensor};

/// The kernels' CUDA C++ source.
pub(crate) const SOURCE: &str = include_str!("kernels.cu");

/// The module name the kernels are loaded under in each device.
pub(crate) const MODULE: &str = "nin-layers";

/// Every kernel of [`SOURCE`], without its `_f32`/`_f64` suffix (scripts/nvrtc-compile.py keeps
/// the same list).
#[cfg(test)]
pub(crate) const KERNELS: &[&str] = &[
    "elu_fwd",
    "elu_bwd",
    "relu_mask",
    "bias_act",
    "pool_fwd",
    "pool_bwd",
    "bn_moments",
    "bn_fwd",
    "bn_bwd_sums",
    "bn_bwd_dx",
    "im2col",
    "col2im",
];

/// Threads per block of the element-wise kernels, and of the per-channel reductions
/// (`BN_THREADS` in kernels.cu).
pub(crate) const THREADS: u32 = 256;

/// [`SOURCE`] compiled to PTX by NVRTC, or NVRTC's log.
pub(crate) fn compile() -> Result<String, String> {
    candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE)
        .map(|ptx| ptx.to_src())
        .map_err(|e| format!("{e:?}"))
}

/// The PTX of [`SOURCE`], compiled on first use.
pub(crate) fn ptx() -> candle_core::Result<&'static str> {
    static PTX: OnceLock<Result<String, String>> = OnceLock::new();
    PTX.get_or_init(compile).as_deref().map_err(|log| {
        candle_core::Error::Msg(format!(
            "nin-layers: NVRTC could not compile the CUDA kernels: {log}"
        ))
    })
}

/// The name of kernel `name` for `dtype` (`elu_fwd_f32`), or an error naming `op`.
pub(crate) fn kernel_name(name: &str, dtype: DType, op: &str) -> candle_core::Result<String> {
    match dtype {
        DType::F32 => Ok(format!("{name}_f32")),
        DType::F64 => Ok(format!("{name}_f64")),
        dt => candle_core::bail!("{op}: no CUDA kernel for {dt:?} (f32 and f64 only)"),
    }
}

/// A grid-stride launch over `n` values (at least one block, so a kernel over nothing is a
/// no-op rather than an invalid launch).
pub(crate) fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of [`THREADS`] per channel, for the per-channel reductions.
pub(crate) fn per_channel(channels: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (channels.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches kernel `$name` (suffixed for `$dtype`) on `$dev` with `$cfg` and the arguments, in
/// order; evaluates to `candle_core::Result<()>`. A macro because the launch builder borrows the
/// loaded function and every argument, which a helper function could not return or take.
macro_rules! launch {
    ($dev:expr, $name:expr, $dtype:expr, $op:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg as _;
        use candle_core::cuda_backend::WrapErr as _;
        (|| -> candle_core::Result<()> {
            let name = $crate::cuda::kernel_name($name, $dtype, $op)?;
            let func = $dev.get_or_load_custom_func(&name, $crate::cuda::MODULE, $crate::cuda::ptx()?)?;
            let mut builder = func.builder();
            $(builder.arg($arg);)+
            // SAFETY: every kernel of kernels.cu takes exactly these argument types in this
            // order (checked by the device tests), and the callers size every buffer from the
            // same counts they pass.
            unsafe { builder.launch($cfg) }.w()?;
            Ok(())
        })()
    }};
}
pub(crate) use launch;

/// The values of `s` under contiguous layout `l` as a device slice of `T`, or an error naming
/// `op`.
pub(crate) fn slice<'a, T: candle_core::cuda_backend::CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(s.as_cuda_slice::<T>()?.slice(start..end)),
        None => candle_core::bail!("{op}: operands must be contiguous"),
    }
}

/// A fresh device buffer of `len` values that a kernel will write whole.
pub(crate) fn output<T: DeviceRepr>(
    dev: &candle_core::CudaDevice,
    len: usize,
) -> candle_core::Result<CudaSlice<T>> {
    // SAFETY: every caller launches a kernel that writes all `len` values before the buffer is
    // read.
    unsafe { dev.alloc::<T>(len.max(1)) }
}

/// Runs `f` on the CUDA storage and layout of `t` (a tensor an op holds beside its operands, such
/// as batch-norm statistics), or fails naming `op` when `t` is not on a CUDA device.
pub(crate) fn with_cuda<R>(
    t: &Tensor,
    op: &str,
    f: impl FnOnce(&CudaStorage, &Layout) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => f(s, layout),
        _ => candle_core::bail!("{op}: expected a CUDA tensor, got one on {:?}", t.device()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles the kernels with NVRTC, which needs libnvrtc but no GPU: the CPU-only check that
    /// the source is valid and exports every kernel for both float types.
    #[test]
    fn kernels_compile_with_nvrtc() {
        let ptx = compile().unwrap_or_else(|log| panic!("NVRTC rejected kernels.cu: {log}"));
        for name in KERNELS {
            for suffix in ["f32", "f64"] {
                let entry = format!(".entry {name}_{suffix}(");
                assert!(ptx.contains(&entry), "PTX lacks {entry}");
            }
        }
    }
}
