//! Reading PyTorch checkpoints (`torch.save` files: a zip of a pickle and raw storages). The
//! pickle is parsed by candle's reader (`candle_core::pickle`); the storages are read here, with
//! every size the file declares checked against the archive before anything is allocated, since
//! candle's own loader trusts them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::pickle::TensorInfo;
use candle_core::Tensor;

/// The largest tensor read from a checkpoint: far above any model of the zoo, far below what
/// would exhaust memory.
const MAX_TENSOR_BYTES: u64 = 2 << 30;

/// The entries under which training scripts commonly nest the state dict, tried in this order
/// when the top level holds no tensors.
pub const NESTED_KEYS: [&str; 4] = ["state_dict", "model", "net", "model_state_dict"];

/// The tensors of a checkpoint, by name, and the entry they were found under.
pub struct Checkpoint {
    /// Tensors by their name in the file.
    pub tensors: BTreeMap<String, Tensor>,
    /// The top-level entry holding them (`None`: the top level is the state dict).
    pub key: Option<String>,
}

/// Reads the state dict of the checkpoint at `path`: the top level, or the entry `key`, or
/// (when `key` is `None` and the top level holds no tensors) the first of [`NESTED_KEYS`] that
/// does.
pub fn read_checkpoint(path: &Path, key: Option<&str>) -> anyhow::Result<Checkpoint> {
    let file = std::fs::File::open(path).with_context(|| format!("--pth {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).with_context(|| {
        format!(
            "--pth {}: not a PyTorch checkpoint (torch.save writes a zip archive; \
             files from PyTorch before 1.6 must be re-saved with a newer torch.save)",
            path.display()
        )
    })?;
    // Storages are read as little-endian; torch.save records the byte order it wrote.
    let byteorder = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("/byteorder"))
        .map(|n| n.into_owned());
    if let Some(name) = byteorder {
        let mut order = String::new();
        if let Ok(mut member) = zip.by_name(&name) {
            let _ = member.by_ref().take(16).read_to_string(&mut order);
        }
        if order.trim() == "big" {
            bail!(
                "--pth {}: its storages are big-endian; re-save it on a little-endian machine",
                path.display()
            );
        }
    }
    let (infos, key) = match key {
        Some(k) => {
            let infos = tensor_infos(path, Some(k)).with_context(|| {
                format!(
                    "--pth {} --key {k}: no state dict under that entry",
                    path.display()
                )
            })?;
            (infos, Some(k.to_string()))
        }
        None => {
            let mut found = (tensor_infos(path, None)?, None);
            if found.0.is_empty() {
                for k in NESTED_KEYS {
                    if let Ok(infos) = tensor_infos(path, Some(k)) {
                        if !infos.is_empty() {
                            found = (infos, Some(k.to_string()));
                            break;
                        }
                    }
                }
            }
            found
        }
    };
    if infos.is_empty() {
        bail!(
            "--pth {}: no tensors found {} (expected a state dict, or one under {}; name the entry with --key)",
            path.display(),
            match &key {
                Some(k) => format!("under `{k}`"),
                None => "at the top level".to_string(),
            },
            NESTED_KEYS.map(|k| format!("`{k}`")).join(", ")
        );
    }
    let mut tensors = BTreeMap::new();
    for info in infos {
        let t = read_tensor(&mut zip, &info)
            .with_context(|| format!("--pth {}: tensor `{}`", path.display(), info.name))?;
        if tensors.insert(info.name.clone(), t).is_some() {
            bail!(
                "--pth {}: tensor `{}` is stored twice",
                path.display(),
                info.name
            );
        }
    }
    Ok(Checkpoint { tensors, key })
}

/// The tensors the pickle of `path` describes, under `key`. candle's pickle reader indexes
/// into what the file declares and can panic on a damaged file: the panic is caught and
/// reported as an error, so user input never crashes `nin`.
fn tensor_infos(path: &Path, key: Option<&str>) -> anyhow::Result<Vec<TensorInfo>> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result =
        std::panic::catch_unwind(|| candle_core::pickle::read_pth_tensor_info(path, false, key));
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(infos)) => Ok(infos),
        Ok(Err(e)) => {
            Err(e).with_context(|| format!("--pth {}: reading its pickle", path.display()))
        }
        Err(_) => bail!(
            "--pth {}: its pickle is damaged or not a PyTorch state dict",
            path.display()
        ),
    }
}

/// Reads one tensor's storage from the archive, after checking that the archive member holds
/// all the bytes the tensor declares.
fn read_tensor<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    info: &TensorInfo,
) -> anyhow::Result<Tensor> {
    let layout = &info.layout;
    let fortran = layout.is_fortran_contiguous() && layout.shape().rank() > 1;
    if !layout.is_contiguous() && !fortran {
        bail!(
            "is a strided view ({:?}); save a .contiguous() copy",
            layout.stride()
        );
    }
    let elems = layout.shape().elem_count() as u64;
    let need = (elems)
        .checked_mul(info.dtype.size_in_bytes() as u64)
        .and_then(|b| b.checked_add(layout.start_offset() as u64))
        .filter(|&b| b <= MAX_TENSOR_BYTES)
        .with_context(|| format!("declares {elems} values: larger than any model of the zoo"))?;
    let mut member = zip
        .by_name(&info.path)
        .with_context(|| format!("its storage `{}` is missing from the archive", info.path))?;
    if member.size() < need {
        bail!(
            "needs {need} bytes of storage `{}`, which holds {}",
            info.path,
            member.size()
        );
    }
    std::io::copy(
        &mut member.by_ref().take(layout.start_offset() as u64),
        &mut std::io::sink(),
    )?;
    let mut bytes = vec![0u8; (need - layout.start_offset() as u64) as usize];
    member
        .read_exact(&mut bytes)
        .with_context(|| format!("reading storage `{}`", info.path))?;
    // Storages are little-endian, as Tensor::from_raw_buffer reads them.
    let t = Tensor::from_raw_buffer(&bytes, info.dtype, layout.dims(), &candle_core::Device::Cpu)?;
    if fortran {
        let rank = layout.shape().rank();
        let reversed: Vec<usize> = layout.dims().iter().rev().copied().collect();
        let order: Vec<usize> = (0..rank).rev().collect();
        return Ok(t.reshape(reversed)?.permute(order)?.contiguous()?);
    }
    Ok(t)
}
