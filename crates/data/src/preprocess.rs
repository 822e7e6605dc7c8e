//! How pixels become model inputs: the one choice a trained model records (mean/std, or GCN +
//! ZCA), kept apart from the [`crate::Loader`] so that a build without files and threads (the
//! browser demo) has it too.

use std::sync::Arc;

use crate::normalize::Normalize;
use crate::zca::Zca;

/// How pixels become model inputs.
#[derive(Clone, Debug)]
pub enum Preprocess {
    /// `(pixel / 255 − mean[c]) / std[c]`.
    Normalize(Normalize),
    /// The authors' GCN + ZCA, applied to each batch on its device. Crop padding and cutout act on
    /// the raw image (black pixels) before whitening; the authors padded whitened images with zeros.
    GcnZca(Arc<Zca>),
}
