//! The two process calls std does not offer: waiting for a child while also learning its peak
//! memory (`wait4` returns the child's `ru_maxrss`, which no crate wraps with a non-blocking
//! wait), and sending a child SIGTERM (so `nin train` checkpoints before it stops) rather than
//! std's SIGKILL.
#![allow(unsafe_code)]

/// How a child ended, with its peak resident memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Peak resident set size in KiB (Linux's `ru_maxrss` unit).
    pub peak_rss_kib: u64,
}

/// Reaps child `pid` if it has ended (`None` while it runs).
pub fn try_wait(pid: u32) -> std::io::Result<Option<Exit>> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid, exclusively borrowed out-pointers for the call.
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, libc::WNOHANG, &mut usage) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r == 0 {
        return Ok(None);
    }
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Ok(Some(Exit {
        code,
        signal,
        peak_rss_kib: usage.ru_maxrss.max(0) as u64,
    }))
}

/// Sends `signal` to process `pid` (errors ignored: the process may just have exited).
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; `pid` is a child this process spawned
    // and has not reaped, so it cannot name an unrelated process.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// SIGTERM: `nin train` checkpoints and exits 130.
pub const SIGTERM: libc::c_int = libc::SIGTERM;
/// SIGKILL: for a run that ignores SIGTERM past its grace period.
pub const SIGKILL: libc::c_int = libc::SIGKILL;

/// Whether a process with this id exists on this machine (for `status` of local runs).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
