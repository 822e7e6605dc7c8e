//! Reading the official binary archives safely, from the `.tar.gz` itself, from an extracted
//! folder, or from the cache, and extracting only the expected members.
//!
//! **Invariant:** no member is ever written outside the target folder and links are refused,
//! whether the archive is read in memory or extracted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
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
        None => crate::download::cache_dir()?,
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
        PathBuf::from(format!("{}!{inner}", base.display()))
    }
}

/// Reads the expected members of an extracted folder.
pub fn read_folder(folder: &Path, dataset: Dataset) -> Result<Members> {
    let mut members = Members::new();
    for name in dataset.members() {
        let path = folder.join(name);
        match fs::read(&path) {
            Ok(b) => {
                members.insert(name, b);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingMember {
                    path: folder.into(),
                    member: name.into(),
                    dataset,
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(members)
}

/// Reads the expected members of a `.tar.gz` archive into memory, refusing unsafe members.
pub fn read_archive(archive: &Path, dataset: Dataset) -> Result<Members> {
    let mut members = Members::new();
    walk_archive(archive, dataset, |name, entry| {
        let mut buf = Vec::with_capacity(entry.header().size().unwrap_or(0) as usize);
        entry.read_to_end(&mut buf).map_err(Walk::Io)?;
        members.insert(name, buf);
        Ok(())
    })?;
    check_complete(&members, archive, dataset)?;
    Ok(members)
}

/// Extracts only the expected members of `archive` into `target/<dataset folder>/`, each written to a
/// temporary file then renamed; returns the extracted folder.
pub fn extract(archive: &Path, dataset: Dataset, target: &Path) -> Result<PathBuf> {
    let folder = target.join(dataset.folder_name());
    fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    let mut seen = Members::new();
    walk_archive(archive, dataset, |name, entry| {
        let mut buf = Vec::with_capacity(entry.header().size().unwrap_or(0) as usize);
        entry.read_to_end(&mut buf).map_err(Walk::Io)?;
        let dest = folder.join(name);
        let tmp = folder.join(format!("{name}.part"));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()
        };
        write().map_err(|e| Walk::Data(Error::io(&tmp, e)))?;
        fs::rename(&tmp, &dest).map_err(|e| Walk::Data(Error::io(&dest, e)))?;
        seen.insert(name, Vec::new());
        Ok(())
    })?;
    check_complete(&seen, archive, dataset)?;
    Ok(folder)
}

fn check_complete(members: &Members, archive: &Path, dataset: Dataset) -> Result<()> {
    for name in dataset.members() {
        if !members.contains_key(name) {
            return Err(Error::MissingMember {
                path: archive.into(),
                member: format!("{}/{name}", dataset.folder_name()),
                dataset,
            });
        }
    }
    Ok(())
}

/// A reader that remembers the error of the gzip layer, so that tar errors can be told apart from it.
struct GzTap<R> {
    inner: flate2::read::GzDecoder<R>,
    error: Rc<RefCell<Option<String>>>,
}

impl<R: Read> Read for GzTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            *self.error.borrow_mut() = Some(e.to_string());
        })
    }
}

/// Calls `visit` on every expected member; refuses links, absolute paths and `..`; skips other
/// regular files (e.g. the official `readme.html`).
fn walk_archive(
    archive: &Path,
    dataset: Dataset,
    mut visit: impl FnMut(&'static str, &mut TarEntry<'_>) -> std::result::Result<(), Walk>,
) -> Result<()> {
    let file = fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let gz_error = Rc::new(RefCell::new(None));
    let tap = GzTap {
        inner: flate2::read::GzDecoder::new(io::BufReader::with_capacity(1 << 20, file)),
        error: gz_error.clone(),
    };
    let mut tar = tar::Archive::new(tap);
    let walked = walk_entries(&mut tar, archive, dataset, &mut visit);
    // Read the gzip stream to its end: a corrupt deflate block or CRC shows up here even when the
    // tar layer stopped early (or choked first on the garbage).
    let drained = io::copy(&mut tar.into_inner(), &mut io::sink());
    if let Some(reason) = gz_error.borrow().clone() {
        return Err(Error::CorruptGzip {
            path: archive.into(),
            reason,
        });
    }
    match walked {
        Err(Walk::Io(e)) => Err(Error::CorruptTar {
            path: archive.into(),
            reason: e.to_string(),
        }),
        Err(Walk::Data(e)) => Err(e),
        Ok(()) => drained.map(|_| ()).map_err(|e| Error::CorruptGzip {
            path: archive.into(),
            reason: e.to_string(),
        }),
    }
}

/// Why walking an archive stopped: a read error (tar or gzip layer) or a data error.
enum Walk {
    Io(io::Error),
    Data(Error),
}

/// A member being read from a `.tar.gz`.
type TarEntry<'a> = tar::Entry<'a, GzTap<io::BufReader<fs::File>>>;

type Visit<'a> = dyn FnMut(&'static str, &mut TarEntry<'_>) -> std::result::Result<(), Walk> + 'a;

fn walk_entries(
    tar: &mut tar::Archive<GzTap<io::BufReader<fs::File>>>,
    archive: &Path,
    dataset: Dataset,
    visit: &mut Visit<'_>,
) -> std::result::Result<(), Walk> {
    let expected = dataset.members();
    for entry in tar.entries().map_err(Walk::Io)? {
        let mut entry = entry.map_err(Walk::Io)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_member = |reason| {
            Walk::Data(Error::UnsafeMember {
                path: archive.into(),
                member: raw.clone(),
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
        if let Some(name) = name {
            visit(name, &mut entry)?;
        }
    }
    Ok(())
}
