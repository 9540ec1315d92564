//! Names shared by every layer (a leaf module: it imports nothing).

/// A rank of the world, as the engine and the transports name peers.
pub(crate) type Rank = u32;
