//! The convolution layer every model builds on: [`Conv2d`], weights under a `VarBuilder` and a
//! forward through [`conv2d`], described by a [`ConvSpec`], the one place where a convolution's
//! output size, parameters and multiply-accumulates are counted.

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{conv2d, ConvOptions};
use crate::error::{Error, Result};
use crate::init::WeightInit;

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

/// A convolution, its bias optional (a convolution that batch norm follows has none: the norm's
/// mean would cancel it). Weight names: `weight` `[out, in, k, k]` and, if any, `bias` `[out]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
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

    /// `relu(conv(xs) + bias)` in one op: saves the separate bias and ReLU passes and their
    /// backward glue.
    pub fn forward_relu(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(xs, true)
    }

    fn apply(&self, xs: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        self.apply_with(xs, &self.weight, self.bias.as_ref(), relu)
    }

    /// Stride and padding, with `relu` as asked.
    pub(crate) fn options(&self, relu: bool) -> ConvOptions {
        ConvOptions {
            stride: self.stride,
            padding: self.padding,
            relu,
        }
    }

    /// This convolution's geometry with another weight and bias of the same shapes (batch norm
    /// folded into them, `conv_bn`).
    pub(crate) fn apply_with(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        conv2d(xs, weight, bias, self.options(relu))
    }

    /// The weight, `[C_out, C_in, k, k]`.
    pub(crate) fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[C_out]`, if the convolution has one.
    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Output positions per image (`OH·OW`) for an input of `h`×`w`.
    pub(crate) fn output_positions(&self, h: usize, w: usize) -> usize {
        let k = self.weight.dims().get(2).copied().unwrap_or(1);
        let side = |s: usize| (s + 2 * self.padding).saturating_sub(k) / self.stride + 1;
        side(h) * side(w)
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(xs, false)
    }
}
