//! Transports: move frame bytes between ranks. They know nothing of tags,
//! matching or requests (they never import `engine`).
//!
//! # The contract
//! A link to a peer is a reliable, ordered byte stream, like a TCP stream:
//! * [`Transport::try_write`] takes as many bytes of the gathered buffers as the
//!   link accepts right now and returns that count; `Ok(0)` means "not now"
//!   (not connected yet, or full). Partial writes are normal: the caller keeps
//!   the rest and retries after the next poll.
//! * [`Transport::try_read`] fills as much of `buf` as is available; `Ok(0)`
//!   means nothing is available now.
//! * Bytes arrive in the order written. A link that closes, resets or breaks
//!   its protocol yields `Err(LinkError)`: the peer is lost and the caller
//!   fails what depended on it.
//! * Neither call blocks. Waiting happens in the driver's poll.

pub(crate) mod selfloop;
#[allow(unsafe_code)]
pub(crate) mod shm;
pub(crate) mod tcp;

use crate::ids::Rank;
use std::io::IoSlice;

/// A link is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LinkError(pub(crate) String);

/// A byte-stream transport to a set of peers. See the module docs.
pub(crate) trait Transport {
    /// Writes a prefix of the concatenation of `bufs` to `peer`'s link.
    fn try_write(&mut self, peer: Rank, bufs: &[IoSlice<'_>]) -> Result<usize, LinkError>;
    /// Reads available bytes from `peer`'s link.
    fn try_read(&mut self, peer: Rank, buf: &mut [u8]) -> Result<usize, LinkError>;
}
