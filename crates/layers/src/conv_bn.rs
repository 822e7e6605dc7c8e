//! Convolution and batch-norm units of the residual and dense NIN families: a convolution
//! followed by batch norm ([`ConvBn`], post-activation, DrNIN) and batch norm, activation,
//! then convolution ([`BnActConv`], pre-activation, DcNIN).
//!
//! A convolution that batch norm follows has no bias (the norm's mean would cancel it), so these
//! units carry their own [`ConvLayer`] whose bias is optional; it runs on the GEMM convolution
//! of [`conv2d`](crate::conv2d). Each constructor takes one `VarBuilder` for the convolution and
//! one for the norm, so a family names them as its PyTorch module does (`conv1` and `bn1`, or
//! `conv` and `bn`).

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::batch_norm::{batch_norm_2d, BatchNorm2d};

use crate::conv::{conv2d, ConvOptions};
use crate::error::{Error, Result};
use crate::init::WeightInit;
use crate::mlpconv::Activation;

/// Geometry of a square convolution, and whether it has a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Whether the convolution adds a bias.
    pub bias: bool,
}

impl ConvSpec {
    /// A stride-1 convolution without bias that keeps the spatial size (padding `kernel / 2`).
    pub fn same(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
            bias: false,
        }
    }

    /// The same convolution with a bias.
    pub fn with_bias(self) -> Self {
        Self { bias: true, ..self }
    }

    /// Checks that the convolution can be built.
    pub fn validate(&self) -> Result<()> {
        let zero = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("kernel", self.kernel),
            ("stride", self.stride),
        ];
        for (field, value) in zero {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    layer: "conv",
                    field,
                    problem: "must be at least 1, got 0".into(),
                });
            }
        }
        Ok(())
    }

    /// Output side for an input side `size`.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding).saturating_sub(self.kernel) / self.stride + 1
    }

    /// Weights and bias of the convolution.
    pub fn param_count(&self) -> usize {
        let weights = self.out_channels * self.in_channels * self.kernel * self.kernel;
        weights + if self.bias { self.out_channels } else { 0 }
    }

    /// Multiply-accumulates per image for an `h`×`w` input.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let per_pixel = self.out_channels * self.in_channels * self.kernel * self.kernel;
        (self.output_size(h) * self.output_size(w) * per_pixel) as u64
    }
}

/// A convolution whose bias is optional: `weight` `[out, in, k, k]` and, if any, `bias` `[out]`.
#[derive(Clone, Debug)]
pub struct ConvLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl ConvLayer {
    /// Loads or creates the convolution under `vb` (biases start at zero).
    pub fn new(spec: &ConvSpec, init: WeightInit, vb: VarBuilder) -> Result<Self> {
        spec.validate()?;
        let shape = [
            spec.out_channels,
            spec.in_channels,
            spec.kernel,
            spec.kernel,
        ];
        let weight = vb.get_with_hints(&shape, "weight", init.hint(&shape))?;
        let bias = if spec.bias {
            Some(vb.get_with_hints(spec.out_channels, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride: spec.stride,
            padding: spec.padding,
        })
    }

    /// The `[out, in, k, k]` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for ConvLayer {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let opts = ConvOptions {
            stride: self.stride,
            padding: self.padding,
            relu: false,
        };
        conv2d(xs, &self.weight, self.bias.as_ref(), opts)
    }
}

/// Convolution then batch norm, no activation (the caller applies it, possibly after a
/// residual sum).
#[derive(Clone, Debug)]
pub struct ConvBn {
    conv: ConvLayer,
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
            conv: ConvLayer::new(spec, init, conv_vb)?,
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
    conv: ConvLayer,
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
            conv: ConvLayer::new(spec, init, conv_vb)?,
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
        let xs = Tensor::randn(0f32, 1.0, (2, 3, 6, 6), &Device::Cpu).unwrap();
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
        let err = ConvLayer::new(&ConvSpec::same(0, 4, 3), WeightInit::KaimingNormal, vb)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`in_channels`"), "{err}");
    }
}
