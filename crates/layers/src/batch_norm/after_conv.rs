//! A convolution and the batch norm after it as one training op on the CPU: `act(bn(conv(x)))`
//! with the batch's statistics, whose backward runs the norm's gradient and then the
//! convolution's without handing the convolution's output gradient back to candle.
//!
//! Why one op: candle gives every tensor of the autograd graph its gradient by adding each
//! contribution to a zero tensor (`GradStore::or_insert`, then `add`), a zero fill and three
//! passes over a tensor the size of the activation. A convolution's output that only its norm
//! reads paid that for nothing: here it is not a node of the graph at all. It is computed
//! without a graph, kept by the op for the backward (as the graph kept it before), and the norm's
//! gradient goes straight into the convolution's GEMMs. The values and gradients are those of
//! the two ops (`conv_bn` tests them against each other).

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor};

use super::ops::{ChannelMoments, NormOp};
use super::{BatchNorm2d, BN_EPS};
use crate::activation::Activation;
use crate::conv::{conv2d_gradients, Conv2d, ConvOptions};

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
        let dtype = xs.dtype();
        let same_dtype = [weight, &self.weight, &self.bias]
            .into_iter()
            .chain(bias)
            .all(|t| t.dtype() == dtype);
        if !(xs.device().is_cpu() && matches!(dtype, DType::F32 | DType::F64) && same_dtype) {
            return Ok(None);
        }
        let (xs, weight) = (xs.contiguous()?, weight.contiguous()?);
        let opts = conv.options(false);
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
        let per_channel = conv_out.elem_count() / channels;
        if per_channel < 2 {
            candle_core::bail!(
                "batch_norm: training needs more than one value per channel, got input {:?}",
                conv_out.dims()
            );
        }
        let moments = conv_out
            .apply_op1_no_bwd(&ChannelMoments)?
            .to_vec2::<f64>()?;
        let [mean, var] = <[Vec<f64>; 2]>::try_from(moments)
            .map_err(|_| candle_core::Error::Msg("batch_norm: moments not [2, C]".into()))?;
        self.update_running(&mean, &var, per_channel)?;
        let inv_std = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
        let norm = NormOp {
            mean,
            inv_std,
            batch_stats: true,
            act,
        };
        // γ, β and the convolution's bias as one operand: a custom op takes three tensors.
        let mut parts = vec![self.weight.clone(), self.bias.clone()];
        parts.extend(bias.cloned());
        let params = Tensor::cat(&parts, 0)?;
        let op = ConvNormOp {
            conv_out: Arc::new(conv_out),
            norm,
            opts,
            channels,
            has_bias: bias.is_some(),
        };
        Ok(Some(xs.apply_op3(&weight, &params, op)?))
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
        let op = self.name();
        let c = self.channels;
        let want = if self.has_bias { 3 * c } else { 2 * c };
        let Some((start, _)) = params_layout
            .contiguous_offsets()
            .filter(|_| params_layout.dims() == [want])
        else {
            candle_core::bail!(
                "{op}: expected [γ; β; b] of {want} contiguous values, got {:?}",
                params_layout.dims()
            )
        };
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
        let (dx, dw, db) = conv2d_gradients(xs, weight, bias.as_ref(), self.opts, &d_conv_out)?;
        let mut parts = vec![d_gamma, d_beta];
        if self.has_bias {
            // db comes with dW; when neither is asked for, it is still the output gradient's
            // channel sums.
            match db {
                Some(db) => parts.push(db),
                None => parts.push(d_conv_out.sum((0, 2, 3))?),
            }
        }
        Ok((dx, dw, Some(Tensor::cat(&parts, 0)?)))
    }
}
