//! Max and average pooling as custom ops with a correct, parallel CPU backward.
//!
//! candle 0.11 refuses to backpropagate pooling whose kernel differs from its stride (NIN's
//! 3×3 stride-2 pools), its max-pool gradient is wrong even when they match, and it has no
//! padding or ceil mode. These ops follow PyTorch's `MaxPool2d`/`AvgPool2d` exactly: output size,
//! padding, ceil mode, `count_include_pad`, the gradient of a max going to the first maximal cell
//! in row-major order, and overlapping windows accumulating. Forward and backward run one
//! (image, channel) plane per rayon task; a max pool whose input tracks a gradient records where
//! each maximum came from (as PyTorch's indices), so its backward is a scatter. Only the CPU is implemented: on other devices the ops
//! return candle's "no cuda implementation" error rather than a silent fallback.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::sync::OnceLock;

use crate::cpu::{dispatch_float, slice};
use crate::error::{Error, Result};

/// The reduction a pooling window applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Maximum of the window.
    Max,
    /// Mean of the window.
    Avg,
}

/// Geometry of a square pooling window, with PyTorch's meaning for every field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool2dConfig {
    /// The reduction.
    pub kind: PoolKind,
    /// Window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit padding on every side (−∞ for max, 0 for average); at most `kernel / 2`.
    pub padding: usize,
    /// Round the output size up, so windows may hang over the bottom/right edge.
    pub ceil_mode: bool,
    /// Average only: divide by the window size including padding (`true`), or by the number of
    /// real cells (`false`). Cells past the padded edge in ceil mode never count, as in PyTorch.
    pub count_include_pad: bool,
}

impl Pool2dConfig {
    /// NIN's pooling: 3×3 windows, stride 2, no padding, ceil mode.
    pub fn nin(kind: PoolKind) -> Self {
        Self {
            kind,
            kernel: 3,
            stride: 2,
            padding: 0,
            ceil_mode: true,
            count_include_pad: false,
        }
    }

    /// Checks the fields against each other, as PyTorch does.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, problem: String| Error::InvalidConfig {
            layer: "pool2d",
            field,
            problem,
        };
        if self.kernel == 0 {
            return Err(invalid("kernel", "must be at least 1, got 0".into()));
        }
        if self.stride == 0 {
            return Err(invalid("stride", "must be at least 1, got 0".into()));
        }
        if self.padding > self.kernel / 2 {
            return Err(invalid(
                "padding",
                format!(
                    "must be at most kernel/2 (= {}), got {}",
                    self.kernel / 2,
                    self.padding
                ),
            ));
        }
        Ok(())
    }

    /// Output side for an input side `size` (PyTorch's `pooling_output_shape`), or `None` when
    /// the window does not fit.
    pub fn output_size(&self, size: usize) -> Option<usize> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let span = (size + 2 * p).checked_sub(k)?;
        let mut out = if self.ceil_mode {
            span.div_ceil(s) + 1
        } else {
            span / s + 1
        };
        // In ceil mode the last window must start inside the input or its left padding.
        if self.ceil_mode && (out - 1) * s >= size + p {
            out -= 1;
        }
        Some(out)
    }

    /// Index range of window `o` along one axis of side `size`: `(start, end)` clipped to the
    /// input, and the divisor span that PyTorch counts when padding is included.
    fn window(&self, o: usize, size: usize) -> (usize, usize, usize) {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end_padded = (start + self.kernel as isize).min((size + self.padding) as isize);
        let span_with_pad = (end_padded - start) as usize;
        let lo = start.max(0) as usize;
        let hi = (end_padded.min(size as isize)).max(0) as usize;
        (lo, hi, span_with_pad)
    }
}

/// Pools `xs` (`[N, C, H, W]`, f32 or f64, CPU) with `cfg`; differentiable.
pub fn pool2d(xs: &Tensor, cfg: &Pool2dConfig) -> Result<Tensor> {
    cfg.validate()?;
    let (_, _, h, w) = dims4(xs, "pool2d")?;
    if cfg.output_size(h).is_none() || cfg.output_size(w).is_none() {
        return Err(Error::InvalidConfig {
            layer: "pool2d",
            field: "kernel",
            problem: format!(
                "{} does not fit a {h}×{w} input with padding {}",
                cfg.kernel, cfg.padding
            ),
        });
    }
    let op = Pool2dOp {
        cfg: *cfg,
        // A max pool that will be differentiated keeps where each maximum came from, so its
        // backward is one scatter instead of a second search of every window.
        argmax: (cfg.kind == PoolKind::Max && xs.track_op()).then(OnceLock::new),
    };
    Ok(xs.contiguous()?.apply_op1(op)?)
}

fn dims4(xs: &Tensor, op: &'static str) -> Result<(usize, usize, usize, usize)> {
    xs.dims4().map_err(|_| Error::BadShape {
        op,
        expected: "a 4-D tensor [N, C, H, W]",
        got: xs.dims().to_vec(),
    })
}

struct Pool2dOp {
    cfg: Pool2dConfig,
    /// For a max pool on the gradient path: the in-plane index of each output's maximum
    /// (`u32::MAX` for a window without cells), written by the forward.
    argmax: Option<OnceLock<Vec<u32>>>,
}

/// Plane geometry shared by forward and backward kernels.
#[derive(Clone, Copy)]
struct Planes {
    n_planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl Planes {
    fn of(cfg: &Pool2dConfig, in_dims: &[usize]) -> candle_core::Result<Self> {
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

fn forward_kernel<T: WithDType>(
    cfg: &Pool2dConfig,
    input: &[T],
    g: Planes,
    argmax: Option<&OnceLock<Vec<u32>>>,
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
            let _ = cell.set(indices);
        }
        None => planes.for_each(|(out, plane)| pool_plane(cfg, g, plane, out, None)),
    }
    out
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

fn backward_kernel<T: WithDType>(
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

impl CustomOp1 for Pool2dOp {
    fn name(&self) -> &'static str {
        match self.cfg.kind {
            PoolKind::Max => "nin-max-pool2d",
            PoolKind::Avg => "nin-avg-pool2d",
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Planes::of(&self.cfg, layout.dims())?;
        let dims = layout.dims();
        let shape = Shape::from((dims[0], dims[1], g.oh, g.ow));
        let op = self.name();
        let out = dispatch_float!(storage.dtype(), op, |T| {
            let input = slice::<T>(storage, layout, op)?;
            T::to_cpu_storage_owned(forward_kernel(&self.cfg, input, g, self.argmax.as_ref()))
        });
        Ok((out, shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad_res = grad_res.contiguous()?;
        let grad = match self.argmax.as_ref().and_then(OnceLock::get) {
            Some(argmax) => grad_res.apply_op1_no_bwd(&MaxPoolScatterOp {
                argmax,
                in_shape: arg.shape().clone(),
            })?,
            None => arg.apply_op2_no_bwd(&grad_res, &Pool2dBackwardOp { cfg: self.cfg })?,
        };
        Ok(Some(grad))
    }
}

/// Gradient of a max [`Pool2dOp`] from its recorded maxima: each output's gradient added onto the
/// cell its maximum came from.
struct MaxPoolScatterOp<'a> {
    argmax: &'a [u32],
    in_shape: Shape,
}

impl CustomOp1 for MaxPoolScatterOp<'_> {
    fn name(&self) -> &'static str {
        "nin-max-pool2d-scatter"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        fn run<T: WithDType>(argmax: &[u32], grad: &[T], in_shape: &Shape) -> Vec<T> {
            let (n, c, h, w) = in_shape.dims4().unwrap_or_default();
            let out_plane = grad.len() / (n * c).max(1);
            let mut grad_in = vec![T::zero(); n * c * h * w];
            grad_in
                .par_chunks_mut(h * w)
                .zip(grad.par_chunks(out_plane).zip(argmax.par_chunks(out_plane)))
                .for_each(|(gin, (gout, idx))| {
                    for (&g, &i) in gout.iter().zip(idx) {
                        if let Some(cell) = gin.get_mut(i as usize) {
                            *cell += g;
                        }
                    }
                });
            grad_in
        }
        if layout.shape().elem_count() != self.argmax.len() {
            candle_core::bail!(
                "{}: gradient {:?} does not match the {} recorded maxima",
                self.name(),
                layout.dims(),
                self.argmax.len()
            );
        }
        let op = self.name();
        let out = dispatch_float!(grad.dtype(), op, |T| {
            let grad = slice::<T>(grad, layout, op)?;
            T::to_cpu_storage_owned(run(self.argmax, grad, &self.in_shape))
        });
        Ok((out, self.in_shape.clone()))
    }
}

/// Gradient of [`Pool2dOp`] with respect to its input: `(input, grad_output) → grad_input`.
struct Pool2dBackwardOp {
    cfg: Pool2dConfig,
}

impl CustomOp2 for Pool2dBackwardOp {
    fn name(&self) -> &'static str {
        "nin-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        input: &CpuStorage,
        input_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Planes::of(&self.cfg, input_layout.dims())?;
        let expected = [input_layout.dims()[0], input_layout.dims()[1], g.oh, g.ow];
        if grad_layout.dims() != expected {
            candle_core::bail!(
                "{}: gradient shape {:?} does not match output shape {expected:?}",
                self.name(),
                grad_layout.dims()
            );
        }
        let (op, needs_input) = (self.name(), self.cfg.kind == PoolKind::Max);
        let out = dispatch_float!(grad.dtype(), op, |T| {
            let input = needs_input
                .then(|| slice::<T>(input, input_layout, op))
                .transpose()?;
            let grad = slice::<T>(grad, grad_layout, op)?;
            T::to_cpu_storage_owned(backward_kernel(&self.cfg, input, grad, g))
        });
        Ok((out, input_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn cfg(
        kind: PoolKind,
        kernel: usize,
        stride: usize,
        padding: usize,
        ceil: bool,
    ) -> Pool2dConfig {
        Pool2dConfig {
            kind,
            kernel,
            stride,
            padding,
            ceil_mode: ceil,
            count_include_pad: false,
        }
    }

    #[test]
    fn output_sizes_match_pytorch() {
        // NIN: 32 → 16 → 8 with ceil mode; floor would give 15 and 7.
        let nin = Pool2dConfig::nin(PoolKind::Max);
        assert_eq!(nin.output_size(32), Some(16));
        assert_eq!(nin.output_size(16), Some(8));
        assert_eq!(cfg(PoolKind::Max, 3, 2, 0, false).output_size(32), Some(15));
        // The ceil-mode window that would start in the right padding is dropped.
        assert_eq!(cfg(PoolKind::Max, 2, 2, 1, true).output_size(4), Some(3));
        assert_eq!(cfg(PoolKind::Max, 3, 3, 0, true).output_size(2), None);
    }

    #[test]
    fn max_gradient_goes_to_the_first_maximal_cell() {
        let x = Var::from_tensor(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        let y = pool2d(x.as_tensor(), &cfg(PoolKind::Max, 2, 2, 0, false)).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gx, vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn recorded_maxima_give_the_gradient_a_search_of_every_window_gives() {
        // Rounded values make ties; a NaN and a padded, ceil-mode geometry test the edges.
        let mut values: Vec<f32> = (0..2 * 3 * 9 * 7)
            .map(|i| ((i * 7919 % 23) as f32 / 4.0).round())
            .collect();
        values[40] = f32::NAN;
        let x = Tensor::from_vec(values, (2, 3, 9, 7), &Device::Cpu).unwrap();
        for c in [
            cfg(PoolKind::Max, 3, 2, 1, true),
            Pool2dConfig::nin(PoolKind::Max),
        ] {
            let var = Var::from_tensor(&x).unwrap();
            let y = pool2d(var.as_tensor(), &c).unwrap();
            let weights = crate::rng::seeded_rand(y.shape(), 1).unwrap();
            let grads = (&y * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let scattered = grads.get(var.as_tensor()).unwrap();
            let searched = x
                .apply_op2_no_bwd(&weights, &Pool2dBackwardOp { cfg: c })
                .unwrap();
            let (a, b) = (
                scattered.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                searched.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(a, b, "{c:?}");
        }
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_named() {
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let err = pool2d(&x, &cfg(PoolKind::Avg, 3, 1, 2, false)).unwrap_err();
        assert!(
            err.to_string()
                .contains("`padding` must be at most kernel/2"),
            "{err}"
        );
        let err = pool2d(&x, &cfg(PoolKind::Avg, 3, 0, 0, false)).unwrap_err();
        assert!(err.to_string().contains("`stride`"), "{err}");
        let err = pool2d(&x, &cfg(PoolKind::Avg, 5, 1, 0, false)).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let flat = Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(pool2d(&flat, &cfg(PoolKind::Avg, 2, 2, 0, false)).is_err());
    }
}
