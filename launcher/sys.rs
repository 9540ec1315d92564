//! The launcher's few system calls: signalling ranks and tying their lives to ours.

use courier::bootstrap::store::CardStore;
use nix::sys::signal::{kill as nix_kill, Signal};
use nix::unistd::Pid;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Sends `sig` to a rank: to its whole process group when it leads one.
pub(crate) fn kill(pid: u32, own_group: bool, sig: i32) {
    let Ok(signal) = Signal::try_from(sig) else {
        return;
    };
    let Ok(pid) = i32::try_from(pid) else { return };
    let target = if own_group {
        Pid::from_raw(-pid)
    } else {
        Pid::from_raw(pid)
    };
    // ESRCH (already gone) is fine.
    let _ = nix_kill(target, signal);
}

/// Prepares the child before exec: it gets SIGKILL if the launcher dies
/// (PR_SET_PDEATHSIG), is bound to `core` if one is given, and keeps
/// descriptor `inherit` (the node's card store) across exec.
pub(crate) fn prepare_child(cmd: &mut Command, core: Option<usize>, inherit: Option<RawFd>) {
    let parent = std::process::id();
    let mut cpus = nix::sched::CpuSet::new();
    let bind = core.is_some_and(|c| cpus.set(c).is_ok());
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, sched_setaffinity, fcntl); the
    // CPU set is built before the fork, so it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("launcher exited during start-up"));
            }
            if let Some(fd) = inherit {
                CardStore::inherit(fd)?;
            }
            if bind {
                // Binding is an optimisation: a refusal (cgroup limits) is not fatal.
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus);
            }
            Ok(())
        });
    }
}

/// The cores this process may run on, in order.
pub(crate) fn usable_cores() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// How long ranks get between SIGTERM and SIGKILL (`COURIER_KILL_GRACE_MS`, default 2000).
pub(crate) fn kill_grace() -> Duration {
    let ms = std::env::var("COURIER_KILL_GRACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    Duration::from_millis(ms)
}

/// The conventional name of a signal number.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("unknown signal")
}
