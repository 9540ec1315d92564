//! The operating-system doorway of the runtime: shared-memory segments,
//! futex sleep/wake and cross-memory attach. Everything `unsafe` that talks
//! to the kernel lives here (ring memory access lives in `transport::shm::ring`).

pub(crate) mod cma;
pub(crate) mod futex;
pub(crate) mod segment;
