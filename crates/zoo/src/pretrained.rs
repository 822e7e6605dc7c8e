//! Pretrained weights by name: the `arch.tag` table (timm's naming, e.g. `nin_bn.cifar10`), where
//! each tag's weights live, what they measured and how they were made, and `*`/`?` patterns for
//! `nin list`.
//!
//! The table holds only weights that were trained and measured: an entry is added, with its
//! numbers copied from the run's evaluation, when its weights exist.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::registry::MODELS;

/// A repository on the Hugging Face Hub, pinned to a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HubLocation {
    /// `owner/name`.
    pub repo: &'static str,
    /// A commit hash (preferred: the weights can never change under the tag), tag or branch.
    pub revision: &'static str,
}

/// One pretrained model of the registry.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PretrainedTag {
    /// `arch.tag`, e.g. `nin_bn.cifar10`; `arch` is the preset.
    pub name: &'static str,
    /// The preset (`nin_bn`), as in [`MODELS`].
    pub model: &'static str,
    /// `cifar10` or `cifar100`.
    pub dataset: &'static str,
    /// Top-1 accuracy (%) measured with `nin eval` on the full test set.
    pub top1: f64,
    /// Top-5 accuracy (%) on the full test set.
    pub top5: f64,
    /// Top-1 accuracy (%) on the first [`CHECK_IMAGES`] images of the test set, which the
    /// repository's tests measure again: weights, config or preprocessing that drifted from
    /// the run that made the tag show here.
    pub check_top1: f64,
    /// The recipe's name (`paper`, `modern`, …).
    pub recipe: &'static str,
    /// The exact command that trained the weights.
    pub command: &'static str,
    /// Licence of the weights (an SPDX expression).
    pub license: &'static str,
    /// The Hub repository holding the weights, if they are published there.
    pub hub: Option<HubLocation>,
    /// Whether this repository holds them, as a model directory `pretrained/<name>/`
    /// (`config.json`, `model.safetensors`, `README.md`).
    pub in_repo: bool,
}

/// How many images, from the start of the test split, each tag's `check_top1` is measured on.
pub const CHECK_IMAGES: usize = 1000;

/// Every pretrained model, in the order `nin list --pretrained` shows them. Entries are added as
/// weights are trained and measured.
pub static PRETRAINED: &[PretrainedTag] = &[
    PretrainedTag {
        name: "nin_bn.cifar10",
        model: "nin_bn",
        dataset: "cifar10",
        // `nin eval --model nin_bn.cifar10 --data ../shared/data/cifar-10-binary.tar.gz` on the
        // 9,968 test images of that archive (32 of the official 10,000 are missing from it).
        top1: 84.34,
        top5: 99.25,
        check_top1: 86.6,
        recipe: "cpu_bn6",
        command: "nin train --model nin_bn --recipe pretrained/nin_bn.cifar10/recipe.json \
              --dataset cifar10 --seed 0 --threads 2",
        license: "MIT OR Apache-2.0",
        hub: None,
        in_repo: true,
    },
    PretrainedTag {
        name: "nin_bn_s.cifar10",
        model: "nin_bn_s",
        dataset: "cifar10",
        // The last epoch's weights of `nin train --recipe cpu_hour` (the run's own evaluation,
        // and `nin eval --model nin_bn_s.cifar10 --data ../shared/data/cifar-10-binary.tar.gz`,
        // on the 9,968 test images of that archive): 43 minutes on two cores of an AMD EPYC.
        top1: 85.48,
        top5: 99.34,
        check_top1: 87.7,
        recipe: "cpu_hour",
        command:
            "nin train --model nin_bn_s --recipe cpu_hour --dataset cifar10 --seed 0 --threads 2",
        license: "MIT OR Apache-2.0",
        hub: None,
        in_repo: true,
    },
    // The families at an equal CPU budget: seed 0 of `sweeps/cifar10-cpu.toml` (24 to 28 minutes
    // on two cores of an AMD EPYC; docs/results.md), the last epoch's weights. `top1`/`top5` from
    // `nin eval --model TAG --data ../shared/data/cifar-10-binary.tar.gz` (9,968 images), equal to
    // the run's own last evaluation. DrNIN trains without dropout there (with it, 29.7 %).
    PretrainedTag {
        name: "cic_1d.cifar10",
        model: "cic_1d",
        dataset: "cifar10",
        top1: 74.28,
        top5: 98.35,
        check_top1: 77.8,
        recipe: "cpu_fast",
        command:
            "nin train --model cic_1d --recipe cpu_fast --epochs 3 --dataset cifar10 --seed 0 \
              --threads 2",
        license: "MIT OR Apache-2.0",
        hub: None,
        in_repo: true,
    },
    PretrainedTag {
        name: "dcnin_s.cifar10",
        model: "dcnin_s",
        dataset: "cifar10",
        top1: 83.62,
        top5: 99.23,
        check_top1: 85.1,
        recipe: "cpu_fast",
        command:
            "nin train --model dcnin_s --recipe cpu_fast --epochs 4 --dataset cifar10 --seed 0 \
              --threads 2",
        license: "MIT OR Apache-2.0",
        hub: None,
        in_repo: true,
    },
    // NIN exactly as its authors built it (no batch norm), 3 epochs of `cpu_quick`: 18.6 minutes
    // on two cores of an AMD EPYC, 2026-12-02; the paper's architecture, not its accuracy (its
    // 89.6 % takes the `paper` recipe's 300 epochs). `top1`/`top5` as above.
    PretrainedTag {
        name: "nin.cifar10",
        model: "nin",
        dataset: "cifar10",
        top1: 56.33,
        top5: 95.20,
        check_top1: 58.3,
        recipe: "cpu_quick",
        command: "nin train --model nin --recipe cpu_quick --dataset cifar10 --seed 0 --threads 2",
        license: "MIT OR Apache-2.0",
        hub: None,
        in_repo: true,
    },
    PretrainedTag {
        name: "drnin_l3.cifar10",
        model: "drnin_l3",
        dataset: "cifar10",
        top1: 71.70,
        top5: 98.23,
        check_top1: 74.8,
        recipe: "cpu_fast",
        command: "nin train --model drnin_l3 --model-args '{\"dropout\": 0.0}' --recipe \
              pretrained/drnin_l3.cifar10/recipe.json --dataset cifar10 --seed 0 --threads 2",
        license: "MIT OR Apache-2.0",
        hub: None,
        in_repo: true,
    },
];

/// The folder of this source checkout holding the repository's pretrained model directories,
/// `pretrained/` at the workspace root (the path is the one this crate was built from).
pub fn source_pretrained_dir() -> PathBuf {
    let zoo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // crates/zoo → the workspace root.
    zoo.ancestors().nth(2).unwrap_or(zoo).join("pretrained")
}

/// The environment variable naming a folder that holds `<tag>/` model directories, searched
/// before the source checkout (for installed binaries and packaged weights).
pub const PRETRAINED_DIR_ENV: &str = "NIN_PRETRAINED_DIR";

/// The tag called `name` in `table`.
pub fn find_tag<'t>(table: &'t [PretrainedTag], name: &str) -> Option<&'t PretrainedTag> {
    table.iter().find(|t| t.name == name)
}

/// The tags of preset `model` in `table`.
pub fn tags_of<'t>(table: &'t [PretrainedTag], model: &str) -> Vec<&'t PretrainedTag> {
    table.iter().filter(|t| t.model == model).collect()
}

/// Where a tag's weights are, for listings: `hf-hub:owner/name@revision` and/or
/// `pretrained/<tag>/`.
pub fn tag_sources(tag: &PretrainedTag) -> Vec<String> {
    let mut sources = Vec::new();
    if tag.in_repo {
        sources.push(format!("pretrained/{}/", tag.name));
    }
    if let Some(hub) = tag.hub {
        sources.push(format!("hf-hub:{}@{}", hub.repo, hub.revision));
    }
    sources
}

/// What is wrong with the entries of `table`: names that are not `<preset>.<tag>`, unknown
/// presets and datasets, accuracies outside 0–100 or top-5 below top-1, entries without a
/// command, licence or location, and duplicates. Empty when the table is sound.
pub fn check_table(table: &[PretrainedTag]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, t) in table.iter().enumerate() {
        let mut bad = |what: String| problems.push(format!("{}: {what}", t.name));
        match t.name.split_once('.') {
            Some((arch, tag)) if arch == t.model && !tag.is_empty() && !tag.contains('.') => {}
            _ => bad(format!(
                "the name must be `{}.<tag>` (arch.tag, as timm names weights)",
                t.model
            )),
        }
        if !MODELS.iter().any(|m| m.name == t.model) {
            bad(format!("unknown preset `{}`", t.model));
        }
        if !matches!(t.dataset, "cifar10" | "cifar100") {
            bad(format!("unknown dataset `{}`", t.dataset));
        }
        let percent = |x: f64| (0.0..=100.0).contains(&x);
        if !percent(t.top1) || !percent(t.top5) || t.top5 < t.top1 || !percent(t.check_top1) {
            bad(format!(
                "accuracies must be percentages with top-5 ≥ top-1, got {} / {} (check slice {})",
                t.top1, t.top5, t.check_top1
            ));
        }
        for (field, value) in [
            ("recipe", t.recipe),
            ("command", t.command),
            ("license", t.license),
        ] {
            if value.trim().is_empty() {
                bad(format!("{field} is empty"));
            }
        }
        if t.hub.is_none() && !t.in_repo {
            bad("no location: give a Hub repository or a pretrained/ directory".into());
        }
        if table[..i].iter().any(|u| u.name == t.name) {
            bad("listed twice".into());
        }
    }
    problems
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters and `?` for
/// one (shell-style, as `nin list 'drnin*'`). Hand-written: two wildcards over short names do
/// not justify a glob crate.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Greedy matching with backtracking to the last `*`: linear in practice.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &'static str, model: &'static str) -> PretrainedTag {
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
            in_repo: true,
        }
    }

    #[test]
    fn the_shipped_table_is_sound_and_its_directories_exist() {
        assert_eq!(check_table(PRETRAINED), Vec::<String>::new());
        for t in PRETRAINED.iter().filter(|t| t.in_repo) {
            let dir = source_pretrained_dir().join(t.name);
            for file in ["config.json", "model.safetensors", "README.md"] {
                assert!(dir.join(file).is_file(), "{}: {file}", dir.display());
            }
        }
    }

    #[test]
    fn bad_entries_are_named_with_what_is_wrong() {
        let good = tag("nin_bn.cifar10", "nin_bn");
        assert!(check_table(&[good]).is_empty());
        let cases: Vec<(PretrainedTag, &str)> = vec![
            (tag("nin_bn", "nin_bn"), "arch.tag"),
            (tag("nin.cifar10", "nin_bn"), "arch.tag"),
            (tag("nix.cifar10", "nix"), "unknown preset `nix`"),
            (
                PretrainedTag {
                    dataset: "mnist",
                    ..good
                },
                "unknown dataset",
            ),
            (PretrainedTag { top5: 70.0, ..good }, "top-5 ≥ top-1"),
            (
                PretrainedTag {
                    top1: 101.0,
                    ..good
                },
                "percentages",
            ),
            (
                PretrainedTag {
                    check_top1: -1.0,
                    ..good
                },
                "check slice",
            ),
            (
                PretrainedTag {
                    command: " ",
                    ..good
                },
                "command is empty",
            ),
            (
                PretrainedTag {
                    in_repo: false,
                    ..good
                },
                "no location",
            ),
        ];
        for (entry, want) in cases {
            let problems = check_table(&[entry]);
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{entry:?}: {problems:?}"
            );
        }
        assert!(check_table(&[good, good])[0].contains("listed twice"));
    }

    #[test]
    fn wildcards_match_like_the_shell() {
        for (pattern, name, want) in [
            ("drnin*", "drnin_l3", true),
            ("drnin*", "nin", false),
            ("*", "anything", true),
            ("*", "", true),
            ("nin", "nin", true),
            ("nin", "nin_bn", false),
            ("nin?bn", "nin_bn", true),
            ("*.cifar10", "nin_bn.cifar10", true),
            ("*.cifar10", "nin_bn.cifar100", false),
            ("*nin*", "dcnin_s", true),
            ("d*n*_?", "dcnin_s", true),
            ("d*n*_?", "dcnin_sm", false),
            ("**a", "bba", true),
        ] {
            assert_eq!(wildcard_match(pattern, name), want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn sources_say_where_the_weights_are() {
        let t = PretrainedTag {
            hub: Some(HubLocation {
                repo: "nin-zoo/nin_bn.cifar10",
                revision: "0123456789abcdef0123456789abcdef01234567",
            }),
            ..tag("nin_bn.cifar10", "nin_bn")
        };
        assert_eq!(
            tag_sources(&t),
            [
                "pretrained/nin_bn.cifar10/",
                "hf-hub:nin-zoo/nin_bn.cifar10@0123456789abcdef0123456789abcdef01234567"
            ]
        );
        assert_eq!(tags_of(&[t], "nin_bn").len(), 1);
        assert!(tags_of(&[t], "nin").is_empty());
        assert!(find_tag(&[t], "nin_bn.cifar10").is_some());
    }
}
