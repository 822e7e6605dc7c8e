//! A Hugging Face Hub stand-in on loopback for tests of model downloads: it serves
//! `/{owner}/{name}/resolve/{revision}/{file}` as the Hub does (`HEAD`, and `GET` with or without
//! `Range`, answering `ETag`, `X-Repo-Commit` and `Content-Length`, no `X-Xet-Hash`), refuses
//! unknown repositories, revisions and files with the Hub's status codes and `X-Error-Code`
//! headers, and can cut a body short or corrupt it. It records every request (method, path,
//! `Authorization`) so tests can check what a client sent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::Digest;

/// How a file's `GET` is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// The whole body, honouring `Range`.
    Whole,
    /// The first full-body `GET` announces the whole length but closes after this many bytes;
    /// later ones serve it whole (a dropped connection, then a good retry).
    DropAfterOnce(usize),
    /// The first full-body `GET` sends only this many bytes, announced as the whole body (a
    /// server or proxy that truncates); later ones serve it whole.
    ShortOnce(usize),
    /// Every body has one byte flipped, while the ETag is the SHA-256 of the true body.
    Corrupt,
}

/// A file of a mock repository.
#[derive(Clone, Debug)]
pub struct MockFile {
    /// Its content.
    pub body: Vec<u8>,
    /// How it is served.
    pub serve: Serve,
}

/// A model repository of the mock Hub at one commit.
#[derive(Clone, Debug)]
pub struct MockRepo {
    /// `owner/name`.
    pub id: String,
    /// The commit every file belongs to (40 hex digits).
    pub commit: String,
    /// Branches and tags that resolve to the commit (`main`).
    pub refs: Vec<String>,
    /// Files by name.
    pub files: BTreeMap<String, MockFile>,
}

impl MockRepo {
    /// A repository `id` at `main`, commit derived from its id, holding `files` served whole.
    pub fn new(id: &str, files: &[(&str, Vec<u8>)]) -> Self {
        Self {
            id: id.to_string(),
            commit: sha256_hex(id.as_bytes())[..40].to_string(),
            refs: vec!["main".to_string()],
            files: files
                .iter()
                .map(|(name, body)| {
                    (
                        name.to_string(),
                        MockFile {
                            body: body.clone(),
                            serve: Serve::Whole,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `HEAD` or `GET`.
    pub method: String,
    /// The path, as sent.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// The running mock Hub; [`MockHub::stop`] (or dropping it) closes its port.
pub struct MockHub {
    /// `http://127.0.0.1:PORT`, to use as `HF_ENDPOINT`.
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// The lowercase hex SHA-256 of `bytes` (the Hub's ETag of an LFS file).
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl MockHub {
    /// Starts serving `repos` on a free loopback port.
    pub fn start(repos: Vec<MockRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State {
            repos,
            served_once: Vec::new(),
        }));
        let handle = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, state) = (requests.clone(), state.clone());
                    std::thread::spawn(move || handle_conn(stream, &requests, &state));
                }
            })
        };
        Self {
            url: format!("http://{addr}"),
            requests,
            stop,
            handle: Some(handle),
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Full-body `GET`s so far (downloads, not metadata probes with `Range: bytes=0-0`).
    pub fn downloads(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.range.as_deref() != Some("bytes=0-0"))
            .collect()
    }

    /// Closes the port: later connections are refused, as with the network down.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(addr) = self.url.strip_prefix("http://") {
            let _ = TcpStream::connect(addr);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct State {
    repos: Vec<MockRepo>,
    /// (repo, file) pairs whose one-time fault was already served.
    served_once: Vec<(String, String)>,
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

fn error(stream: &mut TcpStream, status: &str, code: &str, message: &str, head_only: bool) {
    let body = format!("{{\"error\":\"{message}\"}}");
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Content-Length".to_string(), body.len().to_string()),
        ("X-Error-Code".to_string(), code.to_string()),
        ("X-Error-Message".to_string(), message.to_string()),
    ];
    let body = if head_only { &[][..] } else { body.as_bytes() };
    respond(stream, status, &headers, body);
}

fn handle_conn(mut stream: TcpStream, requests: &Mutex<Vec<Request>>, state: &Mutex<State>) {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("").to_string();
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    requests.lock().unwrap().push(Request {
        method: method.clone(),
        path: path.clone(),
        range: range.clone(),
        authorization: authorization.clone(),
    });
    let head_only = method == "HEAD";
    // /{owner}/{name}/resolve/{revision}/{file}; the revision may be %2F-encoded.
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() != 5 || parts[2] != "resolve" {
        error(
            &mut stream,
            "404 Not Found",
            "EntryNotFound",
            "not a resolve URL",
            head_only,
        );
        return;
    }
    let (id, revision, file) = (
        format!("{}/{}", parts[0], parts[1]),
        parts[3].replace("%2F", "/"),
        parts[4].to_string(),
    );
    let mut state = state.lock().unwrap();
    let Some(repo) = state.repos.iter().find(|r| r.id == id).cloned() else {
        // The Hub answers 401 to anonymous requests for repositories it does not show.
        let status = if authorization.is_some() {
            "404 Not Found"
        } else {
            "401 Unauthorized"
        };
        error(
            &mut stream,
            status,
            "RepoNotFound",
            "Repository not found",
            head_only,
        );
        return;
    };
    if revision != repo.commit && !repo.refs.contains(&revision) {
        let msg = format!("Invalid rev id: {revision}");
        error(
            &mut stream,
            "404 Not Found",
            "RevisionNotFound",
            &msg,
            head_only,
        );
        return;
    }
    let Some(f) = repo.files.get(&file) else {
        error(
            &mut stream,
            "404 Not Found",
            "EntryNotFound",
            "Entry not found",
            head_only,
        );
        return;
    };
    let total = f.body.len();
    let mut body = f.body.clone();
    if f.serve == Serve::Corrupt && !body.is_empty() {
        let i = body.len() / 2;
        body[i] ^= 0xff;
    }
    let probe = range.as_deref() == Some("bytes=0-0");
    let once_key = (id.clone(), file.clone());
    let fault = match f.serve {
        Serve::DropAfterOnce(n) | Serve::ShortOnce(n)
            if !probe && !head_only && !state.served_once.contains(&once_key) =>
        {
            state.served_once.push(once_key);
            Some((f.serve, n))
        }
        _ => None,
    };
    drop(state);
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<usize>().ok());
    let end = range
        .as_deref()
        .and_then(|r| r.rsplit('-').next())
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(total, |e| (e + 1).min(total));
    let mut headers = vec![
        ("ETag".to_string(), format!("\"{}\"", sha256_hex(&f.body))),
        ("X-Repo-Commit".to_string(), repo.commit.clone()),
        ("Accept-Ranges".to_string(), "bytes".to_string()),
    ];
    let (status, slice) = match start {
        Some(s) if s >= total || s >= end => {
            headers.push(("Content-Range".to_string(), format!("bytes */{total}")));
            headers.push(("Content-Length".to_string(), "0".to_string()));
            respond(&mut stream, "416 Range Not Satisfiable", &headers, &[]);
            return;
        }
        Some(s) => {
            headers.push((
                "Content-Range".to_string(),
                format!("bytes {s}-{}/{total}", end - 1),
            ));
            ("206 Partial Content", &body[s..end])
        }
        None => ("200 OK", &body[..]),
    };
    match fault {
        Some((Serve::DropAfterOnce(n), _)) => {
            headers.push(("Content-Length".to_string(), slice.len().to_string()));
            respond(&mut stream, status, &headers, &slice[..n.min(slice.len())]);
        }
        Some((_, n)) => {
            let short = &slice[..n.min(slice.len())];
            headers.push(("Content-Length".to_string(), short.len().to_string()));
            respond(&mut stream, status, &headers, short);
        }
        None => {
            headers.push(("Content-Length".to_string(), slice.len().to_string()));
            respond(
                &mut stream,
                status,
                &headers,
                if head_only { &[] } else { slice },
            );
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
