//! Data-dependent initialisation of a network's first convolution: filters that whiten the k×k
//! patches of the training images (the trick of Keller Jordan's CIFAR-10 speed runs), so the
//! first layer starts by decorrelating its input instead of projecting it at random. It pays
//! most when training is short, which is when a CPU is all one has.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par, Side};

use crate::dataset::{ImageSet, IMAGE_BYTES};
use crate::{Error, Normalize, Result};

/// Side of the images the filters are fitted on.
const SIDE: usize = 32;

/// Whitening filters for a `kernel`×`kernel` convolution over RGB inputs normalised by
/// `normalize`, fitted on every patch (stride 1, no padding) of the first `images` images of
/// `set`, in `[2m, 3, kernel, kernel]` row-major order with `m = min(max_filters / 2, 3·kernel²)`.
///
/// Filter `2i` is the `i`-th principal direction of the patches (largest variance first) scaled
/// by `1 / sqrt(λᵢ + eps)`, and filter `2i + 1` its negation, so a ReLU after the layer keeps
/// both signs of every component. Over the fitting patches, the responses of the even filters
/// have covariance `diag(λᵢ / (λᵢ + eps))`: the identity where the data has variance well above
/// `eps`. No randomness: the same set gives the same filters.
pub fn whitened_patch_filters(
    set: &ImageSet,
    normalize: &Normalize,
    kernel: usize,
    max_filters: usize,
    images: usize,
    eps: f64,
) -> Result<Vec<f32>> {
    let invalid = |field: &'static str, expected: &str, got: String| Error::InvalidConfig {
        field,
        expected: expected.into(),
        got,
    };
    if kernel == 0 || kernel > SIDE {
        return Err(invalid(
            "kernel",
            "a side between 1 and 32",
            kernel.to_string(),
        ));
    }
    if max_filters < 2 {
        return Err(invalid(
            "max_filters",
            "at least 2 (a filter and its negation)",
            max_filters.to_string(),
        ));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(invalid("eps", "a finite value > 0", eps.to_string()));
    }
    let images = images.min(set.len());
    if images == 0 {
        return Err(invalid("images", "at least one training image", "0".into()));
    }
    let dim = 3 * kernel * kernel;
    let positions = SIDE - kernel + 1;
    let per_image = positions * positions;
    let n = (images * per_image) as f64;

    // Sums of patches and of their outer products, one image at a time (all patches of 2,000
    // images at once would take half a gigabyte).
    let mut sum = vec![0f64; dim];
    let mut gram = Mat::<f64>::zeros(dim, dim);
    let mut patches = Mat::<f64>::zeros(per_image, dim);
    for i in 0..images {
        let pixels = normalize.apply(&set.pixels[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]);
        for y in 0..positions {
            for x in 0..positions {
                let row = y * positions + x;
                for c in 0..3 {
                    for dy in 0..kernel {
                        for dx in 0..kernel {
                            let v = f64::from(pixels[c * SIDE * SIDE + (y + dy) * SIDE + x + dx]);
                            let col = (c * kernel + dy) * kernel + dx;
                            patches[(row, col)] = v;
                            sum[col] += v;
                        }
                    }
                }
            }
        }
        matmul(
            gram.as_mut(),
            Accum::Add,
            patches.transpose(),
            patches.as_ref(),
            1.0,
            Par::Seq,
        );
    }
    let cov = Mat::<f64>::from_fn(dim, dim, |a, b| {
        gram[(a, b)] / n - (sum[a] / n) * (sum[b] / n)
    });
    let evd = cov
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Eigen {
            n: dim,
            reason: format!("{e:?}"),
        })?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let m = (max_filters / 2).min(dim);
    let mut filters = Vec::with_capacity(2 * m * dim);
    for &j in &order[..m] {
        let scale = 1.0 / (s[j].max(0.0) + eps).sqrt();
        let direction: Vec<f32> = (0..dim).map(|r| (u[(r, j)] * scale) as f32).collect();
        filters.extend_from_slice(&direction);
        filters.extend(direction.iter().map(|v| -v));
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random images with strongly correlated channels and neighbouring pixels, as photographs.
    fn correlated_images(n: usize) -> ImageSet {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut pixels = vec![0u8; n * IMAGE_BYTES];
        for img in pixels.chunks_exact_mut(IMAGE_BYTES) {
            let mut base = [0f32; SIDE * SIDE];
            let mut v = 128f32;
            for b in base.iter_mut() {
                v = (v + rng.random_range(-40.0f32..40.0)).clamp(0.0, 255.0);
                *b = v;
            }
            for c in 0..3 {
                for (p, b) in base.iter().enumerate() {
                    let jitter = rng.random_range(-10.0f32..10.0);
                    img[c * SIDE * SIDE + p] = (b + jitter).clamp(0.0, 255.0) as u8;
                }
            }
        }
        ImageSet::new(pixels, vec![0; n], 1).unwrap()
    }

    #[test]
    fn the_filters_whiten_the_patches_they_were_fitted_on() {
        let set = correlated_images(6);
        let norm = Normalize::CIFAR10;
        let (kernel, eps) = (3, 1e-6);
        let filters = whitened_patch_filters(&set, &norm, kernel, 64, 6, eps).unwrap();
        let dim = 27;
        assert_eq!(filters.len(), 2 * 27 * dim, "m = min(64 / 2, 27) pairs");
        // Responses of the even (+) filters at every patch position of the fitting images.
        let positions = SIDE - kernel + 1;
        let mut responses: Vec<Vec<f64>> = Vec::new();
        for i in 0..6 {
            let px = norm.apply(set.image(i));
            for y in 0..positions {
                for x in 0..positions {
                    let patch: Vec<f64> = (0..dim)
                        .map(|col| {
                            let (c, dy, dx) = (col / 9, (col / 3) % 3, col % 3);
                            f64::from(px[c * 1024 + (y + dy) * SIDE + x + dx])
                        })
                        .collect();
                    responses.push(
                        (0..27)
                            .map(|f| {
                                let w = &filters[2 * f * dim..(2 * f + 1) * dim];
                                w.iter().zip(&patch).map(|(w, p)| f64::from(*w) * p).sum()
                            })
                            .collect(),
                    );
                }
            }
        }
        let n = responses.len() as f64;
        let mean: Vec<f64> = (0..27)
            .map(|f| responses.iter().map(|r| r[f]).sum::<f64>() / n)
            .collect();
        for a in 0..27 {
            for b in 0..27 {
                let cov = responses
                    .iter()
                    .map(|r| (r[a] - mean[a]) * (r[b] - mean[b]))
                    .sum::<f64>()
                    / n;
                let expected = if a == b { 1.0 } else { 0.0 };
                assert!(
                    (cov - expected).abs() < 1e-3,
                    "covariance of responses {a}, {b}: {cov}"
                );
            }
        }
        // Odd filters are the even ones negated.
        assert!(filters[dim..2 * dim]
            .iter()
            .zip(&filters[..dim])
            .all(|(n, p)| *n == -*p));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let set = correlated_images(1);
        let norm = Normalize::CIFAR10;
        for (kernel, max, images, eps, field) in [
            (0, 8, 1, 1e-3, "kernel"),
            (33, 8, 1, 1e-3, "kernel"),
            (3, 1, 1, 1e-3, "max_filters"),
            (3, 8, 0, 1e-3, "images"),
            (3, 8, 1, 0.0, "eps"),
            (3, 8, 1, f64::NAN, "eps"),
        ] {
            let err = whitened_patch_filters(&set, &norm, kernel, max, images, eps).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }
}
