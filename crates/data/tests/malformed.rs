//! Every malformed input gets an error naming the file and the problem, never a panic, an abort
//! or an endless read: one test per case (truncated, corrupt, unsafe, duplicate, oversized or
//! endless archives, members and record files; garbage that must not reach the terminal).

mod common;

use common::*;
use nin_data::{load, Dataset, Error, LoadOptions};
use tar::EntryType;

fn load_archive(path: &std::path::Path) -> nin_data::Result<nin_data::Cifar> {
    load(
        Dataset::Cifar10,
        &LoadOptions {
            data: Some(path.to_path_buf()),
            ..Default::default()
        },
    )
}

fn replace(members: &mut [Member], suffix: &str, data: Vec<u8>) {
    for m in members.iter_mut() {
        if m.path.ends_with(suffix) {
            m.data = data.clone();
        }
    }
}

#[test]
fn well_formed_archive_loads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cifar = synthetic_cifar10(dir.path());
    assert_eq!((cifar.train.len(), cifar.test.len()), (20, 6));
    assert_eq!(cifar.label_names[9], "truck");
    assert_eq!(cifar.test.labels, vec![0, 1, 2, 3, 4, 9]);
    Ok(())
}

#[test]
fn truncated_record_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut m = cifar10_members();
    let mut short = records10(&[1, 2], 0);
    short.truncate(3073 + 1000);
    replace(&mut m, "data_batch_3.bin", short);
    let path = write_archive(dir.path(), "c.tar.gz", &m);
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PartialRecord {
                remainder: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("cifar-10-batches-bin/data_batch_3.bin"),
        "{err}"
    );
    assert!(err.to_string().contains("c.tar.gz"), "{err}");
    Ok(())
}

#[test]
fn partial_record_in_extracted_folder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let archive = write_archive(dir.path(), "c.tar.gz", &cifar10_members());
    let folder = nin_data::extract(&archive, Dataset::Cifar10, dir.path())?;
    let mut bytes = std::fs::read(folder.join("test_batch.bin"))?;
    bytes.push(7);
    std::fs::write(folder.join("test_batch.bin"), bytes)?;
    let err = load_archive(&folder).unwrap_err();
    assert!(
        matches!(err, Error::PartialRecord { remainder: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
    Ok(())
}

#[test]
fn out_of_range_label() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut m = cifar10_members();
    replace(&mut m, "test_batch.bin", records10(&[0, 1, 200], 0));
    let path = write_archive(dir.path(), "c.tar.gz", &m);
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LabelOutOfRange {
                record: 2,
                got: 200,
                max: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
    Ok(())
}

#[test]
fn corrupt_gzip() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut bytes = gz(&tar_bytes(&cifar10_members()));
    let mid = bytes.len() / 2;
    bytes[mid..mid + 64].iter_mut().for_each(|b| *b ^= 0x5a);
    let path = dir.path().join("corrupt.tar.gz");
    std::fs::write(&path, &bytes)?;
    let err = load_archive(&path).unwrap_err();
    assert!(matches!(err, Error::CorruptGzip { .. }), "{err}");
    assert!(err.to_string().contains("corrupt.tar.gz"), "{err}");

    // Not gzip at all.
    std::fs::write(&path, b"this is not a gzip file, just text")?;
    let err = load_archive(&path).unwrap_err();
    assert!(matches!(err, Error::CorruptGzip { .. }), "{err}");
    Ok(())
}

#[test]
fn truncated_gzip() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bytes = gz(&tar_bytes(&cifar10_members()));
    let path = dir.path().join("short.tar.gz");
    std::fs::write(&path, &bytes[..bytes.len() / 3])?;
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(err, Error::CorruptGzip { .. } | Error::CorruptTar { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("short.tar.gz"), "{err}");
    Ok(())
}

#[test]
fn parent_dir_member() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut m = cifar10_members();
    m.insert(
        0,
        file("cifar-10-batches-bin/../../evil.bin", vec![1, 2, 3]),
    );
    let path = write_archive(dir.path(), "evil.tar.gz", &m);
    let err = load_archive(&path).unwrap_err();
    assert!(matches!(err, Error::UnsafeMember { .. }), "{err}");
    assert!(
        err.to_string().contains("../../evil.bin") && err.to_string().contains("evil.tar.gz"),
        "{err}"
    );
    let target = dir.path().join("out");
    let err = nin_data::extract(&path, Dataset::Cifar10, &target).unwrap_err();
    assert!(matches!(err, Error::UnsafeMember { .. }), "{err}");
    assert!(!dir.path().join("evil.bin").exists());
    Ok(())
}

#[test]
fn absolute_member() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut m = cifar10_members();
    m.push(file("/tmp/abs.bin", vec![1]));
    let path = write_archive(dir.path(), "abs.tar.gz", &m);
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(err, Error::UnsafeMember { reason, .. } if reason.contains("absolute")),
        "{err}"
    );
    Ok(())
}

#[test]
fn symlink_member() -> TestResult {
    let dir = tempfile::tempdir()?;
    for kind in [EntryType::Symlink, EntryType::Link] {
        let mut m = cifar10_members();
        m.insert(
            1,
            Member {
                path: "cifar-10-batches-bin/data_batch_1.bin".into(),
                kind,
                data: vec![],
            },
        );
        let path = write_archive(dir.path(), "link.tar.gz", &m);
        let err = load_archive(&path).unwrap_err();
        assert!(
            matches!(err, Error::UnsafeMember { reason, .. } if reason.contains("link")),
            "{err}"
        );
        let err = nin_data::extract(&path, Dataset::Cifar10, &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, Error::UnsafeMember { .. }), "{err}");
    }
    Ok(())
}

#[test]
fn missing_member() -> TestResult {
    let dir = tempfile::tempdir()?;
    let m: Vec<Member> = cifar10_members()
        .into_iter()
        .filter(|m| !m.path.ends_with("data_batch_4.bin"))
        .collect();
    let path = write_archive(dir.path(), "missing.tar.gz", &m);
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(err, Error::MissingMember { ref member, .. } if member.ends_with("data_batch_4.bin")),
        "{err}"
    );
    assert!(err.to_string().contains("missing.tar.gz"), "{err}");
    Ok(())
}

#[test]
fn wrong_number_of_label_names() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut m = cifar10_members();
    replace(&mut m, "batches.meta.txt", b"cat\ndog\n".to_vec());
    let path = write_archive(dir.path(), "names.tar.gz", &m);
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LabelNames {
                expected: 10,
                got: 2,
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn missing_data_says_where_to_put_it() {
    let err = load_archive(std::path::Path::new("/nonexistent/cifar")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NotFound { .. }));
    assert!(
        msg.contains("/nonexistent/cifar") && msg.contains("cifar-10-binary.tar.gz"),
        "{msg}"
    );
}

#[test]
fn extract_writes_only_expected_members() -> TestResult {
    let dir = tempfile::tempdir()?;
    let archive = write_archive(dir.path(), "c.tar.gz", &cifar10_members());
    let folder = nin_data::extract(&archive, Dataset::Cifar10, &dir.path().join("x"))?;
    let mut names: Vec<String> = std::fs::read_dir(&folder)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(!names
        .iter()
        .any(|n| n.contains("readme") || n.ends_with(".part")));
    let a = load_archive(&archive)?;
    let f = load_archive(&dir.path().join("x"))?;
    assert_eq!((a.train, a.test), (f.train, f.test));
    Ok(())
}

#[test]
fn cifar100_labels_and_names() -> TestResult {
    let dir = tempfile::tempdir()?;
    let fine: String = (0..100).map(|i| format!("fine{i}\n")).collect();
    let coarse: String = (0..20).map(|i| format!("coarse{i}\n")).collect();
    let m = vec![
        file(
            "cifar-100-binary/train.bin",
            records100(&[(1, 10), (2, 99), (19, 0)]),
        ),
        file("cifar-100-binary/test.bin", records100(&[(3, 33)])),
        file("cifar-100-binary/fine_label_names.txt", fine.into_bytes()),
        file(
            "cifar-100-binary/coarse_label_names.txt",
            coarse.into_bytes(),
        ),
    ];
    let path = write_archive(dir.path(), "c100.tar.gz", &m);
    let opts = |kind| LoadOptions {
        data: Some(path.clone()),
        label_kind: kind,
    };
    let f = load(Dataset::Cifar100, &opts(nin_data::LabelKind::Fine))?;
    let c = load(Dataset::Cifar100, &opts(nin_data::LabelKind::Coarse))?;
    assert_eq!(
        (
            f.train.labels.clone(),
            f.train.n_classes,
            f.label_names[99].as_str()
        ),
        (vec![10, 99, 0], 100, "fine99")
    );
    assert_eq!(
        (
            c.train.labels.clone(),
            c.train.n_classes,
            c.label_names[19].as_str()
        ),
        (vec![1, 2, 19], 20, "coarse19")
    );
    Ok(())
}

/// A tar.gz whose member `path` declares `size` bytes but holds only a few: what a 2 KB hostile
/// archive looks like.
fn archive_declaring(dir: &std::path::Path, path: &str, size: u64) -> std::path::PathBuf {
    let mut tar = tar_bytes(&cifar10_members()[..1]);
    tar.truncate(tar.len() - 1024); // Drop the end-of-archive blocks.
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(EntryType::Regular);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(&[7u8; 1536]);
    let p = dir.join("huge.tar.gz");
    std::fs::write(&p, gz(&tar)).expect("write archive");
    p
}

#[test]
fn huge_declared_member_size_is_refused_before_reading() -> TestResult {
    let dir = tempfile::tempdir()?;
    for size in [1u64 << 63, 1 << 40, 30_730_001] {
        let path = archive_declaring(dir.path(), "cifar-10-batches-bin/data_batch_2.bin", size);
        assert!(std::fs::metadata(&path)?.len() < 4096);
        for err in [
            load_archive(&path).unwrap_err(),
            nin_data::extract(&path, Dataset::Cifar10, &dir.path().join("out")).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(
                matches!(err, Error::TooLarge { size: s, limit: 30_730_000, .. } if s == size),
                "{msg}"
            );
            assert!(
                msg.contains("huge.tar.gz!cifar-10-batches-bin/data_batch_2.bin")
                    && msg.contains("CIFAR-10 record file"),
                "{msg}"
            );
        }
    }
    Ok(())
}

#[test]
fn huge_declared_size_of_an_unexpected_member_is_an_error_not_an_abort() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = archive_declaring(dir.path(), "cifar-10-batches-bin/readme.html", 1 << 62);
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(err, Error::CorruptTar { .. } | Error::CorruptGzip { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("huge.tar.gz"), "{err}");
    Ok(())
}

#[test]
fn official_member_sizes_bound_every_member() {
    use nin_data::{max_archive_bytes, max_member_bytes};
    assert_eq!(
        max_member_bytes(Dataset::Cifar10, "data_batch_1.bin"),
        30_730_000
    );
    assert_eq!(
        max_member_bytes(Dataset::Cifar10, "test_batch.bin"),
        30_730_000
    );
    assert_eq!(
        max_member_bytes(Dataset::Cifar100, "train.bin"),
        153_700_000
    );
    assert_eq!(max_member_bytes(Dataset::Cifar100, "test.bin"), 30_740_000);
    assert_eq!(
        max_member_bytes(Dataset::Cifar10, "batches.meta.txt"),
        64 << 10
    );
    // The official archives (170,052,171 and 169,001,437 bytes) fit, with room to spare.
    assert!(max_archive_bytes(Dataset::Cifar10) > 184_400_000);
    assert!(max_archive_bytes(Dataset::Cifar100) > 184_500_000);
}

#[test]
fn oversized_archive_file_is_refused_before_reading() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cifar-10-binary.tar.gz");
    // Sparse: a terabyte on paper, nothing on disk.
    std::fs::File::create(&path)?.set_len(1 << 40)?;
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { size, .. } if size == 1 << 40),
        "{err}"
    );
    assert!(
        err.to_string().contains("cifar-10-binary.tar.gz")
            && err.to_string().contains("CIFAR-10 archive"),
        "{err}"
    );
    Ok(())
}

#[test]
fn gzip_bomb_is_refused_once_past_the_largest_archive() -> TestResult {
    use std::io::Write;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bomb.tar.gz");
    // A few hundred kilobytes that inflate past every CIFAR-10 archive: a valid archive, then
    // zeros (which a tar reader takes for its end, so only the drain of the gzip layer sees them).
    let mut gz =
        flate2::write::GzEncoder::new(std::fs::File::create(&path)?, flate2::Compression::best());
    gz.write_all(&tar_bytes(&cifar10_members()))?;
    let zeros = vec![0u8; 1 << 20];
    let limit = nin_data::max_archive_bytes(Dataset::Cifar10);
    for _ in 0..=(limit >> 20) {
        gz.write_all(&zeros)?;
    }
    gz.finish()?;
    assert!(std::fs::metadata(&path)?.len() < 1 << 20);
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: l, .. } if l == limit),
        "{err}"
    );
    assert!(
        err.to_string().contains("bomb.tar.gz")
            && err.to_string().contains("decompressed CIFAR-10 archive"),
        "{err}"
    );
    Ok(())
}

#[cfg(unix)]
#[test]
fn endless_archive_is_an_error() {
    // Not a regular file, so its size says nothing: the gzip layer refuses it at once.
    let err =
        nin_data::read_archive(std::path::Path::new("/dev/zero"), Dataset::Cifar10).unwrap_err();
    assert!(matches!(err, Error::CorruptGzip { .. }), "{err}");
}

#[test]
fn oversized_record_file_in_extracted_folder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let archive = write_archive(dir.path(), "c.tar.gz", &cifar10_members());
    let folder = nin_data::extract(&archive, Dataset::Cifar10, dir.path())?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(folder.join("data_batch_4.bin"))?
        .set_len(1 << 40)?;
    let err = load_archive(&folder).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                limit: 30_730_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("data_batch_4.bin")
            && err.to_string().contains("CIFAR-10 record file"),
        "{err}"
    );
    Ok(())
}

#[cfg(unix)]
#[test]
fn endless_record_file_in_extracted_folder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let archive = write_archive(dir.path(), "c.tar.gz", &cifar10_members());
    let folder = nin_data::extract(&archive, Dataset::Cifar10, dir.path())?;
    std::fs::remove_file(folder.join("batches.meta.txt"))?;
    std::os::unix::fs::symlink("/dev/zero", folder.join("batches.meta.txt"))?;
    let err = load_archive(&folder).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: 65_536, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("batches.meta.txt"), "{err}");
    Ok(())
}

#[test]
fn duplicate_member_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut m = cifar10_members();
    m.push(file(
        "./cifar-10-batches-bin/data_batch_2.bin",
        records10(&[9, 9], 1),
    ));
    let path = write_archive(dir.path(), "dup.tar.gz", &m);
    let err = load_archive(&path).unwrap_err();
    assert!(
        matches!(err, Error::DuplicateMember { ref member, .. } if member == "cifar-10-batches-bin/data_batch_2.bin"),
        "{err}"
    );
    assert!(
        err.to_string().contains("dup.tar.gz") && err.to_string().contains("more than once"),
        "{err}"
    );
    let err = nin_data::extract(&path, Dataset::Cifar10, &dir.path().join("out")).unwrap_err();
    assert!(matches!(err, Error::DuplicateMember { .. }), "{err}");
    Ok(())
}

/// A message fit for a terminal: no control characters, no replacement characters from bytes
/// that were not text, and not a screenful.
fn assert_printable(msg: &str) {
    assert!(
        msg.chars().all(|c| !c.is_control() && c != '\u{fffd}') && msg.len() < 600,
        "{msg:?}"
    );
}

#[test]
fn gzip_of_garbage_does_not_echo_raw_bytes() -> TestResult {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("garbage.tar.gz");
    for seed in 0..20 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let garbage: Vec<u8> = (0..2048).map(|_| rng.random()).collect();
        std::fs::write(&path, gz(&garbage))?;
        let err = load_archive(&path).unwrap_err();
        assert!(
            matches!(err, Error::CorruptTar { .. } | Error::CorruptGzip { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("garbage.tar.gz"), "{msg}");
        assert_printable(&msg);
    }
    // A header whose name and numeric fields are garbage: the tar reader quotes them.
    let mut tar = tar_bytes(&cifar10_members()[..1]);
    for (i, b) in tar[..500].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) | 0x80;
    }
    std::fs::write(&path, gz(&tar))?;
    let err = load_archive(&path).unwrap_err();
    assert_printable(&err.to_string());
    Ok(())
}

#[test]
fn every_cause_is_printed_once() -> TestResult {
    use std::error::Error as _;
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&folder)?;
    // A folder where a record file should be: an IO error with an OS cause.
    std::fs::create_dir(folder.join("data_batch_1.bin"))?;
    std::fs::write(folder.join("batches.meta.txt"), b"x")?;
    let err = load_archive(&folder).unwrap_err();
    let mut chain = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(c) = cause {
        chain.push(c.to_string());
        cause = c.source();
    }
    assert!(chain[0].contains("data_batch_1.bin"), "{chain:?}");
    // No link repeats the next one: anyhow's `{:#}` would print it twice.
    for pair in chain.windows(2) {
        assert!(!pair[0].contains(&pair[1]), "{chain:?}");
    }
    assert!(chain.len() >= 2, "{chain:?}");
    Ok(())
}

#[test]
fn whitening_file_is_bounded_and_checked() -> TestResult {
    use nin_data::{Zca, IMAGE_BYTES};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("whitening.safetensors");
    std::fs::write(&path, b"not a safetensors file")?;
    let err = Zca::load(&path).unwrap_err();
    assert!(matches!(err, Error::Whitening { .. }), "{err}");
    assert!(err.to_string().contains("whitening.safetensors"), "{err}");
    // A header that declares more than the file holds.
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, &bytes)?;
    assert!(matches!(
        Zca::load(&path).unwrap_err(),
        Error::Whitening { .. }
    ));
    std::fs::File::create(&path)?.set_len(1 << 40)?;
    let err = Zca::load(&path).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { what, .. } if what == "whitening file"),
        "{err}"
    );
    // Saving is atomic: the file appears whole, and nothing else is left in the folder.
    let zca = Zca {
        gcn_scale: 55.0,
        mean: vec![0.5; IMAGE_BYTES],
        matrix: vec![0.0; IMAGE_BYTES * IMAGE_BYTES],
    };
    zca.save(&path)?;
    assert_eq!(Zca::load(&path)?, zca);
    let names: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, vec!["whitening.safetensors"]);
    Ok(())
}
