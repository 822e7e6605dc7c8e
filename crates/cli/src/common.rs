//! What several subcommands share: devices and threads, finding (or downloading) the data, and
//! adapting the data crate's loader to the training engine's `BatchSource`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use nin_data::{Dataset, LabelKind, Loader};

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda_device(0),
        s if s.starts_with("cuda:") => {
            let ordinal = s["cuda:".len()..]
                .parse()
                .with_context(|| format!("--device {s}: expected cuda:N with N a GPU index"))?;
            cuda_device(ordinal)
        }
        other => bail!("--device {other}: expected cpu, cuda or cuda:N"),
    }
}

fn cuda_device(ordinal: usize) -> anyhow::Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        bail!("--device cuda:{ordinal}: this build has no CUDA support (rebuild with --features cuda)");
    }
    Device::new_cuda(ordinal).with_context(|| format!("opening CUDA device {ordinal}"))
}

/// Sizes the global thread pool that candle's kernels and our ops share; `None` keeps the
/// default (one thread per core). Must run before any parallel work.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<usize> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads: expected at least 1, got 0");
        }
        // candle reads RAYON_NUM_THREADS for its own loops; rayon's pool serves the rest.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        // Fails only when the pool already exists, in which case its size is kept.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    Ok(rayon::current_num_threads())
}

/// Loads `dataset` from `data` (an archive or folder), else from the cache, downloading the
/// official archive into the cache on first use.
pub fn load_dataset(
    dataset: Dataset,
    data: Option<&Path>,
    kind: LabelKind,
) -> anyhow::Result<nin_data::Cifar> {
    let source = match (data, nin_data::locate(dataset, data)) {
        (_, Ok(source)) => source,
        (Some(path), Err(e)) => {
            return Err(e).with_context(|| format!("--data {}", path.display()));
        }
        (None, Err(_)) => {
            let dir = nin_data::cache_dir()?;
            eprintln!(
                "{dataset} not found in {}; downloading it (set $NIN_DATA_DIR or pass --data to use a copy you have)",
                dir.display()
            );
            nin_data::download(
                dataset,
                &dir,
                &nin_data::DownloadOptions::official(),
                &mut crate::data::DownloadBar::default(),
            )?;
            nin_data::locate(dataset, None)?
        }
    };
    Ok(nin_data::load_source(dataset, &source, kind)?)
}

/// The dataset whose class count is `num_classes`, for commands that read a model directory.
pub fn dataset_for_classes(num_classes: usize) -> anyhow::Result<Dataset> {
    match num_classes {
        10 => Ok(Dataset::Cifar10),
        100 => Ok(Dataset::Cifar100),
        n => bail!("the model has {n} classes; pass --dataset cifar10 or cifar100 explicitly"),
    }
}

/// A run folder name that does not exist yet: `runs/<model>_<dataset>_s<seed>`, then `-2`, ….
pub fn fresh_run_dir(model: &str, dataset: Dataset, seed: u64) -> PathBuf {
    let base = PathBuf::from("runs").join(format!("{model}_{dataset}_s{seed}"));
    let mut dir = base.clone();
    let mut n = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{n}", base.display()));
        n += 1;
    }
    dir
}

/// The data crate's loader as the training engine's batch source.
pub struct LoaderSource(pub Loader);

impl nin_train::BatchSource for LoaderSource {
    fn batches_per_epoch(&self) -> usize {
        self.0.batches_per_epoch()
    }

    fn epoch_batches(
        &mut self,
        epoch: usize,
        start_batch: usize,
    ) -> Box<dyn Iterator<Item = nin_train::Result<(Tensor, Tensor)>> + '_> {
        match self.0.epoch_from(epoch as u64, start_batch) {
            Ok(batches) => Box::new(batches.map(|b| {
                b.map(|b| (b.images, b.labels))
                    .map_err(nin_train::Error::data)
            })),
            Err(e) => Box::new(std::iter::once(Err(nin_train::Error::data(e)))),
        }
    }
}
