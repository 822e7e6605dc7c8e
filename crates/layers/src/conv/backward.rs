//! The backward kernels: the weight and bias gradients as GEMMs over images packed side by side,
//! the input gradient as one GEMM per image followed by col2im, and the ReLU mask that the fused
//! ReLU puts in front of both.

use std::mem::MaybeUninit;

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, WithDType};
use rayon::prelude::*;

use super::gemm::{inner_parallelism, matmul};
use super::geometry::{col2im, im2col, Geom};
use super::{ChannelBands, ConvOptions};
use crate::cpu::{dispatch_float, lane_sum, slice, with_simd, written_by};

/// `grad` where the ReLU output is positive, else 0.
pub(super) struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "nin-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn mask<T: WithDType>(g: &[T], y: &[T]) -> Vec<T> {
            assert_eq!(g.len(), y.len(), "relu mask: gradient and output lengths");
            // Writes every value: `g` and `y` have the output's length (asserted above), so
            // the three chunkings line up and every output value is written once.
            let written = |out: &mut [MaybeUninit<T>]| {
                out.par_chunks_mut(1 << 14)
                    .zip(g.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
                    .for_each(|(o, (g, y))| {
                        debug_assert_eq!((o.len(), g.len()), (y.len(), y.len()));
                        with_simd(
                            #[inline(always)]
                            move || {
                                for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                                    o.write(if y > T::zero() { g } else { T::zero() });
                                }
                            },
                        )
                    });
            };
            // SAFETY: `written` writes all `g.len()` values, as said where it is defined.
            unsafe { written_by(g.len(), written) }
        }
        let op = self.name();
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "{op}: gradient {:?} and ReLU output {:?} differ in shape",
                l1.dims(),
                l2.dims()
            );
        }
        let storage = dispatch_float!(s1.dtype(), op, |T| {
            T::to_cpu_storage_owned(mask::<T>(slice(s1, l1, op)?, slice(s2, l2, op)?))
        });
        Ok((storage, l1.shape().clone()))
    }
    #[cfg(feature = "cuda")]
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

/// The backward GEMMs: `Weight` on (input, dY) gives `[dW…, db…]` flat; `Input` on (dY, weight)
/// gives dX with the stored input shape. Each with the forward's channel bands (`None`: dense).
pub(super) enum GradOp {
    /// With the kernel side.
    Weight(ConvOptions, usize, Option<Arc<ChannelBands>>),
    /// With the shape of the input.
    Input(ConvOptions, Shape, Option<Arc<ChannelBands>>),
}

impl CustomOp2 for GradOp {
    fn name(&self) -> &'static str {
        match self {
            Self::Weight(..) => "nin-conv2d-weight-grad",
            Self::Input(..) => "nin-conv2d-input-grad",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let op = self.name();
        // The geometry, and the shape of dY against it, are checked before any kernel runs.
        let (g, out_shape, bands) = match self {
            GradOp::Weight(opts, k, bands) => {
                // s1 = input [N, C_in, H, W], s2 = dY [N, C_out, OH, OW].
                let (x_dims, dy_dims) = (l1.dims(), l2.dims());
                let (&[_, c_in, _, _], &[_, c_out, _, _]) = (x_dims, dy_dims) else {
                    candle_core::bail!("{op}: operands must be 4-D, got {x_dims:?} and {dy_dims:?}")
                };
                let g = Geom::new(x_dims, &[c_out, c_in, *k, *k], *opts)?;
                g.expect_output(dy_dims, op)?;
                (g, Shape::from(c_out * g.ckk() + c_out), bands)
            }
            GradOp::Input(opts, x_shape, bands) => {
                // s1 = dY [N, C_out, OH, OW], s2 = weight [C_out, C_in, k, k].
                let g = Geom::new(x_shape.dims(), l2.dims(), *opts)?;
                g.expect_output(l1.dims(), op)?;
                (g, x_shape.clone(), bands)
            }
        };
        let bands = g.bands_or_dense(bands.as_deref())?;
        let storage = dispatch_float!(s1.dtype(), op, |T| {
            let (a, b) = (slice::<T>(s1, l1, op)?, slice::<T>(s2, l2, op)?);
            T::to_cpu_storage_owned(match self {
                GradOp::Weight(..) => weight_grad(&g, &bands, a, b),
                GradOp::Input(..) => input_grad(&g, &bands, a, b),
            })
        });
        Ok((storage, out_shape))
    }
}

/// `[dW (c_out·ckk), db (c_out)]` summed over the batch; `dW` is zero outside `bands`.
fn weight_grad<T: WithDType>(g: &Geom, bands: &ChannelBands, x: &[T], dy: &[T]) -> Vec<T> {
    let (ckk, ohw, c_out, kk) = (g.ckk(), g.ohw(), g.c_out, g.k * g.k);
    debug_assert_eq!((x.len(), dy.len()), (g.n * g.in_len(), g.n * g.out_len()));
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
                    let gi = &dy[img * g.out_len()..(img + 1) * g.out_len()];
                    for (r, src) in gi.chunks(ohw).enumerate() {
                        dyg[r * ld + j * ohw..][..ohw].copy_from_slice(src);
                    }
                }
                let (lhs, lhs_rs, rhs, rhs_ld): (&[T], usize, &[T], usize) =
                    (&dyg[..], ld, &col[..], ld);
                debug_assert_eq!((lhs.len(), rhs.len()), (c_out * ld, ckk * ld));
                for band in bands.by_output() {
                    let (rows, taps) = (band.out.len(), band.inp.len() * kk);
                    let (first_row, first_tap) = (band.out.start, band.inp.start * kk);
                    // SAFETY: dw_t is c_out×ckk column-major; lhs is c_out×cols (row stride
                    // lhs_rs); rhs is the transpose of a ckk×cols matrix with row stride
                    // rhs_ld; buffers are distinct. The block's rows and taps lie within them
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
                            (lhs.as_ptr().add(first_row * lhs_rs), lhs_rs, 1),
                            (rhs.as_ptr().add(first_tap * rhs_ld), 1, rhs_ld),
                            par,
                        )
                    };
                }
                first = false;
                for (co, d) in db.iter_mut().enumerate() {
                    *d += lane_sum(&lhs[co * lhs_rs..co * lhs_rs + cols]);
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

/// `dX[n] = col2im(Wᵀ · dY[n])` for every image, flat `[N, C_in, H, W]`, one GEMM per input
/// block of `bands`: its rows of `Wᵀ · dY[n]` from the output channels that read it (the weight
/// is zero elsewhere), so each row is written once.
///
/// # Panics
/// When a slice's length disagrees with `g` (a bug: the op checks the shapes first), rather than
/// leave part of the output unwritten.
fn input_grad<T: WithDType>(g: &Geom, bands: &ChannelBands, dy: &[T], wt: &[T]) -> Vec<T> {
    let (ckk, ohw, kk) = (g.ckk(), g.ohw(), g.k * g.k);
    assert_eq!(
        dy.len(),
        g.n * g.out_len(),
        "conv2d input grad: gradient length"
    );
    assert_eq!(wt.len(), g.c_out * ckk, "conv2d input grad: weight length");
    let par = inner_parallelism(g.n);
    // Writes every value: `dx` splits into exactly `n` images of `in_len` values and `dy` into
    // as many of `out_len` (asserted above), so the zip visits every image; each is written
    // whole by the GEMM (pointwise: `dxi` is its destination, `accumulate` false) or by col2im,
    // which fills before it adds.
    let written = |dx: &mut [MaybeUninit<T>]| {
        dx.par_chunks_mut(g.in_len())
            .zip(dy.par_chunks(g.out_len()))
            .for_each_init(Vec::new, |col: &mut Vec<T>, (dxi, gi)| {
                debug_assert_eq!((dxi.len(), gi.len()), (g.in_len(), g.out_len()));
                let direct = g.pointwise();
                if !direct {
                    col.resize(ckk * ohw, T::zero());
                }
                let dst = if direct {
                    dxi.as_mut_ptr().cast::<T>()
                } else {
                    col.as_mut_ptr()
                };
                for band in bands.by_input() {
                    let (taps, first_tap) = (band.inp.len() * kk, band.inp.start * kk);
                    let (rows, first_row) = (band.out.len(), band.out.start);
                    // SAFETY: dst is ckk×ohw (dxi itself when pointwise); the input blocks tile
                    // its rows, so each block's rows are written here once, without being read
                    // (`accumulate` false), or zero-filled when no output reads them. wt viewed
                    // as its transpose (ckk×c_out, row stride 1, column stride ckk); gi is
                    // c_out×ohw. The block's rows and taps lie within them (`ChannelBands`
                    // keeps `out` within c_out and `inp` within c_in).
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
                            (gi.as_ptr().add(first_row * ohw), ohw, 1),
                            par,
                        )
                    };
                }
                if !direct {
                    col2im(g, col, dxi);
                }
            });
    };
    // SAFETY: `written` writes all `n·in_len` values, as said where it is defined.
    unsafe { written_by(g.n * g.in_len(), written) }
}
