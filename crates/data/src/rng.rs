//! Seeded randomness: every random choice in the crate comes from a ChaCha8 generator derived
//! from `(seed, purpose, epoch, index)` so that shuffles and augmentations are pure functions
//! of those numbers and a resumed run repeats an uninterrupted one exactly.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Purpose tag of the epoch permutation.
#[cfg(feature = "files")]
pub(crate) const TAG_SHUFFLE: u64 = 0x5348_5546;
/// Purpose tag of per-image augmentation.
#[cfg(feature = "files")]
pub(crate) const TAG_AUGMENT: u64 = 0x4155_4731;
/// Purpose tag of the validation hold-out.
pub(crate) const TAG_HOLDOUT: u64 = 0x484f_4c44;

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator for one purpose, epoch and index under `seed`.
pub(crate) fn rng_for(seed: u64, tag: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(mix(seed) ^ tag) ^ epoch) ^ index))
}
