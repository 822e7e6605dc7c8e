//! The pooling loops: one (image, channel) plane per rayon task, forward (recording each
//! maximum's cell when asked) and backward (searching each window again, or spreading the
//! average's share).

use std::sync::OnceLock;

use candle_core::WithDType;
use rayon::prelude::*;

use super::{Pool2dConfig, PoolKind};
use crate::cpu::with_simd;

/// Plane geometry shared by forward and backward kernels.
#[derive(Clone, Copy)]
pub(super) struct Planes {
    pub(super) n_planes: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl Planes {
    pub(super) fn of(cfg: &Pool2dConfig, in_dims: &[usize]) -> candle_core::Result<Self> {
        let [n, c, h, w] = in_dims else {
            candle_core::bail!("pool2d: expected a 4-D input, got {in_dims:?}")
        };
        let (Some(oh), Some(ow)) = (cfg.output_size(*h), cfg.output_size(*w)) else {
            candle_core::bail!("pool2d: kernel {} does not fit {h}×{w}", cfg.kernel)
        };
        Ok(Self {
            n_planes: n * c,
            h: *h,
            w: *w,
            oh,
            ow,
        })
    }
}

/// Row-major index of the first maximal cell of a window; NaN counts as maximal, as in PyTorch.
#[inline]
fn argmax_in_window<T: WithDType>(
    plane: &[T],
    w: usize,
    (h0, h1): (usize, usize),
    (w0, w1): (usize, usize),
) -> Option<usize> {
    let mut best: Option<(usize, T)> = None;
    for y in h0..h1 {
        for x in w0..w1 {
            let idx = y * w + x;
            let v = plane[idx];
            #[allow(clippy::eq_op)] // v != v is the generic NaN test.
            let is_nan = v != v;
            match best {
                None => best = Some((idx, v)),
                Some((_, b)) if v > b || is_nan => {
                    best = Some((idx, v));
                    if is_nan {
                        return Some(idx);
                    }
                }
                _ => {}
            }
        }
    }
    best.map(|(i, _)| i)
}

pub(super) fn forward_kernel<T: WithDType>(
    cfg: &Pool2dConfig,
    input: &[T],
    g: Planes,
    argmax: Option<&OnceLock<super::Argmax>>,
) -> Vec<T> {
    let len = g.n_planes * g.oh * g.ow;
    let mut out = vec![T::zero(); len];
    let planes = out
        .par_chunks_mut(g.oh * g.ow)
        .zip(input.par_chunks(g.h * g.w));
    match argmax {
        Some(cell) => {
            let mut indices = vec![0u32; len];
            planes
                .zip(indices.par_chunks_mut(g.oh * g.ow))
                .for_each(|((out, plane), idx)| pool_plane(cfg, g, plane, out, Some(idx)));
            // A forward runs once per op; should candle ever run it twice, the indices agree.
            let _ = cell.set(super::Argmax::Cpu(indices));
        }
        None if cfg.kind == PoolKind::Max => planes
            // A plane is small (a few thousand values at most on NIN's maps): several per task.
            .with_min_len(PLANES_PER_TASK.div_ceil(g.h * g.w))
            .for_each_init(Vec::new, |column_max, (out, plane)| {
                max_plane(cfg, g, plane, out, column_max)
            }),
        None => planes.for_each(|(out, plane)| pool_plane(cfg, g, plane, out, None)),
    }
    out
}

/// Input values a forward task takes at least.
const PLANES_PER_TASK: usize = 1 << 14;

/// The larger of `a` and `b`, `a` on a tie, NaN when either is: PyTorch's max pool propagates
/// NaN. Written as a select so that loops of it vectorise.
#[inline(always)]
fn max_or_nan<T: WithDType>(a: T, b: T) -> T {
    #[allow(clippy::eq_op)] // b != b is the generic NaN test.
    if b > a || b != b {
        b
    } else {
        a
    }
}

/// Max-pools one plane into `out` without recording where the maxima were (inference, and
/// inputs that need no gradient): per output row, the maximum of the window's input rows column
/// by column (a vectorised pass over whole rows), then each window's maximum along that row, so
/// every input value is read once per window row rather than once per window. The values are
/// those of [`pool_plane`], but for the sign of a zero where +0 and −0 tie in one window.
fn max_plane<T: WithDType>(
    cfg: &Pool2dConfig,
    g: Planes,
    plane: &[T],
    out: &mut [T],
    column_max: &mut Vec<T>,
) {
    column_max.resize(g.w, T::zero());
    for oy in 0..g.oh {
        let (h0, h1, _) = cfg.window(oy, g.h);
        let out_row = &mut out[oy * g.ow..(oy + 1) * g.ow];
        if h0 >= h1 {
            out_row.fill(T::from_f64(f64::NEG_INFINITY));
            continue;
        }
        column_max.copy_from_slice(&plane[h0 * g.w..(h0 + 1) * g.w]);
        for y in h0 + 1..h1 {
            let row = &plane[y * g.w..(y + 1) * g.w];
            let column_max = &mut column_max[..];
            with_simd(
                #[inline(always)]
                move || {
                    for (m, &v) in column_max.iter_mut().zip(row) {
                        *m = max_or_nan(*m, v);
                    }
                },
            );
        }
        for (ox, o) in out_row.iter_mut().enumerate() {
            let (w0, w1, _) = cfg.window(ox, g.w);
            *o = match column_max.get(w0..w1) {
                Some([first, rest @ ..]) => rest.iter().fold(*first, |m, &v| max_or_nan(m, v)),
                _ => T::from_f64(f64::NEG_INFINITY),
            };
        }
    }
}

/// Pools one plane into `out`, recording each maximum's in-plane index into `argmax` if given.
fn pool_plane<T: WithDType>(
    cfg: &Pool2dConfig,
    g: Planes,
    plane: &[T],
    out: &mut [T],
    mut argmax: Option<&mut [u32]>,
) {
    for oy in 0..g.oh {
        let (h0, h1, hspan) = cfg.window(oy, g.h);
        for ox in 0..g.ow {
            let (w0, w1, wspan) = cfg.window(ox, g.w);
            let o = oy * g.ow + ox;
            out[o] = match cfg.kind {
                PoolKind::Max => {
                    let best = argmax_in_window(plane, g.w, (h0, h1), (w0, w1));
                    if let Some(idx) = argmax.as_deref_mut() {
                        idx[o] = best.map_or(u32::MAX, |i| i as u32);
                    }
                    match best {
                        Some(i) => plane[i],
                        None => T::from_f64(f64::NEG_INFINITY),
                    }
                }
                PoolKind::Avg => {
                    let mut sum = T::zero();
                    for y in h0..h1 {
                        for v in &plane[y * g.w + w0..y * g.w + w1] {
                            sum += *v;
                        }
                    }
                    let divisor = avg_divisor(cfg, (h0, h1, hspan), (w0, w1, wspan));
                    sum / T::from_f64(divisor as f64)
                }
            };
        }
    }
}

fn avg_divisor(
    cfg: &Pool2dConfig,
    (h0, h1, hspan): (usize, usize, usize),
    (w0, w1, wspan): (usize, usize, usize),
) -> usize {
    if cfg.count_include_pad {
        hspan * wspan
    } else {
        ((h1 - h0) * (w1 - w0)).max(1)
    }
}

pub(super) fn backward_kernel<T: WithDType>(
    cfg: &Pool2dConfig,
    input: Option<&[T]>,
    grad_out: &[T],
    g: Planes,
) -> Vec<T> {
    let mut grad_in = vec![T::zero(); g.n_planes * g.h * g.w];
    grad_in
        .par_chunks_mut(g.h * g.w)
        .zip(grad_out.par_chunks(g.oh * g.ow))
        .enumerate()
        .for_each(|(p, (gin, gout))| {
            let plane = input.map(|x| &x[p * g.h * g.w..(p + 1) * g.h * g.w]);
            for oy in 0..g.oh {
                let (h0, h1, hspan) = cfg.window(oy, g.h);
                for ox in 0..g.ow {
                    let (w0, w1, wspan) = cfg.window(ox, g.w);
                    let go = gout[oy * g.ow + ox];
                    match (cfg.kind, plane) {
                        (PoolKind::Max, Some(plane)) => {
                            if let Some(i) = argmax_in_window(plane, g.w, (h0, h1), (w0, w1)) {
                                gin[i] += go;
                            }
                        }
                        _ => {
                            let divisor = avg_divisor(cfg, (h0, h1, hspan), (w0, w1, wspan));
                            let share = go / T::from_f64(divisor as f64);
                            for y in h0..h1 {
                                for cell in &mut gin[y * g.w + w0..y * g.w + w1] {
                                    *cell += share;
                                }
                            }
                        }
                    }
                }
            }
        });
    grad_in
}
