//! Limits on what a configuration may ask for, checked before a model is built: `model_args`
//! come from `config.json` files and `--model-args`, and a width of 10^9 would otherwise abort
//! the process on a multi-terabyte allocation instead of failing with a message.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::registry::ModelInfo;

/// The largest integer any field of `model_args` may hold (widths, class counts, kernel sizes):
/// far above every preset, small enough that products of a few of them cannot overflow.
pub const MAX_ARG: u64 = 1 << 16;

/// The most parameters a model of the zoo may have (4 GiB of float32 weights).
pub const MAX_PARAMS: usize = 1 << 30;

/// Refuses `model_args` with an integer (at any depth) above [`MAX_ARG`], naming its field.
pub fn check_args(model: &str, args: &Value) -> Result<()> {
    fn walk(path: &str, value: &Value) -> Option<(String, String)> {
        match value {
            Value::Number(n) if n.as_u64().is_none_or(|v| v > MAX_ARG) && !n.is_f64() => {
                Some((path.to_string(), n.to_string()))
            }
            Value::Number(n)
                if n.as_f64()
                    .is_some_and(|v| !v.is_finite() || v.abs() > MAX_ARG as f64) =>
            {
                Some((path.to_string(), n.to_string()))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(&format!("{path}[{i}]"), v)),
            Value::Object(fields) => fields.iter().find_map(|(k, v)| {
                walk(
                    &if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    },
                    v,
                )
            }),
            _ => None,
        }
    }
    match walk("", args) {
        Some((field, got)) => Err(Error::BadArgs {
            model: model.to_string(),
            reason: format!("`{field}` is {got}, expected a whole number from 0 to {MAX_ARG}"),
        }),
        None => Ok(()),
    }
}

/// Refuses a configuration whose model would be larger than [`MAX_PARAMS`].
pub fn check_size(model: &str, info: &ModelInfo) -> Result<()> {
    if info.param_count > MAX_PARAMS {
        return Err(Error::BadArgs {
            model: model.to_string(),
            reason: format!(
                "{} parameters, more than the {MAX_PARAMS} a model of the zoo may have",
                info.param_count
            ),
        });
    }
    Ok(())
}

/// The most bytes one feature map of one image may take: the widest layer (bounded by the
/// largest integer of `model_args`) times the input's pixels, in float32.
pub const MAX_FEATURE_MAP_BYTES: u64 = 1 << 30;

/// Refuses an input size that would make one image's widest feature map larger than
/// [`MAX_FEATURE_MAP_BYTES`] for a model configured by `args`.
pub fn check_input_size(model: &str, args: &Value, height: usize, width: usize) -> Result<()> {
    fn largest(value: &Value) -> u64 {
        match value {
            Value::Number(n) => n.as_u64().unwrap_or(0),
            Value::Array(items) => items.iter().map(largest).max().unwrap_or(0),
            Value::Object(fields) => fields.values().map(largest).max().unwrap_or(0),
            _ => 0,
        }
    }
    let bytes = largest(args)
        .max(1)
        .saturating_mul(height as u64)
        .saturating_mul(width as u64)
        .saturating_mul(4);
    if bytes > MAX_FEATURE_MAP_BYTES {
        return Err(Error::BadArgs {
            model: model.to_string(),
            reason: format!(
                "an input of {height}×{width} would need {bytes} bytes for one feature map of one image, \
                 more than the {MAX_FEATURE_MAP_BYTES} allowed"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_or_negative_fields_are_named() {
        let ok = serde_json::json!({"mlpconv1": [192, 160, 96], "dropout": 0.5, "pool2": "avg"});
        check_args("nin", &ok).unwrap();
        for (args, field) in [
            (
                serde_json::json!({"mlpconv1": [192, 1_000_000_000u64, 96]}),
                "mlpconv1[1]",
            ),
            (serde_json::json!({"num_classes": -3}), "num_classes"),
            (serde_json::json!({"a": {"b": 1e300}}), "a.b"),
        ] {
            let err = check_args("nin", &args).unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{err}");
        }
    }
}
