//! Criterion benchmarks of `nin-data`: parsing the whole real CIFAR-10 archive, and the augmented
//! batch pipeline (crop + flip + normalise into tensors, one prefetch thread).
//! Goal: at least 20,000 augmented images per second on one core.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nin_data::{
    Dataset, ImageSet, LoadOptions, Loader, LoaderConfig, Normalize, Preprocess, IMAGE_BYTES,
};

fn real_archive() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .to_path_buf();
    let p = root
        .join("..")
        .join("shared")
        .join("data")
        .join("cifar-10-binary.tar.gz");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipping the parse benchmark: ../shared/data/cifar-10-binary.tar.gz is absent");
        None
    }
}

fn parse(c: &mut Criterion) {
    let Some(path) = real_archive() else { return };
    let mut g = c.benchmark_group("parse");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(59_968));
    g.bench_function("cifar10_archive", |b| {
        b.iter(|| {
            let opts = LoadOptions {
                data: Some(path.clone()),
                ..Default::default()
            };
            nin_data::load(Dataset::Cifar10, &opts).map(|c| c.train.len())
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    const N: usize = 10_240;
    let set = match real_archive() {
        Some(p) => match nin_data::load(
            Dataset::Cifar10,
            &LoadOptions {
                data: Some(p),
                ..Default::default()
            },
        ) {
            Ok(c) => c.train.limit(N),
            Err(e) => {
                eprintln!("skipping the pipeline benchmark: {e}");
                return;
            }
        },
        None => {
            let pixels = (0..N * IMAGE_BYTES).map(|k| (k * 31 % 256) as u8).collect();
            match ImageSet::new(pixels, (0..N as u32).map(|i| i % 10).collect(), 10) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("skipping the pipeline benchmark: {e}");
                    return;
                }
            }
        }
    };
    let loader = match Loader::new(
        set,
        LoaderConfig::train(128, 0),
        Preprocess::Normalize(Normalize::CIFAR10),
        Device::Cpu,
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipping the pipeline benchmark: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(N as u64));
    let mut epoch = 0;
    g.bench_function("augmented_epoch_10240_images_batch_128", |b| {
        b.iter(|| {
            epoch += 1;
            let mut n_images = 0;
            for batch in loader.epoch(epoch).flatten() {
                n_images += batch.images.dims()[0];
            }
            n_images
        })
    });
    g.throughput(Throughput::Elements(128));
    g.bench_function("augmented_host_batch_128_same_thread", |b| {
        b.iter(|| loader.host_batch(epoch, 5).map(|h| h.labels.len()))
    });
    g.finish();
}

criterion_group!(benches, parse, pipeline);
criterion_main!(benches);
