//! `nin-data` turns the official CIFAR-10/100 binary archives into training batches: fast,
//! reproducibly and safely.
//!
//! - [`locate`] / [`load`] read the official `.tar.gz` (in memory, no extraction needed), an
//!   extracted folder, or the cache ([`cache_dir`]), refusing members larger than the official
//!   ones ([`max_member_bytes`]); `download` (feature `download`, on by default) fetches into the
//!   cache with resume, MD5 check and stall timeouts, reporting to a `DownloadProgress` the caller
//!   draws; [`extract`] unpacks only the expected members, each written atomically.
//!   These need the `files` feature (on by default, as `download` implies it); without it the
//!   crate is only the preprocessing of a trained model (for the WebAssembly demo).
//! - [`Cifar`] holds both splits as [`ImageSet`]s (`u8`, CHW, as stored); [`Cifar::split`] draws a
//!   seeded, stratified validation [`Holdout`] from the training set.
//! - [`Loader`] turns a set into [`Batch`]es of `[N, 3, 32, 32]` f32 tensors and `u32` labels, with
//!   seeded shuffling and [`Augment`]ation, prepared on a prefetch thread; normalisation is either
//!   per-channel [`Normalize`] (what `pretrained_cfg {mean, std}` records) or the authors' GCN +
//!   [`Zca`] whitening.
//!
//! ```no_run
//! use candle_core::Device;
//! use nin_data::{load, Dataset, Holdout, LoadOptions, Loader, LoaderConfig, Normalize, Preprocess, Split};
//!
//! let cifar = load(Dataset::Cifar10, &LoadOptions::default())?;
//! let train = cifar.split(Split::Train, Some(Holdout { size: 5000, seed: 0 }))?;
//! let norm = Normalize::from_set(&train);
//! let loader = Loader::new(train, LoaderConfig::train(128, 42), Preprocess::Normalize(norm), Device::Cpu)?;
//! for batch in loader.epoch_from(3, 10)? {
//!     let batch = batch?;
//!     assert_eq!(batch.images.dims4()?, (128, 3, 32, 32));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "files")]
mod archive;
#[cfg(feature = "files")]
mod cache;
mod dataset;
#[cfg(feature = "download")]
mod download;
mod error;
#[cfg(feature = "files")]
mod loader;
mod normalize;
mod preprocess;
mod rng;
#[cfg(feature = "files")]
mod stem;
mod zca;

#[cfg(feature = "files")]
pub use archive::{
    extract, load, load_source, locate, max_archive_bytes, max_member_bytes, read_archive,
    read_folder, LoadOptions, Members, Source,
};
#[cfg(feature = "files")]
pub use cache::{cache_dir, md5_file};
pub use dataset::{
    parse_names, parse_records, Cifar, Dataset, Holdout, ImageSet, LabelKind, Split, HOME_PAGE,
    IMAGE_BYTES,
};
#[cfg(feature = "download")]
pub use download::{
    base_url, download, download_url, DownloadOptions, DownloadProgress, NoProgress,
    DEFAULT_BASE_URL, DEFAULT_STALL_TIMEOUT,
};
pub use error::{Error, Result};
#[cfg(feature = "files")]
pub use loader::{
    augment_image, epoch_permutation, Augment, Batch, Batches, HostBatch, Loader, LoaderConfig,
};
pub use normalize::Normalize;
pub use preprocess::Preprocess;
#[cfg(feature = "files")]
pub use stem::whitened_patch_filters;
pub use zca::{
    gcn, Zca, ZcaConfig, ZcaTensors, MAX_WHITENING_BYTES, ZCA_GCN_SCALE, ZCA_MATRIX, ZCA_MEAN,
};
