//! The forward kernel: per image, one GEMM of the weight with the image's im2col matrix (one per
//! channel band: a band's output rows from its input channels' im2col rows), then bias and ReLU
//! in one pass while the output is in cache.

use std::mem::MaybeUninit;

use candle_core::WithDType;
use rayon::prelude::*;

use super::gemm::{inner_parallelism, matmul};
use super::geometry::{im2col, Geom};
use super::ChannelBands;
use crate::cpu::{assume_init, with_simd, written_by};

/// `relu?(W · col(X[n]) + b)` for every image `n` of `x`, flat `[N, C_out, OH, OW]`, with `W`
/// read only inside `bands` (checked against `g` by the caller).
///
/// # Panics
/// When a slice's length disagrees with `g`: the op builds `g` from the very layouts the slices
/// come from, so this is a bug, and a panic rather than a partly written output.
pub(super) fn forward<T: WithDType>(
    g: &Geom,
    bands: &ChannelBands,
    x: &[T],
    wt: &[T],
    bias: Option<&[T]>,
    relu: bool,
) -> Vec<T> {
    let (ckk, ohw, kk) = (g.ckk(), g.ohw(), g.k * g.k);
    assert_eq!(x.len(), g.n * g.in_len(), "conv2d: input length");
    assert_eq!(wt.len(), g.c_out * ckk, "conv2d: weight length");
    assert!(
        bias.is_none_or(|b| b.len() == g.c_out),
        "conv2d: bias length"
    );
    let par = inner_parallelism(g.n);
    // Writes every value: the output splits into exactly `n` images of `out_len` values and `x`
    // into as many of `in_len` (asserted above), so the zip visits every output image, and the
    // GEMM writes each whole (`accumulate` false).
    let written = |out: &mut [MaybeUninit<T>]| {
        out.par_chunks_mut(g.out_len())
            .zip(x.par_chunks(g.in_len()))
            .for_each_init(Vec::new, |col: &mut Vec<T>, (y, xi)| {
                debug_assert_eq!((y.len(), xi.len()), (g.c_out * ohw, g.in_len()));
                let rhs: &[T] = if g.pointwise() {
                    xi
                } else {
                    col.resize(ckk * ohw, T::zero());
                    im2col(g, xi, col, ohw, 0);
                    col
                };
                debug_assert_eq!(rhs.len(), ckk * ohw);
                for band in bands.by_output() {
                    let (rows, inner) = (band.out.len(), band.inp.len() * kk);
                    let first_tap = band.inp.start * kk;
                    // SAFETY: y is c_out×ohw, wt c_out×ckk, rhs ckk×ohw, all row-major and
                    // distinct; the band's rows `out` and taps `first_tap..+inner` lie within
                    // them (`ChannelBands` keeps `out` within c_out and `inp` within c_in). The
                    // GEMM overwrites the band's rows of y without reading them.
                    unsafe {
                        matmul(
                            (rows, ohw, inner),
                            (y.as_mut_ptr().cast::<T>().add(band.out.start * ohw), ohw, 1),
                            false,
                            (wt.as_ptr().add(band.out.start * ckk + first_tap), ckk, 1),
                            (rhs.as_ptr().add(first_tap * ohw), ohw, 1),
                            par,
                        )
                    };
                }
                // SAFETY: the bands' rows tile 0..c_out, so the GEMMs have written all of y.
                let y = unsafe { assume_init(y) };
                // Bias and ReLU in one pass over the image's output while it is in cache, rather
                // than filling the output with the bias for the GEMM to accumulate onto.
                let zero = T::zero();
                with_simd(
                    #[inline(always)]
                    move || {
                        for (c, row) in y.chunks_mut(ohw).enumerate() {
                            let b = bias.map_or(zero, |b| b[c]);
                            match (bias.is_some(), relu) {
                                // `v < 0` leaves NaN in place, as PyTorch's ReLU does; a select vectorises.
                                (_, true) => row.iter_mut().for_each(|v| {
                                    let s = *v + b;
                                    *v = if s < zero { zero } else { s };
                                }),
                                (true, false) => row.iter_mut().for_each(|v| *v += b),
                                (false, false) => {}
                            }
                        }
                    },
                );
            });
    };
    // SAFETY: `written` writes all `n·out_len` values, as said where it is defined.
    unsafe { written_by(g.n * g.out_len(), written) }
}
