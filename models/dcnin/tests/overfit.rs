//! DcNIN learns: a reduced-width DcNIN memorises 64 real CIFAR-10 training images (batch
//! norm in training mode while it learns, judged in eval mode with its running statistics).

use candle_core::{DType, Device};
use candle_nn::VarMap;
use nin_layers::seeded_var_builder;
use nin_model_dcnin::{Config, DcNin};
use nin_testkit::{assert_memorises_64_images, Memorise};

#[test]
fn reduced_dcnin_overfits_64_real_images() {
    let cfg = Config {
        growth: 4,
        units: [1, 1, 1],
        bn_momentum: 0.5,
        ..Config::dcnin_s(10)
    };
    let varmap = VarMap::new();
    let model = DcNin::new(
        &cfg,
        seeded_var_builder(&varmap, 1, DType::F32, &Device::Cpu),
    )
    .expect("the reduced configuration builds");
    // Judged in eval mode, with the running statistics: momentum 0.5 (PyTorch's 0.1 trails the
    // batch statistics by some 40 steps here) keeps them close to the batch's, so the test stays
    // short.
    let run = Memorise {
        lr: 3e-2,
        max_steps: 200,
        check_every: 5,
    };
    assert_memorises_64_images(&model, &varmap, run);
}
