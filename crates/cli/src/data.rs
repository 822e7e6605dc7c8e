//! `nin data download|verify|info`: fetch the CIFAR archives into the cache, check them, and
//! describe what is there (paths, checksums, counts per split and class).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use nin_data::{Dataset, LabelKind, Source};

/// Arguments of `nin data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    action: Action,
}

/// Options shared by every `nin data` action.
#[derive(Debug, Args)]
struct Common {
    /// Which dataset.
    #[arg(long, value_enum, default_value_t = DatasetArg::Cifar10)]
    dataset: DatasetArg,
    /// An archive (`.tar.gz`), an extracted folder, or a folder holding either; default: the cache
    /// folder (`$NIN_DATA_DIR`, else the platform cache dir).
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Download the official archive into the cache (or --data folder) and extract it.
    ///
    /// $NIN_CIFAR_URL replaces the folder it is downloaded from; $NIN_DOWNLOAD_TIMEOUT the
    /// seconds a silent server is waited on (default 60) before the download stops, to be resumed
    /// by running it again.
    Download {
        #[command(flatten)]
        common: Common,
    },
    /// Check the archive's MD5 against the published sum and validate every record.
    Verify {
        #[command(flatten)]
        common: Common,
        /// Fail when the archive's MD5 differs from the published one.
        #[arg(long)]
        strict: bool,
    },
    /// Show where the data is and how many images each split and class holds.
    Info {
        #[command(flatten)]
        common: Common,
        /// For CIFAR-100: count the 20 coarse classes instead of the 100 fine ones.
        #[arg(long)]
        coarse: bool,
        /// Also show a validation split of this many images held out of train (e.g. 5000).
        #[arg(long, value_name = "N")]
        val: Option<usize>,
        /// Seed of the validation draw.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum DatasetArg {
    Cifar10,
    Cifar100,
}

impl From<DatasetArg> for Dataset {
    fn from(d: DatasetArg) -> Self {
        match d {
            DatasetArg::Cifar10 => Dataset::Cifar10,
            DatasetArg::Cifar100 => Dataset::Cifar100,
        }
    }
}

/// Runs `nin data …`.
pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Download { common } => download(&common),
        Action::Verify { common, strict } => verify(&common, strict),
        Action::Info {
            common,
            coarse,
            val,
            seed,
        } => {
            let kind = if coarse {
                LabelKind::Coarse
            } else {
                LabelKind::Fine
            };
            let holdout = val.map(|size| nin_data::Holdout { size, seed });
            info(&common, kind, holdout)
        }
    }
}

fn download(common: &Common) -> anyhow::Result<()> {
    let dataset = Dataset::from(common.dataset);
    let dir = match &common.data {
        Some(d) => d.clone(),
        None => nin_data::cache_dir()?,
    };
    let archive = nin_data::download(
        dataset,
        &dir,
        &nin_data::DownloadOptions::official(),
        &mut DownloadBar::default(),
    )
    .with_context(|| format!("downloading {dataset} into {}", dir.display()))?;
    let folder = nin_data::extract(&archive, dataset, &dir)
        .with_context(|| format!("extracting {}", archive.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "archive: {} (MD5 {} verified)",
        archive.display(),
        dataset.archive_md5()
    )?;
    writeln!(out, "extracted: {}", folder.display())?;
    Ok(())
}

/// The data crate's download progress drawn as a bar on stderr.
#[derive(Default)]
pub(crate) struct DownloadBar(Option<indicatif::ProgressBar>);

impl nin_data::DownloadProgress for DownloadBar {
    fn start(&mut self, file: &str, done: u64, total: Option<u64>) {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(file.to_string());
        bar.set_position(done);
        self.0 = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish();
        }
    }
}

fn locate(common: &Common) -> anyhow::Result<(Dataset, Source)> {
    let dataset = Dataset::from(common.dataset);
    let source =
        nin_data::locate(dataset, common.data.as_deref()).with_context(|| match &common.data {
            Some(p) => format!("looking for {dataset} at {}", p.display()),
            None => format!("looking for {dataset} in the cache"),
        })?;
    Ok((dataset, source))
}

fn verify(common: &Common, strict: bool) -> anyhow::Result<()> {
    let (dataset, source) = locate(common)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{dataset}: {}", describe(&source))?;
    match &source {
        Source::Archive(path) => {
            let md5 = nin_data::md5_file(path)?;
            let published = dataset.archive_md5();
            if md5 == published {
                writeln!(out, "MD5 {md5}: matches the published sum")?;
            } else if strict {
                anyhow::bail!(
                    "{}: MD5 {md5} differs from the published {published}",
                    path.display()
                );
            } else {
                writeln!(out, "MD5 {md5}: differs from the published {published} (not the official file; records checked below)")?;
            }
        }
        Source::Folder(folder) => {
            for member in dataset.members() {
                let md5 = nin_data::md5_file(&folder.join(member))?;
                writeln!(out, "MD5 {md5}  {member}")?;
            }
        }
    }
    let cifar = nin_data::load_source(dataset, &source, LabelKind::Fine)
        .with_context(|| format!("validating {}", source.path().display()))?;
    writeln!(
        out,
        "ok: {} training and {} test records, every label in range",
        cifar.train.len(),
        cifar.test.len()
    )?;
    Ok(())
}

fn info(
    common: &Common,
    kind: LabelKind,
    holdout: Option<nin_data::Holdout>,
) -> anyhow::Result<()> {
    let (dataset, source) = locate(common)?;
    let cifar = nin_data::load_source(dataset, &source, kind)
        .with_context(|| format!("reading {}", source.path().display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "dataset: {dataset}")?;
    writeln!(out, "source: {}", describe(&source))?;
    if let Source::Archive(path) = &source {
        let md5 = nin_data::md5_file(path)?;
        let note = if md5 == dataset.archive_md5() {
            "the official archive"
        } else {
            "not the official archive"
        };
        writeln!(out, "md5: {md5} ({note})")?;
    }
    let kind_name = match (dataset, kind) {
        (Dataset::Cifar10, _) => "class",
        (_, LabelKind::Coarse) => "coarse",
        _ => "fine",
    };
    let n_classes = cifar.label_names.len();
    writeln!(out, "classes: {n_classes} ({kind_name} labels)")?;
    writeln!(out, "train: {} images", cifar.train.len())?;
    writeln!(out, "test: {} images", cifar.test.len())?;
    let mut splits = Vec::new();
    match holdout {
        Some(h) => {
            let (train, val) = cifar.train.holdout(h)?;
            splits.push(("train", train.class_counts()));
            splits.push(("val", val.class_counts()));
            writeln!(
                out,
                "split: train {} / val {} (seed {})",
                train.len(),
                val.len(),
                h.seed
            )?;
        }
        None => splits.push(("train", cifar.train.class_counts())),
    }
    splits.push(("test", cifar.test.class_counts()));
    write!(out, "{:>5}  {:<20}", "label", "name")?;
    for (name, _) in &splits {
        write!(out, " {name:>7}")?;
    }
    writeln!(out)?;
    for (i, name) in cifar.label_names.iter().enumerate() {
        write!(out, "{i:>5}  {name:<20}")?;
        for (_, counts) in &splits {
            write!(out, " {:>7}", counts[i])?;
        }
        writeln!(out)?;
    }
    let norm = nin_data::Normalize::from_set(&cifar.train);
    writeln!(out, "train mean (R,G,B): {:.4?}", norm.mean)?;
    writeln!(out, "train std  (R,G,B): {:.4?}", norm.std)?;
    Ok(())
}

fn describe(source: &Source) -> String {
    let kind = match source {
        Source::Archive(_) => "archive",
        Source::Folder(_) => "extracted folder",
    };
    format!("{} ({kind})", display(source.path()))
}

fn display(p: &Path) -> String {
    std::fs::canonicalize(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}
