//! The operating-system doorway of the runtime: shared-memory segments,
//! futex sleep/wake and cross-memory attach; and memory copies that avoid a
//! slow case of the C library's `memcpy` (`copy`). Everything `unsafe` that
//! talks to the kernel lives here (ring memory access lives in
//! `transport::shm::ring`).

pub(crate) mod cma;
pub(crate) mod copy;
pub(crate) mod futex;
pub(crate) mod membarrier;
pub(crate) mod segment;

/// The CPUs the calling thread may run on (its affinity mask), in order,
/// with the mask itself; `None` when the kernel does not say.
pub(crate) fn cpu_mask() -> Option<(Vec<u32>, nix::sched::CpuSet)> {
    let mask = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let cpus = (0..nix::sched::CpuSet::count())
        .filter(|&c| mask.is_set(c).unwrap_or(false))
        .filter_map(|c| u32::try_from(c).ok())
        .collect();
    Some((cpus, mask))
}

/// Takes ownership of descriptor `fd`, inherited from the process manager
/// (`PMI_FD`), as a Unix stream socket. Fails unless `fd` is an open socket.
pub(crate) fn adopt_unix_stream(fd: i32) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
    if fd < 0 {
        return Err(std::io::Error::other("negative descriptor"));
    }
    // SAFETY: the borrow is used only for the fstat just below, while `fd`
    // is open (fstat fails cleanly with EBADF if it is not).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&borrowed))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(std::io::Error::other("not a socket"));
    }
    // SAFETY: `fd` is an open socket (checked above) that the process
    // manager handed to this process for the PMI conversation; nothing else
    // in this process uses or closes it, so taking ownership is sound.
    Ok(unsafe { std::os::unix::net::UnixStream::from(OwnedFd::from_raw_fd(fd)) })
}

/// Whether process `pid` can still act: it exists and is neither a zombie
/// nor dead (`/proc/<pid>/stat`). A process that cannot act can no longer
/// write into another's memory by cross-memory attach.
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')' (comm may hold any byte).
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
    {
        Some(state) => !matches!(state, "Z" | "X" | "x"),
        None => false,
    }
}
