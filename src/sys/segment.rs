//! Shared-memory segments: anonymous memfd files, sealed against resizing,
//! shared with local peers through `/proc/<pid>/fd/<fd>`.
//!
//! No name is ever created in `/dev/shm`, so no crash can leave files behind:
//! a segment lives exactly as long as some process maps or holds it. Opening
//! another process's fd through `/proc` needs the same permission as
//! cross-memory attach (same user, ptrace-read access), so nothing of a job
//! is reachable by another user.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// A mapped segment.
#[derive(Debug)]
pub(crate) struct Segment {
    _file: File,
    map: memmap2::MmapMut,
    fd: i32,
}

impl Segment {
    /// Creates a zeroed segment of `size` bytes, sealed so that nobody can
    /// shrink or grow it (a shrink would turn our accesses into SIGBUS).
    pub(crate) fn create(size: usize) -> io::Result<Self> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        let fd: OwnedFd = memfd_create(
            c"courier-shm",
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )?;
        let file = File::from(fd);
        file.set_len(size as u64)?;
        fcntl(
            file.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        Self::map(file)
    }

    /// Maps the segment that process `pid` holds as descriptor `fd`,
    /// checking that it has the announced `size` and is sealed.
    pub(crate) fn open_peer(pid: u32, fd: i32, size: usize) -> io::Result<Self> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/fd/{fd}"))?;
        if file.metadata()?.len() != size as u64 {
            return Err(io::Error::other(
                "segment size differs from the peer's card",
            ));
        }
        let seals = SealFlag::from_bits_truncate(fcntl(file.as_raw_fd(), FcntlArg::F_GET_SEALS)?);
        if !seals.contains(SealFlag::F_SEAL_SHRINK) {
            return Err(io::Error::other("segment is not sealed against shrinking"));
        }
        Self::map(file)
    }

    fn map(file: File) -> io::Result<Self> {
        // SAFETY: 1. the file is a memfd sealed against shrinking (checked or
        // set above), so the mapping can never lose its backing pages (no
        // SIGBUS); 2. concurrent modification by peers is the point of the
        // segment: all shared access goes through `transport::shm::ring`,
        // which uses atomics for the counters and owns each data byte
        // exclusively between publications.
        let map = unsafe { memmap2::MmapOptions::new().map_mut(&file)? };
        let fd = file.as_raw_fd();
        Ok(Segment {
            _file: file,
            map,
            fd,
        })
    }

    /// Base address (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr().cast_mut()
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Faults in `len` bytes from `offset` for writing (`MADV_POPULATE_WRITE`),
    /// so that the first pass of a ring over its memory does not take a page
    /// fault every 4 KiB. Best effort: older kernels lack the advice.
    pub(crate) fn prefault(&self, offset: usize, len: usize) {
        let _ = self
            .map
            .advise_range(memmap2::Advice::PopulateWrite, offset, len);
    }

    /// The descriptor peers open through `/proc/<pid>/fd/<fd>`.
    pub(crate) fn fd(&self) -> i32 {
        self.fd
    }
}
