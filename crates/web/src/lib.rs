//! The zoo in the browser: the inference pipeline of `nin predict` (model directory from bytes,
//! image decoding, mean/std or GCN + ZCA preprocessing, the model, class maps) compiled to
//! WebAssembly and exposed to the demo page's JavaScript with wasm-bindgen.
//!
//! The page (`www/`, built by `cargo xtask web`) fetches a model's files from its own origin,
//! hands their bytes to [`WebClassifier::new`], and classifies the bytes of an image file with
//! [`WebClassifier::classify`]; the class activation maps come from `nin_zoo::cam`, the code
//! `nin explain` draws with. Every failure is a JavaScript `Error` with a message for the page to
//! show: nothing here panics on user input.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io::Cursor;
use std::path::PathBuf;

use candle_core::Device;
use nin_zoo::cam::{self, ClassMaps};
use nin_zoo::{Classifier, ModelFiles, PRETRAINED};
use wasm_bindgen::prelude::*;

/// The largest image file the page accepts: far above any photo, small enough that decoding
/// cannot exhaust the browser tab's memory.
pub const MAX_IMAGE_BYTES: usize = 32 << 20;

/// The largest image side the page decodes (a 4096×4096 RGBA image is 64 MiB in the tab).
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// The side, in pixels, of the enlarged image and class activation map the page draws.
pub const DISPLAY_SIDE: usize = 256;

/// The tags of the registry whose weights this repository ships (`pretrained/<tag>/`), which
/// `cargo xtask web` copies beside the page: the models the page offers.
#[wasm_bindgen]
pub fn shipped_tags() -> Vec<String> {
    PRETRAINED
        .iter()
        .filter(|t| t.in_repo)
        .map(|t| t.name.to_string())
        .collect()
}

/// [`MAX_IMAGE_BYTES`], for the page to refuse a larger file before reading it into memory.
#[wasm_bindgen]
pub fn max_image_bytes() -> usize {
    MAX_IMAGE_BYTES
}

/// The whitening file a model's `config.json` names, if any: the page fetches it too.
#[wasm_bindgen]
pub fn whitening_file(config_json: &[u8]) -> Result<Option<String>, JsError> {
    let files = ModelFiles {
        source: PathBuf::from("config.json"),
        config_json: config_json.to_vec(),
        model_safetensors: Vec::new(),
        whitening: None,
    };
    Ok(files.config().map_err(js)?.pretrained_cfg.whitening)
}

/// A model loaded from its files' bytes, ready to classify images.
#[wasm_bindgen]
pub struct WebClassifier {
    classifier: Classifier,
}

#[wasm_bindgen]
impl WebClassifier {
    /// Loads a model from the bytes of its `config.json`, `model.safetensors` and, when the
    /// configuration names one, its whitening file; `source` (e.g. the URL of the folder) names
    /// the model in error messages.
    #[wasm_bindgen(constructor)]
    pub fn new(
        source: &str,
        config_json: Vec<u8>,
        model_safetensors: Vec<u8>,
        whitening: Option<Vec<u8>>,
    ) -> Result<WebClassifier, JsError> {
        let files = ModelFiles {
            source: PathBuf::from(source),
            config_json,
            model_safetensors,
            whitening,
        };
        let classifier = Classifier::from_files(&files, &Device::Cpu).map_err(js)?;
        Ok(WebClassifier { classifier })
    }

    /// One name per class.
    pub fn labels(&self) -> Vec<String> {
        (0..self.classifier.config().num_classes)
            .map(|i| self.classifier.label(i))
            .collect()
    }

    /// Classifies the bytes of a PNG or JPEG file named `name`: decoded, stretched to the
    /// model's input size with a triangle filter and preprocessed exactly as `nin predict` does.
    pub fn classify(&self, name: &str, image: &[u8]) -> Result<Prediction, JsError> {
        let pixels =
            decode(name, image, self.classifier.input_size()).map_err(|e| JsError::new(&e))?;
        let inputs = self.classifier.inputs_from_pixels(&pixels).map_err(js)?;
        let predictions = self.classifier.classify(&inputs).map_err(js)?;
        let maps = ClassMaps::from_tensor(&predictions.class_maps).map_err(js)?;
        let first = |rows: Vec<Vec<f32>>| rows.into_iter().next().unwrap_or_default();
        Ok(Prediction {
            logits: first(predictions.logits),
            probabilities: first(predictions.probabilities),
            maps,
            pixels,
            input_size: self.classifier.input_size(),
        })
    }
}

/// What the model says about one image, and what the page draws of it.
#[wasm_bindgen]
pub struct Prediction {
    logits: Vec<f32>,
    probabilities: Vec<f32>,
    maps: ClassMaps,
    /// The model's input image, CHW `u8` at `input_size`.
    pixels: Vec<u8>,
    input_size: (usize, usize),
}

#[wasm_bindgen]
impl Prediction {
    /// One logit per class (the mean of its class map).
    pub fn logits(&self) -> Vec<f32> {
        self.logits.clone()
    }

    /// The softmax of the logits.
    pub fn probabilities(&self) -> Vec<f32> {
        self.probabilities.clone()
    }

    /// The `k` most probable classes, most probable first.
    pub fn top_k(&self, k: usize) -> Vec<u32> {
        let mut order: Vec<usize> = (0..self.probabilities.len()).collect();
        order.sort_by(|&a, &b| self.probabilities[b].total_cmp(&self.probabilities[a]));
        order.into_iter().take(k).map(|c| c as u32).collect()
    }

    /// The image the model saw, enlarged to [`DISPLAY_SIDE`]² with the class maps' filter, as
    /// RGBA for a canvas.
    pub fn image_rgba(&self) -> Result<Vec<u8>, JsError> {
        let side = (DISPLAY_SIDE, DISPLAY_SIDE);
        let rgb = cam::upsample_rgb(&self.pixels, self.input_size, side).map_err(js)?;
        Ok(cam::rgb_to_rgba(&rgb))
    }

    /// The class activation map of `class`, upsampled, normalised, coloured (viridis) and
    /// blended over the enlarged image, as [`DISPLAY_SIDE`]² RGBA for a canvas.
    pub fn cam_rgba(&self, class: usize) -> Result<Vec<u8>, JsError> {
        let map = self.maps.map(0, class).ok_or_else(|| {
            JsError::new(&format!(
                "class {class} does not exist (the model has {})",
                self.maps.classes()
            ))
        })?;
        let side = (DISPLAY_SIDE, DISPLAY_SIDE);
        let heat = cam::heatmap(map, self.maps.size(), side).map_err(js)?;
        let rgb = cam::upsample_rgb(&self.pixels, self.input_size, side).map_err(js)?;
        let blended = cam::blend(&rgb, &heat, cam::DEFAULT_ALPHA).map_err(js)?;
        Ok(cam::rgb_to_rgba(&blended))
    }
}

/// The zoo's error as a JavaScript `Error` carrying its message.
fn js(e: nin_zoo::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Decodes an image file's bytes to CHW pixels at `(height, width)`, refusing files and images
/// too large for a browser tab before decoding them.
fn decode(name: &str, bytes: &[u8], (height, width): (usize, usize)) -> Result<Vec<u8>, String> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "{name}: the file is {:.1} MB; the demo takes images up to {} MB",
            bytes.len() as f64 / 1e6,
            MAX_IMAGE_BYTES >> 20
        ));
    }
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("{name}: cannot read: {e}"))?;
    if reader.format().is_none() {
        return Err(format!("{name}: not a PNG or JPEG image"));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("{name}: not a readable PNG or JPEG image: {e}"))?;
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(format!(
            "{name}: the image is {w}×{h} pixels; the demo takes at most {MAX_IMAGE_SIDE} pixels per side"
        ));
    }
    nin_zoo::decode_rgb_chw(bytes, height, width).map_err(|reason| format!("{name}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 3) as u8, 99])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encoding a PNG in memory");
        out.into_inner()
    }

    #[test]
    fn images_are_decoded_at_the_model_size_and_bad_files_named() {
        assert_eq!(
            decode("a.png", &png(40, 20), (32, 32)).unwrap().len(),
            3 * 32 * 32
        );
        let err = decode("notes.txt", b"hello, not an image", (32, 32)).unwrap_err();
        assert_eq!(err, "notes.txt: not a PNG or JPEG image");
        let err = decode("huge.png", &png(MAX_IMAGE_SIDE + 1, 2), (32, 32)).unwrap_err();
        assert!(
            err.contains("4097×2 pixels; the demo takes at most 4096"),
            "{err}"
        );
    }

    #[test]
    fn the_page_offers_the_shipped_tags() {
        assert!(shipped_tags().contains(&"nin_bn.cifar10".to_string()));
    }
}
