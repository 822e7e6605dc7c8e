//! Batch norm over the channels of `[N, C, H, W]` maps, as PyTorch's `BatchNorm2d` (affine,
//! running statistics), with an optional ReLU fused in.
//!
//! candle's `BatchNorm` is a dozen whole-tensor ops in training mode (transpose, copy, mean,
//! subtract, square, mean, divide, scale, shift, transpose back…), each with its own backward and
//! zero-filled gradient accumulator, and it sums in the tensor's dtype: the batch-norm families
//! trained 3–10× slower per FLOP than plain NIN, needed about 3× its memory, and their f32
//! gradients differed from PyTorch's (which accumulates in f64) by up to 1e-2. Here, on the CPU
//! for f32 and f64:
//!
//! - one pass computes each channel's mean and variance in f64 (two-pass: the mean, then the
//!   squared deviations from it, so no cancellation);
//! - one op writes `relu?(x·scale + shift)` per channel, `scale = γ/√(σ² + ε)`,
//!   `shift = β − μ·scale`;
//! - its backward is one op giving `dx`, `dγ = Σ dy·x̂` and `dβ = Σ dy` (channel sums in f64),
//!   with `dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))` for batch statistics and `γ/σ · dy` for
//!   running ones; the ReLU's gradient mask is applied inside it.
//!
//! On a CUDA device (feature `cuda`) the same three ops run as kernels, with the statistics
//! kept as device tensors (see `cuda`). Any other device or dtype uses candle's own `BatchNorm`
//! (and a separate ReLU).
//!
//! This file is the layer; `ops` holds the three CPU ops (moments, normalise, gradient), and
//! `cuda` their CUDA counterparts.

#[cfg(feature = "cuda")]
mod cuda;
mod fused;
mod ops;
#[cfg(test)]
mod tests;

use candle_core::{DType, Tensor, Var};
use candle_nn::{Init, ModuleT, VarBuilder};

use self::ops::{ChannelMoments, NormOp};
use crate::activation::Activation;
use crate::error::{Error, Result};

/// PyTorch's default batch-norm momentum: `running = (1 − m)·running + m·batch`.
pub const BN_MOMENTUM: f64 = 0.1;

/// PyTorch's default ε.
const BN_EPS: f64 = 1e-5;

/// Batch norm over `channels` maps: `weight` (γ), `bias` (β), `running_mean`, `running_var`.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
}

/// Batch norm over `channels` as PyTorch's `BatchNorm2d` (ε = 1e-5, affine) with `momentum`
/// ([`BN_MOMENTUM`] by default): `weight`, `bias`, `running_mean`, `running_var` under `vb`.
pub fn batch_norm_2d(channels: usize, momentum: f64, vb: VarBuilder) -> Result<BatchNorm2d> {
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::InvalidConfig {
            layer: "batch_norm",
            field: "momentum",
            problem: format!("must be in [0, 1], got {momentum}"),
        });
    }
    let buffer = |name, value| -> Result<Var> {
        // A tensor of a VarMap is already a variable and is shared, so updates reach the map;
        // loaded weights are copied into a fresh variable.
        Ok(Var::from_tensor(&vb.get_with_hints(
            channels,
            name,
            Init::Const(value),
        )?)?)
    };
    Ok(BatchNorm2d {
        running_mean: buffer("running_mean", 0.0)?,
        running_var: buffer("running_var", 1.0)?,
        weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
        bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
        momentum,
    })
}

impl BatchNorm2d {
    /// `activation(bn(xs))` in one op: the ReLU or ELU that follows most norms of the zoo is
    /// fused in (its gradient too).
    pub fn forward_activated(
        &self,
        xs: &Tensor,
        train: bool,
        activation: Activation,
    ) -> candle_core::Result<Tensor> {
        self.forward_impl(xs, train, activation)
    }

    /// `(scale, shift)` per channel such that evaluation mode computes `x·scale + shift`:
    /// `scale = γ/√(running σ² + ε)`, `shift = β − running μ·scale`, as differentiable tensor
    /// ops in γ and β (so that a caller folding them into a convolution still trains them). The
    /// running statistics are buffers, not parameters: detached, they record no autograd graph
    /// (which would keep a whole forward pass's activations alive in inference).
    pub(crate) fn eval_affine(&self) -> candle_core::Result<(Tensor, Tensor)> {
        let inv_std = self
            .running_var
            .as_tensor()
            .detach()
            .affine(1.0, BN_EPS)?
            .sqrt()?
            .recip()?;
        let scale = self.weight.mul(&inv_std)?;
        let shift = self
            .bias
            .sub(&self.running_mean.as_tensor().detach().mul(&scale)?)?;
        Ok((scale, shift))
    }

    /// The running mean, a buffer updated by every training-mode forward pass.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    fn forward_impl(
        &self,
        xs: &Tensor,
        train: bool,
        act: Activation,
    ) -> candle_core::Result<Tensor> {
        let channels = self.weight.dim(0)?;
        if xs.rank() != 4 || xs.dim(1)? != channels {
            return Err(Error::BadShape {
                op: "batch_norm",
                expected: "[N, C, H, W] with C the norm's channels",
                got: xs.dims().to_vec(),
            }
            .into());
        }
        let fast = (xs.device().is_cpu() || xs.device().is_cuda())
            && matches!(xs.dtype(), DType::F32 | DType::F64)
            && self.weight.dtype() == xs.dtype()
            && self.bias.dtype() == xs.dtype();
        if !fast {
            return self.candle_forward(xs, train, act);
        }
        let xs = xs.contiguous()?;
        #[cfg(feature = "cuda")]
        if xs.device().is_cuda() {
            return cuda::forward(self, &xs, train, act);
        }
        let op = if train {
            self.batch_norm_op(&xs, act)?
        } else {
            let buffer = |v: &Var| v.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>();
            NormOp::new(
                buffer(&self.running_mean)?,
                &buffer(&self.running_var)?,
                false,
                act,
            )
        };
        xs.apply_op3(&self.weight, &self.bias, op)
    }

    /// The norm of `xs` (contiguous `[N, C, H, W]` on the CPU) with its batch's statistics,
    /// the running statistics updated from them.
    fn batch_norm_op(&self, xs: &Tensor, act: Activation) -> candle_core::Result<NormOp> {
        let channels = self.weight.dim(0)?;
        let per_channel = xs.elem_count() / channels;
        if per_channel < 2 {
            candle_core::bail!(
                "batch_norm: training needs more than one value per channel, got input {:?}",
                xs.dims()
            );
        }
        let moments = xs.apply_op1_no_bwd(&ChannelMoments)?.to_vec2::<f64>()?;
        let [mean, var] = <[Vec<f64>; 2]>::try_from(moments)
            .map_err(|_| candle_core::Error::Msg("batch_norm: moments not [2, C]".into()))?;
        self.update_running(&mean, &var, per_channel)?;
        Ok(NormOp::new(mean, &var, true, act))
    }

    /// `running = (1 − m)·running + m·batch`, with the batch variance made unbiased as PyTorch
    /// does.
    fn update_running(&self, mean: &[f64], var: &[f64], count: usize) -> candle_core::Result<()> {
        let m = self.momentum;
        let unbias = count as f64 / (count - 1) as f64;
        let blend = |buffer: &Var, batch: &mut dyn Iterator<Item = f64>| {
            let old = buffer.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let new: Vec<f64> = old
                .iter()
                .zip(batch)
                .map(|(o, b)| (1.0 - m) * o + m * b)
                .collect();
            let dtype = buffer.dtype();
            buffer.set(&Tensor::new(new, buffer.device())?.to_dtype(dtype)?)
        };
        blend(&self.running_mean, &mut mean.iter().copied())?;
        blend(&self.running_var, &mut var.iter().map(|v| v * unbias))
    }

    /// candle's own batch norm, for devices and dtypes the op does not cover.
    fn candle_forward(
        &self,
        xs: &Tensor,
        train: bool,
        act: Activation,
    ) -> candle_core::Result<Tensor> {
        let bn = candle_nn::BatchNorm::new_with_momentum(
            self.weight.dim(0)?,
            self.running_mean.as_tensor().clone(),
            self.running_var.as_tensor().clone(),
            self.weight.clone(),
            self.bias.clone(),
            BN_EPS,
            self.momentum,
        )?;
        act.apply(&bn.forward_t(xs, train)?)
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_impl(xs, train, Activation::Identity)
    }
}
