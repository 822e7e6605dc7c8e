/*!
Network in Network (Lin, Chen, Yan, "Network In Network", ICLR 2014, arXiv:1312.4400) for
32×32 images, as the authors' CIFAR-10 Caffe model defines it.

Three mlpconv blocks (a k×k convolution and two 1×1 convolutions, each followed by ReLU, the
last one included), 3×3 stride-2 ceil-mode pooling with dropout 0.5 after the first two blocks,
and global average pooling over one map per class: no fully connected layer.

Exact to the authors' files: layer widths, kernels, padding, pooling (max, then average that
divides overhanging windows by their real cells), dropout, ReLU on the class maps, N(0, 0.05²)
weights and zero biases. Preset [`Config::nin_bn`] adds batch norm after every convolution
(a common modern variant, not in the paper), and [`Config::nin_bn_s`] is that variant at half
width, a quarter of the cost, which trains to a useful model in a quarter of an hour on a CPU.

Weight names are PyTorch's state-dict keys: `mlpconv1.conv.weight` `[192, 3, 5, 5]`,
`mlpconv1.mlp.0.weight` `[160, 192, 1, 1]`, …, `mlpconv3.mlp.1.weight` `[C, 192, 1, 1]`, each with
its `.bias`; batch norm under `mlpconvN.bn.{j}` (j = 0 for the k×k convolution).

```
use candle_core::{DType, Device, Tensor};
use nin_layers::{ClassMapModel, ModelConfig};
use nin_model_nin::{Config, Nin};

let cfg = Config::nin(10);
let varmap = candle_nn::VarMap::new();
let model = Nin::new(&cfg, nin_layers::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
let logits = model.forward_t(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?, false)?;
assert_eq!(logits.dims(), &[1, 10]);
assert_eq!(cfg.param_count(), 966_986);
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use candle_core::Tensor;
use candle_nn::VarBuilder;
use nin_layers::{
    nin_defaults, nin_stage_sides, Activation, ClassMapModel, DropoutRng, MlpConv, MlpConvConfig,
    ModelConfig, NinSkeleton, PoolKind, WeightInit,
};

/// The architecture's knobs. Presets: [`Config::nin`], [`Config::nin_bn`], [`Config::nin_bn_s`].
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
    /// The second pooling: average in the Caffe model, max in the cuda-convnet files.
    #[serde(default = "nin_defaults::pool2")]
    pub pool2: PoolKind,
    /// Dropout probability after each of the first two pools.
    #[serde(default = "nin_defaults::dropout")]
    pub dropout: f64,
    /// Batch norm after every convolution, before its ReLU.
    #[serde(default)]
    pub batch_norm: bool,
    /// Initialisation of the convolution weights.
    #[serde(default = "nin_defaults::init")]
    pub init: WeightInit,
}

impl Config {
    /// The authors' CIFAR model (Caffe model zoo), exact.
    pub fn nin(num_classes: usize) -> Self {
        Self {
            num_classes,
            in_channels: nin_defaults::in_channels(),
            mlpconv1: nin_defaults::mlpconv1(),
            mlpconv2: nin_defaults::mlpconv2(),
            mlpconv3: nin_defaults::mlpconv3(),
            pool2: nin_defaults::pool2(),
            dropout: nin_defaults::dropout(),
            batch_norm: false,
            init: nin_defaults::init(),
        }
    }

    /// NIN with batch norm after every convolution (before its ReLU) and Kaiming-normal init.
    pub fn nin_bn(num_classes: usize) -> Self {
        Self {
            batch_norm: true,
            init: WeightInit::KaimingNormal,
            ..Self::nin(num_classes)
        }
    }

    /// [`Config::nin_bn`] at half width (mlpconv widths 96-80-48, 96-96-96, 96-96): about a
    /// quarter of the parameters and multiply-adds, so about 2.6 times as many images per
    /// second on a CPU. The zoo's CPU default: in a short budget, more epochs of the smaller
    /// model beat fewer of the full one (docs/results.md).
    pub fn nin_bn_s(num_classes: usize) -> Self {
        Self {
            mlpconv1: [96, 80, 48],
            mlpconv2: [96, 96, 96],
            mlpconv3: [96, 96],
            ..Self::nin_bn(num_classes)
        }
    }

    /// The three mlpconv blocks' configurations.
    pub fn blocks(&self) -> [MlpConvConfig; 3] {
        let block = |in_channels, kernel, padding, widths: &[usize]| MlpConvConfig {
            batch_norm: self.batch_norm,
            ..MlpConvConfig::new(
                in_channels,
                kernel,
                padding,
                widths,
                Activation::Relu,
                self.init,
            )
        };
        let [a, b] = self.mlpconv3;
        [
            block(self.in_channels, 5, 2, &self.mlpconv1),
            block(self.mlpconv1[2], 5, 2, &self.mlpconv2),
            block(self.mlpconv2[2], 3, 1, &[a, b, self.num_classes]),
        ]
    }

    fn validate(&self) -> nin_layers::Result<()> {
        if self.num_classes == 0 {
            return Err(nin_layers::Error::InvalidConfig {
                layer: "nin",
                field: "num_classes",
                problem: "must be at least 1, got 0".into(),
            });
        }
        Ok(())
    }
}

impl ModelConfig for Config {
    type Model = Nin;

    fn build(&self, vb: VarBuilder) -> nin_layers::Result<Nin> {
        Nin::new(self, vb)
    }

    /// 966,986 for `nin(10)`, 984,356 for `nin(100)`.
    fn param_count(&self) -> usize {
        self.blocks().iter().map(MlpConvConfig::param_count).sum()
    }

    /// 222.5 M for `nin(10)`.
    fn macs_per_image(&self) -> u64 {
        let blocks = self.blocks().into_iter().zip(nin_stage_sides());
        blocks.map(|(block, side)| block.macs(side, side)).sum()
    }
}

/// Network in Network: the NIN skeleton over mlpconv blocks, whose weights
/// are named `mlpconv1..3`.
#[derive(Clone, Debug)]
pub struct Nin {
    skeleton: NinSkeleton<MlpConv>,
    config: Config,
}

impl Nin {
    /// Builds (or loads, depending on `vb`) the model.
    pub fn new(cfg: &Config, vb: VarBuilder) -> nin_layers::Result<Self> {
        cfg.validate()?;
        let blocks = cfg.blocks();
        let skeleton = NinSkeleton::new(
            "nin",
            cfg.in_channels,
            cfg.pool2,
            cfg.dropout,
            vb,
            |i, vb| MlpConv::new(&blocks[i], vb),
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

impl ClassMapModel for Nin {
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

    #[test]
    fn parameter_counts_match_the_paper_model() {
        assert_eq!(Config::nin(10).param_count(), 966_986);
        assert_eq!(Config::nin(100).param_count(), 984_356);
        assert_eq!(
            Config::nin_bn(10).param_count() - Config::nin(10).param_count(),
            2_836
        );
        // 5·5·3·96 + 96·80 + 80·48 + 5·5·48·96 + 96·96·2 + 3·3·96·96 + 96·96 + 96·10 weights,
        // the biases, and a scale and shift per channel of batch norm.
        let weights = 7_200 + 7_680 + 3_840 + 115_200 + 18_432 + 82_944 + 9_216 + 960;
        let biases = 96 + 80 + 48 + 96 * 3 + 96 * 2 + 10;
        let bn = 2 * (96 + 80 + 48 + 96 * 3 + 96 * 2 + 10);
        assert_eq!(Config::nin_bn_s(10).param_count(), weights + biases + bn);
    }

    #[test]
    fn macs_match_the_reference_cost() {
        let macs = Config::nin(10).macs_per_image() as f64 / 1e6;
        assert!((macs - 222.5).abs() < 0.05, "{macs} M");
    }

    #[test]
    fn config_round_trips_through_json_and_defaults_fill_gaps() {
        let cfg = Config {
            pool2: PoolKind::Max,
            ..Config::nin(100)
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""pool2":"max""#), "{json}");
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), cfg);
        let short: Config = serde_json::from_str(r#"{"num_classes": 10}"#).unwrap();
        assert_eq!(short, Config::nin(10));
        let err = serde_json::from_str::<Config>(r#"{"num_classes": 10, "widht": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("widht"), "{err}");
    }
}
