//! The pretrained weights this repository ships (`pretrained/<tag>/`, listed in
//! `nin_zoo::PRETRAINED`) load by their tag as a user types it, and still score what the
//! registry says they measured: a tag whose weights, config or preprocessing drifted from the
//! run that made them fails here rather than in a user's hands.

use crate::train::{cifar10_archive, nin_ok, TestResult};

/// Images of the test split scored per tag: enough to tell a working model from a broken one
/// (a 1,000-image sample of an 80 % model has a standard deviation of about 1.3 points), few
/// enough to stay quick.
const SAMPLE: usize = 1000;

/// How far the sample's top-1 may fall below the registry's full-test-set figure (about four
/// standard deviations of the sample).
const TOLERANCE_POINTS: f64 = 5.0;

#[test]
fn every_shipped_tag_loads_by_name_and_scores_what_the_registry_says() -> TestResult {
    let shipped: Vec<_> = nin_zoo::PRETRAINED.iter().filter(|t| t.in_repo).collect();
    assert!(
        !shipped.is_empty(),
        "the repository ships pretrained weights (pretrained/), so the registry lists them"
    );
    let Some(archive) = cifar10_archive() else {
        eprintln!("skipping: ../shared/data/cifar-10-binary.tar.gz is absent");
        return Ok(());
    };
    let archive = archive.display().to_string();
    let listed = nin_ok(&["list", "--pretrained"])?;
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let sample = SAMPLE.to_string();
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
            top1 >= tag.top1 - TOLERANCE_POINTS && top1 <= tag.top1 + TOLERANCE_POINTS,
            "{}: {top1:.2} % on the first {SAMPLE} test images, the registry says {:.2} % on all",
            tag.name,
            tag.top1
        );
        assert_eq!(report["images"].as_u64(), Some(SAMPLE as u64));
    }
    Ok(())
}
