//! 2-D convolution as a candle custom op whose CPU forward and backward are GEMMs.
//!
//! candle 0.11's convolution is slow where training spends its time (see
//! `docs/performance.md`): the input gradient runs through `conv_transpose2d`, a loop without
//! GEMM; the weight gradient of a 1×1 convolution degenerates into matrix–vector products; the
//! input gradient of the first layer is computed though nothing needs it; and bias and ReLU add
//! whole-tensor passes forward and backward. This op does, per image `n`:
//!
//! - forward: `Y[n] = W · col(X[n]) + b` (`[C_out, C_in·k·k] × [C_in·k·k, OH·OW]`), ReLU fused
//!   in; a 1×1 stride-1 convolution uses `X[n]` itself as `col`, so it is one plain GEMM;
//! - weight gradient: `dW = Σₙ dY[n] · col(X[n])ᵀ`, with several small images packed side by side
//!   so that each GEMM has a long inner dimension; bias gradient: the sums of `dY`'s rows;
//! - input gradient: `dX[n] = col2im(Wᵀ · dY[n])` (for 1×1 stride 1: `Wᵀ · dY[n]` directly),
//!   **computed only when the input tracks a gradient** (`Tensor::track_op`: it is a variable or
//!   the result of an op on one), so a model's own input, a plain tensor, never costs one.
//!
//! Images are spread over rayon's pool with single-threaded GEMMs; with fewer images than
//! threads the GEMMs themselves run in parallel. Sums over images go chunk by chunk in a fixed
//! order, so a result depends on the thread count but not on scheduling. The im2col buffers are
//! per thread and never kept: the backward recomputes them, so memory stays at candle's level.
//!
//! f32 and f64 run on the CPU through the `gemm` crate (the one candle uses, with its AVX-512
//! kernels enabled). Any other device or dtype falls back to candle's own `conv2d`, bias add and
//! ReLU, which are correct there, only slower.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::cpu::{contiguous, lane_sum};

/// Stride, padding and fused activation of a [`conv2d`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Step between windows, both axes.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Apply ReLU to the output (and mask the gradient by it) inside the op.
    pub relu: bool,
}

/// `relu?(conv(xs, weight) + bias)` for `xs` `[N, C_in, H, W]` and `weight` `[C_out, C_in, k, k]`;
/// differentiable. Fast on the CPU for f32 and f64, candle's own convolution elsewhere.
pub fn conv2d(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: ConvOptions,
) -> candle_core::Result<Tensor> {
    let (_, c_in, h, w) = xs.dims4()?;
    let (c_out, wc_in, kh, kw) = weight.dims4()?;
    if wc_in != c_in || kh != kw {
        candle_core::bail!(
            "conv2d: weight {:?} does not fit input {:?} (need [C_out, {c_in}, k, k])",
            weight.dims(),
            xs.dims()
        );
    }
    if opts.stride == 0 || h + 2 * opts.padding < kh || w + 2 * opts.padding < kw {
        candle_core::bail!(
            "conv2d: a {kh}×{kw} kernel with stride {} and padding {} does not fit {h}×{w}",
            opts.stride,
            opts.padding
        );
    }
    if let Some(b) = bias {
        if b.dims() != [c_out] {
            candle_core::bail!("conv2d: bias must be [{c_out}], got {:?}", b.dims());
        }
    }
    let fast = xs.device().is_cpu()
        && matches!(xs.dtype(), DType::F32 | DType::F64)
        && weight.dtype() == xs.dtype()
        && bias.is_none_or(|b| b.dtype() == xs.dtype());
    if !fast {
        let mut ys = xs.conv2d(weight, opts.padding, opts.stride, 1, 1)?;
        if let Some(b) = bias {
            ys = ys.broadcast_add(&b.reshape((1, (), 1, 1))?)?;
        }
        return if opts.relu { ys.relu() } else { Ok(ys) };
    }
    let op = ConvOp { opts };
    let (xs, weight) = (xs.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => xs.apply_op3(&weight, &b.contiguous()?, op),
        None => xs.apply_op2(&weight, op),
    }
}

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    fn of(x: &[usize], wt: &[usize], opts: ConvOptions) -> candle_core::Result<Self> {
        let (&[n, c_in, h, w], &[c_out, _, k, _]) = (x, wt) else {
            candle_core::bail!("conv2d: expected 4-D input and weight, got {x:?} and {wt:?}")
        };
        let (stride, pad) = (opts.stride, opts.padding);
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
        })
    }

    /// Rows of the im2col matrix.
    fn ckk(&self) -> usize {
        self.c_in * self.k * self.k
    }
    fn ohw(&self) -> usize {
        self.oh * self.ow
    }
    fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.c_out * self.ohw()
    }
    /// A 1×1 stride-1 unpadded convolution: the image itself is its im2col matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
}

/// How to spread `n_images` over the pool: outer parallelism over images with sequential
/// GEMMs, or (fewer images than threads) parallel GEMMs.
fn inner_parallelism(n_images: usize) -> Parallelism {
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
unsafe fn matmul<T: 'static + WithDType>(
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

/// For each im2col row `r = (c, ky, kx)`, the `oh·ow` input values (or padding zeros) that the
/// kernel tap `(ky, kx)` of channel `c` meets; written to `col[r·ld + off ..][..oh·ow]`.
fn im2col<T: WithDType>(g: &Geom, x: &[T], col: &mut [T], ld: usize, off: usize) {
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

/// The adjoint of [`im2col`]: adds every column entry back onto the input cell it came from.
fn col2im<T: WithDType>(g: &Geom, col: &[T], dx: &mut [MaybeUninit<T>]) {
    dx.fill(MaybeUninit::new(T::zero()));
    // SAFETY: just filled.
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

/// A vector of `len` values that `init` writes, every one of them, without zero-filling it
/// first: every op output is written whole by a GEMM or a fill, and a zero-fill would be one more
/// pass over the largest tensors of a step.
fn written_by<T: WithDType>(len: usize, init: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    init(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: `init` initialises all `len` values (the contract of every caller below).
    unsafe { out.set_len(len) };
    out
}

/// `s` as initialised values.
///
/// # Safety
/// Every value of `s` must have been written.
unsafe fn assume_init<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: MaybeUninit<T> has T's layout, and the caller vouches that all are initialised.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<T>(), s.len()) }
}

fn forward<T: WithDType>(g: &Geom, x: &[T], wt: &[T], bias: Option<&[T]>, relu: bool) -> Vec<T> {
    let (ckk, ohw) = (g.ckk(), g.ohw());
    let par = inner_parallelism(g.n);
    written_by(g.n * g.out_len(), |out| {
        out.par_chunks_mut(g.out_len())
            .zip(x.par_chunks(g.in_len()))
            .for_each_init(Vec::new, |col: &mut Vec<T>, (y, xi)| {
                let rhs: &[T] = if g.pointwise() {
                    xi
                } else {
                    col.resize(ckk * ohw, T::zero());
                    im2col(g, xi, col, ohw, 0);
                    col
                };
                // SAFETY: y is c_out×ohw, wt c_out×ckk, rhs ckk×ohw, all row-major and distinct;
                // the GEMM overwrites y without reading it.
                unsafe {
                    matmul(
                        (g.c_out, ohw, ckk),
                        (y.as_mut_ptr().cast::<T>(), ohw, 1),
                        false,
                        (wt.as_ptr(), ckk, 1),
                        (rhs.as_ptr(), ohw, 1),
                        par,
                    )
                };
                // SAFETY: the GEMM has written all of y.
                let y = unsafe { assume_init(y) };
                // Bias and ReLU in one pass over the image's output while it is in cache, rather
                // than filling the output with the bias for the GEMM to accumulate onto.
                let zero = T::zero();
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
            });
    })
}

/// `[dW (c_out·ckk), db (c_out)]` summed over the batch.
fn weight_grad<T: WithDType>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let (ckk, ohw, c_out) = (g.ckk(), g.ohw(), g.c_out);
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
            // axis) when it writes dW column-major; it is transposed into place at the end.
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
                // SAFETY: dw_t is c_out×ckk column-major; lhs is c_out×cols (row stride
                // lhs_rs); rhs is the transpose of a ckk×cols matrix with row stride rhs_ld;
                // buffers are distinct.
                unsafe {
                    matmul(
                        (c_out, ckk, cols),
                        (dw_t.as_mut_ptr(), 1, c_out),
                        !first,
                        (lhs.as_ptr(), lhs_rs, 1),
                        (rhs.as_ptr(), 1, rhs_ld),
                        par,
                    )
                };
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

fn input_grad<T: WithDType>(g: &Geom, dy: &[T], wt: &[T]) -> Vec<T> {
    let (ckk, ohw) = (g.ckk(), g.ohw());
    let par = inner_parallelism(g.n);
    written_by(g.n * g.in_len(), |dx| {
        dx.par_chunks_mut(g.in_len())
            .zip(dy.par_chunks(g.out_len()))
            .for_each_init(Vec::new, |col: &mut Vec<T>, (dxi, gi)| {
                let direct = g.pointwise();
                if !direct {
                    col.resize(ckk * ohw, T::zero());
                }
                let dst = if direct {
                    dxi.as_mut_ptr().cast::<T>()
                } else {
                    col.as_mut_ptr()
                };
                // SAFETY: dst is ckk×ohw (dxi itself when pointwise, overwritten without being
                // read); wt viewed as its transpose (ckk×c_out, row stride 1, column stride ckk);
                // gi is c_out×ohw.
                unsafe {
                    matmul(
                        (ckk, ohw, g.c_out),
                        (dst, ohw, 1),
                        false,
                        (wt.as_ptr(), 1, ckk),
                        (gi.as_ptr(), ohw, 1),
                        par,
                    )
                };
                if !direct {
                    col2im(g, col, dxi);
                }
            });
    })
}

/// The forward op on (input, weight[, bias]).
#[derive(Clone, Copy, Debug)]
struct ConvOp {
    opts: ConvOptions,
}

fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    contiguous(s, l, "conv2d")
}

impl ConvOp {
    fn fwd<T: WithDType>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geom::of(l1.dims(), l2.dims(), self.opts)?;
        let b = bias.map(|(s, l)| slice::<T>(s, l)).transpose()?;
        let out = forward(&g, slice(s1, l1)?, slice(s2, l2)?, b, self.opts.relu);
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from((g.n, g.c_out, g.oh, g.ow)),
        ))
    }

    fn dispatch(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match x.0.dtype() {
            DType::F32 => self.fwd::<f32>(x, w, b),
            DType::F64 => self.fwd::<f64>(x, w, b),
            dt => candle_core::bail!("conv2d: unsupported dtype {dt:?}"),
        }
    }

    /// Gradients for input, weight and bias, each only when its tensor tracks gradients.
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = if self.opts.relu {
            grad.contiguous()?.apply_op2_no_bwd(res, &ReluMask)?
        } else {
            grad.contiguous()?
        };
        let (c_out, ckk) = (w.dim(0)?, w.elem_count() / w.dim(0)?);
        let (mut dw, mut db) = (None, None);
        if w.track_op() || b.is_some_and(Tensor::track_op) {
            let both = x.apply_op2_no_bwd(&dy, &GradOp::Weight(self.opts, w.dim(2)?))?;
            dw = Some(both.narrow(0, 0, c_out * ckk)?.reshape(w.shape())?);
            db = b.map(|_| both.narrow(0, c_out * ckk, c_out)).transpose()?;
        }
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &GradOp::Input(self.opts, x.shape().clone()))?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "nin-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.dispatch((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, None, res, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for ConvOp {
    fn name(&self) -> &'static str {
        "nin-conv2d-bias"
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
        self.dispatch((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward(x, w, Some(b), res, grad)
    }
}

/// `grad` where the ReLU output is positive, else 0.
struct ReluMask;

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
        fn mask<T: WithDType>(g: &[T], y: &[T]) -> CpuStorage {
            let out = written_by(g.len(), |out| {
                out.par_chunks_mut(1 << 14)
                    .zip(g.par_chunks(1 << 14).zip(y.par_chunks(1 << 14)))
                    .for_each(|(o, (g, y))| {
                        for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                            o.write(if y > T::zero() { g } else { T::zero() });
                        }
                    });
            });
            T::to_cpu_storage_owned(out)
        }
        let storage = match s1.dtype() {
            DType::F32 => mask::<f32>(slice(s1, l1)?, slice(s2, l2)?),
            DType::F64 => mask::<f64>(slice(s1, l1)?, slice(s2, l2)?),
            dt => candle_core::bail!("relu mask: unsupported dtype {dt:?}"),
        };
        Ok((storage, l1.shape().clone()))
    }
}

/// The backward GEMMs: `Weight` on (input, dY) gives `[dW…, db…]` flat; `Input` on (dY, weight)
/// gives dX with the stored input shape.
enum GradOp {
    Weight(ConvOptions, usize),
    Input(ConvOptions, Shape),
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
        fn run<T: WithDType>(
            op: &GradOp,
            a: &[T],
            b: &[T],
            l1: &Layout,
            l2: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            Ok(match op {
                GradOp::Weight(opts, k) => {
                    // a = input [N, C_in, H, W], b = dY [N, C_out, OH, OW].
                    let (x_dims, dy_dims) = (l1.dims(), l2.dims());
                    let (&[_, c_in, _, _], &[_, c_out, oh, ow]) = (x_dims, dy_dims) else {
                        candle_core::bail!("conv2d weight grad: operands must be 4-D")
                    };
                    let k = *k;
                    let g = Geom::of(x_dims, &[c_out, c_in, k, k], *opts)?;
                    if (g.oh, g.ow) != (oh, ow) {
                        candle_core::bail!("conv2d weight grad: inconsistent shapes");
                    }
                    let out = weight_grad(&g, a, b);
                    let len = out.len();
                    (T::to_cpu_storage_owned(out), Shape::from(len))
                }
                GradOp::Input(opts, x_shape) => {
                    let g = Geom::of(x_shape.dims(), l2.dims(), *opts)?;
                    let out = input_grad(&g, a, b);
                    (T::to_cpu_storage_owned(out), x_shape.clone())
                }
            })
        }
        match s1.dtype() {
            DType::F32 => run::<f32>(self, slice(s1, l1)?, slice(s2, l2)?, l1, l2),
            DType::F64 => run::<f64>(self, slice(s1, l1)?, slice(s2, l2)?, l1, l2),
            dt => candle_core::bail!("conv2d grad: unsupported dtype {dt:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::max_abs_diff;
    use candle_core::{Device, Var};

    /// Deterministic pseudo-random values in [−1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    fn tensor(dims: &[usize], seed: u64, dtype: DType) -> Tensor {
        let n = dims.iter().product();
        Tensor::from_vec(values(n, seed), dims, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// (input dims, C_out, k, stride, padding)
    const SHAPES: &[([usize; 4], usize, usize, usize, usize)] = &[
        ([2, 3, 5, 6], 4, 3, 1, 1),
        ([2, 3, 7, 5], 4, 5, 1, 2),
        ([3, 4, 5, 5], 3, 1, 1, 0),
        ([2, 3, 7, 6], 2, 3, 2, 1),
        ([1, 2, 6, 7], 3, 3, 2, 0),
        ([3, 2, 5, 4], 2, 1, 2, 0),
        ([2, 2, 4, 3], 3, 5, 1, 2),
    ];

    #[test]
    fn forward_and_gradients_match_candle() {
        for (i, &(xd, c_out, k, stride, padding)) in SHAPES.iter().enumerate() {
            for relu in [false, true] {
                let seed = i as u64 * 10;
                let x = Var::from_tensor(&tensor(&xd, seed, DType::F32)).unwrap();
                let w =
                    Var::from_tensor(&tensor(&[c_out, xd[1], k, k], seed + 1, DType::F32)).unwrap();
                let b = Var::from_tensor(&tensor(&[c_out], seed + 2, DType::F32)).unwrap();
                let opts = ConvOptions {
                    stride,
                    padding,
                    relu,
                };
                let ours = conv2d(&x, &w, Some(&b), opts).unwrap();
                let mut theirs = x
                    .conv2d(&w, padding, stride, 1, 1)
                    .unwrap()
                    .broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
                    .unwrap();
                if relu {
                    theirs = theirs.relu().unwrap();
                }
                assert!(max_abs_diff(&ours, &theirs) < 1e-5, "shape {i} forward");
                // candle's own backward fails ("shape mismatch in add") when the stride leaves
                // input rows or columns unread; finite differences cover those shapes.
                let unread = |side: usize| (side + 2 * padding - k) % stride != 0;
                if unread(xd[2]) || unread(xd[3]) {
                    continue;
                }
                let r = tensor(ours.dims(), seed + 3, DType::F32);
                let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let g2 = (&theirs * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                    let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
                    assert_eq!(a.dims(), e.dims());
                    assert!(max_abs_diff(a, e) < 1e-4, "shape {i} relu {relu}: d{name}");
                }
            }
        }
    }

    /// Central differences in f64 for every entry of input, weight and bias.
    #[test]
    fn gradients_match_finite_differences() {
        let eps = 1e-6;
        for (i, &(xd, c_out, k, stride, padding)) in SHAPES.iter().enumerate() {
            let seed = 100 + i as u64 * 10;
            let wd = [c_out, xd[1], k, k];
            let (x0, w0, b0) = (
                values(xd.iter().product(), seed),
                values(wd.iter().product(), seed + 1),
                values(c_out, seed + 2),
            );
            let opts = ConvOptions {
                stride,
                padding,
                relu: false,
            };
            let dev = &Device::Cpu;
            let loss = |x: &[f64], w: &[f64], b: &[f64], r: Option<&Tensor>| {
                let xs = Tensor::from_slice(x, &xd, dev).unwrap();
                let ws = Tensor::from_slice(w, &wd, dev).unwrap();
                let bs = Tensor::from_slice(b, c_out, dev).unwrap();
                let y = conv2d(&xs, &ws, Some(&bs), opts).unwrap();
                let r = r
                    .cloned()
                    .unwrap_or_else(|| tensor(y.dims(), seed + 3, DType::F64));
                (&y * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let x = Var::from_vec(x0.clone(), &xd, dev).unwrap();
            let w = Var::from_vec(w0.clone(), &wd, dev).unwrap();
            let b = Var::from_vec(b0.clone(), c_out, dev).unwrap();
            let y = conv2d(&x, &w, Some(&b), opts).unwrap();
            let r = tensor(y.dims(), seed + 3, DType::F64);
            let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let analytic = |v: &Var| {
                grads
                    .get(v)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
            };
            let (gx, gw, gb) = (
                analytic(&x).unwrap(),
                analytic(&w).unwrap(),
                analytic(&b).unwrap(),
            );
            for which in 0..3 {
                let (base, got) = match which {
                    0 => (&x0, &gx),
                    1 => (&w0, &gw),
                    _ => (&b0, &gb),
                };
                for j in 0..base.len() {
                    let mut p = base.clone();
                    let mut m = base.clone();
                    p[j] += eps;
                    m[j] -= eps;
                    let (lp, lm) = match which {
                        0 => (loss(&p, &w0, &b0, Some(&r)), loss(&m, &w0, &b0, Some(&r))),
                        1 => (loss(&x0, &p, &b0, Some(&r)), loss(&x0, &m, &b0, Some(&r))),
                        _ => (loss(&x0, &w0, &p, Some(&r)), loss(&x0, &w0, &m, Some(&r))),
                    };
                    let fd = (lp - lm) / (2.0 * eps);
                    assert!(
                        (fd - got[j]).abs() < 1e-6 * (1.0 + fd.abs()),
                        "shape {i}, tensor {which}, entry {j}: fd {fd} vs {}",
                        got[j]
                    );
                }
            }
        }
    }

    #[test]
    fn a_plain_input_gets_no_gradient_and_a_variable_one_does() {
        let w = Var::from_tensor(&tensor(&[4, 3, 3, 3], 1, DType::F32)).unwrap();
        let opts = ConvOptions {
            stride: 1,
            padding: 1,
            relu: true,
        };
        let plain = tensor(&[2, 3, 6, 6], 2, DType::F32);
        let grads = conv2d(&plain, &w, None, opts)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(&plain).is_none());
        assert!(grads.get(&w).is_some());
        let var = Var::from_tensor(&plain).unwrap();
        let grads = conv2d(&var, &w, None, opts)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(grads.get(&var).unwrap().dims(), &[2, 3, 6, 6]);
    }

    #[test]
    fn batches_larger_than_the_pool_split_and_sum_in_order() {
        // Enough images for several chunks and packed groups of small maps.
        let x = Var::from_tensor(&tensor(&[9, 3, 4, 4], 5, DType::F64)).unwrap();
        let w = Var::from_tensor(&tensor(&[2, 3, 3, 3], 6, DType::F64)).unwrap();
        let opts = ConvOptions {
            stride: 1,
            padding: 1,
            relu: false,
        };
        let ours = conv2d(&x, &w, None, opts).unwrap();
        let theirs = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_abs_diff(g1.get(&w).unwrap(), g2.get(&w).unwrap()) < 1e-10);
        assert!(max_abs_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-10);
    }
}
