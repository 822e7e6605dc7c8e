//! The NIN authors' preprocessing: global contrast normalisation (scale 55) then ZCA whitening
//! (regulariser 0.1) fitted on the training set, as pylearn2 did it; saved as named tensors so
//! evaluation applies the very same transform.
//!
//! GCN (per image, pylearn2 `global_contrast_normalize(scale=55, use_std=False, sqrt_bias=0)`):
//! `x ← (x − mean(x)) · 55 / ‖x − mean(x)‖`. ZCA (pylearn2 `ZCA(filter_bias=0.1)`):
//! `P = U diag(1/√(λ + 0.1)) Uᵀ` from `cov = X̄ᵀX̄ / n = U diag(λ) Uᵀ`, applied as `(x − μ) P`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
#[cfg(feature = "files")]
use faer::linalg::matmul::matmul;
#[cfg(feature = "files")]
use faer::{Accum, Mat, Par, Side};
use serde::{Deserialize, Serialize};

#[cfg(feature = "files")]
use crate::dataset::ImageSet;
use crate::dataset::IMAGE_BYTES;
use crate::error::printable;
use crate::{Error, Result};

/// Tensor name of the ZCA mean vector `[3072]`.
pub const ZCA_MEAN: &str = "zca.mean";
/// Tensor name of the ZCA whitening matrix `[3072, 3072]`.
pub const ZCA_MATRIX: &str = "zca.matrix";
/// Tensor name of the GCN scale `[1]`.
pub const ZCA_GCN_SCALE: &str = "zca.gcn_scale";

/// The largest whitening file [`Zca::load`] reads: one in f32 is 37.8 MB (the `[3072, 3072]`
/// matrix), one in f64 twice that; the rest leaves room for a model's weights in the same file.
pub const MAX_WHITENING_BYTES: u64 = 128 << 20;

/// Settings of the authors' preprocessing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZcaConfig {
    /// Norm of each image after GCN (55 in the paper).
    pub gcn_scale: f32,
    /// Added to each eigenvalue before the inverse square root (0.1 in the paper).
    pub regularizer: f64,
}

impl ZcaConfig {
    /// The paper's settings: GCN scale 55, regulariser 0.1.
    pub const PAPER: ZcaConfig = ZcaConfig {
        gcn_scale: 55.0,
        regularizer: 0.1,
    };
}

/// A fitted GCN + ZCA transform.
#[derive(Clone, Debug, PartialEq)]
pub struct Zca {
    /// GCN scale used before whitening.
    pub gcn_scale: f32,
    /// Mean of the GCN'd training images, `[3072]`.
    pub mean: Vec<f32>,
    /// Symmetric whitening matrix, `[3072, 3072]` row-major.
    pub matrix: Vec<f32>,
}

/// A [`Zca`] whose mean `[1, 3072]` and matrix `[3072, 3072]` live on a device.
#[derive(Clone, Debug)]
pub struct ZcaTensors {
    gcn_scale: f32,
    mean: Tensor,
    matrix: Tensor,
}

impl ZcaTensors {
    /// Whitens a batch `[N, 3, 32, 32]` (pixels at any scale) on the tensors' device.
    pub fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        let x = xs.to_dtype(DType::F32)?.reshape((n, c * h * w))?;
        let x = x.broadcast_sub(&x.mean_keepdim(1)?)?;
        let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?;
        // Images with zero contrast keep a divisor of 1, as in pylearn2.
        let small = norm.lt(1e-8)?;
        let norm = small.where_cond(&Tensor::ones_like(&norm)?, &norm)?;
        let x = (x.broadcast_div(&norm)? * f64::from(self.gcn_scale))?;
        let x = x.broadcast_sub(&self.mean)?.matmul(&self.matrix)?;
        Ok(x.reshape((n, c, h, w))?)
    }
}

/// Global contrast normalisation of one CHW image (any scale of input) into `out`.
pub fn gcn(image: &[u8], scale: f32, out: &mut [f32]) {
    let n = image.len() as f32;
    let mean = image.iter().map(|&p| f32::from(p)).sum::<f32>() / n;
    let mut ss = 0f32;
    for (o, &p) in out.iter_mut().zip(image) {
        *o = f32::from(p) - mean;
        ss += *o * *o;
    }
    let norm = ss.sqrt();
    let k = if norm < 1e-8 { 1.0 } else { scale / norm };
    out.iter_mut().for_each(|o| *o *= k);
}

impl Zca {
    /// Fits GCN + ZCA on `set` (all 50,000 training images take some seconds on 2 cores).
    #[cfg(feature = "files")]
    pub fn fit(set: &ImageSet, cfg: ZcaConfig) -> Result<Self> {
        let n = set.len();
        if n < 2 {
            return Err(Error::InvalidConfig {
                field: "set",
                expected: "at least 2 images".into(),
                got: n.to_string(),
            });
        }
        if !(cfg.regularizer.is_finite() && cfg.regularizer >= 0.0) {
            return Err(Error::InvalidConfig {
                field: "regularizer",
                expected: "a finite value >= 0".into(),
                got: cfg.regularizer.to_string(),
            });
        }
        let d = IMAGE_BYTES;
        let mut x = vec![0f32; n * d];
        for (img, out) in set.pixels.chunks_exact(d).zip(x.chunks_exact_mut(d)) {
            gcn(img, cfg.gcn_scale, out);
        }
        let mut mean64 = vec![0f64; d];
        for row in x.chunks_exact(d) {
            mean64
                .iter_mut()
                .zip(row)
                .for_each(|(m, &v)| *m += f64::from(v));
        }
        let mean: Vec<f32> = mean64.iter().map(|m| (m / n as f64) as f32).collect();
        // Centred data as an n×d column-major matrix.
        let xc = Mat::<f32>::from_fn(n, d, |i, j| x[i * d + j] - mean[j]);
        drop(x);
        let mut cov = Mat::<f32>::zeros(d, d);
        matmul(
            cov.as_mut(),
            Accum::Replace,
            xc.transpose(),
            xc.as_ref(),
            1.0 / n as f32,
            Par::rayon(0),
        );
        drop(xc);
        let cov64 = Mat::<f64>::from_fn(d, d, |i, j| {
            f64::from(cov[(i, j)]) + if i == j { cfg.regularizer } else { 0.0 }
        });
        let evd = cov64
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| Error::Eigen {
                n: d,
                reason: format!("{e:?}"),
            })?;
        let u = evd.U();
        let s = evd.S().column_vector();
        let scaled = Mat::<f64>::from_fn(d, d, |i, j| u[(i, j)] / s[j].max(1e-12).sqrt());
        let mut p = Mat::<f64>::zeros(d, d);
        matmul(
            p.as_mut(),
            Accum::Replace,
            scaled.as_ref(),
            u.transpose(),
            1.0,
            Par::rayon(0),
        );
        let matrix = (0..d * d).map(|k| p[(k / d, k % d)] as f32).collect();
        Ok(Zca {
            gcn_scale: cfg.gcn_scale,
            mean,
            matrix,
        })
    }

    /// Whitens a batch `[N, 3, 32, 32]` (pixels at any scale, e.g. `pixel / 255`) on its device.
    /// Copies the matrix to the device on each call: keep a [`ZcaTensors`] to whiten many batches.
    pub fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        self.to_device(xs.device())?.apply(xs)
    }

    /// The transform as tensors on `dev`, ready to whiten many batches.
    pub fn to_device(&self, dev: &Device) -> Result<ZcaTensors> {
        let (mean, matrix) = self.tensors_on(dev)?;
        Ok(ZcaTensors {
            gcn_scale: self.gcn_scale,
            mean: mean.unsqueeze(0)?,
            matrix,
        })
    }

    /// Whitens CHW `u8` images on the CPU, `3072` values per image.
    pub fn apply_images(&self, pixels: &[u8]) -> Result<Vec<f32>> {
        let n = pixels.len() / IMAGE_BYTES;
        let xs = Tensor::from_vec(pixels.to_vec(), (n, 3, 32, 32), &Device::Cpu)?;
        Ok(self.apply(&xs)?.flatten_all()?.to_vec1::<f32>()?)
    }

    fn tensors_on(&self, dev: &Device) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::from_slice(&self.mean, IMAGE_BYTES, dev)?,
            Tensor::from_slice(&self.matrix, (IMAGE_BYTES, IMAGE_BYTES), dev)?,
        ))
    }

    /// The transform as named tensors (`zca.mean`, `zca.matrix`, `zca.gcn_scale`), to store beside a
    /// model's weights.
    pub fn to_tensors(&self, dev: &Device) -> Result<HashMap<String, Tensor>> {
        let (mean, matrix) = self.tensors_on(dev)?;
        let mut map = HashMap::new();
        map.insert(ZCA_MEAN.to_string(), mean);
        map.insert(ZCA_MATRIX.to_string(), matrix);
        map.insert(
            ZCA_GCN_SCALE.to_string(),
            Tensor::from_slice(&[self.gcn_scale], 1, dev)?,
        );
        Ok(map)
    }

    /// Reads the transform from named tensors; `path` names their file in errors.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<Self> {
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let bad = |got: Vec<usize>| Error::ZcaShape {
                path: path.into(),
                name: name.into(),
                expected: shape.to_vec(),
                got,
            };
            let t = tensors.get(name).ok_or_else(|| bad(Vec::new()))?;
            if t.dims() != shape {
                return Err(bad(t.dims().to_vec()));
            }
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let mean = get(ZCA_MEAN, &[IMAGE_BYTES])?;
        let matrix = get(ZCA_MATRIX, &[IMAGE_BYTES, IMAGE_BYTES])?;
        let gcn_scale = get(ZCA_GCN_SCALE, &[1])?.first().copied().unwrap_or(55.0);
        // A damaged transform would turn every input into NaN and every answer into noise.
        if !(gcn_scale.is_finite() && gcn_scale > 0.0)
            || mean.iter().chain(&matrix).any(|v| !v.is_finite())
        {
            return Err(Error::Whitening {
                path: path.into(),
                reason: "holds NaN or infinite values (or a GCN scale that is not > 0)".into(),
            });
        }
        Ok(Zca {
            gcn_scale,
            mean,
            matrix,
        })
    }

    /// Saves the transform to a safetensors file (usually [`nin_format::files::WHITENING_SAFETENSORS`]
    /// in a model directory), atomically: a reader sees the old file or the new one, never half.
    #[cfg(feature = "files")]
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> =
            self.to_tensors(&Device::Cpu)?.into_iter().collect();
        // Sorted names make the file's bytes a function of the transform alone.
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), None)
            .map_err(|e| Error::Whitening {
                path: path.into(),
                reason: format!("encoding the whitening as safetensors failed ({e})"),
            })?;
        nin_format::write_atomic(path, &bytes).map_err(Error::from_format)
    }

    /// Loads a transform saved by [`Zca::save`] (or the `zca.*` tensors of a model file), reading
    /// at most [`MAX_WHITENING_BYTES`].
    #[cfg(feature = "files")]
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = nin_format::read_bounded(path, "whitening file", MAX_WHITENING_BYTES)
            .map_err(Error::from_format)?;
        Self::from_bytes(&bytes, path)
    }

    /// Reads a transform from the bytes of a safetensors file (what [`Zca::save`] writes);
    /// `path` names the file in errors. The one reader behind [`Zca::load`], and the browser
    /// demo's, which has no file system.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        if bytes.len() as u64 > MAX_WHITENING_BYTES {
            return Err(Error::Whitening {
                path: path.into(),
                reason: format!(
                    "{} bytes, more than the {MAX_WHITENING_BYTES} a whitening file may hold",
                    bytes.len()
                ),
            });
        }
        // Checks the header's offsets against the bytes before candle reads them.
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::Whitening {
            path: path.into(),
            reason: format!(
                "not a valid safetensors whitening file ({})",
                printable(&e.to_string())
            ),
        })?;
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
        Self::from_tensors(&tensors, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whitening_with_nan_values_is_refused() {
        let dev = Device::Cpu;
        let mut mean = vec![0f32; IMAGE_BYTES];
        mean[7] = f32::NAN;
        let mut tensors = HashMap::new();
        tensors.insert(
            ZCA_MEAN.to_string(),
            Tensor::from_vec(mean, IMAGE_BYTES, &dev).unwrap(),
        );
        tensors.insert(
            ZCA_MATRIX.to_string(),
            Tensor::zeros((IMAGE_BYTES, IMAGE_BYTES), DType::F32, &dev).unwrap(),
        );
        tensors.insert(
            ZCA_GCN_SCALE.to_string(),
            Tensor::from_slice(&[55f32], 1, &dev).unwrap(),
        );
        let err = Zca::from_tensors(&tensors, Path::new("w.safetensors"))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("w.safetensors") && e.contains("NaN")),
            "{err:?}"
        );
    }

    #[test]
    fn gcn_gives_zero_mean_and_norm_scale() {
        let img: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = vec![0f32; IMAGE_BYTES];
        gcn(&img, 55.0, &mut out);
        let mean: f32 = out.iter().sum::<f32>() / IMAGE_BYTES as f32;
        let norm: f32 = out.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(
            mean.abs() < 1e-3 && (norm - 55.0).abs() < 1e-2,
            "{mean} {norm}"
        );
        let flat = vec![9u8; IMAGE_BYTES];
        gcn(&flat, 55.0, &mut out);
        assert!(out.iter().all(|v| *v == 0.0));
    }
}
