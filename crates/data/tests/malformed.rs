//! Every malformed input gets an error naming the file and the problem: one test per case.

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
