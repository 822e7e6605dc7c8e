//! Reading the official binary archives safely, from the `.tar.gz` itself, from an extracted
//! folder, or from the cache, and extracting only the expected members.
//!
//! **Invariant:** no member is ever written outside the target folder and links are refused,
//! whether the archive is read in memory or extracted.
//!
//! **Invariant:** no size read from a file is trusted for allocation or for how long to read.
//! Every member, record file and archive is bounded by the largest its kind has in the official
//! archives ([`max_member_bytes`], [`max_archive_bytes`]) and read through a cap, so a kilobyte
//! archive declaring a terabyte member, a huge sparse file or a link to `/dev/zero` is refused
//! with an error naming it, never read until memory runs out.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use crate::dataset::{parse_names, parse_records, Cifar, Dataset, ImageSet, LabelKind, HOME_PAGE};
use crate::{Error, Result};

/// Where a dataset's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The official `.tar.gz` archive, read without extracting.
    Archive(PathBuf),
    /// An extracted folder holding the member files (e.g. `…/cifar-10-batches-bin`).
    Folder(PathBuf),
}

impl Source {
    /// The archive or folder path.
    pub fn path(&self) -> &Path {
        match self {
            Source::Archive(p) | Source::Folder(p) => p,
        }
    }
}

/// Where and how to load a dataset.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// An archive, an extracted folder or a folder holding either; `None` looks in the cache.
    pub data: Option<PathBuf>,
    /// Which CIFAR-100 label to use (ignored for CIFAR-10).
    pub label_kind: LabelKind,
}

/// Finds `dataset` at `data` (an archive, an extracted folder, or a folder holding either), or in the
/// cache folder when `data` is `None`. Prefers an extracted folder to an archive.
pub fn locate(dataset: Dataset, data: Option<&Path>) -> Result<Source> {
    let root = match data {
        Some(p) => p.to_path_buf(),
        None => crate::cache::cache_dir()?,
    };
    if root.is_file() {
        return Ok(Source::Archive(root));
    }
    if root.is_dir() {
        let (names, _) = dataset.names_files();
        let first = dataset.train_files()[0];
        if root.join(first).is_file() || root.join(names).is_file() {
            return Ok(Source::Folder(root));
        }
        let folder = root.join(dataset.folder_name());
        if folder.is_dir() {
            return Ok(Source::Folder(folder));
        }
        let archive = root.join(dataset.archive_name());
        if archive.is_file() {
            return Ok(Source::Archive(archive));
        }
    }
    Err(Error::NotFound {
        path: root,
        dataset,
        archive: dataset.archive_name(),
        folder: dataset.folder_name(),
        home: HOME_PAGE,
    })
}

/// Locates and loads both splits and the label names of `dataset`.
pub fn load(dataset: Dataset, opts: &LoadOptions) -> Result<Cifar> {
    let source = locate(dataset, opts.data.as_deref())?;
    load_source(dataset, &source, opts.label_kind)
}

/// Loads both splits and the label names from a located source.
pub fn load_source(dataset: Dataset, source: &Source, kind: LabelKind) -> Result<Cifar> {
    let members = match source {
        Source::Archive(p) => read_archive(p, dataset)?,
        Source::Folder(p) => read_folder(p, dataset)?,
    };
    let base = source.path();
    let n_classes = dataset.n_classes(kind);
    let split = |files: &[&'static str]| -> Result<ImageSet> {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for f in files {
            let (name, bytes) = member(&members, base, dataset, f)?;
            let (p, l) = parse_records(&name, bytes, dataset, kind)?;
            pixels.extend_from_slice(&p);
            labels.extend_from_slice(&l);
        }
        ImageSet::new(pixels, labels, n_classes)
    };
    let train = split(dataset.train_files())?;
    let test = split(dataset.test_files())?;
    let (fine, coarse) = dataset.names_files();
    let names_file = match (kind, coarse) {
        (LabelKind::Coarse, Some(c)) => c,
        _ => fine,
    };
    let (name, bytes) = member(&members, base, dataset, names_file)?;
    let label_names = parse_names(&name, bytes, n_classes)?;
    Ok(Cifar {
        dataset,
        label_kind: kind,
        train,
        test,
        label_names,
        source: base.to_path_buf(),
    })
}

/// Members read into memory, keyed by file name inside the dataset folder.
pub type Members = HashMap<&'static str, Vec<u8>>;

/// Records in the largest record file of the official archives: each CIFAR-10 batch and each
/// test file holds 10,000; CIFAR-100's `train.bin` holds all 50,000 training images.
fn official_records(dataset: Dataset, file: &str) -> Option<u64> {
    if dataset.train_files().contains(&file) {
        Some(match dataset {
            Dataset::Cifar10 => 10_000,
            Dataset::Cifar100 => 50_000,
        })
    } else if dataset.test_files().contains(&file) {
        Some(10_000)
    } else {
        None
    }
}

/// The largest label-names file accepted: the official ones are 61 bytes (CIFAR-10) and under
/// a kilobyte (CIFAR-100's 100 fine names).
const MAX_NAMES_BYTES: u64 = 64 << 10;

/// Room in an archive beyond its expected members: tar headers and padding, the official
/// `readme.html`, and gzip's framing of incompressible data (5 bytes per 64 KiB block).
const ARCHIVE_SLACK_BYTES: u64 = 16 << 20;

/// The largest member `file` of `dataset` may be: its size in the official archive for a record
/// file (e.g. 30,730,000 bytes for `data_batch_1.bin`, 153,700,000 for CIFAR-100's `train.bin`),
/// 64 KiB for a label-names file. Larger files are refused before they are read.
pub fn max_member_bytes(dataset: Dataset, file: &str) -> u64 {
    official_records(dataset, file).map_or(MAX_NAMES_BYTES, |n| n * dataset.record_size() as u64)
}

/// The largest archive of `dataset` accepted, compressed or not: its expected members at their
/// largest plus 16 MiB for everything else an archive holds.
pub fn max_archive_bytes(dataset: Dataset) -> u64 {
    dataset
        .members()
        .iter()
        .map(|m| max_member_bytes(dataset, m))
        .sum::<u64>()
        + ARCHIVE_SLACK_BYTES
}

/// What kind of file `file` is, as a size error names it ("… more than the N bytes a … can be").
fn member_kind(dataset: Dataset, file: &str) -> &'static str {
    match (official_records(dataset, file), dataset) {
        (Some(_), Dataset::Cifar10) => "CIFAR-10 record file",
        (Some(_), Dataset::Cifar100) => "CIFAR-100 record file",
        (None, _) => "label-names file",
    }
}

fn archive_kind(dataset: Dataset) -> (&'static str, &'static str) {
    match dataset {
        Dataset::Cifar10 => ("CIFAR-10 archive", "decompressed CIFAR-10 archive"),
        Dataset::Cifar100 => ("CIFAR-100 archive", "decompressed CIFAR-100 archive"),
    }
}

fn member<'a>(
    members: &'a Members,
    base: &Path,
    dataset: Dataset,
    file: &'static str,
) -> Result<(PathBuf, &'a [u8])> {
    let inner = format!("{}/{file}", dataset.folder_name());
    match members.get(file) {
        Some(b) => Ok((display_member(base, &inner, file), b)),
        None => Err(Error::MissingMember {
            path: base.into(),
            member: inner,
            dataset,
        }),
    }
}

/// How a member is named in errors: `archive.tar.gz!folder/file` or `folder/file`.
fn display_member(base: &Path, inner: &str, file: &str) -> PathBuf {
    if base.is_dir() {
        base.join(file)
    } else {
        archive_member(base, inner)
    }
}

fn archive_member(archive: &Path, inner: &str) -> PathBuf {
    PathBuf::from(format!("{}!{inner}", archive.display()))
}

/// Reads the expected members of an extracted folder, each bounded by [`max_member_bytes`].
pub fn read_folder(folder: &Path, dataset: Dataset) -> Result<Members> {
    let mut members = Members::new();
    for name in dataset.members() {
        let path = folder.join(name);
        let limit = max_member_bytes(dataset, name);
        match nin_format::read_bounded(&path, member_kind(dataset, name), limit) {
            Ok(b) => {
                members.insert(name, b);
            }
            Err(nin_format::Error::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                return Err(Error::MissingMember {
                    path: folder.into(),
                    member: name.into(),
                    dataset,
                })
            }
            Err(e) => return Err(Error::from_format(e)),
        }
    }
    Ok(members)
}

/// Reads the expected members of a `.tar.gz` archive into memory, refusing unsafe, duplicate and
/// oversized members.
pub fn read_archive(archive: &Path, dataset: Dataset) -> Result<Members> {
    let mut members = Members::new();
    walk_archive(archive, dataset, |name, bytes| {
        members.insert(name, bytes);
        Ok(())
    })?;
    check_complete(&members, archive, dataset)?;
    Ok(members)
}

/// Extracts only the expected members of `archive` into `target/<dataset folder>/`, each written
/// atomically ([`nin_format::write_atomic`]); returns the extracted folder. Temporary files a
/// killed extraction left there are removed first.
pub fn extract(archive: &Path, dataset: Dataset, target: &Path) -> Result<PathBuf> {
    let folder = target.join(dataset.folder_name());
    fs::create_dir_all(&folder).map_err(|e| Error::io("creating folder", &folder, e))?;
    nin_format::remove_stale_temp_files(&folder).map_err(Error::from_format)?;
    let mut seen = HashSet::new();
    walk_archive(archive, dataset, |name, bytes| {
        nin_format::write_atomic(&folder.join(name), &bytes)
            .map_err(|e| Walk::Data(Error::from_format(e)))?;
        seen.insert(name);
        Ok(())
    })?;
    for name in dataset.members() {
        if !seen.contains(name) {
            return Err(missing(archive, dataset, name));
        }
    }
    Ok(folder)
}

fn check_complete(members: &Members, archive: &Path, dataset: Dataset) -> Result<()> {
    match dataset
        .members()
        .into_iter()
        .find(|m| !members.contains_key(m))
    {
        Some(name) => Err(missing(archive, dataset, name)),
        None => Ok(()),
    }
}

fn missing(archive: &Path, dataset: Dataset, name: &str) -> Error {
    Error::MissingMember {
        path: archive.into(),
        member: format!("{}/{name}", dataset.folder_name()),
        dataset,
    }
}

pub(crate) use crate::error::printable;

/// A reader that fails once more than `limit` bytes come through, and remembers that it did, so
/// an endless or absurdly large stream is refused instead of read for ever.
struct Capped<R> {
    inner: R,
    left: u64,
    over: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // One more byte tells a stream of exactly `limit` bytes from a longer one.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.over.set(true);
            return Err(io::Error::other("size limit exceeded"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A reader that remembers the error of the gzip layer, so that tar errors can be told apart from it.
struct GzTap<R> {
    inner: flate2::read::GzDecoder<R>,
    error: Rc<RefCell<Option<String>>>,
}

impl<R: Read> Read for GzTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.error.borrow_mut() = Some(printable(&e.to_string()));
        })
    }
}

/// The archive as the tar layer reads it: file → cap → buffer → gzip → cap.
type ArchiveReader = Capped<GzTap<io::BufReader<Capped<fs::File>>>>;

/// Calls `visit` with the bytes of every expected member; refuses links, absolute paths, `..`,
/// duplicates and members larger than [`max_member_bytes`]; skips other regular files (e.g. the
/// official `readme.html`).
fn walk_archive(
    archive: &Path,
    dataset: Dataset,
    mut visit: impl FnMut(&'static str, Vec<u8>) -> std::result::Result<(), Walk>,
) -> Result<()> {
    let file = fs::File::open(archive).map_err(|e| Error::io("reading", archive, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io("reading", archive, e))?
        .len();
    let limit = max_archive_bytes(dataset);
    let (what, what_decompressed) = archive_kind(dataset);
    let too_large = |what, size| Error::TooLarge {
        path: archive.into(),
        what,
        size,
        limit,
    };
    if size > limit {
        return Err(too_large(what, size));
    }
    // The metadata of a device or a growing file says nothing: the caps bound what is read.
    let file_over = Rc::new(Cell::new(false));
    let stream_over = Rc::new(Cell::new(false));
    let gz_error = Rc::new(RefCell::new(None));
    let compressed = Capped {
        inner: file,
        left: limit,
        over: file_over.clone(),
    };
    let reader: ArchiveReader = Capped {
        inner: GzTap {
            inner: flate2::read::GzDecoder::new(io::BufReader::with_capacity(1 << 20, compressed)),
            error: gz_error.clone(),
        },
        left: limit,
        over: stream_over.clone(),
    };
    let mut tar = tar::Archive::new(reader);
    let walked = walk_entries(&mut tar, archive, dataset, &mut visit);
    // Read the gzip stream to its end: a corrupt deflate block or CRC shows up here even when the
    // tar layer stopped early (or choked first on the garbage).
    let drained = io::copy(&mut tar.into_inner(), &mut io::sink());
    if file_over.get() {
        return Err(too_large(what, limit + 1));
    }
    if stream_over.get() {
        return Err(too_large(what_decompressed, limit + 1));
    }
    if let Some(reason) = gz_error.borrow().clone() {
        return Err(Error::CorruptGzip {
            path: archive.into(),
            reason,
        });
    }
    match walked {
        Err(Walk::Io(e)) => Err(Error::CorruptTar {
            path: archive.into(),
            reason: printable(&e.to_string()),
        }),
        Err(Walk::Data(e)) => Err(e),
        Ok(()) => drained.map(|_| ()).map_err(|e| Error::CorruptGzip {
            path: archive.into(),
            reason: printable(&e.to_string()),
        }),
    }
}

/// Why walking an archive stopped: a read error (tar or gzip layer) or a data error.
enum Walk {
    Io(io::Error),
    Data(Error),
}

type Visit<'a> = dyn FnMut(&'static str, Vec<u8>) -> std::result::Result<(), Walk> + 'a;

fn walk_entries(
    tar: &mut tar::Archive<ArchiveReader>,
    archive: &Path,
    dataset: Dataset,
    visit: &mut Visit<'_>,
) -> std::result::Result<(), Walk> {
    let expected = dataset.members();
    let mut seen = HashSet::new();
    for entry in tar.entries().map_err(Walk::Io)? {
        let mut entry = entry.map_err(Walk::Io)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_member = |reason| {
            Walk::Data(Error::UnsafeMember {
                path: archive.into(),
                member: printable(&raw),
                reason,
            })
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(unsafe_member("links are not allowed"));
        }
        let mut parts = Vec::new();
        for c in Path::new(&raw).components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(unsafe_member("`..` would leave the target folder"))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(unsafe_member("absolute paths are not allowed"))
                }
            }
        }
        if kind.is_dir() || kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if !kind.is_file() {
            return Err(unsafe_member("only regular files and folders are allowed"));
        }
        let name = match parts.as_slice() {
            [folder, file] if folder == dataset.folder_name() => {
                expected.iter().find(|m| **m == file.as_str())
            }
            _ => None,
        };
        let Some(&name) = name else { continue };
        let inner = format!("{}/{name}", dataset.folder_name());
        if !seen.insert(name) {
            return Err(Walk::Data(Error::DuplicateMember {
                path: archive.into(),
                member: inner,
            }));
        }
        // The declared size (pax `size` included) decides how much the tar layer yields: check it
        // before reading, and read through `take` should the two ever disagree.
        let limit = max_member_bytes(dataset, name);
        let size = entry.size();
        if size > limit {
            return Err(Walk::Data(Error::TooLarge {
                path: archive_member(archive, &inner),
                what: member_kind(dataset, name),
                size,
                limit,
            }));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(Walk::Io)?;
        visit(name, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(bytes: &[u8], limit: u64) -> (io::Result<Vec<u8>>, bool) {
        let over = Rc::new(Cell::new(false));
        let mut reader = Capped {
            inner: bytes,
            left: limit,
            over: over.clone(),
        };
        let mut out = Vec::new();
        let read = reader.read_to_end(&mut out).map(|_| out);
        (read, over.get())
    }

    #[test]
    fn cap_passes_exactly_the_limit_and_refuses_one_byte_more() {
        let (read, over) = capped(&[1; 100], 100);
        assert_eq!((read.map(|v| v.len()).ok(), over), (Some(100), false));
        let (read, over) = capped(&[1; 101], 100);
        assert!(read.is_err() && over);
        let (read, over) = capped(&[], 0);
        assert_eq!((read.map(|v| v.len()).ok(), over), (Some(0), false));
    }

    #[test]
    fn printable_keeps_names_and_hides_control_bytes() {
        assert_eq!(printable("cifar-10/données.bin"), "cifar-10/données.bin");
        assert_eq!(printable("a\u{1b}[2J\u{fffd}\nb"), "a?[2J??b");
        let long = printable(&"x".repeat(500));
        assert!(long.ends_with('…') && long.chars().count() == 121, "{long}");
    }
}
