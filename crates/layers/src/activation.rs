//! The nonlinearity a layer applies after a convolution or a batch norm, shared by the blocks
//! and by batch norm, which fuses it into its own op.

use candle_core::Tensor;

/// The nonlinearity after a convolution (and its batch norm).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Activation {
    /// max(0, x).
    Relu,
    /// x for x > 0, α(eˣ − 1) otherwise.
    Elu {
        /// Saturation value for negative inputs.
        alpha: f64,
    },
    /// No nonlinearity.
    Identity,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Relu => xs.relu(),
            Self::Elu { alpha } => crate::elu::elu(xs, alpha),
            Self::Identity => Ok(xs.clone()),
        }
    }
}
