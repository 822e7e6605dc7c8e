//! The zoo's contract for DrNIN: shapes of logits and class maps, batch-norm statistics that
//! move only in training mode, and dropout only in training mode.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use nin_layers::{seeded_var_builder, ClassMapModel};
use nin_model_drnin::{Config, DrNin};
use nin_testkit::{
    check_batch_norm_moves_only_in_training, check_class_map_contract,
    check_dropout_only_in_training,
};

fn build(cfg: &Config) -> (DrNin, VarMap) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
    let model = DrNin::new(cfg, vb).expect("the configuration builds");
    (model, varmap)
}

#[test]
fn logits_and_class_maps_have_the_contract_shapes() {
    check_class_map_contract(|num_classes| {
        Box::new(build(&Config::drnin_l3(num_classes)).0) as Box<dyn ClassMapModel>
    });
}

#[test]
fn batch_norm_statistics_change_only_in_training_mode() {
    let (model, varmap) = build(&Config {
        widths: [8, 8, 16],
        blocks: [2, 1, 1],
        ..Config::drnin_l4(10)
    });
    // 4 blocks × 3 norms + 2 projection norms, mean and variance each.
    check_batch_norm_moves_only_in_training(&model, &varmap, 2 * 14);
}

#[test]
fn dropout_acts_only_in_training_mode() {
    check_dropout_only_in_training(
        &build(&Config {
            widths: [8, 8, 8],
            ..Config::drnin_l3(10)
        })
        .0,
    );
}
