//! Criterion benchmarks of the layers a NIN training step spends its time in: every convolution
//! shape of NIN at batch 32, forward and forward + backward, through our GEMM-based op and
//! through candle's own `conv2d`; CiC's channel-window layers, banded against the dense
//! convolution of their gathered weight; both pooling layers; batch norm with its fused
//! activations and ELU (the element-wise kernels `cpu::with_simd` compiles for the processor's
//! vectors), a convolution with its norm folded in for evaluation against the two ops; and one
//! whole training step.
//! Run at the thread count you compare with, and with the allocator settings `nin` sets for
//! itself (`crates/cli/src/alloc.rs`; without them the large layers time glibc returning and
//! refaulting memory): `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824
//! RAYON_NUM_THREADS=2 cargo bench -p nin-benches --bench layers`. The numbers behind
//! `docs/performance.md` come from `nin bench`; this suite says which layer moved.
#![allow(clippy::unwrap_used)]
#![forbid(unsafe_code)]

use std::time::Duration;

use candle_core::Module;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use nin_format::LrMultipliers;
use nin_layers::{
    batch_norm_2d, conv2d, elu, pool2d, Activation, Conv2d, ConvBn, ConvOptions, ConvSpec,
    Pool2dConfig, PoolKind, WeightInit, BN_MOMENTUM,
};
use nin_model_cic::{ChannelWindowConfig, ChannelWindowConv};
use nin_train::optim::{named_vars, trainable_params};
use nin_train::{Optimizer, Sgd};

const BATCH: usize = 32;

/// (name, C_in, C_out, k, padding, side) of every NIN convolution (`models.md`).
const NIN_CONVS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("conv1_5x5_3-192_32", 3, 192, 5, 2, 32),
    ("mlp1a_1x1_192-160_32", 192, 160, 1, 0, 32),
    ("mlp1b_1x1_160-96_32", 160, 96, 1, 0, 32),
    ("conv2_5x5_96-192_16", 96, 192, 5, 2, 16),
    ("mlp2_1x1_192-192_16", 192, 192, 1, 0, 16),
    ("conv3_3x3_192-192_8", 192, 192, 3, 1, 8),
    ("mlp3a_1x1_192-192_8", 192, 192, 1, 0, 8),
    ("mlp3b_1x1_192-10_8", 192, 10, 1, 0, 8),
];

/// Standard normal values from a fixed seed, so that every run times the same numbers.
fn randn(dims: &[usize]) -> Tensor {
    nin_layers::seeded_randn(dims, 0).unwrap()
}

/// Times each variant of one layer as `forward/<label>` (the closure) and `train/<label>` (it,
/// then the backward of its output's sum), all forwards first.
fn forward_and_train(
    group: &mut BenchmarkGroup<'_, WallTime>,
    layer: &str,
    variants: &[(&str, &dyn Fn() -> Tensor)],
) {
    for (label, run) in variants {
        group.bench_function(
            BenchmarkId::new(format!("forward/{label}"), layer),
            |bench| bench.iter(run),
        );
    }
    for (label, run) in variants {
        group.bench_function(BenchmarkId::new(format!("train/{label}"), layer), |bench| {
            bench.iter(|| run().sum_all().unwrap().backward().unwrap())
        });
    }
}

fn convolutions(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for &(name, c_in, c_out, k, padding, side) in NIN_CONVS {
        let macs = (BATCH * side * side * c_out * c_in * k * k) as u64;
        group.throughput(Throughput::Elements(macs));
        // The first layer's input is the image: no input gradient, as in training.
        let first = c_in == 3;
        let x_plain = randn(&[BATCH, c_in, side, side]);
        let x = Var::from_tensor(&x_plain).unwrap();
        let x = if first {
            x_plain
        } else {
            x.as_tensor().clone()
        };
        let w = Var::from_tensor(&(randn(&[c_out, c_in, k, k]) * 0.05).unwrap()).unwrap();
        let b = Var::zeros(c_out, DType::F32, &Device::Cpu).unwrap();
        let opts = ConvOptions {
            stride: 1,
            padding,
            relu: true,
        };
        let ours = || conv2d(&x, &w, Some(&b), opts).unwrap();
        let candle = || {
            x.conv2d(&w, padding, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, c_out, 1, 1)).unwrap())
                .unwrap()
                .relu()
                .unwrap()
        };
        forward_and_train(&mut group, name, &[("ours", &ours), ("candle", &candle)]);
    }
    group.finish();
}

/// (name, C_in, C_out, k, padding, side) of CiC's channel-window layers (window 48): the 1×1
/// layers of `cic_1d`, and the k×k ones `cic_3d` adds.
const CIC_WINDOW_CONVS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("mlp1a_1x1_192-160_32", 192, 160, 1, 0, 32),
    ("mlp1b_1x1_160-96_32", 160, 96, 1, 0, 32),
    ("conv2_5x5_96-192_16", 96, 192, 5, 2, 16),
    ("mlp2_1x1_192-192_16", 192, 192, 1, 0, 16),
    ("conv3_3x3_192-192_8", 192, 192, 3, 1, 8),
];

fn window_convolutions(c: &mut Criterion) {
    let mut group = c.benchmark_group("window_conv");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for &(name, in_channels, out_channels, kernel, padding, side) in CIC_WINDOW_CONVS {
        let cfg = ChannelWindowConfig {
            in_channels,
            out_channels,
            window: 48,
            kernel,
            stride: 1,
            padding,
        };
        // The layer's own multiply-accumulates, so that banded and dense compare per useful MAC.
        group.throughput(Throughput::Elements(BATCH as u64 * cfg.macs(side, side)));
        let varmap = candle_nn::VarMap::new();
        let vb = nin_layers::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let layer = ChannelWindowConv::new(cfg, WeightInit::KaimingNormal, vb).unwrap();
        let x = Var::from_tensor(&randn(&[BATCH, in_channels, side, side])).unwrap();
        let opts = ConvOptions {
            stride: 1,
            padding,
            relu: true,
        };
        let banded = || layer.forward_relu(&x).unwrap();
        let dense =
            || conv2d(&x, &layer.dense_weight().unwrap(), Some(layer.bias()), opts).unwrap();
        forward_and_train(&mut group, name, &[("banded", &banded), ("dense", &dense)]);
    }
    group.finish();
}

fn pooling(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for (name, kind, dims) in [
        ("max3s2_96x32", PoolKind::Max, [BATCH, 96, 32, 32]),
        ("avg3s2_192x16", PoolKind::Avg, [BATCH, 192, 16, 16]),
    ] {
        let x = Var::from_tensor(&randn(&dims)).unwrap();
        let cfg = Pool2dConfig::nin(kind);
        group.bench_function(BenchmarkId::new("forward", name), |bench| {
            bench.iter(|| pool2d(&x, &cfg).unwrap())
        });
        group.bench_function(BenchmarkId::new("train", name), |bench| {
            bench.iter(|| {
                pool2d(&x, &cfg)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn norms(c: &mut Criterion) {
    let mut group = c.benchmark_group("norm");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    let dims = [BATCH, 192, 32, 32];
    let x = Var::from_tensor(&randn(&dims)).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let bn = batch_norm_2d(192, BN_MOMENTUM, vb.pp("bn")).unwrap();
    let layer = "192x32";
    let bn_relu = || bn.forward_activated(&x, true, Activation::Relu).unwrap();
    let bn_elu = || {
        bn.forward_activated(&x, true, Activation::Elu { alpha: 1.0 })
            .unwrap()
    };
    let elu_alone = || elu(&x, 1.0).unwrap();
    forward_and_train(
        &mut group,
        layer,
        &[
            ("bn_relu", &bn_relu),
            ("bn_elu", &bn_elu),
            ("elu", &elu_alone),
        ],
    );
    // Evaluation of a 1×1 192 → 160 convolution and its norm: folded into one op
    // (`ConvBn`), against the convolution then the norm's own op, on the same variables.
    let spec = ConvSpec::same(192, 160, 1);
    let eval_vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let unit = ConvBn::new(
        &spec,
        WeightInit::KaimingNormal,
        BN_MOMENTUM,
        eval_vb.pp("unit.conv"),
        eval_vb.pp("unit.bn"),
    )
    .unwrap();
    let conv = Conv2d::new(&spec, WeightInit::KaimingNormal, eval_vb.pp("unit.conv")).unwrap();
    let norm = batch_norm_2d(160, BN_MOMENTUM, eval_vb.pp("unit.bn")).unwrap();
    let xs = randn(&dims);
    group.bench_function(
        BenchmarkId::new("eval/folded", "conv_bn_192-160x32"),
        |bench| {
            bench.iter(|| {
                unit.forward_activated(&xs, false, Activation::Relu)
                    .unwrap()
            })
        },
    );
    group.bench_function(
        BenchmarkId::new("eval/two_ops", "conv_bn_192-160x32"),
        |bench| {
            bench.iter(|| {
                let ys = conv.forward(&xs).unwrap();
                norm.forward_activated(&ys, false, Activation::Relu)
                    .unwrap()
            })
        },
    );
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let created = nin_zoo::create_model("nin", 10, None, 0, &Device::Cpu).unwrap();
    let params = trainable_params(
        &named_vars(&created.varmap),
        &LrMultipliers::default(),
        created.model.head_prefix(),
    );
    let mut opt = Sgd::new(params, 0.9, false, 5e-4).unwrap();
    let xs = randn(&[BATCH, 3, 32, 32]);
    let labels = Tensor::from_vec(
        (0..BATCH as u32).map(|i| i % 10).collect::<Vec<u32>>(),
        BATCH,
        &Device::Cpu,
    )
    .unwrap();
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("nin_b32", |bench| {
        bench.iter(|| {
            let logits = created.model.forward_t(&xs, true).unwrap();
            let loss = nin_train::cross_entropy(&logits, &labels, 0.0).unwrap();
            opt.step(&loss.backward().unwrap(), 0.01).unwrap();
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    convolutions,
    window_convolutions,
    pooling,
    norms,
    train_step
);
criterion_main!(benches);
