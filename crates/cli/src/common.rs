//! What several subcommands share: devices and threads, finding (or downloading) the data, and
//! adapting the data crate's loader to the training engine's `BatchSource`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use nin_data::{Dataset, LabelKind, Loader};
use nin_format::files::RUN_JSON;
use nin_format::RunConfig;

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

/// Parses a count that must be at least 1 (`--epochs`, `--limit-train`, …), so that clap's
/// message names the flag.
pub fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// The most worker threads `--threads` accepts: beyond any machine this runs on, and well
/// below what the system refuses to start.
const MAX_THREADS: usize = 1024;

/// Sizes the global thread pool that candle's kernels and our ops share; `None` keeps the
/// default (one thread per core). Must run before any parallel work.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<usize> {
    if let Some(n) = threads {
        if !(1..=MAX_THREADS).contains(&n) {
            bail!("--threads: expected 1 to {MAX_THREADS}, got {n}");
        }
        // candle reads RAYON_NUM_THREADS for its own loops; rayon's pool serves the rest.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            // The pool exists already (a second call in one process) or the system refused
            // the threads: either way its size is what it is, and the caller is told.
            if rayon::current_num_threads() != n {
                bail!("--threads {n}: could not start the worker threads: {e}");
            }
        }
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

/// A new run's claim on its folder: `run.json`, created exclusively (so two processes given the
/// same folder never both train into it) in `out`, or in the first of
/// `runs/<model>_<dataset>_s<seed>`, `-2`, `-3`, … that this process could create. Dropped
/// without [`RunClaim::keep`], it removes what it created, so a run that failed to start leaves
/// no claimed folder behind.
pub struct RunClaim {
    dir: PathBuf,
    created_dir: bool,
    kept: bool,
}

impl RunClaim {
    /// The claimed run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the claim: training has started.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for RunClaim {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(self.dir.join(RUN_JSON));
            if self.created_dir {
                // Only removes the folder if nothing else was written into it.
                let _ = std::fs::remove_dir(&self.dir);
            }
        }
    }
}

/// Claims the run folder `out` (or a fresh default one) for the new run `run` by creating its
/// `run.json` exclusively; see [`RunClaim`].
pub fn claim_run_dir(out: Option<&Path>, run: &RunConfig) -> anyhow::Result<RunClaim> {
    let (dir, created_dir) = match out {
        Some(dir) => {
            let created = match std::fs::create_dir(dir) {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => false,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("--out {}: creating the run folder", dir.display())
                    })?;
                    true
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("--out {}: creating the run folder", dir.display())
                    })
                }
            };
            (dir.to_path_buf(), created)
        }
        None => {
            let base = PathBuf::from("runs").join(format!(
                "{}_{}_s{}",
                run.model.name, run.data.dataset, run.seed
            ));
            std::fs::create_dir_all("runs").context("creating the runs folder")?;
            let mut n = 1;
            loop {
                let dir = if n == 1 {
                    base.clone()
                } else {
                    PathBuf::from(format!("{}-{n}", base.display()))
                };
                match std::fs::create_dir(&dir) {
                    Ok(()) => break (dir, true),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
                    Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
                }
            }
        }
    };
    let path = dir.join(RUN_JSON);
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => bail!(
            "--out {} already holds a run ({RUN_JSON} exists): continue it with --resume, or pick another folder \
             (a run killed before its first checkpoint resumes from the start)",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("claiming {}", path.display())),
    };
    let claim = RunClaim {
        dir,
        created_dir,
        kept: false,
    };
    // The engine rewrites run.json atomically when training starts; until then this copy says
    // what the folder is for.
    serde_json::to_writer_pretty(&mut file, run)
        .map_err(std::io::Error::from)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(claim)
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
