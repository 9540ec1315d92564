//! Cross-memory attach: single-copy transfers between processes
//! (`process_vm_readv`), the large-message path of the shared-memory transport.

use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::io::{self, IoSliceMut};

/// Copies `local.len()` bytes from address `remote` of process `pid` into `local`.
/// EPERM/ENOSYS (Yama, seccomp, old kernels) come back as errors for the
/// caller to fall back on.
pub(crate) fn read(pid: u32, remote: u64, local: &mut [u8]) -> io::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?);
    let mut done = 0usize;
    while done < local.len() {
        let want = local.len() - done;
        let remote_iov = [RemoteIoVec {
            base: (remote as usize).wrapping_add(done),
            len: want,
        }];
        let mut iov = [IoSliceMut::new(&mut local[done..])];
        match process_vm_readv(pid, &mut iov, &remote_iov) {
            Ok(0) => return Err(io::Error::other("process_vm_readv made no progress")),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Copies `local` to address `remote` of process `pid` (the sender's part of
/// a cooperative copy into the receiver's buffer).
pub(crate) fn write(pid: u32, remote: u64, local: &[u8]) -> io::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?);
    let mut done = 0usize;
    while done < local.len() {
        let remote_iov = [RemoteIoVec {
            base: (remote as usize).wrapping_add(done),
            len: local.len() - done,
        }];
        let iov = [std::io::IoSlice::new(&local[done..])];
        match process_vm_writev(pid, &iov, &remote_iov) {
            Ok(0) => return Err(io::Error::other("process_vm_writev made no progress")),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
