//! DcNIN against a faithful PyTorch DcNIN: logits, class maps, one step's gradients and the
//! batch-norm running statistics after the step, in eval mode (float32) and in training mode
//! with batch statistics (float64) (fixtures: `testdata/gen_dcnin_golden.py`).

use std::path::PathBuf;

use nin_model_dcnin::{Config, DcNin};
use nin_testkit::check_golden_fixture;

#[test]
fn reduced_dcnin_matches_pytorch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/dcnin_golden.safetensors");
    let cases = check_golden_fixture::<Config>(&path, 1e-4, |cfg, vb| {
        Box::new(DcNin::new(cfg, vb).expect("the model builds from the fixture's config"))
    });
    assert_eq!(cases.len(), 2);
    for case in &cases {
        // Stem 1; 7 units × (2 convs + 2 norms × 2); 2 transitions × 3; head 4 parameters;
        // running mean and variance of 7 × 2 + 2 + 1 norms.
        assert_eq!(
            (case.n_grads, case.n_buffers),
            (1 + 7 * 6 + 2 * 3 + 4, 2 * 17),
            "{}",
            case.name
        );
    }
}
