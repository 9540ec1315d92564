//! What a completed receive or a probe tells about its message.

use crate::error::{Error, Result};
use crate::ids::Tag;
use bytemuck::Pod;

/// The `source` of an empty [`Status`] (a send's, or a request's collected
/// before): no rank, like MPI's `MPI_ANY_SOURCE` in an empty status.
pub const NO_SOURCE: usize = usize::MAX;

/// The `tag` of an empty [`Status`]: above [`TAG_UB`](crate::TAG_UB), so never a message's tag.
pub const NO_TAG: Tag = u32::MAX;

/// What a completed receive or a probe tells about its message.
///
/// ```
/// let universe = courier::init()?;
/// let world = universe.world();
/// let me = world.rank();
/// world.send(&[1.0f64, 2.0, 3.0], me, 4)?;
/// let probed = world.probe(me, 4)?;
/// assert_eq!((probed.source, probed.tag, probed.bytes), (me, 4, 24));
/// assert_eq!(probed.count::<f64>()?, 3);
/// assert!(probed.count::<[u8; 5]>().is_err()); // 24 bytes are not whole 5-byte elements
/// let mut buf = [0f64; 8];
/// let status = world.recv(&mut buf, me, 4)?;
/// assert_eq!(status.count::<f64>()?, 3);
/// # Ok::<(), courier::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Sender's rank in the communicator ([`NO_SOURCE`] in an empty status).
    pub source: usize,
    /// The message's tag ([`NO_TAG`] in an empty status).
    pub tag: Tag,
    /// Length of the message in bytes (0 in an empty status).
    pub bytes: usize,
}

impl Status {
    /// The status of an operation that received nothing (a send): MPI's
    /// empty status.
    pub(crate) fn empty() -> Self {
        Status {
            source: NO_SOURCE,
            tag: NO_TAG,
            bytes: 0,
        }
    }

    /// Whether this is an empty status (of a send), which names no message.
    pub fn is_empty(&self) -> bool {
        self.source == NO_SOURCE
    }

    /// Number of `T` elements in the message (`MPI_Get_count`); an error
    /// when its length is not a whole number of `T`s.
    pub fn count<T: Pod>(&self) -> Result<usize> {
        let elem = std::mem::size_of::<T>();
        if elem == 0 {
            return Ok(0);
        }
        if self.bytes % elem != 0 {
            return Err(Error::LengthMismatch {
                bytes: self.bytes,
                elem_size: elem,
            });
        }
        Ok(self.bytes / elem)
    }
}
