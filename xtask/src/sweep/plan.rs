//! Sweep plans: the TOML file a sweep is declared in, checked key by key, and its expansion into
//! runs with stable ids (the same plan always gives the same runs in the same order, which is
//! what lets a rerun skip finished runs and a SLURM array task find its run by index).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nin_format::Recipe;
use serde::{Deserialize, Serialize};

/// The environment variable that overrides a plan's `data` (CI points it at its own copy).
pub const DATA_ENV: &str = "NIN_SWEEP_DATA";

/// A plan file as written (`sweeps/*.toml`); every table refuses keys it does not know.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: String,
    #[serde(default)]
    description: String,
    /// `--data` of every run: an archive, or a folder holding the datasets' archives; relative to
    /// the plan file's folder. Absent: nin's cache (downloading on first use).
    data: Option<PathBuf>,
    grid: GridFile,
    recipe: Option<toml::Table>,
    #[serde(default)]
    variants: Vec<VariantFile>,
    /// Changes for one preset only (`[per_model.drnin_l3] recipe = { epochs = 4 }`): an
    /// equal-minutes comparison gives a costlier family fewer epochs, and a family the plan's
    /// recipe does not suit its own architecture knobs (`model_args = { dropout = 0.0 }`).
    #[serde(default)]
    per_model: BTreeMap<String, PerModelFile>,
    #[serde(default)]
    run: RunFile,
    #[serde(default)]
    resources: ResourcesFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    models: Vec<String>,
    datasets: Vec<String>,
    #[serde(default = "default_seeds")]
    seeds: Vec<u64>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantFile {
    id: String,
    recipe: Option<toml::Table>,
    model_args: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerModelFile {
    #[serde(default)]
    recipe: toml::Table,
    model_args: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunFile {
    limit_train: Option<usize>,
    limit_eval: Option<usize>,
    val: Option<usize>,
    checkpoint_every: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesFile {
    threads: Option<usize>,
    memory: Option<String>,
    time_limit: Option<String>,
    #[serde(default)]
    gpus: usize,
    /// SLURM: at most this many array tasks at once (`--array=0-N%K`).
    max_parallel: Option<usize>,
    /// SLURM: `--partition`.
    partition: Option<String>,
}

/// What one run needs from the machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// `--threads` of each run (local default: the cores split between `--jobs`).
    pub threads: Option<usize>,
    /// Memory of one run in MiB (SLURM `--mem`; locally a note only).
    pub memory_mb: Option<u64>,
    /// Wall-clock limit of one attempt, in seconds; past it the run is stopped with a checkpoint
    /// and recorded as failed.
    pub time_limit_s: Option<u64>,
    /// GPUs of one run (SLURM `--gpus`); runs use `--device cuda` when > 0.
    pub gpus: usize,
    /// SLURM: array tasks at once.
    pub max_parallel: Option<usize>,
    /// SLURM partition.
    pub partition: Option<String>,
}

/// One run of a sweep: everything needed to start it with `nin train`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Stable id: `<model>_<dataset>_s<seed>[_<variant>]`; also the run folder's name.
    pub id: String,
    /// Preset as the plan names it.
    pub model: String,
    /// `cifar10` or `cifar100`.
    pub dataset: String,
    /// Run seed.
    pub seed: u64,
    /// Variant id, when the plan has variants.
    pub variant: Option<String>,
    /// The fully resolved recipe (passed to `nin train` as a JSON file).
    pub recipe: Recipe,
    /// The recipe keys the plan changed, for the report (`key=value` each).
    pub overrides: Vec<String>,
    /// `--model-args`, as JSON.
    pub model_args: Option<serde_json::Value>,
    /// `--data`.
    pub data: Option<PathBuf>,
    /// `--limit-train`.
    pub limit_train: Option<usize>,
    /// `--limit-eval`.
    pub limit_eval: Option<usize>,
    /// `--val`.
    pub val: Option<usize>,
    /// `--checkpoint-every`.
    pub checkpoint_every: Option<usize>,
}

/// A checked, expanded plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The sweep's name: its folder under the runs folder.
    pub name: String,
    /// What the sweep compares.
    pub description: String,
    /// The plan file it came from.
    pub source: PathBuf,
    /// Every run, in array-index order.
    pub runs: Vec<RunSpec>,
    /// Resources of each run.
    pub resources: Resources,
}

/// Reads, checks and expands the plan at `path`; `known_models` are the zoo's presets (from
/// `nin list --json`), checked when given.
pub fn load(path: &Path, known_models: Option<&[String]>) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the plan {}", path.display()))?;
    if text.trim().is_empty() {
        bail!("plan {}: the file is empty", path.display());
    }
    // Absolute, so that runs started from any folder (SLURM tasks) find the data.
    let path =
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let data_override = std::env::var_os(DATA_ENV)
        .map(|d| std::path::absolute(PathBuf::from(d)))
        .transpose()
        .with_context(|| format!("resolving ${DATA_ENV}"))?;
    parse(&text, &path, known_models, data_override)
        .with_context(|| format!("plan {}", path.display()))
}

/// [`load`] on a plan's text (`path` only resolves relative paths and names the source).
pub fn parse(
    text: &str,
    path: &Path,
    known_models: Option<&[String]>,
    data_override: Option<PathBuf>,
) -> anyhow::Result<Plan> {
    let file: PlanFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    check_id("name", &file.name)?;
    let grid = &file.grid;
    for (key, len) in [
        ("grid.models", grid.models.len()),
        ("grid.datasets", grid.datasets.len()),
        ("grid.seeds", grid.seeds.len()),
    ] {
        if len == 0 {
            bail!("{key}: the grid is empty: list at least one value");
        }
    }
    for d in &grid.datasets {
        if d != "cifar10" && d != "cifar100" {
            bail!("grid.datasets: unknown dataset `{d}`: expected cifar10 or cifar100");
        }
    }
    for m in &grid.models {
        if let Some(known) = known_models {
            if !known.contains(m) {
                bail!(
                    "grid.models: unknown model `{m}`: the zoo has {} (nin list)",
                    known.join(", ")
                );
            }
        }
    }
    for (key, values) in [
        ("grid.models", &grid.models),
        ("grid.datasets", &grid.datasets),
    ] {
        if let Some(dup) = first_duplicate(values.iter()) {
            bail!("{key}: `{dup}` is listed twice");
        }
    }
    if let Some(dup) = first_duplicate(grid.seeds.iter()) {
        bail!("grid.seeds: {dup} is listed twice");
    }

    for model in file.per_model.keys() {
        if !grid.models.contains(model) {
            bail!(
                "per_model.{model}: `{model}` is not in grid.models ({})",
                grid.models.join(", ")
            );
        }
        if file.per_model[model].recipe.contains_key("name") {
            bail!("per_model.{model}.recipe.name: a preset changes keys of the plan's recipe, it cannot name another");
        }
    }

    let base_table = file.recipe.clone().unwrap_or_default();
    let base_name = match base_table.get("name") {
        None => nin_format::DEFAULT_RECIPE.to_string(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => bail!("recipe.name: expected a recipe name string, got {other:?}"),
    };
    let base = Recipe::by_name(&base_name).map_err(|e| anyhow::anyhow!("recipe.name: {e}"))?;
    let mut base_overrides = base_table.clone();
    base_overrides.remove("name");

    let mut variants: Vec<(Option<String>, toml::Table, Option<serde_json::Value>)> = Vec::new();
    if file.variants.is_empty() {
        variants.push((None, toml::Table::new(), None));
    } else {
        let mut seen = BTreeSet::new();
        for v in &file.variants {
            check_id("variants.id", &v.id)?;
            if !seen.insert(v.id.clone()) {
                bail!("variants.id: `{}` is used twice", v.id);
            }
            let model_args = v
                .model_args
                .as_ref()
                .map(|t| serde_json::to_value(t).context("variants.model_args"))
                .transpose()?;
            variants.push((
                Some(v.id.clone()),
                v.recipe.clone().unwrap_or_default(),
                model_args,
            ));
        }
    }

    let resources = resources(&file.resources)?;
    let data = data_override.or_else(|| {
        file.data.as_ref().map(|d| {
            if d.is_absolute() {
                d.clone()
            } else {
                normalize(&path.parent().unwrap_or(Path::new(".")).join(d))
            }
        })
    });
    for (key, v) in [
        ("run.limit_train", file.run.limit_train),
        ("run.limit_eval", file.run.limit_eval),
        ("run.val", file.run.val),
    ] {
        if v == Some(0) {
            bail!("{key}: must be > 0, got 0");
        }
    }

    let mut runs = Vec::new();
    for dataset in &grid.datasets {
        for model in &grid.models {
            for (variant, recipe_table, model_args) in &variants {
                let mut overrides_table = base_overrides.clone();
                if let Some(per_model) = file.per_model.get(model) {
                    for (k, v) in &per_model.recipe {
                        overrides_table.insert(k.clone(), v.clone());
                    }
                }
                let key_prefix = match variant {
                    Some(id) => format!("variants[{id}].recipe"),
                    None if file.per_model.contains_key(model) => {
                        format!("per_model.{model}.recipe")
                    }
                    None => "recipe".to_string(),
                };
                for (k, v) in recipe_table {
                    overrides_table.insert(k.clone(), v.clone());
                }
                // A variant may start from another named recipe (`recipe = { name = "modern" }`);
                // the plan's [recipe] changes apply to it too, then the variant's own.
                let variant_base = match overrides_table.remove("name") {
                    None => base.clone(),
                    Some(toml::Value::String(name)) => Recipe::by_name(&name)
                        .map_err(|e| anyhow::anyhow!("{key_prefix}.name: {e}"))?,
                    Some(other) => {
                        bail!("{key_prefix}.name: expected a recipe name string, got {other:?}")
                    }
                };
                let (recipe, overrides) =
                    apply_overrides(&variant_base, &overrides_table, &key_prefix)?;
                let model_args = merged_model_args(
                    file.per_model
                        .get(model)
                        .and_then(|p| p.model_args.as_ref()),
                    model_args.as_ref(),
                    model,
                )?;
                for seed in &grid.seeds {
                    let mut id = format!("{model}_{dataset}_s{seed}");
                    if let Some(v) = variant {
                        id.push('_');
                        id.push_str(v);
                    }
                    runs.push(RunSpec {
                        id,
                        model: model.clone(),
                        dataset: dataset.clone(),
                        seed: *seed,
                        variant: variant.clone(),
                        recipe: recipe.clone(),
                        overrides: overrides.clone(),
                        model_args: model_args.clone(),
                        data: data.clone(),
                        limit_train: file.run.limit_train,
                        limit_eval: file.run.limit_eval,
                        val: file.run.val,
                        checkpoint_every: file.run.checkpoint_every,
                    });
                }
            }
        }
    }
    // Seed-major order: every model's first seed runs before any second seed, so a sweep that
    // stops early (a session ends, a time limit hits) still holds one whole comparison. The sort
    // is stable: within a seed, runs keep the grid's model, dataset and variant order.
    runs.sort_by_key(|run| grid.seeds.iter().position(|s| *s == run.seed));
    Ok(Plan {
        name: file.name,
        description: file.description,
        source: path.to_path_buf(),
        runs,
        resources,
    })
}

/// The base recipe with `table`'s keys merged in: every key must be a field of the recipe (nested
/// tables such as `augment` or `optimizer` are merged field by field), and the result must pass
/// the recipe's own checks.
fn apply_overrides(
    base: &Recipe,
    table: &toml::Table,
    key_prefix: &str,
) -> anyhow::Result<(Recipe, Vec<String>)> {
    let mut json = serde_json::to_value(base).context("serialising the base recipe")?;
    let mut overrides = Vec::new();
    for (key, value) in table {
        let value = serde_json::to_value(value).context("converting a TOML value")?;
        merge(
            &mut json,
            key,
            value,
            &format!("{key_prefix}.{key}"),
            &mut overrides,
        )?;
    }
    if let Some(obj) = json.as_object_mut() {
        // The name the run records says which recipe it started from.
        if !overrides.is_empty() {
            obj.insert("name".into(), serde_json::Value::String(base.name.clone()));
        }
    }
    let recipe: Recipe = serde_json::from_value(json)
        .map_err(|e| anyhow::anyhow!("{key_prefix}: not a valid recipe: {e}"))?;
    recipe
        .validate()
        .map_err(|e| anyhow::anyhow!("{key_prefix}: {e}"))?;
    overrides.sort();
    Ok((recipe, overrides))
}

fn merge(
    target: &mut serde_json::Value,
    key: &str,
    value: serde_json::Value,
    full_key: &str,
    overrides: &mut Vec<String>,
) -> anyhow::Result<()> {
    let Some(obj) = target.as_object_mut() else {
        bail!("{full_key}: the recipe has no such key");
    };
    let Some(slot) = obj.get_mut(key) else {
        let known: Vec<&str> = obj.keys().map(String::as_str).collect();
        bail!(
            "{full_key}: unknown recipe key `{key}`; the recipe has {}",
            known.join(", ")
        );
    };
    // A nested table changes only the fields it names, unless it switches the variant (`kind`).
    match (value, slot.is_object()) {
        (serde_json::Value::Object(fields), true)
            if !fields.contains_key("kind") || fields.get("kind") == slot.get("kind") =>
        {
            for (k, v) in fields {
                merge(slot, &k, v, &format!("{full_key}.{k}"), overrides)?;
            }
        }
        (value, _) => {
            overrides.push(format!(
                "{}={}",
                full_key.rsplit_once("recipe.").map_or(full_key, |x| x.1),
                value
            ));
            *slot = value;
        }
    }
    Ok(())
}

/// A run's `--model-args`: the preset's own (`per_model.<model>.model_args`), then the variant's
/// keys over them, so a variant that changes one knob keeps the preset's others.
fn merged_model_args(
    per_model: Option<&toml::Table>,
    variant: Option<&serde_json::Value>,
    model: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    let Some(per_model) = per_model else {
        return Ok(variant.cloned());
    };
    let mut merged = match serde_json::to_value(per_model)
        .with_context(|| format!("per_model.{model}.model_args"))?
    {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a TOML table serialises to a JSON object"),
    };
    if let Some(serde_json::Value::Object(variant)) = variant {
        merged.extend(variant.clone());
    }
    Ok(Some(serde_json::Value::Object(merged)))
}

fn resources(r: &ResourcesFile) -> anyhow::Result<Resources> {
    if r.threads == Some(0) {
        bail!("resources.threads: must be > 0, got 0");
    }
    if r.max_parallel == Some(0) {
        bail!("resources.max_parallel: must be > 0, got 0");
    }
    let memory_mb = r
        .memory
        .as_deref()
        .map(|m| parse_memory(m).map_err(|e| anyhow::anyhow!("resources.memory: {e}")))
        .transpose()?;
    let time_limit_s = r
        .time_limit
        .as_deref()
        .map(|t| parse_duration(t).map_err(|e| anyhow::anyhow!("resources.time_limit: {e}")))
        .transpose()?;
    Ok(Resources {
        threads: r.threads,
        memory_mb,
        time_limit_s,
        gpus: r.gpus,
        max_parallel: r.max_parallel,
        partition: r.partition.clone(),
    })
}

/// `512M`, `4G`, `2048` (MiB) → MiB.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'G' | 'g')) => (&t[..i], 1024),
        Some((i, 'M' | 'm')) => (&t[..i], 1),
        _ => (t, 1),
    };
    match num.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => Err(format!("expected a size such as 512M or 4G, got `{text}`")),
    }
}

/// `90s`, `15m`, `2h`, `1h30m` → seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("expected a duration such as 90s, 15m, 2h or 1h30m, got `{text}`");
    let mut total = 0u64;
    let mut num = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

/// `a/b/../c` → `a/c`, without touching the filesystem (the data may not exist on this machine).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Ids become folder names and SLURM job names: letters, digits, `_`, `-` and `.` only.
fn check_id(key: &str, id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        bail!("{key}: `{id}` must be 1-64 letters, digits, `_`, `-` or `.` (it names folders)");
    }
    Ok(())
}

fn first_duplicate<T: Ord + Clone>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut seen = BTreeSet::new();
    values.into_iter().find(|v| !seen.insert(v.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
data = "data"
[grid]
models = ["nin", "cic_3d"]
datasets = ["cifar10", "cifar100"]
seeds = [0, 1]
[recipe]
name = "cpu_quick"
epochs = 1
augment = { flip = true }
[[variants]]
id = "lr-low"
recipe = { lr = 0.01 }
[[variants]]
id = "wide"
model_args = { dropout = 0.3 }
[run]
limit_train = 64
[resources]
threads = 1
memory = "2G"
time_limit = "1h30m"
"#;

    fn parse_ok(text: &str) -> anyhow::Result<Plan> {
        let known = vec!["nin".to_string(), "cic_3d".to_string()];
        parse(text, Path::new("sweeps/t.toml"), Some(&known), None)
    }

    fn error_of(text: &str) -> String {
        match parse_ok(text) {
            Ok(_) => "no error".into(),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn per_model_changes_apply_to_that_preset_only() -> anyhow::Result<()> {
        let plan = parse_ok(
            r#"
name = "t"
[grid]
models = ["nin", "cic_3d"]
datasets = ["cifar10"]
[recipe]
epochs = 4
lr = 0.05
[per_model.cic_3d]
recipe = { epochs = 6 }
model_args = { dropout = 0.0 }
"#,
        )?;
        let (nin, cic) = (&plan.runs[0], &plan.runs[1]);
        assert_eq!((nin.model.as_str(), nin.recipe.epochs), ("nin", 4));
        assert_eq!(nin.model_args, None);
        assert_eq!(cic.model_args, Some(serde_json::json!({"dropout": 0.0})));
        assert_eq!((cic.model.as_str(), cic.recipe.epochs), ("cic_3d", 6));
        assert_eq!(cic.recipe.lr, 0.05, "the plan's other changes still apply");
        let with_variant = parse_ok(
            r#"
name = "t"
[grid]
models = ["cic_3d"]
datasets = ["cifar10"]
[[variants]]
id = "wide"
model_args = { dropout = 0.3, widths = [192, 192, 192] }
[per_model.cic_3d]
model_args = { dropout = 0.0, bn = true }
"#,
        )?;
        assert_eq!(
            with_variant.runs[0].model_args,
            Some(serde_json::json!({"dropout": 0.3, "bn": true, "widths": [192, 192, 192]})),
            "a variant's knobs go over the preset's, the preset's others stay"
        );
        let unknown = error_of(
            "name = \"t\"\n[grid]\nmodels = [\"nin\"]\ndatasets = [\"cifar10\"]\n[per_model.cic_3d]\nrecipe = { epochs = 6 }\n",
        );
        assert!(
            unknown.contains("per_model.cic_3d: `cic_3d` is not in grid.models (nin)"),
            "{unknown}"
        );
        Ok(())
    }

    #[test]
    fn grid_expands_into_stable_ids_with_overrides() -> anyhow::Result<()> {
        let plan = parse_ok(GOOD)?;
        assert_eq!(plan.runs.len(), 2 * 2 * 2 * 2);
        let ids: Vec<&str> = plan.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids[0], "nin_cifar10_s0_lr-low");
        assert_eq!(ids[1], "nin_cifar10_s0_wide");
        assert_eq!(ids[2], "cic_3d_cifar10_s0_lr-low");
        assert!(
            ids[..8].iter().all(|id| id.contains("_s0")) && ids[8] == "nin_cifar10_s1_lr-low",
            "every run of seed 0 comes before seed 1: {ids:?}"
        );
        assert_eq!(parse_ok(GOOD)?, plan, "the same plan gives the same runs");
        let first = &plan.runs[0];
        assert_eq!(first.recipe.epochs, 1);
        assert_eq!(first.recipe.lr, 0.01);
        assert!(first.recipe.augment.flip);
        // Fields the plan leaves alone keep the base recipe's values.
        let base = Recipe::by_name("cpu_quick")?;
        assert_eq!(first.recipe.augment.crop_padding, base.augment.crop_padding);
        assert_eq!(
            first.overrides,
            ["augment.flip=true", "epochs=1", "lr=0.01"]
        );
        assert_eq!(plan.runs[1].recipe.lr, base.lr);
        assert_eq!(
            plan.runs[1].model_args,
            Some(serde_json::json!({"dropout": 0.3}))
        );
        assert_eq!(first.data.as_deref(), Some(Path::new("sweeps/data")));
        assert_eq!(
            normalize(Path::new("/a/sweeps/../../shared/./d")),
            Path::new("/shared/d")
        );
        assert_eq!(plan.resources.memory_mb, Some(2048));
        assert_eq!(plan.resources.time_limit_s, Some(5400));
        Ok(())
    }

    #[test]
    fn bad_plans_are_refused_naming_the_key() {
        let cases = [
            (
                GOOD.replace("\"cic_3d\"]", "\"resnet\"]"),
                "unknown model `resnet`",
            ),
            (
                GOOD.replace("\"cifar100\"]", "\"mnist\"]"),
                "unknown dataset `mnist`",
            ),
            (
                GOOD.replace("seeds = [0, 1]", "seeds = []"),
                "grid.seeds: the grid is empty",
            ),
            (
                GOOD.replace("models = [\"nin\", \"cic_3d\"]", "models = []"),
                "grid.models: the grid is empty",
            ),
            (
                GOOD.replace("threads = 1", "threadz = 1"),
                "unknown field `threadz`",
            ),
            (
                GOOD.replace("epochs = 1", "epochz = 1"),
                "recipe.epochz: unknown recipe key `epochz`",
            ),
            (GOOD.replace("epochs = 1", "epochs = 0"), "recipe"),
            (
                GOOD.replace("lr = 0.01", "lr = \"fast\""),
                "variants[lr-low].recipe: not a valid recipe",
            ),
            (
                GOOD.replace("time_limit = \"1h30m\"", "time_limit = \"soon\""),
                "resources.time_limit: expected a duration",
            ),
            (
                GOOD.replace("memory = \"2G\"", "memory = \"lots\""),
                "resources.memory: expected a size",
            ),
            (
                GOOD.replace("id = \"wide\"", "id = \"lr-low\""),
                "`lr-low` is used twice",
            ),
            (
                GOOD.replace("name = \"t\"", "name = \"a/b\""),
                "name: `a/b` must be",
            ),
            (
                GOOD.replace("limit_train = 64", "limit_train = 0"),
                "run.limit_train: must be > 0",
            ),
        ];
        for (text, expected) in cases {
            let err = error_of(&text);
            assert!(err.contains(expected), "expected `{expected}` in: {err}");
        }
    }

    #[test]
    fn shipped_plans_are_valid() -> anyhow::Result<()> {
        let sweeps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sweeps");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&sweeps)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path)?;
                let plan = parse(&text, &path, None, None)
                    .with_context(|| format!("{}", path.display()))?;
                assert!(!plan.runs.is_empty());
                names.push(plan.name);
            }
        }
        names.sort();
        assert_eq!(names, ["cifar10-cpu", "cifar10-mini", "paper", "smoke"]);
        Ok(())
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").is_err());
        assert_eq!(parse_memory("512M"), Ok(512));
        assert_eq!(parse_memory("4G"), Ok(4096));
        assert!(parse_memory("-1G").is_err());
    }
}
