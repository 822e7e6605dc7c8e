//! The training loss (cross-entropy with PyTorch's label smoothing) as a differentiable candle
//! expression, and the top-k helpers that score logits against labels.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};

/// Mean cross-entropy of `logits` `[N, C]` against `labels` `[N]` (u32), with label smoothing
/// `eps` as PyTorch defines it: the target is `(1 − eps)` on the label plus `eps / C` on every
/// class, so `loss_i = (1 − eps)·(−log p_i[y_i]) + eps·mean_c(−log p_i[c])`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    if labels.dims() != [n] {
        return Err(Error::invalid(
            "loss",
            "labels",
            format!(
                "expected shape [{n}] to match logits [{n}, {c}], got {:?}",
                labels.dims()
            ),
        ));
    }
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(Error::invalid(
            "loss",
            "label_smoothing",
            format!("must be in [0, 1), got {label_smoothing}"),
        ));
    }
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let idx = labels.to_dtype(DType::U32)?.unsqueeze(1)?;
    let nll = logp.gather(&idx, 1)?.squeeze(1)?.neg()?;
    let per_sample = if label_smoothing == 0.0 {
        nll
    } else {
        let smooth = logp.mean(1)?.neg()?;
        (nll.affine(1.0 - label_smoothing, 0.0)? + smooth.affine(label_smoothing, 0.0)?)?
    };
    Ok(per_sample.mean_all()?)
}

/// The rank of each sample's label among its logits: 0 when the label has the largest logit.
/// Ties go to the lower class index, so rank 0 agrees with [`argmax`].
pub fn label_ranks(logits: &[f32], n_classes: usize, labels: &[u32]) -> Vec<usize> {
    logits
        .chunks(n_classes.max(1))
        .zip(labels)
        .map(|(row, &y)| {
            let y = y as usize;
            let ly = row.get(y).copied().unwrap_or(f32::NEG_INFINITY);
            row.iter()
                .enumerate()
                .filter(|&(j, &l)| l > ly || (l == ly && j < y))
                .count()
        })
        .collect()
}

/// The index of each row's largest logit (the first one on ties).
pub fn argmax(logits: &[f32], n_classes: usize) -> Vec<u32> {
    logits
        .chunks(n_classes.max(1))
        .map(|row| {
            let mut best = 0;
            for (j, &l) in row.iter().enumerate() {
                if l > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

/// Number of samples whose label is among the `k` largest logits.
pub fn topk_correct(logits: &[f32], n_classes: usize, labels: &[u32], k: usize) -> usize {
    label_ranks(logits, n_classes, labels)
        .into_iter()
        .filter(|&r| r < k)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn logits() -> Tensor {
        Tensor::new(&[[2.0f32, 0.0, -1.0], [0.5, 0.5, 3.0]], &Device::Cpu).unwrap()
    }

    /// log-softmax by hand, in f64.
    fn logp(row: &[f64]) -> Vec<f64> {
        let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
        row.iter().map(|x| x - lse).collect()
    }

    #[test]
    fn cross_entropy_matches_hand_computed_values() {
        let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let r0 = logp(&[2.0, 0.0, -1.0]);
        let r1 = logp(&[0.5, 0.5, 3.0]);
        let plain = -(r0[0] + r1[1]) / 2.0;
        let got = cross_entropy(&logits(), &labels, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - plain).abs() < 1e-6, "{got} vs {plain}");
        let eps = 0.1;
        let smooth =
            |r: &[f64], y: usize| (1.0 - eps) * -r[y] + eps * -(r.iter().sum::<f64>() / 3.0);
        let want = (smooth(&r0, 0) + smooth(&r1, 1)) / 2.0;
        let got = cross_entropy(&logits(), &labels, eps)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn cross_entropy_gradient_is_softmax_minus_target() {
        let x = Var::from_tensor(&logits()).unwrap();
        let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let loss = cross_entropy(x.as_tensor(), &labels, 0.0).unwrap();
        let g = loss.backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let p0: Vec<f64> = logp(&[2.0, 0.0, -1.0]).iter().map(|v| v.exp()).collect();
        let want0 = [(p0[0] - 1.0) / 2.0, p0[1] / 2.0, p0[2] / 2.0];
        for (a, b) in g[0].iter().zip(want0) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn cross_entropy_rejects_mismatched_labels() {
        let labels = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        let err = cross_entropy(&logits(), &labels, 0.0).unwrap_err();
        assert!(err.to_string().contains("expected shape [2]"), "{err}");
    }

    #[test]
    fn ranks_and_topk() {
        let l = [2.0f32, 0.0, -1.0, 0.5, 0.5, 3.0];
        assert_eq!(label_ranks(&l, 3, &[0, 1]), vec![0, 2]);
        assert_eq!(label_ranks(&l, 3, &[2, 0]), vec![2, 1]);
        assert_eq!(argmax(&l, 3), vec![0, 2]);
        assert_eq!(topk_correct(&l, 3, &[0, 1], 1), 1);
        assert_eq!(topk_correct(&l, 3, &[0, 1], 3), 2);
    }
}
