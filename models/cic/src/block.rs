//! The CiC block: an mlpconv block (a k×k convolution followed by 1×1 convolutions) in which
//! chosen layers are channel-window convolutions instead of dense ones.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use nin_layers::{
    batch_norm_2d, Activation, BatchNorm2d, Conv2d, ConvSpec, Error, MlpConvConfig, Result,
    BN_MOMENTUM,
};

use crate::window::{ChannelWindowConfig, ChannelWindowConv};

/// Architecture of one CiC block: an mlpconv block and, per convolution, its channel window
/// (`None`: dense).
#[derive(Clone, Debug, PartialEq)]
pub struct CicBlockConfig {
    /// Widths, kernel, padding, activations, batch norm and initialisation, as in NIN.
    pub mlpconv: MlpConvConfig,
    /// One entry per convolution (the k×k one first): `Some(w)` makes it a channel-window
    /// convolution with window `w`.
    pub windows: Vec<Option<usize>>,
}

/// One convolution of a block, as built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Dense `[out, in, k, k]` convolution with bias.
    Dense(ConvSpec),
    /// Channel-window convolution.
    Window(ChannelWindowConfig),
}

impl LayerKind {
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        match self {
            Self::Dense(spec) => spec.out_channels,
            Self::Window(cfg) => cfg.out_channels,
        }
    }

    /// Output side for an input side `size`.
    pub fn output_size(&self, size: usize) -> usize {
        match self {
            Self::Dense(spec) => spec.output_size(size),
            Self::Window(cfg) => cfg.output_size(size),
        }
    }

    /// Weights and bias.
    pub fn param_count(&self) -> usize {
        match self {
            Self::Dense(spec) => spec.param_count(),
            Self::Window(cfg) => cfg.param_count(),
        }
    }

    /// Multiply-accumulates per image for an `h`×`w` input, counting only the connections
    /// that exist (`w` input channels per output channel in a channel-window layer).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        match self {
            Self::Dense(spec) => spec.macs(h, w),
            Self::Window(cfg) => cfg.macs(h, w),
        }
    }
}

impl CicBlockConfig {
    /// The block's convolutions in order, k×k first.
    pub fn layers(&self) -> Vec<LayerKind> {
        let windows = self.windows.iter().copied().chain(std::iter::repeat(None));
        self.mlpconv
            .convs()
            .into_iter()
            .zip(windows)
            .map(|(spec, window)| match window {
                Some(window) => LayerKind::Window(ChannelWindowConfig {
                    in_channels: spec.in_channels,
                    out_channels: spec.out_channels,
                    window,
                    kernel: spec.kernel,
                    stride: spec.stride,
                    padding: spec.padding,
                }),
                None => LayerKind::Dense(spec),
            })
            .collect()
    }

    /// Checks that the block can be built.
    pub fn validate(&self) -> Result<()> {
        self.mlpconv.validate()?;
        if self.windows.len() != self.mlpconv.widths.len() {
            return Err(Error::InvalidConfig {
                layer: "cic block",
                field: "windows",
                problem: format!(
                    "must have one entry per width ({}), got {}",
                    self.mlpconv.widths.len(),
                    self.windows.len()
                ),
            });
        }
        for layer in self.layers() {
            if let LayerKind::Window(cfg) = layer {
                cfg.validate()?;
            }
        }
        Ok(())
    }

    /// Trainable parameters (weights, biases, batch-norm scale and shift).
    pub fn param_count(&self) -> usize {
        let norm = |c: usize| if self.mlpconv.batch_norm { 2 * c } else { 0 };
        let layers = self.layers();
        layers
            .iter()
            .map(|l| l.param_count() + norm(l.out_channels()))
            .sum()
    }

    /// Multiply-accumulates per image for an `h`×`w` input, counting only the connections
    /// that exist (`w` input channels per output channel in a channel-window layer).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let (mut h, mut w) = (h, w);
        let mut macs = 0;
        for layer in self.layers() {
            macs += layer.macs(h, w);
            (h, w) = (layer.output_size(h), layer.output_size(w));
        }
        macs
    }
}

/// One convolution of a block.
#[derive(Clone, Debug)]
enum BlockConv {
    Dense(Conv2d),
    Window(ChannelWindowConv),
}

impl BlockConv {
    fn forward_relu(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense(conv) => conv.forward_relu(xs),
            Self::Window(conv) => conv.forward_relu(xs),
        }
    }
}

impl Module for BlockConv {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Dense(conv) => conv.forward(xs),
            Self::Window(conv) => conv.forward(xs),
        }
    }
}

/// One CiC block. Weight names as NIN's mlpconv: `conv.*` (k×k), `mlp.{i}.*` (1×1), `bn.{j}.*`
/// (batch norm after convolution j, counting the k×k one as 0); a channel-window layer stores
/// its `weight` compactly as `[out, w, k, k]`.
#[derive(Clone, Debug)]
pub struct CicBlock {
    convs: Vec<BlockConv>,
    norms: Vec<BatchNorm2d>,
    activations: Vec<Activation>,
}

impl CicBlock {
    /// Builds the block under `vb`.
    pub fn new(cfg: &CicBlockConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let m = &cfg.mlpconv;
        let mut convs = Vec::with_capacity(m.widths.len());
        let mut norms = Vec::new();
        for (i, layer) in cfg.layers().into_iter().enumerate() {
            let vb_conv = if i == 0 {
                vb.pp("conv")
            } else {
                vb.pp("mlp").pp(i - 1)
            };
            let conv = match layer {
                LayerKind::Dense(spec) => BlockConv::Dense(Conv2d::new(&spec, m.init, vb_conv)?),
                LayerKind::Window(wcfg) => {
                    BlockConv::Window(ChannelWindowConv::new(wcfg, m.init, vb_conv)?)
                }
            };
            convs.push(conv);
            if m.batch_norm {
                let c_out = layer.out_channels();
                norms.push(batch_norm_2d(c_out, BN_MOMENTUM, vb.pp("bn").pp(i))?);
            }
        }
        Ok(Self {
            convs,
            norms,
            activations: m.activations.clone(),
        })
    }
}

impl ModuleT for CicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            if let (None, Activation::Relu) = (self.norms.get(i), self.activations[i]) {
                xs = conv.forward_relu(&xs)?;
                continue;
            }
            xs = conv.forward(&xs)?;
            xs = match self.norms.get(i) {
                Some(norm) => norm.forward_activated(&xs, train, self.activations[i])?,
                None => self.activations[i].apply(&xs)?,
            };
        }
        Ok(xs)
    }
}
