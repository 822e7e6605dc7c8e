//! The shapes of one convolution, checked once, and the im2col gather (and its adjoint) that
//! turns a window's taps into the rows of a GEMM operand.
//!
//! The GEMM kernels write through raw pointers and into uninitialised buffers, sized from a
//! [`Geom`]; so a `Geom` can only be made by [`Geom::new`], which refuses every shape the kernels
//! cannot take (a kernel larger than the padded input, zero stride, mismatched channels), and
//! [`Geom::expect_output`] checks the tensor a backward op receives against it.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use candle_core::WithDType;

use super::{ChannelBands, ConvOptions};
use crate::cpu::{assume_init, with_simd};

/// Shapes of one convolution, consistent with each other (see [`Geom::new`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) c_in: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) c_out: usize,
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// Private, so that only [`Geom::new`] makes a `Geom`.
    _checked: (),
}

impl Geom {
    /// The geometry of input `x` `[N, C_in, H, W]` under weight `wt` `[C_out, C_in, k, k]`, or an
    /// error when the kernels could not run it: ranks other than 4, channels that differ, a
    /// kernel that is not square or is empty, no input channel, zero stride, or a kernel larger
    /// than the padded input.
    pub(super) fn new(x: &[usize], wt: &[usize], opts: ConvOptions) -> candle_core::Result<Self> {
        let (&[n, c_in, h, w], &[c_out, wc_in, k, kw]) = (x, wt) else {
            candle_core::bail!("conv2d: expected 4-D input and weight, got {x:?} and {wt:?}")
        };
        if wc_in != c_in || k != kw || k == 0 || c_in == 0 || c_out == 0 {
            candle_core::bail!(
                "conv2d: weight {wt:?} does not fit input {x:?} (need [C_out, {c_in}, k, k], \
                 each at least 1)"
            );
        }
        let (stride, pad) = (opts.stride, opts.padding);
        if stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
            candle_core::bail!(
                "conv2d: a {k}×{k} kernel with stride {stride} and padding {pad} does not fit {h}×{w}"
            );
        }
        Ok(Self {
            n,
            c_in,
            h,
            w,
            c_out,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
            _checked: (),
        })
    }

    /// Errors unless `dims` is the output shape `[N, C_out, OH, OW]`, e.g. of the gradient a
    /// backward op receives; `op` names the op in the error.
    pub(super) fn expect_output(&self, dims: &[usize], op: &str) -> candle_core::Result<()> {
        let want = [self.n, self.c_out, self.oh, self.ow];
        if dims != want {
            candle_core::bail!("{op}: expected an output gradient {want:?}, got {dims:?}");
        }
        Ok(())
    }

    /// Errors unless `bands` were made for this convolution's channels.
    pub(super) fn expect_bands(&self, bands: &ChannelBands) -> candle_core::Result<()> {
        let (c_in, c_out) = (bands.in_channels(), bands.out_channels());
        if (c_in, c_out) != (self.c_in, self.c_out) {
            candle_core::bail!(
                "conv2d: channel bands for {c_in} → {c_out} channels, the convolution is {} → {}",
                self.c_in,
                self.c_out
            );
        }
        Ok(())
    }

    /// The kernels' channel blocks: `bands` (checked against this geometry), or the one dense
    /// block when there are none.
    pub(super) fn bands_or_dense<'a>(
        &self,
        bands: Option<&'a ChannelBands>,
    ) -> candle_core::Result<Cow<'a, ChannelBands>> {
        let bands = match bands {
            Some(b) => Cow::Borrowed(b),
            None => Cow::Owned(ChannelBands::dense(self.c_in, self.c_out)),
        };
        self.expect_bands(&bands)?;
        Ok(bands)
    }

    /// Errors unless `dims` is a bias's shape, `[C_out]`.
    pub(super) fn expect_bias(&self, dims: &[usize]) -> candle_core::Result<()> {
        if dims != [self.c_out] {
            candle_core::bail!("conv2d: bias must be [{}], got {dims:?}", self.c_out);
        }
        Ok(())
    }

    /// Rows of the im2col matrix.
    pub(super) fn ckk(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Output pixels of one map.
    pub(super) fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// Values of one input image.
    pub(super) fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Values of one output image.
    pub(super) fn out_len(&self) -> usize {
        self.c_out * self.ohw()
    }

    /// A 1×1 stride-1 unpadded convolution: the image itself is its im2col matrix.
    pub(super) fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
}

/// For each im2col row `r = (c, ky, kx)`, the `oh·ow` input values (or padding zeros) that the
/// kernel tap `(ky, kx)` of channel `c` meets; written to `col[r·ld + off ..][..oh·ow]`.
pub(super) fn im2col<T: WithDType>(g: &Geom, x: &[T], col: &mut [T], ld: usize, off: usize) {
    // Rows are short (8 to 32 values on NIN's maps): the widest vectors the processor has, as
    // the strided and padded copies cannot all be memcpy calls.
    with_simd(
        #[inline(always)]
        move || im2col_here(g, x, col, ld, off),
    )
}

/// [`im2col`] compiled for whatever the caller's target features are.
#[inline(always)]
fn im2col_here<T: WithDType>(g: &Geom, x: &[T], col: &mut [T], ld: usize, off: usize) {
    let (ohw, zero) = (g.ohw(), T::zero());
    for c in 0..g.c_in {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let r = (c * g.k + ky) * g.k + kx;
                let row = &mut col[r * ld + off..r * ld + off + ohw];
                // Output columns whose tap lands inside the row: pad ≤ ox·s + kx < w + pad.
                let lo = g.pad.saturating_sub(kx).div_ceil(g.stride).min(g.ow);
                let hi = ((g.w + g.pad).saturating_sub(kx).div_ceil(g.stride)).clamp(lo, g.ow);
                if g.stride == 1 && g.ow == g.w {
                    same_row_shifted(g, plane, row, (ky, kx), (lo, hi));
                    continue;
                }
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..(oy + 1) * g.ow];
                    let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
                    if iy >= g.h {
                        dst.fill(zero);
                        continue;
                    }
                    let src = &plane[iy * g.w..(iy + 1) * g.w];
                    dst[..lo].fill(zero);
                    dst[hi..].fill(zero);
                    let ix0 = lo * g.stride + kx - g.pad;
                    if g.stride == 1 {
                        dst[lo..hi].copy_from_slice(&src[ix0..ix0 + hi - lo]);
                    } else {
                        for (i, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[ix0 + i * g.stride];
                        }
                    }
                }
            }
        }
    }
}

/// One im2col row of a stride-1 convolution whose output rows are as wide as the input's (the
/// "same" padding of NIN's k×k layers): the tap's values are then the plane itself shifted by
/// `(ky − pad)·w + (kx − pad)`, so the row is one copy of the valid output rows' span, zeros
/// above and below it, and zeros over the `lo`/`hi` edge columns, where the shifted copy
/// brought in the neighbouring row's values. Per tap, that is one copy instead of one per
/// output row: NIN's rows are 8 to 32 values, too short for a copy each to pay.
#[inline(always)]
fn same_row_shifted<T: WithDType>(
    g: &Geom,
    plane: &[T],
    row: &mut [T],
    (ky, kx): (usize, usize),
    (lo, hi): (usize, usize),
) {
    let (w, zero) = (g.w, T::zero());
    // Output rows whose tap row lies inside the plane: pad ≤ oy + ky < h + pad.
    let oy_lo = g.pad.saturating_sub(ky).min(g.oh);
    let oy_hi = (g.h + g.pad).saturating_sub(ky).clamp(oy_lo, g.oh);
    row[..oy_lo * w].fill(zero);
    row[oy_hi * w..].fill(zero);
    if oy_lo == oy_hi {
        return;
    }
    // dst[i] = plane[i + shift] over the valid rows, `shift` possibly negative; the values
    // that would come from outside the plane fall on edge columns, zeroed below.
    let dst = &mut row[oy_lo * w..oy_hi * w];
    let shift = ((oy_lo + ky) * w + kx) as isize - (g.pad * w + g.pad) as isize;
    let first = ((-shift).max(0) as usize).min(dst.len());
    let last = (plane.len() as isize - shift).clamp(0, dst.len() as isize) as usize;
    if first < last {
        let src = (first as isize + shift) as usize;
        dst[first..last].copy_from_slice(&plane[src..src + last - first]);
    }
    dst[..first].fill(zero);
    dst[last.max(first)..].fill(zero);
    for r in dst.chunks_mut(w) {
        r[..lo].fill(zero);
        r[hi..].fill(zero);
    }
}

/// The adjoint of [`im2col`]: adds every column entry back onto the input cell it came from.
pub(super) fn col2im<T: WithDType>(g: &Geom, col: &[T], dx: &mut [MaybeUninit<T>]) {
    with_simd(
        #[inline(always)]
        move || col2im_here(g, col, dx),
    )
}

/// [`col2im`] compiled for whatever the caller's target features are.
#[inline(always)]
fn col2im_here<T: WithDType>(g: &Geom, col: &[T], dx: &mut [MaybeUninit<T>]) {
    dx.fill(MaybeUninit::new(T::zero()));
    // SAFETY: every value was written by the fill above.
    let dx = unsafe { assume_init(dx) };
    let ohw = g.ohw();
    for c in 0..g.c_in {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let r = (c * g.k + ky) * g.k + kx;
                let row = &col[r * ohw..(r + 1) * ohw];
                let lo = g.pad.saturating_sub(kx).div_ceil(g.stride).min(g.ow);
                let hi = ((g.w + g.pad).saturating_sub(kx).div_ceil(g.stride)).clamp(lo, g.ow);
                for oy in 0..g.oh {
                    let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
                    if iy >= g.h {
                        continue;
                    }
                    let src = &row[oy * g.ow..(oy + 1) * g.ow];
                    let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                    let ix0 = lo * g.stride + kx - g.pad;
                    if g.stride == 1 {
                        // Slices of one length, so the add vectorises.
                        let dst = &mut dst[ix0..ix0 + hi - lo];
                        for (d, v) in dst.iter_mut().zip(&src[lo..hi]) {
                            *d += *v;
                        }
                    } else {
                        for (i, v) in src[lo..hi].iter().enumerate() {
                            dst[ix0 + i * g.stride] += *v;
                        }
                    }
                }
            }
        }
    }
}
