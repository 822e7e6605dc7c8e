//! Batches: seeded epoch shuffles, per-image seeded augmentation (random crop with zero padding,
//! horizontal flip, optional cutout), normalisation into `[N, 3, 32, 32]` f32 tensors, and a
//! prefetch thread so the model never waits for data.
//!
//! **Invariant:** the permutation of epoch `e` is a pure function of `(seed, e)` and the
//! augmentation of the image at position `p` of epoch `e` a pure function of `(seed, e, p)`, so a
//! run resumed at batch `k` (see [`Loader::epoch_from`]) yields exactly the batches of an
//! uninterrupted one.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub use nin_format::Augment;

use crate::dataset::{ImageSet, IMAGE_BYTES};
use crate::normalize::Normalize;
pub use crate::preprocess::Preprocess;
use crate::rng::{rng_for, TAG_AUGMENT, TAG_SHUFFLE};
use crate::zca::ZcaTensors;
use crate::{Error, Result};

/// How a [`Loader`] batches a split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Whether each epoch visits images in a seeded random order.
    pub shuffle: bool,
    /// Augmentation, if any.
    pub augment: Option<Augment>,
    /// Drop a last, smaller batch (training) or keep it (evaluation).
    pub drop_last: bool,
    /// Seed of shuffles and augmentation.
    pub seed: u64,
    /// Batches prepared ahead on the prefetch thread.
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Training: shuffled, standard augmentation, last partial batch dropped.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            augment: Some(Augment::STANDARD),
            drop_last: true,
            seed,
            prefetch: 2,
        }
    }
    /// Evaluation: in order, no augmentation, every image kept.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            augment: None,
            drop_last: false,
            seed: 0,
            prefetch: 2,
        }
    }
}

/// One batch on the requested device.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[N, 3, 32, 32]` f32 inputs.
    pub images: Tensor,
    /// `[N]` u32 labels.
    pub labels: Tensor,
    /// Epoch of the batch.
    pub epoch: u64,
    /// Index of the batch within its epoch.
    pub index: usize,
}

/// One batch before it becomes tensors: what the prefetch thread prepares.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    /// `N × 3072` values, CHW per image.
    pub images: Vec<f32>,
    /// `N` labels.
    pub labels: Vec<u32>,
    /// Epoch of the batch.
    pub epoch: u64,
    /// Index of the batch within its epoch.
    pub index: usize,
}

/// The order in which epoch `epoch` visits `n` images: a pure function of `(seed, epoch)`.
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    perm.shuffle(&mut rng_for(seed, TAG_SHUFFLE, epoch, 0));
    perm
}

/// Augments and normalises one CHW image into `out` (3072 values); `rng` decides crop, flip, cutout.
pub fn augment_image(
    src: &[u8],
    aug: &Augment,
    lut: &[[f32; 256]; 3],
    rng: &mut impl Rng,
    out: &mut [f32],
) {
    let pad = aug.crop_padding as isize;
    let (dy, dx) = if pad > 0 {
        let span = 2 * pad as i32;
        (
            (rng.random_range(0..=span) as isize) - pad,
            (rng.random_range(0..=span) as isize) - pad,
        )
    } else {
        (0, 0)
    };
    let flip = aug.flip && rng.random::<bool>();
    for c in 0..3 {
        let lut = &lut[c];
        let zero = lut[0];
        let plane = &src[c * 1024..(c + 1) * 1024];
        let dst_plane = &mut out[c * 1024..(c + 1) * 1024];
        for y in 0..32isize {
            let dst = &mut dst_plane[y as usize * 32..(y as usize + 1) * 32];
            let sy = y + dy;
            if !(0..32).contains(&sy) {
                dst.fill(zero);
                continue;
            }
            let row = &plane[sy as usize * 32..(sy as usize + 1) * 32];
            for (x, d) in dst.iter_mut().enumerate() {
                let xx = if flip { 31 - x as isize } else { x as isize };
                let sx = xx + dx;
                *d = if (0..32).contains(&sx) {
                    lut[row[sx as usize] as usize]
                } else {
                    zero
                };
            }
        }
    }
    if let Some(size) = aug.cutout.filter(|&s| s > 0) {
        let (cy, cx) = (
            rng.random_range(0..32i32) as isize,
            rng.random_range(0..32i32) as isize,
        );
        let half = size as isize / 2;
        let (y0, y1) = ((cy - half).max(0), (cy - half + size as isize).min(32));
        let (x0, x1) = ((cx - half).max(0), (cx - half + size as isize).min(32));
        for c in 0..3 {
            for y in y0..y1 {
                let base = c * 1024 + y as usize * 32;
                out[base + x0 as usize..base + x1.max(x0) as usize].fill(0.0);
            }
        }
    }
}

/// Batches one split of the data.
#[derive(Clone, Debug)]
pub struct Loader {
    set: Arc<ImageSet>,
    cfg: LoaderConfig,
    preprocess: Preprocess,
    lut: Arc<[[f32; 256]; 3]>,
    zca: Option<Arc<ZcaTensors>>,
    device: Device,
}

impl Loader {
    /// A loader over `set` producing tensors on `device`.
    pub fn new(
        set: impl Into<Arc<ImageSet>>,
        cfg: LoaderConfig,
        preprocess: Preprocess,
        device: Device,
    ) -> Result<Self> {
        let set = set.into();
        if cfg.batch_size == 0 {
            return Err(Error::InvalidConfig {
                field: "batch_size",
                expected: "at least 1".into(),
                got: "0".into(),
            });
        }
        if set.is_empty() {
            return Err(Error::InvalidConfig {
                field: "set",
                expected: "at least one image".into(),
                got: "0".into(),
            });
        }
        let (lut, zca) = match &preprocess {
            Preprocess::Normalize(n) => (n.lut(), None),
            // The host stage only scales to [0, 1]; GCN + ZCA run on the batch's device.
            Preprocess::GcnZca(z) => (Normalize::UNIT.lut(), Some(Arc::new(z.to_device(&device)?))),
        };
        Ok(Loader {
            set,
            cfg,
            preprocess,
            lut: Arc::new(lut),
            zca,
            device,
        })
    }

    /// How pixels become inputs.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Number of images in the split.
    pub fn n_images(&self) -> usize {
        self.set.len()
    }

    /// Number of batches in one epoch (respecting `drop_last`).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.set.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order of epoch `epoch` (identity when not shuffling).
    pub fn permutation(&self, epoch: u64) -> Vec<u32> {
        if self.cfg.shuffle {
            epoch_permutation(self.cfg.seed, epoch, self.set.len())
        } else {
            (0..self.set.len() as u32).collect()
        }
    }

    /// Prepares batch `index` of `epoch` on the host; pure in `(seed, epoch, index)`.
    pub fn host_batch(&self, epoch: u64, index: usize) -> Result<HostBatch> {
        self.check_index(index)?;
        Ok(make_host_batch(
            &self.set,
            &self.cfg,
            &self.lut,
            &self.permutation(epoch),
            epoch,
            index,
        ))
    }

    /// Batch `index` of `epoch` as tensors, synchronously.
    pub fn batch(&self, epoch: u64, index: usize) -> Result<Batch> {
        to_batch(
            self.host_batch(epoch, index)?,
            self.zca.as_deref(),
            &self.device,
        )
    }

    /// Iterates over every batch of `epoch`, prepared on a prefetch thread.
    pub fn epoch(&self, epoch: u64) -> Batches {
        self.spawn(epoch, 0)
    }

    /// Iterates over the batches of `epoch` from batch `start` on (to resume a run).
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Result<Batches> {
        if start > self.batches_per_epoch() {
            return Err(Error::InvalidConfig {
                field: "start",
                expected: format!("a batch index <= {}", self.batches_per_epoch()),
                got: start.to_string(),
            });
        }
        Ok(self.spawn(epoch, start))
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index >= self.batches_per_epoch() {
            return Err(Error::InvalidConfig {
                field: "index",
                expected: format!("a batch index < {}", self.batches_per_epoch()),
                got: index.to_string(),
            });
        }
        Ok(())
    }

    fn spawn(&self, epoch: u64, start: usize) -> Batches {
        let (tx, rx) = sync_channel(self.cfg.prefetch.max(1));
        let (set, cfg, lut) = (self.set.clone(), self.cfg, self.lut.clone());
        let end = self.batches_per_epoch();
        let perm = self.permutation(epoch);
        let handle = std::thread::Builder::new()
            .name("nin-data-prefetch".into())
            .spawn(move || {
                for index in start..end {
                    if tx
                        .send(make_host_batch(&set, &cfg, &lut, &perm, epoch, index))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .ok();
        Batches {
            rx: Some(rx),
            handle,
            remaining: end - start,
            zca: self.zca.clone(),
            device: self.device.clone(),
        }
    }
}

fn make_host_batch(
    set: &ImageSet,
    cfg: &LoaderConfig,
    lut: &[[f32; 256]; 3],
    perm: &[u32],
    epoch: u64,
    index: usize,
) -> HostBatch {
    let start = index * cfg.batch_size;
    let end = (start + cfg.batch_size).min(perm.len());
    let n = end - start;
    let mut images = vec![0f32; n * IMAGE_BYTES];
    let mut labels = Vec::with_capacity(n);
    for (j, out) in images.chunks_exact_mut(IMAGE_BYTES).enumerate() {
        let pos = start + j;
        let i = perm[pos] as usize;
        let src = set.image(i);
        labels.push(set.labels[i]);
        match &cfg.augment {
            Some(aug) => {
                let mut rng = rng_for(cfg.seed, TAG_AUGMENT, epoch, pos as u64);
                augment_image(src, aug, lut, &mut rng, out);
            }
            None => {
                for (k, (o, &p)) in out.iter_mut().zip(src).enumerate() {
                    *o = lut[k / 1024][p as usize];
                }
            }
        }
    }
    HostBatch {
        images,
        labels,
        epoch,
        index,
    }
}

fn to_batch(host: HostBatch, zca: Option<&ZcaTensors>, device: &Device) -> Result<Batch> {
    let n = host.labels.len();
    let images = Tensor::from_vec(host.images, (n, 3, 32, 32), device)?;
    let images = match zca {
        None => images,
        Some(zca) => zca.apply(&images)?,
    };
    let labels = Tensor::from_vec(host.labels, n, device)?;
    Ok(Batch {
        images,
        labels,
        epoch: host.epoch,
        index: host.index,
    })
}

/// The batches of one epoch, prepared ahead on a background thread.
#[derive(Debug)]
pub struct Batches {
    rx: Option<Receiver<HostBatch>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
    zca: Option<Arc<ZcaTensors>>,
    device: Device,
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let host = match self.rx.as_ref().map(Receiver::recv) {
            Some(Ok(h)) => h,
            _ => {
                self.remaining = 0;
                return Some(Err(Error::Prefetch));
            }
        };
        Some(to_batch(host, self.zca.as_deref(), &self.device))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Batches {}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channel first makes the producer's next send fail, so the join returns promptly.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
