//! Names shared by every layer (a leaf module: it imports nothing).

/// A rank of the world, as the engine and the transports name peers.
pub(crate) type Rank = u32;

/// A message tag. Valid tags are `0..=TAG_UB`.
pub type Tag = u32;

/// The largest valid tag (MPI's `MPI_TAG_UB` guarantees at least 32767; we allow `i32::MAX`).
pub const TAG_UB: Tag = i32::MAX as u32;
