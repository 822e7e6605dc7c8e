//! What a user passes as MODEL, and where that model's directory is: a local model directory, a
//! pretrained tag of the registry (`nin_bn.cifar10`), or a Hub repository
//! (`hf-hub:owner/name[@revision]`). Every command that reads a model resolves it here, so the
//! three forms mean the same everywhere.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pretrained::{
    find_tag, source_pretrained_dir, tag_sources, tags_of, PretrainedTag, PRETRAINED,
    PRETRAINED_DIR_ENV,
};
use crate::registry::MODELS;

/// The prefix of a Hub model specification.
pub const HUB_PREFIX: &str = "hf-hub:";

/// A repository on the Hub and the revision to read (`main` unless given).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubRepo {
    /// `owner/name`.
    pub id: String,
    /// Branch, tag or commit hash.
    pub revision: String,
}

impl std::fmt::Display for HubRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{HUB_PREFIX}{}@{}", self.id, self.revision)
    }
}

impl HubRepo {
    /// Parses `owner/name[@revision]` (without the `hf-hub:` prefix). Names and revisions are
    /// checked to be what the Hub allows, so neither can reach outside the cache folder.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let (id, revision) = match text.split_once('@') {
            Some((id, rev)) => (id, rev),
            None => (text, "main"),
        };
        let parts: Vec<&str> = id.split('/').collect();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 96
                && !s.starts_with(['.', '-'])
                && !s.contains("..")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if parts.len() != 2 || !parts.iter().all(|p| name_ok(p)) {
            return Err(format!(
                "`{id}` is not a Hub repository id: expected owner/name, each of letters, digits, `-`, `_` and `.`"
            ));
        }
        let rev_ok = !revision.is_empty()
            && revision.len() <= 255
            && revision
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !rev_ok {
            return Err(format!(
                "`{revision}` is not a revision: expected a branch, tag or commit hash"
            ));
        }
        Ok(Self {
            id: id.to_string(),
            revision: revision.to_string(),
        })
    }

    /// Whether the revision is a full commit hash (it then names one snapshot for ever).
    pub fn is_commit(&self) -> bool {
        is_commit_hash(&self.revision)
    }
}

/// Whether `s` is a 40-digit lowercase hexadecimal commit hash.
pub(crate) fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The three forms of a model specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// A local model directory.
    Dir(PathBuf),
    /// A pretrained tag of the registry.
    Tag(String),
    /// A Hub repository.
    Hub(HubRepo),
}

impl ModelSpec {
    /// Classifies `spec`: `hf-hub:` ids, then tags of `table` (a directory whose name is also a
    /// tag is written `./name`), then anything else as a directory path.
    pub fn parse(spec: &str, table: &[PretrainedTag]) -> Result<Self> {
        if let Some(rest) = spec.strip_prefix(HUB_PREFIX) {
            return HubRepo::parse(rest)
                .map(Self::Hub)
                .map_err(|reason| Error::ModelSpec {
                    spec: spec.to_string(),
                    reason,
                });
        }
        if find_tag(table, spec).is_some() {
            return Ok(Self::Tag(spec.to_string()));
        }
        Ok(Self::Dir(PathBuf::from(spec)))
    }
}

/// A model resolved to a local model directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The model directory (`config.json`, `model.safetensors`, …): a local folder, a
    /// `pretrained/<tag>/` folder, or a snapshot folder of the Hub cache.
    pub dir: PathBuf,
    /// A stable description of where the model came from, for `run.json` and model cards:
    /// `hf-hub:owner/name@<commit>`, `nin_bn.cifar10 (pretrained/nin_bn.cifar10)`, or the
    /// directory's canonical path.
    pub origin: String,
}

/// Reports a download's progress (a bar, a log line, nothing).
pub trait DownloadProgress {
    /// `file` of `repo` starts arriving; `total` is its size in bytes.
    fn start(&mut self, repo: &str, file: &str, total: u64);
    /// `bytes` more bytes arrived.
    fn advance(&mut self, bytes: u64);
    /// The file is complete.
    fn finish(&mut self);
}

/// A [`DownloadProgress`] that shows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl DownloadProgress for NoProgress {
    fn start(&mut self, _repo: &str, _file: &str, _total: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self) {}
}

/// How specifications are resolved: the tag table, where repository-held weights are looked
/// for, and the Hub's settings.
#[derive(Clone, Debug)]
pub struct ResolveOptions<'t> {
    /// The pretrained tags (the shipped [`PRETRAINED`] table).
    pub table: &'t [PretrainedTag],
    /// Folders holding `<tag>/` model directories, searched in order.
    pub pretrained_dirs: Vec<PathBuf>,
    /// Use only the Hub cache; never touch the network.
    pub offline: bool,
    /// The Hub's endpoint, cache and token.
    #[cfg(feature = "hub")]
    pub hub: crate::hub::HubConfig,
}

/// Whether an `HF_HUB_OFFLINE`-style variable's value turns the setting on (`1`, `true`, `yes`,
/// `on`, in any case), as the Python client reads it.
pub fn env_flag_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl ResolveOptions<'static> {
    /// The shipped table; `$NIN_PRETRAINED_DIR`, then this checkout's `pretrained/`; offline when
    /// `offline` or `HF_HUB_OFFLINE` is on; the Hub settings of the environment (`HF_ENDPOINT`,
    /// `HF_HUB_CACHE`/`HF_HOME`, `HF_TOKEN`).
    pub fn from_env(offline: bool) -> Result<Self> {
        let mut pretrained_dirs = Vec::new();
        if let Some(dir) = std::env::var_os(PRETRAINED_DIR_ENV).filter(|d| !d.is_empty()) {
            pretrained_dirs.push(PathBuf::from(dir));
        }
        pretrained_dirs.push(source_pretrained_dir());
        let offline = offline
            || std::env::var("HF_HUB_OFFLINE")
                .map(|v| env_flag_on(&v))
                .unwrap_or(false);
        Ok(Self {
            table: PRETRAINED,
            pretrained_dirs,
            offline,
            #[cfg(feature = "hub")]
            hub: crate::hub::HubConfig::from_env()?,
        })
    }
}

/// Resolves `spec` (a model directory, a pretrained tag or `hf-hub:owner/name[@revision]`) to a
/// local model directory, downloading from the Hub into its cache when needed (reporting to
/// `progress`). Errors say what was tried; a bare preset name is refused with its pretrained
/// tags suggested (weights are needed; `nin train --model` is where presets go).
pub fn resolve_model_spec(
    spec: &str,
    opts: &ResolveOptions,
    progress: &mut dyn DownloadProgress,
) -> Result<ResolvedModel> {
    match ModelSpec::parse(spec, opts.table)? {
        ModelSpec::Hub(repo) => fetch_hub(&repo, opts, progress),
        ModelSpec::Tag(name) => match find_tag(opts.table, &name) {
            Some(tag) => resolve_tag(tag, opts, progress),
            None => resolve_dir(spec, Path::new(spec), opts.table),
        },
        ModelSpec::Dir(dir) => resolve_dir(spec, &dir, opts.table),
    }
}

fn resolve_dir(spec: &str, dir: &Path, table: &[PretrainedTag]) -> Result<ResolvedModel> {
    if dir.is_dir() {
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        return Ok(ResolvedModel {
            dir: canonical.clone(),
            origin: canonical.display().to_string(),
        });
    }
    let bad = |reason: String| {
        Err(Error::ModelSpec {
            spec: spec.to_string(),
            reason,
        })
    };
    if dir.exists() {
        return bad(
            "not a model directory: a file, not a directory (a model directory holds config.json and model.safetensors)".into(),
        );
    }
    // A bare name: a preset, an unknown tag of a preset, or a typo.
    let arch = spec.split_once('.').map_or(spec, |(arch, _)| arch);
    if MODELS.iter().any(|m| m.name == arch) {
        let tags: Vec<&str> = tags_of(table, arch).iter().map(|t| t.name).collect();
        let have = if tags.is_empty() {
            format!("`{arch}` has no pretrained weights yet")
        } else {
            format!("pretrained weights of `{arch}`: {}", tags.join(", "))
        };
        let what = if arch == spec {
            "is an architecture, not trained weights".to_string()
        } else {
            "is not a pretrained tag".to_string()
        };
        return bad(format!(
            "{what}; {have} (`nin list --pretrained` shows every tag). Pass a model directory, a pretrained tag or hf-hub:owner/name"
        ));
    }
    bad(
        "not a model directory: nothing is there (not a directory), and it is neither a pretrained tag (`nin list --pretrained`) nor hf-hub:owner/name[@revision]"
            .into(),
    )
}

fn resolve_tag(
    tag: &PretrainedTag,
    opts: &ResolveOptions,
    progress: &mut dyn DownloadProgress,
) -> Result<ResolvedModel> {
    let mut tried = Vec::new();
    if tag.in_repo {
        for base in &opts.pretrained_dirs {
            let dir = base.join(tag.name);
            if dir.join(nin_format::files::CONFIG_JSON).is_file() {
                let shown = if base == &source_pretrained_dir() {
                    format!("pretrained/{}", tag.name)
                } else {
                    dir.display().to_string()
                };
                return Ok(ResolvedModel {
                    dir,
                    origin: format!("{} ({shown})", tag.name),
                });
            }
            tried.push(dir.display().to_string());
        }
    }
    if let Some(hub) = tag.hub {
        let repo = HubRepo {
            id: hub.repo.to_string(),
            revision: hub.revision.to_string(),
        };
        return fetch_hub(&repo, opts, progress)
            .map(|resolved| ResolvedModel {
                origin: format!("{} ({})", tag.name, resolved.origin),
                dir: resolved.dir,
            })
            .map_err(|e| Error::ModelSpec {
                spec: tag.name.to_string(),
                reason: if tried.is_empty() {
                    e.to_string()
                } else {
                    format!("not found in {}; and from the Hub: {e}", tried.join(", "))
                },
            });
    }
    Err(Error::ModelSpec {
        spec: tag.name.to_string(),
        reason: format!(
            "its weights ({}) are not here: looked in {} (set ${PRETRAINED_DIR_ENV} to a folder holding {}/)",
            tag_sources(tag).join(", "),
            tried.join(", "),
            tag.name
        ),
    })
}

#[cfg(feature = "hub")]
fn fetch_hub(
    repo: &HubRepo,
    opts: &ResolveOptions,
    progress: &mut dyn DownloadProgress,
) -> Result<ResolvedModel> {
    crate::hub::fetch_model(&opts.hub, repo, opts.offline, progress)
}

#[cfg(not(feature = "hub"))]
fn fetch_hub(
    repo: &HubRepo,
    _opts: &ResolveOptions,
    _progress: &mut dyn DownloadProgress,
) -> Result<ResolvedModel> {
    Err(Error::Hub {
        repo: repo.to_string(),
        file: None,
        reason: "this build has no Hub support (built without nin-zoo's `hub` feature)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretrained::HubLocation;

    fn tag(name: &'static str, model: &'static str, in_repo: bool) -> PretrainedTag {
        PretrainedTag {
            name,
            model,
            dataset: "cifar10",
            top1: 80.0,
            top5: 98.0,
            check_top1: 81.0,
            recipe: "modern",
            command: "nin train --model nin_bn --recipe modern",
            license: "MIT OR Apache-2.0",
            hub: None,
            in_repo,
        }
    }

    fn opts<'t>(table: &'t [PretrainedTag], dirs: Vec<PathBuf>) -> ResolveOptions<'t> {
        ResolveOptions {
            table,
            pretrained_dirs: dirs,
            offline: true,
            #[cfg(feature = "hub")]
            hub: crate::hub::HubConfig::new("http://127.0.0.1:9".into(), "/nonexistent".into()),
        }
    }

    #[test]
    fn hub_ids_and_revisions_are_checked() {
        let ok = HubRepo::parse("nin-zoo/nin_bn.cifar10").unwrap();
        assert_eq!(
            (ok.id.as_str(), ok.revision.as_str()),
            ("nin-zoo/nin_bn.cifar10", "main")
        );
        assert_eq!(ok.to_string(), "hf-hub:nin-zoo/nin_bn.cifar10@main");
        let pinned = HubRepo::parse("a/b@refs/pr/1").unwrap();
        assert_eq!(pinned.revision, "refs/pr/1");
        assert!(!pinned.is_commit());
        assert!(
            HubRepo::parse("a/b@0123456789abcdef0123456789abcdef01234567")
                .unwrap()
                .is_commit()
        );
        for bad in [
            "a",
            "a/b/c",
            "/b",
            "a/",
            "../b",
            "a/..",
            "a/.b",
            "a b/c",
            "a/b@",
            "a/b@../../x",
            "a/b@x//y",
            "a/b@x y",
        ] {
            assert!(HubRepo::parse(bad).is_err(), "{bad}");
        }
        let err = ModelSpec::parse("hf-hub:nope", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hf-hub:nope") && err.contains("owner/name"),
            "{err}"
        );
    }

    #[test]
    fn tags_win_over_paths_and_the_rest_are_directories() {
        let table = [tag("nin_bn.cifar10", "nin_bn", true)];
        assert_eq!(
            ModelSpec::parse("nin_bn.cifar10", &table).unwrap(),
            ModelSpec::Tag("nin_bn.cifar10".into())
        );
        assert_eq!(
            ModelSpec::parse("./nin_bn.cifar10", &table).unwrap(),
            ModelSpec::Dir("./nin_bn.cifar10".into())
        );
        assert_eq!(
            ModelSpec::parse("runs/x", &table).unwrap(),
            ModelSpec::Dir("runs/x".into())
        );
    }

    #[test]
    fn a_repository_tag_is_found_in_the_first_folder_that_holds_it(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
        let dir = second.join("nin_bn.cifar10");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("config.json"), "{}")?;
        let table = [tag("nin_bn.cifar10", "nin_bn", true)];
        let resolved = resolve_model_spec(
            "nin_bn.cifar10",
            &opts(&table, vec![first.clone(), second.clone()]),
            &mut NoProgress,
        )?;
        assert_eq!(resolved.dir, dir);
        assert_eq!(
            resolved.origin,
            format!("nin_bn.cifar10 ({})", dir.display())
        );
        // Not where the table says, and not on the Hub: every place tried is named.
        let err = resolve_model_spec(
            "nin_bn.cifar10",
            &opts(&table, vec![first.clone()]),
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("nin_bn.cifar10")
                && err.contains(&first.join("nin_bn.cifar10").display().to_string())
                && err.contains("NIN_PRETRAINED_DIR"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn a_tag_on_the_hub_only_says_which_repository_failed() {
        let table = [PretrainedTag {
            hub: Some(HubLocation {
                repo: "nin-zoo/nin_bn.cifar10",
                revision: "0123456789abcdef0123456789abcdef01234567",
            }),
            ..tag("nin_bn.cifar10", "nin_bn", false)
        }];
        let err = resolve_model_spec("nin_bn.cifar10", &opts(&table, vec![]), &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nin_bn.cifar10")
                && err.contains(
                    "hf-hub:nin-zoo/nin_bn.cifar10@0123456789abcdef0123456789abcdef01234567"
                ),
            "{err}"
        );
    }

    #[test]
    fn a_bare_preset_name_suggests_its_pretrained_tags() {
        let table = [tag("nin_bn.cifar10", "nin_bn", true)];
        let o = opts(&table, vec![]);
        let err = resolve_model_spec("nin_bn", &o, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("architecture")
                && err.contains("nin_bn.cifar10")
                && err.contains("nin list --pretrained"),
            "{err}"
        );
        let err = resolve_model_spec("nin", &o, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nin` has no pretrained weights yet"), "{err}");
        let err = resolve_model_spec("nin_bn.cifar100", &o, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a pretrained tag") && err.contains("nin_bn.cifar10"),
            "{err}"
        );
        let err = resolve_model_spec("no/such/dir", &o, &mut NoProgress)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no/such/dir") && err.contains("not a directory"),
            "{err}"
        );
    }

    #[test]
    fn offline_is_read_from_hf_hub_offline_as_python_reads_it() {
        for on in ["1", "TRUE", "yes", "On"] {
            assert!(env_flag_on(on), "{on}");
        }
        for off in ["0", "", "false", "no"] {
            assert!(!env_flag_on(off), "{off}");
        }
    }
}
