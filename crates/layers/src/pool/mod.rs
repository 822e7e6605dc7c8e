//! Max and average pooling as custom ops with a correct, parallel CPU backward.
//!
//! candle 0.11 refuses to backpropagate pooling whose kernel differs from its stride (NIN's
//! 3×3 stride-2 pools), its max-pool gradient is wrong even when they match, and it has no
//! padding or ceil mode. These ops follow PyTorch's `MaxPool2d`/`AvgPool2d` exactly: output size,
//! padding, ceil mode, `count_include_pad`, the gradient of a max going to the first maximal cell
//! in row-major order, and overlapping windows accumulating. Forward and backward run one
//! (image, channel) plane per rayon task; a max pool whose input tracks a gradient records where
//! each maximum came from (as PyTorch's indices), so its backward is a scatter.
//! On a CUDA device (feature `cuda`) the same ops run as kernels (`pool_fwd`, `pool_bwd` in
//! cuda/kernels.cu): one thread per output forward, the recorded maxima kept on the device, and a
//! backward that gathers, per input cell, from the windows covering it, in the CPU's order and
//! without atomics. Other devices get candle's "no implementation" error, not a silent fallback.
//!
//! This file holds the configuration and the ops; `kernels` the loops over planes they run, and
//! `cuda` their CUDA launches.

#[cfg(feature = "cuda")]
mod cuda;
mod kernels;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use self::kernels::{backward_kernel, forward_kernel, Planes};
use crate::cpu::{dispatch_float, slice};
use crate::error::{Error, Result};

/// The reduction a pooling window applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Maximum of the window.
    Max,
    /// Mean of the window.
    Avg,
}

/// Geometry of a square pooling window, with PyTorch's meaning for every field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool2dConfig {
    /// The reduction.
    pub kind: PoolKind,
    /// Window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit padding on every side (−∞ for max, 0 for average); at most `kernel / 2`.
    pub padding: usize,
    /// Round the output size up, so windows may hang over the bottom/right edge.
    pub ceil_mode: bool,
    /// Average only: divide by the window size including padding (`true`), or by the number of
    /// real cells (`false`). Cells past the padded edge in ceil mode never count, as in PyTorch.
    pub count_include_pad: bool,
}

impl Pool2dConfig {
    /// NIN's pooling: 3×3 windows, stride 2, no padding, ceil mode.
    pub fn nin(kind: PoolKind) -> Self {
        Self {
            kind,
            kernel: 3,
            stride: 2,
            padding: 0,
            ceil_mode: true,
            count_include_pad: false,
        }
    }

    /// Checks the fields against each other, as PyTorch does.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, problem: String| Error::InvalidConfig {
            layer: "pool2d",
            field,
            problem,
        };
        if self.kernel == 0 {
            return Err(invalid("kernel", "must be at least 1, got 0".into()));
        }
        if self.stride == 0 {
            return Err(invalid("stride", "must be at least 1, got 0".into()));
        }
        if self.padding > self.kernel / 2 {
            return Err(invalid(
                "padding",
                format!(
                    "must be at most kernel/2 (= {}), got {}",
                    self.kernel / 2,
                    self.padding
                ),
            ));
        }
        Ok(())
    }

    /// Output side for an input side `size` (PyTorch's `pooling_output_shape`), or `None` when
    /// the window does not fit.
    pub fn output_size(&self, size: usize) -> Option<usize> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let span = (size + 2 * p).checked_sub(k)?;
        let mut out = if self.ceil_mode {
            span.div_ceil(s) + 1
        } else {
            span / s + 1
        };
        // In ceil mode the last window must start inside the input or its left padding.
        if self.ceil_mode && (out - 1) * s >= size + p {
            out -= 1;
        }
        Some(out)
    }

    /// Index range of window `o` along one axis of side `size`: `(start, end)` clipped to the
    /// input, and the divisor span that PyTorch counts when padding is included.
    fn window(&self, o: usize, size: usize) -> (usize, usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end_padded = (start + self.kernel as isize).min((size + self.padding) as isize);
        let span_with_pad = (end_padded - start) as usize;
        let lo = start.max(0) as usize;
        let hi = (end_padded.min(size as isize)).max(0) as usize;
        (lo, hi, span_with_pad)
    }
}

/// Pools `xs` (`[N, C, H, W]`, f32 or f64, on the CPU or a CUDA device) with `cfg`;
/// differentiable.
pub fn pool2d(xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    cfg.validate()?;
    let (_, _, h, w) = dims4(xs, "pool2d")?;
    if cfg.output_size(h).is_none() || cfg.output_size(w).is_none() {
        return Err(Error::InvalidConfig {
            layer: "pool2d",
            field: "kernel",
            problem: format!(
                "{} does not fit a {h}×{w} input with padding {}",
                cfg.kernel, cfg.padding
            ),
        });
    }
    let op = Pool2dOp {
        cfg: *cfg,
        // A max pool that will be differentiated keeps where each maximum came from, so its
        // backward is one scatter instead of a second search of every window.
        argmax: (cfg.kind == PoolKind::Max && xs.track_op()).then(OnceLock::new),
    };
    Ok(xs.contiguous()?.apply_op1(op)?)
}

fn dims4(xs: &Tensor, op: &'static str) -> Result<(usize, usize, usize, usize)> {
    xs.dims4().map_err(|_| Error::BadShape {
        op,
        expected: "a 4-D tensor [N, C, H, W]",
        got: xs.dims().to_vec(),
    })
}

struct Pool2dOp {
    cfg: Pool2dConfig,
    /// For a max pool on the gradient path: the in-plane index of each output's maximum
    /// (`u32::MAX` for a window without cells), written by the forward.
    argmax: Option<OnceLock<Argmax>>,
}

/// Where a max pool's recorded maxima live: beside the data they index.
enum Argmax {
    /// Host memory, for a CPU forward.
    Cpu(Vec<u32>),
    /// Device memory, for a CUDA forward: the backward reads it there, never copied to the host.
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda_backend::cudarc::driver::CudaSlice<u32>),
}

impl Argmax {
    fn len(&self) -> usize {
        match self {
            Self::Cpu(v) => v.len(),
            #[cfg(feature = "cuda")]
            Self::Cuda(s) => s.len(),
        }
    }
}

impl CustomOp1 for Pool2dOp {
    fn name(&self) -> &'static str {
        match self.cfg.kind {
            PoolKind::Max => "nin-max-pool2d",
            PoolKind::Avg => "nin-avg-pool2d",
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Planes::of(&self.cfg, layout.dims())?;
        let dims = layout.dims();
        let shape = Shape::from((dims[0], dims[1], g.oh, g.ow));
        let op = self.name();
        let out = dispatch_float!(storage.dtype(), op, |T| {
            let input = slice::<T>(storage, layout, op)?;
            T::to_cpu_storage_owned(forward_kernel(&self.cfg, input, g, self.argmax.as_ref()))
        });
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = Planes::of(&self.cfg, layout.dims())?;
        let dims = layout.dims();
        let (out, argmax) = cuda::forward(&self.cfg, g, storage, layout, self.argmax.is_some())?;
        if let (Some(cell), Some(argmax)) = (&self.argmax, argmax) {
            // A forward runs once per op; should candle ever run it twice, the indices agree.
            let _ = cell.set(Argmax::Cuda(argmax));
        }
        Ok((out, Shape::from((dims[0], dims[1], g.oh, g.ow))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad_res = grad_res.contiguous()?;
        let grad = match self.argmax.as_ref().and_then(OnceLock::get) {
            Some(argmax) => grad_res.apply_op1_no_bwd(&MaxPoolScatterOp {
                argmax,
                cfg: self.cfg,
                in_shape: arg.shape().clone(),
            })?,
            None => arg.apply_op2_no_bwd(&grad_res, &Pool2dBackwardOp { cfg: self.cfg })?,
        };
        Ok(Some(grad))
    }
}

/// Gradient of a max [`Pool2dOp`] from its recorded maxima: each output's gradient added onto the
/// cell its maximum came from.
struct MaxPoolScatterOp<'a> {
    argmax: &'a Argmax,
    /// The pool's geometry, which the CUDA gather needs (the CPU scatter does not).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    cfg: Pool2dConfig,
    in_shape: Shape,
}

impl CustomOp1 for MaxPoolScatterOp<'_> {
    fn name(&self) -> &'static str {
        "nin-max-pool2d-scatter"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: WithDType>(argmax: &[u32], grad: &[T], in_shape: &Shape) -> Vec<T> {
            let (n, c, h, w) = in_shape.dims4().unwrap_or_default();
            let out_plane = grad.len() / (n * c).max(1);
            let mut grad_in = vec![T::zero(); n * c * h * w];
            grad_in
                .par_chunks_mut(h * w)
                .zip(grad.par_chunks(out_plane).zip(argmax.par_chunks(out_plane)))
                .for_each(|(gin, (gout, idx))| {
                    for (&g, &i) in gout.iter().zip(idx) {
                        if let Some(cell) = gin.get_mut(i as usize) {
                            *cell += g;
                        }
                    }
                });
            grad_in
        }
        if layout.shape().elem_count() != self.argmax.len() {
            candle_core::bail!(
                "{}: gradient {:?} does not match the {} recorded maxima",
                self.name(),
                layout.dims(),
                self.argmax.len()
            );
        }
        #[allow(irrefutable_let_patterns)] // refutable when the `cuda` feature is on
        let Argmax::Cpu(argmax) = self.argmax
        else {
            candle_core::bail!(
                "{}: the maxima were recorded on another device",
                self.name()
            )
        };
        let op = self.name();
        let out = dispatch_float!(grad.dtype(), op, |T| {
            let grad = slice::<T>(grad, layout, op)?;
            T::to_cpu_storage_owned(run(argmax, grad, &self.in_shape))
        });
        Ok((out, self.in_shape.clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        grad: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let Argmax::Cuda(argmax) = self.argmax else {
            candle_core::bail!(
                "{}: the maxima were recorded on another device",
                self.name()
            )
        };
        if layout.shape().elem_count() != argmax.len() {
            candle_core::bail!(
                "{}: gradient does not match the recorded maxima",
                self.name()
            );
        }
        let g = Planes::of(&self.cfg, self.in_shape.dims())?;
        let out = cuda::backward(&self.cfg, g, None, Some(argmax), (grad, layout))?;
        Ok((out, self.in_shape.clone()))
    }
}

/// Gradient of [`Pool2dOp`] with respect to its input: `(input, grad_output) → grad_input`.
struct Pool2dBackwardOp {
    cfg: Pool2dConfig,
}

impl CustomOp2 for Pool2dBackwardOp {
    fn name(&self) -> &'static str {
        "nin-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Planes::of(&self.cfg, input_layout.dims())?;
        let expected = [input_layout.dims()[0], input_layout.dims()[1], g.oh, g.ow];
        if grad_layout.dims() != expected {
            candle_core::bail!(
                "{}: gradient shape {:?} does not match output shape {expected:?}",
                self.name(),
                grad_layout.dims()
            );
        }
        let (op, needs_input) = (self.name(), self.cfg.kind == PoolKind::Max);
        let out = dispatch_float!(grad.dtype(), op, |T| {
            let input = needs_input
                .then(|| slice::<T>(input, input_layout, op))
                .transpose()?;
            let grad = slice::<T>(grad, grad_layout, op)?;
            T::to_cpu_storage_owned(backward_kernel(&self.cfg, input, grad, g))
        });
        Ok((out, input_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        input: &candle_core::CudaStorage,
        input_layout: &Layout,
        grad: &candle_core::CudaStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let g = Planes::of(&self.cfg, input_layout.dims())?;
        let expected = [input_layout.dims()[0], input_layout.dims()[1], g.oh, g.ow];
        if grad_layout.dims() != expected {
            candle_core::bail!(
                "{}: gradient shape {:?} does not match output shape {expected:?}",
                self.name(),
                grad_layout.dims()
            );
        }
        let out = cuda::backward(
            &self.cfg,
            g,
            Some((input, input_layout)),
            None,
            (grad, grad_layout),
        )?;
        Ok((out, input_layout.shape().clone()))
    }
}
