//! What the CPU kernels of the custom ops share: reading an operand as a slice, and sums that
//! vectorise.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, WithDType};

/// The values of `s` under layout `l` as a slice of `T`; `op` names the op in the error when the
/// layout is not contiguous (every op makes its operands contiguous before it runs).
pub(crate) fn contiguous<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: operands must be contiguous, got {:?}", s.dtype()),
    }
}

/// `(Σ f(a, b).0, Σ f(a, b).1)` over the pairs of `a` and `b`, over sixteen independent
/// accumulators: one running sum is a chain of dependent adds that does not vectorise.
pub(crate) fn lane_sums<T: WithDType>(a: &[T], b: &[T], f: impl Fn(T, T) -> (T, T)) -> (T, T) {
    const LANES: usize = 16;
    let (mut acc0, mut acc1) = ([T::zero(); LANES], [T::zero(); LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (ca, cb) in ca.zip(cb) {
        for i in 0..LANES {
            let (u, v) = f(ca[i], cb[i]);
            acc0[i] += u;
            acc1[i] += v;
        }
    }
    let (mut s0, mut s1) = (T::zero(), T::zero());
    for i in 0..LANES {
        s0 += acc0[i];
        s1 += acc1[i];
    }
    for (&x, &y) in ra.iter().zip(rb) {
        let (u, v) = f(x, y);
        s0 += u;
        s1 += v;
    }
    (s0, s1)
}

/// The sum of `xs`, vectorised as [`lane_sums`].
pub(crate) fn lane_sum<T: WithDType>(xs: &[T]) -> T {
    lane_sums(xs, xs, |v, _| (v, T::zero())).0
}

/// Evaluates `$body` with the type `$T` bound to `f32` or `f64`, as `$dtype` says, and wraps the
/// `Vec<$T>` it gives into the matching `CpuStorage`; other dtypes are an error naming `$op`.
/// Kernels are written once, generic over the float type; this is their one dispatch.
macro_rules! float_storage {
    ($dtype:expr, $op:expr, |$T:ident| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                candle_core::CpuStorage::F32($body)
            }
            candle_core::DType::F64 => {
                type $T = f64;
                candle_core::CpuStorage::F64($body)
            }
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", $op),
        }
    };
}
pub(crate) use float_storage;

/// The largest absolute difference between two tensors of one shape, in f64.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    let diff = || -> candle_core::Result<f64> {
        (a - b)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()
    };
    diff().expect("tensors of one shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_add_every_value_once() {
        let xs: Vec<f64> = (1..=37).map(f64::from).collect();
        assert_eq!(lane_sum(&xs), 703.0);
        let (s, d) = lane_sums(&xs, &xs, |a, b| (a, a * b));
        assert_eq!((s, d), (703.0, (1..=37).map(|v| f64::from(v * v)).sum()));
        assert_eq!(lane_sum::<f32>(&[]), 0.0);
    }
}
