//! The channel-window convolution of CiC: each output channel reads a window of consecutive
//! input channels only, with its own weights, shared over space.
//!
//! The weight is stored compactly as `[out, w, k, k]`. The forward pass gathers it into the dense
//! `[out, in, k, k]` weight it stands for (zeros outside each window, one `index_select` over a
//! constant index) and runs the shared convolution op with the layer's channel bands,
//! [`nin_layers::conv2d_banded`]: on the CPU, each block of [`WINDOW_BAND_HEIGHT`] consecutive
//! output channels is one GEMM over the input channels its windows span, forward and backward, so
//! the layer costs about its own multiply-accumulates (plus the windows' overlap within a block)
//! rather than a dense layer's `in / w` times as many; other devices run the dense convolution of
//! the gathered weight. Both steps are differentiable, so the backward pass is exact by
//! construction: the weight gradient inside the bands is gathered back onto the compact weight by
//! `index_select`'s backward (`index_add`), and the input gradient is the banded convolution's.
//!
//! Trade-off: the gather of `out·in·k²` values forward and its scatter-add backward are kept,
//! small next to the convolution, so that one code path (candle ops around one convolution op)
//! serves every device. A block reads `w + (spread of its window starts)` channels: 59 of 192 on
//! average for a 192 → 192 layer with w = 48 and blocks of 16, where a window reads 48, so the
//! forward and weight-gradient GEMMs do about 1.24 times the layer's own multiply-accumulates,
//! and the input gradient's (blocks of 16 input channels, each with the outputs that read it)
//! 1.31 times. See the model card for measured times.

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};
use std::sync::Arc;

use nin_layers::{
    conv2d_banded, ChannelBands, ConvOptions, ConvSpec, Error, Result, WeightInit,
    WINDOW_BAND_HEIGHT,
};

/// Geometry of one channel-window convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelWindowConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Consecutive input channels each output channel reads.
    pub window: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl ChannelWindowConfig {
    /// Checks that the layer can be built: every size at least 1 and `window ≤ in_channels`.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, problem: String| Error::InvalidConfig {
            layer: "channel_window_conv",
            field,
            problem,
        };
        if self.in_channels == 0 || self.out_channels == 0 || self.kernel == 0 || self.stride == 0 {
            return Err(invalid(
                "in_channels/out_channels/kernel/stride",
                "must all be at least 1".into(),
            ));
        }
        if self.window == 0 || self.window > self.in_channels {
            return Err(invalid(
                "window",
                format!(
                    "must be between 1 and the input channels ({}), got {}",
                    self.in_channels, self.window
                ),
            ));
        }
        Ok(())
    }

    /// First input channel of each output channel's window, see [`window_starts`].
    pub fn starts(&self) -> Vec<usize> {
        window_starts(self.in_channels, self.out_channels, self.window)
    }

    /// Shape of the compact weight, `[out, w, k, k]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.out_channels, self.window, self.kernel, self.kernel]
    }

    /// The convolution of `w` input channels whose weight the layer stores, `[out, w, k, k]`
    /// with bias: its output size, parameters and multiply-accumulates are the layer's own.
    pub fn compact(&self) -> ConvSpec {
        ConvSpec {
            in_channels: self.window,
            out_channels: self.out_channels,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            bias: true,
        }
    }

    /// Output side for an input side `size`.
    pub fn output_size(&self, size: usize) -> usize {
        self.compact().output_size(size)
    }

    /// Trainable parameters: `out·w·k² + out`.
    pub fn param_count(&self) -> usize {
        self.compact().param_count()
    }

    /// Multiply-accumulates per image of the layer itself (`out·w·k²` per output pixel), for an
    /// `h`×`w` input; the gathered dense convolution that computes it does `in / w` times more.
    pub fn macs(&self, h: usize, w: usize) -> u64 {
        self.compact().macs(h, w)
    }
}

/// Window starts `s_j = round(j · (in − w) / (out − 1))`, halves rounded up, for output channels
/// `j = 0..out`; `s_0 = 0` when `out = 1`. Windows are spread evenly: the first starts at channel
/// 0 and the last ends at channel `in − 1`. Computed in integers, so every implementation that
/// rounds halves up agrees (Python's `round` rounds halves to even).
pub fn window_starts(in_channels: usize, out_channels: usize, window: usize) -> Vec<usize> {
    let span = in_channels.saturating_sub(window);
    if out_channels <= 1 {
        return vec![0; out_channels];
    }
    let den = out_channels - 1;
    (0..out_channels)
        .map(|j| (2 * j * span + den) / (2 * den))
        .collect()
}

/// A channel-window convolution with bias. Weight names: `weight` `[out, w, k, k]`, `bias`
/// `[out]`.
#[derive(Clone, Debug)]
pub struct ChannelWindowConv {
    weight: Tensor,
    bias: Tensor,
    /// For each row `o·in + i` of the dense weight (viewed as `[out·in, k²]`), the row of the
    /// compact weight (viewed as `[out·w, k²]`, plus one zero row at `out·w`) it copies.
    gather: Tensor,
    /// The blocks of output channels the convolution op runs as one GEMM each.
    bands: Arc<ChannelBands>,
    cfg: ChannelWindowConfig,
}

impl ChannelWindowConv {
    /// Loads or creates `weight` `[out, w, k, k]` and `bias` `[out]` under `vb`. The
    /// initialisation sees the compact shape, so fan-in schemes use the true fan-in `w·k²`; a
    /// fixed-std `Normal` is scaled by `√(in/w)`, so that the layer passes on the variance the
    /// dense layer it replaces would (with NIN's N(0, 0.05²) as is, each window layer shrank the
    /// signal twice as much as a dense one, and `cic_1d`'s class maps started dead).
    pub fn new(cfg: ChannelWindowConfig, init: WeightInit, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let shape = cfg.weight_shape();
        let init = match init {
            WeightInit::Normal { std } => WeightInit::Normal {
                std: std * (cfg.in_channels as f64 / cfg.window as f64).sqrt(),
            },
            other => other,
        };
        let weight = vb.get_with_hints(&shape, "weight", init.hint(&shape))?;
        let bias = vb.get_with_hints(cfg.out_channels, "bias", Init::Const(0.0))?;
        let (n_in, w) = (cfg.in_channels, cfg.window);
        let zero_row = (cfg.out_channels * w) as u32;
        let mut gather = Vec::with_capacity(cfg.out_channels * n_in);
        for (o, &s) in cfg.starts().iter().enumerate() {
            gather.extend((0..n_in).map(|i| {
                if (s..s + w).contains(&i) {
                    (o * w + i - s) as u32
                } else {
                    zero_row
                }
            }));
        }
        let gather = Tensor::from_vec(gather, cfg.out_channels * n_in, vb.device())?;
        let bands = ChannelBands::from_windows(n_in, &cfg.starts(), w, WINDOW_BAND_HEIGHT)?;
        Ok(Self {
            weight,
            bias,
            gather,
            bands: Arc::new(bands),
            cfg,
        })
    }

    /// The compact `[out, w, k, k]` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The `[out]` bias.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The layer's geometry.
    pub fn config(&self) -> &ChannelWindowConfig {
        &self.cfg
    }

    /// The dense `[out, in, k, k]` weight the layer stands for: the compact weight scattered to
    /// each window's channels, zeros elsewhere. Differentiable with respect to the compact weight.
    pub fn dense_weight(&self) -> candle_core::Result<Tensor> {
        let cfg = &self.cfg;
        let k2 = cfg.kernel * cfg.kernel;
        // [out·w, k²] plus one zero row that every position outside a window reads.
        let rows = self
            .weight
            .reshape((cfg.out_channels * cfg.window, k2))?
            .pad_with_zeros(0, 0, 1)?;
        rows.index_select(&self.gather, 0)?.reshape((
            cfg.out_channels,
            cfg.in_channels,
            cfg.kernel,
            cfg.kernel,
        ))
    }

    /// `relu(conv(xs) + bias)` in one op, as [`nin_layers::Conv2d::forward_relu`] does.
    pub fn forward_relu(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(xs, true)
    }

    fn apply(&self, xs: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
        let (_, c, _, _) = xs.dims4()?;
        if c != self.cfg.in_channels {
            candle_core::bail!(
                "channel_window_conv: expected input [N, {}, H, W], got {:?}",
                self.cfg.in_channels,
                xs.dims()
            );
        }
        let opts = ConvOptions {
            stride: self.cfg.stride,
            padding: self.cfg.padding,
            relu,
        };
        let weight = self.dense_weight()?;
        conv2d_banded(xs, &weight, Some(&self.bias), opts, self.bands.clone())
    }
}

impl Module for ChannelWindowConv {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(xs, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;
    use nin_layers::{seeded_randn, seeded_var_builder};

    /// `dims` standard normal values times `std`, in `dtype`, from seed `seed`.
    fn randn(dims: &[usize], seed: u64, std: f64, dtype: DType) -> Tensor {
        let z = seeded_randn(dims, seed).unwrap().to_dtype(dtype).unwrap();
        (z * std).unwrap()
    }

    fn small(window: usize) -> ChannelWindowConfig {
        ChannelWindowConfig {
            in_channels: 7,
            out_channels: 5,
            window,
            kernel: 3,
            stride: 1,
            padding: 1,
        }
    }

    #[test]
    fn windows_are_spread_evenly_and_rounded_half_up() {
        assert_eq!(window_starts(7, 5, 3), [0, 1, 2, 3, 4]);
        // 2·(10 − 4)/(5 − 1) = 1.5 → 2 (half up), 3·6/4 = 4.5 → 5.
        assert_eq!(window_starts(10, 5, 4), [0, 2, 3, 5, 6]);
        assert_eq!(window_starts(192, 192, 48).last(), Some(&144));
        assert_eq!(window_starts(160, 96, 48)[..3], [0, 1, 2]);
        assert_eq!(window_starts(8, 1, 3), [0]);
        assert_eq!(window_starts(4, 3, 4), [0, 0, 0]);
    }

    #[test]
    fn a_fixed_std_init_keeps_the_dense_layers_variance() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 3, DType::F64, &Device::Cpu);
        let cfg = ChannelWindowConfig {
            in_channels: 192,
            out_channels: 160,
            window: 48,
            kernel: 1,
            stride: 1,
            padding: 0,
        };
        let conv = ChannelWindowConv::new(cfg, WeightInit::Normal { std: 0.05 }, vb).unwrap();
        let w = conv.weight.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
        // 0.05·√(192/48) = 0.1: 48 inputs at 0.1 carry the variance of 192 at 0.05.
        assert!((std - 0.1).abs() < 0.003, "std {std}");
    }

    #[test]
    fn oversized_windows_are_refused() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let err = ChannelWindowConv::new(small(8), WeightInit::KaimingNormal, vb)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`window`") && err.contains("got 8"), "{err}");
    }

    /// Output channel j is a dense convolution of input channels `[s_j, s_j + w)` with its own
    /// weights: computed here one channel at a time, the way the PyTorch fixture does.
    #[test]
    fn matches_a_per_channel_reference() {
        let cfg = small(3);
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
        let conv = ChannelWindowConv::new(cfg, WeightInit::Normal { std: 0.5 }, vb).unwrap();
        varmap.data().lock().unwrap()["bias"]
            .set(&randn(&[5], 1, 0.5, DType::F32))
            .unwrap();
        let dense = conv.dense_weight().unwrap();
        assert_eq!(dense.dims(), &[5, 7, 3, 3]);
        let xs = randn(&[2, 7, 6, 6], 2, 1.0, DType::F32);
        let got = conv.forward(&xs).unwrap();
        for (j, &s) in cfg.starts().iter().enumerate() {
            let w = conv.weight().narrow(0, j, 1).unwrap();
            let b = conv.bias().narrow(0, j, 1).unwrap();
            let want = xs
                .narrow(1, s, 3)
                .unwrap()
                .conv2d(&w, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, 1, 1, 1)).unwrap())
                .unwrap();
            let diff = (got.narrow(1, j, 1).unwrap() - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "channel {j}: {diff}");
            // Outside the window the dense weight is exactly zero.
            let row = dense.get(j).unwrap().to_vec3::<f32>().unwrap();
            for (i, taps) in row.iter().enumerate() {
                if !(s..s + 3).contains(&i) {
                    assert!(
                        taps.iter().flatten().all(|&v| v == 0.0),
                        "channel {j}, input {i}"
                    );
                }
            }
        }
    }

    /// Gradients of weight, bias and input against central differences, in float64.
    #[test]
    fn gradients_match_finite_differences() {
        for stride in [1, 2] {
            check_gradients(ChannelWindowConfig { stride, ..small(3) });
        }
    }

    fn check_gradients(cfg: ChannelWindowConfig) {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 5, DType::F64, &dev);
        let conv = ChannelWindowConv::new(cfg, WeightInit::Normal { std: 0.5 }, vb).unwrap();
        varmap.data().lock().unwrap()["bias"]
            .set(&randn(&[5], 3, 0.1, DType::F64))
            .unwrap();
        let xs = Var::from_tensor(&randn(&[2, 7, 5, 5], 4, 1.0, DType::F64)).unwrap();
        let side = cfg.output_size(5);
        let probe = randn(&[2, 5, side, side], 5, 1.0, DType::F64);
        // A loss that weighs every output differently and is not linear in it.
        let loss = |conv: &ChannelWindowConv, xs: &Tensor| {
            let ys = conv.forward(xs).unwrap();
            ((&ys * &probe).unwrap() + ys.sqr().unwrap().affine(0.25, 0.0).unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = loss(&conv, xs.as_tensor()).backward().unwrap();
        let eps = 1e-6;
        let mut checked = 0;
        let vars = varmap.all_vars();
        let inputs = vars.iter().chain(std::iter::once(&xs));
        for var in inputs {
            let analytic = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            assert_eq!(analytic.len(), base.len());
            for idx in 0..base.len() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[idx] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                        .unwrap();
                    loss(&conv, xs.as_tensor()).to_scalar::<f64>().unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                at(0.0);
                let err = (numeric - analytic[idx]).abs() / analytic[idx].abs().max(1.0);
                assert!(
                    err < 1e-6,
                    "{:?}[{idx}]: numeric {numeric}, analytic {}",
                    var.dims(),
                    analytic[idx]
                );
                checked += 1;
            }
        }
        // weight 5·3·3·3, bias 5, input 2·7·5·5.
        assert_eq!(checked, 135 + 5 + 350);
        // The fused ReLU path gives relu(forward).
        let fused = conv.forward_relu(xs.as_tensor()).unwrap();
        let plain = conv.forward(xs.as_tensor()).unwrap().relu().unwrap();
        let diff = (fused - plain).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
    }
}
