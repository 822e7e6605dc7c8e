//! Seeded random numbers for everything random in a run.
//!
//! candle's CPU generator cannot be seeded (`set_seed` errors), so init, dropout and
//! augmentation all draw from ChaCha streams derived from one run seed, and so do the random
//! tensors of tests and benchmarks ([`seeded_randn`], [`seeded_rand`]).

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{Device, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Mixes a seed with a stream label into an independent seed (splitmix64 finaliser).
///
/// Used to give each consumer (init, dropout at step `t`, augmentation of epoch `e`) its own
/// reproducible stream without sharing generator state between them.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator behind every random choice of a run.
pub type SeededRng = ChaCha8Rng;

/// Creates the generator for `seed`.
pub fn seeded_rng(seed: u64) -> SeededRng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A CPU f32 tensor of standard normal values drawn from a generator seeded with `seed`: what
/// tests and benchmarks use instead of candle's unseedable `Tensor::randn`, so that a failure
/// repeats.
pub fn seeded_randn(shape: impl Into<Shape>, seed: u64) -> candle_core::Result<Tensor> {
    let shape = shape.into();
    let mut rng = seeded_rng(seed);
    let values: Vec<f32> = (0..shape.elem_count())
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// A CPU f32 tensor of values uniform in [0, 1) drawn from a generator seeded with `seed`, as
/// [`seeded_randn`] for candle's `Tensor::rand`.
pub fn seeded_rand(shape: impl Into<Shape>, seed: u64) -> candle_core::Result<Tensor> {
    let shape = shape.into();
    let mut rng = seeded_rng(seed);
    let values: Vec<f32> = (0..shape.elem_count()).map(|_| rng.random()).collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// A shared, re-seedable generator for the dropout layers of one model.
///
/// A model hands the same handle to each of its dropout layers. The training loop re-seeds it
/// before every step from `(run seed, step)`, so a resumed run draws exactly the masks that an
/// uninterrupted run would have drawn.
#[derive(Clone, Debug)]
pub struct DropoutRng(Arc<Mutex<SeededRng>>);

impl DropoutRng {
    /// A handle seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(seeded_rng(seed))))
    }

    /// Restarts the stream from `seed`.
    pub fn reseed(&self, seed: u64) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = seeded_rng(seed);
    }

    /// Fills `out` with keep-masks: `scale` with probability `1 - p`, else 0.
    pub fn fill_keep_mask(&self, p: f64, scale: f32, out: &mut [f32]) {
        let mut rng = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Compare raw 32-bit draws against an integer threshold: exact, and much faster than
        // drawing floats for the millions of cells of a NIN feature map.
        let threshold = (p * (u32::MAX as f64 + 1.0)).min(u32::MAX as f64) as u64;
        // The draws a block at a time (the same stream as one `next_u32` per cell), then the
        // comparisons as one loop that vectorises.
        let mut draws = [0u32; 1024];
        for cells in out.chunks_mut(draws.len()) {
            let draws = &mut draws[..cells.len()];
            rng.fill(draws);
            crate::cpu::with_simd(
                #[inline(always)]
                move || {
                    for (cell, &draw) in cells.iter_mut().zip(draws.iter()) {
                        *cell = if u64::from(draw) < threshold {
                            0.0
                        } else {
                            scale
                        };
                    }
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn derived_seeds_differ_per_stream_and_repeat() {
        assert_eq!(derive_seed(7, 1), derive_seed(7, 1));
        assert_ne!(derive_seed(7, 1), derive_seed(7, 2));
        assert_ne!(derive_seed(7, 1), derive_seed(8, 1));
    }

    #[test]
    fn keep_masks_follow_one_draw_per_cell_across_blocks() {
        // The masks a training run draws (and so its reproducibility from a seed) are those of
        // one 32-bit draw per cell, in order, whatever block size the kernel fills at a time;
        // 2500 cells span partial blocks, and a second call continues the stream.
        let rng = DropoutRng::new(5);
        let mut masks = vec![0.0; 2500];
        rng.fill_keep_mask(0.3, 1.5, &mut masks[..1700]);
        rng.fill_keep_mask(0.3, 1.5, &mut masks[1700..]);
        let mut reference = seeded_rng(5);
        let threshold = (0.3 * (u32::MAX as f64 + 1.0)) as u64;
        for (i, &m) in masks.iter().enumerate() {
            let dropped = u64::from(reference.next_u32()) < threshold;
            assert_eq!(m, if dropped { 0.0 } else { 1.5 }, "cell {i}");
        }
    }

    #[test]
    fn reseeded_dropout_repeats_its_masks() {
        let rng = DropoutRng::new(3);
        let mut a = vec![0.0; 1000];
        let mut b = vec![0.0; 1000];
        rng.reseed(11);
        rng.fill_keep_mask(0.5, 2.0, &mut a);
        rng.reseed(11);
        rng.fill_keep_mask(0.5, 2.0, &mut b);
        assert_eq!(a, b);
        let kept = a.iter().filter(|&&v| v == 2.0).count();
        assert!((400..600).contains(&kept), "kept {kept} of 1000 at p = 0.5");
    }
}
