//! The one GEMM call of the convolution kernels, and how they share the thread pool with it.

use candle_core::WithDType;
use gemm::Parallelism;

/// How to spread `n_images` over the pool: outer parallelism over images with sequential
/// GEMMs, or (fewer images than threads) parallel GEMMs.
pub(super) fn inner_parallelism(n_images: usize) -> Parallelism {
    if n_images >= rayon::current_num_threads() {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each matrix given by (pointer, row stride,
/// column stride).
///
/// # Safety
/// The pointers with their strides must address valid, non-overlapping matrices of the given
/// sizes; `dst` must be writable.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul<T: 'static + WithDType>(
    (m, n, k): (usize, usize, usize),
    dst: (*mut T, usize, usize),
    accumulate: bool,
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    par: Parallelism,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}
