//! Convolution and batch-norm units of the residual and dense NIN families: a convolution
//! followed by batch norm ([`ConvBn`], post-activation, DrNIN) and batch norm, activation,
//! then convolution ([`BnActConv`], pre-activation, DcNIN).
//!
//! A convolution that batch norm follows has no bias (the norm's mean would cancel it): the
//! [`ConvSpec`] says so. Each constructor takes one `VarBuilder` for the convolution and one for
//! the norm, so a family names them as its PyTorch module does (`conv1` and `bn1`, or `conv` and
//! `bn`).

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

use crate::activation::Activation;
use crate::batch_norm::{batch_norm_2d, BatchNorm2d};
use crate::conv::{Conv2d, ConvSpec};
use crate::error::Result;
use crate::init::WeightInit;

/// Convolution then batch norm, no activation (the caller applies it, possibly after a
/// residual sum).
#[derive(Clone, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// The convolution under `conv_vb` (its bias as `spec` says) and its norm, with
    /// `bn_momentum`, under `bn_vb`.
    pub fn new(
        spec: &ConvSpec,
        init: WeightInit,
        bn_momentum: f64,
        conv_vb: VarBuilder,
        bn_vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(spec, init, conv_vb)?,
            bn: batch_norm_2d(spec.out_channels, bn_momentum, bn_vb)?,
        })
    }

    /// Trainable parameters of a unit built from `spec`: the convolution, then the norm's scale
    /// and shift.
    pub fn param_count(spec: &ConvSpec) -> usize {
        spec.param_count() + 2 * spec.out_channels
    }
}

impl ConvBn {
    /// `activation(bn(conv(xs)))`, the activation fused into the norm (in evaluation mode,
    /// possibly the norm folded into the convolution: [`conv_bn_act`]).
    pub fn forward_activated(
        &self,
        xs: &Tensor,
        train: bool,
        activation: Activation,
    ) -> candle_core::Result<Tensor> {
        conv_bn_act(&self.conv, &self.bn, xs, train, activation)
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        conv_bn_act(&self.conv, &self.bn, xs, train, Activation::Identity)
    }
}

/// `activation(bn(conv(xs)))`, for every convolution that batch norm follows (NIN's batch-norm
/// variants, DrNIN).
///
/// In training mode on the CPU the two are one op (`BatchNorm2d::train_after_conv`), so that
/// the convolution's output is not a node of candle's graph and costs no zero-filled gradient
/// accumulator.
///
/// In evaluation mode the norm is a fixed affine map per output channel, so it can be folded
/// into the convolution: `W' = W·scale`, `b' = b·scale + shift`, with a ReLU fused into the
/// convolution as well. That replaces a pass over the activations (and, in inference, an op)
/// by a pass over the weight, which pays when the activations of a channel outnumber its
/// weights, `N·OH·OW ≥ C_in·k·k`: always at batch 32, and for most layers even at batch 1 (not
/// for NIN's 5×5 layer on 16×16 maps there). The result equals the unfolded one up to float
/// rounding, and gradients still reach W, b, γ and β. In training mode the norm uses the
/// batch's statistics and nothing is folded.
pub(crate) fn conv_bn_act(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    xs: &Tensor,
    train: bool,
    activation: Activation,
) -> candle_core::Result<Tensor> {
    if train {
        return match bn.train_after_conv(conv, xs, activation)? {
            Some(ys) => Ok(ys),
            None => bn.forward_activated(&conv.forward(xs)?, true, activation),
        };
    }
    let (n, h, w) = match xs.dims() {
        &[n, _, h, w] => (n, h, w),
        _ => (0, 0, 0),
    };
    let weight = conv.weight();
    let taps_per_output = weight.elem_count() / weight.dim(0)?.max(1);
    if n * conv.output_positions(h, w) < taps_per_output {
        return bn.forward_activated(&conv.forward(xs)?, false, activation);
    }
    let (scale, shift) = bn.eval_affine()?;
    let folded_weight = weight.broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
    let folded_bias = match conv.bias() {
        Some(b) => b.mul(&scale)?.add(&shift)?,
        None => shift,
    };
    let relu = activation == Activation::Relu;
    let ys = conv.apply_with(xs, &folded_weight, Some(&folded_bias), relu)?;
    if relu {
        Ok(ys)
    } else {
        activation.apply(&ys)
    }
}

/// Pre-activation unit: batch norm, activation, then convolution.
#[derive(Clone, Debug)]
pub struct BnActConv {
    bn: BatchNorm2d,
    activation: Activation,
    conv: Conv2d,
}

impl BnActConv {
    /// The norm over `spec.in_channels`, with `bn_momentum`, under `bn_vb`, then the
    /// convolution under `conv_vb`.
    pub fn new(
        spec: &ConvSpec,
        activation: Activation,
        init: WeightInit,
        bn_momentum: f64,
        bn_vb: VarBuilder,
        conv_vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            bn: batch_norm_2d(spec.in_channels, bn_momentum, bn_vb)?,
            activation,
            conv: Conv2d::new(spec, init, conv_vb)?,
        })
    }

    /// Trainable parameters of a unit built from `spec`: the norm's scale and shift, then the
    /// convolution.
    pub fn param_count(spec: &ConvSpec) -> usize {
        2 * spec.in_channels + spec.param_count()
    }
}

impl ModuleT for BnActConv {
    /// In training mode on the CPU the three are one op (`BatchNorm2d::train_before_conv`), so
    /// that the norm's output is not a node of candle's graph.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train {
            if let Some(ys) = self.bn.train_before_conv(&self.conv, xs, self.activation)? {
                return Ok(ys);
            }
        }
        let xs = self.bn.forward_activated(xs, train, self.activation)?;
        self.conv.forward(&xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch_norm::BN_MOMENTUM;
    use crate::cpu::max_abs_diff;
    use crate::init::seeded_var_builder;
    use crate::model::ParamRole;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn units_name_their_tensors_as_asked_and_count_them() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let spec = ConvSpec::same(3, 8, 3);
        let post = ConvBn::new(
            &spec,
            WeightInit::KaimingNormal,
            BN_MOMENTUM,
            vb.pp("b.conv1"),
            vb.pp("b.bn1"),
        )
        .unwrap();
        let pre_spec = ConvSpec::same(8, 5, 1).with_bias();
        let pre = BnActConv::new(
            &pre_spec,
            Activation::Relu,
            WeightInit::KaimingNormal,
            BN_MOMENTUM,
            vb.pp("head.bn"),
            vb.pp("head.conv"),
        )
        .unwrap();
        let xs = crate::rng::seeded_randn((2, 3, 6, 6), 1).unwrap();
        let ys = pre
            .forward_t(&post.forward_t(&xs, true).unwrap(), true)
            .unwrap();
        assert_eq!(ys.dims(), &[2, 5, 6, 6]);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["b.conv1.weight"].dims(), &[8, 3, 3, 3]);
        assert!(!data.contains_key("b.conv1.bias"));
        assert_eq!(data["b.bn1.running_var"].dims(), &[8]);
        assert_eq!(data["head.bn.weight"].dims(), &[8]);
        assert_eq!(data["head.conv.bias"].dims(), &[5]);
        let trainable: usize = data
            .iter()
            .filter(|(k, v)| ParamRole::of(k, v.rank()) != ParamRole::Buffer)
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(
            trainable,
            ConvBn::param_count(&spec) + BnActConv::param_count(&pre_spec)
        );
        assert_eq!(ConvBn::param_count(&spec), 8 * 3 * 9 + 16);
        assert_eq!(spec.macs(6, 6), 36 * 8 * 3 * 9);
    }

    /// A post-activation unit with running statistics away from (0, 1) and γ, β away from
    /// (1, 0), after a few training-mode batches.
    fn trained_unit(spec: &ConvSpec, varmap: &VarMap) -> ConvBn {
        let vb = seeded_var_builder(varmap, 3, DType::F64, &Device::Cpu);
        let unit = ConvBn::new(
            spec,
            WeightInit::KaimingNormal,
            0.5,
            vb.pp("conv"),
            vb.pp("bn"),
        )
        .unwrap();
        for seed in 0..3 {
            let xs = crate::rng::seeded_randn((4, spec.in_channels, 6, 6), seed).unwrap();
            let xs = xs.to_dtype(DType::F64).unwrap().affine(2.0, 0.5).unwrap();
            unit.forward_t(&xs, true).unwrap();
        }
        let data = varmap.data().lock().unwrap();
        let gamma = crate::rng::seeded_randn(spec.out_channels, 7).unwrap();
        data["bn.weight"]
            .set(
                &gamma
                    .to_dtype(DType::F64)
                    .unwrap()
                    .affine(0.3, 1.0)
                    .unwrap(),
            )
            .unwrap();
        let beta = crate::rng::seeded_randn(spec.out_channels, 8).unwrap();
        data["bn.bias"]
            .set(&beta.to_dtype(DType::F64).unwrap())
            .unwrap();
        unit
    }

    /// The post-activation units the folded and fused paths are checked on: a 3×3 convolution
    /// without bias and a 1×1 one with, each with every activation.
    fn post_activation_cases() -> impl Iterator<Item = (ConvSpec, Activation)> {
        let activations = [
            Activation::Relu,
            Activation::Elu { alpha: 1.0 },
            Activation::Identity,
        ];
        [ConvSpec::same(3, 8, 3), ConvSpec::same(5, 4, 1).with_bias()]
            .into_iter()
            .flat_map(move |spec| activations.map(|a| (spec, a)))
    }

    #[test]
    fn folded_evaluation_equals_the_norm_after_the_convolution_values_and_gradients() {
        for (spec, activation) in post_activation_cases() {
            let varmap = VarMap::new();
            let unit = trained_unit(&spec, &varmap);
            let xs = crate::rng::seeded_randn((2, spec.in_channels, 6, 6), 11).unwrap();
            let xs = xs.to_dtype(DType::F64).unwrap();
            // The folded path (batch 2 of 6×6 maps: 72 positions per channel, more than
            // C_in·k·k) against the norm's own op on the convolution's output.
            let folded = unit.forward_activated(&xs, false, activation).unwrap();
            let plain = unit
                .bn
                .forward_activated(&unit.conv.forward(&xs).unwrap(), false, activation)
                .unwrap();
            let case = format!("{spec:?} {activation:?}");
            assert!(max_abs_diff(&folded, &plain) < 1e-12, "{case}: values");
            let weights = crate::rng::seeded_randn(folded.shape(), 12).unwrap();
            let weights = weights.to_dtype(DType::F64).unwrap();
            let loss = |ys: &Tensor| (ys * &weights).unwrap().sum_all().unwrap();
            let (g_folded, g_plain) = (
                loss(&folded).backward().unwrap(),
                loss(&plain).backward().unwrap(),
            );
            for (name, var) in varmap.data().lock().unwrap().iter() {
                if name.contains("running") {
                    continue;
                }
                let (a, b) = (g_folded.get(var), g_plain.get(var));
                let (a, b) = (a.unwrap(), b.unwrap_or_else(|| panic!("{case}: {name}")));
                assert!(max_abs_diff(a, b) < 1e-10, "{case}: gradient of {name}");
            }
        }
    }

    /// Runs `fused` then, from the running statistics `fused` started from, `plain` (the same
    /// unit as separate ops) on the variable `xs`, and asserts that they agree: values, the
    /// running statistics each left, the input's gradient and every parameter's.
    fn assert_fused_equals_plain(
        case: &str,
        varmap: &VarMap,
        xs: &Var,
        fused: impl Fn() -> Tensor,
        plain: impl Fn() -> Tensor,
    ) {
        let running = |name: &str| {
            varmap.data().lock().unwrap()[name]
                .as_tensor()
                .copy()
                .unwrap()
        };
        let names = ["bn.running_mean", "bn.running_var"];
        let before = names.map(running);
        let fused = fused();
        let after_fused = names.map(running);
        for (name, value) in names.iter().zip(&before) {
            varmap.data().lock().unwrap()[*name].set(value).unwrap();
        }
        let plain = plain();
        let after_plain = names.map(running);
        assert!(max_abs_diff(&fused, &plain) < 1e-12, "{case}: values");
        for ((a, b), old) in after_fused.iter().zip(&after_plain).zip(&before) {
            assert!(max_abs_diff(a, b) < 1e-14, "{case}: running statistics");
            assert!(
                max_abs_diff(a, old) > 1e-6,
                "{case}: running statistics unmoved"
            );
        }
        let weights = crate::rng::seeded_randn(fused.shape(), 22).unwrap();
        let weights = weights.to_dtype(DType::F64).unwrap();
        let loss = |ys: &Tensor| (ys * &weights).unwrap().sum_all().unwrap();
        let (g_fused, g_plain) = (
            loss(&fused).backward().unwrap(),
            loss(&plain).backward().unwrap(),
        );
        let dx = (g_fused.get(xs).unwrap(), g_plain.get(xs).unwrap());
        assert!(max_abs_diff(dx.0, dx.1) < 1e-10, "{case}: input gradient");
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.contains("running") {
                continue;
            }
            let (a, b) = (g_fused.get(var), g_plain.get(var));
            let (a, b) = (a.unwrap(), b.unwrap_or_else(|| panic!("{case}: {name}")));
            assert!(max_abs_diff(a, b) < 1e-10, "{case}: gradient of {name}");
        }
    }

    #[test]
    fn fused_training_equals_the_convolution_then_the_norm() {
        for (spec, activation) in post_activation_cases() {
            let varmap = VarMap::new();
            let unit = trained_unit(&spec, &varmap);
            let xs = crate::rng::seeded_randn((2, spec.in_channels, 6, 6), 21).unwrap();
            let xs = Var::from_tensor(&xs.to_dtype(DType::F64).unwrap()).unwrap();
            assert_fused_equals_plain(
                &format!("{spec:?} {activation:?}"),
                &varmap,
                &xs,
                || unit.forward_activated(&xs, true, activation).unwrap(),
                || {
                    let conv_out = unit.conv.forward(&xs).unwrap();
                    unit.bn
                        .forward_activated(&conv_out, true, activation)
                        .unwrap()
                },
            );
        }
    }

    #[test]
    fn fused_pre_activation_training_equals_the_norm_then_the_convolution() {
        for (spec, activation) in [
            (ConvSpec::same(4, 6, 3), Activation::Relu),
            (
                ConvSpec::same(4, 3, 1).with_bias(),
                Activation::Elu { alpha: 1.0 },
            ),
        ] {
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, 5, DType::F64, &Device::Cpu);
            let unit = BnActConv::new(
                &spec,
                activation,
                WeightInit::KaimingNormal,
                0.5,
                vb.pp("bn"),
                vb.pp("conv"),
            )
            .unwrap();
            {
                let data = varmap.data().lock().unwrap();
                let gamma = crate::rng::seeded_randn(spec.in_channels, 7).unwrap();
                let gamma = gamma
                    .to_dtype(DType::F64)
                    .unwrap()
                    .affine(0.3, 1.0)
                    .unwrap();
                data["bn.weight"].set(&gamma).unwrap();
                let beta = crate::rng::seeded_randn(spec.in_channels, 8).unwrap();
                data["bn.bias"]
                    .set(&beta.to_dtype(DType::F64).unwrap())
                    .unwrap();
            }
            let xs = crate::rng::seeded_randn((2, spec.in_channels, 5, 5), 31).unwrap();
            let xs = xs.to_dtype(DType::F64).unwrap().affine(1.5, 0.2).unwrap();
            let xs = Var::from_tensor(&xs).unwrap();
            assert_fused_equals_plain(
                &format!("{spec:?} {activation:?}"),
                &varmap,
                &xs,
                || unit.forward_t(&xs, true).unwrap(),
                || {
                    let normed = unit.bn.forward_activated(&xs, true, activation).unwrap();
                    unit.conv.forward(&normed).unwrap()
                },
            );
        }
    }

    #[test]
    fn evaluation_with_plain_weights_records_no_graph() {
        // Inference builds models from detached weights; the running statistics are variables
        // of the norm, and folding them in must not make the output track them (the graph would
        // keep every activation of the forward pass alive).
        let spec = ConvSpec::same(3, 8, 3);
        let varmap = VarMap::new();
        trained_unit(&spec, &varmap);
        let tensors: std::collections::HashMap<String, Tensor> = (varmap.data().lock().unwrap())
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F64, &Device::Cpu);
        let unit = ConvBn::new(
            &spec,
            WeightInit::KaimingNormal,
            BN_MOMENTUM,
            vb.pp("conv"),
            vb.pp("bn"),
        )
        .unwrap();
        let xs = crate::rng::seeded_randn((2, 3, 6, 6), 1).unwrap();
        let ys = unit
            .forward_activated(&xs.to_dtype(DType::F64).unwrap(), false, Activation::Relu)
            .unwrap();
        assert!(!ys.track_op());
    }

    #[test]
    fn zero_channels_are_refused() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let err = Conv2d::new(&ConvSpec::same(0, 4, 3), WeightInit::KaimingNormal, vb)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`in_channels`"), "{err}");
    }
}
