//! Models from the Hugging Face Hub against a mock Hub on loopback (nin-testkit's `mock_hub`):
//! first download into the standard cache, later loads from the cache with the server stopped,
//! offline mode, the Hub's 401/404 answers for a missing repository, revision or file, dropped,
//! truncated and corrupted bodies, and the token: sent, and never shown. No test touches the
//! internet or `~/.cache`.
#![cfg(feature = "hub")]

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use nin_testkit::mock_hub::{MockHub, MockRepo, Serve};
use nin_zoo::{fetch_model, load_model_dir, HubConfig, HubRepo, NoProgress};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const REPO: &str = "nin-zoo/tiny";

/// Files of a repository, by name.
type Files = Vec<(&'static str, Vec<u8>)>;

/// `config.json` and `model.safetensors` of a narrow NIN (fast to save, serve and load).
fn tiny_model_files() -> Result<Files, Box<dyn std::error::Error>> {
    let small = serde_json::json!({"mlpconv1": [16, 16, 16], "mlpconv2": [16, 16, 16], "mlpconv3": [16, 10]});
    let created = nin_zoo::create_model("nin", 10, Some(&small), 5, &Device::Cpu)?;
    let tmp = tempfile::tempdir()?;
    let weights = tmp.path().join("model.safetensors");
    nin_layers::weights::save_weights(&weights, &created.varmap, &BTreeMap::new())?;
    let config = serde_json::json!({
        "model": "nin", "num_classes": 10, "model_args": created.args,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    });
    Ok(vec![
        ("config.json", serde_json::to_vec_pretty(&config)?),
        ("model.safetensors", std::fs::read(weights)?),
    ])
}

fn repo(revision: &str) -> HubRepo {
    HubRepo::parse(&format!("{REPO}@{revision}")).expect("valid id")
}

fn config(hub_url: &str, cache: &Path) -> HubConfig {
    HubConfig::new(hub_url.to_string(), cache.to_path_buf())
}

fn fetch_err(cfg: &HubConfig, repo: &HubRepo, offline: bool) -> String {
    match fetch_model(cfg, repo, offline, &mut NoProgress) {
        Ok(r) => panic!("{repo}: expected an error, got {}", r.dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn first_download_then_the_cache_serves_offline_and_with_the_network_down() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mock = MockRepo::new(REPO, &tiny_model_files()?);
    let commit = mock.commit.clone();
    let hub = MockHub::start(vec![mock]);
    let cfg = config(&hub.url, tmp.path());
    let first = fetch_model(&cfg, &repo("main"), false, &mut NoProgress)?;
    assert_eq!(first.origin, format!("hf-hub:{REPO}@{commit}"));
    // The standard cache layout, shared with Python's client.
    let root = tmp.path().join("models--nin-zoo--tiny");
    assert_eq!(first.dir, root.join("snapshots").join(&commit));
    assert_eq!(std::fs::read_to_string(root.join("refs/main"))?, commit);
    load_model_dir(&first.dir, &Device::Cpu)?;
    // config.json first, then exactly the files it names.
    let downloaded: Vec<String> = hub.downloads().into_iter().map(|r| r.path).collect();
    assert_eq!(
        downloaded,
        [
            format!("/{REPO}/resolve/main/config.json"),
            format!("/{REPO}/resolve/main/model.safetensors")
        ]
    );
    // A second online load checks the Hub's ETags but downloads nothing.
    let again = fetch_model(&cfg, &repo("main"), false, &mut NoProgress)?;
    assert_eq!(
        (again.dir.clone(), hub.downloads().len()),
        (first.dir.clone(), 2)
    );

    hub.stop();
    let offline = fetch_model(&cfg, &repo("main"), true, &mut NoProgress)?;
    assert_eq!(offline, first);
    load_model_dir(&offline.dir, &Device::Cpu)?;
    // The network down: the complete cached copy serves, as in Python's client.
    assert_eq!(
        fetch_model(&cfg, &repo("main"), false, &mut NoProgress)?,
        first
    );
    // A commit hash names its snapshot directly.
    assert_eq!(
        fetch_model(&cfg, &repo(&commit), true, &mut NoProgress)?,
        first
    );
    Ok(())
}

#[test]
fn offline_or_unreachable_without_a_cached_copy_says_so() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let hub = MockHub::start(vec![]);
    let url = hub.url.clone();
    hub.stop();
    let cfg = config(&url, tmp.path());
    let err = fetch_err(&cfg, &repo("main"), true);
    assert!(
        err.starts_with(&format!("hf-hub:{REPO}@main: "))
            && err.contains("no copy of this revision in the cache")
            && err.contains("offline"),
        "{err}"
    );
    let err = fetch_err(&cfg, &repo("main"), false);
    assert!(
        err.contains(&format!(
            "hf-hub:{REPO}@main: config.json: cannot reach {url}"
        )) && err.contains("no copy is cached"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_missing_repository_revision_or_file_is_named() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let files = tiny_model_files()?;
    // A repository whose config.json names a weights file it does not hold.
    let config_only = MockRepo::new("nin-zoo/no-weights", &files[..1]);
    let hub = MockHub::start(vec![MockRepo::new(REPO, &files), config_only]);
    let cfg = config(&hub.url, tmp.path());

    let err = fetch_err(&cfg, &HubRepo::parse("nin-zoo/nope")?, false);
    assert!(
        err.contains("hf-hub:nin-zoo/nope@main: config.json: repository nin-zoo/nope not found")
            && err.contains("HF_TOKEN"),
        "{err}"
    );
    // With a token the Hub answers 404 rather than 401: the same message.
    let with_token = cfg.clone().with_token(Some("hf_some_token".into()));
    let err = fetch_err(&with_token, &HubRepo::parse("nin-zoo/nope")?, false);
    assert!(err.contains("repository nin-zoo/nope not found"), "{err}");

    let err = fetch_err(&cfg, &repo("v9"), false);
    assert!(
        err.contains(&format!(
            "hf-hub:{REPO}@v9: config.json: revision `v9` not found in repository {REPO}"
        )),
        "{err}"
    );
    let err = fetch_err(&cfg, &HubRepo::parse("nin-zoo/no-weights")?, false);
    assert!(
        err.contains("hf-hub:nin-zoo/no-weights@main: model.safetensors: repository nin-zoo/no-weights has no such file"),
        "{err}"
    );
    Ok(())
}

/// The weights of `REPO` are in the cache (and `config.json` says they belong there).
fn weights_cached(cache: &Path) -> bool {
    let cfg = config("http://127.0.0.1:9", cache);
    fetch_model(&cfg, &repo("main"), true, &mut NoProgress).is_ok()
}

#[test]
fn a_dropped_connection_fails_naming_the_file_and_the_next_try_resumes() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut mock = MockRepo::new(REPO, &tiny_model_files()?);
    mock.files
        .get_mut("model.safetensors")
        .ok_or("no weights")?
        .serve = Serve::DropAfterOnce(1000);
    let hub = MockHub::start(vec![mock]);
    let cfg = config(&hub.url, tmp.path());
    let err = fetch_err(&cfg, &repo("main"), false);
    assert!(
        err.starts_with(&format!("hf-hub:{REPO}@main: model.safetensors: ")),
        "{err}"
    );
    assert!(err.contains("the next try resumes"), "{err}");
    assert!(!weights_cached(tmp.path()));
    let resolved = fetch_model(&cfg, &repo("main"), false, &mut NoProgress)?;
    load_model_dir(&resolved.dir, &Device::Cpu)?;
    let ranges: Vec<Option<String>> = hub
        .downloads()
        .into_iter()
        .filter(|r| r.path.ends_with("model.safetensors"))
        .map(|r| r.range)
        .collect();
    // The second try asks only for what is missing.
    assert_eq!(
        ranges,
        [
            Some("bytes=0-".to_string()),
            Some("bytes=1000-".to_string())
        ]
    );
    Ok(())
}

#[test]
fn a_truncated_body_is_refused_and_not_left_in_the_cache() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut mock = MockRepo::new(REPO, &tiny_model_files()?);
    mock.files
        .get_mut("model.safetensors")
        .ok_or("no weights")?
        .serve = Serve::ShortOnce(1000);
    let hub = MockHub::start(vec![mock]);
    let cfg = config(&hub.url, tmp.path());
    let err = fetch_err(&cfg, &repo("main"), false);
    assert!(
        err.starts_with(&format!(
            "hf-hub:{REPO}@main: model.safetensors: the download is truncated: 1000 of "
        )),
        "{err}"
    );
    assert!(!weights_cached(tmp.path()));
    let resolved = fetch_model(&cfg, &repo("main"), false, &mut NoProgress)?;
    load_model_dir(&resolved.dir, &Device::Cpu)?;
    Ok(())
}

#[test]
fn a_corrupted_body_is_refused_and_not_left_in_the_cache() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut mock = MockRepo::new(REPO, &tiny_model_files()?);
    mock.files
        .get_mut("model.safetensors")
        .ok_or("no weights")?
        .serve = Serve::Corrupt;
    let hub = MockHub::start(vec![mock]);
    let cfg = config(&hub.url, tmp.path());
    let err = fetch_err(&cfg, &repo("main"), false);
    assert!(
        err.starts_with(&format!(
            "hf-hub:{REPO}@main: model.safetensors: the download is corrupted: its SHA-256 is "
        )),
        "{err}"
    );
    assert!(!weights_cached(tmp.path()));
    Ok(())
}

#[test]
fn the_token_is_sent_with_every_request_and_never_shown() -> TestResult {
    let secret = "hf_TestSecretToken0123456789";
    let tmp = tempfile::tempdir()?;
    let hub = MockHub::start(vec![MockRepo::new(REPO, &tiny_model_files()?)]);
    let cfg = config(&hub.url, tmp.path()).with_token(Some(secret.into()));
    fetch_model(&cfg, &repo("main"), false, &mut NoProgress)?;
    let requests = hub.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bearer {secret}")),
            "{r:?}"
        );
    }
    for bad in ["nin-zoo/nope", &format!("{REPO}@v9")] {
        let err = fetch_model(&cfg, &HubRepo::parse(bad)?, false, &mut NoProgress)
            .err()
            .ok_or("expected an error")?;
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
    assert!(!format!("{cfg:?}").contains(secret));
    Ok(())
}
