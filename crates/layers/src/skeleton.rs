//! The NIN skeleton that NIN and CiC share: three blocks, a max pool after the first and a
//! max or average pool after the second (3×3, stride 2, ceil mode), dropout after each pool, and
//! the third block's output as the class maps. A family supplies the blocks (plain mlpconv, or
//! CiC's channel-window ones); the wiring is written once here.

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;

use crate::dropout::Dropout;
use crate::error::Result;
use crate::pool::{pool2d, Pool2dConfig, PoolKind};
use crate::rng::DropoutRng;

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
