//! Model repositories on the Hugging Face Hub, through `hf-hub` into the standard cache
//! (`models--owner--name/{blobs,snapshots,refs}`, shared with Python's `huggingface_hub`):
//! `config.json` first, then exactly the files it names; offline reads from the cache only.
//!
//! hf-hub 0.5's blocking client does the requests, the resumable `.part` downloads and the cache
//! layout. What it leaves to its caller is done here: the environment's conventions
//! (`HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, offline mode, which hf-hub ignores),
//! checking that a download is whole (its size, and its SHA-256 where the Hub's ETag is one;
//! hf-hub checks neither), and saying which of repository, revision or file is missing (hf-hub
//! drops the Hub's `X-Error-Code`). The token is never part of a message or of `Debug` output.

use std::io::Read;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use nin_format::files::CONFIG_JSON;
use nin_format::ModelDirConfig;

use crate::error::{Error, Result};
use crate::model_spec::{is_commit_hash, DownloadProgress, HubRepo, ResolvedModel};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to reach the Hub: its endpoint, the cache folder and the access token.
#[derive(Clone)]
pub struct HubConfig {
    /// Base URL (`HF_ENDPOINT`, default [`DEFAULT_ENDPOINT`]), without a trailing `/`.
    pub endpoint: String,
    /// The cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`); `None` when no home folder was found.
    pub cache_dir: Option<PathBuf>,
    token: Option<String>,
}

/// Shows everything but the token's value.
impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`, as Python's
/// client computes it.
fn hf_home() -> Option<PathBuf> {
    env_path("HF_HOME")
        .or_else(|| env_path("XDG_CACHE_HOME").map(|d| d.join("huggingface")))
        .or_else(|| dirs::home_dir().map(|h| h.join(".cache").join("huggingface")))
}

impl HubConfig {
    /// A configuration for `endpoint` with its cache in `cache_dir`, without a token.
    pub fn new(endpoint: String, cache_dir: PathBuf) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir: Some(cache_dir),
            token: None,
        }
    }

    /// The same, sending `token` (as `Authorization: Bearer`) with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// Whether requests carry a token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The environment's settings, as the Python client reads them: `HF_ENDPOINT`;
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`; `HF_TOKEN`, else the file `$HF_TOKEN_PATH`, else
    /// `$HF_HOME/token` (what `huggingface-cli login` writes).
    pub fn from_env() -> Result<Self> {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let home = hf_home();
        let cache_dir = env_path("HF_HUB_CACHE").or_else(|| home.as_ref().map(|h| h.join("hub")));
        let token = std::env::var("HF_TOKEN").ok().or_else(|| {
            let path = env_path("HF_TOKEN_PATH").or_else(|| home.map(|h| h.join("token")))?;
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
        });
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir,
            token: None,
        }
        .with_token(token))
    }
}

fn hub_error(repo: &HubRepo, file: Option<&str>, reason: impl Into<String>) -> Error {
    Error::Hub {
        repo: repo.to_string(),
        file: file.map(str::to_string),
        reason: reason.into(),
    }
}

/// Brings `repo`'s model directory into the cache (or, `offline`, finds it there) and returns
/// its snapshot folder. When the Hub cannot be reached at all, a complete cached copy of the
/// revision is used, as Python's client does.
pub fn fetch_model(
    cfg: &HubConfig,
    repo: &HubRepo,
    offline: bool,
    progress: &mut dyn DownloadProgress,
) -> Result<ResolvedModel> {
    let Some(cache_dir) = &cfg.cache_dir else {
        return Err(hub_error(
            repo,
            None,
            "no cache folder: there is no home folder; set HF_HOME or HF_HUB_CACHE",
        ));
    };
    if offline {
        return from_cache(cache_dir, repo).map_err(|(file, reason)| {
            hub_error(
                repo,
                file.as_deref(),
                format!("{reason} (offline mode: --offline or HF_HUB_OFFLINE is set, so nothing is downloaded)"),
            )
        });
    }
    match fetch_online(cfg, cache_dir, repo, progress) {
        Err(Failure::Unreachable { file, reason }) => {
            from_cache(cache_dir, repo).map_err(|(_, cached)| {
                hub_error(
                    repo,
                    Some(&file),
                    format!(
                        "cannot reach {} ({reason}), and no copy is cached: {cached}",
                        cfg.endpoint
                    ),
                )
            })
        }
        Err(Failure::Other(e)) => Err(e),
        Ok(resolved) => Ok(resolved),
    }
}

/// The model directory of `repo` in the cache, every file `config.json` names present.
/// Errors carry the missing file, if any, and what is missing.
fn from_cache(
    cache_dir: &Path,
    repo: &HubRepo,
) -> std::result::Result<ResolvedModel, (Option<String>, String)> {
    let root = cache_dir.join(format!("models--{}", repo.id.replace('/', "--")));
    let snapshots = root.join("snapshots");
    let commit = if repo.is_commit() && snapshots.join(&repo.revision).is_dir() {
        repo.revision.clone()
    } else {
        let ref_path = root.join("refs").join(&repo.revision);
        let commit = std::fs::read_to_string(&ref_path)
            .map(|c| c.trim().to_string())
            .map_err(|_| {
                (
                    None,
                    format!(
                        "no copy of this revision in the cache {}",
                        cache_dir.display()
                    ),
                )
            })?;
        if !is_commit_hash(&commit) {
            return Err((
                None,
                format!(
                    "{} does not hold a commit hash: the cache is damaged",
                    ref_path.display()
                ),
            ));
        }
        commit
    };
    let dir = snapshots.join(&commit);
    let missing = |file: &str| {
        (
            Some(file.to_string()),
            format!("not in the cache {}", cache_dir.display()),
        )
    };
    if !dir.join(CONFIG_JSON).is_file() {
        return Err(missing(CONFIG_JSON));
    }
    let config = ModelDirConfig::load(&dir)
        .map_err(|e| (Some(CONFIG_JSON.to_string()), format!("cached copy: {e}")))?;
    config
        .whitening_path(&dir)
        .map_err(|e| (Some(CONFIG_JSON.to_string()), e.to_string()))?;
    for file in config.files() {
        if !dir.join(file).is_file() {
            return Err(missing(file));
        }
    }
    Ok(ResolvedModel {
        dir,
        origin: format!("hf-hub:{}@{commit}", repo.id),
    })
}

/// Why an online fetch failed: the Hub could not be reached (the cache may serve), or anything
/// else (already a complete message).
enum Failure {
    Unreachable { file: String, reason: String },
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Other(e)
    }
}

fn fetch_online(
    cfg: &HubConfig,
    cache_dir: &Path,
    repo: &HubRepo,
    progress: &mut dyn DownloadProgress,
) -> std::result::Result<ResolvedModel, Failure> {
    let api = ApiBuilder::from_cache(Cache::new(cache_dir.to_path_buf()))
        .with_endpoint(cfg.endpoint.clone())
        .with_token(cfg.token.clone())
        .with_progress(false)
        .with_user_agent("nin", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| hub_error(repo, None, format!("cannot start the Hub client: {e}")))?;
    let fetcher = Fetcher {
        cfg,
        api: &api,
        cache: Cache::new(cache_dir.to_path_buf()),
        repo,
        hf_repo: Repo::with_revision(repo.id.clone(), RepoType::Model, repo.revision.clone()),
    };
    let (config_path, commit) = fetcher.fetch(CONFIG_JSON, progress)?;
    let dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| hub_error(repo, Some(CONFIG_JSON), "the cache returned no folder"))?;
    let config = ModelDirConfig::load(&dir)
        .map_err(|e| hub_error(repo, Some(CONFIG_JSON), e.to_string()))?;
    config
        .whitening_path(&dir)
        .map_err(|e| hub_error(repo, Some(CONFIG_JSON), e.to_string()))?;
    for file in config.files().into_iter().skip(1) {
        let (_, file_commit) = fetcher.fetch(file, progress)?;
        if file_commit != commit {
            return Err(hub_error(
                repo,
                Some(file),
                format!("the revision moved from commit {commit} to {file_commit} during the download; run the command again"),
            )
            .into());
        }
    }
    Ok(ResolvedModel {
        dir,
        origin: format!("hf-hub:{}@{commit}", repo.id),
    })
}

struct Fetcher<'a> {
    cfg: &'a HubConfig,
    api: &'a Api,
    cache: Cache,
    repo: &'a HubRepo,
    hf_repo: Repo,
}

impl Fetcher<'_> {
    /// Brings `file` into the cache unless the cache already holds the Hub's current blob of it;
    /// returns its snapshot path and the commit it belongs to.
    fn fetch(
        &self,
        file: &str,
        progress: &mut dyn DownloadProgress,
    ) -> std::result::Result<(PathBuf, String), Failure> {
        let api_repo = self.api.repo(self.hf_repo.clone());
        let url = api_repo.url(file);
        let meta = self
            .api
            .metadata(&url)
            .map_err(|e| self.failure(file, &url, e))?;
        let (commit, etag, size) = (meta.commit_hash(), meta.etag(), meta.size() as u64);
        // Both become path components of the cache: nothing but hashes may pass.
        let etag_ok = !etag.is_empty()
            && etag.len() <= 128
            && etag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !is_commit_hash(commit) || !etag_ok {
            return Err(hub_error(
                self.repo,
                Some(file),
                format!("the server's X-Repo-Commit `{commit}` or ETag `{etag}` is not a hash: is {} a Hugging Face Hub?", self.cfg.endpoint),
            )
            .into());
        }
        let cache_repo = self.cache.repo(self.hf_repo.clone());
        let blob = cache_repo.blob_path(etag);
        let pointer = cache_repo.pointer_path(commit).join(file);
        let blob_len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        if pointer.is_file() && blob_len(&blob) == Some(size) {
            return Ok((pointer, commit.to_string()));
        }
        // A partial file longer than the body can only be wrong; hf-hub would refuse it for ever.
        let part = blob.with_extension("part");
        if blob_len(&part).is_some_and(|n| n > size) {
            let _ = std::fs::remove_file(&part);
        }
        let adapter = ProgressAdapter {
            inner: progress,
            repo: self.repo.to_string(),
            started: false,
        };
        let path = api_repo
            .download_with_progress(file, adapter)
            .map_err(|e| self.failure(file, &url, e))?;
        self.check_blob(file, &blob, &pointer, size, etag)?;
        Ok((path, commit.to_string()))
    }

    /// Whether the downloaded blob is whole: its size, and its SHA-256 when the ETag is one (the
    /// Hub's ETag of an LFS file, as weights are). A bad blob is removed with its snapshot link,
    /// so the next try downloads it again.
    fn check_blob(
        &self,
        file: &str,
        blob: &Path,
        pointer: &Path,
        size: u64,
        etag: &str,
    ) -> Result<()> {
        let remove = || {
            let _ = std::fs::remove_file(pointer);
            let _ = std::fs::remove_file(blob);
        };
        let got = std::fs::metadata(blob).map(|m| m.len()).unwrap_or(0);
        if got != size {
            remove();
            return Err(hub_error(
                self.repo,
                Some(file),
                format!("the download is truncated: {got} of {size} bytes arrived; it was removed from the cache, run the command again"),
            ));
        }
        let is_sha256 = etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit());
        if is_sha256 {
            let digest = sha256_file(blob).map_err(|e| {
                hub_error(
                    self.repo,
                    Some(file),
                    format!("reading {}: {e}", blob.display()),
                )
            })?;
            if !digest.eq_ignore_ascii_case(etag) {
                remove();
                return Err(hub_error(
                    self.repo,
                    Some(file),
                    format!("the download is corrupted: its SHA-256 is {digest}, the Hub's is {etag}; it was removed from the cache, run the command again"),
                ));
            }
        }
        Ok(())
    }

    /// What a failed request means, in the user's terms.
    fn failure(&self, file: &str, url: &str, e: ApiError) -> Failure {
        let other = |reason: String| Failure::Other(hub_error(self.repo, Some(file), reason));
        match e {
            ApiError::RequestError(e) => match *e {
                ureq::Error::StatusCode(status) => other(self.explain_status(status, url)),
                ureq::Error::Io(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
                | ureq::Error::Timeout(_) => Failure::Unreachable {
                    file: file.to_string(),
                    reason: e.to_string(),
                },
                e => other(format!("request to {url} failed: {e}")),
            },
            ApiError::MissingHeader(h) => other(format!(
                "the answer from {url} lacks the {h} header: is {} a Hugging Face Hub?",
                self.cfg.endpoint
            )),
            ApiError::IoError(e) => other(format!(
                "the download stopped: {e}; what arrived is kept, and the next try resumes"
            )),
            e => other(e.to_string()),
        }
    }

    /// The Hub says which of repository, revision and file is missing in `X-Error-Code`; hf-hub
    /// does not keep it, so one request of our own reads it.
    fn explain_status(&self, status: u16, url: &str) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut request = agent.get(url).header("Range", "bytes=0-0");
        if let Some(token) = &self.cfg.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let header = |r: &ureq::http::Response<ureq::Body>, name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (code, message) = match request.call() {
            Ok(r) => (header(&r, "x-error-code"), header(&r, "x-error-message")),
            Err(_) => (None, None),
        };
        let token_hint = if self.cfg.has_token() {
            " (or HF_TOKEN does not grant access to it)"
        } else {
            " (if it is private or gated, set HF_TOKEN to a token that can read it)"
        };
        let (id, rev) = (&self.repo.id, &self.repo.revision);
        match code.as_deref() {
            Some("RepoNotFound") => format!(
                "repository {id} not found on {}{token_hint}",
                self.cfg.endpoint
            ),
            Some("RevisionNotFound") => {
                format!("revision `{rev}` not found in repository {id}")
            }
            Some("EntryNotFound") => {
                format!("repository {id} has no such file at revision `{rev}`")
            }
            Some("GatedRepo") => format!(
                "repository {id} is gated: accept its conditions on the Hub, then set HF_TOKEN"
            ),
            _ => {
                let said = message.map(|m| format!(": {m}")).unwrap_or_default();
                match status {
                    401 | 403 => format!("access refused (HTTP {status}){said}{token_hint}"),
                    404 => format!(
                        "not found (HTTP 404{said}): repository {id}, revision `{rev}` or the file does not exist"
                    ),
                    _ => format!("HTTP {status} from {url}{said}"),
                }
            }
        }
    }
}

/// hf-hub's progress hook, forwarded to ours.
struct ProgressAdapter<'a> {
    inner: &'a mut dyn DownloadProgress,
    repo: String,
    started: bool,
}

impl hf_hub::api::Progress for ProgressAdapter<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        // hf-hub announces a file twice (before and as the body starts): report it once.
        if !self.started {
            self.inner.start(&self.repo, filename, size as u64);
            self.started = true;
        }
    }

    fn update(&mut self, size: usize) {
        self.inner.advance(size as u64);
    }

    fn finish(&mut self) {
        self.inner.finish();
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let cfg = HubConfig::new("http://127.0.0.1:1/".into(), "/tmp/x".into())
            .with_token(Some("hf_secret_value".into()));
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("hf_secret_value") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert_eq!(cfg.endpoint, "http://127.0.0.1:1");
        assert!(!HubConfig::new("e".into(), "c".into())
            .with_token(Some("  ".into()))
            .has_token());
    }
}
