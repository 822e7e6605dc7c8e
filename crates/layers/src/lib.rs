/*!
Shared layers for the NIN family, and the ops candle lacks to train them.

- [`MlpConv`]: a k×k convolution followed by 1×1 convolutions (a small MLP slid over the image),
  each with optional batch norm and an activation.
- [`conv2d`]: convolution as a custom op whose CPU forward and backward are GEMMs (candle's own
  backward is several times slower), with bias and ReLU fused; [`Conv2d`], the convolution layer
  of every model, runs it, and its [`ConvSpec`] counts parameters and multiply-accumulates.
- [`global_avg_pool`]: one logit per class map.
- [`pool2d`]: max and average pooling with padding and ceil mode, as custom ops whose CPU
  forward and backward are parallel and follow PyTorch's semantics (candle's own pooling cannot
  backpropagate NIN's overlapping 3×3 stride-2 windows).
- [`ConvBn`] and [`BnActConv`]: convolution with batch norm after it (residual blocks) or
  batch norm and [`Activation`] before it (dense blocks).
- [`BatchNorm2d`] and [`elu`]: batch norm (ReLU fused in) and ELU as single ops forward and
  backward, where candle's are a dozen whole-tensor passes each.
- [`Dropout`] and [`seeded_var_builder`]: dropout masks and initial weights from a seeded
  generator, because candle's CPU generator cannot be seeded.
- [`NinSkeleton`]: NIN's three blocks, pools and dropout, for NIN and CiC alike, with the
  authors' values of their knobs ([`nin_defaults`]).
- [`ClassMapModel`] and [`ModelConfig`]: the contracts every model of the zoo and its
  configuration keep, and [`INPUT_SIZE`], the side of the images they are built for.
*/
#![deny(missing_docs)]

mod activation;
mod batch_norm;
mod conv;
mod conv_bn;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod dropout;
mod elu;
mod error;
mod gap;
mod init;
mod mlpconv;
mod model;
mod pool;
mod rng;
mod skeleton;
pub mod weights;

pub use activation::Activation;
pub use batch_norm::{batch_norm_2d, BatchNorm2d, BN_MOMENTUM};
pub use conv::{
    conv2d, conv2d_banded, ChannelBand, ChannelBands, Conv2d, ConvOptions, ConvSpec,
    WINDOW_BAND_HEIGHT,
};
pub use conv_bn::{BnActConv, ConvBn};
pub use dropout::Dropout;
pub use elu::elu;
pub use error::{Error, Result};
pub use gap::global_avg_pool;
pub use init::{seeded_var_builder, WeightInit};
pub use mlpconv::{MlpConv, MlpConvConfig};
pub use model::{ClassMapModel, ModelConfig, ParamRole, INPUT_SIZE};
pub use pool::{pool2d, Pool2dConfig, PoolKind};
pub use rng::{derive_seed, seeded_rand, seeded_randn, seeded_rng, DropoutRng, SeededRng};
pub use skeleton::{nin_defaults, nin_stage_sides, NinSkeleton};
