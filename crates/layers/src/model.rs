//! The contract every model of the zoo keeps, so the trainer, the CLI and the hub code can
//! drive any family without knowing which one it is, and the contract of every family's
//! configuration, so the zoo can build any family from its JSON arguments.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::gap::global_avg_pool;
use crate::rng::DropoutRng;

/// Side of the square images every model of the zoo is built for, and counts its
/// multiply-accumulates on.
pub const INPUT_SIZE: usize = 32;

/// A classifier that ends in one map per class followed by global average pooling.
pub trait ClassMapModel: Send + Sync {
    /// Logits `[N, C]` for inputs `[N, 3, H, W]`: the class maps' means. Dropout and batch-norm
    /// statistics act only when `train` is true.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(global_avg_pool(&self.class_maps(xs, train)?)?)
    }

    /// The class maps `[N, C, h, w]` just before global average pooling.
    fn class_maps(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor>;

    /// Number of classes `C`.
    fn num_classes(&self) -> usize;

    /// Name prefix of the final class layer (e.g. `mlpconv3.mlp.1`): the authors' recipe gives
    /// it a smaller learning rate.
    fn head_prefix(&self) -> &str;

    /// The generator behind the model's dropout; the trainer re-seeds it every step.
    fn dropout_rng(&self) -> &DropoutRng;

    /// Multiply-accumulates of one forward pass for one image.
    fn macs_per_image(&self) -> u64;
}

/// A family's serde configuration: what the zoo needs to build the family from JSON and report
/// its size without knowing which family it is.
pub trait ModelConfig: serde::Serialize + serde::de::DeserializeOwned + 'static {
    /// The model the configuration describes.
    type Model: ClassMapModel + 'static;

    /// Builds (or loads, depending on `vb`) the model.
    fn build(&self, vb: VarBuilder) -> Result<Self::Model>;

    /// Trainable parameters: convolution weights and biases, batch-norm scales and shifts.
    fn param_count(&self) -> usize;

    /// Multiply-accumulates of the convolutions for one [`INPUT_SIZE`]×[`INPUT_SIZE`] image.
    fn macs_per_image(&self) -> u64;
}

/// What a named variable is, which decides how optimisers treat it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    /// A convolution (or linear) weight: decayed.
    Weight,
    /// A convolution bias: never decayed; the paper recipe doubles its learning rate.
    Bias,
    /// A batch-norm scale or shift: trained, never decayed.
    Norm,
    /// Batch-norm running statistics: saved with the model, never trained.
    Buffer,
}

impl ParamRole {
    /// Classifies a variable by its PyTorch-style name and rank, the naming contract of every
    /// model in the zoo (`…running_mean`, 1-D `…weight` for norms, `…bias`).
    pub fn of(name: &str, rank: usize) -> Self {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        match leaf {
            "running_mean" | "running_var" | "num_batches_tracked" => Self::Buffer,
            "weight" if rank >= 2 => Self::Weight,
            "weight" => Self::Norm,
            "bias" if is_norm_bias(name) => Self::Norm,
            "bias" => Self::Bias,
            _ if rank >= 2 => Self::Weight,
            _ => Self::Bias,
        }
    }
}

/// Our norm layers live under a path segment `bn` (`mlpconv1.bn.0.bias`) or end in `norm`/`bn`,
/// or are numbered as PyTorch modules number them (`stage1.0.bn1.bias`, `norm2`).
fn is_norm_bias(name: &str) -> bool {
    name.split('.').any(|seg| {
        let base = seg.trim_end_matches(|c: char| c.is_ascii_digit());
        base == "bn" || base.ends_with("_bn") || base.ends_with("norm")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_naming_contract() {
        assert_eq!(ParamRole::of("mlpconv1.conv.weight", 4), ParamRole::Weight);
        assert_eq!(ParamRole::of("mlpconv1.conv.bias", 1), ParamRole::Bias);
        assert_eq!(ParamRole::of("mlpconv1.bn.0.weight", 1), ParamRole::Norm);
        assert_eq!(ParamRole::of("mlpconv1.bn.0.bias", 1), ParamRole::Norm);
        assert_eq!(ParamRole::of("stem.norm.running_var", 1), ParamRole::Buffer);
        assert_eq!(
            ParamRole::of("mlpconv1.bn.2.running_mean", 1),
            ParamRole::Buffer
        );
    }

    #[test]
    fn numbered_norms_are_norms() {
        assert_eq!(ParamRole::of("stage1.0.bn1.weight", 1), ParamRole::Norm);
        assert_eq!(ParamRole::of("stage1.0.bn2.bias", 1), ParamRole::Norm);
        assert_eq!(ParamRole::of("stage2.3.norm1.bias", 1), ParamRole::Norm);
        assert_eq!(
            ParamRole::of("stage1.0.bn3.running_mean", 1),
            ParamRole::Buffer
        );
        assert_eq!(ParamRole::of("stage1.0.conv1.weight", 4), ParamRole::Weight);
        assert_eq!(ParamRole::of("head.conv.bias", 1), ParamRole::Bias);
        assert_eq!(ParamRole::of("bnx.bias", 1), ParamRole::Bias);
    }
}
