//! The convolution op against candle's and against finite differences, on every geometry the
//! kernels branch on.

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
            let w = Var::from_tensor(&tensor(&[c_out, xd[1], k, k], seed + 1, DType::F32)).unwrap();
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
    // Enough images for several chunks and packed groups of small maps, with and without the
    // ReLU whose mask the backward applies as it packs them.
    let x = Var::from_tensor(&tensor(&[9, 3, 4, 4], 5, DType::F64)).unwrap();
    let w = Var::from_tensor(&tensor(&[2, 3, 3, 3], 6, DType::F64)).unwrap();
    for relu in [false, true] {
        let opts = ConvOptions {
            stride: 1,
            padding: 1,
            relu,
        };
        let ours = conv2d(&x, &w, None, opts).unwrap();
        let mut theirs = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        if relu {
            theirs = theirs.relu().unwrap();
        }
        let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&w, &x] {
            assert!(max_abs_diff(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-10);
        }
    }
}

/// A frozen convolution (weight and bias plain tensors) still passes the gradient on to its
/// input, and gives none to the weight; a frozen first layer gives no gradient at all.
#[test]
fn a_frozen_convolution_passes_the_gradient_to_its_input_only() {
    let x = Var::from_tensor(&tensor(&[5, 4, 6, 6], 8, DType::F64)).unwrap();
    let (w, b) = (
        tensor(&[3, 4, 3, 3], 9, DType::F64),
        tensor(&[3], 10, DType::F64),
    );
    let opts = ConvOptions {
        stride: 1,
        padding: 1,
        relu: true,
    };
    let ours = conv2d(&x, &w, Some(&b), opts).unwrap();
    let theirs = x
        .conv2d(&w, 1, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap())
        .unwrap()
        .relu()
        .unwrap();
    let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_abs_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-10);
    assert!(g1.get(&w).is_none() && g1.get(&b).is_none());
    let plain = x.as_tensor().detach();
    let out = conv2d(&plain, &w, Some(&b), opts).unwrap();
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&plain).is_none() && grads.get(&w).is_none());
}

/// The shapes the kernels rely on are refused with an error before any of them runs, including
/// a gradient that does not match the output in the backward ops.
#[test]
fn shapes_the_kernels_cannot_take_are_errors() {
    let opts = ConvOptions {
        stride: 1,
        padding: 0,
        relu: false,
    };
    let x = tensor(&[2, 3, 4, 4], 1, DType::F32);
    let w = tensor(&[5, 3, 3, 3], 2, DType::F32);
    let too_big = tensor(&[5, 3, 5, 5], 3, DType::F32);
    let err = conv2d(&x, &too_big, None, opts).unwrap_err().to_string();
    assert!(err.contains("does not fit 4×4"), "{err}");
    let wrong_channels = tensor(&[5, 2, 3, 3], 4, DType::F32);
    assert!(conv2d(&x, &wrong_channels, None, opts).is_err());
    let no_stride = ConvOptions { stride: 0, ..opts };
    assert!(conv2d(&x, &w, None, no_stride).is_err());
    // The output is [2, 5, 2, 2]; a gradient of another shape is refused, whichever gradients
    // are asked for, and so is a ReLU output that differs from the gradient.
    let bad_grad = tensor(&[2, 5, 3, 2], 5, DType::F32);
    let backward = |weight: Option<&Tensor>, want_dw| BackwardOp {
        opts,
        k: 3,
        bands: None,
        weight: weight.cloned(),
        want_dw,
    };
    for (weight, want_dw) in [(Some(&w), false), (None, true), (Some(&w), true)] {
        let err = x
            .apply_op2_no_bwd(&bad_grad, &backward(weight, want_dw))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected an output gradient [2, 5, 2, 2]"),
            "{err}"
        );
    }
    let (grad, y) = (tensor(&[2, 5, 2, 2], 6, DType::F32), bad_grad);
    let err = x
        .apply_op3_no_bwd(&grad, &y, &backward(Some(&w), true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("differ in shape"), "{err}");
    let wrong_weight = tensor(&[5, 3, 2, 2], 7, DType::F32);
    let err = x
        .apply_op2_no_bwd(&grad, &backward(Some(&wrong_weight), false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit the input"), "{err}");
}

/// A banded convolution equals the dense one of its weight with everything outside the windows
/// zeroed: forward, input and bias gradients as dense, the weight gradient as dense inside the
/// output blocks and zero outside them. Blocks of two channels over windows of three overlap, and
/// one input channel is in no window, so the input gradient's zero fill is exercised too.
#[test]
fn banded_matches_the_dense_convolution_of_the_masked_weight() {
    let (c_in, c_out, window) = (7, 6, 3);
    // Input channel 6 is in no window: its gradient rows are zero-filled, not computed.
    let starts = [0, 1, 2, 2, 3, 3];
    let bands = Arc::new(ChannelBands::from_windows(c_in, &starts, window, 2).unwrap());
    assert_eq!(bands.channel_pairs(), 2 * 4 + 2 * 3 + 2 * 3);
    for (k, stride, padding) in [(1, 1, 0), (3, 1, 1), (3, 2, 1), (1, 2, 0)] {
        for relu in [false, true] {
            let xd = [3, c_in, 6, 5];
            let x = Var::from_tensor(&tensor(&xd, 7, DType::F64)).unwrap();
            let mut wv = values(c_out * c_in * k * k, 8);
            for (o, &s) in starts.iter().enumerate() {
                for i in (0..c_in).filter(|i| !(s..s + window).contains(i)) {
                    wv[(o * c_in + i) * k * k..][..k * k].fill(0.0);
                }
            }
            let w = Tensor::from_vec(wv, (c_out, c_in, k, k), &Device::Cpu).unwrap();
            let w = Var::from_tensor(&w).unwrap();
            let b = Var::from_tensor(&tensor(&[c_out], 9, DType::F64)).unwrap();
            let opts = ConvOptions {
                stride,
                padding,
                relu,
            };
            let banded = conv2d_banded(&x, &w, Some(&b), opts, bands.clone()).unwrap();
            let dense = conv2d(&x, &w, Some(&b), opts).unwrap();
            let case = format!("k {k} stride {stride} relu {relu}");
            assert!(max_abs_diff(&banded, &dense) < 1e-12, "{case}: forward");
            let r = tensor(dense.dims(), 10, DType::F64);
            let grads = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (gb, gd) = (grads(&banded), grads(&dense));
            for (name, v) in [("x", &x), ("b", &b)] {
                let diff = max_abs_diff(gb.get(v).unwrap(), gd.get(v).unwrap());
                assert!(diff < 1e-12, "{case}: d{name} differs by {diff}");
            }
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let (dwb, dwd) = (flat(gb.get(&w).unwrap()), flat(gd.get(&w).unwrap()));
            for band in bands.by_output() {
                for o in band.out.clone() {
                    for i in 0..c_in {
                        for t in 0..k * k {
                            let at = (o * c_in + i) * k * k + t;
                            let want = if band.inp.contains(&i) { dwd[at] } else { 0.0 };
                            assert!(
                                (dwb[at] - want).abs() < 1e-12,
                                "{case}: dW[{o}, {i}, tap {t}] is {}, expected {want}",
                                dwb[at]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bands_for_other_channels_are_refused() {
    let x = tensor(&[1, 4, 3, 3], 1, DType::F32);
    let w = tensor(&[2, 4, 1, 1], 2, DType::F32);
    let bands = Arc::new(ChannelBands::dense(5, 2));
    let opts = ConvOptions {
        stride: 1,
        padding: 0,
        relu: false,
    };
    let err = conv2d_banded(&x, &w, None, opts, bands)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("channel bands for 5 → 2 channels, the convolution is 4 → 2"),
        "{err}"
    );
}

#[test]
fn im2col_takes_every_tap_or_a_padding_zero_on_every_geometry() {
    // Against its definition, over the small geometries where the fast "same" path and the
    // general one meet every edge: kernels wider than the map, padding beyond the kernel's half.
    for (h, w, k, stride, pad) in (1..=5).flat_map(|h| {
        (1..=5).flat_map(move |w| {
            [1, 2, 3, 5]
                .into_iter()
                .flat_map(move |k| (1..=2).flat_map(move |s| (0..=3).map(move |p| (h, w, k, s, p))))
        })
    }) {
        let opts = ConvOptions {
            stride,
            padding: pad,
            relu: false,
        };
        let Ok(g) = geometry::Geom::new(&[1, 2, h, w], &[1, 2, k, k], opts) else {
            continue;
        };
        let x = values(2 * h * w, (h * 7 + w) as u64);
        let (ohw, ld, off) = (g.ohw(), g.ohw() + 3, 2);
        let mut col = vec![f64::NAN; g.ckk() * ld];
        geometry::im2col(&g, &x, &mut col, ld, off);
        for (c, ky, kx, oy, ox) in (0..2).flat_map(|c| {
            (0..k).flat_map(move |ky| {
                (0..k).flat_map(move |kx| {
                    (0..g.oh).flat_map(move |oy| (0..g.ow).map(move |ox| (c, ky, kx, oy, ox)))
                })
            })
        }) {
            let (iy, ix) = (oy * stride + ky, ox * stride + kx);
            let inside = (pad..h + pad).contains(&iy) && (pad..w + pad).contains(&ix);
            let want = if inside {
                x[(c * h + iy - pad) * w + ix - pad]
            } else {
                0.0
            };
            let r = (c * k + ky) * k + kx;
            let got = col[r * ld + off + oy * g.ow + ox];
            assert_eq!(
                got, want,
                "{h}×{w} k{k} s{stride} p{pad}: tap ({c}, {ky}, {kx}) at ({oy}, {ox})"
            );
        }
        // Nothing outside the row's span is written.
        for r in 0..g.ckk() {
            assert!(col[r * ld..r * ld + off].iter().all(|v| v.is_nan()));
            assert!(col[r * ld + off + ohw..(r + 1) * ld]
                .iter()
                .all(|v| v.is_nan()));
        }
    }
}
