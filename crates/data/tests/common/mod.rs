//! Helpers shared by the integration tests: synthetic CIFAR archives (well-formed or malformed),
//! a tiny local HTTP server with Range support, and the path of the real data in `../shared/data`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use nin_data::{Dataset, IMAGE_BYTES};

/// The real archive `name` in `../shared/data`; `None` (after a skip message) when absent on a
/// developer's machine, a failed test when absent under CI (`nin_testkit::shared_data_file`).
pub fn real_archive(name: &str) -> Option<PathBuf> {
    nin_testkit::shared_data_file(name)
}

/// CIFAR-10 records with labels `labels`, pixels a function of (record, byte).
pub fn records10(labels: &[u8], salt: u8) -> Vec<u8> {
    let mut v = Vec::new();
    for (r, &l) in labels.iter().enumerate() {
        v.push(l);
        v.extend((0..IMAGE_BYTES).map(|i| (i as u8).wrapping_mul(31).wrapping_add(r as u8 ^ salt)));
    }
    v
}

/// CIFAR-100 records with (coarse, fine) labels.
pub fn records100(labels: &[(u8, u8)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (r, &(c, f)) in labels.iter().enumerate() {
        v.push(c);
        v.push(f);
        v.extend((0..IMAGE_BYTES).map(|i| (i as u8).wrapping_add(r as u8)));
    }
    v
}

/// A tar member: path, kind, contents.
pub struct Member {
    pub path: String,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
}

pub fn file(path: &str, data: Vec<u8>) -> Member {
    Member {
        path: path.into(),
        kind: tar::EntryType::Regular,
        data,
    }
}

/// The members of a small well-formed CIFAR-10 archive: 5 train files of 4 records, 6 test records.
pub fn cifar10_members() -> Vec<Member> {
    let mut m = Vec::new();
    for b in 1..=5u8 {
        let labels: Vec<u8> = (0..4).map(|i| (i * 3 + b) % 10).collect();
        m.push(file(
            &format!("cifar-10-batches-bin/data_batch_{b}.bin"),
            records10(&labels, b),
        ));
    }
    m.push(file(
        "cifar-10-batches-bin/test_batch.bin",
        records10(&[0, 1, 2, 3, 4, 9], 99),
    ));
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    m.push(file(
        "cifar-10-batches-bin/batches.meta.txt",
        names.as_bytes().to_vec(),
    ));
    m.push(file(
        "cifar-10-batches-bin/readme.html",
        b"<html></html>".to_vec(),
    ));
    m
}

/// A tar (uncompressed) of `members`, written with raw headers so unsafe paths survive.
pub fn tar_bytes(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_gnu();
        let name = m.path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(if m.kind.is_file() {
            m.data.len() as u64
        } else {
            0
        });
        h.set_mode(0o644);
        h.set_entry_type(m.kind);
        if m.kind.is_symlink() || m.kind.is_hard_link() {
            let target = b"/etc/passwd";
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        }
        h.set_cksum();
        let data: &[u8] = if m.kind.is_file() { &m.data } else { &[] };
        b.append(&h, data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// gzip of `bytes`.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gz");
    e.finish().expect("gz")
}

/// Writes a `.tar.gz` of `members` as `dir/name`.
pub fn write_archive(dir: &Path, name: &str, members: &[Member]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, gz(&tar_bytes(members))).expect("write archive");
    p
}

/// Hex MD5 of bytes.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How the test server answers.
#[derive(Clone, Copy)]
pub enum Mode {
    /// Serves the file, honouring `Range`.
    Normal,
    /// Announces the full length but closes after this many bytes of body.
    DropAfter(usize),
    /// Accepts and reads the request, then sends nothing until the client gives up (or 10 s).
    StallBeforeHeaders,
    /// Announces the full length, sends this many bytes of body, then sends nothing until the
    /// client gives up (or 10 s).
    StallAfter(usize),
}

/// A local HTTP server on 127.0.0.1 serving `body` at `/<name>` for `n_conns` connections, then stopping.
pub struct Server {
    pub base_url: String,
    pub handle: JoinHandle<Vec<Option<String>>>,
}

pub fn serve(name: &str, body: Arc<Vec<u8>>, modes: Vec<Mode>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let name = format!("/{name}");
    let handle = std::thread::spawn(move || {
        let mut ranges = Vec::new();
        for mode in modes {
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            ranges.push(handle_conn(stream, &name, &body, mode));
        }
        ranges
    });
    Server {
        base_url: format!("http://{addr}"),
        handle,
    }
}

fn handle_conn(mut stream: TcpStream, name: &str, body: &[u8], mode: Mode) -> Option<String> {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).ok();
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    if matches!(mode, Mode::StallBeforeHeaders) {
        // The read timeout above bounds the wait should the client never close.
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
        return range;
    }
    if path != name {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return range;
    }
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
    let (status, from) = match start {
        Some(s) if s >= body.len() => {
            let h = format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(h.as_bytes());
            return range;
        }
        Some(s) => (
            format!(
                "206 Partial Content\r\nContent-Range: bytes {s}-{}/{}",
                body.len() - 1,
                body.len()
            ),
            s,
        ),
        None => ("200 OK".to_string(), 0),
    };
    let rest = &body[from..];
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        rest.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let n = match mode {
        Mode::Normal | Mode::StallBeforeHeaders => rest.len(),
        Mode::DropAfter(n) | Mode::StallAfter(n) => n.min(rest.len()),
    };
    let _ = stream.write_all(&rest[..n]);
    let _ = stream.flush();
    if matches!(mode, Mode::StallAfter(_)) {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
        return range;
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let mut sink = Vec::new();
    let _ = reader.read_to_end(&mut sink);
    range
}

/// Loads a small synthetic CIFAR-10 set from a fresh archive in `dir`.
pub fn synthetic_cifar10(dir: &Path) -> nin_data::Cifar {
    let archive = write_archive(dir, Dataset::Cifar10.archive_name(), &cifar10_members());
    nin_data::load(
        Dataset::Cifar10,
        &nin_data::LoadOptions {
            data: Some(archive),
            ..Default::default()
        },
    )
    .expect("synthetic archive loads")
}

/// What every test returns.
pub type TestResult = Result<(), Box<dyn std::error::Error>>;
