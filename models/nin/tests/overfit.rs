//! NIN learns: a reduced-width NIN (24 channels, no dropout) memorises 64 real CIFAR-10 training
//! images; it took 100 steps when written.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use nin_layers::{seeded_var_builder, WeightInit};
use nin_model_nin::{Config, Nin};
use nin_testkit::{assert_memorises_64_images, Memorise};

#[test]
fn reduced_nin_overfits_64_real_images() {
    let cfg = Config {
        mlpconv1: [24, 24, 24],
        mlpconv2: [24, 24, 24],
        mlpconv3: [24, 24],
        dropout: 0.0,
        init: WeightInit::KaimingNormal,
        ..Config::nin(10)
    };
    let varmap = VarMap::new();
    let model = Nin::new(
        &cfg,
        seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu),
    )
    .expect("the reduced configuration builds");
    let run = Memorise {
        lr: 3e-3,
        max_steps: 300,
        check_every: 10,
    };
    assert_memorises_64_images(&model, &varmap, run);
}
