//! DrNIN against a faithful PyTorch DrNIN: logits, class maps, one step's gradients and the
//! batch-norm running statistics after the step, in eval mode (float32) and in training mode
//! with batch statistics (float64) (fixtures: `testdata/gen_drnin_golden.py`).

use std::path::PathBuf;

use nin_model_drnin::{Config, DrNin};
use nin_testkit::check_golden_fixture;

#[test]
fn reduced_drnin_matches_pytorch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/drnin_golden.safetensors");
    let cases = check_golden_fixture::<Config>(&path, 1e-4, |cfg, vb| {
        Box::new(DrNin::new(cfg, vb).expect("the model builds from the fixture's config"))
    });
    assert_eq!(cases.len(), 3);
    for case in &cases {
        // 4 blocks × 3 conv + BN units, 2 projections, the head: 28 + 4 + 2 parameters, and
        // running mean and variance of 14 norms.
        assert_eq!(
            (case.n_grads, case.n_buffers),
            (2 * 14 + 14 + 2, 2 * 14),
            "{}",
            case.name
        );
    }
}
