//! Test support shared by the model crates (a dev-dependency only): the first images of the
//! real CIFAR-10 archive in `../shared/data`, normalised, and a whole-tensor relative error.

use std::io::Read;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

const RECORD: usize = 3073;
/// CIFAR-10's published per-channel mean of `pixel / 255`.
const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10's published per-channel standard deviation of `pixel / 255`.
const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// The shared CIFAR-10 archive beside the workspace, if present.
pub fn cifar10_archive() -> Option<PathBuf> {
    let archive = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/cifar-10-binary.tar.gz");
    archive.is_file().then_some(archive)
}

/// The first `n` training images of the shared CIFAR-10 archive (`data_batch_1.bin`), as
/// normalised `[n, 3, 32, 32]` f32 images, `[n]` u32 labels and the labels as a vector; `None`
/// when the archive is absent (tests then skip with a message) or unreadable.
pub fn cifar10_head(n: usize) -> Option<(Tensor, Tensor, Vec<u32>)> {
    let file = std::fs::File::open(cifar10_archive()?).ok()?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in tar.entries().ok()? {
        let entry = entry.ok()?;
        if !entry.path().ok()?.ends_with("data_batch_1.bin") {
            continue;
        }
        let mut bytes = vec![0u8; n * RECORD];
        entry
            .take((n * RECORD) as u64)
            .read_exact(&mut bytes)
            .ok()?;
        let labels: Vec<u32> = bytes.chunks(RECORD).map(|r| r[0] as u32).collect();
        let pixels: Vec<f32> = bytes
            .chunks(RECORD)
            .flat_map(|r| {
                r[1..].iter().enumerate().map(|(i, &p)| {
                    let c = i / 1024;
                    (p as f32 / 255.0 - MEAN[c]) / STD[c]
                })
            })
            .collect();
        let xs = Tensor::from_vec(pixels, (n, 3, 32, 32), &Device::Cpu).ok()?;
        let ys = Tensor::from_vec(labels.clone(), n, &Device::Cpu).ok()?;
        return Some((xs, ys, labels));
    }
    None
}

/// max |got − want| / max |want|, with the scale floored at 1e-4: the relative error of a whole
/// tensor. The floor keeps gradients that are zero in theory (a convolution bias followed by
/// batch norm: about 1e-9 in float) from comparing rounding noise.
///
/// # Panics
/// When the shapes differ or a value cannot be read: this is for tests.
pub fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let scalar = |t: candle_core::Result<Tensor>| -> f64 {
        t.and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_scalar::<f64>())
            .unwrap_or(f64::NAN)
    };
    let diff = scalar((got - want).and_then(|d| d.abs()).and_then(|d| d.max_all()));
    let scale = scalar(want.abs().and_then(|w| w.max_all()));
    diff / scale.max(1e-4)
}
