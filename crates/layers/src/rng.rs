//! Seeded random numbers for everything random in a run.
//!
//! candle's CPU generator cannot be seeded (`set_seed` errors), so init, dropout and
//! augmentation all draw from ChaCha streams derived from one run seed, and so do the random
//! tensors of tests and benchmarks ([`seeded_randn`], [`seeded_rand`]).

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{Device, Shape, Tensor};
use rand::{Rng, RngCore, SeedableRng};
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
        for cell in out.iter_mut() {
            *cell = if (rng.next_u32() as u64) < threshold {
                0.0
            } else {
                scale
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_per_stream_and_repeat() {
        assert_eq!(derive_seed(7, 1), derive_seed(7, 1));
        assert_ne!(derive_seed(7, 1), derive_seed(7, 2));
        assert_ne!(derive_seed(7, 1), derive_seed(8, 1));
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
