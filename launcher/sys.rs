//! The launcher's few system calls: signalling ranks and tying their lives to ours.

use nix::sys::signal::{kill as nix_kill, Signal};
use nix::unistd::Pid;
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

/// The child gets SIGKILL if the launcher dies (PR_SET_PDEATHSIG).
pub(crate) fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit via the error path);
    // it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("launcher exited during start-up"));
            }
            Ok(())
        });
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
