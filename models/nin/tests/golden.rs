//! NIN against a faithful PyTorch NIN: logits, class maps, one step's gradients and, with batch
//! norm in training mode, the updated running statistics (fixtures: `testdata/gen_nin_golden.py`).

use std::path::{Path, PathBuf};

use nin_model_nin::{Config, Nin};
use nin_testkit::{check_golden_fixture, GoldenCase};

fn check(path: &Path) -> Vec<GoldenCase> {
    let cases = check_golden_fixture::<Config>(path, 1e-4, |cfg, vb| {
        Box::new(Nin::new(cfg, vb).expect("NIN builds from the fixture's config"))
    });
    for case in &cases {
        assert!(
            case.n_grads >= 18,
            "{}: only {} gradients compared",
            case.name,
            case.n_grads
        );
    }
    cases
}

#[test]
fn reduced_width_nin_matches_pytorch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/nin_golden.safetensors");
    assert_eq!(check(&path).len(), 4);
}

/// The full-width fixture (16 MB) is not committed: write it with
/// `gen_nin_golden.py --full PATH` and run with `NIN_FULL_GOLDEN=PATH`.
#[test]
fn full_width_nin_matches_pytorch_when_fixture_given() {
    match std::env::var_os("NIN_FULL_GOLDEN") {
        Some(path) => assert_eq!(check(Path::new(&path)).len(), 2),
        None => {
            eprintln!("skipping: set NIN_FULL_GOLDEN to a fixture from gen_nin_golden.py --full")
        }
    }
}
