//! The pretrained weights this repository ships (`pretrained/<tag>/`, listed in
//! `nin_zoo::PRETRAINED`) load by their tag as a user types it, and still score what the
//! registry says they measured on a fixed slice of the test set: a tag whose weights, config or
//! preprocessing drifted from the run that made them fails here rather than in a user's hands.

use crate::train::{cifar10_archive_arg, nin_ok, TestResult};

/// How far the slice's top-1 may move from the registry's `check_top1`: two images of 1,000.
/// The same weights score the same everywhere but for an image whose two best logits are
/// within rounding of each other, which a different processor's order of summation can swap.
const TOLERANCE_POINTS: f64 = 0.2;

#[test]
fn every_shipped_tag_loads_by_name_and_scores_what_the_registry_says() -> TestResult {
    let shipped: Vec<_> = nin_zoo::PRETRAINED.iter().filter(|t| t.in_repo).collect();
    assert!(
        !shipped.is_empty(),
        "the repository ships pretrained weights (pretrained/), so the registry lists them"
    );
    let Some(archive) = cifar10_archive_arg() else {
        return Ok(());
    };
    let listed = nin_ok(&["list", "--pretrained"])?;
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let sample = nin_zoo::CHECK_IMAGES.to_string();
    for tag in shipped {
        assert!(listed.contains(tag.name), "nin list --pretrained: {listed}");
        if tag.dataset != "cifar10" {
            continue;
        }
        let out = nin_ok(&[
            "eval",
            "--model",
            tag.name,
            "--data",
            &archive,
            "--limit-eval",
            &sample,
            "--json",
        ])?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let top1 = report["top1"].as_f64().ok_or("eval --json has no top1")?;
        assert!(
            (top1 - tag.check_top1).abs() <= TOLERANCE_POINTS,
            "{}: {top1:.2} % on the first {sample} test images, the registry says {:.2} %",
            tag.name,
            tag.check_top1
        );
        assert_eq!(
            report["images"].as_u64(),
            Some(nin_zoo::CHECK_IMAGES as u64)
        );
    }
    Ok(())
}
