//! The zoo's contract for CiC: shapes of logits and class maps, batch-norm statistics that
//! move only in training mode, and dropout only in training mode.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use nin_layers::{seeded_var_builder, ClassMapModel};
use nin_model_cic::{Cic, Config};
use nin_testkit::{
    check_batch_norm_moves_only_in_training, check_class_map_contract,
    check_dropout_only_in_training,
};

fn build(cfg: &Config) -> (Cic, VarMap) {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
    let model = Cic::new(cfg, vb).expect("the configuration builds");
    (model, varmap)
}

#[test]
fn logits_and_class_maps_have_the_contract_shapes() {
    check_class_map_contract(|num_classes| {
        Box::new(build(&Config::cic_1d(num_classes)).0) as Box<dyn ClassMapModel>
    });
}

#[test]
fn batch_norm_statistics_change_only_in_training_mode() {
    let (model, varmap) = build(&Config {
        mlpconv1: [16, 16, 16],
        mlpconv2: [16, 16, 16],
        mlpconv3: [16, 16],
        window: 8,
        batch_norm: true,
        ..Config::cic_3d(10)
    });
    // a norm after each of the 9 convolutions, mean and variance each.
    check_batch_norm_moves_only_in_training(&model, &varmap, 2 * 9);
}

#[test]
fn dropout_acts_only_in_training_mode() {
    check_dropout_only_in_training(
        &build(&Config {
            mlpconv1: [16, 16, 16],
            mlpconv2: [16, 16, 16],
            mlpconv3: [16, 16],
            window: 8,
            ..Config::cic_1d(10)
        })
        .0,
    );
}
