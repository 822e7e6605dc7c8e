//! The CUDA launches of the pooling ops: the forward (recording each maximum's cell on the device
//! when asked) and the backward, a gather over the windows covering each input cell.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr};
use candle_core::{CudaStorage, Layout};

use super::kernels::Planes;
use super::{Pool2dConfig, PoolKind};
use crate::cpu::dispatch_float;
use crate::cuda::{grid, launch, output, slice};

/// `PoolGeom` of kernels.cu: the plane and window geometry, field for field.
#[repr(C)]
#[derive(Clone, Copy)]
struct PoolGeom {
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    k: u32,
    s: u32,
    p: u32,
    avg: u32,
    count_include_pad: u32,
}

// SAFETY: a `repr(C)` struct of `u32`s, laid out as kernels.cu's `PoolGeom`, with no pointers.
unsafe impl DeviceRepr for PoolGeom {}

impl PoolGeom {
    fn new(cfg: &Pool2dConfig, g: Planes) -> candle_core::Result<Self> {
        let u = |v: usize| {
            u32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("pool2d: {v} too large")))
        };
        Ok(Self {
            h: u(g.h)?,
            w: u(g.w)?,
            oh: u(g.oh)?,
            ow: u(g.ow)?,
            k: u(cfg.kernel)?,
            s: u(cfg.stride)?,
            p: u(cfg.padding)?,
            avg: u32::from(cfg.kind == PoolKind::Avg),
            count_include_pad: u32::from(cfg.count_include_pad),
        })
    }
}

/// Pools `x`; with `record` (a max pool on the gradient path), also the in-plane index of each
/// output's maximum, left on the device.
pub(super) fn forward(
    cfg: &Pool2dConfig,
    g: Planes,
    x: &CudaStorage,
    l: &Layout,
    record: bool,
) -> candle_core::Result<(CudaStorage, Option<CudaSlice<u32>>)> {
    let (op, dev, dtype) = ("nin-pool2d", x.device.clone(), x.dtype());
    let geom = PoolGeom::new(cfg, g)?;
    let n = g.n_planes * g.oh * g.ow;
    let record = record && cfg.kind == PoolKind::Max;
    // A one-value stand-in when nothing is recorded: the kernel never writes it.
    let argmax = output::<u32>(&dev, if record { n } else { 1 })?;
    let out = dispatch_float!(dtype, op, |T| {
        let (xs, ys) = (slice::<T>(x, l, op)?, output::<T>(&dev, n)?);
        let n64 = n as u64;
        let record_flag = i32::from(record);
        launch!(
            dev,
            "pool_fwd",
            dtype,
            op,
            grid(n),
            &n64,
            &geom,
            &record_flag,
            &xs,
            &ys,
            &argmax
        )?;
        CudaStorage::wrap_cuda_slice(ys, dev.clone())
    });
    Ok((out, record.then_some(argmax)))
}

/// The input gradient from `dy`: a max pool's from `argmax` when given, else by searching each
/// window of `x` again; an average pool's from `dy` alone.
pub(super) fn backward(
    cfg: &Pool2dConfig,
    g: Planes,
    x: Option<(&CudaStorage, &Layout)>,
    argmax: Option<&CudaSlice<u32>>,
    (dy, dy_l): (&CudaStorage, &Layout),
) -> candle_core::Result<CudaStorage> {
    let (op, dev, dtype) = ("nin-pool2d-backward", dy.device.clone(), dy.dtype());
    let geom = PoolGeom::new(cfg, g)?;
    let n = g.n_planes * g.h * g.w;
    if cfg.kind == PoolKind::Max && x.is_none() && argmax.is_none() {
        candle_core::bail!("{op}: a max pool's gradient needs its input or its recorded maxima");
    }
    let use_argmax = i32::from(argmax.is_some());
    // Stand-ins for the operand the kernel does not read (flagged by `use_argmax` and `avg`).
    let stand_in_idx;
    let argmax = match argmax {
        Some(a) => a,
        None => {
            stand_in_idx = output::<u32>(&dev, 1)?;
            &stand_in_idx
        }
    };
    let out = dispatch_float!(dtype, op, |T| {
        let dys = slice::<T>(dy, dy_l, op)?;
        let stand_in_x;
        let xs = match x {
            Some((s, l)) => slice::<T>(s, l, op)?,
            None => {
                stand_in_x = output::<T>(&dev, 1)?;
                stand_in_x.slice(0..1)
            }
        };
        let dx = output::<T>(&dev, n)?;
        let n64 = n as u64;
        launch!(
            dev,
            "pool_bwd",
            dtype,
            op,
            grid(n),
            &n64,
            &geom,
            &use_argmax,
            &xs,
            argmax,
            &dys,
            &dx
        )?;
        CudaStorage::wrap_cuda_slice(dx, dev.clone())
    });
    Ok(out)
}
