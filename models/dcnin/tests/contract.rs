//! The zoo's contract for DcNIN: shapes of logits and class maps, batch-norm statistics that
//! move only in training mode, and dropout only in training mode.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use nin_layers::{seeded_var_builder, ClassMapModel};
use nin_model_dcnin::{Config, DcNin};
use nin_testkit::{
    check_batch_norm_moves_only_in_training, check_class_map_contract,
    check_dropout_only_in_training,
};

fn build(cfg: &Config) -> (DcNin, VarMap) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
    let model = DcNin::new(cfg, vb).expect("the configuration builds");
    (model, varmap)
}

#[test]
fn logits_and_class_maps_have_the_contract_shapes() {
    check_class_map_contract(|num_classes| {
        Box::new(build(&Config::dcnin_s(num_classes)).0) as Box<dyn ClassMapModel>
    });
}

#[test]
fn batch_norm_statistics_change_only_in_training_mode() {
    let (model, varmap) = build(&Config {
        growth: 4,
        units: [2, 2, 2],
        ..Config::dcnin_s(10)
    });
    // 6 units × 2 norms, 2 transitions, the head: mean and variance each.
    check_batch_norm_moves_only_in_training(&model, &varmap, 2 * 15);
}

#[test]
fn dropout_acts_only_in_training_mode() {
    check_dropout_only_in_training(
        &build(&Config {
            growth: 4,
            units: [1, 1, 1],
            dropout: 0.5,
            ..Config::dcnin_s(10)
        })
        .0,
    );
}
