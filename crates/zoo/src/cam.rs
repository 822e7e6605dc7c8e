//! Class activation maps: NIN's classifier is global average pooling over one map per class, so
//! each class map is a heat map of the evidence for its class and its mean is the logit. This
//! module turns those maps into pictures: copied off the device per image and class
//! ([`ClassMaps`]), upsampled smoothly to the image and normalised ([`heatmap`]), coloured with
//! the perceptually uniform viridis colour map ([`viridis`]) and blended over the image
//! ([`blend`]).
//!
//! Everything here is pure computation on slices (no files, threads or drawing), so it builds for
//! `wasm32-unknown-unknown` and the browser demo shares it with `nin explain`. Pixels are `u8`,
//! row-major, interleaved RGB (HWC) unless a name says CHW; maps are row-major `f32`.
//!
//! ```
//! use nin_zoo::cam;
//! // A 2×2 class map with its evidence in the top-left corner, shown at 8×8.
//! let heat = cam::heatmap(&[4.0, 1.0, 1.0, 0.0], (2, 2), (8, 8))?;
//! assert_eq!(heat.len(), 64);
//! assert_eq!(heat[0], 1.0); // normalised: the strongest evidence is 1, the weakest 0
//! let image = vec![128u8; 3 * 64]; // grey 8×8 RGB
//! let overlay = cam::blend(&image, &heat, cam::DEFAULT_ALPHA)?;
//! assert_eq!(&overlay[..3], &[191, 180, 83]); // half grey, half viridis' yellow
//! # Ok::<(), nin_zoo::Error>(())
//! ```

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::inference::Classifier;

/// How much of the colour map [`blend`] mixes over the image when the caller has no preference:
/// half, so both the evidence and the object stay visible.
pub const DEFAULT_ALPHA: f32 = 0.5;

/// The class maps of a batch, on the host: for every image and class, one `height × width`
/// map whose mean is that class's logit.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassMaps {
    images: usize,
    classes: usize,
    height: usize,
    width: usize,
    values: Vec<f32>,
}

impl ClassMaps {
    /// Copies a `[N, C, h, w]` class-map tensor (as [`crate::Predictions::class_maps`] holds)
    /// to the host as `f32`.
    pub fn from_tensor(maps: &Tensor) -> Result<Self> {
        let &[images, classes, height, width] = maps.dims() else {
            return Err(Error::CamShape {
                what: "class maps",
                expected: "a 4-D tensor [N, C, h, w]".into(),
                got: format!("{:?}", maps.dims()),
            });
        };
        let values = maps
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1::<f32>()?;
        Ok(Self {
            images,
            classes,
            height,
            width,
            values,
        })
    }

    /// Builds class maps from host values laid out `[images, classes, height, width]`.
    pub fn from_vec(
        values: Vec<f32>,
        images: usize,
        classes: usize,
        (height, width): (usize, usize),
    ) -> Result<Self> {
        let expected = images * classes * height * width;
        if values.len() != expected {
            return Err(Error::CamShape {
                what: "class maps",
                expected: format!("{images}×{classes}×{height}×{width} = {expected} values"),
                got: format!("{} values", values.len()),
            });
        }
        Ok(Self {
            images,
            classes,
            height,
            width,
            values,
        })
    }

    /// The number of images.
    pub fn images(&self) -> usize {
        self.images
    }

    /// The number of classes (maps per image).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// `(height, width)` of each map (8×8 for the zoo's models on 32×32 images).
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// The map of `class` for `image`, row-major; `None` when either is out of range.
    pub fn map(&self, image: usize, class: usize) -> Option<&[f32]> {
        if image >= self.images || class >= self.classes {
            return None;
        }
        let plane = self.height * self.width;
        let start = (image * self.classes + class) * plane;
        self.values.get(start..start + plane)
    }

    /// The mean of a map: the logit global average pooling makes of it (`None` out of range).
    pub fn mean(&self, image: usize, class: usize) -> Option<f32> {
        let map = self.map(image, class)?;
        let sum: f64 = map.iter().map(|&v| f64::from(v)).sum();
        Some((sum / map.len().max(1) as f64) as f32)
    }
}

impl Classifier {
    /// The class maps of an input batch `[N, 3, H, W]` (from [`Classifier::inputs_from_pixels`])
    /// before global average pooling, on the host. Refuses non-finite maps.
    pub fn class_maps(&self, inputs: &Tensor) -> Result<ClassMaps> {
        let maps = ClassMaps::from_tensor(&self.model().class_maps(inputs, false)?)?;
        if maps.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                dir: self.dir().to_path_buf(),
                what: "class maps",
            });
        }
        Ok(maps)
    }
}

/// Checks that a plane of `len` values is `height × width`.
fn check_plane(what: &'static str, len: usize, (height, width): (usize, usize)) -> Result<()> {
    if len != height * width || len == 0 {
        return Err(Error::CamShape {
            what,
            expected: format!(
                "a non-empty {height}×{width} plane ({} values)",
                height * width
            ),
            got: format!("{len} values"),
        });
    }
    Ok(())
}

/// Keys' cubic convolution kernel with `a = -0.75`, as PyTorch's and OpenCV's bicubic use.
fn cubic(x: f32) -> f32 {
    const A: f32 = -0.75;
    let x = x.abs();
    if x <= 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// For each of `out` output positions along an axis of `len` input samples: the four input
/// indices (clamped to the edge) and their bicubic weights, with half-pixel centres (the
/// convention of PyTorch's `align_corners=False`, OpenCV and image resizers).
fn taps(len: usize, out: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = len as f32 / out as f32;
    (0..out)
        .map(|o| {
            let src = (o as f32 + 0.5) * scale - 0.5;
            let base = src.floor();
            let frac = src - base;
            let mut idx = [0; 4];
            let mut w = [0.0; 4];
            for k in 0..4 {
                let i = base as isize + k as isize - 1;
                idx[k] = i.clamp(0, len as isize - 1) as usize;
                w[k] = cubic(frac - (k as f32 - 1.0));
            }
            (idx, w)
        })
        .collect()
}

/// Upsamples (or resizes) one `size = (height, width)` plane to `out = (height, width)` with
/// bicubic interpolation: smooth, unlike nearest neighbour's blocks or bilinear's creases, which
/// matters when an 8×8 class map covers a 256-pixel panel. It may overshoot the input's range
/// slightly near sharp peaks; [`heatmap`] normalises afterwards.
pub fn upsample(map: &[f32], size: (usize, usize), out: (usize, usize)) -> Result<Vec<f32>> {
    check_plane("map", map.len(), size)?;
    let (h, w) = size;
    let (oh, ow) = out;
    let across = taps(w, ow);
    let down = taps(h, oh);
    // Rows first (h × ow), then columns (oh × ow).
    let mut rows = vec![0.0f32; h * ow];
    for y in 0..h {
        let src = &map[y * w..(y + 1) * w];
        for (x, (idx, wt)) in across.iter().enumerate() {
            rows[y * ow + x] = (0..4).map(|k| src[idx[k]] * wt[k]).sum();
        }
    }
    let mut result = vec![0.0f32; oh * ow];
    for (y, (idx, wt)) in down.iter().enumerate() {
        for x in 0..ow {
            result[y * ow + x] = (0..4).map(|k| rows[idx[k] * ow + x] * wt[k]).sum();
        }
    }
    Ok(result)
}

/// Rescales values in place to `[0, 1]`: the smallest becomes 0, the largest 1 (min-max, as the
/// CAM paper shows its maps). A constant plane, which holds no evidence of where, becomes all 0;
/// non-finite values become 0 too.
pub fn normalize(values: &mut [f32]) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let range = hi - lo;
    for v in values.iter_mut() {
        *v = if v.is_finite() && range > 0.0 {
            (*v - lo) / range
        } else {
            0.0
        };
    }
}

/// A class map made ready to draw: upsampled from `size` to `out` ([`upsample`]) and normalised
/// to `[0, 1]` ([`normalize`]), row-major `out.0 × out.1`.
pub fn heatmap(map: &[f32], size: (usize, usize), out: (usize, usize)) -> Result<Vec<f32>> {
    let mut heat = upsample(map, size, out)?;
    normalize(&mut heat);
    Ok(heat)
}

/// The viridis colour of `t` in `[0, 1]` (clamped; NaN reads as 0): perceptually uniform, so
/// equal steps of evidence look like equal steps of colour, readable in grey and by most
/// colour-blind viewers. From the `colorous` crate (d3-scale-chromatic's tables).
pub fn viridis(t: f32) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let c = colorous::VIRIDIS.eval_continuous(f64::from(t));
    [c.r, c.g, c.b]
}

/// Blends the viridis colours of `heat` (values in `[0, 1]`, one per pixel) over an RGB image
/// (HWC, `3 × heat.len()` bytes): `(1 − alpha) · image + alpha · colour`, `alpha` clamped to
/// `[0, 1]`. Returns RGB (HWC).
pub fn blend(rgb: &[u8], heat: &[f32], alpha: f32) -> Result<Vec<u8>> {
    if rgb.len() != 3 * heat.len() {
        return Err(Error::CamShape {
            what: "image",
            expected: format!("3 bytes per heat-map value ({})", 3 * heat.len()),
            got: format!("{} bytes", rgb.len()),
        });
    }
    let alpha = if alpha.is_nan() {
        DEFAULT_ALPHA
    } else {
        alpha.clamp(0.0, 1.0)
    };
    let mut out = Vec::with_capacity(rgb.len());
    for (pixel, &t) in rgb.chunks_exact(3).zip(heat) {
        let colour = viridis(t);
        for c in 0..3 {
            let v = (1.0 - alpha) * f32::from(pixel[c]) + alpha * f32::from(colour[c]);
            out.push(v.round().clamp(0.0, 255.0) as u8);
        }
    }
    Ok(out)
}

/// RGB (HWC) to RGBA with opaque alpha, as a browser canvas' `ImageData` wants.
pub fn rgb_to_rgba(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect()
}

/// Resizes one image of CHW `u8` pixels (as [`Classifier::load_image`] and the CIFAR archives
/// hold them) from `size` to `out` with the same bicubic filter as the maps, so an enlarged
/// 32×32 image and its heat map line up pixel for pixel. Returns RGB (HWC).
pub fn upsample_rgb(
    pixels_chw: &[u8],
    size: (usize, usize),
    out: (usize, usize),
) -> Result<Vec<u8>> {
    let plane = size.0 * size.1;
    if pixels_chw.len() != 3 * plane || plane == 0 {
        return Err(Error::CamShape {
            what: "image",
            expected: format!("3×{}×{} CHW bytes ({})", size.0, size.1, 3 * plane),
            got: format!("{} bytes", pixels_chw.len()),
        });
    }
    let channels: Vec<Vec<f32>> = pixels_chw
        .chunks_exact(plane)
        .map(|c| {
            upsample(
                &c.iter().map(|&p| f32::from(p)).collect::<Vec<_>>(),
                size,
                out,
            )
        })
        .collect::<Result<_>>()?;
    let n = out.0 * out.1;
    let mut rgb = Vec::with_capacity(3 * n);
    for i in 0..n {
        for channel in &channels {
            rgb.push(channel[i].round().clamp(0.0, 255.0) as u8);
        }
    }
    Ok(rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_matches_the_published_table_at_fixed_points() {
        // matplotlib's viridis table: #440154 at 0, #3b528b at 0.25, #21918c at 0.5, #5ec962
        // at 0.75, #fde725 at 1 (colorous interpolates a coarser table, so inner points may differ by 2).
        assert_eq!(viridis(0.0), [0x44, 0x01, 0x54]);
        assert_eq!(viridis(1.0), [0xfd, 0xe7, 0x25]);
        for (t, want) in [
            (0.25, [0x3b, 0x52, 0x8b]),
            (0.5, [0x21, 0x91, 0x8c]),
            (0.75, [0x5e, 0xc9, 0x62]),
        ] {
            let got = viridis(t);
            assert!(
                got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 2),
                "viridis({t}) = {got:?}, want {want:?}"
            );
        }
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(7.0), viridis(1.0));
        assert_eq!(viridis(f32::NAN), viridis(0.0));
        // Perceptually uniform maps rise steadily in lightness: luma increases along the map.
        let luma = |c: [u8; 3]| {
            0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2])
        };
        let lumas: Vec<f32> = (0..=20).map(|i| luma(viridis(i as f32 / 20.0))).collect();
        assert!(lumas.windows(2).all(|w| w[1] > w[0]), "{lumas:?}");
    }

    #[test]
    fn upsampling_keeps_constants_and_the_peak_where_it_was() {
        let flat = upsample(&[2.5; 4], (2, 2), (5, 7)).unwrap();
        assert_eq!(flat.len(), 35);
        assert!(flat.iter().all(|&v| (v - 2.5).abs() < 1e-5), "{flat:?}");
        // Evidence in the bottom-right cell of 4×4 peaks in the bottom-right of 32×32.
        let mut map = [0.0f32; 16];
        map[15] = 1.0;
        let heat = heatmap(&map, (4, 4), (32, 32)).unwrap();
        let argmax = (0..heat.len())
            .max_by(|&a, &b| heat[a].total_cmp(&heat[b]))
            .unwrap();
        assert!(argmax / 32 >= 24 && argmax % 32 >= 24, "peak at {argmax}");
        assert_eq!(heat[argmax], 1.0);
        assert!(heat.iter().all(|v| (0.0..=1.0).contains(v)));
        // Same size is the identity.
        let same = upsample(&map, (4, 4), (4, 4)).unwrap();
        assert_eq!(same, map);
    }

    #[test]
    fn shapes_that_do_not_match_are_errors_that_say_what_was_expected() {
        let err = upsample(&[1.0; 5], (2, 2), (4, 4)).unwrap_err();
        assert!(err.to_string().contains("2×2"), "{err}");
        let err = blend(&[0; 5], &[0.5; 2], 0.5).unwrap_err();
        assert!(err.to_string().contains("6"), "{err}");
        assert!(ClassMaps::from_vec(vec![0.0; 3], 1, 1, (2, 2)).is_err());
    }

    #[test]
    fn normalising_a_constant_plane_gives_no_evidence_anywhere() {
        let mut v = [3.0, 3.0, f32::NAN];
        normalize(&mut v);
        assert_eq!(v, [0.0, 0.0, 0.0]);
        let mut v = [-1.0, 0.0, 3.0];
        normalize(&mut v);
        assert_eq!(v, [0.0, 0.25, 1.0]);
    }

    #[test]
    fn blending_mixes_image_and_colour_by_alpha() {
        let image = [200u8, 10, 30];
        assert_eq!(blend(&image, &[1.0], 0.0).unwrap(), image);
        assert_eq!(blend(&image, &[1.0], 1.0).unwrap(), viridis(1.0));
        assert_eq!(
            rgb_to_rgba(&[1, 2, 3, 4, 5, 6]),
            [1, 2, 3, 255, 4, 5, 6, 255]
        );
        // CHW to HWC at the same size is a transpose.
        let chw = [1u8, 2, 3, 4, 5, 6];
        assert_eq!(
            upsample_rgb(&chw, (1, 2), (1, 2)).unwrap(),
            [1, 3, 5, 2, 4, 6]
        );
    }
}
