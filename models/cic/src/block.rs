//! The CiC block: an mlpconv block (a k×k convolution followed by 1×1 convolutions) in which
//! chosen layers are channel-window convolutions instead of dense ones.

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use nin_layers::{
    batch_norm_2d, Activation, BatchNorm2d, Conv2d, Error, MlpConvConfig, Result, BN_MOMENTUM,
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
    /// Dense `[out, in, k, k]` convolution.
    Dense {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side.
        kernel: usize,
    },
    /// Channel-window convolution.
    Window(ChannelWindowConfig),
}

impl CicBlockConfig {
    /// The block's convolutions in order, k×k first.
    pub fn layers(&self) -> Vec<LayerKind> {
        let m = &self.mlpconv;
        let mut c_in = m.in_channels;
        let mut layers = Vec::with_capacity(m.widths.len());
        for (i, &c_out) in m.widths.iter().enumerate() {
            let (kernel, stride, padding) = if i == 0 {
                (m.kernel, m.stride, m.padding)
            } else {
                (1, 1, 0)
            };
            layers.push(match self.windows.get(i).copied().flatten() {
                Some(window) => LayerKind::Window(ChannelWindowConfig {
                    in_channels: c_in,
                    out_channels: c_out,
                    window,
                    kernel,
                    stride,
                    padding,
                }),
                None => LayerKind::Dense {
                    in_channels: c_in,
                    out_channels: c_out,
                    kernel,
                },
            });
            c_in = c_out;
        }
        layers
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
        self.layers()
            .iter()
            .map(|layer| match *layer {
                LayerKind::Dense {
                    in_channels,
                    out_channels,
                    kernel,
                } => {
                    out_channels * in_channels * kernel * kernel + out_channels + norm(out_channels)
                }
                LayerKind::Window(cfg) => cfg.param_count() + norm(cfg.out_channels),
            })
            .sum()
    }

    /// Multiply-accumulates per image for an `h`×`w` input, counting only the connections
    /// that exist (`w` input channels per output channel in a channel-window layer).
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        let m = &self.mlpconv;
        let pixels = (m.output_size(h) * m.output_size(w)) as u64;
        self.layers()
            .iter()
            .map(|layer| match *layer {
                LayerKind::Dense {
                    in_channels,
                    out_channels,
                    kernel,
                } => pixels * (out_channels * in_channels * kernel * kernel) as u64,
                LayerKind::Window(cfg) => {
                    pixels * (cfg.out_channels * cfg.window * cfg.kernel * cfg.kernel) as u64
                }
            })
            .sum()
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
            let (conv, c_out) = match layer {
                LayerKind::Dense {
                    in_channels,
                    out_channels,
                    kernel,
                } => {
                    let (stride, padding) = if i == 0 {
                        (m.stride, m.padding)
                    } else {
                        (1, 0)
                    };
                    let conv = Conv2d::new(
                        in_channels,
                        out_channels,
                        kernel,
                        stride,
                        padding,
                        m.init,
                        vb_conv,
                    )?;
                    (BlockConv::Dense(conv), out_channels)
                }
                LayerKind::Window(wcfg) => (
                    BlockConv::Window(ChannelWindowConv::new(wcfg, m.init, vb_conv)?),
                    wcfg.out_channels,
                ),
            };
            convs.push(conv);
            if m.batch_norm {
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
