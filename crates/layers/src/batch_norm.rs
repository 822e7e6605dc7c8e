//! Batch norm over the channels of `[N, C, H, W]` maps, as PyTorch's `BatchNorm2d` (affine,
//! running statistics), with an optional ReLU fused in.
//!
//! candle's `BatchNorm` is a dozen whole-tensor ops in training mode (transpose, copy, mean,
//! subtract, square, mean, divide, scale, shift, transpose back…), each with its own backward and
//! zero-filled gradient accumulator, and it sums in the tensor's dtype: the batch-norm families
//! trained 3–10× slower per FLOP than plain NIN, needed about 3× its memory, and their f32
//! gradients differed from PyTorch's (which accumulates in f64) by up to 1e-2. Here, on the CPU
//! for f32 and f64:
//!
//! - one pass computes each channel's mean and variance in f64 (two-pass: the mean, then the
//!   squared deviations from it, so no cancellation);
//! - one op writes `relu?(x·scale + shift)` per channel, `scale = γ/√(σ² + ε)`,
//!   `shift = β − μ·scale`;
//! - its backward is one op giving `dx`, `dγ = Σ dy·x̂` and `dβ = Σ dy` (channel sums in f64),
//!   with `dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))` for batch statistics and `γ/σ · dy` for
//!   running ones; the ReLU's gradient mask is applied inside it.
//!
//! Any other device or dtype uses candle's own `BatchNorm` (and a separate ReLU).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor, Var, WithDType};
use candle_nn::{Init, ModuleT, VarBuilder};
use rayon::prelude::*;

use crate::activation::Activation;
use crate::cpu::{dispatch_float, lane_sum, lane_sums, slice, KernelFloat};
use crate::error::{Error, Result};

/// PyTorch's default batch-norm momentum: `running = (1 − m)·running + m·batch`.
pub const BN_MOMENTUM: f64 = 0.1;

/// PyTorch's default ε.
const BN_EPS: f64 = 1e-5;

/// Batch norm over `channels` maps: `weight` (γ), `bias` (β), `running_mean`, `running_var`.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
}

/// Batch norm over `channels` as PyTorch's `BatchNorm2d` (ε = 1e-5, affine) with `momentum`
/// ([`BN_MOMENTUM`] by default): `weight`, `bias`, `running_mean`, `running_var` under `vb`.
pub fn batch_norm_2d(channels: usize, momentum: f64, vb: VarBuilder) -> Result<BatchNorm2d> {
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::InvalidConfig {
            layer: "batch_norm",
            field: "momentum",
            problem: format!("must be in [0, 1], got {momentum}"),
        });
    }
    let buffer = |name, value| -> Result<Var> {
        // A tensor of a VarMap is already a variable and is shared, so updates reach the map;
        // loaded weights are copied into a fresh variable.
        Ok(Var::from_tensor(&vb.get_with_hints(
            channels,
            name,
            Init::Const(value),
        )?)?)
    };
    Ok(BatchNorm2d {
        running_mean: buffer("running_mean", 0.0)?,
        running_var: buffer("running_var", 1.0)?,
        weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
        bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
        momentum,
    })
}

impl BatchNorm2d {
    /// `activation(bn(xs))` in one op: the ReLU or ELU that follows most norms of the zoo is
    /// fused in (its gradient too).
    pub fn forward_activated(
        &self,
        xs: &Tensor,
        train: bool,
        activation: Activation,
    ) -> candle_core::Result<Tensor> {
        self.forward_impl(xs, train, activation)
    }

    /// The running mean, a buffer updated by every training-mode forward pass.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    fn forward_impl(
        &self,
        xs: &Tensor,
        train: bool,
        act: Activation,
    ) -> candle_core::Result<Tensor> {
        let channels = self.weight.dim(0)?;
        if xs.rank() != 4 || xs.dim(1)? != channels {
            return Err(Error::BadShape {
                op: "batch_norm",
                expected: "[N, C, H, W] with C the norm's channels",
                got: xs.dims().to_vec(),
            }
            .into());
        }
        let fast = xs.device().is_cpu()
            && matches!(xs.dtype(), DType::F32 | DType::F64)
            && self.weight.dtype() == xs.dtype()
            && self.bias.dtype() == xs.dtype();
        if !fast {
            return self.candle_forward(xs, train, act);
        }
        let xs = xs.contiguous()?;
        let (mean, var) = if train {
            let per_channel = xs.elem_count() / channels;
            if per_channel < 2 {
                candle_core::bail!(
                    "batch_norm: training needs more than one value per channel, got input {:?}",
                    xs.dims()
                );
            }
            let moments = xs.apply_op1_no_bwd(&ChannelMoments)?.to_vec2::<f64>()?;
            let [mean, var] = <[Vec<f64>; 2]>::try_from(moments)
                .map_err(|_| candle_core::Error::Msg("batch_norm: moments not [2, C]".into()))?;
            self.update_running(&mean, &var, per_channel)?;
            (mean, var)
        } else {
            let buffer = |v: &Var| v.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>();
            (buffer(&self.running_mean)?, buffer(&self.running_var)?)
        };
        let inv_std = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
        let op = NormOp {
            mean,
            inv_std,
            batch_stats: train,
            act,
        };
        xs.apply_op3(&self.weight, &self.bias, op)
    }

    /// `running = (1 − m)·running + m·batch`, with the batch variance made unbiased as PyTorch
    /// does.
    fn update_running(&self, mean: &[f64], var: &[f64], count: usize) -> candle_core::Result<()> {
        let m = self.momentum;
        let unbias = count as f64 / (count - 1) as f64;
        let blend = |buffer: &Var, batch: &mut dyn Iterator<Item = f64>| {
            let old = buffer.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let new: Vec<f64> = old
                .iter()
                .zip(batch)
                .map(|(o, b)| (1.0 - m) * o + m * b)
                .collect();
            let dtype = buffer.dtype();
            buffer.set(&Tensor::new(new, buffer.device())?.to_dtype(dtype)?)
        };
        blend(&self.running_mean, &mut mean.iter().copied())?;
        blend(&self.running_var, &mut var.iter().map(|v| v * unbias))
    }

    /// candle's own batch norm, for devices and dtypes the op does not cover.
    fn candle_forward(
        &self,
        xs: &Tensor,
        train: bool,
        act: Activation,
    ) -> candle_core::Result<Tensor> {
        let bn = candle_nn::BatchNorm::new_with_momentum(
            self.weight.dim(0)?,
            self.running_mean.as_tensor().clone(),
            self.running_var.as_tensor().clone(),
            self.weight.clone(),
            self.bias.clone(),
            BN_EPS,
            self.momentum,
        )?;
        act.apply(&bn.forward_t(xs, train)?)
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_impl(xs, train, Activation::Identity)
    }
}

/// `(N, C, H·W)` of a contiguous `[N, C, H, W]` layout.
fn dims(l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (n, c, h, w) = l.shape().dims4()?;
    Ok((n, c, h * w))
}

/// Values of channel `c` of a contiguous `[N, C, HW]` buffer, plane by plane.
fn channel<T>(
    data: &[T],
    (n, c_count, hw): (usize, usize, usize),
    c: usize,
) -> impl Iterator<Item = &[T]> {
    (0..n).map(move |i| &data[(i * c_count + c) * hw..][..hw])
}

/// Per-channel mean and biased variance in f64, as a `[2, C]` f64 tensor.
struct ChannelMoments;

impl CustomOp1 for ChannelMoments {
    fn name(&self) -> &'static str {
        "nin-batch-norm-moments"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: WithDType>(x: &[T], d: (usize, usize, usize)) -> Vec<f64> {
            let count = (d.0 * d.2) as f64;
            let moments: Vec<(f64, f64)> = (0..d.1)
                .into_par_iter()
                .map(|c| {
                    let zero = T::zero();
                    let sum: f64 = channel(x, d, c).map(|p| lane_sum(p).to_f64()).sum();
                    let mean = sum / count;
                    let m = T::from_f64(mean);
                    let sq: f64 = channel(x, d, c)
                        .map(|p| {
                            lane_sums(p, p, p, |v, _, _| ((v - m) * (v - m), zero))
                                .0
                                .to_f64()
                        })
                        .sum();
                    (mean, sq / count)
                })
                .collect();
            let (mean, var): (Vec<f64>, Vec<f64>) = moments.into_iter().unzip();
            [mean, var].concat()
        }
        let d = dims(l)?;
        let out = dispatch_float!(s.dtype(), self.name(), |T| run::<T>(
            slice(s, l, self.name())?,
            d
        ));
        Ok((CpuStorage::F64(out), Shape::from((2, d.1))))
    }
}

/// `act(x·scale + shift)` on (x, γ, β), given each channel's statistics.
struct NormOp {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    /// The statistics are the batch's own, so the gradient flows through them too.
    batch_stats: bool,
    act: Activation,
}

impl NormOp {
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
    ys: &mut [T],
    xs: &[T],
    (scale, shift): (T, T),
    act: impl Fn(T) -> T,
) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = act(x * scale + shift);
    }
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
            let mut out = vec![zero; x.len()];
            out.par_chunks_mut(d.2)
                .zip(x.par_chunks(d.2))
                .with_min_len(MIN_SPLIT.div_ceil(d.2))
                .enumerate()
                .for_each(|(plane, (y, x))| {
                    let ab = affine[plane % d.1];
                    match act {
                        Activation::Identity => normalise_plane(y, x, ab, |v| v),
                        // `v < 0` leaves NaN in place, as PyTorch's ReLU does.
                        Activation::Relu => {
                            normalise_plane(y, x, ab, |v| if v < zero { zero } else { v })
                        }
                        Activation::Elu { alpha } => {
                            let alpha = T::from_f64(alpha);
                            normalise_plane(y, x, ab, |v| {
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
            out
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
    live: impl Fn((T, T), T, T, T) -> T + Sync,
) -> Vec<T> {
    let (op, gamma) = (grad.op, &grad.gamma);
    let affine = op.affine::<T>(&grad.gamma, &grad.beta);
    let count = (d.0 * d.2) as f64;
    // Σ g and Σ g·(x − μ) per channel, g the gradient through the activation.
    let sums: Vec<(f64, f64)> = (0..d.1)
        .into_par_iter()
        .map(|c| {
            let (mean, ab) = (T::from_f64(op.mean[c]), affine[c]);
            let (mut sum, mut dot) = (0.0, 0.0);
            for ((xs, dys), ys) in channel(x, d, c)
                .zip(channel(dy, d, c))
                .zip(channel(y, d, c))
            {
                let (s, p) = lane_sums(xs, dys, ys, |x, dy, y| {
                    let g = live(ab, x, dy, y);
                    (g, g * (x - mean))
                });
                sum += s.to_f64();
                dot += p.to_f64();
            }
            (sum, dot * op.inv_std[c])
        })
        .collect();
    let mut out = vec![T::zero(); x.len() + 2 * d.1];
    let (dx, dgb) = out.split_at_mut(x.len());
    for (c, &(sum, dot)) in sums.iter().enumerate() {
        dgb[c] = T::from_f64(dot);
        dgb[d.1 + c] = T::from_f64(sum);
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
            for (((dx, &x), &dy), &y) in dx.iter_mut().zip(xs).zip(dys).zip(ys) {
                *dx = k * live(ab, x, dy, y) + b * x + c0;
            }
        });
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
                Activation::Identity => norm_grad(grad, operands, d, |_, _, dy, _| dy),
                // The gradient passes where the output is positive (PyTorch's rule), the sign
                // recomputed exactly as the forward computed it.
                Activation::Relu => {
                    norm_grad(
                        grad,
                        operands,
                        d,
                        |(s, h), x, dy, _| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::max_abs_diff;
    use crate::init::seeded_var_builder;
    use crate::rng::{seeded_rand, seeded_randn};
    use candle_core::Device;
    use candle_nn::VarMap;

    /// `shape` values uniform in [lo, hi), in f64, from seed `seed`.
    fn uniform(shape: &[usize], seed: u64, lo: f64, hi: f64) -> Tensor {
        let u = seeded_rand(shape, seed)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        u.affine(hi - lo, lo).unwrap()
    }

    /// `shape` values from N(mean, std²), in f64, from seed `seed`.
    fn normal(shape: &[usize], seed: u64, mean: f64, std: f64) -> Tensor {
        let z = seeded_randn(shape, seed)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        z.affine(std, mean).unwrap()
    }

    /// A norm with γ, β and running statistics away from their defaults, in f64.
    fn norm(channels: usize, momentum: f64) -> (VarMap, BatchNorm2d) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 7, DType::F64, &Device::Cpu);
        let bn = batch_norm_2d(channels, momentum, vb).unwrap();
        for (seed, (name, lo, hi)) in [
            ("weight", 0.5, 1.5),
            ("bias", -0.5, 0.5),
            ("running_mean", -1.0, 1.0),
            ("running_var", 0.5, 2.0),
        ]
        .into_iter()
        .enumerate()
        {
            let values = uniform(&[channels], seed as u64, lo, hi);
            varmap.data().lock().unwrap()[name].set(&values).unwrap();
        }
        (varmap, bn)
    }

    /// candle's own batch norm over the same tensors (it updates the same running buffers).
    fn reference(bn: &BatchNorm2d) -> candle_nn::BatchNorm {
        candle_nn::BatchNorm::new_with_momentum(
            bn.weight.dim(0).unwrap(),
            bn.running_mean().clone(),
            bn.running_var().clone(),
            bn.weight.clone(),
            bn.bias.clone(),
            BN_EPS,
            bn.momentum,
        )
        .unwrap()
    }

    /// Output, running statistics and the gradients of x, γ and β for a weighted-sum loss, from
    /// `forward`, with the buffers reset to the same start before each call.
    fn run(
        varmap: &VarMap,
        bn: &BatchNorm2d,
        x: &Var,
        loss_weights: &Tensor,
        forward: &dyn Fn(&Tensor) -> Tensor,
    ) -> Vec<Tensor> {
        let start = [
            bn.running_mean().copy().unwrap(),
            bn.running_var().copy().unwrap(),
        ];
        let ys = forward(x.as_tensor());
        let loss = (&ys * loss_weights).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut out = vec![
            ys,
            bn.running_mean().copy().unwrap(),
            bn.running_var().copy().unwrap(),
        ];
        for t in [x.as_tensor(), &bn.weight, &bn.bias] {
            out.push(grads.get(t).unwrap().clone());
        }
        let data = varmap.data().lock().unwrap();
        data["running_mean"].set(&start[0]).unwrap();
        data["running_var"].set(&start[1]).unwrap();
        out
    }

    #[test]
    fn matches_candles_batch_norm_then_activation_in_train_and_eval_mode() {
        let (varmap, bn) = norm(5, 0.3);
        let cbn = reference(&bn);
        // Shifted and scaled so the statistics are far from 0 and 1.
        let x = Var::from_tensor(&normal(&[3, 5, 4, 6], 10, 3.0, 2.0)).unwrap();
        let loss_weights = uniform(x.dims(), 11, -1.0, 1.0);
        let activations = [
            Activation::Identity,
            Activation::Relu,
            Activation::Elu { alpha: 0.7 },
        ];
        for train in [true, false] {
            for act in activations {
                let ours = run(&varmap, &bn, &x, &loss_weights, &|x| {
                    bn.forward_activated(x, train, act).unwrap()
                });
                // candle's batch norm, then candle's own activation.
                let theirs = run(&varmap, &bn, &x, &loss_weights, &|x| {
                    let ys = cbn.forward_t(x, train).unwrap();
                    match act {
                        Activation::Identity => ys,
                        Activation::Relu => ys.relu().unwrap(),
                        Activation::Elu { alpha } => ys.elu(alpha).unwrap(),
                    }
                });
                let names = ["output", "running mean", "running var", "dx", "dγ", "dβ"];
                for ((name, a), b) in names.iter().zip(&ours).zip(&theirs) {
                    let d = max_abs_diff(a, b);
                    assert!(d < 1e-10, "train={train} {act:?}: {name} differs by {d}");
                }
                let moved = max_abs_diff(
                    &ours[1],
                    varmap.data().lock().unwrap()["running_mean"].as_tensor(),
                );
                assert_eq!(moved == 0.0, !train, "running mean moves only in training");
            }
        }
        let plain = run(&varmap, &bn, &x, &loss_weights, &|x| {
            bn.forward_t(x, true).unwrap()
        });
        let identity = run(&varmap, &bn, &x, &loss_weights, &|x| {
            bn.forward_activated(x, true, Activation::Identity).unwrap()
        });
        assert_eq!(max_abs_diff(&plain[0], &identity[0]), 0.0);
    }

    #[test]
    fn float32_matches_the_float64_op() {
        let (_varmap, bn) = norm(4, BN_MOMENTUM);
        let x64 = normal(&[2, 4, 5, 5], 12, 10.0, 3.0);
        let y64 = bn.forward_activated(&x64, true, Activation::Relu).unwrap();
        let bn32 = BatchNorm2d {
            weight: bn.weight.to_dtype(DType::F32).unwrap(),
            bias: bn.bias.to_dtype(DType::F32).unwrap(),
            running_mean: Var::from_tensor(&bn.running_mean().to_dtype(DType::F32).unwrap())
                .unwrap(),
            running_var: Var::from_tensor(&bn.running_var().to_dtype(DType::F32).unwrap()).unwrap(),
            momentum: BN_MOMENTUM,
        };
        let y32 = bn32
            .forward_activated(&x64.to_dtype(DType::F32).unwrap(), true, Activation::Relu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        assert!(max_abs_diff(&y32, &y64) < 1e-5);
    }

    #[test]
    fn a_strided_input_is_normalised_like_its_contiguous_copy() {
        let (_varmap, bn) = norm(3, BN_MOMENTUM);
        let x = normal(&[2, 5, 4, 3], 13, 0.0, 1.0);
        let strided = x.permute((0, 3, 1, 2)).unwrap();
        assert!(!strided.is_contiguous());
        let a = bn.forward_t(&strided, true).unwrap();
        let b = bn.forward_t(&strided.contiguous().unwrap(), true).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }

    #[test]
    fn bad_inputs_are_refused_with_what_was_expected() {
        let (_varmap, bn) = norm(3, BN_MOMENTUM);
        let wrong_channels = Tensor::zeros((2, 4, 3, 3), DType::F64, &Device::Cpu).unwrap();
        let err = bn.forward_t(&wrong_channels, true).unwrap_err().to_string();
        assert!(
            err.contains("[N, C, H, W]") && err.contains("[2, 4, 3, 3]"),
            "{err}"
        );
        let one_value = Tensor::zeros((1, 3, 1, 1), DType::F64, &Device::Cpu).unwrap();
        let err = bn.forward_t(&one_value, true).unwrap_err().to_string();
        assert!(err.contains("more than one value per channel"), "{err}");
        assert!(
            bn.forward_t(&one_value, false).is_ok(),
            "evaluation needs no batch statistics"
        );
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let err = batch_norm_2d(4, 1.5, vb).unwrap_err().to_string();
        assert!(err.contains("`momentum` must be in [0, 1]"), "{err}");
    }
}
