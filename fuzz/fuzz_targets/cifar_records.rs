//! CIFAR record files and label-name files as `nin-data` parses them: any bytes must give images
//! and labels in range, or an error; never a panic or an abort.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nin_data::{parse_names, parse_records, Dataset, LabelKind};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let (dataset, kind) = match selector % 3 {
        0 => (Dataset::Cifar10, LabelKind::Fine),
        1 => (Dataset::Cifar100, LabelKind::Fine),
        _ => (Dataset::Cifar100, LabelKind::Coarse),
    };
    let path = Path::new("fuzz.bin");
    if let Ok((pixels, labels)) = parse_records(path, bytes, dataset, kind) {
        assert_eq!(pixels.len(), labels.len() * nin_data::IMAGE_BYTES);
        let n_classes = dataset.n_classes(kind) as u32;
        assert!(labels.iter().all(|&l| l < n_classes));
    }
    let _ = parse_names(path, bytes, dataset.n_classes(kind));
});
