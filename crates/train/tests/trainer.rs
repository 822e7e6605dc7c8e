//! End-to-end checks of the training loop on a tiny model and synthetic data: learning,
//! bit-exact reproducibility, exact resume after a crash, divergence handling and clean run
//! folders.

mod common;

use std::path::Path;

use common::{
    data, full_run, no_temp_files, recipe, run_config, weights, Recorder, Synthetic, Tiny,
};
use nin_format::{EpochRecord, RunConfig, Schedule};
use nin_layers::weights::load_weights;
use nin_train::{resume, train, Control, Error, EvalReport, Finish, NoProgress, Progress};

#[test]
fn loss_decreases_and_run_folder_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_config(recipe(6, 0.2), 1, None);
    let (rec, _) = full_run(dir.path(), &run).unwrap();
    let first = &rec.epochs[0];
    let last = rec.epochs.last().unwrap();
    assert!(
        last.train_loss < 0.7 * first.train_loss,
        "{first:?} → {last:?}"
    );
    assert!(last.eval_top1.unwrap() > 50.0, "{last:?}");

    // 6 epochs of 6 steps: the committed checkpoint is the last epoch's end, and only it.
    for file in [
        "config.json",
        "model.safetensors",
        "trainer_state.json",
        "run.json",
        "metrics.csv",
        "metrics.jsonl",
        "best/config.json",
        "best/model.safetensors",
        "checkpoints/step-000000036-epoch-0006/model.safetensors",
        "checkpoints/step-000000036-epoch-0006/optimizer.safetensors",
        "checkpoints/step-000000036-epoch-0006/trainer_state.json",
    ] {
        assert!(dir.path().join(file).is_file(), "missing {file}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        std::fs::read(
            dir.path()
                .join("checkpoints/step-000000036-epoch-0006/model.safetensors")
        )
        .unwrap()
    );
    no_temp_files(dir.path()).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert!(
        csv.starts_with("epoch,train_loss,train_top1,eval_loss,eval_top1,eval_top5,lr,seconds\n")
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"], "tiny");
    assert_eq!(config["num_classes"], 4);
    assert_eq!(config["model_args"]["width"], 8);
    assert_eq!(
        config["pretrained_cfg"]["input_size"],
        serde_json::json!([3, 8, 8])
    );
    let recorded = RunConfig::load(dir.path()).unwrap();
    assert_eq!(recorded.recipe, run.recipe);
    assert!(recorded.versions.contains_key("nin-train"));

    // The saved model loads into a fresh model, batch-norm statistics included.
    let (_, fresh) = Tiny::build(99).unwrap();
    load_weights(&dir.path().join("best/model.safetensors"), &fresh).unwrap();
    let names: Vec<String> = weights(&fresh)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        names.contains(&"body.bn.running_mean".to_string()),
        "{names:?}"
    );

    // A second `train` into the same folder is refused.
    let (model, varmap) = Tiny::build(1).unwrap();
    let (mut t, _) = data();
    let err = train(
        &model,
        &varmap,
        &run,
        &mut t,
        None,
        dir.path(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, Error::RunExists { .. }), "{err}");
}

#[test]
fn same_seed_gives_bit_identical_losses_and_weights() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let run = run_config(recipe(2, 0.1), 7, None);
    let (ra, wa) = full_run(a.path(), &run).unwrap();
    let (rb, wb) = full_run(b.path(), &run).unwrap();
    assert_eq!(
        ra.losses
            .iter()
            .map(|(_, l)| l.to_bits())
            .collect::<Vec<_>>(),
        rb.losses
            .iter()
            .map(|(_, l)| l.to_bits())
            .collect::<Vec<_>>()
    );
    assert_eq!(wa, wb);
    let (_, wc) = full_run(
        tempfile::tempdir().unwrap().path(),
        &run_config(recipe(2, 0.1), 8, None),
    )
    .unwrap();
    assert_ne!(wa, wc);
}

#[test]
fn resume_after_a_crash_ends_with_identical_weights() {
    let every = Some(4);
    let run = run_config(recipe(3, 0.1), 3, every);
    let reference_dir = tempfile::tempdir().unwrap();
    let (reference, reference_weights) = full_run(reference_dir.path(), &run).unwrap();

    // 6 steps per epoch: crash at global step 10 (mid-epoch 2, last checkpoint at step 8).
    let dir = tempfile::tempdir().unwrap();
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, mut e) = data();
    let mut crashing = Recorder {
        crash_after: Some(10),
        ..Default::default()
    };
    let out = train(
        &model,
        &varmap,
        &run,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut crashing,
    )
    .unwrap();
    assert_eq!(out.finish, Finish::Stopped);
    assert_eq!(crashing.checkpoints, vec![0, 4, 6, 8]);

    // A new process: fresh model, fresh data sources, rebuilt from run.json.
    let run_back = RunConfig::load(dir.path()).unwrap();
    let (model, varmap) = Tiny::build(run_back.seed).unwrap();
    let (mut t, mut e) = data();
    let mut resumed = Recorder::default();
    let out = resume(
        &model,
        &varmap,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut resumed,
    )
    .unwrap();
    assert_eq!(out.finish, Finish::Completed);
    assert_eq!(resumed.losses.first().map(|l| l.0), Some(9));
    let tail: Vec<(usize, u32)> = reference.losses[8..]
        .iter()
        .map(|&(s, l)| (s, l.to_bits()))
        .collect();
    let got: Vec<(usize, u32)> = resumed
        .losses
        .iter()
        .map(|&(s, l)| (s, l.to_bits()))
        .collect();
    assert_eq!(got, tail);
    assert_eq!(weights(&varmap).unwrap(), reference_weights);

    // The metrics tables agree with the uninterrupted run, apart from wall-clock seconds.
    let strip = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p.join("metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(strip(dir.path()), strip(reference_dir.path()));
    assert_eq!(out.state.history.len(), 3);
    no_temp_files(dir.path()).unwrap();

    // Resuming a finished run trains nothing and says so.
    let (model, varmap) = Tiny::build(run_back.seed).unwrap();
    let mut after = Recorder::default();
    let out = resume(
        &model,
        &varmap,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut after,
    )
    .unwrap();
    assert_eq!(out.finish, Finish::AlreadyFinished);
    assert!(after.losses.is_empty() && after.checkpoints.is_empty());
    assert_eq!(out.state.history.len(), 3);
    assert_eq!(weights(&varmap).unwrap(), reference_weights);
}

#[test]
fn resume_after_save_and_stop_at_an_epoch_boundary_with_adamw_and_plateau() {
    let mut r = recipe(3, 0.01);
    r.optimizer = nin_format::OptimizerConfig::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.05,
    };
    r.schedule = Schedule::ReduceOnPlateau {
        monitor: nin_format::Monitor::EvalTop1,
        factor: 0.5,
        patience: 0,
        threshold: 0.0,
        min_lr: 0.0,
    };
    let run = run_config(r, 11, None);
    let (_, reference) = full_run(tempfile::tempdir().unwrap().path(), &run).unwrap();

    struct StopAtEpoch;
    impl Progress for StopAtEpoch {
        fn on_epoch_end(&mut self, record: &EpochRecord, _: Option<&EvalReport>) -> Control {
            if record.epoch == 1 {
                Control::SaveAndStop
            } else {
                Control::Continue
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, mut e) = data();
    let out = train(
        &model,
        &varmap,
        &run,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut StopAtEpoch,
    )
    .unwrap();
    assert_eq!(out.finish, Finish::Stopped);
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, mut e) = data();
    resume(
        &model,
        &varmap,
        &mut t,
        Some(&mut e),
        dir.path(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(weights(&varmap).unwrap(), reference);
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = recipe(2, 1e30);
    r.schedule = Schedule::Constant;
    let run = run_config(r, 2, Some(1));
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, _) = data();
    let err = train(
        &model,
        &varmap,
        &run,
        &mut t,
        None,
        dir.path(),
        &mut NoProgress,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::NonFiniteLoss { .. } | Error::NonFiniteWeights { .. }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("non-finite") && msg.contains("last good checkpoint"),
        "{msg}"
    );

    // The checkpoint on disk is whole, finite and resumable.
    let (_, fresh) = Tiny::build(0).unwrap();
    load_weights(&dir.path().join("model.safetensors"), &fresh).unwrap();
    for (name, bits) in weights(&fresh).unwrap() {
        assert!(
            bits.iter().all(|b| f32::from_bits(*b).is_finite()),
            "{name}"
        );
    }
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let (mut t, _) = data();
    let err = resume(&model, &varmap, &mut t, None, dir.path(), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
    no_temp_files(dir.path()).unwrap();
}

#[test]
fn resume_refuses_a_different_data_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_config(recipe(1, 0.1), 4, None);
    full_run(dir.path(), &run).unwrap();
    let (model, varmap) = Tiny::build(run.seed).unwrap();
    let mut other = Synthetic::new(64, 16, 5, true);
    let err = resume(
        &model,
        &varmap,
        &mut other,
        None,
        dir.path(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("trained with 6 batches per epoch"),
        "{err}"
    );
}

#[test]
fn resume_without_a_run_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (model, varmap) = Tiny::build(0).unwrap();
    let (mut t, _) = data();
    let err = resume(&model, &varmap, &mut t, None, dir.path(), &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("expected run.json"), "{err}");
}

#[test]
fn flip_tta_scores_the_mean_logits_of_each_image_and_its_mirror() {
    use candle_core::Device;
    use nin_format::TestTimeAugment;
    use nin_layers::ClassMapModel;
    use nin_train::{evaluate, BatchSource};

    let (model, _) = Tiny::build(3).unwrap();
    let (_, mut eval) = data();
    // The expectation, with the mirror image built by hand rather than by `Tensor::flip`.
    let (mut loss_sum, mut correct, mut n) = (0.0f64, 0usize, 0usize);
    for batch in eval.epoch_batches(0, 0) {
        let (xs, ys) = batch.unwrap();
        let (b, c, h, w) = xs.dims4().unwrap();
        let pixels = xs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mirrored: Vec<f32> = (0..pixels.len())
            .map(|i| pixels[i - i % w + (w - 1 - i % w)])
            .collect();
        let mirrored = candle_core::Tensor::from_vec(mirrored, (b, c, h, w), &Device::Cpu).unwrap();
        let a = model
            .forward_t(&xs, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let m = model
            .forward_t(&mirrored, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for ((a, m), y) in a.iter().zip(&m).zip(ys.to_vec1::<u32>().unwrap()) {
            let logits: Vec<f64> = a.iter().zip(m).map(|(a, m)| (a + m) as f64 / 2.0).collect();
            let max = logits.iter().cloned().fold(f64::MIN, f64::max);
            let log_z = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
            loss_sum += log_z - logits[y as usize];
            let best = (0..logits.len()).max_by(|&i, &j| logits[i].total_cmp(&logits[j]));
            correct += usize::from(best == Some(y as usize));
            n += 1;
        }
    }
    let plain = evaluate(&model, &mut eval, &Device::Cpu, TestTimeAugment::None).unwrap();
    let tta = evaluate(&model, &mut eval, &Device::Cpu, TestTimeAugment::Flip).unwrap();
    let expected_loss = loss_sum / n as f64;
    assert!(
        (tta.loss - expected_loss).abs() < 1e-5 * expected_loss,
        "{} against {expected_loss}",
        tta.loss
    );
    assert_eq!(tta.top1, 100.0 * correct as f64 / n as f64);
    assert!(
        (plain.loss - tta.loss).abs() > 1e-4,
        "the mirror images must change the scores, or this test proves nothing"
    );
}
