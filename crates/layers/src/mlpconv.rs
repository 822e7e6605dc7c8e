//! The mlpconv block of Network in Network: a k×k convolution followed by 1×1 convolutions,
//! i.e. a small multilayer perceptron slid over every position of the image.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::batch_norm::{batch_norm_2d, BatchNorm2d, BN_MOMENTUM};
use crate::conv::{Conv2d, ConvSpec};
use crate::conv_bn::conv_bn_act;
use crate::error::{Error, Result};
use crate::init::WeightInit;

/// Architecture of one mlpconv block.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConvConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Side of the first (spatial) convolution's kernel.
    pub kernel: usize,
    /// Stride of the first convolution.
    pub stride: usize,
    /// Zero padding of the first convolution.
    pub padding: usize,
    /// Output channels of each convolution: the k×k one first, then each 1×1 layer.
    pub widths: Vec<usize>,
    /// The activation after each convolution, one per entry of `widths`.
    pub activations: Vec<Activation>,
    /// Batch norm after each convolution, before its activation.
    pub batch_norm: bool,
    /// Initialisation of the convolution weights (biases start at zero).
    pub init: WeightInit,
}

impl MlpConvConfig {
    /// A block with the same activation after every convolution and no batch norm.
    pub fn new(
        in_channels: usize,
        kernel: usize,
        padding: usize,
        widths: &[usize],
        activation: Activation,
        init: WeightInit,
    ) -> Self {
        Self {
            in_channels,
            kernel,
            stride: 1,
            padding,
            widths: widths.to_vec(),
            activations: vec![activation; widths.len()],
            batch_norm: false,
            init,
        }
    }

    /// Checks that the block can be built.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, problem: String| Error::InvalidConfig {
            layer: "mlpconv",
            field,
            problem,
        };
        if self.widths.is_empty() {
            return Err(invalid(
                "widths",
                "must name at least one convolution".into(),
            ));
        }
        if let Some(i) = self.widths.iter().position(|&w| w == 0) {
            return Err(invalid("widths", format!("entry {i} is 0")));
        }
        if self.activations.len() != self.widths.len() {
            return Err(invalid(
                "activations",
                format!(
                    "must have one entry per width ({}), got {}",
                    self.widths.len(),
                    self.activations.len()
                ),
            ));
        }
        if self.in_channels == 0 || self.kernel == 0 || self.stride == 0 {
            return Err(invalid(
                "in_channels/kernel/stride",
                "must all be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Output channels of the block.
    pub fn out_channels(&self) -> usize {
        self.widths.last().copied().unwrap_or(self.in_channels)
    }

    /// The block's convolutions in order, each with a bias: the k×k one, then the 1×1 ones.
    pub fn convs(&self) -> Vec<ConvSpec> {
        let mut c_in = self.in_channels;
        let mut convs = Vec::with_capacity(self.widths.len());
        for (i, &c_out) in self.widths.iter().enumerate() {
            let (kernel, stride, padding) = if i == 0 {
                (self.kernel, self.stride, self.padding)
            } else {
                (1, 1, 0)
            };
            convs.push(ConvSpec {
                in_channels: c_in,
                out_channels: c_out,
                kernel,
                stride,
                padding,
                bias: true,
            });
            c_in = c_out;
        }
        convs
    }

    /// Output side for an input side `size`.
    pub fn output_size(&self, size: usize) -> usize {
        self.convs().iter().fold(size, |s, c| c.output_size(s))
    }

    /// Multiply-accumulates per image for an `h`×`w` input.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let (mut h, mut w) = (h, w);
        let mut macs = 0;
        for conv in self.convs() {
            macs += conv.macs(h, w);
            (h, w) = (conv.output_size(h), conv.output_size(w));
        }
        macs
    }

    /// Trainable parameters (weights, biases, batch-norm scale and shift).
    pub fn param_count(&self) -> usize {
        let norm = |c: &ConvSpec| {
            if self.batch_norm {
                2 * c.out_channels
            } else {
                0
            }
        };
        self.convs().iter().map(|c| c.param_count() + norm(c)).sum()
    }
}

/// One mlpconv block. Weight names: `conv.*` (k×k), `mlp.{i}.*` (1×1), `bn.{j}.*` (batch norm
/// after convolution j, counting the k×k one as 0).
#[derive(Clone, Debug)]
pub struct MlpConv {
    convs: Vec<Conv2d>,
    norms: Vec<BatchNorm2d>,
    activations: Vec<Activation>,
}

impl MlpConv {
    /// Builds the block under `vb`.
    pub fn new(cfg: &MlpConvConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut convs = Vec::with_capacity(cfg.widths.len());
        let mut norms = Vec::new();
        for (i, spec) in cfg.convs().iter().enumerate() {
            let conv_vb = if i == 0 {
                vb.pp("conv")
            } else {
                vb.pp("mlp").pp(i - 1)
            };
            convs.push(Conv2d::new(spec, cfg.init, conv_vb)?);
            if cfg.batch_norm {
                norms.push(batch_norm_2d(
                    spec.out_channels,
                    BN_MOMENTUM,
                    vb.pp("bn").pp(i),
                )?);
            }
        }
        Ok(Self {
            convs,
            norms,
            activations: cfg.activations.clone(),
        })
    }
}

impl ModuleT for MlpConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            if let (None, Activation::Relu) = (self.norms.get(i), self.activations[i]) {
                xs = conv.forward_relu(&xs)?;
                continue;
            }
            xs = match self.norms.get(i) {
                Some(norm) => conv_bn_act(conv, norm, &xs, train, self.activations[i])?,
                None => self.activations[i].apply(&conv.forward(&xs)?)?,
            };
        }
        Ok(xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::seeded_var_builder;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn nin_block1(batch_norm: bool) -> MlpConvConfig {
        MlpConvConfig {
            batch_norm,
            ..MlpConvConfig::new(
                3,
                5,
                2,
                &[192, 160, 96],
                Activation::Relu,
                WeightInit::Normal { std: 0.05 },
            )
        }
    }

    #[test]
    fn names_shapes_and_counts_follow_the_nin_contract() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let cfg = nin_block1(true);
        let block = MlpConv::new(&cfg, vb.pp("mlpconv1")).unwrap();
        let xs = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            block.forward_t(&xs, false).unwrap().dims(),
            &[2, 96, 32, 32]
        );
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["mlpconv1.conv.weight"].dims(), &[192, 3, 5, 5]);
        assert_eq!(data["mlpconv1.mlp.0.weight"].dims(), &[160, 192, 1, 1]);
        assert_eq!(data["mlpconv1.mlp.1.bias"].dims(), &[96]);
        assert_eq!(data["mlpconv1.bn.2.running_var"].dims(), &[96]);
        let trainable: usize = data
            .iter()
            .filter(|(k, _)| !k.contains("running"))
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(trainable, cfg.param_count());
        // 5·5·3·192 + 192·160 + 160·96 per pixel, 32×32 pixels.
        assert_eq!(cfg.macs(32, 32), 1024 * (14_400 + 30_720 + 15_360));
    }

    #[test]
    fn mismatched_activations_are_refused() {
        let mut cfg = nin_block1(false);
        cfg.activations.pop();
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let err = MlpConv::new(&cfg, vb).unwrap_err();
        assert!(err.to_string().contains("`activations`"), "{err}");
    }

    #[test]
    fn identity_on_a_chosen_layer_keeps_negative_outputs() {
        let mut cfg = MlpConvConfig::new(
            2,
            3,
            1,
            &[4, 3],
            Activation::Relu,
            WeightInit::Normal { std: 1.0 },
        );
        cfg.activations[1] = Activation::Identity;
        let varmap = VarMap::new();
        let block = MlpConv::new(
            &cfg,
            seeded_var_builder(&varmap, 9, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let xs = crate::rng::seeded_randn((2, 2, 6, 6), 1).unwrap();
        let min = block
            .forward_t(&xs, false)
            .unwrap()
            .min_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(min < 0.0);
    }
}
