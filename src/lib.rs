#![doc = include_str!("../README.md")]
//!
//! # The library in one page
//!
//! A Courier program runs as N cooperating processes ("ranks") started by the
//! `courier run` launcher. Each calls [`init`] and talks to the others through
//! a [`Communicator`]: typed point-to-point messages on slices of
//! [`Pod`] values, moved without serialization, with MPI's matching
//! and ordering rules; communicators made by [`Communicator::dup`] and
//! [`Communicator::split`]; and collectives ([`Communicator::barrier`],
//! [`Communicator::broadcast`], [`Communicator::all_reduce`], ...) built on
//! point-to-point messages, with reductions bit-for-bit identical on every
//! rank. Ranks of one host talk through shared memory, others over TCP.
//!
//! ```
//! // courier run -n 2 target/release/examples/pingpong
//! let universe = courier::init()?;
//! let world = universe.world();
//! let mut x = [0u64; 4];
//! if world.size() >= 2 {
//!     match world.rank() {
//!         0 => {
//!             world.send(&[1u64, 2, 3, 4], 1, 0)?;
//!             world.recv(&mut x, 1, 0)?;
//!             assert_eq!(x, [2, 4, 6, 8]);
//!         }
//!         1 => {
//!             world.recv(&mut x, 0, 0)?;
//!             let doubled: Vec<u64> = x.iter().map(|v| v * 2).collect();
//!             world.send(&doubled, 0, 0)?;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok::<(), courier::Error>(())
//! ```
//!
//! # Threads
//!
//! Every handle ([`Universe`], [`Communicator`], [`Scope`], [`Request`]) is
//! `Send + Sync`: any thread may call any operation, concurrently
//! (`MPI_THREAD_MULTIPLE`; [`init_thread`] and [`Universe::threading`]
//! speak MPI's levels). Matching follows MPI's rules per (source, tag,
//! communicator) whatever thread posted a receive. One waiting thread
//! polls for all; the others sleep until their message is in. Collectives
//! on different communicators may run at once from different threads; two
//! at once on one communicator are refused with an error. A [`Scope`] may
//! be shared with rayon tasks (`rayon::scope` inside [`scope`]);
//! `examples/hybrid.rs` runs rayon inside ranks and communicates from its
//! tasks. Large reductions split their local combine over rayon threads
//! when the rank has cores to spare (`COURIER_PAR_COMBINE_MIN`).
//!
//! Layers (see `docs/architecture.md`), top to bottom: the API (`universe`,
//! `comm`, `coll`, `request`, `group`, `status`); the driver (`progress`,
//! the only layer that does I/O); wire-up (`bootstrap`); the sans-IO
//! protocol `engine` and the `transport`s (self loop, shared memory, TCP);
//! and the leaves (`ids`, `error`, [`config`], `wire`, `sys`). Every module
//! uses only modules below it.

#![deny(unsafe_code)]

// Wire-up, shared with the `courier` launcher: hidden, not part of the API.
#[doc(hidden)]
pub mod bootstrap;
mod coll;
mod comm;
pub mod config;
mod engine;
mod error;
mod group;
mod ids;
mod progress;
#[allow(unsafe_code)]
mod request;
mod status;
#[allow(unsafe_code)]
mod sys;
mod transport;
mod universe;
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
mod wire;

/// The crate that makes buffers of plain data (`Pod`) out of your types;
/// re-exported so that a program needs no bytemuck dependency of its own.
///
/// Derive [`Pod`] and [`Zeroable`] through this path, telling the derive
/// macros where the crate is:
///
/// ```
/// #[derive(Clone, Copy, Debug, PartialEq, courier::Pod, courier::Zeroable)]
/// #[bytemuck(crate = "courier::bytemuck")]
/// #[repr(C)]
/// struct Particle {
///     position: [f64; 3],
///     mass: f64,
/// }
///
/// let universe = courier::init()?;
/// let world = universe.world();
/// let me = world.rank();
/// let p = Particle { position: [1.0, 2.0, 3.0], mass: 4.0 };
/// world.send(&[p], me, 0)?;
/// let mut got = [Particle { position: [0.0; 3], mass: 0.0 }];
/// world.recv(&mut got, me, 0)?;
/// assert_eq!(got[0], p);
/// # Ok::<(), courier::Error>(())
/// ```
pub use bytemuck;
/// Plain data that can be sent as bytes (a trait, and its derive macro; see
/// [`bytemuck`](mod@bytemuck) for deriving it without a bytemuck dependency).
pub use bytemuck::Pod;
/// Types for which all-zero bytes are a valid value (a trait, and its
/// derive macro); needed to derive [`Pod`].
pub use bytemuck::Zeroable;

pub use coll::op::{LocF32, LocF64, LocI32, LocI64, Op, Reducible};
pub use coll::UserOp;
pub use comm::{Communicator, Source, TagMatch, ANY_SOURCE, ANY_TAG};
pub use error::{Error, Mismatch, Result};
pub use ids::{Tag, TAG_UB};
pub use progress::LinkKind;
pub use request::{scope, wait_all, wait_any, OwnedRecv, OwnedSend, Request, Scope};
pub use status::{Status, NO_SOURCE, NO_TAG};
pub use universe::{init, init_thread, Placement, Threading, Universe};

/// Internal building blocks exposed for the criterion benches and the fuzz
/// targets only (feature `bench-internals`); not a supported API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals {
    pub use crate::transport::shm::ring::{
        pingpong as ring_pingpong, stream as ring_stream, HeapRing,
    };
    /// The frame codec (benches and the `frame_decode` fuzz target).
    pub mod wire {
        pub use crate::wire::*;
    }

    /// Drives a matching engine with untrusted bytes (fuzzing): a stream of
    /// `[peer][frame header][payload]` records. Never panics.
    pub fn engine_feed(data: &[u8]) {
        crate::engine::feed_untrusted(data)
    }

    /// `acc += x` element-wise, split over `threads` rayon threads: a
    /// reduction's local combine (see `COURIER_PAR_COMBINE_MIN`).
    pub fn combine_sum(acc: &mut [f64], x: &[f64], threads: usize) -> crate::Result<()> {
        crate::coll::op::combine(crate::Op::Sum, acc, x, threads)
    }

    /// The runtime's payload copy: `dst.copy_from_slice(src)`, in pieces
    /// where one `memcpy` would take its slow `rep movsb` case (see
    /// `sys::copy`).
    pub fn copy(dst: &mut [u8], src: &[u8]) {
        crate::sys::copy::copy(dst, src)
    }

    /// Single-copy transfer of `src` into `dst` through cross-memory attach
    /// (`process_vm_readv` on this very process): the large-message path.
    pub fn cma_copy(src: &[u8], dst: &mut [u8]) -> std::io::Result<()> {
        if src.len() != dst.len() {
            return Err(std::io::Error::other("lengths differ"));
        }
        crate::sys::cma::read(std::process::id(), src.as_ptr() as u64, dst)
    }
}

/// Every handle a program holds may cross threads (`MPI_THREAD_MULTIPLE`):
/// checked at compile time.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Universe>();
    send_sync::<Communicator>();
    send_sync::<Scope<'static, 'static>>();
    send_sync::<Request<'static>>();
    send_sync::<OwnedSend<f64>>();
    send_sync::<OwnedRecv<f64>>();
    send::<Error>();
};
