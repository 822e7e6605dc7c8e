//! CiC learns: a reduced-width `cic_3d` (16 channels, windows of 8, no dropout), channel-window
//! layers everywhere they apply, memorises 64 real CIFAR-10 training images.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use nin_layers::{seeded_var_builder, ClassMapModel, WeightInit};
use nin_model_cic::{Cic, Config};

const N_IMAGES: usize = 64;

#[test]
fn reduced_cic_3d_overfits_64_real_images() {
    let Some((xs, ys, labels)) = nin_testkit::cifar10_head(N_IMAGES) else {
        eprintln!("skipping: ../shared/data/cifar-10-binary.tar.gz is absent");
        return;
    };

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
    .unwrap();
    let params = candle_nn::ParamsAdamW {
        lr: 5e-3,
        ..Default::default()
    };
    // candle's AdamW is enough here: this checks that CiC can learn, not our optimisers (whose
    // PyTorch semantics nin-train tests).
    let mut opt = candle_nn::AdamW::new(varmap.all_vars(), params).unwrap();

    let accuracy = |logits: &Tensor| {
        let pred = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / N_IMAGES as f64
    };
    let mut history = Vec::new();
    let start = std::time::Instant::now();
    for step in 0..300 {
        let logits = model.forward_t(&xs, true).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &ys).unwrap();
        opt.backward_step(&loss).unwrap();
        // Checking every 10 steps keeps the extra forward passes cheap.
        if step % 10 != 9 {
            continue;
        }
        let acc = accuracy(&model.forward_t(&xs, false).unwrap());
        history.push((step, loss.to_scalar::<f32>().unwrap(), acc));
        if acc == 1.0 {
            eprintln!(
                "100 % training accuracy after {} steps, {:.1?}",
                step + 1,
                start.elapsed()
            );
            return;
        }
    }
    panic!(
        "did not reach 100 % on 64 images in 300 steps: {:?}",
        &history[history.len() - 5..]
    );
}
