//! DcNIN learns: a reduced-width DcNIN memorises 64 real CIFAR-10 training images (batch
//! norm in training mode while it learns, judged in eval mode with its running statistics).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarMap};
use nin_layers::{seeded_var_builder, ClassMapModel};
use nin_model_dcnin::{Config, DcNin};

const N_IMAGES: usize = 64;
const RECORD: usize = 3073;

/// The first `n` records of `data_batch_1.bin` in the shared CIFAR-10 archive, if present.
fn first_cifar10_images(n: usize) -> Option<(Vec<u8>, Vec<u32>)> {
    let archive = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/cifar-10-binary.tar.gz");
    let file = std::fs::File::open(&archive).ok()?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in tar.entries().ok()? {
        let entry = entry.ok()?;
        if entry.path().ok()?.ends_with("data_batch_1.bin") {
            let mut bytes = vec![0u8; n * RECORD];
            entry
                .take((n * RECORD) as u64)
                .read_exact(&mut bytes)
                .ok()?;
            let labels = bytes.chunks(RECORD).map(|r| r[0] as u32).collect();
            let pixels = bytes.chunks(RECORD).flat_map(|r| r[1..].to_vec()).collect();
            return Some((pixels, labels));
        }
    }
    None
}

#[test]
fn reduced_dcnin_overfits_64_real_images() {
    let Some((pixels, labels)) = first_cifar10_images(N_IMAGES) else {
        eprintln!("skipping: ../shared/data/cifar-10-binary.tar.gz is absent");
        return;
    };
    let mean = [0.4914f32, 0.4822, 0.4465];
    let std = [0.2470f32, 0.2435, 0.2616];
    let normalised: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let c = (i / 1024) % 3;
            (p as f32 / 255.0 - mean[c]) / std[c]
        })
        .collect();
    let xs = Tensor::from_vec(normalised, (N_IMAGES, 3, 32, 32), &Device::Cpu).unwrap();
    let ys = Tensor::from_vec(labels.clone(), N_IMAGES, &Device::Cpu).unwrap();

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
