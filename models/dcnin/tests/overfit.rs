//! DcNIN learns: a reduced-width DcNIN memorises 64 real CIFAR-10 training images (batch
//! norm in training mode while it learns, judged in eval mode with its running statistics).
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use nin_layers::{seeded_var_builder, ClassMapModel};
use nin_model_dcnin::{Config, DcNin};

const N_IMAGES: usize = 64;

#[test]
fn reduced_dcnin_overfits_64_real_images() {
    let Some((xs, ys, labels)) = nin_testkit::cifar10_head(N_IMAGES) else {
        eprintln!("skipping: ../shared/data/cifar-10-binary.tar.gz is absent");
        return;
    };

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
    .unwrap();
    let params = candle_nn::ParamsAdamW {
        lr: 3e-2,
        ..Default::default()
    };
    // candle's AdamW is enough here: this checks that the model can learn, not our optimisers
    // (whose PyTorch semantics nin-train tests).
    let mut opt = candle_nn::AdamW::new(varmap.all_vars(), params).unwrap();

    let accuracy = |logits: &Tensor| {
        let pred = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        pred.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / N_IMAGES as f64
    };
    let mut history = Vec::new();
    for step in 0..200 {
        let logits = model.forward_t(&xs, true).unwrap();
        let loss = candle_nn::loss::cross_entropy(&logits, &ys).unwrap();
        opt.backward_step(&loss).unwrap();
        // Checking every 5 steps keeps the extra forward passes cheap. Eval mode uses the running
        // statistics; momentum 0.5 (PyTorch's 0.1 trails the batch statistics by some 40 steps
        // here) keeps them close to the batch statistics, so the test stays short.
        if step % 5 != 4 {
            continue;
        }
        let acc = accuracy(&model.forward_t(&xs, false).unwrap());
        history.push((step, loss.to_scalar::<f32>().unwrap(), acc));
        if acc == 1.0 {
            eprintln!("100 % training accuracy after {} steps", step + 1);
            return;
        }
    }
    panic!(
        "did not reach 100 % on 64 images in 200 steps: {:?}",
        &history[history.len() - 5..]
    );
}
