//! Every device a test can run on, for tests that run an op or a model on each and compare with
//! the CPU ([`test_device!`](crate::test_device)): the CPU always, and CUDA device 0 when this
//! build has the `cuda` feature (candle's features unify across a build, so `cargo test
//! --features cuda` turns it on here too) and the machine a GPU.
//!
//! Without a GPU the comparison is skipped with a message and the CPU path still runs. CI has no
//! GPU, so a skip cannot fail it; on a GPU machine, `NIN_REQUIRE_GPU=1` (set by
//! scripts/gpu-check.sh) turns a skip into a failure, so that a broken CUDA setup cannot pass
//! as "skipped".

use candle_core::{Device, Tensor};

/// Whether `NIN_REQUIRE_GPU` is set (and not to `0` or `false`).
pub fn gpu_required() -> bool {
    std::env::var("NIN_REQUIRE_GPU")
        .is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// The CPU, then CUDA device 0 if one opens. Without one this prints why the GPU comparison is
/// skipped, or panics under [`gpu_required`].
pub fn test_devices() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    match Device::new_cuda(0) {
        Ok(gpu) => devices.push(gpu),
        Err(e) if gpu_required() => panic!("NIN_REQUIRE_GPU is set, but CUDA device 0: {e}"),
        Err(e) => eprintln!("skipping the GPU comparison: no CUDA device ({e})"),
    }
    devices
}

/// Asserts that `got` (on any device) equals `want` to `tol` relative ([`crate::rel_err`]: the
/// largest difference over the largest `|want|`), naming `what` and the device.
///
/// # Panics
/// When they differ by more, or differ in shape.
pub fn assert_close(what: &str, device: &Device, got: &Tensor, want: &Tensor, tol: f64) {
    let got = got.to_device(&Device::Cpu).unwrap();
    let want = want.to_device(&Device::Cpu).unwrap();
    let err = crate::rel_err(&got, &want);
    assert!(
        err <= tol,
        "{what} on {:?}: relative error {err:.3e} against the CPU, over {tol:e}",
        device.location()
    );
}

/// A test that runs `$body` once per device of [`test_devices`], with `$dev: &Device` bound to
/// it: `test_device!(fn name(device) { … })`. The body computes on `device` and compares with the
/// CPU (with [`assert_close`]); on the CPU itself that comparison is exact, so the CPU path runs
/// and checks itself everywhere, and the GPU's is checked where there is one.
#[macro_export]
macro_rules! test_device {
    ($(#[$meta:meta])* fn $name:ident($dev:ident) $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            for device in $crate::devices::test_devices() {
                let $dev: &candle_core::Device = &device;
                eprintln!("{}: on {:?}", stringify!($name), $dev.location());
                $body
            }
        }
    };
}
