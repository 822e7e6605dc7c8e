//! The CPU ops of batch norm: per-channel moments in f64, `act(x·scale + shift)` in one pass,
//! and its backward in one op, with the activation's gradient mask inside.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::BN_EPS;
use crate::activation::Activation;
use crate::cpu::{
    dispatch_float, lane_sum, lane_sum_of_squares, lane_sums, slice, with_simd, written_by,
    KernelFloat,
};

/// `(N, C, H·W)` of a contiguous `[N, C, H, W]` layout.
fn dims(l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (n, c, h, w) = l.shape().dims4()?;
    Ok((n, c, h * w))
}

/// `f(p)` for every plane `p` (`[HW]` values at `p·HW`) of a contiguous `[N, C, HW]` buffer, in
/// plane order, over the pool in memory order (several planes per task). A channel's planes lie
/// `C·HW` values apart, so a pass channel by channel jumps across the whole tensor (a new page
/// for every plane of NIN's 32×32 maps, and no stream for the prefetcher to follow), where this
/// one streams through it; on an Intel Xeon the channel-by-channel sums of the backward took 10 %
/// of a `nin_bn` training step.
fn per_plane<R: Send>(d: (usize, usize, usize), f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    (0..d.0 * d.1)
        .into_par_iter()
        .with_min_len(MIN_SPLIT.div_ceil(d.2))
        .map(f)
        .collect()
}

/// Channel `c`'s per-plane values of [`per_plane`], in image order.
fn of_channel<R: Copy>(
    per_plane: &[R],
    d: (usize, usize, usize),
    c: usize,
) -> impl Iterator<Item = R> + '_ {
    (0..d.0).map(move |i| per_plane[i * d.1 + c])
}

/// Per-channel mean and biased variance in f64, as a `[2, C]` f64 tensor.
pub(super) struct ChannelMoments;

impl CustomOp1 for ChannelMoments {
    fn name(&self) -> &'static str {
        "nin-batch-norm-moments"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: WithDType>(x: &[T], d: (usize, usize, usize)) -> Vec<f64> {
            let count = (d.0 * d.2) as f64;
            let plane = |p: usize| &x[p * d.2..][..d.2];
            let sums = per_plane(d, |p| lane_sum(plane(p)).to_f64());
            let mean: Vec<f64> = (0..d.1)
                .map(|c| of_channel(&sums, d, c).sum::<f64>() / count)
                .collect();
            let squares = per_plane(d, |p| {
                lane_sum_of_squares(plane(p), T::from_f64(mean[p % d.1])).to_f64()
            });
            let var = (0..d.1).map(|c| of_channel(&squares, d, c).sum::<f64>() / count);
            mean.iter().copied().chain(var).collect()
        }
        let d = dims(l)?;
        let out = dispatch_float!(s.dtype(), self.name(), |T| run::<T>(
            slice(s, l, self.name())?,
            d
        ));
        Ok((CpuStorage::F64(out), Shape::from((2, d.1))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::moments(s, l)
    }
}

/// `act(x·scale + shift)` on (x, γ, β), given each channel's statistics.
pub(super) struct NormOp {
    /// Each channel's mean.
    pub(super) mean: Vec<f64>,
    /// Each channel's 1/√(σ² + ε).
    pub(super) inv_std: Vec<f64>,
    /// The statistics are the batch's own, so the gradient flows through them too.
    pub(super) batch_stats: bool,
    /// The activation fused in.
    pub(super) act: Activation,
}

impl NormOp {
    /// The norm with each channel's `mean` and (biased) variance `var`.
    pub(super) fn new(mean: Vec<f64>, var: &[f64], batch_stats: bool, act: Activation) -> Self {
        let inv_std = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
        Self {
            mean,
            inv_std,
            batch_stats,
            act,
        }
    }

    /// Per-channel `(scale, shift)` in `T`; the forward and the backward's ReLU mask both use
    /// these, so they agree on every sign.
    fn affine<T: WithDType>(&self, gamma: &[f64], beta: &[f64]) -> Vec<(T, T)> {
        (0..self.mean.len())
            .map(|c| {
                let scale = gamma[c] * self.inv_std[c];
                let shift = beta[c] - self.mean[c] * scale;
                (T::from_f64(scale), T::from_f64(shift))
            })
            .collect()
    }
}

/// `xs` in f64.
fn to_f64<T: WithDType>(xs: &[T]) -> Vec<f64> {
    xs.iter().map(|v| v.to_f64()).collect()
}

/// Rayon splits of at least this many values, so small maps do not drown in task overhead.
const MIN_SPLIT: usize = 1 << 12;

/// `ys = act(xs·scale + shift)` over one plane; `act` is a closure so that each activation gets
/// its own vectorised loop.
fn normalise_plane<T: KernelFloat>(
    ys: &mut [MaybeUninit<T>],
    xs: &[T],
    (scale, shift): (T, T),
    act: impl Fn(T) -> T + Copy,
) {
    debug_assert_eq!(ys.len(), xs.len());
    with_simd(
        #[inline(always)]
        move || {
            for (y, &x) in ys.iter_mut().zip(xs) {
                y.write(act(x * scale + shift));
            }
        },
    )
}

impl CustomOp3 for NormOp {
    fn name(&self) -> &'static str {
        "nin-batch-norm"
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
        fn run<T: KernelFloat>(
            op: &NormOp,
            x: &[T],
            gamma: &[T],
            beta: &[T],
            d: (usize, usize, usize),
        ) -> Vec<T> {
            let (affine, act) = (op.affine::<T>(&to_f64(gamma), &to_f64(beta)), op.act);
            let (zero, one) = (T::zero(), T::one());
            // Writes every value: the output and `x` split into the same planes, and each
            // plane is written whole by `normalise_plane`.
            let written = |out: &mut [MaybeUninit<T>]| {
                out.par_chunks_mut(d.2)
                    .zip(x.par_chunks(d.2))
                    .with_min_len(MIN_SPLIT.div_ceil(d.2))
                    .enumerate()
                    .for_each(|(plane, (y, x))| {
                        let ab = affine[plane % d.1];
                        match act {
                            Activation::Identity => normalise_plane(y, x, ab, move |v| v),
                            // `v < 0` leaves NaN in place, as PyTorch's ReLU does.
                            Activation::Relu => {
                                normalise_plane(y, x, ab, move |v| if v < zero { zero } else { v })
                            }
                            Activation::Elu { alpha } => {
                                let alpha = T::from_f64(alpha);
                                normalise_plane(y, x, ab, move |v| {
                                    // Both sides, then a select: the loop vectorises.
                                    let negative = alpha * (v.exp_v() - one);
                                    if v > zero {
                                        v
                                    } else {
                                        negative
                                    }
                                })
                            }
                        }
                    });
            };
            // SAFETY: `written` writes all `x.len()` values, as said where it is defined.
            unsafe { written_by(x.len(), written) }
        }
        let d = dims(l1)?;
        let op = self.name();
        let storage = dispatch_float!(s1.dtype(), op, |T| {
            let (x, gamma, beta) = (slice(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?);
            T::to_cpu_storage_owned(run::<T>(self, x, gamma, beta, d))
        });
        Ok((storage, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = gamma.dim(0)?;
        let f64s = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
        let grad_op = NormGradOp {
            op: self,
            gamma: f64s(gamma)?,
            beta: f64s(beta)?,
        };
        // ELU's gradient is read off its output; ReLU's mask is recomputed from x, which the
        // backward reads anyway, so the output need not be read again.
        let third = match self.act {
            Activation::Elu { .. } => res.contiguous()?,
            Activation::Relu | Activation::Identity => x.clone(),
        };
        let all = x.apply_op3_no_bwd(&grad.contiguous()?, &third, &grad_op)?;
        let n = x.elem_count();
        let dx = all.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = all.narrow(0, n, c)?;
        let dbeta = all.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The backward of a [`NormOp`] on (x, dy, y), `y` its output for ELU (x again otherwise):
/// `[dx…, dγ…, dβ…]` flat.
struct NormGradOp<'a> {
    op: &'a NormOp,
    gamma: Vec<f64>,
    beta: Vec<f64>,
}

/// The backward for one activation, `live((scale, shift), x, dy, y)` being the gradient that
/// reaches the norm (dy through the activation).
fn norm_grad<T: KernelFloat>(
    grad: &NormGradOp,
    (x, dy, y): (&[T], &[T], &[T]),
    d: (usize, usize, usize),
    live: impl Fn((T, T), T, T, T) -> T + Copy + Sync,
) -> Vec<T> {
    let (op, gamma) = (grad.op, &grad.gamma);
    let affine = op.affine::<T>(&grad.gamma, &grad.beta);
    let count = (d.0 * d.2) as f64;
    assert!(
        dy.len() == x.len() && y.len() == x.len() && x.len() == d.0 * d.1 * d.2,
        "batch norm grad: operand lengths"
    );
    // Σ g and Σ g·(x − μ) per plane, then per channel, g the gradient through the activation.
    let partial: Vec<(f64, f64)> = per_plane(d, |p| {
        let c = p % d.1;
        let (mean, ab, r) = (T::from_f64(op.mean[c]), affine[c], p * d.2..(p + 1) * d.2);
        let (s, q) = lane_sums(&x[r.clone()], &dy[r.clone()], &y[r], move |x, dy, y| {
            let g = live(ab, x, dy, y);
            (g, g * (x - mean))
        });
        (s.to_f64(), q.to_f64())
    });
    let sums: Vec<(f64, f64)> = (0..d.1)
        .map(|c| {
            let (mut sum, mut dot) = (0.0, 0.0);
            for (s, q) in of_channel(&partial, d, c) {
                sum += s;
                dot += q;
            }
            (sum, dot * op.inv_std[c])
        })
        .collect();
    let mut out = Vec::with_capacity(x.len() + 2 * d.1);
    let (dx, dgb) = out.spare_capacity_mut()[..x.len() + 2 * d.1].split_at_mut(x.len());
    for (c, &(sum, dot)) in sums.iter().enumerate() {
        dgb[c].write(T::from_f64(dot));
        dgb[d.1 + c].write(T::from_f64(sum));
    }
    // dx = k·(g − mean(g) − x̂·mean(g·x̂)), k = γ/σ, as `k·g + b·x + c0` per channel so the loop
    // over values is fused multiply-adds; with running statistics the mean terms drop out.
    let coefficients: Vec<(T, T, T)> = (0..d.1)
        .map(|c| {
            let (inv_std, k) = (op.inv_std[c], gamma[c] * op.inv_std[c]);
            if !op.batch_stats {
                return (T::from_f64(k), T::zero(), T::zero());
            }
            let (mean_g, mean_dot) = (sums[c].0 / count, sums[c].1 / count);
            let b = -k * mean_dot * inv_std;
            let c0 = -k * mean_g - b * op.mean[c];
            (T::from_f64(k), T::from_f64(b), T::from_f64(c0))
        })
        .collect();
    dx.par_chunks_mut(d.2)
        .zip(
            x.par_chunks(d.2)
                .zip(dy.par_chunks(d.2).zip(y.par_chunks(d.2))),
        )
        .with_min_len(MIN_SPLIT.div_ceil(d.2))
        .enumerate()
        .for_each(|(plane, (dx, (xs, (dys, ys))))| {
            let (ab, (k, b, c0)) = (affine[plane % d.1], coefficients[plane % d.1]);
            with_simd(
                #[inline(always)]
                move || {
                    for (((dx, &x), &dy), &y) in dx.iter_mut().zip(xs).zip(dys).zip(ys) {
                        dx.write(k * live(ab, x, dy, y) + b * x + c0);
                    }
                },
            )
        });
    // SAFETY: dx's planes are those of x, dy and y (asserted to be as long), each written
    // whole above, and dgb's 2·C values were written before: all x.len() + 2·C are initialised.
    unsafe { out.set_len(x.len() + 2 * d.1) };
    out
}

impl CustomOp3 for NormGradOp<'_> {
    fn name(&self) -> &'static str {
        "nin-batch-norm-grad"
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
        fn run<T: KernelFloat>(
            grad: &NormGradOp,
            operands: (&[T], &[T], &[T]),
            d: (usize, usize, usize),
        ) -> Vec<T> {
            let zero = T::zero();
            // Values loaded on both sides, then a select: the loops vectorise.
            match grad.op.act {
                Activation::Identity => norm_grad(grad, operands, d, move |_, _, dy, _| dy),
                // The gradient passes where the output is positive (PyTorch's rule), the sign
                // recomputed exactly as the forward computed it.
                Activation::Relu => {
                    norm_grad(
                        grad,
                        operands,
                        d,
                        move |(s, h), x, dy, _| {
                            if x * s + h > zero {
                                dy
                            } else {
                                zero
                            }
                        },
                    )
                }
                Activation::Elu { alpha } => {
                    let alpha = T::from_f64(alpha);
                    norm_grad(grad, operands, d, move |_, _, dy, y| {
                        let negative = dy * (y + alpha);
                        if y > zero {
                            dy
                        } else {
                            negative
                        }
                    })
                }
            }
        }
        let d = dims(l1)?;
        let op = self.name();
        let storage = dispatch_float!(s1.dtype(), op, |T| {
            let operands = (slice(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?);
            T::to_cpu_storage_owned(run::<T>(self, operands, d))
        });
        Ok((storage, Shape::from(l1.shape().elem_count() + 2 * d.1)))
    }
}
