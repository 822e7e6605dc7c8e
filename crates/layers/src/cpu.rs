//! What the CPU kernels of the custom ops share: the one dispatch on the float type, reading an
//! operand as a slice, outputs written without a zero-fill first, and sums that vectorise.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, WithDType};

/// The values of `s` under layout `l` as a slice of `T`; `op` names the op in the error when the
/// layout is not contiguous (every op makes its operands contiguous before it runs).
pub(crate) fn slice<'a, T: WithDType>(
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

/// Runs `kernel` compiled for the widest vectors the processor has, chosen at run time:
/// AVX-512 (x86-64-v4), AVX2 with FMA (v3), or the baseline the binary was built for (SSE2 on
/// x86-64). A release build targets the baseline so that one binary runs everywhere, which
/// leaves loops that rustc vectorises at 4 f32 lanes; inside `kernel` they run at 8 or 16.
/// `kernel` is inlined into the dispatched clone, so call this around a whole inner loop (a
/// plane, a chunk), not per value. The same `pulp` dispatch as the `gemm` crate's kernels.
#[inline(always)]
pub(crate) fn with_simd<R>(kernel: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(kernel)
}

/// `(Σ f(a, b, c).0, Σ f(a, b, c).1)` over the triples of `a`, `b` and `c` (pass a slice again
/// for an operand `f` ignores), over sixteen independent accumulators: one running sum is a chain
/// of dependent adds that does not vectorise.
pub(crate) fn lane_sums<T: WithDType>(
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> (T, T),
) -> (T, T) {
    with_simd(
        #[inline(always)]
        move || lane_sums_here(a, b, c, f),
    )
}

/// [`lane_sums`] compiled for whatever the caller's target features are.
#[inline(always)]
fn lane_sums_here<T: WithDType>(
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> (T, T),
) -> (T, T) {
    const LANES: usize = 16;
    let (mut acc0, mut acc1) = ([T::zero(); LANES], [T::zero(); LANES]);
    let (ca, cb, cc) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        c.chunks_exact(LANES),
    );
    let (ra, rb, rc) = (ca.remainder(), cb.remainder(), cc.remainder());
    for ((ca, cb), cc) in ca.zip(cb).zip(cc) {
        for i in 0..LANES {
            let (u, v) = f(ca[i], cb[i], cc[i]);
            acc0[i] += u;
            acc1[i] += v;
        }
    }
    let (mut s0, mut s1) = (T::zero(), T::zero());
    for i in 0..LANES {
        s0 += acc0[i];
        s1 += acc1[i];
    }
    for ((&x, &y), &z) in ra.iter().zip(rb).zip(rc) {
        let (u, v) = f(x, y, z);
        s0 += u;
        s1 += v;
    }
    (s0, s1)
}

/// The sum of `xs`, vectorised as [`lane_sums`].
pub(crate) fn lane_sum<T: WithDType>(xs: &[T]) -> T {
    lane_sums(xs, xs, xs, |v, _, _| (v, T::zero())).0
}

/// `Σ (x − about)²` over `xs`, over sixteen accumulators as [`lane_sums`]. Its own loop: written
/// as a [`lane_sums`] closure it compiled to scalar code (`vsubss`), which made the variance
/// pass of batch norm's statistics the slowest of its kernels.
pub(crate) fn lane_sum_of_squares<T: WithDType>(xs: &[T], about: T) -> T {
    with_simd(
        #[inline(always)]
        move || {
            const LANES: usize = 16;
            let mut acc = [T::zero(); LANES];
            let chunks = xs.chunks_exact(LANES);
            let rest = chunks.remainder();
            for c in chunks {
                for i in 0..LANES {
                    let d = c[i] - about;
                    acc[i] += d * d;
                }
            }
            let mut sum = T::zero();
            for a in acc {
                sum += a;
            }
            for &x in rest {
                sum += (x - about) * (x - about);
            }
            sum
        },
    )
}

/// A float type as the element-wise kernels need it: `WithDType` plus an `exp` that inlines into
/// a vectorised loop.
pub(crate) trait KernelFloat: WithDType {
    /// `e^self`.
    fn exp_v(self) -> Self;
}

impl KernelFloat for f64 {
    #[inline(always)]
    fn exp_v(self) -> f64 {
        self.exp()
    }
}

impl KernelFloat for f32 {
    #[inline(always)]
    fn exp_v(self) -> f32 {
        exp_f32(self)
    }
}

/// `e^x` for f32 in straight-line arithmetic that vectorises. Hand-written because libm's
/// `expf` is one call per value, which kept ELU's loops scalar (9 % of a DrNIN training step),
/// and no crate offers an inlinable one for plain slices. Cephes' `expf`: `x = n·ln 2 + r` with
/// `|r| ≤ ln 2 / 2`, `e^r` by its degree-7 polynomial, `2ⁿ` written into the exponent bits; the
/// rounding to `n` uses the 1.5·2²³ trick, as SSE2 has no round instruction. Within 2 ulp of the
/// true value for x in [−87.3, 88]; x is clamped to that range (so e^x never underflows to a
/// subnormal or 0, nor overflows), and NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer.
    let x = x.clamp(-87.336_55, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // ln 2 in two parts, so that n·ln2_hi is exact.
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Evaluates `$body` with the type `$T` bound to `f32` or `f64`, as `$dtype` says; any other
/// dtype makes the enclosing function return an error naming `$op`. Kernels are written once,
/// generic over the float type, and this is their one dispatch.
macro_rules! dispatch_float {
    ($dtype:expr, $op:expr, |$T:ident| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                type $T = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $T = f64;
                $body
            }
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", $op),
        }
    };
}
pub(crate) use dispatch_float;

/// A vector of `len` values that `init` writes, without zero-filling it first: every op output
/// is written whole by a GEMM or a fill, and a zero-fill would be one more pass over the largest
/// tensors of a step.
///
/// # Safety
/// `init` must write every one of the `len` values it is given.
pub(crate) unsafe fn written_by<T: WithDType>(
    len: usize,
    init: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    init(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the capacity is at least `len`, and the caller vouches that `init` wrote all
    // `len` values.
    unsafe { out.set_len(len) };
    out
}

/// `s` as initialised values.
///
/// # Safety
/// Every value of `s` must have been written.
pub(crate) unsafe fn assume_init<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: MaybeUninit<T> has T's layout, and the caller vouches that all are initialised.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<T>(), s.len()) }
}

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
    fn exp_f32_is_within_two_ulp_of_exp() {
        let mut worst = 0f64;
        for i in 0..=1_000_000 {
            let x = -87.0 + 175.0 * f64::from(i) / 1e6;
            let got = f64::from(exp_f32(x as f32));
            let want = f64::from(x as f32).exp();
            worst = worst.max((got - want).abs() / want);
        }
        // One ulp of f32 is 2⁻²³ ≈ 1.19e-7 relative.
        assert!(worst < 2.4e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(-1e4) > 0.0 && exp_f32(-1e4) < 1.3e-38);
        assert!(exp_f32(1e4).is_finite());
    }

    #[test]
    fn lane_sums_add_every_value_once() {
        let xs: Vec<f64> = (1..=37).map(f64::from).collect();
        assert_eq!(lane_sum(&xs), 703.0);
        let (s, d) = lane_sums(&xs, &xs, &xs, |a, b, _| (a, a * b));
        assert_eq!((s, d), (703.0, (1..=37).map(|v| f64::from(v * v)).sum()));
        assert_eq!(lane_sum::<f32>(&[]), 0.0);
    }

    #[test]
    fn lane_sum_of_squares_adds_every_squared_deviation_once() {
        // 37 values: two full chunks of sixteen and a remainder of five.
        let xs: Vec<f64> = (1..=37).map(f64::from).collect();
        let want: f64 = (1..=37).map(|v| f64::from((v - 5) * (v - 5))).sum();
        assert_eq!(lane_sum_of_squares(&xs, 5.0), want);
        let xs32: Vec<f32> = (1..=37u8).map(f32::from).collect();
        assert_eq!(lane_sum_of_squares(&xs32, 5.0), want as f32);
        assert_eq!(lane_sum_of_squares::<f32>(&[], 1.0), 0.0);
    }
}
