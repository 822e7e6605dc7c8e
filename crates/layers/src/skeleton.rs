//! The NIN skeleton that NIN and CiC share: three blocks, a max pool after the first and a
//! max or average pool after the second (3×3, stride 2, ceil mode), dropout after each pool, and
//! the third block's output as the class maps. A family supplies the blocks (plain mlpconv, or
//! CiC's channel-window ones); the wiring is written once here, and so are the defaults of the
//! authors' model that both families' configurations start from ([`nin_defaults`]).

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;

use crate::dropout::Dropout;
use crate::error::Result;
use crate::model::INPUT_SIZE;
use crate::pool::{pool2d, Pool2dConfig, PoolKind};
use crate::rng::DropoutRng;

/// The values of the authors' CIFAR model (Caffe model zoo) for the knobs every NIN-shaped
/// family has: the serde defaults and preset values of NIN's and CiC's configurations.
pub mod nin_defaults {
    use crate::init::WeightInit;
    use crate::pool::PoolKind;

    /// Input channels: RGB.
    pub fn in_channels() -> usize {
        3
    }

    /// Widths of mlpconv1: 5×5 convolution, then two 1×1 layers.
    pub fn mlpconv1() -> [usize; 3] {
        [192, 160, 96]
    }

    /// Widths of mlpconv2: 5×5 convolution, then two 1×1 layers.
    pub fn mlpconv2() -> [usize; 3] {
        [192, 192, 192]
    }

    /// Widths of mlpconv3's 3×3 convolution and first 1×1 layer (the class layer follows).
    pub fn mlpconv3() -> [usize; 2] {
        [192, 192]
    }

    /// The second pooling: average in the Caffe model.
    pub fn pool2() -> PoolKind {
        PoolKind::Avg
    }

    /// Dropout probability after each of the first two pools.
    pub fn dropout() -> f64 {
        0.5
    }

    /// N(0, 0.05²) convolution weights.
    pub fn init() -> WeightInit {
        WeightInit::Normal { std: 0.05 }
    }
}

/// Sides of the three blocks' inputs for an [`INPUT_SIZE`] image: 32, then 16 and 8 after each
/// 3×3 stride-2 ceil-mode pool.
pub fn nin_stage_sides() -> [usize; 3] {
    let pool = Pool2dConfig::nin(PoolKind::Max);
    let s2 = pool.output_size(INPUT_SIZE).unwrap_or(1);
    let s3 = pool.output_size(s2).unwrap_or(1);
    [INPUT_SIZE, s2, s3]
}

/// The blocks `mlpconv1..3` of a NIN-shaped model, with its pools and dropout.
#[derive(Clone, Debug)]
pub struct NinSkeleton<B> {
    blocks: [B; 3],
    pool1: Pool2dConfig,
    pool2: Pool2dConfig,
    dropout: Dropout,
    dropout_rng: DropoutRng,
    in_channels: usize,
    name: &'static str,
}

impl<B: ModuleT> NinSkeleton<B> {
    /// Builds block `i` (0, 1, 2) with `build(i, vb.pp("mlpconv{i + 1}"))`, the second pool of
    /// `pool2`'s kind, and dropout `dropout`; `name` (e.g. `nin`) and `in_channels` make the
    /// error for a wrong input.
    pub fn new(
        name: &'static str,
        in_channels: usize,
        pool2: PoolKind,
        dropout: f64,
        vb: VarBuilder,
        mut build: impl FnMut(usize, VarBuilder) -> Result<B>,
    ) -> Result<Self> {
        let dropout_rng = DropoutRng::new(0);
        Ok(Self {
            blocks: [
                build(0, vb.pp("mlpconv1"))?,
                build(1, vb.pp("mlpconv2"))?,
                build(2, vb.pp("mlpconv3"))?,
            ],
            pool1: Pool2dConfig::nin(PoolKind::Max),
            pool2: Pool2dConfig::nin(pool2),
            dropout: Dropout::new(dropout, dropout_rng.clone())?,
            dropout_rng,
            in_channels,
            name,
        })
    }

    /// The class maps `[N, C, h, w]` of images `xs` `[N, in_channels, H, W]`.
    pub fn class_maps(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (_, c, _, _) = xs.dims4()?;
        if c != self.in_channels {
            candle_core::bail!(
                "{}: expected input [N, {}, H, W], got {:?}",
                self.name,
                self.in_channels,
                xs.dims()
            );
        }
        let [b1, b2, b3] = &self.blocks;
        let xs = b1.forward_t(xs, train)?;
        let xs = self.dropout.forward_t(&pool2d(&xs, &self.pool1)?, train)?;
        let xs = b2.forward_t(&xs, train)?;
        let xs = self.dropout.forward_t(&pool2d(&xs, &self.pool2)?, train)?;
        b3.forward_t(&xs, train)
    }

    /// The generator of the dropout masks.
    pub fn dropout_rng(&self) -> &DropoutRng {
        &self.dropout_rng
    }
}
