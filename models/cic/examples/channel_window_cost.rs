//! What the channel-window convolution costs next to a dense convolution of the same shape:
//! forward and forward + backward (input, weight and bias gradients), NIN-sized layers.
//!
//! Run with `cargo run --release -p nin-model-cic --example channel_window_cost`; set
//! `CANDLE_BASELINE=1` to time candle's own convolution too (slow).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarMap;
use nin_layers::{conv2d, seeded_randn, seeded_var_builder, ConvOptions, WeightInit};
use nin_model_cic::{ChannelWindowConfig, ChannelWindowConv};

const BATCH: usize = 32;
const CHANNELS: usize = 192;
const WINDOW: usize = 48;
const REPS: usize = 7;

/// Median wall time of `f` over `REPS` runs after one warm-up.
fn median(mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[REPS / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let dev = Device::Cpu;
    let baseline = std::env::var_os("CANDLE_BASELINE").is_some();
    println!(
        "batch {BATCH}, {CHANNELS}→{CHANNELS}, window {WINDOW}, stride 1, 'same' padding; \
         median of {REPS}, ms; {} CPU threads",
        rayon_threads()
    );
    println!(
        "| side | k | dense fwd | window fwd | dense fwd+bwd | window fwd+bwd | ratio fwd+bwd | gather fwd+bwd |{}",
        if baseline { " candle fwd+bwd |" } else { "" }
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- |{}",
        if baseline { " --- |" } else { "" }
    );
    for side in [16, 8] {
        for k in [1, 3, 5] {
            let pad = k / 2;
            let xs =
                Var::from_tensor(&seeded_randn((BATCH, CHANNELS, side, side), 0).unwrap()).unwrap();
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, 0, DType::F32, &dev);
            let shape = [CHANNELS, CHANNELS, k, k];
            let w_dense = vb
                .get_with_hints(
                    &shape,
                    "dense.weight",
                    WeightInit::KaimingNormal.hint(&shape),
                )
                .unwrap();
            let b_dense = vb.get(CHANNELS, "dense.bias").unwrap();
            let window = ChannelWindowConv::new(
                ChannelWindowConfig {
                    in_channels: CHANNELS,
                    out_channels: CHANNELS,
                    window: WINDOW,
                    kernel: k,
                    stride: 1,
                    padding: pad,
                },
                WeightInit::KaimingNormal,
                vb.pp("window"),
            )
            .unwrap();
            let opts = ConvOptions {
                stride: 1,
                padding: pad,
                relu: false,
            };
            let dense = || conv2d(xs.as_tensor(), &w_dense, Some(&b_dense), opts).unwrap();
            let windowed = || window.forward(xs.as_tensor()).unwrap();
            let backward = |ys: Tensor| {
                let grads = ys.sum_all().unwrap().backward().unwrap();
                assert!(grads.get(xs.as_tensor()).is_some());
            };
            let d_fwd = median(|| drop(dense()));
            let w_fwd = median(|| drop(windowed()));
            let d_all = median(|| backward(dense()));
            let w_all = median(|| backward(windowed()));
            // The gather of the dense weight and its scatter-add backward, alone.
            let gather = median(|| {
                let grads = window
                    .dense_weight()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                assert!(grads.get(window.weight()).is_some());
            });
            let candle = if baseline {
                let t = median(|| {
                    backward(
                        xs.as_tensor()
                            .conv2d(&w_dense, pad, 1, 1, 1)
                            .unwrap()
                            .broadcast_add(&b_dense.reshape((1, (), 1, 1)).unwrap())
                            .unwrap(),
                    )
                });
                format!(" {:.1} |", ms(t))
            } else {
                String::new()
            };
            println!(
                "| {side}×{side} | {k} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |{candle}",
                ms(d_fwd),
                ms(w_fwd),
                ms(d_all),
                ms(w_all),
                w_all.as_secs_f64() / d_all.as_secs_f64(),
                ms(gather)
            );
        }
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
