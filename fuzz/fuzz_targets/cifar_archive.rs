//! A `.tar.gz` handed to `nin --data`: read in memory and extracted to a folder. Any bytes must
//! give the dataset's members or an error, never a panic, an abort on a huge declared size, or a
//! file written outside the target folder.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nin_data::{extract, read_archive, Dataset};

fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nin-fuzz-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let archive = dir.join("cifar-10-binary.tar.gz");
    std::fs::write(&archive, data).expect("scratch write");
    let _ = read_archive(&archive, Dataset::Cifar10);
    let target = dir.join("out");
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(&target).expect("target folder");
    let _ = extract(&archive, Dataset::Cifar10, &target);
    // Nothing may land beside the target folder.
    for entry in std::fs::read_dir(dir).expect("scratch listing") {
        let name = entry.expect("entry").file_name();
        assert!(
            name == "cifar-10-binary.tar.gz" || name == "out",
            "extraction wrote {name:?} outside its folder"
        );
    }
});
