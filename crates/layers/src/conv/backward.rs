//! The backward of a convolution as one op: the weight and bias gradients as GEMMs over images
//! packed side by side, then the input gradient as one GEMM per image followed by col2im, with the
//! fused ReLU's mask applied as each image's output gradient is copied into a GEMM buffer.
//!
//! Why the mask is not an op of its own: it was a pass over the whole output gradient that wrote
//! a masked copy into a fresh activation-sized buffer, which the weight gradient then copied into
//! its padded buffer and the input gradient read again. Now the weight gradient masks as it makes
//! its copy, the input gradient masks each image into a buffer of the thread's, and no masked
//! copy of the whole gradient exists: a `nin` training step at batch 32 peaks about 40 MiB lower
//! (`docs/performance.md`). The three gradients come out of one op, flat (`[dX, dW, db]`), its
//! shapes checked once.

use std::mem::MaybeUninit;

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor, WithDType};
use rayon::prelude::*;

use super::gemm::{inner_parallelism, matmul};
use super::geometry::{col2im, im2col, Geom};
use super::{ChannelBands, ConvOptions};
use crate::cpu::{dispatch_float, lane_sum, slice, with_simd, written_by};

/// `grad` where the ReLU output is positive, else 0, as its own op: the CUDA path's mask (the
/// CPU kernel masks as it copies, see the module).
#[cfg(feature = "cuda")]
pub(super) struct ReluMask;

#[cfg(feature = "cuda")]
impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "nin-relu-mask"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: the CPU backward masks inside its kernel", self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{grid, launch, output, slice};
        let (op, dev, dtype) = (self.name(), s1.device.clone(), s1.dtype());
        if l1.shape() != l2.shape() {
            candle_core::bail!("{op}: gradient and ReLU output differ in shape");
        }
        let n = l1.shape().elem_count();
        let storage = dispatch_float!(dtype, op, |T| {
            let (g, y, out) = (
                slice::<T>(s1, l1, op)?,
                slice::<T>(s2, l2, op)?,
                output::<T>(&dev, n)?,
            );
            let n64 = n as u64;
            launch!(dev, "relu_mask", dtype, op, grid(n), &n64, &g, &y, &out)?;
            candle_core::CudaStorage::wrap_cuda_slice(out, dev.clone())
        });
        Ok((storage, l1.shape().clone()))
    }
}

/// The backward of a convolution on (input, output gradient) without ReLU, or (input, output
/// gradient, ReLU output) with it: flat `[dX…, dW…, db…]`, dX (the input's shape) only with
/// `weight`, dW and db only with `want_dw`. Each with the forward's channel bands.
pub(super) struct BackwardOp {
    pub(super) opts: ConvOptions,
    /// Kernel side.
    pub(super) k: usize,
    pub(super) bands: Option<Arc<ChannelBands>>,
    /// The forward's weight, when the input gradient is wanted.
    pub(super) weight: Option<Tensor>,
    pub(super) want_dw: bool,
}

impl BackwardOp {
    /// Values of the flat output before dW: the input's length when dX is wanted.
    pub(super) fn dx_len(&self, x: &Tensor) -> usize {
        if self.weight.is_some() {
            x.elem_count()
        } else {
            0
        }
    }

    fn run(
        &self,
        (x, x_layout): (&CpuStorage, &Layout),
        (grad, grad_layout): (&CpuStorage, &Layout),
        relu_out: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = "nin-conv2d-backward";
        let x_dims = x_layout.dims();
        let &[_, c_in, _, _] = x_dims else {
            candle_core::bail!("{op}: the input must be 4-D, got {x_dims:?}")
        };
        let c_out = grad_layout.dims().get(1).copied().unwrap_or(0);
        let g = Geom::new(x_dims, &[c_out, c_in, self.k, self.k], self.opts)?;
        g.expect_output(grad_layout.dims(), op)?;
        if let Some((_, l)) = relu_out {
            if l.dims() != grad_layout.dims() {
                candle_core::bail!(
                    "{op}: gradient {:?} and ReLU output {:?} differ in shape",
                    grad_layout.dims(),
                    l.dims()
                );
            }
        }
        let bands = g.bands_or_dense(self.bands.as_deref())?;
        let weight = self.weight.as_ref().map(Tensor::storage_and_layout);
        let weight = match &weight {
            None => None,
            Some((storage, layout)) => {
                let Storage::Cpu(s) = &**storage else {
                    candle_core::bail!("{op}: the weight is not on the CPU")
                };
                if layout.dims() != [g.c_out, g.c_in, g.k, g.k] {
                    candle_core::bail!("{op}: weight {:?} does not fit the input", layout.dims());
                }
                Some((s, *layout))
            }
        };
        // The flat output's length is whatever `backward` made it (dX and dW as asked for).
        let len;
        let storage = dispatch_float!(x.dtype(), op, |T| {
            let xs = slice::<T>(x, x_layout, op)?;
            let grad = slice::<T>(grad, grad_layout, op)?;
            let dy = match relu_out {
                None => OutGrad::Plain(grad),
                Some((s, l)) => OutGrad::Masked(grad, slice::<T>(s, l, op)?),
            };
            let wt = weight.map(|(s, l)| slice::<T>(s, l, op)).transpose()?;
            let out = backward(&g, &bands, xs, dy, wt, self.want_dw);
            len = out.len();
            T::to_cpu_storage_owned(out)
        });
        Ok((storage, Shape::from(len)))
    }
}

impl CustomOp2 for BackwardOp {
    fn name(&self) -> &'static str {
        "nin-conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for BackwardOp {
    fn name(&self) -> &'static str {
        "nin-conv2d-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), Some((s3, l3)))
    }
}

/// The output gradient as the kernel reads it: as given, or masked by the ReLU's output (zero
/// where that is not positive).
#[derive(Clone, Copy)]
enum OutGrad<'a, T> {
    Plain(&'a [T]),
    /// The gradient, then the ReLU's output.
    Masked(&'a [T], &'a [T]),
}

impl<T: WithDType> OutGrad<'_, T> {
    /// Copies image `img`'s `rows` rows of `len` values into `dst`, row `r` at
    /// `dst[r·ld + off..]`.
    fn copy_image(
        self,
        img: usize,
        (rows, len): (usize, usize),
        dst: &mut [T],
        ld: usize,
        off: usize,
    ) {
        let start = img * rows * len;
        match self {
            OutGrad::Plain(g) => {
                for (r, src) in g[start..start + rows * len].chunks(len).enumerate() {
                    dst[r * ld + off..][..len].copy_from_slice(src);
                }
            }
            OutGrad::Masked(g, y) => with_simd(
                #[inline(always)]
                move || {
                    let (g, y) = (&g[start..start + rows * len], &y[start..start + rows * len]);
                    for (r, (g, y)) in g.chunks(len).zip(y.chunks(len)).enumerate() {
                        let d = &mut dst[r * ld + off..][..len];
                        for ((d, &g), &y) in d.iter_mut().zip(g).zip(y) {
                            *d = if y > T::zero() { g } else { T::zero() };
                        }
                    }
                },
            ),
        }
    }
}

/// `[dX (with `wt`: `N·C_in·H·W`), dW (c_out·ckk), db (c_out)]`, dW and db summed over the batch
/// (with `want_dw`; dW is zero outside `bands`), dX per image `col2im(Wᵀ · dY[n])` with one GEMM
/// per input block of `bands`: its rows of `Wᵀ · dY[n]` from the output channels that read it
/// (the weight is zero elsewhere), so each row is written once.
///
/// All the weight gradient's GEMMs run before the input gradient's. Interleaving them image by
/// image, both from one masked copy, measured no faster (each GEMM likely evicts the other's
/// operands, dW's accumulator and the packed weight, from L2), so the mask is applied twice.
///
/// # Panics
/// When a slice's length disagrees with `g` (a bug: the op checks the shapes first), rather than
/// leave part of the output unwritten.
fn backward<T: WithDType>(
    g: &Geom,
    bands: &ChannelBands,
    x: &[T],
    dy: OutGrad<'_, T>,
    wt: Option<&[T]>,
    want_dw: bool,
) -> Vec<T> {
    let (ckk, c_out) = (g.ckk(), g.c_out);
    assert_eq!(x.len(), g.n * g.in_len(), "conv2d backward: input length");
    let out_len = g.n * g.out_len();
    match dy {
        OutGrad::Plain(d) => assert_eq!(d.len(), out_len, "conv2d backward: gradient length"),
        OutGrad::Masked(d, y) => assert_eq!(
            (d.len(), y.len()),
            (out_len, out_len),
            "conv2d backward: gradient and ReLU output lengths"
        ),
    }
    let dx_len = if wt.is_some() { g.n * g.in_len() } else { 0 };
    let dw_len = if want_dw { c_out * ckk + c_out } else { 0 };
    // Writes every value: dX whole by `input_grad` (when asked for), then dW and db by
    // `weight_grad`, each of exactly its length.
    let written = |out: &mut [MaybeUninit<T>]| {
        let (dx, dw) = out.split_at_mut(dx_len);
        if want_dw {
            let total = weight_grad(g, bands, x, dy);
            assert_eq!(total.len(), dw.len(), "conv2d backward: dW length");
            for (d, t) in dw.iter_mut().zip(total) {
                d.write(t);
            }
        }
        if let Some(wt) = wt {
            input_grad(g, bands, dy, wt, dx);
        }
    };
    // SAFETY: `written` writes all `dx_len + dw_len` values, as said where it is defined.
    unsafe { written_by(dx_len + dw_len, written) }
}

/// `[dW (c_out·ckk), db (c_out)]` summed over the batch; `dW` is zero outside `bands`.
fn weight_grad<T: WithDType>(
    g: &Geom,
    bands: &ChannelBands,
    x: &[T],
    dy: OutGrad<'_, T>,
) -> Vec<T> {
    let (ckk, ohw, c_out, kk) = (g.ckk(), g.ohw(), g.c_out, g.k * g.k);
    let threads = rayon::current_num_threads().max(1);
    let per_chunk = g.n.div_ceil(threads).max(1);
    let par = inner_parallelism(g.n);
    // Small maps make a short GEMM inner dimension; pack images side by side up to ~1024 columns.
    let group = (1024 / ohw).clamp(1, per_chunk);
    let partials: Vec<Vec<T>> = (0..g.n.div_ceil(per_chunk))
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![T::zero(); c_out * ckk + c_out];
            let (dw, db) = acc.split_at_mut(c_out * ckk);
            // gemm runs fastest on this product (both operands contiguous along the contracted
            // axis) when it writes dW column-major; it is transposed into place at the end. (A
            // block's dWᵀ written straight into dW, which keeps gemm off its narrowest kernels
            // for short blocks, measured no faster: its packing costs as much.)
            let mut dw_t = vec![T::zero(); ckk * c_out];
            let (mut col, mut dyg) = (Vec::new(), Vec::new());
            let images = chunk * per_chunk..((chunk + 1) * per_chunk).min(g.n);
            let mut first = true;
            for start in images.clone().step_by(group) {
                let end = (start + group).min(images.end);
                let cols = (end - start) * ohw;
                // Both operands are read along their rows (the contracted axis), which gemm's
                // packing gathers with the row stride: a stride of a multiple of 4 KiB maps every
                // gathered value to one L1 set, so the rows are padded off it.
                let ld = cols + 16;
                col.resize(ckk * ld, T::zero());
                dyg.resize(c_out * ld, T::zero());
                for (j, img) in (start..end).enumerate() {
                    let xi = &x[img * g.in_len()..(img + 1) * g.in_len()];
                    if g.pointwise() {
                        for (r, src) in xi.chunks(ohw).enumerate() {
                            col[r * ld + j * ohw..][..ohw].copy_from_slice(src);
                        }
                    } else {
                        im2col(g, xi, &mut col, ld, j * ohw);
                    }
                    dy.copy_image(img, (c_out, ohw), &mut dyg, ld, j * ohw);
                }
                for band in bands.by_output() {
                    let (rows, taps) = (band.out.len(), band.inp.len() * kk);
                    let (first_row, first_tap) = (band.out.start, band.inp.start * kk);
                    // SAFETY: dw_t is c_out×ckk column-major; dyg is c_out×cols (row stride
                    // ld); col is the transpose of a ckk×cols matrix with row stride ld;
                    // buffers are distinct. The block's rows and taps lie within them
                    // (`ChannelBands` keeps `out` within c_out and `inp` within c_in).
                    unsafe {
                        matmul(
                            (rows, taps, cols),
                            (
                                dw_t.as_mut_ptr().add(first_tap * c_out + first_row),
                                1,
                                c_out,
                            ),
                            !first,
                            (dyg.as_ptr().add(first_row * ld), ld, 1),
                            (col.as_ptr().add(first_tap * ld), 1, ld),
                            par,
                        )
                    };
                }
                first = false;
                for (co, d) in db.iter_mut().enumerate() {
                    *d += lane_sum(&dyg[co * ld..co * ld + cols]);
                }
            }
            for (co, row) in dw.chunks_mut(ckk).enumerate() {
                for (r, d) in row.iter_mut().enumerate() {
                    *d = dw_t[r * c_out + co];
                }
            }
            acc
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut total = partials.next().unwrap_or_default();
    for p in partials {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += *v);
    }
    total
}

/// Writes `dx` (`N·C_in·H·W`) whole: `dX[n] = col2im(Wᵀ · dY[n])` for every image. The ReLU's
/// mask, when there is one, is applied to each image's gradient as it is copied into a buffer
/// of the thread's; a plain gradient is read where it is.
fn input_grad<T: WithDType>(
    g: &Geom,
    bands: &ChannelBands,
    dy: OutGrad<'_, T>,
    wt: &[T],
    dx: &mut [MaybeUninit<T>],
) {
    assert_eq!(
        wt.len(),
        g.c_out * g.ckk(),
        "conv2d backward: weight length"
    );
    assert_eq!(dx.len(), g.n * g.in_len(), "conv2d backward: dX length");
    let (ohw, par) = (g.ohw(), inner_parallelism(g.n));
    dx.par_chunks_mut(g.in_len()).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(col, masked): &mut (Vec<T>, Vec<T>), (img, dxi)| {
            let gi = match dy {
                OutGrad::Plain(d) => &d[img * g.out_len()..][..g.out_len()],
                OutGrad::Masked(..) => {
                    masked.resize(g.out_len(), T::zero());
                    dy.copy_image(img, (g.c_out, ohw), masked, ohw, 0);
                    &masked[..]
                }
            };
            image_input_grad(g, bands, wt, (gi, ohw, 0), col, dxi, par);
        },
    );
}

/// Writes image `dxi = col2im(Wᵀ · dY)` whole, for `dy` one image's output gradient
/// (`c_out×ohw` at column `off` of a buffer with row stride `ld`), one GEMM per input block of
/// `bands`; `col` is scratch.
fn image_input_grad<T: WithDType>(
    g: &Geom,
    bands: &ChannelBands,
    wt: &[T],
    (dy, ld, off): (&[T], usize, usize),
    col: &mut Vec<T>,
    dxi: &mut [MaybeUninit<T>],
    par: gemm::Parallelism,
) {
    let (ckk, ohw, kk) = (g.ckk(), g.ohw(), g.k * g.k);
    assert_eq!(dxi.len(), g.in_len(), "conv2d backward: dX image length");
    assert!(
        dy.len() >= (g.c_out - 1) * ld + off + ohw,
        "conv2d backward: dY buffer length"
    );
    let direct = g.pointwise();
    if !direct {
        col.resize(col.len().max(ckk * ohw), T::zero());
    }
    let dst = if direct {
        dxi.as_mut_ptr().cast::<T>()
    } else {
        col.as_mut_ptr()
    };
    for band in bands.by_input() {
        let (taps, first_tap) = (band.inp.len() * kk, band.inp.start * kk);
        let (rows, first_row) = (band.out.len(), band.out.start);
        // SAFETY: dst is ckk×ohw (dxi itself when pointwise, of in_len = ckk·ohw values,
        // asserted); the input blocks tile its rows, so each block's rows are written here
        // once, without being read (`accumulate` false), or zero-filled when no output reads
        // them. wt viewed as its transpose (ckk×c_out, row stride 1, column stride ckk); dy is
        // c_out×ohw with row stride ld from `off` (its length asserted). The block's rows and
        // taps lie within them (`ChannelBands` keeps `out` within c_out and `inp` within c_in).
        unsafe {
            let dst = dst.add(first_tap * ohw);
            if rows == 0 {
                // All-zero bytes are 0 in every float type the op dispatches on.
                std::ptr::write_bytes(dst, 0, taps * ohw);
                continue;
            }
            matmul(
                (taps, ohw, rows),
                (dst, ohw, 1),
                false,
                (wt.as_ptr().add(first_row * ckk + first_tap), 1, ckk),
                (dy.as_ptr().add(first_row * ld + off), ld, 1),
                par,
            )
        };
    }
    if !direct {
        col2im(g, &col[..ckk * ohw], dxi);
    }
}
