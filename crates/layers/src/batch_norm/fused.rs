//! A convolution and the batch norm next to it as one training op on the CPU, both ways round:
//! `act(bn(conv(x)))` (post-activation units: NIN's batch-norm variants, DrNIN) and
//! `conv(act(bn(x)))` (pre-activation units: DcNIN), with the batch's statistics. Each op's
//! backward runs both gradients itself, without handing the gradient of the tensor between them
//! back to candle.
//!
//! Why one op: candle gives every tensor of the autograd graph its gradient by adding each
//! contribution to a zero tensor (`GradStore::or_insert`, then `add`), a zero fill and three
//! passes over a tensor the size of the activation. The tensor between a convolution and its
//! norm, which only the second reads, paid that for nothing: here it is not a node of the graph
//! at all. It is computed without a graph, kept by the op for the backward (as the graph kept it
//! before), and one op's gradient goes straight into the other's kernels. The values and
//! gradients are those of the two ops (`conv_bn` tests them against each other).

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor};

use super::ops::NormOp;
use super::BatchNorm2d;
use crate::activation::Activation;
use crate::conv::{conv2d_cpu, conv2d_gradients, Conv2d, ConvOptions};

impl BatchNorm2d {
    /// `act(bn(conv(xs)))` in training mode as one op (see the module), with the running
    /// statistics updated as [`BatchNorm2d::forward_activated`] updates them. `None` where the
    /// op does not apply (not the CPU, not f32/f64, mixed dtypes): the caller runs the two ops.
    pub(crate) fn train_after_conv(
        &self,
        conv: &Conv2d,
        xs: &Tensor,
        act: Activation,
    ) -> candle_core::Result<Option<Tensor>> {
        let (weight, bias) = (conv.weight(), conv.bias());
        if !self.fusable(xs, weight, bias) {
            return Ok(None);
        }
        let (xs, weight) = (xs.contiguous()?, weight.contiguous()?);
        // The convolution's output, outside the graph.
        let detached_bias = bias.map(Tensor::detach);
        let conv_out = conv
            .apply_with(
                &xs.detach(),
                &weight.detach(),
                detached_bias.as_ref(),
                false,
            )?
            .contiguous()?;
        let channels = self.weight.dim(0)?;
        if conv_out.dim(1)? != channels {
            candle_core::bail!(
                "batch_norm: the convolution gives {} channels, the norm has {channels}",
                conv_out.dim(1)?
            );
        }
        let norm = self.batch_norm_op(&conv_out, act)?;
        let params = self.params_with(bias)?;
        let op = ConvNormOp {
            conv_out: Arc::new(conv_out),
            norm,
            opts: conv.options(false),
            channels,
            has_bias: bias.is_some(),
        };
        Ok(Some(xs.apply_op3(&weight, &params, op)?))
    }

    /// `[γ; β; b]`, the convolution's bias `b` if it has one: the fused ops' third operand (a
    /// custom op takes three tensors), through which γ, β and b get their gradients.
    fn params_with(&self, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let mut parts = vec![self.weight.clone(), self.bias.clone()];
        parts.extend(bias.cloned());
        Tensor::cat(&parts, 0)
    }

    /// Whether the fused ops take these operands: on the CPU, f32 or f64 throughout.
    fn fusable(&self, xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> bool {
        let dtype = xs.dtype();
        let same_dtype = [weight, &self.weight, &self.bias]
            .into_iter()
            .chain(bias)
            .all(|t| t.dtype() == dtype);
        xs.device().is_cpu() && matches!(dtype, DType::F32 | DType::F64) && same_dtype
    }
}

/// The fused op on (input, convolution weight, [γ; β; conv bias]).
struct ConvNormOp {
    /// The convolution's output for this forward pass, computed without a graph.
    conv_out: Arc<Tensor>,
    /// The norm with the batch's statistics of `conv_out`.
    norm: NormOp,
    /// The convolution's stride and padding.
    opts: ConvOptions,
    /// The norm's channels (the convolution's outputs).
    channels: usize,
    /// Whether `[γ; β; b]` carries a convolution bias after γ and β.
    has_bias: bool,
}

impl CustomOp3 for ConvNormOp {
    fn name(&self) -> &'static str {
        "nin-conv-batch-norm"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        params: &CpuStorage,
        params_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (op, c) = (self.name(), self.channels);
        let want = if self.has_bias { 3 * c } else { 2 * c };
        let start = params_start(op, params_layout, want)?;
        let (gamma, beta) = (
            Layout::contiguous_with_offset(c, start),
            Layout::contiguous_with_offset(c, start + c),
        );
        let (storage, layout) = self.conv_out.storage_and_layout();
        let Storage::Cpu(conv_out) = &*storage else {
            candle_core::bail!("{op}: the convolution's output is not on the CPU")
        };
        if conv_out.dtype() != params.dtype() {
            candle_core::bail!("{op}: the convolution's output and γ differ in dtype");
        }
        self.norm
            .cpu_fwd(conv_out, layout, params, &gamma, params, &beta)
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        params: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.channels;
        let (gamma, beta) = (params.narrow(0, 0, c)?, params.narrow(0, c, c)?);
        let bias = self
            .has_bias
            .then(|| params.narrow(0, 2 * c, c))
            .transpose()?;
        // The norm's gradient on the kept output, then the convolution's for it.
        let (d_conv_out, d_gamma, d_beta) =
            self.norm.bwd(&self.conv_out, &gamma, &beta, res, grad)?;
        let (Some(d_conv_out), Some(d_gamma), Some(d_beta)) = (d_conv_out, d_gamma, d_beta) else {
            candle_core::bail!("{}: the norm gave no gradient", self.name())
        };
        let want_dx = xs.track_op();
        let (dx, dw, db) =
            conv2d_gradients(xs, weight, bias.as_ref(), self.opts, &d_conv_out, want_dx)?;
        let d_params = params_gradient(d_gamma, d_beta, db, self.has_bias, &d_conv_out)?;
        Ok((dx, dw, Some(d_params)))
    }
}

impl BatchNorm2d {
    /// `conv(act(bn(xs)))` in training mode as one op (a pre-activation unit, DcNIN's): the
    /// norm's output is the convolution's input, kept by the op instead of being a node of the
    /// graph. `None` where the op does not apply; the caller runs the two ops.
    pub(crate) fn train_before_conv(
        &self,
        conv: &Conv2d,
        xs: &Tensor,
        act: Activation,
    ) -> candle_core::Result<Option<Tensor>> {
        let (weight, bias) = (conv.weight(), conv.bias());
        let channels = self.weight.dim(0)?;
        if !self.fusable(xs, weight, bias) || xs.rank() != 4 || xs.dim(1)? != channels {
            return Ok(None);
        }
        let (xs, weight) = (xs.contiguous()?, weight.contiguous()?);
        let norm = self.batch_norm_op(&xs, act)?;
        let normed =
            xs.detach()
                .apply_op3_no_bwd(&self.weight.detach(), &self.bias.detach(), &norm)?;
        let params = self.params_with(bias)?;
        let op = NormConvOp {
            normed: Arc::new(normed),
            norm,
            opts: conv.options(false),
            channels,
            out_channels: weight.dim(0)?,
            has_bias: bias.is_some(),
        };
        Ok(Some(xs.apply_op3(&weight, &params, op)?))
    }
}

/// The fused op on (input, convolution weight, [γ; β; conv bias]): the norm first.
struct NormConvOp {
    /// `act(bn(input))` for this forward pass, computed without a graph.
    normed: Arc<Tensor>,
    /// The norm with the batch's statistics of the input.
    norm: NormOp,
    /// The convolution's stride and padding.
    opts: ConvOptions,
    /// The norm's channels (the convolution's inputs).
    channels: usize,
    /// The convolution's outputs (its bias's length).
    out_channels: usize,
    /// Whether `[γ; β; b]` carries a convolution bias after γ and β.
    has_bias: bool,
}

impl CustomOp3 for NormConvOp {
    fn name(&self) -> &'static str {
        "nin-batch-norm-conv"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        params: &CpuStorage,
        params_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (op, c, c_out) = (self.name(), self.channels, self.out_channels);
        let want = 2 * c + if self.has_bias { c_out } else { 0 };
        let start = params_start(op, params_layout, want)?;
        let bias_layout = Layout::contiguous_with_offset(c_out, start + 2 * c);
        let bias = self.has_bias.then_some((params, &bias_layout));
        let (storage, layout) = self.normed.storage_and_layout();
        let Storage::Cpu(normed) = &*storage else {
            candle_core::bail!("{op}: the norm's output is not on the CPU")
        };
        conv2d_cpu((normed, layout), (weight, weight_layout), bias, self.opts)
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        params: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (c, c_out) = (self.channels, self.out_channels);
        let (gamma, beta) = (params.narrow(0, 0, c)?, params.narrow(0, c, c)?);
        let bias = self
            .has_bias
            .then(|| params.narrow(0, 2 * c, c_out))
            .transpose()?;
        // The convolution's gradients (its input's always: the norm needs it), then the norm's
        // for that input gradient.
        let grad = grad.contiguous()?;
        let (d_normed, dw, db) =
            conv2d_gradients(&self.normed, weight, bias.as_ref(), self.opts, &grad, true)?;
        let d_normed = d_normed.ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: no input gradient", self.name()))
        })?;
        let (dx, d_gamma, d_beta) = self.norm.bwd(xs, &gamma, &beta, &self.normed, &d_normed)?;
        let (Some(d_gamma), Some(d_beta)) = (d_gamma, d_beta) else {
            candle_core::bail!("{}: the norm gave no gradient", self.name())
        };
        let d_params = params_gradient(d_gamma, d_beta, db, self.has_bias, &grad)?;
        Ok((dx, dw, Some(d_params)))
    }
}

/// The gradient of `[γ; β; b]`: `db` comes with the convolution's dW, and when neither was asked
/// for it is still the channel sums of the convolution's output gradient `conv_dy`.
fn params_gradient(
    d_gamma: Tensor,
    d_beta: Tensor,
    db: Option<Tensor>,
    has_bias: bool,
    conv_dy: &Tensor,
) -> candle_core::Result<Tensor> {
    let mut parts = vec![d_gamma, d_beta];
    if has_bias {
        parts.push(match db {
            Some(db) => db,
            None => conv_dy.sum((0, 2, 3))?,
        });
    }
    Tensor::cat(&parts, 0)
}

/// Where `[γ; β; b]` starts in its storage, after checking it is `want` contiguous values.
fn params_start(op: &str, layout: &Layout, want: usize) -> candle_core::Result<usize> {
    match layout.contiguous_offsets() {
        Some((start, _)) if layout.dims() == [want] => Ok(start),
        _ => candle_core::bail!(
            "{op}: expected [γ; β; b] of {want} contiguous values, got {:?}",
            layout.dims()
        ),
    }
}
