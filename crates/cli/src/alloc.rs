//! Allocator tuning for the `nin` process.
//!
//! A training step allocates and frees tensors of tens of megabytes by the hundred. glibc's
//! malloc hands such blocks back to the kernel (`munmap`, heap trimming) as soon as they are
//! freed, so the next step takes a page fault and a kernel zeroing for every 4 KiB of them:
//! profiles showed 15–17 % of a NIN training step in page faults. Keeping freed memory in the
//! process (and serving blocks up to glibc's 32 MiB maximum from the heap) removed most of that,
//! about +20 % images/s at batch 32 (`docs/performance.md`). Peak memory is unchanged: what is
//! kept is reused, not added.

/// Keeps large freed blocks in the process instead of returning them to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and an out-of-range value is refused (returns 0), not undefined.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Other platforms keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

/// Returns the memory [`keep_freed_memory`] kept back to the kernel, so that a following peak
/// measurement (`nin bench`) starts from what is really in use.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only hands free heap pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other platforms keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_memory() {}
