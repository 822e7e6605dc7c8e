//! Batch norm on a CUDA device: the same three ops as on the CPU (moments, normalise, gradient),
//! as kernels of cuda/kernels.cu, with every statistic a device tensor. The moments come back as
//! an f64 `[2, C]` tensor on the device, the running buffers are blended there with tensor ops,
//! and `[mean, 1/√(σ² + ε)]` is handed to the normalising kernel as a device tensor: a step copies
//! nothing to the host.

use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, CustomOp3, DType, Layout, Shape, Tensor};

use super::{BatchNorm2d, BN_EPS};
use crate::activation::Activation;
use crate::cpu::dispatch_float;
use crate::cuda::{grid, launch, output, per_channel, slice, with_cuda};

/// `(N, C, H·W)` of a contiguous `[N, C, H, W]` layout, as the kernels take them.
fn dims(l: &Layout) -> candle_core::Result<(u32, u32, u32)> {
    let (n, c, h, w) = l.shape().dims4()?;
    let u = |v: usize| {
        u32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("batch_norm: {v} too large")))
    };
    Ok((u(n)?, u(c)?, u(h * w)?))
}

/// The kernels' activation code and ELU's α.
fn act_code(act: Activation) -> (i32, f64) {
    match act {
        Activation::Identity => (0, 0.0),
        Activation::Relu => (1, 0.0),
        Activation::Elu { alpha } => (2, alpha),
    }
}

/// Per-channel mean and biased variance of `x` in f64, `[2, C]` on the device.
pub(super) fn moments(s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
    let (op, dev, dtype) = ("nin-batch-norm-moments", s.device.clone(), s.dtype());
    let (n, c, hw) = dims(l)?;
    let out = output::<f64>(&dev, 2 * c as usize)?;
    dispatch_float!(dtype, op, |T| {
        let x = slice::<T>(s, l, op)?;
        launch!(
            dev,
            "bn_moments",
            dtype,
            op,
            per_channel(c as usize),
            &n,
            &c,
            &hw,
            &x,
            &out
        )?
    });
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev),
        Shape::from((2, c as usize)),
    ))
}

/// The training or evaluation forward of `bn` on a CUDA tensor `xs` (contiguous, f32 or f64).
pub(super) fn forward(
    bn: &BatchNorm2d,
    xs: &Tensor,
    train: bool,
    act: Activation,
) -> candle_core::Result<Tensor> {
    let (mean, var) = if train {
        let per_channel = xs.elem_count() / bn.weight.dim(0)?;
        if per_channel < 2 {
            candle_core::bail!(
                "batch_norm: training needs more than one value per channel, got input {:?}",
                xs.dims()
            );
        }
        let moments = xs.apply_op1_no_bwd(&super::ops::ChannelMoments)?;
        let (mean, var) = (moments.get(0)?, moments.get(1)?);
        let (m, unbias) = (bn.momentum, per_channel as f64 / (per_channel - 1) as f64);
        for (buffer, batch) in [
            (&bn.running_mean, mean.clone()),
            (&bn.running_var, (&var * unbias)?),
        ] {
            let old = buffer.as_tensor().to_dtype(DType::F64)?;
            let new = ((old * (1.0 - m))? + (batch * m)?)?;
            buffer.set(&new.to_dtype(buffer.dtype())?)?;
        }
        (mean, var)
    } else {
        let f64s = |t: &Tensor| t.to_dtype(DType::F64);
        (
            f64s(bn.running_mean.as_tensor())?,
            f64s(bn.running_var.as_tensor())?,
        )
    };
    let inv_std = (var + BN_EPS)?.sqrt()?.recip()?;
    let stats = Tensor::stack(&[mean, inv_std], 0)?.contiguous()?;
    xs.apply_op3(
        &bn.weight.contiguous()?,
        &bn.bias.contiguous()?,
        NormOp {
            stats,
            batch_stats: train,
            act,
        },
    )
}

/// `act(x·scale + shift)` on (x, γ, β) with the statistics on the device.
struct NormOp {
    /// f64 `[2, C]`: each channel's mean, then 1/√(σ² + ε).
    stats: Tensor,
    /// The statistics are the batch's own, so the gradient flows through them too.
    batch_stats: bool,
    /// The activation fused in.
    act: Activation,
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        "nin-batch-norm-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("{}: the CUDA op was given CPU tensors", self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (op, dev, dtype) = (self.name(), s1.device.clone(), s1.dtype());
        let (_, c, hw) = dims(l1)?;
        let count = l1.shape().elem_count();
        let (code, alpha) = act_code(self.act);
        let out = with_cuda(&self.stats, op, |st, stl| {
            let stats = slice::<f64>(st, stl, op)?;
            Ok(dispatch_float!(dtype, op, |T| {
                let (x, gamma, beta) = (
                    slice::<T>(s1, l1, op)?,
                    slice::<T>(s2, l2, op)?,
                    slice::<T>(s3, l3, op)?,
                );
                let y = output::<T>(&dev, count)?;
                let count64 = count as u64;
                launch!(
                    dev,
                    "bn_fwd",
                    dtype,
                    op,
                    grid(count),
                    &count64,
                    &c,
                    &hw,
                    &code,
                    &alpha,
                    &stats,
                    &gamma,
                    &beta,
                    &x,
                    &y
                )?;
                CudaStorage::wrap_cuda_slice(y, dev.clone())
            }))
        })?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.dim(0)?;
        // ELU's gradient is read off its output; the others' from x.
        let third = match self.act {
            Activation::Elu { .. } => res.contiguous()?,
            Activation::Relu | Activation::Identity => x.clone(),
        };
        let grad_op = NormGradOp {
            stats: self.stats.clone(),
            gamma: gamma.contiguous()?,
            beta: beta.contiguous()?,
            batch_stats: self.batch_stats,
            act: self.act,
        };
        let all = x.apply_op3_no_bwd(&grad.contiguous()?, &third, &grad_op)?;
        let n = x.elem_count();
        let dx = all.narrow(0, 0, n)?.reshape(x.shape())?;
        Ok((
            Some(dx),
            Some(all.narrow(0, n, c)?),
            Some(all.narrow(0, n + c, c)?),
        ))
    }
}

/// The backward of a [`NormOp`] on (x, dy, y), `y` its output for ELU (x again otherwise):
/// `[dx…, dγ…, dβ…]` flat, from two kernels: per-channel sums in f64, then the values.
struct NormGradOp {
    stats: Tensor,
    gamma: Tensor,
    beta: Tensor,
    batch_stats: bool,
    act: Activation,
}

impl CustomOp3 for NormGradOp {
    fn name(&self) -> &'static str {
        "nin-batch-norm-grad-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("{}: the CUDA op was given CPU tensors", self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (op, dev, dtype) = (self.name(), s1.device.clone(), s1.dtype());
        let (n, c, hw) = dims(l1)?;
        let count = l1.shape().elem_count();
        let (code, alpha) = act_code(self.act);
        let (batch_stats, per_channel_count) =
            (i32::from(self.batch_stats), f64::from(n) * f64::from(hw));
        let out = with_cuda(&self.stats, op, |st, stl| {
            with_cuda(&self.gamma, op, |gs, gl| {
                with_cuda(&self.beta, op, |bs, bl| {
                    let stats = slice::<f64>(st, stl, op)?;
                    let sums = output::<f64>(&dev, 2 * c as usize)?;
                    Ok(dispatch_float!(dtype, op, |T| {
                        let (x, dy, y) = (
                            slice::<T>(s1, l1, op)?,
                            slice::<T>(s2, l2, op)?,
                            slice::<T>(s3, l3, op)?,
                        );
                        let (gamma, beta) = (slice::<T>(gs, gl, op)?, slice::<T>(bs, bl, op)?);
                        launch!(
                            dev,
                            "bn_bwd_sums",
                            dtype,
                            op,
                            per_channel(c as usize),
                            &n,
                            &c,
                            &hw,
                            &code,
                            &alpha,
                            &stats,
                            &gamma,
                            &beta,
                            &x,
                            &dy,
                            &y,
                            &sums
                        )?;
                        let out = output::<T>(&dev, count + 2 * c as usize)?;
                        let count64 = count as u64;
                        launch!(
                            dev,
                            "bn_bwd_dx",
                            dtype,
                            op,
                            grid(count),
                            &count64,
                            &c,
                            &hw,
                            &code,
                            &alpha,
                            &batch_stats,
                            &per_channel_count,
                            &stats,
                            &gamma,
                            &beta,
                            &sums,
                            &x,
                            &dy,
                            &y,
                            &out
                        )?;
                        CudaStorage::wrap_cuda_slice(out, dev.clone())
                    }))
                })
            })
        })?;
        Ok((out, Shape::from(count + 2 * c as usize)))
    }
}
