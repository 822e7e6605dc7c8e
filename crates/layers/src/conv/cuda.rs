//! The convolution on a CUDA device: candle's forward (cuDNN with the `cudnn` feature, else its
//! im2col and cuBLAS GEMM), with bias and ReLU fused into one pass after it, and our backward as
//! single cuBLAS GEMMs over the whole batch:
//!
//! - `col = im2col(X)` as `[N·OH·OW, C_in·k·k]` (one row per output position), `dY₂` = dY as
//!   `[C_out, N·OH·OW]`;
//! - `dW = dY₂ · col`, `db` = the row sums of `dY₂`;
//! - `dX = col2im(dY₂ᵀ · W₂)`, `W₂` the weight as `[C_out, C_in·k·k]`, computed only when the
//!   input tracks a gradient.
//!
//! candle's own backward goes through `conv_transpose2d` for dX, a direct kernel without GEMM, and
//! through a convolution of transposed tensors for dW. Which is faster on a given GPU is measured
//! by scripts/gpu-check.sh; `NIN_CUDA_CONV_BACKWARD=candle` selects candle's whole path (forward
//! and backward) instead of this one.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor,
};

use super::backward::ReluMask;
use super::geometry::Geom;
use super::ConvOptions;
use crate::cpu::dispatch_float;
use crate::cuda::{grid, launch, output, slice, with_cuda};

/// Whether CUDA convolutions take this module's path (`NIN_CUDA_CONV_BACKWARD` unset or `gemm`)
/// rather than candle's (`candle`); read once per process.
pub(super) fn gemm_backward() -> bool {
    static GEMM: OnceLock<bool> = OnceLock::new();
    *GEMM.get_or_init(|| {
        std::env::var("NIN_CUDA_CONV_BACKWARD")
            .ok()
            .is_none_or(|v| v.trim() != "candle")
    })
}

/// `relu?(conv(xs, weight) + bias)` on a CUDA device, differentiable through the GEMM backward.
pub(super) fn conv2d(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: ConvOptions,
    g: Geom,
) -> candle_core::Result<Tensor> {
    let (xs, weight) = (xs.contiguous()?, weight.contiguous()?);
    // The forward itself is candle's, on detached copies so that it records no backward.
    let raw = xs
        .detach()
        .conv2d(&weight.detach(), opts.padding, opts.stride, 1, 1)?;
    let op = ConvOp { opts, g, raw };
    match bias {
        Some(b) => xs.apply_op3(&weight, &b.contiguous()?, op),
        None => xs.apply_op2(&weight, op),
    }
}

/// The forward op on (input, weight[, bias]): `relu?(raw + bias)`, `raw` being candle's
/// convolution of the same operands.
struct ConvOp {
    opts: ConvOptions,
    g: Geom,
    raw: Tensor,
}

impl ConvOp {
    fn epilogue(
        &self,
        bias: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let op = "nin-conv2d-cuda";
        let g = &self.g;
        let shape = Shape::from((g.n, g.c_out, g.oh, g.ow));
        let n = shape.elem_count();
        let (c, hw, relu) = (
            g.c_out as u32,
            (g.oh * g.ow) as u32,
            i32::from(self.opts.relu),
        );
        let out = with_cuda(&self.raw, op, |rs, rl| {
            let (dev, dtype) = (rs.device.clone(), rs.dtype());
            Ok(dispatch_float!(dtype, op, |T| {
                let raw = slice::<T>(rs, rl, op)?;
                // Without a bias the kernel reads none: the output itself stands in.
                let b = match bias {
                    Some((s, l)) => slice::<T>(s, l, op)?,
                    None => raw.slice(0..n.min(1)),
                };
                let y = output::<T>(&dev, n)?;
                let n64 = n as u64;
                let has_bias = i32::from(bias.is_some());
                launch!(
                    dev,
                    "bias_act",
                    dtype,
                    op,
                    grid(n),
                    &n64,
                    &c,
                    &hw,
                    &relu,
                    &has_bias,
                    &b,
                    &raw,
                    &y
                )?;
                CudaStorage::wrap_cuda_slice(y, dev.clone())
            }))
        })?;
        Ok((out, shape))
    }

    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.g;
        let dy = if self.opts.relu {
            grad.contiguous()?.apply_op2_no_bwd(res, &ReluMask)?
        } else {
            grad.contiguous()?
        };
        let rows = g.n * g.oh * g.ow;
        let dy2 = dy
            .reshape((g.n, g.c_out, g.oh * g.ow))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((g.c_out, rows))?;
        let (mut dw, mut db) = (None, None);
        if w.track_op() || b.is_some_and(Tensor::track_op) {
            let col = x.apply_op1_no_bwd(&Im2Col { g })?;
            dw = Some(dy2.matmul(&col)?.reshape(w.shape())?);
            db = b.map(|_| dy2.sum(1)).transpose()?;
        }
        let dx = if x.track_op() {
            let w2 = w.reshape((g.c_out, g.ckk()))?;
            let dcol = dy2.t()?.matmul(&w2)?;
            Some(dcol.apply_op1_no_bwd(&Col2Im { g })?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

fn cpu_refused<T>(op: &str) -> candle_core::Result<T> {
    candle_core::bail!("{op}: the CUDA op was given CPU tensors")
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "nin-conv2d-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_refused(CustomOp2::name(self))
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.epilogue(None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, None, res, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "nin-conv2d-bias-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_refused(CustomOp3::name(self))
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.epilogue(Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward(x, w, Some(b), res, grad)
    }
}

/// `ConvGeom` of kernels.cu, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct ConvGeom {
    c_in: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: u32,
    s: u32,
    p: u32,
}

// SAFETY: a `repr(C)` struct of `u32`s, laid out as kernels.cu's `ConvGeom`, with no pointers.
unsafe impl DeviceRepr for ConvGeom {}

impl ConvGeom {
    fn new(g: &Geom) -> Self {
        // Geom's sides come from tensors a GPU holds; u32 covers every one of them.
        Self {
            c_in: g.c_in as u32,
            h: g.h as u32,
            w: g.w as u32,
            oh: g.oh as u32,
            ow: g.ow as u32,
            k: g.k as u32,
            s: g.stride as u32,
            p: g.pad as u32,
        }
    }
}

/// The input `[N, C_in, H, W]` as `[N·OH·OW, C_in·k·k]`.
struct Im2Col {
    g: Geom,
}

/// `[N·OH·OW, C_in·k·k]` summed back onto the input's cells, `[N, C_in, H, W]`.
struct Col2Im {
    g: Geom,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "nin-im2col-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_refused(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (op, g) = (self.name(), &self.g);
        if l.shape().elem_count() != g.n * g.in_len() {
            candle_core::bail!("{op}: input {:?} does not match the convolution", l.dims());
        }
        let shape = Shape::from((g.n * g.oh * g.ow, g.ckk()));
        let (dev, dtype, n) = (s.device.clone(), s.dtype(), shape.elem_count());
        let geom = ConvGeom::new(g);
        let out = dispatch_float!(dtype, op, |T| {
            let (x, col) = (slice::<T>(s, l, op)?, output::<T>(&dev, n)?);
            let n64 = n as u64;
            launch!(dev, "im2col", dtype, op, grid(n), &n64, &geom, &x, &col)?;
            CudaStorage::wrap_cuda_slice(col, dev.clone())
        });
        Ok((out, shape))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "nin-col2im-cuda"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_refused(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (op, g) = (self.name(), &self.g);
        if l.dims() != [g.n * g.oh * g.ow, g.ckk()] {
            candle_core::bail!("{op}: columns {:?} do not match the convolution", l.dims());
        }
        let shape = Shape::from((g.n, g.c_in, g.h, g.w));
        let (dev, dtype, n) = (s.device.clone(), s.dtype(), shape.elem_count());
        let geom = ConvGeom::new(g);
        let out = dispatch_float!(dtype, op, |T| {
            let (dcol, dx) = (slice::<T>(s, l, op)?, output::<T>(&dev, n)?);
            let n64 = n as u64;
            launch!(dev, "col2im", dtype, op, grid(n), &n64, &geom, &dcol, &dx)?;
            CudaStorage::wrap_cuda_slice(dx, dev.clone())
        });
        Ok((out, shape))
    }
}
