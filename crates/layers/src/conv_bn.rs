//! Convolution and batch-norm units of the residual and dense NIN families: a convolution
//! followed by batch norm ([`ConvBn`], post-activation, DrNIN) and batch norm, activation,
//! then convolution ([`BnActConv`], pre-activation, DcNIN).
//!
//! A convolution that batch norm follows has no bias (the norm's mean would cancel it): the
//! [`ConvSpec`] says so. Each constructor takes one `VarBuilder` for the convolution and one for
//! the norm, so a family names them as its PyTorch module does (`conv1` and `bn1`, or `conv` and
//! `bn`).

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::batch_norm::{batch_norm_2d, BatchNorm2d};
use crate::conv::{Conv2d, ConvSpec};
use crate::error::Result;
use crate::init::WeightInit;

/// Convolution then batch norm, no activation (the caller applies it, possibly after a
/// residual sum).
#[derive(Clone, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// The convolution under `conv_vb` (its bias as `spec` says) and its norm, with
    /// `bn_momentum`, under `bn_vb`.
    pub fn new(
        spec: &ConvSpec,
        init: WeightInit,
        bn_momentum: f64,
        conv_vb: VarBuilder,
        bn_vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(spec, init, conv_vb)?,
            bn: batch_norm_2d(spec.out_channels, bn_momentum, bn_vb)?,
        })
    }

    /// Trainable parameters of a unit built from `spec`: the convolution, then the norm's scale
    /// and shift.
    pub fn param_count(spec: &ConvSpec) -> usize {
        spec.param_count() + 2 * spec.out_channels
    }
}

impl ConvBn {
    /// `activation(bn(conv(xs)))`, the activation fused into the norm.
    pub fn forward_activated(
        &self,
        xs: &Tensor,
        train: bool,
        activation: Activation,
    ) -> candle_core::Result<Tensor> {
        self.bn
            .forward_activated(&self.conv.forward(xs)?, train, activation)
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(xs)?, train)
    }
}

/// Pre-activation unit: batch norm, activation, then convolution.
#[derive(Clone, Debug)]
pub struct BnActConv {
    bn: BatchNorm2d,
    activation: Activation,
    conv: Conv2d,
}

impl BnActConv {
    /// The norm over `spec.in_channels`, with `bn_momentum`, under `bn_vb`, then the
    /// convolution under `conv_vb`.
    pub fn new(
        spec: &ConvSpec,
        activation: Activation,
        init: WeightInit,
        bn_momentum: f64,
        bn_vb: VarBuilder,
        conv_vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            bn: batch_norm_2d(spec.in_channels, bn_momentum, bn_vb)?,
            activation,
            conv: Conv2d::new(spec, init, conv_vb)?,
        })
    }

    /// Trainable parameters of a unit built from `spec`: the norm's scale and shift, then the
    /// convolution.
    pub fn param_count(spec: &ConvSpec) -> usize {
        2 * spec.in_channels + spec.param_count()
    }
}

impl ModuleT for BnActConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let xs = self.bn.forward_activated(xs, train, self.activation)?;
        self.conv.forward(&xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch_norm::BN_MOMENTUM;
    use crate::init::seeded_var_builder;
    use crate::model::ParamRole;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn units_name_their_tensors_as_asked_and_count_them() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let spec = ConvSpec::same(3, 8, 3);
        let post = ConvBn::new(
            &spec,
            WeightInit::KaimingNormal,
            BN_MOMENTUM,
            vb.pp("b.conv1"),
            vb.pp("b.bn1"),
        )
        .unwrap();
        let pre_spec = ConvSpec::same(8, 5, 1).with_bias();
        let pre = BnActConv::new(
            &pre_spec,
            Activation::Relu,
            WeightInit::KaimingNormal,
            BN_MOMENTUM,
            vb.pp("head.bn"),
            vb.pp("head.conv"),
        )
        .unwrap();
        let xs = crate::rng::seeded_randn((2, 3, 6, 6), 1).unwrap();
        let ys = pre
            .forward_t(&post.forward_t(&xs, true).unwrap(), true)
            .unwrap();
        assert_eq!(ys.dims(), &[2, 5, 6, 6]);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["b.conv1.weight"].dims(), &[8, 3, 3, 3]);
        assert!(!data.contains_key("b.conv1.bias"));
        assert_eq!(data["b.bn1.running_var"].dims(), &[8]);
        assert_eq!(data["head.bn.weight"].dims(), &[8]);
        assert_eq!(data["head.conv.bias"].dims(), &[5]);
        let trainable: usize = data
            .iter()
            .filter(|(k, v)| ParamRole::of(k, v.rank()) != ParamRole::Buffer)
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(
            trainable,
            ConvBn::param_count(&spec) + BnActConv::param_count(&pre_spec)
        );
        assert_eq!(ConvBn::param_count(&spec), 8 * 3 * 9 + 16);
        assert_eq!(spec.macs(6, 6), 36 * 8 * 3 * 9);
    }

    #[test]
    fn zero_channels_are_refused() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let err = Conv2d::new(&ConvSpec::same(0, 4, 3), WeightInit::KaimingNormal, vb)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`in_channels`"), "{err}");
    }
}
