//! Which CIFAR dataset, and the facts of its official binary archives that every reader and
//! writer of the formats must agree on: file names, record layout, classes, splits.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bytes of pixels in one image: 3 planes of 32×32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// CIFAR-10's class names, in label order (the archive's `batches.meta.txt`).
pub const CIFAR10_LABELS: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The dataset's home page, where the official archives and their MD5 sums are published.
pub const HOME_PAGE: &str = "https://www.cs.toronto.edu/~kriz/cifar.html";

/// Which CIFAR dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    /// CIFAR-10: 10 classes, 50,000 training and 10,000 test images.
    Cifar10,
    /// CIFAR-100: 100 fine classes in 20 coarse superclasses.
    Cifar100,
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
        })
    }
}

impl std::str::FromStr for Dataset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "cifar10" => Ok(Dataset::Cifar10),
            "cifar100" => Ok(Dataset::Cifar100),
            _ => Err(Error::invalid(
                "dataset",
                "dataset",
                format!("expected cifar10 or cifar100, got `{s}`"),
            )),
        }
    }
}

impl Dataset {
    /// File name of the official archive.
    pub fn archive_name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar-10-binary.tar.gz",
            Dataset::Cifar100 => "cifar-100-binary.tar.gz",
        }
    }
    /// Folder the archive extracts to.
    pub fn folder_name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar-10-batches-bin",
            Dataset::Cifar100 => "cifar-100-binary",
        }
    }
    /// Published MD5 of the official archive.
    pub fn archive_md5(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "c32a1d4ab5d03f1284b67883e8d87530",
            Dataset::Cifar100 => "03b5dce01913d631647c71ecec9e9cb8",
        }
    }
    /// Bytes per record: label byte(s) then 3072 pixel bytes.
    pub fn record_size(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }
    /// Label bytes per record (1 for CIFAR-10, coarse + fine for CIFAR-100).
    pub fn label_bytes(self) -> usize {
        match self {
            Dataset::Cifar10 => 1,
            Dataset::Cifar100 => 2,
        }
    }
    /// Number of classes for a label kind (CIFAR-10 ignores the kind).
    pub fn n_classes(self, kind: LabelKind) -> usize {
        match (self, kind) {
            (Dataset::Cifar10, _) => 10,
            (Dataset::Cifar100, LabelKind::Fine) => 100,
            (Dataset::Cifar100, LabelKind::Coarse) => 20,
        }
    }
    /// Record files of the training split, relative to the extracted folder.
    pub fn train_files(self) -> &'static [&'static str] {
        match self {
            Dataset::Cifar10 => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            Dataset::Cifar100 => &["train.bin"],
        }
    }
    /// Record files of the test split, relative to the extracted folder.
    pub fn test_files(self) -> &'static [&'static str] {
        match self {
            Dataset::Cifar10 => &["test_batch.bin"],
            Dataset::Cifar100 => &["test.bin"],
        }
    }
    /// Label-names files, relative to the extracted folder: (fine or only, coarse).
    pub fn names_files(self) -> (&'static str, Option<&'static str>) {
        match self {
            Dataset::Cifar10 => ("batches.meta.txt", None),
            Dataset::Cifar100 => ("fine_label_names.txt", Some("coarse_label_names.txt")),
        }
    }
    /// Every member the loader reads, relative to the extracted folder.
    pub fn members(self) -> Vec<&'static str> {
        let (names, coarse) = self.names_files();
        let mut v: Vec<&'static str> = self.train_files().to_vec();
        v.extend_from_slice(self.test_files());
        v.push(names);
        v.extend(coarse);
        v
    }
}

/// Which label of a CIFAR-100 record to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelKind {
    /// The 100 fine classes (the default).
    #[default]
    Fine,
    /// The 20 coarse superclasses.
    Coarse,
}

/// A named split of the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training images, less the validation hold-out if any.
    Train,
    /// The validation images held out of the training set.
    Val,
    /// The official test images.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        })
    }
}
