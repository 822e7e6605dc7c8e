//! ELU as one op forward and one backward.
//!
//! candle's `Tensor::elu` backward builds its gradient from eight whole-tensor ops (zeros, two
//! comparisons, two casts, products and sums) plus the accumulator's, which made the
//! activation of DrNIN (ELU after every unit) cost more than its batch norms. Here the backward
//! is `dy · (1 if x > 0 else y + α)`, read off the forward's output in one pass, as PyTorch
//! does. On a CUDA device both are single kernels (`elu_fwd`, `elu_bwd` in cuda/kernels.cu).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use crate::cpu::{dispatch_float, slice, with_simd, written_by, KernelFloat};

/// Values per rayon task: enough to amortise the task, few enough to split a small map.
const CHUNK: usize = 1 << 14;

/// `x` for `x > 0`, `α(eˣ − 1)` otherwise; differentiable. One op forward and backward on the
/// CPU and on CUDA devices for f32 and f64, candle's own `elu` elsewhere.
pub fn elu(xs: &Tensor, alpha: f64) -> candle_core::Result<Tensor> {
    let device = xs.device();
    if (device.is_cpu() || device.is_cuda()) && matches!(xs.dtype(), DType::F32 | DType::F64) {
        xs.contiguous()?.apply_op1(Elu { alpha })
    } else {
        xs.elu(alpha)
    }
}

struct Elu {
    alpha: f64,
}

impl CustomOp1 for Elu {
    fn name(&self) -> &'static str {
        "nin-elu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: KernelFloat>(x: &[T], alpha: f64) -> Vec<T> {
            let (alpha, one, zero) = (T::from_f64(alpha), T::one(), T::zero());
            // Writes every value: the output and `x` have one length and one chunking.
            let written = |out: &mut [MaybeUninit<T>]| {
                out.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .for_each(|(ys, xs)| {
                        with_simd(
                            #[inline(always)]
                            move || {
                                for (y, &x) in ys.iter_mut().zip(xs) {
                                    // Both sides computed, then a select: the loop vectorises.
                                    let negative = alpha * (x.exp_v() - one);
                                    y.write(if x > zero { x } else { negative });
                                }
                            },
                        )
                    });
            };
            // SAFETY: `written` writes all `x.len()` values, as said where it is defined.
            unsafe { written_by(x.len(), written) }
        }
        let storage = dispatch_float!(s.dtype(), self.name(), |T| {
            T::to_cpu_storage_owned(run::<T>(slice(s, l, self.name())?, self.alpha))
        });
        Ok((storage, l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{grid, launch, output, slice};
        let (op, dev, n) = (self.name(), s.device.clone(), l.shape().elem_count());
        let storage = dispatch_float!(s.dtype(), op, |T| {
            let (x, y) = (slice::<T>(s, l, op)?, output::<T>(&dev, n)?);
            let n64 = n as u64;
            launch!(
                dev,
                "elu_fwd",
                s.dtype(),
                op,
                grid(n),
                &n64,
                &self.alpha,
                &x,
                &y
            )?;
            candle_core::CudaStorage::wrap_cuda_slice(y, dev)
        });
        Ok((storage, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = dy
            .contiguous()?
            .apply_op3_no_bwd(x, y, &EluGrad { alpha: self.alpha })?;
        Ok(Some(grad))
    }
}

/// `dy · (1 if x > 0 else y + α)` on (dy, x, y).
struct EluGrad {
    alpha: f64,
}

impl CustomOp3 for EluGrad {
    fn name(&self) -> &'static str {
        "nin-elu-grad"
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
        fn run<T: WithDType>(dy: &[T], x: &[T], y: &[T], alpha: f64) -> Vec<T> {
            let (alpha, zero) = (T::from_f64(alpha), T::zero());
            assert!(
                x.len() == dy.len() && y.len() == dy.len(),
                "elu grad: operand lengths"
            );
            // Writes every value: the output and the three operands have one length (asserted
            // above) and one chunking.
            let written = |out: &mut [MaybeUninit<T>]| {
                out.par_chunks_mut(CHUNK)
                    .zip(
                        dy.par_chunks(CHUNK)
                            .zip(x.par_chunks(CHUNK).zip(y.par_chunks(CHUNK))),
                    )
                    .for_each(|(dxs, (dys, (xs, ys)))| {
                        with_simd(
                            #[inline(always)]
                            move || {
                                let values = dxs.iter_mut().zip(dys).zip(xs).zip(ys);
                                for (((dx, &dy), &x), &y) in values {
                                    dx.write(if x > zero { dy } else { dy * (y + alpha) });
                                }
                            },
                        )
                    });
            };
            // SAFETY: `written` writes all `dy.len()` values, as said where it is defined.
            unsafe { written_by(dy.len(), written) }
        }
        let (op, n) = (self.name(), l1.shape().elem_count());
        if l2.shape().elem_count() != n || l3.shape().elem_count() != n {
            candle_core::bail!("{op}: dy, x and y differ in size");
        }
        let storage = dispatch_float!(s1.dtype(), op, |T| {
            let (dy, x, y) = (slice(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?);
            T::to_cpu_storage_owned(run::<T>(dy, x, y, self.alpha))
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
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{grid, launch, output, slice};
        let (op, dev, n) = (self.name(), s1.device.clone(), l1.shape().elem_count());
        if l2.shape().elem_count() != n || l3.shape().elem_count() != n {
            candle_core::bail!("{op}: dy, x and y differ in size");
        }
        let storage = dispatch_float!(s1.dtype(), op, |T| {
            let (dy, x, y) = (
                slice::<T>(s1, l1, op)?,
                slice::<T>(s2, l2, op)?,
                slice::<T>(s3, l3, op)?,
            );
            let dx = output::<T>(&dev, n)?;
            let n64 = n as u64;
            launch!(
                dev,
                "elu_bwd",
                s1.dtype(),
                op,
                grid(n),
                &n64,
                &self.alpha,
                &dy,
                &x,
                &y,
                &dx
            )?;
            candle_core::CudaStorage::wrap_cuda_slice(dx, dev)
        });
        Ok((storage, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::max_abs_diff;
    use candle_core::{Device, Var};

    #[test]
    fn value_and_gradient_match_candles_elu() {
        // Values on both sides of 0, 0 itself, and a strided view.
        let randn = |dims: (usize, usize, usize), seed| {
            crate::rng::seeded_randn(dims, seed)
                .and_then(|t| t.to_dtype(DType::F64))
                .unwrap()
        };
        let base = (randn((3, 4, 5), 1) * 2.0).unwrap();
        let base = base
            .slice_assign(
                &[0..1, 0..1, 0..1],
                &Tensor::zeros((1, 1, 1), DType::F64, &Device::Cpu).unwrap(),
            )
            .unwrap();
        let weights = randn((3, 5, 4), 2);
        // f64 exactly; f32 (the vectorised exp) within a few ulp of values of size up to 1.
        for (dtype, tolerance) in [(DType::F64, 1e-15), (DType::F32, 5e-7)] {
            let base = base.to_dtype(dtype).unwrap();
            let weights = weights.to_dtype(dtype).unwrap();
            check_against_candle(&base, &weights, tolerance);
        }
    }

    fn check_against_candle(base: &Tensor, weights: &Tensor, tolerance: f64) {
        for alpha in [1.0, 0.3] {
            let run = |f: &dyn Fn(&Tensor) -> Tensor| {
                let x = Var::from_tensor(base).unwrap();
                let y = f(&x.as_tensor().transpose(1, 2).unwrap());
                let grads = (&y * weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                (y, grads.get(x.as_tensor()).unwrap().clone())
            };
            let (y1, g1) = run(&|x| elu(x, alpha).unwrap());
            let (y2, g2) = run(&|x| x.elu(alpha).unwrap());
            let (dy, dg) = (max_abs_diff(&y1, &y2), max_abs_diff(&g1, &g2));
            assert!(dy < tolerance, "alpha {alpha}: values differ by {dy}");
            assert!(dg < tolerance, "alpha {alpha}: gradients differ by {dg}");
        }
    }
}
