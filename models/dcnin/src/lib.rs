/*!
Densely connected Network in Network (DcNIN; Kouka et al., International Journal of Computer
Applications 186(75), 2025) for 32×32 images, **our instantiation**: the paper's full text was
not available, so the unit, widths and stage layout follow the zoo's pinned reading of its
abstract (`docs/models/dcnin.md`).

Confirmed by the abstract: dense connectivity, as in DenseNet, between mlpconv units: each unit
reads the concatenation of its stage's input and every earlier unit's output.

Our instantiation, with growth rate g:
- **Dense mlpconv unit**: BN → ReLU → conv 3×3 → 2g → BN → ReLU → conv 1×1 → g; its output is
  concatenated to its input.
- Stem: conv 3×3 → 2g. Three dense stages at 32×32, 16×16 and 8×8. Between stages a transition:
  BN → ReLU → 1×1 conv to ⌊c/2⌋ channels → average pool 2×2 stride 2.
- Head: BN → ReLU → 1×1 convolution (with bias) → C class maps, then global average pooling.
- Only the head's convolution has a bias (every other one feeds a batch norm). Optional dropout
  after each unit (`dropout`, 0 by default and in the presets: not part of the instantiation).

Weight names (PyTorch state-dict keys), unit j of stage s reading c channels:
`stem.conv.weight` `[2g, 3, 3, 3]`; `stage{s}.{j}.bn1.{weight,bias,running_mean,running_var}` `[c]`,
`stage{s}.{j}.conv1.weight` `[2g, c, 3, 3]`, `stage{s}.{j}.bn2.*` `[2g]`,
`stage{s}.{j}.conv2.weight` `[g, 2g, 1, 1]`; `trans{t}.bn.*` `[c]`, `trans{t}.conv.weight`
`[⌊c/2⌋, c, 1, 1]` (t = 1, 2); `head.bn.*` `[c]`, `head.conv.weight` `[C, c, 1, 1]`,
`head.conv.bias` `[C]`.

```
use candle_core::{DType, Device, Tensor};
use nin_layers::{ClassMapModel, ModelConfig};
use nin_model_dcnin::{Config, DcNin};

let cfg = Config::dcnin_s(10);
let varmap = candle_nn::VarMap::new();
let model = DcNin::new(&cfg, nin_layers::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
let maps = model.class_maps(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
assert_eq!(maps.dims(), &[1, 10, 8, 8]);
assert_eq!(cfg.param_count(), 310_906);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;
use nin_layers::{
    pool2d, Activation, BnActConv, ClassMapModel, Conv2d, ConvSpec, Dropout, DropoutRng,
    ModelConfig, Pool2dConfig, PoolKind, WeightInit, BN_MOMENTUM, INPUT_SIZE,
};

/// The architecture's knobs. Presets: [`Config::dcnin_s`], [`Config::dcnin_m`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Number of classes `C` (maps of the head).
    pub num_classes: usize,
    /// Input channels (3 for RGB).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Growth rate g: channels each unit adds (its 3×3 convolution is 2g wide).
    #[serde(default = "default_growth")]
    pub growth: usize,
    /// Dense units in each stage (32×32, 16×16, 8×8).
    #[serde(default = "default_units")]
    pub units: [usize; 3],
    /// Dropout probability after each unit (0: none).
    #[serde(default)]
    pub dropout: f64,
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
fn default_growth() -> usize {
    12
}
fn default_units() -> [usize; 3] {
    [6; 3]
}
fn default_init() -> WeightInit {
    WeightInit::KaimingNormal
}
fn default_bn_momentum() -> f64 {
    BN_MOMENTUM
}

/// Spatial side of each stage: 32, 16, 8.
const STAGE_SIZES: [usize; 3] = [INPUT_SIZE, INPUT_SIZE / 2, INPUT_SIZE / 4];

impl Config {
    /// Small: g = 12, 6 units per stage.
    pub fn dcnin_s(num_classes: usize) -> Self {
        Self {
            num_classes,
            in_channels: default_in_channels(),
            growth: default_growth(),
            units: default_units(),
            dropout: 0.0,
            init: default_init(),
            bn_momentum: default_bn_momentum(),
        }
    }

    /// Medium: g = 24, 8 units per stage.
    pub fn dcnin_m(num_classes: usize) -> Self {
        Self {
            growth: 24,
            units: [8; 3],
            ..Self::dcnin_s(num_classes)
        }
    }

    /// Channels entering each stage and leaving it (before the transition).
    pub fn stage_channels(&self) -> [(usize, usize); 3] {
        let mut c_in = 2 * self.growth;
        [0, 1, 2].map(|s| {
            let c_out = c_in + self.units[s] * self.growth;
            let stage = (c_in, c_out);
            c_in = c_out / 2;
            stage
        })
    }

    /// The stem's 3×3 convolution, 3 → 2g.
    pub fn stem_spec(&self) -> ConvSpec {
        ConvSpec::same(self.in_channels, 2 * self.growth, 3)
    }

    /// The two convolutions of a unit reading `c` channels: 3×3 `c → 2g`, 1×1 `2g → g`.
    pub fn unit_specs(&self, c: usize) -> [ConvSpec; 2] {
        let g = self.growth;
        [ConvSpec::same(c, 2 * g, 3), ConvSpec::same(2 * g, g, 1)]
    }

    /// The transition after a stage of `c` output channels: 1×1 `c → ⌊c/2⌋`.
    pub fn transition_spec(&self, c: usize) -> ConvSpec {
        ConvSpec::same(c, c / 2, 1)
    }

    /// The head's 1×1 convolution, `c → C`, with bias.
    pub fn head_spec(&self) -> ConvSpec {
        ConvSpec::same(self.stage_channels()[2].1, self.num_classes, 1).with_bias()
    }

    /// Every pre-activation unit of the model with the side it runs at, in forward order
    /// (stem excluded: it has no norm).
    fn bn_act_convs(&self) -> Vec<(ConvSpec, usize)> {
        let mut out = Vec::new();
        for (s, (c_in, c_out)) in self.stage_channels().into_iter().enumerate() {
            let size = STAGE_SIZES[s];
            for j in 0..self.units[s] {
                for spec in self.unit_specs(c_in + j * self.growth) {
                    out.push((spec, size));
                }
            }
            if s < 2 {
                out.push((self.transition_spec(c_out), size));
            }
        }
        out.push((self.head_spec(), STAGE_SIZES[2]));
        out
    }

    fn validate(&self) -> nin_layers::Result<()> {
        let invalid = |field, problem: String| nin_layers::Error::InvalidConfig {
            layer: "dcnin",
            field,
            problem,
        };
        for (field, value) in [
            ("num_classes", self.num_classes),
            ("in_channels", self.in_channels),
            ("growth", self.growth),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1, got 0".into()));
            }
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return Err(invalid(
                "bn_momentum",
                format!("must be in [0, 1], got {}", self.bn_momentum),
            ));
        }
        if let Some(s) = self.units.iter().position(|&n| n == 0) {
            return Err(invalid(
                "units",
                format!(
                    "stage {} has no unit; every stage needs at least one",
                    s + 1
                ),
            ));
        }
        Ok(())
    }
}

impl ModelConfig for Config {
    type Model = DcNin;

    fn build(&self, vb: VarBuilder) -> nin_layers::Result<DcNin> {
        DcNin::new(self, vb)
    }

    /// 310,906 for `dcnin_s(10)`, 2,113,882 for `dcnin_m(10)`.
    fn param_count(&self) -> usize {
        let units: usize = self
            .bn_act_convs()
            .iter()
            .map(|(spec, _)| BnActConv::param_count(spec))
            .sum();
        self.stem_spec().param_count() + units
    }

    fn macs_per_image(&self) -> u64 {
        let units: u64 = self
            .bn_act_convs()
            .iter()
            .map(|(spec, size)| spec.macs(*size, *size))
            .sum();
        self.stem_spec().macs(INPUT_SIZE, INPUT_SIZE) + units
    }
}

/// DcNIN. Fields are named like their weight prefixes.
#[derive(Clone, Debug)]
pub struct DcNin {
    stem: Conv2d,
    stages: [Vec<DenseUnit>; 3],
    transitions: [BnActConv; 2],
    pool: Pool2dConfig,
    head: BnActConv,
    dropout: Dropout,
    dropout_rng: DropoutRng,
    config: Config,
}

impl DcNin {
    /// Builds (or loads, depending on `vb`) the model.
    pub fn new(cfg: &Config, vb: VarBuilder) -> nin_layers::Result<Self> {
        cfg.validate()?;
        let relu = Activation::Relu;
        let stem = Conv2d::new(&cfg.stem_spec(), cfg.init, vb.pp("stem").pp("conv"))?;
        let channels = cfg.stage_channels();
        let mut stages: [Vec<DenseUnit>; 3] = Default::default();
        for (s, units) in stages.iter_mut().enumerate() {
            let stage_vb = vb.pp(format!("stage{}", s + 1));
            for j in 0..cfg.units[s] {
                let c = channels[s].0 + j * cfg.growth;
                units.push(DenseUnit::new(cfg, c, stage_vb.pp(j))?);
            }
        }
        let transition = |t: usize| {
            let tvb = vb.pp(format!("trans{}", t + 1));
            let spec = cfg.transition_spec(channels[t].1);
            BnActConv::new(
                &spec,
                relu,
                cfg.init,
                cfg.bn_momentum,
                tvb.pp("bn"),
                tvb.pp("conv"),
            )
        };
        let transitions = [transition(0)?, transition(1)?];
        let hvb = vb.pp("head");
        let head = BnActConv::new(
            &cfg.head_spec(),
            relu,
            cfg.init,
            cfg.bn_momentum,
            hvb.pp("bn"),
            hvb.pp("conv"),
        )?;
        let dropout_rng = DropoutRng::new(0);
        Ok(Self {
            stem,
            stages,
            transitions,
            pool: Pool2dConfig {
                kind: PoolKind::Avg,
                kernel: 2,
                stride: 2,
                padding: 0,
                ceil_mode: false,
                count_include_pad: true,
            },
            head,
            dropout: Dropout::new(cfg.dropout, dropout_rng.clone())?,
            dropout_rng,
            config: cfg.clone(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl ClassMapModel for DcNin {
    fn class_maps(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (_, c, _, _) = xs.dims4()?;
        if c != self.config.in_channels {
            candle_core::bail!(
                "dcnin: expected input [N, {}, H, W], got {:?}",
                self.config.in_channels,
                xs.dims()
            );
        }
        // [N, 3, 32, 32] -> [N, 2g, 32, 32]
        let mut xs = candle_core::Module::forward(&self.stem, xs)?;
        for (s, stage) in self.stages.iter().enumerate() {
            let mut features = vec![xs];
            for unit in stage {
                let input = Tensor::cat(&features, 1)?;
                let ys = unit.forward_t(&input, train)?;
                features.push(self.dropout.forward_t(&ys, train)?);
            }
            // [N, c_in + units·g, s, s]
            xs = Tensor::cat(&features, 1)?;
            if let Some(transition) = self.transitions.get(s) {
                // [N, c, s, s] -> [N, ⌊c/2⌋, s/2, s/2]
                xs = pool2d(&transition.forward_t(&xs, train)?, &self.pool)?;
            }
        }
        self.head.forward_t(&xs, train)
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

/// One dense mlpconv unit: BN → ReLU → 3×3 → 2g, BN → ReLU → 1×1 → g.
#[derive(Clone, Debug)]
struct DenseUnit {
    conv1: BnActConv,
    conv2: BnActConv,
}

impl DenseUnit {
    fn new(cfg: &Config, c: usize, vb: VarBuilder) -> nin_layers::Result<Self> {
        let [s1, s2] = cfg.unit_specs(c);
        let unit = |s: &ConvSpec, i: usize| {
            BnActConv::new(
                s,
                Activation::Relu,
                cfg.init,
                cfg.bn_momentum,
                vb.pp(format!("bn{i}")),
                vb.pp(format!("conv{i}")),
            )
        };
        Ok(Self {
            conv1: unit(&s1, 1)?,
            conv2: unit(&s2, 2)?,
        })
    }
}

impl ModuleT for DenseUnit {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.conv2
            .forward_t(&self.conv1.forward_t(xs, train)?, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use nin_layers::{seeded_var_builder, ParamRole};

    /// The formula of the model card, written out: stem `27·2g`; a unit reading c channels
    /// `2c + 18·c·g + 4g + 2g²`; a transition `2c + c·⌊c/2⌋`; the head `2c + c·C + C`.
    fn formula(g: usize, n: usize, num_classes: usize) -> usize {
        let unit = |c: usize| 2 * c + 18 * c * g + 4 * g + 2 * g * g;
        let transition = |c: usize| 2 * c + c * (c / 2);
        let mut total = 27 * 2 * g;
        let mut c = 2 * g;
        for stage in 0..3 {
            total += (0..n).map(|j| unit(c + j * g)).sum::<usize>();
            c += n * g;
            if stage < 2 {
                total += transition(c);
                c /= 2;
            }
        }
        total + 2 * c + c * num_classes + num_classes
    }

    #[test]
    fn presets_have_the_pinned_widths_and_count_parameters() {
        // dcnin_s: 24 → 96 | 48 → 120 | 60 → 132; dcnin_m: 48 → 240 | 120 → 312 | 156 → 348.
        assert_eq!(
            Config::dcnin_s(10).stage_channels(),
            [(24, 96), (48, 120), (60, 132)]
        );
        assert_eq!(
            Config::dcnin_m(10).stage_channels(),
            [(48, 240), (120, 312), (156, 348)]
        );
        for c in [10, 100] {
            assert_eq!(Config::dcnin_s(c).param_count(), formula(12, 6, c));
            assert_eq!(Config::dcnin_m(c).param_count(), formula(24, 8, c));
        }
        assert_eq!(Config::dcnin_s(10).param_count(), 310_906);
        assert_eq!(Config::dcnin_m(10).param_count(), 2_113_882);
    }

    #[test]
    fn macs_follow_the_stage_sizes() {
        let cfg = Config::dcnin_s(10);
        let g = 12u64;
        let unit = |c: u64| 18 * c * g + 2 * g * g;
        let stage = |c0: u64| (0..6).map(|j| unit(c0 + j * g)).sum::<u64>();
        let want = 1024 * 27 * 2 * g
            + 1024 * (stage(24) + 96 * 48)
            + 256 * (stage(48) + 120 * 60)
            + 64 * (stage(60) + 132 * 10);
        assert_eq!(cfg.macs_per_image(), want);
    }

    #[test]
    fn every_variable_is_named_and_classified_as_pytorch_would() {
        let varmap = VarMap::new();
        let cfg = Config::dcnin_s(10);
        let model = DcNin::new(
            &cfg,
            seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
        )
        .unwrap();
        assert_eq!(model.head_prefix(), "head.conv");
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["stem.conv.weight"].dims(), &[24, 3, 3, 3]);
        assert_eq!(data["stage1.0.bn1.running_mean"].dims(), &[24]);
        assert_eq!(data["stage1.5.conv1.weight"].dims(), &[24, 84, 3, 3]);
        assert_eq!(data["stage1.5.conv2.weight"].dims(), &[12, 24, 1, 1]);
        assert_eq!(data["trans1.conv.weight"].dims(), &[48, 96, 1, 1]);
        assert_eq!(data["trans2.bn.weight"].dims(), &[120]);
        assert_eq!(data["head.bn.bias"].dims(), &[132]);
        assert_eq!(data["head.conv.bias"].dims(), &[10]);
        assert!(!data.contains_key("stem.conv.bias"));
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
        // Stem 1; 18 units × (2 convs + 2 norms × 4); 2 transitions × 5; head 6.
        assert_eq!(data.len(), 1 + 18 * 10 + 2 * 5 + 6);
    }

    #[test]
    fn config_round_trips_through_json_and_refuses_unknown_fields() {
        let cfg = Config::dcnin_m(100);
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
        let short: Config = serde_json::from_str(r#"{"num_classes": 10}"#).unwrap();
        assert_eq!(short, Config::dcnin_s(10));
        let err = serde_json::from_str::<Config>(r#"{"num_classes": 10, "growth_rate": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("growth_rate"), "{err}");
        let bad = Config {
            growth: 0,
            ..Config::dcnin_s(10)
        };
        let err = DcNin::new(&bad, VarBuilder::zeros(DType::F32, &Device::Cpu))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`growth`"), "{err}");
    }
}
