//! CiC learns: a reduced-width `cic_3d` (16 channels, windows of 8, no dropout), channel-window
//! layers everywhere they apply, memorises 64 real CIFAR-10 training images.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use nin_layers::{seeded_var_builder, WeightInit};
use nin_model_cic::{Cic, Config};
use nin_testkit::{assert_memorises_64_images, Memorise};

#[test]
fn reduced_cic_3d_overfits_64_real_images() {
    let cfg = Config {
        mlpconv1: [16, 16, 16],
        mlpconv2: [16, 16, 16],
        mlpconv3: [16, 16],
        window: 8,
        dropout: 0.0,
        init: WeightInit::KaimingNormal,
        ..Config::cic_3d(10)
    };
    let varmap = VarMap::new();
    let model = Cic::new(
        &cfg,
        seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu),
    )
    .expect("the reduced configuration builds");
    let run = Memorise {
        lr: 5e-3,
        max_steps: 300,
        check_every: 10,
    };
    assert_memorises_64_images(&model, &varmap, run);
}
