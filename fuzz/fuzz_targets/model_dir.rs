//! A model directory as `nin predict --model DIR` reads it: `config.json` and
//! `model.safetensors` (the input's first two bytes give the config's length). Any bytes must
//! load a model that then classifies with finite outputs, or give an error; never a panic or an
//! abort on a huge declared size.
#![no_main]

use std::sync::OnceLock;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nin-fuzz-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let split = (usize::from(data[0]) << 8 | usize::from(data[1])).min(data.len() - 2);
    let (config, weights) = data[2..].split_at(split);
    let dir = scratch();
    std::fs::write(dir.join("config.json"), config).expect("scratch write");
    std::fs::write(dir.join("model.safetensors"), weights).expect("scratch write");
    let Ok(classifier) = nin_zoo::Classifier::load(dir, &Device::Cpu) else {
        return;
    };
    let (h, w) = classifier.input_size();
    let pixels = vec![128u8; 3 * h * w];
    if let Ok(inputs) = classifier.inputs_from_pixels(&pixels) {
        if let Ok(predictions) = classifier.classify(&inputs) {
            assert!(predictions.logits.iter().flatten().all(|v| v.is_finite()));
        }
    }
});
