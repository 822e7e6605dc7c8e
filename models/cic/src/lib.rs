/*!
Convolution in Convolution (Pang, Sun, Jiang, Li, "Convolution in Convolution for Network in
Network", arXiv:1603.06759) for 32×32 images: NIN whose mlpconv layers are made sparse.

The paper replaces the dense 1×1 layers of NIN's mlpconv blocks by sparse ones: each output
channel reads a window of consecutive input channels only, with its own weights, shared over
space ([`ChannelWindowConv`]); its "channel-spatial" form makes the k×k convolutions sparse the
same way. Only the paper's abstract was available to us, so the windows and widths are **our
instantiation** (pinned in the zoo's `models.md`), not the authors' exact networks:

- the NIN skeleton (preset `nin` of `nin-model-nin`: widths, kernels, ceil-mode pooling, dropout
  0.5, ReLU after every convolution, N(0, 0.05²) weights (a channel-window layer's std scaled by
  √(in/w), so that it passes on a dense layer's variance), no batch norm);
- [`Config::cic_1d`]: every 1×1 layer except the class layer is a channel-window convolution with
  window w = 48; [`Config::cic_3d`]: also the k×k convolutions of mlpconv2 and mlpconv3;
- output channel j reads input channels `[s_j, s_j + w)`, `s_j = round(j·(in − w)/(out − 1))`
  ([`window_starts`]); the first convolution (3 inputs) and the class layer stay dense.

Weight names are NIN's PyTorch state-dict keys (`mlpconv1.conv.weight`, `mlpconv1.mlp.0.weight`,
…, `mlpconv3.mlp.1.weight`, each with its `.bias`; batch norm under `mlpconvN.bn.{j}`); a
channel-window layer stores its weight compactly, `[out, w, k, k]`, e.g.
`mlpconv1.mlp.0.weight` `[160, 48, 1, 1]`.

```
use candle_core::{DType, Device, Tensor};
use nin_layers::{ClassMapModel, ModelConfig};
use nin_model_cic::{Cic, Config};

let cfg = Config::cic_1d(10);
let varmap = candle_nn::VarMap::new();
let model = Cic::new(&cfg, nin_layers::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
let logits = model.forward_t(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
assert_eq!(logits.dims(), &[1, 10]);
assert_eq!(cfg.param_count(), 850_250);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod block;
mod window;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use nin_layers::{
    nin_defaults, nin_stage_sides, Activation, ClassMapModel, DropoutRng, MlpConvConfig,
    ModelConfig, NinSkeleton, PoolKind, WeightInit,
};

pub use block::{CicBlock, CicBlockConfig, LayerKind};
pub use window::{window_starts, ChannelWindowConfig, ChannelWindowConv};

/// The architecture's knobs. Presets: [`Config::cic_1d`], [`Config::cic_3d`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Number of classes `C` (maps of the last layer).
    pub num_classes: usize,
    /// Input channels (3 for RGB).
    #[serde(default = "nin_defaults::in_channels")]
    pub in_channels: usize,
    /// Widths of mlpconv1: 5×5 convolution, then two 1×1 layers.
    #[serde(default = "nin_defaults::mlpconv1")]
    pub mlpconv1: [usize; 3],
    /// Widths of mlpconv2: 5×5 convolution, then two 1×1 layers.
    #[serde(default = "nin_defaults::mlpconv2")]
    pub mlpconv2: [usize; 3],
    /// Widths of mlpconv3's 3×3 convolution and first 1×1 layer (the class layer follows).
    #[serde(default = "nin_defaults::mlpconv3")]
    pub mlpconv3: [usize; 2],
    /// Input channels each output channel of a channel-window layer reads.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Which layers are channel-window convolutions.
    #[serde(default = "default_sparsity")]
    pub sparsity: Sparsity,
    /// The second pooling: average as in NIN's Caffe model, or max.
    #[serde(default = "nin_defaults::pool2")]
    pub pool2: PoolKind,
    /// Dropout probability after each of the first two pools.
    #[serde(default = "nin_defaults::dropout")]
    pub dropout: f64,
    /// Batch norm after every convolution, before its ReLU.
    #[serde(default)]
    pub batch_norm: bool,
    /// Initialisation of the convolution weights. Fan-in schemes see a channel-window layer's
    /// compact shape; a fixed-std `normal` is scaled by `√(in/w)` on those layers.
    #[serde(default = "nin_defaults::init")]
    pub init: WeightInit,
}

/// Which convolutions of the NIN skeleton are channel-window ones. The first convolution and the
/// class layer are always dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sparsity {
    /// The 1×1 layers (preset `cic_1d`).
    Channel,
    /// The 1×1 layers and the k×k convolutions of mlpconv2 and mlpconv3 (preset `cic_3d`).
    ChannelSpatial,
}

fn default_window() -> usize {
    48
}
fn default_sparsity() -> Sparsity {
    Sparsity::Channel
}

impl Config {
    /// The NIN skeleton with channel-window 1×1 layers (w = 48), the class layer excepted.
    pub fn cic_1d(num_classes: usize) -> Self {
        Self {
            num_classes,
            in_channels: nin_defaults::in_channels(),
            mlpconv1: nin_defaults::mlpconv1(),
            mlpconv2: nin_defaults::mlpconv2(),
            mlpconv3: nin_defaults::mlpconv3(),
            window: default_window(),
            sparsity: Sparsity::Channel,
            pool2: nin_defaults::pool2(),
            dropout: nin_defaults::dropout(),
            batch_norm: false,
            init: nin_defaults::init(),
        }
    }

    /// As [`Config::cic_1d`], and the k×k convolutions of mlpconv2 and mlpconv3 are
    /// channel-window too (w = 48).
    pub fn cic_3d(num_classes: usize) -> Self {
        Self {
            sparsity: Sparsity::ChannelSpatial,
            ..Self::cic_1d(num_classes)
        }
    }

    /// The three blocks' configurations.
    pub fn blocks(&self) -> [CicBlockConfig; 3] {
        let w = Some(self.window);
        let spatial = match self.sparsity {
            Sparsity::Channel => None,
            Sparsity::ChannelSpatial => w,
        };
        let block = |in_channels, kernel, padding, widths: &[usize], windows| CicBlockConfig {
            mlpconv: MlpConvConfig {
                batch_norm: self.batch_norm,
                ..MlpConvConfig::new(
                    in_channels,
                    kernel,
                    padding,
                    widths,
                    Activation::Relu,
                    self.init,
                )
            },
            windows,
        };
        let [a, b] = self.mlpconv3;
        [
            block(self.in_channels, 5, 2, &self.mlpconv1, vec![None, w, w]),
            block(self.mlpconv1[2], 5, 2, &self.mlpconv2, vec![spatial, w, w]),
            block(
                self.mlpconv2[2],
                3,
                1,
                &[a, b, self.num_classes],
                vec![spatial, w, None],
            ),
        ]
    }

    /// Checks that the model can be built (e.g. that the window fits every layer it applies to).
    pub fn validate(&self) -> nin_layers::Result<()> {
        if self.num_classes == 0 {
            return Err(nin_layers::Error::InvalidConfig {
                layer: "cic",
                field: "num_classes",
                problem: "must be at least 1, got 0".into(),
            });
        }
        self.blocks().iter().try_for_each(CicBlockConfig::validate)
    }
}

impl ModelConfig for Config {
    type Model = Cic;

    fn build(&self, vb: VarBuilder) -> nin_layers::Result<Cic> {
        Cic::new(self, vb)
    }

    /// 850,250 for `cic_1d(10)`, 371,018 for `cic_3d(10)`.
    fn param_count(&self) -> usize {
        self.blocks().iter().map(CicBlockConfig::param_count).sum()
    }

    /// Counting only existing connections: 172.0 M for `cic_1d(10)`, 97.1 M for `cic_3d(10)`.
    fn macs_per_image(&self) -> u64 {
        let blocks = self.blocks().into_iter().zip(nin_stage_sides());
        blocks.map(|(block, side)| block.macs(side, side)).sum()
    }
}

/// Convolution in Convolution: the NIN skeleton over CiC blocks, whose weights
/// are named `mlpconv1..3`.
#[derive(Clone, Debug)]
pub struct Cic {
    skeleton: NinSkeleton<CicBlock>,
    config: Config,
}

impl Cic {
    /// Builds (or loads, depending on `vb`) the model.
    pub fn new(cfg: &Config, vb: VarBuilder) -> nin_layers::Result<Self> {
        cfg.validate()?;
        let blocks = cfg.blocks();
        let skeleton = NinSkeleton::new(
            "cic",
            cfg.in_channels,
            cfg.pool2,
            cfg.dropout,
            vb,
            |i, vb| CicBlock::new(&blocks[i], vb),
        )?;
        Ok(Self {
            skeleton,
            config: cfg.clone(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl ClassMapModel for Cic {
    fn class_maps(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.skeleton.class_maps(xs, train)
    }

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn head_prefix(&self) -> &str {
        "mlpconv3.mlp.1"
    }

    fn dropout_rng(&self) -> &DropoutRng {
        self.skeleton.dropout_rng()
    }

    fn macs_per_image(&self) -> u64 {
        self.config.macs_per_image()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use nin_layers::seeded_var_builder;

    /// Parameters of the NIN skeleton with window `w` and `C` classes: dense layers
    /// `out·in·k² + out`, channel-window layers `out·w·k² + out`.
    fn analytic_params(c: usize, w: usize, spatial: bool) -> usize {
        let dense = |o: usize, i: usize, k: usize| o * i * k * k + o;
        let window = |o: usize, k: usize| o * w * k * k + o;
        let conv2 = if spatial {
            window(192, 5)
        } else {
            dense(192, 96, 5)
        };
        let conv3 = if spatial {
            window(192, 3)
        } else {
            dense(192, 192, 3)
        };
        dense(192, 3, 5)
            + window(160, 1)
            + window(96, 1)
            + conv2
            + window(192, 1)
            + window(192, 1)
            + conv3
            + window(192, 1)
            + dense(c, 192, 1)
    }

    #[test]
    fn parameter_counts_follow_the_formula() {
        for c in [10, 100] {
            assert_eq!(
                Config::cic_1d(c).param_count(),
                analytic_params(c, 48, false)
            );
            assert_eq!(
                Config::cic_3d(c).param_count(),
                analytic_params(c, 48, true)
            );
        }
        assert_eq!(Config::cic_1d(10).param_count(), 850_250);
        assert_eq!(Config::cic_1d(100).param_count(), 867_620);
        assert_eq!(Config::cic_3d(10).param_count(), 371_018);
        assert_eq!(Config::cic_3d(100).param_count(), 388_388);
    }

    #[test]
    fn macs_count_only_existing_connections() {
        // Per pixel: 32×32 (75·192 + 48·160 + 48·96), 16×16 (25·96·192 + 2·48·192),
        // 8×8 (9·192·192 + 48·192 + 192·C); cic_3d: 25·48·192 and 9·48·192 for the k×k layers.
        let one_d = |c: u64| 1024 * 26_688 + 256 * 479_232 + 64 * (340_992 + 192 * c);
        let three_d = |c: u64| 1024 * 26_688 + 256 * 248_832 + 64 * (92_160 + 192 * c);
        for c in [10, 100] {
            assert_eq!(Config::cic_1d(c as usize).macs_per_image(), one_d(c));
            assert_eq!(Config::cic_3d(c as usize).macs_per_image(), three_d(c));
        }
        assert_eq!(one_d(10), 171_958_272);
        assert_eq!(three_d(10), 97_050_624);
    }

    #[test]
    fn presets_give_class_maps_and_logits_for_10_and_100_classes() {
        let xs = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        for cfg in [Config::cic_1d(10), Config::cic_3d(100)] {
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
            let model = Cic::new(&cfg, vb).unwrap();
            let c = cfg.num_classes;
            assert_eq!(model.class_maps(&xs, false).unwrap().dims(), &[2, c, 8, 8]);
            assert_eq!(model.forward_t(&xs, true).unwrap().dims(), &[2, c]);
            let data = varmap.data().lock().unwrap();
            let trainable: usize = data.values().map(|v| v.elem_count()).sum();
            assert_eq!(trainable, cfg.param_count());
            assert_eq!(data.len(), 18);
            assert_eq!(data["mlpconv1.conv.weight"].dims(), &[192, 3, 5, 5]);
            assert_eq!(data["mlpconv1.mlp.0.weight"].dims(), &[160, 48, 1, 1]);
            assert_eq!(data["mlpconv1.mlp.1.weight"].dims(), &[96, 48, 1, 1]);
            assert_eq!(data["mlpconv3.mlp.0.weight"].dims(), &[192, 48, 1, 1]);
            assert_eq!(data["mlpconv3.mlp.1.weight"].dims(), &[c, 192, 1, 1]);
            let (conv2, conv3) = match cfg.sparsity {
                Sparsity::Channel => ([192, 96, 5, 5], [192, 192, 3, 3]),
                Sparsity::ChannelSpatial => ([192, 48, 5, 5], [192, 48, 3, 3]),
            };
            assert_eq!(data["mlpconv2.conv.weight"].dims(), &conv2);
            assert_eq!(data["mlpconv3.conv.weight"].dims(), &conv3);
        }
    }

    #[test]
    fn config_round_trips_through_json_and_defaults_fill_gaps() {
        let cfg = Config {
            window: 32,
            ..Config::cic_3d(100)
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""sparsity":"channel_spatial""#), "{json}");
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
        let short: Config = serde_json::from_str(r#"{"num_classes": 10}"#).unwrap();
        assert_eq!(short, Config::cic_1d(10));
        let err = serde_json::from_str::<Config>(r#"{"num_classes": 10, "windwo": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("windwo"), "{err}");
    }

    /// Neither preset has batch norm; with the option on, its statistics move only in training.
    #[test]
    fn batch_norm_statistics_change_only_in_training_mode() {
        let cfg = Config {
            mlpconv1: [8, 8, 8],
            mlpconv2: [8, 8, 8],
            mlpconv3: [8, 8],
            window: 4,
            batch_norm: true,
            dropout: 0.0,
            ..Config::cic_3d(10)
        };
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let model = Cic::new(&cfg, vb).unwrap();
        let stats = || {
            let data = varmap.data().lock().unwrap();
            let mut keys: Vec<_> = data.keys().filter(|k| k.contains("running_")).collect();
            keys.sort();
            assert_eq!(keys.len(), 18);
            keys.iter()
                .map(|k| data[*k].flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .collect::<Vec<_>>()
        };
        let xs = nin_layers::seeded_randn((4, 3, 32, 32), 1).unwrap();
        let before = stats();
        model.forward_t(&xs, false).unwrap();
        assert_eq!(stats(), before);
        model.forward_t(&xs, true).unwrap();
        let after = stats();
        assert!(before.iter().zip(&after).all(|(b, a)| b != a));
    }

    #[test]
    fn a_window_wider_than_a_layer_input_is_refused() {
        let cfg = Config {
            mlpconv1: [192, 160, 32],
            ..Config::cic_3d(10)
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("`window`") && err.contains("(32), got 48"),
            "{err}"
        );
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        assert!(Cic::new(&cfg, vb).is_err());
    }
}
