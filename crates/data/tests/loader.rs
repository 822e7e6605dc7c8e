//! The batch pipeline: shapes and dtypes, seeded and resumable epochs, drop_last vs keep,
//! `limit`, augmentation semantics, normalisation, and GCN + ZCA fitting, saving and loading.

mod common;

use std::sync::Arc;

use candle_core::{DType, Device};
use common::*;
use nin_data::{
    augment_image, epoch_permutation, Augment, ImageSet, Loader, LoaderConfig, Normalize,
    Preprocess, Zca, ZcaConfig, IMAGE_BYTES,
};
use rand::SeedableRng;

/// `n` images with label `i % 10` whose pixels encode the image index and position.
fn set(n: usize) -> ImageSet {
    let pixels = (0..n)
        .flat_map(|i| (0..IMAGE_BYTES).map(move |k| ((i * 7 + k * 13) % 256) as u8))
        .collect();
    ImageSet::new(pixels, (0..n as u32).map(|i| i % 10).collect(), 10).expect("valid set")
}

fn loader(n: usize, cfg: LoaderConfig) -> Loader {
    Loader::new(
        set(n),
        cfg,
        Preprocess::Normalize(Normalize::CIFAR10),
        Device::Cpu,
    )
    .expect("loader")
}

#[test]
fn batches_have_the_contract_shapes() -> TestResult {
    let l = loader(70, LoaderConfig::train(32, 1));
    let batches: Vec<_> = l.epoch(0).collect::<Result<_, _>>()?;
    assert_eq!(batches.len(), 2);
    for b in &batches {
        assert_eq!(b.images.dims4()?, (32, 3, 32, 32));
        assert_eq!(b.images.dtype(), DType::F32);
        assert_eq!((b.labels.dims1()?, b.labels.dtype()), (32, DType::U32));
    }
    Ok(())
}

#[test]
fn drop_last_versus_keep() -> TestResult {
    let mut cfg = LoaderConfig::eval(32);
    assert_eq!(loader(70, cfg).batches_per_epoch(), 3);
    let last = loader(70, cfg).epoch(0).last().ok_or("no batch")??;
    assert_eq!(last.images.dims4()?.0, 6);
    cfg.drop_last = true;
    assert_eq!(loader(70, cfg).epoch(0).count(), 2);
    Ok(())
}

#[test]
fn eval_order_is_the_stored_order_and_normalised() -> TestResult {
    let s = set(5);
    let l = Loader::new(
        s.clone(),
        LoaderConfig::eval(5),
        Preprocess::Normalize(Normalize::CIFAR10),
        Device::Cpu,
    )?;
    let b = l.batch(0, 0)?;
    assert_eq!(b.labels.to_vec1::<u32>()?, s.labels);
    let got = b.images.flatten_all()?.to_vec1::<f32>()?;
    let want = Normalize::CIFAR10.apply(&s.pixels);
    assert_eq!(got, want);
    // Spot-check the formula on one value of the green plane.
    let v = s.pixels[1024 + 5];
    assert!((got[1024 + 5] - (v as f32 / 255.0 - 0.4822) / 0.2435).abs() < 1e-6);
    Ok(())
}

#[test]
fn epochs_are_seeded_permutations() {
    let p = epoch_permutation(7, 3, 1000);
    assert_eq!(p, epoch_permutation(7, 3, 1000));
    assert_ne!(p, epoch_permutation(7, 4, 1000));
    assert_ne!(p, epoch_permutation(8, 3, 1000));
    let mut sorted = p.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
}

#[test]
fn resuming_at_batch_k_repeats_the_uninterrupted_run() -> TestResult {
    let mut cfg = LoaderConfig::train(16, 42);
    cfg.augment = Some(Augment {
        crop_padding: 4,
        flip: true,
        cutout: Some(8),
    });
    let l = loader(100, cfg);
    let full: Vec<_> = l.epoch(2).collect::<Result<_, _>>()?;
    let resumed: Vec<_> = l.epoch_from(2, 3)?.collect::<Result<_, _>>()?;
    assert_eq!(resumed.len(), full.len() - 3);
    for (a, b) in full[3..].iter().zip(&resumed) {
        assert_eq!(a.index, b.index);
        assert_eq!(
            a.images.flatten_all()?.to_vec1::<f32>()?,
            b.images.flatten_all()?.to_vec1::<f32>()?
        );
        assert_eq!(a.labels.to_vec1::<u32>()?, b.labels.to_vec1::<u32>()?);
    }
    // A new loader with the same seed (a restarted process) gives the same batch.
    let again = loader(100, cfg).batch(2, 4)?;
    assert_eq!(
        again.images.flatten_all()?.to_vec1::<f32>()?,
        full[4].images.flatten_all()?.to_vec1::<f32>()?
    );
    // Another epoch differs.
    assert_ne!(l.host_batch(3, 4)?, l.host_batch(2, 4)?);
    assert!(l.epoch_from(2, 99).is_err());
    Ok(())
}

#[test]
fn dropping_an_epoch_early_stops_the_prefetch_thread() -> TestResult {
    let l = loader(200, LoaderConfig::train(8, 0));
    let mut it = l.epoch(0);
    it.next().ok_or("no batch")??;
    drop(it); // Must not hang.
    Ok(())
}

#[test]
fn limit_takes_the_first_images() {
    let s = set(50).limit(12);
    assert_eq!((s.len(), s.pixels.len()), (12, 12 * IMAGE_BYTES));
    assert_eq!(s.image(11), set(50).image(11));
}

#[test]
fn crop_flip_and_cutout_semantics() {
    let img: Vec<u8> = (0..IMAGE_BYTES)
        .map(|k| (k % 1024 / 32 * 8 + k % 32) as u8)
        .collect();
    let lut = Normalize::UNIT.lut();
    let mut out = vec![0f32; IMAGE_BYTES];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    // No pad, forced flip: each row reversed.
    let flip = Augment {
        crop_padding: 0,
        flip: true,
        cutout: None,
    };
    let mut flipped = 0;
    for _ in 0..20 {
        augment_image(&img, &flip, &lut, &mut rng, &mut out);
        if out[0] == img[31] as f32 / 255.0 {
            flipped += 1;
            assert_eq!(out[31], img[0] as f32 / 255.0);
        } else {
            assert_eq!(
                out[..32],
                img[..32]
                    .iter()
                    .map(|&p| p as f32 / 255.0)
                    .collect::<Vec<_>>()[..]
            );
        }
    }
    assert!((3..=17).contains(&flipped), "{flipped} flips of 20");
    // Crop: every output is a shifted copy with zeros (pixel 0) where it falls off the image.
    let crop = Augment {
        crop_padding: 4,
        flip: false,
        cutout: None,
    };
    for _ in 0..20 {
        augment_image(&img, &crop, &lut, &mut rng, &mut out);
        let found = (-4..=4)
            .flat_map(|dy| (-4..=4).map(move |dx| (dy, dx)))
            .any(|(dy, dx): (i32, i32)| {
                (0..32).all(|y| {
                    (0..32).all(|x| {
                        let (sy, sx) = (y + dy, x + dx);
                        let want = if (0..32).contains(&sy) && (0..32).contains(&sx) {
                            img[(sy * 32 + sx) as usize] as f32 / 255.0
                        } else {
                            0.0
                        };
                        out[(y * 32 + x) as usize] == want
                    })
                })
            });
        assert!(found);
    }
    let cut = Augment {
        crop_padding: 0,
        flip: false,
        cutout: Some(8),
    };
    augment_image(&vec![200u8; IMAGE_BYTES], &cut, &lut, &mut rng, &mut out);
    let zeros = out.iter().filter(|v| **v == 0.0).count();
    assert!(zeros > 0 && zeros <= 3 * 64, "{zeros}");
}

#[test]
fn normalize_from_set_matches_a_direct_computation() -> TestResult {
    let s = set(30);
    let n = Normalize::from_set(&s);
    let red: Vec<f64> = s
        .pixels
        .chunks(IMAGE_BYTES)
        .flat_map(|im| im[..1024].iter().map(|&p| p as f64 / 255.0))
        .collect();
    let mean = red.iter().sum::<f64>() / red.len() as f64;
    let std = (red.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / red.len() as f64).sqrt();
    assert!((n.mean[0] as f64 - mean).abs() < 1e-5 && (n.std[0] as f64 - std).abs() < 1e-5);
    assert!(Normalize::new([0.5; 3], [0.0, 1.0, 1.0]).is_err());
    Ok(())
}

#[test]
fn zca_whitens_fits_saves_and_loads() -> TestResult {
    // Correlated random images: a few smooth patterns plus noise.
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let n = 400;
    let pixels: Vec<u8> = (0..n)
        .flat_map(|_| {
            let (a, b): (f32, f32) = (rng.random(), rng.random());
            let noise: Vec<f32> = (0..IMAGE_BYTES).map(|_| rng.random::<f32>()).collect();
            (0..IMAGE_BYTES)
                .map(move |k| {
                    (100.0 * a * (k as f32 / 500.0).sin() + 80.0 * b + 40.0 * noise[k]) as u8
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let s = ImageSet::new(pixels, vec![0; n], 10)?;
    let zca = Zca::fit(&s, ZcaConfig::PAPER)?;
    assert_eq!(
        (zca.mean.len(), zca.matrix.len()),
        (IMAGE_BYTES, IMAGE_BYTES * IMAGE_BYTES)
    );
    // Symmetric.
    assert!((zca.matrix[5 * IMAGE_BYTES + 77] - zca.matrix[77 * IMAGE_BYTES + 5]).abs() < 1e-4);
    // Whitened training data: mean ~0, and the covariance of whitened data is bounded by 1.
    let w = zca.apply_images(&s.pixels)?;
    let col_mean: f32 = (0..n).map(|i| w[i * IMAGE_BYTES + 100]).sum::<f32>() / n as f32;
    assert!(col_mean.abs() < 1e-2, "{col_mean}");
    let var: f32 = (0..n)
        .map(|i| w[i * IMAGE_BYTES + 100].powi(2))
        .sum::<f32>()
        / n as f32;
    assert!(var > 0.0 && var < 1.0 + 1e-3, "{var}");

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("zca.safetensors");
    zca.save(&path)?;
    let back = Zca::load(&path)?;
    assert_eq!(back, zca);
    // The batch pipeline applies the same transform.
    let l = Loader::new(
        Arc::new(s.clone()),
        LoaderConfig::eval(4),
        Preprocess::GcnZca(Arc::new(back)),
        Device::Cpu,
    )?;
    let got = l.batch(0, 0)?.images.flatten_all()?.to_vec1::<f32>()?;
    for (a, b) in got.iter().zip(&w[..4 * IMAGE_BYTES]) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    // A file missing a tensor is named in the error.
    let mut t = zca.to_tensors(&Device::Cpu)?;
    t.remove(nin_data::ZCA_MATRIX);
    candle_core::safetensors::save(&t, &path)?;
    let err = Zca::load(&path).unwrap_err();
    assert!(
        matches!(err, nin_data::Error::ZcaShape { .. }) && err.to_string().contains("zca.matrix"),
        "{err}"
    );
    Ok(())
}
