//! Cross-memory attach: single-copy transfers between processes
//! (`process_vm_readv`), the large-message path of the shared-memory transport.
//!
//! The kernel copies with the same `rep movsb` as the C library's `memcpy`
//! and so has the same slow case (see [`super::copy`]): a destination 1–63
//! bytes past the source modulo the page (AMD EPYC VM, 64 KiB: 1.3 GB/s
//! at 8–24 bytes against 6.5 at 0 or 32 and more). Where a transfer's two
//! buffers lie so, it goes through [`BOUNCE`]-byte pieces of this
//! thread's scratch memory placed at the remote buffer's page offset: the
//! kernel copies at distance 0, and the local copy to or from the scratch
//! takes `copy`'s pieces.

use super::copy;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::cell::RefCell;
use std::io::{self, IoSliceMut};

/// Bytes a transfer at a slow distance moves per system call, through
/// scratch memory that stays in the cache between the kernel's copy and
/// the local one (a multiple of the page, so that every piece keeps the
/// remote buffer's page offset).
const BOUNCE: usize = 64 * 1024;

thread_local! {
    /// Each thread's scratch for transfers at a slow distance: [`BOUNCE`]
    /// bytes and a page, allocated at the first such transfer.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on [`BOUNCE`] bytes of this thread's scratch that start at the
/// page offset of address `remote`; `None` if the scratch is in use (never
/// so: nothing here calls back into it).
fn with_scratch<R>(remote: u64, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    SCRATCH.with(|cell| {
        let mut scratch = cell.try_borrow_mut().ok()?;
        if scratch.len() < BOUNCE + 4096 {
            scratch.resize(BOUNCE + 4096, 0);
        }
        let at = (remote as usize).wrapping_sub(scratch.as_ptr() as usize) & 4095;
        Some(f(&mut scratch[at..at + BOUNCE]))
    })
}

/// Lets the other ranks of this node read and write this process's memory
/// by cross-memory attach where Yama restricts it (`ptrace_scope` 1,
/// Ubuntu's default: only a process's ancestors may attach to it, so
/// sibling ranks are refused with EPERM): `prctl(PR_SET_PTRACER,
/// PR_SET_PTRACER_ANY)`, as Open MPI's shared-memory transport does
/// before it uses cross-memory attach. The kernel's other checks still
/// hold (same user, `ptrace_scope` 2 or 3 refuse anyway). Returns whether
/// the call took; without Yama it fails with EINVAL and changes nothing.
pub(crate) fn allow_peers() -> bool {
    // SAFETY: PR_SET_PTRACER takes two integer arguments and reads or
    // writes no memory of this process; the unused ones are zero, as the
    // manual asks.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_PTRACER,
            libc::PR_SET_PTRACER_ANY,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    r == 0
}

/// The process `pid` names, for the system calls.
fn process(pid: u32) -> io::Result<Pid> {
    Ok(Pid::from_raw(
        i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?,
    ))
}

/// Copies `local.len()` bytes from address `remote` of process `pid` into `local`.
/// EPERM/ENOSYS (Yama, seccomp, old kernels) come back as errors for the
/// caller to fall back on.
pub(crate) fn read(pid: u32, remote: u64, local: &mut [u8]) -> io::Result<()> {
    let pid = process(pid)?;
    if local.len() > copy::CHUNK && copy::slow_distance(local.as_ptr() as usize, remote as usize) {
        let bounced = with_scratch(remote, |scratch| {
            for (i, piece) in local.chunks_mut(BOUNCE).enumerate() {
                let n = piece.len();
                read_direct(
                    pid,
                    remote.wrapping_add((i * BOUNCE) as u64),
                    &mut scratch[..n],
                )?;
                copy::copy(piece, &scratch[..n]);
            }
            Ok(())
        });
        if let Some(r) = bounced {
            return r;
        }
    }
    read_direct(pid, remote, local)
}

/// [`read`] in as many system calls as the kernel needs, into `local` itself.
fn read_direct(pid: Pid, remote: u64, local: &mut [u8]) -> io::Result<()> {
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

/// Copies, in one system call, each remote range `(address, length)` of
/// process `pid` into the local slice at the same position (equal
/// lengths). Returns how many ranges were copied whole, in order: the
/// kernel never splits a range, so a failure or a short transfer leaves
/// the rest for the caller (to copy one by one, or to give up on).
///
/// Stops before the first range whose buffers lie at a slow distance
/// (see the module's documentation), which [`read`] copies faster alone.
pub(crate) fn read_many(pid: u32, remote: &[(u64, usize)], local: &mut [IoSliceMut<'_>]) -> usize {
    let Ok(pid) = i32::try_from(pid).map(Pid::from_raw) else {
        return 0;
    };
    let k = remote
        .iter()
        .zip(local.iter())
        .position(|(&(base, len), l)| {
            len > copy::CHUNK && copy::slow_distance(l.as_ptr() as usize, base as usize)
        })
        .unwrap_or(remote.len().min(local.len()));
    if k == 0 {
        return 0;
    }
    let (remote, local) = (&remote[..k], &mut local[..k]);
    let remote_iov: Vec<RemoteIoVec> = remote
        .iter()
        .map(|&(base, len)| RemoteIoVec {
            base: base as usize,
            len,
        })
        .collect();
    match process_vm_readv(pid, local, &remote_iov) {
        Ok(n) => {
            let mut whole = 0;
            let mut end = 0usize;
            for &(_, len) in remote {
                end += len;
                if end > n {
                    break;
                }
                whole += 1;
            }
            whole
        }
        Err(_) => 0,
    }
}

/// Copies `local` to address `remote` of process `pid` (the sender's part of
/// a cooperative copy into the receiver's buffer).
pub(crate) fn write(pid: u32, remote: u64, local: &[u8]) -> io::Result<()> {
    let pid = process(pid)?;
    if local.len() > copy::CHUNK && copy::slow_distance(remote as usize, local.as_ptr() as usize) {
        let bounced = with_scratch(remote, |scratch| {
            for (i, piece) in local.chunks(BOUNCE).enumerate() {
                let n = piece.len();
                copy::copy(&mut scratch[..n], piece);
                write_direct(pid, remote.wrapping_add((i * BOUNCE) as u64), &scratch[..n])?;
            }
            Ok(())
        });
        if let Some(r) = bounced {
            return r;
        }
    }
    write_direct(pid, remote, local)
}

/// [`write`] in as many system calls as the kernel needs, from `local` itself.
fn write_direct(pid: Pid, remote: u64, local: &[u8]) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_allowed_exactly_where_yama_is() {
        // PR_SET_PTRACER exists only with Yama; elsewhere the kernel
        // refuses it (EINVAL) and nothing changes.
        let yama = std::path::Path::new("/proc/sys/kernel/yama").exists();
        assert_eq!(allow_peers(), yama);
        assert_eq!(allow_peers(), yama, "and again: the call is idempotent");
    }

    /// A destination `d` bytes past `src` modulo the page, inside `buf`.
    fn at_distance(buf: &mut [u8], src: &[u8], d: usize) -> usize {
        (src.as_ptr() as usize + d).wrapping_sub(buf.as_ptr() as usize) & 4095
    }

    /// Transfers at a slow distance go through the scratch in pieces and
    /// still land whole, both ways, at lengths around the piece size.
    #[test]
    fn transfers_at_a_slow_distance_copy_every_byte_both_ways() {
        let me = std::process::id();
        let src: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let mut buf = vec![0u8; 300_000 + 4096];
        let mut probe = [0u8; 8];
        if read(me, src.as_ptr() as u64, &mut probe).is_err() {
            return; // cross-memory attach refused here
        }
        for len in [
            2049usize,
            BOUNCE - 1,
            BOUNCE,
            BOUNCE + 1,
            3 * BOUNCE + 77,
            300_000,
        ] {
            for d in [16usize, 1, 63, 0, 64] {
                buf.fill(0);
                let at = at_distance(&mut buf, &src, d);
                let dst = &mut buf[at..at + len];
                assert_eq!(
                    copy::slow_distance(dst.as_ptr() as usize, src.as_ptr() as usize),
                    (1..64).contains(&d)
                );
                read(me, src.as_ptr() as u64, dst).expect("read");
                assert!(dst == &src[..len], "read: len {len} distance {d}");
                assert!(buf[..at].iter().chain(&buf[at + len..]).all(|&b| b == 0));
                // Back the other way: `write` into `out` from `buf`'s copy.
                let mut out = vec![0u8; len + 4096];
                let from = &buf[at..at + len];
                let o = (from.as_ptr() as usize + d).wrapping_sub(out.as_ptr() as usize) & 4095;
                write(me, out[o..].as_mut_ptr() as u64, from).expect("write");
                assert!(
                    out[o..o + len] == src[..len],
                    "write: len {len} distance {d}"
                );
                assert!(out[..o].iter().chain(&out[o + len..]).all(|&b| b == 0));
            }
        }
    }

    /// `read_many` leaves a range at a slow distance (and those after it)
    /// to `read`.
    #[test]
    fn read_many_stops_before_a_range_at_a_slow_distance() {
        let me = std::process::id();
        let src: Vec<u8> = (0..20_000u32).map(|i| (i % 249) as u8).collect();
        let mut a = vec![0u8; 4096];
        let mut big = vec![0u8; 8192 + 4096];
        let at = at_distance(&mut big, &src[4096..], 16);
        let b = &mut big[at..at + 8192];
        let base = src.as_ptr() as u64;
        let n = read_many(
            me,
            &[(base, 4096), (base + 4096, 8192)],
            &mut [IoSliceMut::new(&mut a), IoSliceMut::new(b)],
        );
        if n == 0 {
            return; // cross-memory attach refused here
        }
        assert_eq!(n, 1);
        assert_eq!(&a[..], &src[..4096]);
    }

    /// Several ranges of this very process in one call; a range that
    /// cannot be read ends the count there.
    #[test]
    fn read_many_counts_the_ranges_copied_whole() {
        let src: Vec<u8> = (0..64u8).collect();
        let (mut a, mut b) = ([0u8; 16], [0u8; 8]);
        let me = std::process::id();
        let base = src.as_ptr() as u64;
        let n = read_many(
            me,
            &[(base, 16), (base + 40, 8)],
            &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)],
        );
        if n == 0 {
            // Cross-memory attach refused here (seccomp, Yama): nothing to test.
            return;
        }
        assert_eq!(n, 2);
        assert_eq!(&a[..], &src[..16]);
        assert_eq!(&b[..], &src[40..48]);
        // The second range is unmapped memory (address 8): only the first
        // is copied.
        let (mut c, mut d) = ([0u8; 4], [0u8; 4]);
        let n = read_many(
            me,
            &[(base + 4, 4), (8, 4)],
            &mut [IoSliceMut::new(&mut c), IoSliceMut::new(&mut d)],
        );
        assert_eq!(n, 1);
        assert_eq!(&c[..], &src[4..8]);
    }
}
