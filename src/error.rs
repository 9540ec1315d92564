//! The public error type of the library.
//!
//! Every fallible call returns [`Result<T>`]. Lower layers keep small error
//! types of their own (`engine::ProtocolError`, `bootstrap::BootstrapError`,
//! `std::io::Error` in transports) and are converted here at the API edge.

use std::io;

/// Result alias used throughout the public API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a Courier call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while talking to a peer (or `None` for a local resource).
    #[error("I/O error{}: {source}", peer.map(|p| format!(" with rank {p}")).unwrap_or_default())]
    Io {
        /// The world rank of the peer involved, if any.
        peer: Option<usize>,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The connection to a peer closed while an operation still needed it.
    #[error("rank {rank} is gone: {reason}")]
    PeerLost {
        /// World rank of the lost peer.
        rank: usize,
        /// What was observed (EOF, reset, protocol violation, ...).
        reason: String,
    },
    /// The incoming message does not fit the receive buffer. The message is
    /// kept: a later receive with a large enough buffer gets it.
    #[error("message truncated: the message from rank {rank} with tag {tag} has {incoming} bytes, the receive buffer holds {capacity}")]
    Truncated {
        /// The sender's rank in the receive's communicator.
        rank: usize,
        /// The message's tag.
        tag: u32,
        /// Size of the posted buffer in bytes.
        capacity: usize,
        /// Size of the matched message in bytes.
        incoming: usize,
    },
    /// A message's byte length is not a whole number of elements.
    #[error("message of {bytes} bytes is not a whole number of {elem_size}-byte elements")]
    LengthMismatch {
        /// Received byte count.
        bytes: usize,
        /// `size_of::<T>()` of the receive buffer's element type.
        elem_size: usize,
    },
    /// A rank outside `0..size` was named.
    #[error("invalid rank {rank}: the communicator has {size} ranks")]
    InvalidRank {
        /// The rank given.
        rank: usize,
        /// The communicator size.
        size: usize,
    },
    /// A tag outside the allowed range was given.
    #[error("invalid tag {tag}: tags must be in 0..={max}")]
    InvalidTag {
        /// The tag given.
        tag: u32,
        /// The largest allowed tag.
        max: u32,
    },
    /// Start-up failed: the job's rendezvous service, environment or key was not usable.
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
    /// A peer sent bytes that violate the wire protocol.
    #[error("protocol error from rank {peer}: {detail}")]
    Protocol {
        /// World rank of the offending peer.
        peer: usize,
        /// What was wrong.
        detail: String,
    },
    /// The job is being aborted (by `abort` or by the launcher).
    #[error("the job was aborted (exit code {code})")]
    Aborted {
        /// The exit code the job ends with.
        code: i32,
    },
    /// The arguments of a call do not make sense together.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The call is not allowed in the runtime's current state: `init` called
    /// while a [`Universe`](crate::Universe) exists or after one was
    /// finalized, a communicator used after its universe was finalized, or
    /// a collective started from inside a reduction operation on the same
    /// communicator.
    #[error("invalid use: {0}")]
    InvalidState(String),
    /// Collective argument checking (`COURIER_CHECK=1`) found that the ranks
    /// did not call the same collective with matching arguments. Every rank
    /// of the communicator returns this same error.
    #[error("collective mismatch: {0}")]
    CollectiveMismatch(Box<Mismatch>),
}

/// What [`Error::CollectiveMismatch`] found (boxed: errors stay small, so
/// every `Result` of the library stays cheap to return).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rank {rank} called {found} where rank 0 called {expected} ({argument} differs)")]
pub struct Mismatch {
    /// The first rank (in the communicator) whose call differs from rank 0's.
    pub rank: usize,
    /// Which argument differs (`collective`, `root`, `op`, `element type`, `count`, `counts`).
    pub argument: &'static str,
    /// Rank 0's call.
    pub expected: String,
    /// That rank's call.
    pub found: String,
}

impl Error {
    pub(crate) fn io(peer: Option<usize>, source: io::Error) -> Self {
        Error::Io { peer, source }
    }

    /// A copy of this error, for outcomes handed out more than once (an
    /// I/O error keeps its kind and message).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { peer, source } => Error::Io {
                peer: *peer,
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::PeerLost { rank, reason } => Error::PeerLost {
                rank: *rank,
                reason: reason.clone(),
            },
            Error::Truncated {
                rank,
                tag,
                capacity,
                incoming,
            } => Error::Truncated {
                rank: *rank,
                tag: *tag,
                capacity: *capacity,
                incoming: *incoming,
            },
            Error::LengthMismatch { bytes, elem_size } => Error::LengthMismatch {
                bytes: *bytes,
                elem_size: *elem_size,
            },
            Error::InvalidRank { rank, size } => Error::InvalidRank {
                rank: *rank,
                size: *size,
            },
            Error::InvalidTag { tag, max } => Error::InvalidTag {
                tag: *tag,
                max: *max,
            },
            Error::Bootstrap(s) => Error::Bootstrap(s.clone()),
            Error::Protocol { peer, detail } => Error::Protocol {
                peer: *peer,
                detail: detail.clone(),
            },
            Error::Aborted { code } => Error::Aborted { code: *code },
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::InvalidState(s) => Error::InvalidState(s.clone()),
            Error::CollectiveMismatch(m) => Error::CollectiveMismatch(m.clone()),
        }
    }
}
