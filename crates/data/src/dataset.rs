//! What a CIFAR dataset is: its two kinds, their record layouts and file names, the in-memory
//! image set (`u8`, CHW, as stored) and the train / validation / test splits.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use nin_format::{Dataset, LabelKind, Split, HOME_PAGE, IMAGE_BYTES};

/// How many training images to hold out for validation, chosen reproducibly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holdout {
    /// Number of validation images (5,000 gives 45k/5k; the paper's protocol 10,000 gives 40k/10k).
    pub size: usize,
    /// Seed of the stratified draw.
    pub seed: u64,
}

/// Images in memory as stored (`u8`, CHW, `IMAGE_BYTES` per image) with one label each.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Pixels of all images, `len() * IMAGE_BYTES` bytes.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u32>,
    /// Number of classes the labels range over.
    pub n_classes: usize,
}

impl ImageSet {
    /// Builds a set, checking that pixels and labels agree and every label is in range.
    pub fn new(pixels: Vec<u8>, labels: Vec<u32>, n_classes: usize) -> Result<Self> {
        if pixels.len() != labels.len() * IMAGE_BYTES {
            return Err(Error::InvalidConfig {
                field: "pixels",
                expected: format!(
                    "{} bytes for {} labels",
                    labels.len() * IMAGE_BYTES,
                    labels.len()
                ),
                got: format!("{} bytes", pixels.len()),
            });
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(Error::InvalidConfig {
                field: "labels",
                expected: format!("labels below {n_classes}"),
                got: bad.to_string(),
            });
        }
        Ok(ImageSet {
            pixels,
            labels,
            n_classes,
        })
    }
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The pixels of image `i` (CHW). Panics when `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }
    /// Number of images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.n_classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
    /// The first `n` images (all of them when `n >= len()`), for quick runs.
    pub fn limit(mut self, n: usize) -> Self {
        if n < self.len() {
            self.labels.truncate(n);
            self.pixels.truncate(n * IMAGE_BYTES);
        }
        self
    }
    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let mut pixels = Vec::with_capacity(indices.len() * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        ImageSet {
            pixels,
            labels,
            n_classes: self.n_classes,
        }
    }
    /// Splits into (train, validation): a stratified draw of `holdout.size` images, the same for a
    /// given seed; both parts keep the original order.
    pub fn holdout(&self, holdout: Holdout) -> Result<(ImageSet, ImageSet)> {
        if holdout.size == 0 || holdout.size >= self.len() {
            return Err(Error::InvalidConfig {
                field: "holdout.size",
                expected: format!("1..{} (fewer than the training images)", self.len()),
                got: holdout.size.to_string(),
            });
        }
        let counts = self.class_counts();
        // Quota per class proportional to its count; the rounding remainder goes to the first classes.
        let mut quota: Vec<usize> = counts
            .iter()
            .map(|&c| c * holdout.size / self.len())
            .collect();
        let mut missing = holdout.size - quota.iter().sum::<usize>();
        for (q, &c) in quota.iter_mut().zip(&counts) {
            if missing == 0 {
                break;
            }
            if *q < c {
                *q += 1;
                missing -= 1;
            }
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut crate::rng::rng_for(
            holdout.seed,
            crate::rng::TAG_HOLDOUT,
            0,
            0,
        ));
        let mut is_val = vec![false; self.len()];
        for i in order {
            let c = self.labels[i] as usize;
            if quota[c] > 0 {
                quota[c] -= 1;
                is_val[i] = true;
            }
        }
        let (val, train): (Vec<usize>, Vec<usize>) = (0..self.len()).partition(|&i| is_val[i]);
        Ok((self.select(&train), self.select(&val)))
    }
}

/// A loaded CIFAR dataset: both official splits and the label names.
#[derive(Clone, Debug)]
pub struct Cifar {
    /// Which dataset.
    pub dataset: Dataset,
    /// Which label kind `train` and `test` carry.
    pub label_kind: LabelKind,
    /// The official training split.
    pub train: ImageSet,
    /// The official test split.
    pub test: ImageSet,
    /// Names of the classes of `label_kind`, indexed by label.
    pub label_names: Vec<String>,
    /// Where the data was read from (an archive or an extracted folder).
    pub source: PathBuf,
}

impl Cifar {
    /// The images of `split`; `Val` needs a hold-out, and `Train` excludes it when one is given.
    pub fn split(&self, split: Split, holdout: Option<Holdout>) -> Result<ImageSet> {
        match (split, holdout) {
            (Split::Test, _) => Ok(self.test.clone()),
            (Split::Train, None) => Ok(self.train.clone()),
            (Split::Train, Some(h)) => Ok(self.train.holdout(h)?.0),
            (Split::Val, Some(h)) => Ok(self.train.holdout(h)?.1),
            (Split::Val, None) => Err(Error::InvalidConfig {
                field: "holdout",
                expected: "a validation size (e.g. 5000) to draw the val split from train".into(),
                got: "none".into(),
            }),
        }
    }
}

/// Parses the records of one file of `dataset`, validating size and labels.
///
/// `path` only names the file in errors. Returns the pixels and, per record, the class label
/// (CIFAR-10) or the label of `kind` (CIFAR-100).
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    dataset: Dataset,
    kind: LabelKind,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let rs = dataset.record_size();
    if bytes.is_empty() {
        return Err(Error::EmptyFile {
            path: path.into(),
            record_size: rs,
        });
    }
    if bytes.len() % rs != 0 {
        return Err(Error::PartialRecord {
            path: path.into(),
            size: bytes.len() as u64,
            record_size: rs,
            remainder: bytes.len() % rs,
        });
    }
    let n = bytes.len() / rs;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (record, rec) in bytes.chunks_exact(rs).enumerate() {
        let checks: &[(&'static str, u8, u8)] = match dataset {
            Dataset::Cifar10 => &[("class", rec[0], 9)],
            Dataset::Cifar100 => &[("coarse", rec[0], 19), ("fine", rec[1], 99)],
        };
        for &(kind, got, max) in checks {
            if got > max {
                return Err(Error::LabelOutOfRange {
                    path: path.into(),
                    record,
                    kind,
                    got,
                    max,
                });
            }
        }
        let label = match (dataset, kind) {
            (Dataset::Cifar10, _) | (Dataset::Cifar100, LabelKind::Coarse) => rec[0],
            (Dataset::Cifar100, LabelKind::Fine) => rec[1],
        };
        labels.push(u32::from(label));
        pixels.extend_from_slice(&rec[dataset.label_bytes()..]);
    }
    Ok((pixels, labels))
}

/// Parses a label-names file: one name per non-empty line, `expected` of them.
pub fn parse_names(path: &Path, bytes: &[u8], expected: usize) -> Result<Vec<String>> {
    let text = String::from_utf8_lossy(bytes);
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != expected {
        return Err(Error::LabelNames {
            path: path.into(),
            expected,
            got: names.len(),
        });
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record10(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, IMAGE_BYTES));
        r
    }

    #[test]
    fn parses_any_whole_number_of_records() -> Result<()> {
        let bytes: Vec<u8> = (0..7u8).flat_map(|i| record10(i % 10, i)).collect();
        let (px, labels) = parse_records(
            Path::new("x.bin"),
            &bytes,
            Dataset::Cifar10,
            LabelKind::Fine,
        )?;
        assert_eq!(labels, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(px.len(), 7 * IMAGE_BYTES);
        assert_eq!(px[IMAGE_BYTES], 1);
        Ok(())
    }

    #[test]
    fn partial_record_is_an_error_naming_the_file() {
        let mut bytes = record10(1, 0);
        bytes.extend_from_slice(&[3; 100]);
        let err = parse_records(
            Path::new("data_batch_9.bin"),
            &bytes,
            Dataset::Cifar10,
            LabelKind::Fine,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::PartialRecord { remainder: 100, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("data_batch_9.bin"));
    }

    #[test]
    fn out_of_range_labels_are_errors() {
        let bytes = [record10(3, 0), record10(10, 0)].concat();
        let err = parse_records(
            Path::new("b.bin"),
            &bytes,
            Dataset::Cifar10,
            LabelKind::Fine,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::LabelOutOfRange {
                    record: 1,
                    got: 10,
                    max: 9,
                    ..
                }
            ),
            "{err}"
        );
        let mut rec = vec![5u8, 100];
        rec.extend(std::iter::repeat_n(0, IMAGE_BYTES));
        let err = parse_records(
            Path::new("train.bin"),
            &rec,
            Dataset::Cifar100,
            LabelKind::Fine,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::LabelOutOfRange {
                    kind: "fine",
                    got: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("train.bin"));
    }

    #[test]
    fn cifar100_gives_both_label_kinds() -> Result<()> {
        let mut rec = vec![7u8, 42];
        rec.extend(std::iter::repeat_n(9, IMAGE_BYTES));
        let (_, fine) = parse_records(Path::new("t"), &rec, Dataset::Cifar100, LabelKind::Fine)?;
        let (_, coarse) =
            parse_records(Path::new("t"), &rec, Dataset::Cifar100, LabelKind::Coarse)?;
        assert_eq!((fine[0], coarse[0]), (42, 7));
        Ok(())
    }

    #[test]
    fn empty_file_is_an_error() {
        let err =
            parse_records(Path::new("e.bin"), &[], Dataset::Cifar10, LabelKind::Fine).unwrap_err();
        assert!(matches!(err, Error::EmptyFile { .. }));
    }

    #[test]
    fn holdout_is_stratified_deterministic_and_disjoint() -> Result<()> {
        let labels: Vec<u32> = (0..1000).map(|i| i % 10).collect();
        let pixels: Vec<u8> = (0..1000)
            .flat_map(|i| std::iter::repeat_n((i % 251) as u8, IMAGE_BYTES))
            .collect();
        let set = ImageSet::new(pixels, labels, 10)?;
        let h = Holdout { size: 100, seed: 3 };
        let (train, val) = set.holdout(h)?;
        assert_eq!((train.len(), val.len()), (900, 100));
        assert!(val.class_counts().iter().all(|&c| c == 10));
        assert_eq!(set.holdout(h)?.1, val);
        assert_ne!(set.holdout(Holdout { size: 100, seed: 4 })?.1, val);
        Ok(())
    }
}
