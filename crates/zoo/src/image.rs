//! Decoding an image file into the model's input size (the `image` feature).

#[cfg(feature = "files")]
use std::path::Path;

use image::imageops::FilterType;

#[cfg(feature = "files")]
use crate::error::{Error, Result};

/// The largest image accepted, in pixels per side: far above any photo, far below a decoding
/// bomb (a 20000×20000 PNG of a few hundred kilobytes decodes to 1.5 GB).
const MAX_SIDE: u32 = 8192;

/// The largest image file read (a 8192×8192 PNG of noise is about 200 MB).
#[cfg(feature = "files")]
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads a PNG or JPEG file and stretches it to `height × width` with a triangle (bilinear)
/// filter, as CHW `u8` pixels.
#[cfg(feature = "files")]
pub fn load_rgb_chw(path: &Path, height: usize, width: usize) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    if path.is_dir() {
        return Err(bad("is a folder, not an image file".into()));
    }
    let bytes = nin_format::read_bounded(path, "image file", MAX_FILE_BYTES).map_err(|e| {
        bad(format!(
            "cannot open: {}",
            std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string)
        ))
    })?;
    decode_rgb_chw(&bytes, height, width).map_err(bad)
}

/// Decodes the bytes of a PNG or JPEG image (the format is read from the bytes, not a file
/// name) and stretches it to `height × width`, as CHW `u8` pixels; the error says why not.
pub fn decode_rgb_chw(
    bytes: &[u8],
    height: usize,
    width: usize,
) -> std::result::Result<Vec<u8>, String> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("not a readable PNG or JPEG image: {e}"))?
        .to_rgb8();
    let img = image::imageops::resize(&img, width as u32, height as u32, FilterType::Triangle);
    let mut pixels = Vec::with_capacity(3 * height * width);
    for c in 0..3 {
        for y in 0..height {
            for x in 0..width {
                pixels.push(img.get_pixel(x as u32, y as u32)[c]);
            }
        }
    }
    Ok(pixels)
}
