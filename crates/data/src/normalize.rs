//! Per-channel normalisation `(pixel / 255 − mean[c]) / std[c]`, the form a model directory's
//! `pretrained_cfg {mean, std}` records, with the published CIFAR constants.

use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, ImageSet, IMAGE_BYTES};
use crate::{Error, Result};

/// Per-channel mean and standard deviation of pixels scaled to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Mean of each channel (R, G, B).
    pub mean: [f32; 3],
    /// Standard deviation of each channel (R, G, B).
    pub std: [f32; 3],
}

impl Normalize {
    /// CIFAR-10 training-set statistics (population std over all pixels).
    pub const CIFAR10: Normalize = Normalize {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };
    /// CIFAR-100 training-set statistics (population std over all pixels).
    pub const CIFAR100: Normalize = Normalize {
        mean: [0.5071, 0.4865, 0.4409],
        std: [0.2673, 0.2564, 0.2762],
    };
    /// Only scales to [0, 1]: `pixel / 255`.
    pub const UNIT: Normalize = Normalize {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Checked constructor: every std must be finite and positive, every mean finite.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Result<Self> {
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::InvalidConfig {
                field: "std",
                expected: "finite values > 0".into(),
                got: s.to_string(),
            });
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::InvalidConfig {
                field: "mean",
                expected: "finite values".into(),
                got: m.to_string(),
            });
        }
        Ok(Normalize { mean, std })
    }

    /// The published constants of `dataset`.
    pub fn published(dataset: Dataset) -> Self {
        match dataset {
            Dataset::Cifar10 => Self::CIFAR10,
            Dataset::Cifar100 => Self::CIFAR100,
        }
    }

    /// Mean and population std of each channel over every pixel of `set` (usually the training split).
    pub fn from_set(set: &ImageSet) -> Self {
        let mut sum = [0u64; 3];
        let mut sq = [0u64; 3];
        for img in set.pixels.chunks_exact(IMAGE_BYTES) {
            for (c, plane) in img.chunks_exact(1024).enumerate() {
                for &p in plane {
                    sum[c] += u64::from(p);
                    sq[c] += u64::from(p) * u64::from(p);
                }
            }
        }
        let n = (set.len() * 1024).max(1) as f64;
        let mut out = Self::UNIT;
        for c in 0..3 {
            let mean = sum[c] as f64 / n;
            let var = (sq[c] as f64 / n - mean * mean).max(0.0);
            out.mean[c] = (mean / 255.0) as f32;
            out.std[c] = ((var.sqrt() / 255.0) as f32).max(f32::MIN_POSITIVE);
        }
        out
    }

    /// The normalised value of every byte value, per channel.
    pub fn lut(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        lut
    }

    /// Normalises 32×32 CHW images (any number of whole images).
    pub fn apply(&self, pixels: &[u8]) -> Vec<f32> {
        self.apply_planes(pixels, 1024)
    }

    /// Normalises CHW images whose channel planes hold `plane` pixels each (`h·w`), any number
    /// of whole images.
    pub fn apply_planes(&self, pixels: &[u8], plane: usize) -> Vec<f32> {
        let lut = self.lut();
        let plane = plane.max(1);
        pixels
            .iter()
            .enumerate()
            .map(|(i, &p)| lut[(i / plane) % 3][p as usize])
            .collect()
    }
}
