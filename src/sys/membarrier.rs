//! Asymmetric memory barriers between processes (`membarrier(2)`).
//!
//! A sender that publishes a ring record and then checks whether the
//! receiver sleeps needs a full fence between its store and its load
//! (Dekker's pattern), and on x86 that fence waits until the record's cache
//! line has been taken back from the receiver's core: about a third of a
//! streaming sender's time here. The expensive side can be moved to the
//! rare party instead. Every process registers for
//! `MEMBARRIER_CMD_GLOBAL_EXPEDITED` at start-up; a receiver about to sleep
//! then issues one `membarrier`, which makes every registered process pass
//! a full barrier before it returns, and a sender needs only to keep the
//! compiler from reordering its store and load. The argument: the barrier
//! falls somewhere in the sender's run. If its record store came before,
//! the store is visible when the receiver re-checks its rings; if after,
//! so is its load of `sleeping`, which then sees the receiver's `1`.

use std::sync::OnceLock;

static REGISTERED: OnceLock<bool> = OnceLock::new();

fn membarrier(cmd: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes two integers (command, flags) and a CPU id
    // that these commands ignore; it reads and writes no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0u32, 0i32) }
}

/// Registers this process for expedited global barriers, once; whether it
/// is (the kernel supports them and agreed). Until this returned `true`, a
/// sender must fence: another process's barrier would not reach it.
pub(crate) fn register() -> bool {
    *REGISTERED.get_or_init(|| {
        let wanted =
            libc::MEMBARRIER_CMD_GLOBAL_EXPEDITED | libc::MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED;
        let supported = membarrier(libc::MEMBARRIER_CMD_QUERY);
        supported >= 0
            && supported & wanted as libc::c_long == wanted as libc::c_long
            && membarrier(libc::MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0
    })
}

/// Makes every registered process (every running thread of it) pass a full
/// memory barrier before this returns; `false` if the kernel refused.
pub(crate) fn global() -> bool {
    membarrier(libc::MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registering_is_idempotent_and_barriers_work_once_registered() {
        let first = register();
        assert_eq!(register(), first);
        if first {
            assert!(global());
        }
    }
}
