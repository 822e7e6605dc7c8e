//! 2-D convolution as a candle custom op whose CPU forward and backward are GEMMs.
//!
//! candle 0.11's convolution is slow where training spends its time (see
//! `docs/performance.md`): the input gradient runs through `conv_transpose2d`, a loop without
//! GEMM; the weight gradient of a 1×1 convolution degenerates into matrix–vector products; the
//! input gradient of the first layer is computed though nothing needs it; and bias and ReLU add
//! whole-tensor passes forward and backward. This op does, per image `n`:
//!
//! - forward: `Y[n] = W · col(X[n]) + b` (`[C_out, C_in·k·k] × [C_in·k·k, OH·OW]`), ReLU fused
//!   in; a 1×1 stride-1 convolution uses `X[n]` itself as `col`, so it is one plain GEMM;
//! - weight gradient: `dW = Σₙ dY[n] · col(X[n])ᵀ`, with several small images packed side by side
//!   so that each GEMM has a long inner dimension; bias gradient: the sums of `dY`'s rows;
//! - input gradient: `dX[n] = col2im(Wᵀ · dY[n])` (for 1×1 stride 1: `Wᵀ · dY[n]` directly),
//!   **computed only when the input tracks a gradient** (`Tensor::track_op`: it is a variable or
//!   the result of an op on one), so a model's own input, a plain tensor, never costs one.
//!
//! Images are spread over rayon's pool with single-threaded GEMMs; with fewer images than
//! threads the GEMMs themselves run in parallel. Sums over images go chunk by chunk in a fixed
//! order, so a result depends on the thread count but not on scheduling. The im2col buffers are
//! per thread and never kept: the backward recomputes them, so memory stays at candle's level.
//!
//! f32 and f64 run on the CPU through the `gemm` crate (the one candle uses, with its AVX-512
//! kernels enabled). On a CUDA device (feature `cuda`) the forward is candle's own (cuDNN with
//! the `cudnn` feature) with bias and ReLU fused after it, and the backward is whole-batch cuBLAS
//! GEMMs (see `cuda`; `NIN_CUDA_CONV_BACKWARD=candle` keeps candle's backward instead). Any other
//! device or dtype falls back to candle's own `conv2d`, bias add and ReLU, which are correct
//! there, only slower.
//!
//! The files follow the seams: `geometry` (the checked shapes and im2col), `gemm` (the one GEMM
//! call), `forward`, `backward`, `cuda` (the CUDA path), and `layer`, the [`Conv2d`] layer with
//! its [`ConvSpec`], where parameters and multiply-accumulates are counted.

mod backward;
mod bands;
#[cfg(feature = "cuda")]
mod cuda;
mod forward;
mod gemm;
mod geometry;
mod layer;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType};

use self::backward::BackwardOp;
use self::forward::forward;
use self::geometry::Geom;
use crate::cpu::{dispatch_float, slice};

pub use self::bands::{ChannelBand, ChannelBands, WINDOW_BAND_HEIGHT};
pub use self::layer::{Conv2d, ConvSpec};

/// Stride, padding and fused activation of a [`conv2d`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Step between windows, both axes.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Apply ReLU to the output (and mask the gradient by it) inside the op.
    pub relu: bool,
}

/// `relu?(conv(xs, weight) + bias)` for `xs` `[N, C_in, H, W]` and `weight` `[C_out, C_in, k, k]`;
/// differentiable. Our GEMMs on the CPU for f32 and f64; on a CUDA device candle's forward with
/// our GEMM backward; candle's own convolution elsewhere.
pub fn conv2d(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: ConvOptions,
) -> candle_core::Result<Tensor> {
    conv2d_with_bands(xs, weight, bias, opts, None)
}

/// [`conv2d`] for a weight that is zero outside `bands` (CiC's channel windows gathered into a
/// dense weight): on the CPU each block of channels is one GEMM over the channels it pairs with,
/// so the cost follows the bands' [`ChannelBands::channel_pairs`] rather than `C_in·C_out`,
/// forward and backward, and the weight gradient is zero outside the output blocks. Other
/// devices run the dense convolution. A weight that is not zero outside the bands gives results
/// that depend on the device and disagree between forward and backward: the caller keeps it
/// zero there (CiC's gather does by construction).
pub fn conv2d_banded(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: ConvOptions,
    bands: Arc<ChannelBands>,
) -> candle_core::Result<Tensor> {
    conv2d_with_bands(xs, weight, bias, opts, Some(bands))
}

/// The gradients of a [`conv2d`] without ReLU for an output gradient `dy` computed elsewhere:
/// `(dx, dW, db)`, dW and db when the weight or bias tracks gradients, dx when `want_dx`. For
/// ops that fuse a convolution with the op next to it and run the convolution's backward
/// themselves (`batch_norm::fused`); `xs` and `weight` contiguous, on the CPU, f32 or f64.
pub(crate) fn conv2d_gradients(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: ConvOptions,
    dy: &Tensor,
    want_dx: bool,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let opts = ConvOptions {
        relu: false,
        ..opts
    };
    let g = Geom::new(xs.dims(), weight.dims(), opts)?;
    g.expect_output(dy.dims(), "conv2d gradients")?;
    ConvOp { opts, bands: None }.backward_for(xs, weight, bias, dy, dy, want_dx)
}

/// The CPU forward of a [`conv2d`] on storages (f32, f64; contiguous layouts), for fused ops
/// whose own forward runs a convolution (`batch_norm::fused`).
pub(crate) fn conv2d_cpu(
    xs: (&CpuStorage, &Layout),
    weight: (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
    opts: ConvOptions,
) -> candle_core::Result<(CpuStorage, Shape)> {
    ConvOp { opts, bands: None }.cpu_conv(xs, weight, bias)
}

fn conv2d_with_bands(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: ConvOptions,
    bands: Option<Arc<ChannelBands>>,
) -> candle_core::Result<Tensor> {
    let g = Geom::new(xs.dims(), weight.dims(), opts)?;
    if let Some(b) = bias {
        g.expect_bias(b.dims())?;
    }
    if let Some(bands) = &bands {
        g.expect_bands(bands)?;
    }
    let float_operands = matches!(xs.dtype(), DType::F32 | DType::F64)
        && weight.dtype() == xs.dtype()
        && bias.is_none_or(|b| b.dtype() == xs.dtype());
    #[cfg(feature = "cuda")]
    if xs.device().is_cuda() && float_operands && cuda::gemm_backward() {
        return cuda::conv2d(xs, weight, bias, opts, g);
    }
    if !(xs.device().is_cpu() && float_operands) {
        let mut ys = xs.conv2d(weight, opts.padding, opts.stride, 1, 1)?;
        if let Some(b) = bias {
            ys = ys.broadcast_add(&b.reshape((1, (), 1, 1))?)?;
        }
        return if opts.relu { ys.relu() } else { Ok(ys) };
    }
    // A dense band list is the plain convolution; dropping it keeps one code path for both.
    let bands = bands.filter(|b| !b.is_dense());
    let op = ConvOp { opts, bands };
    let (xs, weight) = (xs.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => xs.apply_op3(&weight, &b.contiguous()?, op),
        None => xs.apply_op2(&weight, op),
    }
}

/// The forward op on (input, weight[, bias]).
#[derive(Clone, Debug)]
struct ConvOp {
    opts: ConvOptions,
    /// `None`: dense.
    bands: Option<Arc<ChannelBands>>,
}

impl ConvOp {
    /// The forward on the CPU, once the geometry and the bias are checked.
    fn cpu_conv(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = "conv2d";
        let g = Geom::new(l1.dims(), l2.dims(), self.opts)?;
        if let Some((_, l)) = bias {
            g.expect_bias(l.dims())?;
        }
        let bands = g.bands_or_dense(self.bands.as_deref())?;
        let storage = dispatch_float!(s1.dtype(), op, |T| {
            let b = bias.map(|(s, l)| slice::<T>(s, l, op)).transpose()?;
            let (x, wt) = (slice(s1, l1, op)?, slice(s2, l2, op)?);
            T::to_cpu_storage_owned(forward::<T>(&g, &bands, x, wt, b, self.opts.relu))
        });
        Ok((storage, Shape::from((g.n, g.c_out, g.oh, g.ow))))
    }

    /// Gradients for weight and bias, each only when its tensor tracks gradients, and for the
    /// input when `want_dx` (the op's own backward asks exactly when the input tracks them); one
    /// kernel for all three (see `backward`).
    fn backward_for(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
        want_dx: bool,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let want_dw = w.track_op() || b.is_some_and(Tensor::track_op);
        if !(want_dw || want_dx) {
            return Ok((None, None, None));
        }
        let op = BackwardOp {
            opts: self.opts,
            k: w.dim(2)?,
            bands: self.bands.clone(),
            weight: want_dx.then(|| w.clone()),
            want_dw,
        };
        let grad = grad.contiguous()?;
        let flat = if self.opts.relu {
            x.apply_op3_no_bwd(&grad, res, &op)?
        } else {
            x.apply_op2_no_bwd(&grad, &op)?
        };
        let dx_len = op.dx_len(x);
        let dx = want_dx
            .then(|| flat.narrow(0, 0, dx_len)?.reshape(x.shape()))
            .transpose()?;
        // Views of one buffer: candle adds each gradient into a tensor of its own (candle's
        // `GradStore`), so the buffer goes as soon as the three have been added.
        let (mut dw, mut db) = (None, None);
        if want_dw {
            let (c_out, ckk) = (w.dim(0)?, w.elem_count() / w.dim(0)?);
            dw = Some(flat.narrow(0, dx_len, c_out * ckk)?.reshape(w.shape())?);
            db = b
                .map(|_| flat.narrow(0, dx_len + c_out * ckk, c_out))
                .transpose()?;
        }
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "nin-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_conv((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward_for(x, w, None, res, grad, x.track_op())?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "nin-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu_conv((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward_for(x, w, Some(b), res, grad, x.track_op())
    }
}
