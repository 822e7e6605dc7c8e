//! Tests on the real archives in `../shared/data` (skipped with a message when absent). The
//! CIFAR-10 archive is parsed once and shared by every test of this file.

mod common;

use std::sync::OnceLock;

use candle_core::Device;
use common::*;
use nin_data::{
    load, Cifar, Dataset, Holdout, LabelKind, LoadOptions, Loader, LoaderConfig, Normalize,
    Preprocess, Split,
};

fn cifar10() -> Option<&'static Cifar> {
    static DATA: OnceLock<Option<Cifar>> = OnceLock::new();
    DATA.get_or_init(|| {
        let path = real_archive("cifar-10-binary.tar.gz")?;
        Some(
            load(
                Dataset::Cifar10,
                &LoadOptions {
                    data: Some(path),
                    ..Default::default()
                },
            )
            .expect("real CIFAR-10 parses"),
        )
    })
    .as_ref()
}

#[test]
fn real_cifar10_counts_and_names() -> TestResult {
    let Some(c) = cifar10() else { return Ok(()) };
    assert_eq!((c.train.len(), c.test.len()), (50_000, 9_968));
    assert!(c.train.class_counts().iter().all(|&n| n == 5000));
    let test = c.test.class_counts();
    assert_eq!((test[7], test[8], test[0]), (999, 969, 1000));
    // The archive's own names are the ones the zoo labels CIFAR-10 with.
    assert_eq!(c.label_names, nin_format::CIFAR10_LABELS);
    Ok(())
}

#[test]
fn real_cifar10_statistics_match_the_published_constants() -> TestResult {
    let Some(c) = cifar10() else { return Ok(()) };
    let n = Normalize::from_set(&c.train);
    for ch in 0..3 {
        assert!(
            (n.mean[ch] - Normalize::CIFAR10.mean[ch]).abs() < 5e-4,
            "{n:?}"
        );
        assert!(
            (n.std[ch] - Normalize::CIFAR10.std[ch]).abs() < 5e-4,
            "{n:?}"
        );
    }
    Ok(())
}

#[test]
fn real_cifar10_splits() -> TestResult {
    let Some(c) = cifar10() else { return Ok(()) };
    for (size, train) in [(5000, 45_000), (10_000, 40_000)] {
        let h = Holdout { size, seed: 0 };
        let (t, v) = (
            c.split(Split::Train, Some(h))?,
            c.split(Split::Val, Some(h))?,
        );
        assert_eq!((t.len(), v.len()), (train, size));
        assert!(v.class_counts().iter().all(|&n| n == size / 10));
    }
    let l = Loader::new(
        c.train.clone().limit(512),
        LoaderConfig::train(128, 1),
        Preprocess::Normalize(Normalize::CIFAR10),
        Device::Cpu,
    )?;
    assert_eq!(l.epoch(0).count(), 4);
    Ok(())
}

#[test]
fn real_cifar100_mini_both_label_kinds() -> TestResult {
    let Some(path) = real_archive("cifar-100-binary-mini.tar.gz") else {
        return Ok(());
    };
    let fine = load(
        Dataset::Cifar100,
        &LoadOptions {
            data: Some(path.clone()),
            label_kind: LabelKind::Fine,
        },
    )?;
    let coarse = load(
        Dataset::Cifar100,
        &LoadOptions {
            data: Some(path),
            label_kind: LabelKind::Coarse,
        },
    )?;
    assert_eq!((fine.train.len(), fine.test.len()), (2000, 2000));
    assert!(fine.train.class_counts().iter().all(|&n| n == 20));
    assert_eq!(
        (fine.label_names.len(), coarse.label_names.len()),
        (100, 20)
    );
    assert_eq!(coarse.train.class_counts().iter().sum::<usize>(), 2000);
    assert_eq!(fine.label_names[0], "apple");
    assert_eq!(fine.train.pixels, coarse.train.pixels);
    Ok(())
}
