//! Collective operations, built only on point-to-point messages on each
//! communicator's collective context (so they never match user traffic).
//!
//! * [`algo`] holds the schedules (barrier, broadcast, reduce, all-reduce,
//!   all-gather, all-to-all, reduce-scatter, scan), each with its cost and
//!   reduction order, written against the [`net::Net`] interface so that
//!   unit tests run them on simulated ranks.
//! * [`tune`] chooses among them by size, communicator size, commutativity
//!   and oversubscription, in one table that `COURIER_<COLL>_ALGORITHM`
//!   variables override.
//! * [`check`] is the door every collective enters through (re-entrancy,
//!   `COURIER_CHECK`); [`net`] is point-to-point on the collective context.
//! * [`exchanges`] (barrier, broadcast, gather, scatter, all-gather,
//!   all-to-all) and [`reductions`] (reduce, all-reduce, scan,
//!   reduce-scatter) are the typed public API: argument checks, buffers and
//!   scratch space; this module holds what they share.
//!
//! Every rank of a reduction receives the same bits whatever the algorithm;
//! gather and scatter are linear at the root; the v-variants lay blocks out
//! contiguously in rank order (displacements are the prefix sums of the
//! counts). Mismatched use (different counts on different ranks, a root out
//! of range, a buffer of the wrong length) returns an error on the ranks that
//! can detect it.

pub(crate) mod algo;
pub(crate) mod check;
mod exchanges;
pub(crate) mod net;
pub(crate) mod node;
pub(crate) mod op;
mod reductions;
mod spread;
pub(crate) mod tune;

use crate::comm::CommShared;
use crate::error::{Error, Result};
use crate::transport::shm::calibrate::Profile;
use algo::bytes_mut;
use bytemuck::Pod;
use op::{Op, Reducible};

/// A user reduction: `f(lower, higher)` folds the operand of higher ranks
/// into that of lower ranks, element by element.
pub type UserOp<'a, T> = &'a mut dyn FnMut(&mut [T], &[T]) -> Result<()>;

pub(super) fn check_root(c: &CommShared, root: usize) -> Result<()> {
    if root >= c.size() {
        return Err(Error::InvalidRank {
            rank: root,
            size: c.size(),
        });
    }
    Ok(())
}

pub(super) fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::InvalidArgument(format!(
            "{what}: buffer holds {got} elements, {want} expected"
        )));
    }
    Ok(())
}

/// Scratch of at most this many bytes is taken on the stack.
const SMALL_SCRATCH: usize = 1024;

/// Runs `f` with `len` elements of the communicator's scratch buffer, grown
/// as needed (no allocation per call once grown: large fresh allocations
/// page-fault on every call).
pub(super) fn with_scratch<T: Pod, R>(
    c: &CommShared,
    len: usize,
    f: impl FnOnce(&mut [T]) -> Result<R>,
) -> Result<R> {
    let need = len * std::mem::size_of::<T>();
    // A small operation's scratch lives on the stack: no lock to take (its
    // locked instruction would wait for the stores of the last collective
    // to the arena to reach the other cores first). Three sizes, so that
    // a few bytes' scratch is not a kilobyte to zero.
    if need <= 64 {
        return on_stack::<T, R, 4>(need, f);
    }
    if need <= 256 {
        return on_stack::<T, R, 16>(need, f);
    }
    if need <= SMALL_SCRATCH {
        return on_stack::<T, R, { SMALL_SCRATCH / 16 }>(need, f);
    }
    // Held only inside one collective, which `CommShared::enter` keeps
    // from being re-entered on this communicator.
    let mut scratch = c.scratch.try_lock().ok_or_else(|| {
        Error::InvalidState("a collective re-entered its own communicator".into())
    })?;
    let words = need.div_ceil(16);
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    f(as_scratch(&mut scratch[..], need)?)
}

/// [`with_scratch`]'s `need` bytes (at most `16 * W`) on the stack.
#[inline(always)]
fn on_stack<T: Pod, R, const W: usize>(
    need: usize,
    f: impl FnOnce(&mut [T]) -> Result<R>,
) -> Result<R> {
    let mut stack = [0u128; W];
    f(as_scratch(&mut stack[..], need)?)
}

/// The first `need` bytes of `words` as elements of `T` (u128 storage is
/// aligned for every Pod element type of alignment <= 16).
#[inline(always)]
fn as_scratch<T: Pod>(words: &mut [u128], need: usize) -> Result<&mut [T]> {
    bytemuck::try_cast_slice_mut(&mut bytes_mut(words)[..need]).map_err(|e| {
        Error::InvalidArgument(format!("element type unsuitable for scratch space: {e:?}"))
    })
}

/// Threads to split the local combine of a reduction of `bytes` per
/// operand over (see `op::combine`): the rank's own cores from
/// `COURIER_PAR_COMBINE_MIN` bytes on, 1 (no split) below it or when the
/// rank has no core to spare (ranks sharing a node's cores: a split would
/// take cores from the other ranks).
pub(super) fn combine_threads(c: &CommShared, bytes: usize) -> usize {
    match crate::config::par_combine_min() {
        Some(min) if bytes >= min => crate::config::par_combine_threads()
            .unwrap_or_else(|| c.progress.lock().map_or(1, |p| p.policy().own_cores)),
        _ => 1,
    }
}

/// A predefined operation must be defined for `T` (bitwise operations on
/// floats are not).
pub(super) fn check_op<T: Reducible>(op: Op) -> Result<()> {
    T::reduce_into(op, &mut [], &[])
}

/// What the selection table needs to know of a call moving `elems`
/// elements of `T` per rank. The first call on a communicator decides
/// (collectively) whether it gets a shared-memory arena.
#[inline]
pub(super) fn call<T>(c: &CommShared, elems: usize, commutative: bool) -> Result<tune::Call> {
    let node = node::arena(c)?;
    let node_slot = match node {
        // An element larger than a cell cannot go through the arena.
        Some(n) if std::mem::size_of::<T>() <= n.slot() => n.slot(),
        _ => 0,
    };
    let oversubscribed = match node {
        // The rank's policy, as the arena took it (no driver lock on the
        // way of a small collective).
        Some(n) => n.oversubscribed(),
        None => c.progress.lock()?.oversubscribed(),
    };
    Ok(tune::Call {
        p: c.size(),
        bytes: elems * std::mem::size_of::<T>(),
        commutative,
        equal: true,
        oversubscribed,
        node_slot,
        node_bytes: elems * std::mem::size_of::<T>(),
        profile: node.map_or(Profile::Far, node::NodeColl::profile),
        pulls_ok: node.is_none_or(|n| !n.pulls_refused()),
    })
}

/// The communicator's arena, which the selection table found (an
/// internal error if it is gone).
pub(super) fn arena(c: &CommShared) -> Result<&node::NodeColl> {
    node::arena(c)?.ok_or_else(|| Error::InvalidState("the collective arena vanished".into()))
}

/// Wraps a user's reduction so that collectives on `c` are refused while
/// it runs (see `check`).
pub(super) fn guarded<'a, T>(
    c: &'a CommShared,
    f: UserOp<'a, T>,
) -> impl FnMut(&mut [T], &[T]) -> Result<()> + 'a {
    move |a: &mut [T], b: &[T]| c.run_user_op(|| f(a, b))
}

/// Prefix sums of per-rank `counts` (one per rank of `c`): block r spans
/// `d[r]..d[r + 1]`.
pub(super) fn displacements(c: &CommShared, counts: &[usize]) -> Result<Vec<usize>> {
    if counts.len() != c.size() {
        return Err(Error::InvalidArgument(format!(
            "{} counts given for {} ranks",
            counts.len(),
            c.size()
        )));
    }
    let mut d = Vec::with_capacity(counts.len() + 1);
    d.push(0usize);
    for &n in counts {
        let last = d.last().copied().unwrap_or(0);
        d.push(
            last.checked_add(n)
                .ok_or_else(|| Error::InvalidArgument("counts overflow".into()))?,
        );
    }
    Ok(d)
}
