//! The link from a rank to itself: an in-memory byte pipe (cf. MPICH `ch4_self.c`).

use super::{LinkError, Transport};
use crate::ids::Rank;
use std::collections::VecDeque;
use std::io::IoSlice;

/// An unbounded in-memory pipe carrying frames a rank sends to itself.
#[derive(Debug, Default)]
pub(crate) struct SelfLoop {
    bytes: VecDeque<u8>,
}

impl SelfLoop {
    /// Bytes waiting to be read.
    pub(crate) fn pending(&self) -> usize {
        self.bytes.len()
    }
}

impl Transport for SelfLoop {
    fn try_write(&mut self, _peer: Rank, bufs: &[IoSlice<'_>]) -> Result<usize, LinkError> {
        let mut n = 0;
        for b in bufs {
            self.bytes.extend(b.iter().copied());
            n += b.len();
        }
        Ok(n)
    }

    fn try_read(&mut self, _peer: Rank, buf: &mut [u8]) -> Result<usize, LinkError> {
        let n = buf.len().min(self.bytes.len());
        let (a, b) = self.bytes.as_slices();
        let first = n.min(a.len());
        crate::sys::copy::copy(&mut buf[..first], &a[..first]);
        crate::sys::copy::copy(&mut buf[first..n], &b[..n - first]);
        self.bytes.drain(..n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_in_order() {
        let mut s = SelfLoop::default();
        assert_eq!(
            s.try_write(0, &[IoSlice::new(b"ab"), IoSlice::new(b"cde")]),
            Ok(5)
        );
        let mut out = [0u8; 4];
        assert_eq!(s.try_read(0, &mut out), Ok(4));
        assert_eq!(&out, b"abcd");
        assert_eq!(s.pending(), 1);
        assert_eq!(s.try_read(0, &mut out), Ok(1));
        assert_eq!(out[0], b'e');
        assert_eq!(s.try_read(0, &mut out), Ok(0));
    }
}
