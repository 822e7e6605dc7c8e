/*!
Deep residual Network in Network (DrNIN; Alaeddine & Jihene, "A Deep Residual Network in Network
for Image Classification", Computational Intelligence and Neuroscience, 2021) for 32×32 images,
**our instantiation**: the paper's full text was not available, so widths and the stage layout
follow the zoo's pinned reading of its abstract (`docs/models/drnin.md`).

Confirmed by the abstract: residual learning applied to a deep NIN (ELU activations, batch norm,
small 3×3 filters, dropout), with one hyper-parameter L, the number of residual mlpconv
("DrMLPconv") blocks, up to L = 5.

Our instantiation:
- **DrMLPconv block** (width c): conv 3×3 → BN → ELU → conv 1×1 → BN → ELU → conv 1×1 → BN,
  added to the shortcut (identity, or 1×1 conv + BN when the width changes), then ELU.
  Convolutions that batch norm follows have no bias.
- Three stages at 32×32, 16×16 and 8×8, width 192 each, the L blocks spread over them with the
  earlier stages taking the extras (L = 3: 1, 1, 1; L = 4: 2, 1, 1; L = 5: 2, 2, 1). There is no
  stem: the first block reads the image, so its shortcut is a 1×1 projection 3 → 192.
- After stages 1 and 2: max pool 3×3 stride 2 ceil mode, then dropout 0.5.
- Head: 1×1 convolution (with bias) → C class maps, no activation, then global average pooling.

Weight names (PyTorch state-dict keys), block j of stage s:
`stage{s}.{j}.conv1.weight` `[c, c_in, 3, 3]`, `stage{s}.{j}.bn1.{weight,bias,running_mean,running_var}`,
`stage{s}.{j}.conv2.weight` `[c, c, 1, 1]`, `….bn2.*`, `….conv3.weight` `[c, c, 1, 1]`, `….bn3.*`,
and for a projection shortcut `stage{s}.{j}.shortcut.conv.weight` `[c, c_in, 1, 1]`,
`stage{s}.{j}.shortcut.bn.*`; the head is `head.conv.weight` `[C, c, 1, 1]` and `head.conv.bias`.

```
use candle_core::{DType, Device, Tensor};
use nin_layers::{ClassMapModel, ModelConfig};
use nin_model_drnin::{Config, DrNin};

let cfg = Config::drnin_l3(10);
let varmap = candle_nn::VarMap::new();
let model = DrNin::new(&cfg, nin_layers::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
let maps = model.class_maps(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
assert_eq!(maps.dims(), &[1, 10, 8, 8]);
assert_eq!(cfg.param_count(), 896_266);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;
use nin_layers::{
    nin_stage_sides, pool2d, Activation, ClassMapModel, Conv2d, ConvBn, ConvSpec, Dropout,
    DropoutRng, ModelConfig, Pool2dConfig, PoolKind, WeightInit, BN_MOMENTUM,
};

/// The architecture's knobs. Presets: [`Config::drnin_l3`], [`Config::drnin_l4`],
/// [`Config::drnin_l5`], or any depth with [`Config::with_depth`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Number of classes `C` (maps of the head).
    pub num_classes: usize,
    /// Input channels (3 for RGB).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Width of the blocks of each stage (32×32, 16×16, 8×8).
    #[serde(default = "default_widths")]
    pub widths: [usize; 3],
    /// DrMLPconv blocks in each stage; their sum is the paper's L.
    #[serde(default = "default_blocks")]
    pub blocks: [usize; 3],
    /// Dropout probability after each of the first two pools.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// The nonlinearity inside and after every block (ELU with α = 1 in the paper).
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Initialisation of the convolution weights.
    #[serde(default = "default_init")]
    pub init: WeightInit,
    /// Batch-norm momentum, PyTorch's meaning and default (0.1).
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
}

fn default_in_channels() -> usize {
    3
}
fn default_widths() -> [usize; 3] {
    [192; 3]
}
fn default_blocks() -> [usize; 3] {
    Config::blocks_for_depth(3)
}
fn default_dropout() -> f64 {
    0.5
}
fn default_activation() -> Activation {
    Activation::Elu { alpha: 1.0 }
}
fn default_init() -> WeightInit {
    WeightInit::KaimingNormal
}
fn default_bn_momentum() -> f64 {
    BN_MOMENTUM
}

impl Config {
    /// L DrMLPconv blocks spread over the three stages, earlier stages taking the extras.
    pub fn with_depth(depth: usize, num_classes: usize) -> Self {
        Self {
            num_classes,
            in_channels: default_in_channels(),
            widths: default_widths(),
            blocks: Self::blocks_for_depth(depth),
            dropout: default_dropout(),
            activation: default_activation(),
            init: default_init(),
            bn_momentum: default_bn_momentum(),
        }
    }

    /// L = 3: one block per stage.
    pub fn drnin_l3(num_classes: usize) -> Self {
        Self::with_depth(3, num_classes)
    }

    /// L = 4: blocks 2, 1, 1.
    pub fn drnin_l4(num_classes: usize) -> Self {
        Self::with_depth(4, num_classes)
    }

    /// L = 5: blocks 2, 2, 1 (the deepest model of the paper).
    pub fn drnin_l5(num_classes: usize) -> Self {
        Self::with_depth(5, num_classes)
    }

    /// Blocks per stage for depth L: ⌊L/3⌋ each, the remainder to the earliest stages.
    pub fn blocks_for_depth(depth: usize) -> [usize; 3] {
        let (base, extra) = (depth / 3, depth % 3);
        [0, 1, 2].map(|s| base + usize::from(s < extra))
    }

    /// The paper's L: blocks over all stages.
    pub fn depth(&self) -> usize {
        self.blocks.iter().sum()
    }

    /// Every block as `(stage index, input channels, width)`, in forward order.
    pub fn block_specs(&self) -> Vec<BlockSpec> {
        let mut c_in = self.in_channels;
        let mut specs = Vec::with_capacity(self.depth());
        for (stage, (&n_blocks, &width)) in self.blocks.iter().zip(&self.widths).enumerate() {
            for _ in 0..n_blocks {
                specs.push(BlockSpec {
                    stage,
                    in_channels: c_in,
                    width,
                });
                c_in = width;
            }
        }
        specs
    }

    /// The head's 1×1 convolution, width of stage 3 → C, with bias.
    pub fn head_spec(&self) -> ConvSpec {
        ConvSpec::same(self.widths[2], self.num_classes, 1).with_bias()
    }

    fn validate(&self) -> nin_layers::Result<()> {
        let invalid = |field, problem: String| nin_layers::Error::InvalidConfig {
            layer: "drnin",
            field,
            problem,
        };
        if self.num_classes == 0 {
            return Err(invalid("num_classes", "must be at least 1, got 0".into()));
        }
        if self.in_channels == 0 {
            return Err(invalid("in_channels", "must be at least 1, got 0".into()));
        }
        if let Some(s) = self.widths.iter().position(|&w| w == 0) {
            return Err(invalid("widths", format!("stage {} has width 0", s + 1)));
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return Err(invalid(
                "bn_momentum",
                format!("must be in [0, 1], got {}", self.bn_momentum),
            ));
        }
        if let Some(s) = self.blocks.iter().position(|&n| n == 0) {
            return Err(invalid(
                "blocks",
                format!(
                    "stage {} has no block; every stage needs at least one",
                    s + 1
                ),
            ));
        }
        Ok(())
    }
}

impl ModelConfig for Config {
    type Model = DrNin;

    fn build(&self, vb: VarBuilder) -> nin_layers::Result<DrNin> {
        DrNin::new(self, vb)
    }

    /// 896,266 for `drnin_l3(10)`, 1,302,922 for `drnin_l4(10)`, 1,709,578 for `drnin_l5(10)`.
    fn param_count(&self) -> usize {
        let blocks: usize = self.block_specs().iter().map(BlockSpec::param_count).sum();
        blocks + self.head_spec().param_count()
    }

    /// The stages run at NIN's sides (32, 16, 8: the same pools).
    fn macs_per_image(&self) -> u64 {
        let sides = nin_stage_sides();
        let blocks: u64 = self
            .block_specs()
            .iter()
            .map(|b| b.macs(sides[b.stage]))
            .sum();
        blocks + self.head_spec().macs(sides[2], sides[2])
    }
}

/// One DrMLPconv block's place and widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    /// Stage index (0, 1, 2).
    pub stage: usize,
    /// Channels entering the block.
    pub in_channels: usize,
    /// Channels of every convolution of the block, and of its output.
    pub width: usize,
}

impl BlockSpec {
    /// The block's convolutions: 3×3, 1×1, 1×1, and the projection shortcut if the width
    /// changes.
    fn convs(&self) -> ([ConvSpec; 3], Option<ConvSpec>) {
        let (c_in, c) = (self.in_channels, self.width);
        let main = [
            ConvSpec::same(c_in, c, 3),
            ConvSpec::same(c, c, 1),
            ConvSpec::same(c, c, 1),
        ];
        (main, (c_in != c).then(|| ConvSpec::same(c_in, c, 1)))
    }

    /// Trainable parameters: `9·c_in·c + 2c² + 3·2c`, plus `c_in·c + 2c` for a projection.
    pub fn param_count(&self) -> usize {
        let (main, shortcut) = self.convs();
        main.iter().chain(&shortcut).map(ConvBn::param_count).sum()
    }

    /// Multiply-accumulates for an `size`×`size` input.
    pub fn macs(&self, size: usize) -> u64 {
        let (main, shortcut) = self.convs();
        main.iter()
            .chain(&shortcut)
            .map(|c| c.macs(size, size))
            .sum()
    }
}

/// DrNIN. Fields are named like their weight prefixes.
#[derive(Clone, Debug)]
pub struct DrNin {
    stages: [Vec<DrMlpConv>; 3],
    pool: Pool2dConfig,
    dropout: Dropout,
    head: Conv2d,
    dropout_rng: DropoutRng,
    config: Config,
}

impl DrNin {
    /// Builds (or loads, depending on `vb`) the model.
    pub fn new(cfg: &Config, vb: VarBuilder) -> nin_layers::Result<Self> {
        cfg.validate()?;
        let mut stages: [Vec<DrMlpConv>; 3] = Default::default();
        for spec in cfg.block_specs() {
            let blocks = &mut stages[spec.stage];
            let block_vb = vb.pp(format!("stage{}", spec.stage + 1)).pp(blocks.len());
            blocks.push(DrMlpConv::new(&spec, cfg, block_vb)?);
        }
        let dropout_rng = DropoutRng::new(0);
        Ok(Self {
            stages,
            pool: Pool2dConfig::nin(PoolKind::Max),
            dropout: Dropout::new(cfg.dropout, dropout_rng.clone())?,
            head: Conv2d::new(&cfg.head_spec(), cfg.init, vb.pp("head").pp("conv"))?,
            dropout_rng,
            config: cfg.clone(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl ClassMapModel for DrNin {
    fn class_maps(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (_, c, _, _) = xs.dims4()?;
        if c != self.config.in_channels {
            candle_core::bail!(
                "drnin: expected input [N, {}, H, W], got {:?}",
                self.config.in_channels,
                xs.dims()
            );
        }
        let mut xs = xs.clone();
        for (stage_idx, stage) in self.stages.iter().enumerate() {
            if stage_idx > 0 {
                // [N, c, s, s] -> [N, c, s/2, s/2] (ceil), then dropout.
                xs = self.dropout.forward_t(&pool2d(&xs, &self.pool)?, train)?;
            }
            for block in stage {
                xs = block.forward_t(&xs, train)?;
            }
        }
        self.head.forward(&xs)
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn head_prefix(&self) -> &str {
        "head.conv"
    }

    fn dropout_rng(&self) -> &DropoutRng {
        &self.dropout_rng
    }

    fn macs_per_image(&self) -> u64 {
        self.config.macs_per_image()
    }
}

/// One residual mlpconv block: three conv + BN units on the main path, identity or 1×1
/// projection on the shortcut, activation after the sum.
#[derive(Clone, Debug)]
struct DrMlpConv {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
    shortcut: Option<ConvBn>,
    activation: Activation,
}

impl DrMlpConv {
    fn new(spec: &BlockSpec, cfg: &Config, vb: VarBuilder) -> nin_layers::Result<Self> {
        let ([s1, s2, s3], shortcut) = spec.convs();
        let unit = |s: &ConvSpec, i: usize| {
            ConvBn::new(
                s,
                cfg.init,
                cfg.bn_momentum,
                vb.pp(format!("conv{i}")),
                vb.pp(format!("bn{i}")),
            )
        };
        Ok(Self {
            conv1: unit(&s1, 1)?,
            conv2: unit(&s2, 2)?,
            conv3: unit(&s3, 3)?,
            shortcut: shortcut
                .map(|s| {
                    let svb = vb.pp("shortcut");
                    ConvBn::new(&s, cfg.init, cfg.bn_momentum, svb.pp("conv"), svb.pp("bn"))
                })
                .transpose()?,
            activation: cfg.activation,
        })
    }
}

impl ModuleT for DrMlpConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let act = self.activation;
        let ys = self.conv1.forward_activated(xs, train, act)?;
        let ys = self.conv2.forward_activated(&ys, train, act)?;
        let ys = self.conv3.forward_t(&ys, train)?;
        let shortcut = match &self.shortcut {
            Some(projection) => projection.forward_t(xs, train)?,
            None => xs.clone(),
        };
        act.apply(&(ys + shortcut)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use nin_layers::{seeded_var_builder, ParamRole};

    /// The formula of the model card, written out: a block `c_in → c` has
    /// `9·c_in·c + 2·c² + 6c` parameters (three bias-free convolutions and three norms), a
    /// projection `c_in·c + 2c` more; the head `c·C + C`.
    fn formula(blocks: [usize; 3], num_classes: usize) -> usize {
        let c = 192;
        let block = |c_in: usize| 9 * c_in * c + 2 * c * c + 6 * c;
        let first = block(3) + 3 * c + 2 * c;
        let others = (blocks.iter().sum::<usize>() - 1) * block(c);
        first + others + c * num_classes + num_classes
    }

    #[test]
    fn presets_spread_depth_over_stages_and_count_parameters() {
        assert_eq!(Config::drnin_l3(10).blocks, [1, 1, 1]);
        assert_eq!(Config::drnin_l4(10).blocks, [2, 1, 1]);
        assert_eq!(Config::drnin_l5(10).blocks, [2, 2, 1]);
        for (cfg, want_10) in [
            (Config::drnin_l3 as fn(usize) -> Config, 896_266),
            (Config::drnin_l4, 1_302_922),
            (Config::drnin_l5, 1_709_578),
        ] {
            for c in [10, 100] {
                let cfg = cfg(c);
                assert_eq!(cfg.param_count(), formula(cfg.blocks, c), "{cfg:?}");
            }
            assert_eq!(cfg(10).param_count(), want_10);
        }
    }

    #[test]
    fn macs_follow_the_stage_sizes() {
        // Per block at s×s: s²·(9·c_in·c + 2c²) (+ s²·c_in·c for a projection); head 8²·c·C.
        let c = 192u64;
        let first = 1024 * (27 * c + 2 * c * c + 3 * c);
        let block = |s: u64| s * s * (9 * c * c + 2 * c * c);
        let head = 64 * c * 10;
        assert_eq!(
            Config::drnin_l3(10).macs_per_image(),
            first + block(16) + block(8) + head
        );
        assert_eq!(
            Config::drnin_l5(10).macs_per_image(),
            first + block(32) + 2 * block(16) + block(8) + head
        );
    }

    #[test]
    fn every_variable_is_named_and_classified_as_pytorch_would() {
        let varmap = VarMap::new();
        let cfg = Config::drnin_l4(10);
        let model = DrNin::new(
            &cfg,
            seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
        )
        .unwrap();
        assert_eq!(model.head_prefix(), "head.conv");
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["stage1.0.conv1.weight"].dims(), &[192, 3, 3, 3]);
        assert_eq!(
            data["stage1.0.shortcut.conv.weight"].dims(),
            &[192, 3, 1, 1]
        );
        assert_eq!(data["stage1.1.conv3.weight"].dims(), &[192, 192, 1, 1]);
        assert_eq!(data["stage3.0.bn2.running_var"].dims(), &[192]);
        assert_eq!(data["head.conv.weight"].dims(), &[10, 192, 1, 1]);
        assert!(!data.contains_key("stage1.1.shortcut.conv.weight"));
        assert!(!data.contains_key("stage1.0.conv1.bias"));
        let mut trainable = 0;
        for (name, var) in data.iter() {
            let role = ParamRole::of(name, var.rank());
            let is_bn = name.contains(".bn");
            match role {
                ParamRole::Norm | ParamRole::Buffer => assert!(is_bn, "{name}: {role:?}"),
                ParamRole::Weight | ParamRole::Bias => assert!(!is_bn, "{name}: {role:?}"),
            }
            if role != ParamRole::Buffer {
                trainable += var.elem_count();
            }
        }
        assert_eq!(trainable, cfg.param_count());
        // 4 blocks × 3 norms + 1 projection norm, 4 tensors each; 4 × 3 + 1 convs; head 2.
        assert_eq!(data.len(), 13 * 4 + 13 + 2);
    }

    #[test]
    fn config_round_trips_through_json_and_refuses_unknown_fields() {
        let cfg = Config::drnin_l5(100);
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
        let short: Config = serde_json::from_str(r#"{"num_classes": 10}"#).unwrap();
        assert_eq!(short, Config::drnin_l3(10));
        let err = serde_json::from_str::<Config>(r#"{"num_classes": 10, "depth": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("depth"), "{err}");
        let empty = Config {
            blocks: [1, 0, 1],
            ..Config::drnin_l3(10)
        };
        let err = DrNin::new(&empty, VarBuilder::zeros(DType::F32, &Device::Cpu))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stage 2 has no block"), "{err}");
    }
}
