//! CiC against a faithful PyTorch CiC whose channel-window convolution is computed one output
//! channel at a time: logits, class maps, one step's gradients (compact window weights
//! included) and, with batch norm in training mode, the updated running statistics (fixture:
//! `testdata/gen_cic_golden.py`).

use std::path::PathBuf;

use nin_model_cic::{Cic, Config};
use nin_testkit::check_golden_fixture;

#[test]
fn reduced_width_cic_matches_pytorch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/cic_golden.safetensors");
    let cases = check_golden_fixture::<Config>(&path, 1e-4, |cfg, vb| {
        Box::new(Cic::new(cfg, vb).expect("CiC builds from the fixture's config"))
    });
    assert_eq!(cases.len(), 3);
    for case in &cases {
        assert!(
            case.n_grads >= 18,
            "{}: only {} gradients compared",
            case.name,
            case.n_grads
        );
    }
}
