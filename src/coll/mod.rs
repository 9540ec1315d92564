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
//! * This module is the typed public API: argument checks, buffers and
//!   scratch space.
//!
//! Every rank of a reduction receives the same bits whatever the algorithm;
//! gather and scatter are linear at the root; the v-variants lay blocks out
//! contiguously in rank order (displacements are the prefix sums of the
//! counts). Mismatched use (different counts on different ranks, a root out
//! of range, a buffer of the wrong length) returns an error on the ranks that
//! can detect it.

pub(crate) mod algo;
pub(crate) mod check;
pub(crate) mod net;
pub(crate) mod op;
pub(crate) mod tune;

use crate::comm::{CommShared, Communicator};
use crate::error::{Error, Result};
use algo::{bytes, bytes_mut, TAG_GATHER, TAG_SCATTER};
use bytemuck::Pod;
use check::{Coll, OpCode, Signature};
use op::{Op, Reducible};

/// A user reduction: `f(lower, higher)` folds the operand of higher ranks
/// into that of lower ranks, element by element.
pub type UserOp<'a, T> = &'a mut dyn FnMut(&mut [T], &[T]) -> Result<()>;

fn check_root(c: &CommShared, root: usize) -> Result<()> {
    if root >= c.size() {
        return Err(Error::InvalidRank {
            rank: root,
            size: c.size(),
        });
    }
    Ok(())
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::InvalidArgument(format!(
            "{what}: buffer holds {got} elements, {want} expected"
        )));
    }
    Ok(())
}

/// Runs `f` with `len` elements of the communicator's scratch buffer, grown
/// as needed (no allocation per call once grown: large fresh allocations
/// page-fault on every call).
fn with_scratch<T: Pod, R>(
    c: &CommShared,
    len: usize,
    f: impl FnOnce(&mut [T]) -> Result<R>,
) -> Result<R> {
    // Held only inside one collective, which `CommShared::enter` keeps
    // from being re-entered on this communicator.
    let mut scratch = c
        .scratch
        .try_borrow_mut()
        .map_err(|_| Error::InvalidState("a collective re-entered its own communicator".into()))?;
    let need = len * std::mem::size_of::<T>();
    let words = need.div_ceil(16);
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    // u128 storage is aligned for every Pod element type of alignment <= 16.
    let tmp =
        bytemuck::try_cast_slice_mut(&mut bytes_mut(&mut scratch[..])[..need]).map_err(|e| {
            Error::InvalidArgument(format!("element type unsuitable for scratch space: {e:?}"))
        })?;
    f(tmp)
}

/// A predefined operation must be defined for `T` (bitwise operations on
/// floats are not).
fn check_op<T: Reducible>(op: Op) -> Result<()> {
    T::reduce_into(op, &mut [], &[])
}

fn call<T>(c: &CommShared, elems: usize, commutative: bool) -> tune::Call {
    tune::Call {
        p: c.size(),
        bytes: elems * std::mem::size_of::<T>(),
        commutative,
        oversubscribed: c.progress.borrow().oversubscribed(),
    }
}

impl Communicator {
    /// Blocks until every rank of the communicator has called it
    /// (`MPI_Barrier`; dissemination).
    pub fn barrier(&self) -> Result<()> {
        let c = self.shared();
        let _in = c.enter(Signature::new(Coll::Barrier), None, || Ok(()))?;
        algo::barrier_dissemination(c)
    }

    /// Copies `buf` from `root` to every rank (`MPI_Bcast`). Every rank
    /// passes a buffer of the same length.
    ///
    /// ```
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let mut params = [0f64; 3];
    /// if world.rank() == 0 {
    ///     params = [0.1, 0.2, 0.3];
    /// }
    /// world.broadcast(&mut params, 0)?;
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn broadcast<T: Pod>(&self, buf: &mut [T], root: usize) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Bcast).root(root).elems::<T>(buf.len());
        let _in = c.enter(sig, None, || check_root(c, root))?;
        match tune::bcast(call::<T>(c, buf.len(), true))? {
            tune::Bcast::Binomial => algo::bcast_binomial(c, bytes_mut(buf), root),
            tune::Bcast::Pipelined => {
                algo::bcast_binomial_pipelined(c, bytes_mut(buf), root, tune::segment())
            }
            tune::Bcast::ScatterAllgather => algo::bcast_scatter_allgather(c, bytes_mut(buf), root),
        }
    }

    /// Combines every rank's `send` element-wise with `op` into `recv` at
    /// `root` (`MPI_Reduce`). `recv` is only written at the root; elsewhere
    /// it may be empty.
    ///
    /// ```
    /// use courier::Op;
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let mut max = [0i32; 2];
    /// world.reduce(&[world.rank() as i32, -(world.rank() as i32)], &mut max, Op::Max, 0)?;
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn reduce<T: Reducible>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: Op,
        root: usize,
    ) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Reduce)
            .root(root)
            .op(OpCode::Predefined(op))
            .elems::<T>(send.len());
        // An operation undefined for T fails on every rank, before any message.
        let _in = c.enter(sig, None, || check_op::<T>(op))?;
        self.reduce_with(send, recv, root, true, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// [`reduce`](Self::reduce) in place (`MPI_IN_PLACE`): `buf` holds this
    /// rank's operand; at the root it becomes the result (elsewhere it is
    /// left as it was).
    pub fn reduce_in_place<T: Reducible>(&self, buf: &mut [T], op: Op, root: usize) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Reduce)
            .root(root)
            .op(OpCode::Predefined(op))
            .elems::<T>(buf.len());
        let _in = c.enter(sig, None, || check_op::<T>(op))?;
        let send = buf.to_vec();
        let mut none = [];
        let recv: &mut [T] = if self.rank() == root { buf } else { &mut none };
        self.reduce_with(&send, recv, root, true, &mut |a, b| {
            T::reduce_into(op, a, b)
        })
    }

    /// [`reduce`](Self::reduce) with a user operation `f(lower, higher)`
    /// folding the operand of higher ranks into that of lower ranks.
    /// With `commutative == false` the operands are combined in rank order
    /// (0 ⊕ 1 ⊕ ... ⊕ p-1, associativity assumed); with `true` the
    /// implementation may reorder them to go faster.
    pub fn reduce_with<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: usize,
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Reduce)
            .root(root)
            .op(OpCode::User { commutative })
            .elems::<T>(send.len());
        let _in = c.enter(sig, None, || {
            check_root(c, root)?;
            if c.rank() == root {
                check_len("reduce at the root", recv.len(), send.len())?;
            }
            Ok(())
        })?;
        let f = &mut |a: &mut [T], b: &[T]| c.run_user_op(|| f(a, b));
        let alg = tune::reduce(call::<T>(c, send.len(), commutative))?;
        let mut own;
        let acc: &mut [T] = if c.rank() == root {
            recv.copy_from_slice(send);
            recv
        } else {
            own = send.to_vec();
            &mut own
        };
        let seg = (tune::segment() / std::mem::size_of::<T>().max(1)).max(1);
        with_scratch(c, send.len(), |tmp| match alg {
            tune::Reduce::Binomial => algo::reduce_binomial(c, acc, tmp, root, commutative, f),
            tune::Reduce::Pipelined => {
                algo::reduce_binomial_pipelined(c, acc, root, commutative, seg, f)
            }
            tune::Reduce::Rabenseifner => algo::reduce_rabenseifner(c, acc, tmp, root, f),
        })
    }

    /// Combines every rank's `send` element-wise with `op`; every rank gets
    /// the result in `recv` (`MPI_Allreduce`), bit-for-bit identical.
    ///
    /// ```
    /// use courier::Op;
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let mut total = [0u64];
    /// world.all_reduce(&[world.rank() as u64], &mut total, Op::Sum)?;
    /// assert_eq!(total[0] as usize, world.size() * (world.size() - 1) / 2);
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn all_reduce<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::AllReduce)
            .op(OpCode::Predefined(op))
            .elems::<T>(send.len());
        let _in = c.enter(sig, None, || check_op::<T>(op))?;
        self.all_reduce_with(send, recv, true, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// [`all_reduce`](Self::all_reduce) in place (`MPI_IN_PLACE`): `buf` holds
    /// this rank's operand on entry and the result on return.
    pub fn all_reduce_in_place<T: Reducible>(&self, buf: &mut [T], op: Op) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::AllReduce)
            .op(OpCode::Predefined(op))
            .elems::<T>(buf.len());
        let _in = c.enter(sig, None, || check_op::<T>(op))?;
        self.all_reduce_in_place_with(buf, true, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// [`all_reduce`](Self::all_reduce) with a user operation `f(lower,
    /// higher)`; `commutative` as in [`reduce_with`](Self::reduce_with).
    ///
    /// ```
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// // Element-wise maximum of absolute values.
    /// let mut out = [0f64; 2];
    /// world.all_reduce_with(&[1.5, -2.0], &mut out, true, &mut |acc, other| {
    ///     for (a, b) in acc.iter_mut().zip(other) {
    ///         *a = a.abs().max(b.abs());
    ///     }
    ///     Ok(())
    /// })?;
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn all_reduce_with<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::AllReduce)
            .op(OpCode::User { commutative })
            .elems::<T>(send.len());
        let _in = c.enter(sig, None, || {
            check_len("all_reduce", recv.len(), send.len())
        })?;
        recv.copy_from_slice(send);
        self.all_reduce_in_place_with(recv, commutative, f)
    }

    /// [`all_reduce_with`](Self::all_reduce_with) in place.
    pub fn all_reduce_in_place_with<T: Pod>(
        &self,
        buf: &mut [T],
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::AllReduce)
            .op(OpCode::User { commutative })
            .elems::<T>(buf.len());
        let _in = c.enter(sig, None, || Ok(()))?;
        let f = &mut |a: &mut [T], b: &[T]| c.run_user_op(|| f(a, b));
        // Across nodes: reduce inside each node (shared memory), all-reduce
        // among node leaders (network), broadcast inside each node. Every
        // rank receives its leader's bytes, which all leaders computed alike.
        if commutative && tune::Allreduce::forced()?.is_none() {
            if let Some(h) = self.hierarchy()? {
                let mut tmp = buf.to_vec();
                h.node.reduce_with(buf, &mut tmp, 0, true, &mut *f)?;
                if let Some(leaders) = &h.leaders {
                    leaders.all_reduce_in_place_with(&mut tmp, true, &mut *f)?;
                    buf.copy_from_slice(&tmp);
                }
                return h.node.broadcast(buf, 0);
            }
        }
        self.all_reduce_flat_with(buf, commutative, f)
    }

    /// All-reduce without the node-aware path (used to agree on context ids,
    /// which the node-aware path itself needs).
    pub(crate) fn all_reduce_flat<T: Reducible>(&self, buf: &mut [T], op: Op) -> Result<()> {
        T::reduce_into(op, &mut [], &[])?;
        self.all_reduce_flat_with(buf, true, &mut |a, b| T::reduce_into(op, a, b))
    }

    fn all_reduce_flat_with<T: Pod>(
        &self,
        buf: &mut [T],
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        let alg = tune::allreduce(call::<T>(c, buf.len(), commutative))?;
        with_scratch(c, buf.len(), |tmp| match alg {
            tune::Allreduce::RecursiveDoubling => {
                algo::allreduce_recursive_doubling(c, buf, tmp, f)
            }
            tune::Allreduce::Rabenseifner => algo::allreduce_rabenseifner(c, buf, tmp, f),
            tune::Allreduce::Ring => algo::allreduce_ring(c, buf, tmp, f),
            tune::Allreduce::ReduceBcast => algo::allreduce_reduce_bcast(c, buf, tmp, f),
        })
    }

    /// Collects every rank's `send` at `root`, in rank order, into `recv`
    /// (`size × send.len()` elements at the root; ignored elsewhere) (`MPI_Gather`).
    pub fn gather<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Gather)
            .root(root)
            .elems::<T>(send.len());
        let _in = c.enter(sig, None, || {
            check_root(c, root)?;
            if c.rank() == root {
                check_len("gather at the root", recv.len(), send.len() * c.size())?;
            }
            Ok(())
        })?;
        self.gatherv(send, recv, &vec![send.len(); self.size()], root)
    }

    /// Sends block `r` of `send` (`size × recv.len()` elements at the root)
    /// to rank `r` (`MPI_Scatter`).
    pub fn scatter<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Scatter)
            .root(root)
            .elems::<T>(recv.len());
        let _in = c.enter(sig, None, || {
            check_root(c, root)?;
            if c.rank() == root {
                check_len("scatter at the root", send.len(), recv.len() * c.size())?;
            }
            Ok(())
        })?;
        self.scatterv(send, &vec![recv.len(); self.size()], recv, root)
    }

    /// Every rank gets every rank's `send`, in rank order, in `recv`
    /// (`size × send.len()` elements) (`MPI_Allgather`).
    ///
    /// ```
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let mut ranks = vec![0u32; world.size()];
    /// world.all_gather(&[world.rank() as u32], &mut ranks)?;
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let (p, me) = (self.size(), self.rank());
        let c = self.shared();
        let sig = Signature::new(Coll::AllGather).elems::<T>(send.len());
        let _in = c.enter(sig, None, || {
            check_len("all_gather", recv.len(), send.len() * p)
        })?;
        recv[me * send.len()..(me + 1) * send.len()].copy_from_slice(send);
        self.all_gather_in_place(recv)
    }

    /// [`all_gather`](Self::all_gather) in place: `buf` holds `size` equal
    /// blocks, this rank's already in block `rank`.
    pub fn all_gather_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        let c = self.shared();
        let p = c.size();
        let n = buf.len() / p;
        let sig = Signature::new(Coll::AllGather).elems::<T>(n);
        let _in = c.enter(sig, None, || {
            if buf.len() % p != 0 {
                return Err(Error::InvalidArgument(format!(
                    "all_gather: {} elements do not split into {p} blocks",
                    buf.len()
                )));
            }
            Ok(())
        })?;
        let sz = std::mem::size_of::<T>();
        let d: Vec<usize> = (0..=p).map(|r| r * n * sz).collect();
        match tune::allgather(call::<T>(c, n, true), true)? {
            tune::Allgather::Ring => algo::allgather_ring(c, bytes_mut(buf), &d),
            tune::Allgather::RecursiveDoubling => {
                algo::allgather_recursive_doubling(c, bytes_mut(buf), &d)
            }
            tune::Allgather::Bruck => algo::allgather_bruck(c, bytes_mut(buf), n * sz),
        }
    }

    /// Block `r` of `send` goes to rank `r`, which stores it as block `me`
    /// of its `recv` (`MPI_Alltoall`). Both buffers hold `size` equal blocks.
    pub fn all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let c = self.shared();
        let p = c.size();
        let n = send.len() / p;
        let sig = Signature::new(Coll::AllToAll).elems::<T>(n);
        let _in = c.enter(sig, None, || {
            if send.len() % p != 0 {
                return Err(Error::InvalidArgument(format!(
                    "all_to_all: {} elements do not split into {p} blocks",
                    send.len()
                )));
            }
            check_len("all_to_all recv", recv.len(), send.len())
        })?;
        let sz = std::mem::size_of::<T>();
        match tune::alltoall(call::<T>(c, n, true), true)? {
            tune::Alltoall::Bruck => algo::alltoall_bruck(c, bytes(send), bytes_mut(recv), n * sz),
            tune::Alltoall::Pairwise => {
                let d: Vec<usize> = (0..=p).map(|r| r * n * sz).collect();
                algo::alltoall_pairwise(c, bytes(send), &d, bytes_mut(recv), &d)
            }
        }
    }

    /// [`all_to_all`](Self::all_to_all) in place: `buf` holds the blocks to
    /// send and receives the blocks from every rank.
    pub fn all_to_all_in_place<T: Pod>(&self, buf: &mut [T]) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::AllToAll).elems::<T>(buf.len() / c.size());
        let _in = c.enter(sig, None, || Ok(()))?;
        let send = buf.to_vec();
        self.all_to_all(&send, buf)
    }

    /// Inclusive prefix reduction (`MPI_Scan`): rank r gets
    /// `send(0) op send(1) op ... op send(r)` in `recv`.
    ///
    /// ```
    /// use courier::Op;
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let mut upto = [0u64];
    /// world.scan(&[1], &mut upto, Op::Sum)?;
    /// assert_eq!(upto[0] as usize, world.rank() + 1);
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn scan<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Scan)
            .op(OpCode::Predefined(op))
            .elems::<T>(send.len());
        let _in = c.enter(sig, None, || check_op::<T>(op))?;
        self.scan_with(send, recv, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// Exclusive prefix reduction (`MPI_Exscan`): rank r > 0 gets the
    /// reduction of ranks 0..r; rank 0's `recv` is left untouched.
    pub fn exscan<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Exscan)
            .op(OpCode::Predefined(op))
            .elems::<T>(send.len());
        let _in = c.enter(sig, None, || check_op::<T>(op))?;
        self.exscan_with(send, recv, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// [`scan`](Self::scan) with a user operation `f(lower, higher)`; rank
    /// order is always kept.
    pub fn scan_with<T: Pod>(&self, send: &[T], recv: &mut [T], f: UserOp<'_, T>) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Scan)
            .op(OpCode::User { commutative: false })
            .elems::<T>(send.len());
        let _in = c.enter(sig, None, || check_len("scan", recv.len(), send.len()))?;
        let f = &mut |a: &mut [T], b: &[T]| c.run_user_op(|| f(a, b));
        let mut acc = send.to_vec();
        self.prefix(&mut acc, f)?;
        recv.copy_from_slice(&acc);
        Ok(())
    }

    /// [`exscan`](Self::exscan) with a user operation `f(lower, higher)`.
    pub fn exscan_with<T: Pod>(&self, send: &[T], recv: &mut [T], f: UserOp<'_, T>) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Exscan)
            .op(OpCode::User { commutative: false })
            .elems::<T>(send.len());
        let _in = c.enter(sig, None, || check_len("exscan", recv.len(), send.len()))?;
        let f = &mut |a: &mut [T], b: &[T]| c.run_user_op(|| f(a, b));
        let mut acc = send.to_vec();
        if let Some(excl) = self.prefix(&mut acc, f)? {
            recv.copy_from_slice(&excl);
        }
        Ok(())
    }

    fn prefix<T: Pod>(&self, acc: &mut Vec<T>, f: UserOp<'_, T>) -> Result<Option<Vec<T>>> {
        let c = self.shared();
        match tune::scan()? {
            tune::Scan::RecursiveDoubling => algo::scan_recursive_doubling(c, acc, f),
            tune::Scan::Chain => algo::scan_chain(c, acc, f),
        }
    }

    /// Reduces every rank's `send` (`size × recv.len()` elements) element-wise
    /// with `op` and gives block r of the result to rank r
    /// (`MPI_Reduce_scatter_block`).
    pub fn reduce_scatter<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        let counts = vec![recv.len(); self.size()];
        let c = self.shared();
        let sig = Signature::new(Coll::ReduceScatter)
            .op(OpCode::Predefined(op))
            .elems::<T>(recv.len());
        let _in = c.enter(sig, None, || check_op::<T>(op))?;
        self.reduce_scatter_v(send, recv, &counts, op)
    }

    /// [`reduce_scatter`](Self::reduce_scatter) with a count per rank
    /// (`MPI_Reduce_scatter`): `send` holds `counts.iter().sum()` elements and
    /// rank r receives the `counts[r]` elements of block r of the result.
    ///
    /// ```
    /// use courier::Op;
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let counts: Vec<usize> = (0..world.size()).map(|r| r + 1).collect();
    /// let send = vec![1u32; counts.iter().sum()];
    /// let mut mine = vec![0u32; world.rank() + 1];
    /// world.reduce_scatter_v(&send, &mut mine, &counts, Op::Sum)?;
    /// assert!(mine.iter().all(|&x| x as usize == world.size()));
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn reduce_scatter_v<T: Reducible>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        op: Op,
    ) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::ReduceScatter)
            .op(OpCode::Predefined(op))
            .elems::<T>(recv.len())
            .counts(counts);
        let _in = c.enter(sig, Some(counts), || check_op::<T>(op))?;
        self.reduce_scatter_v_with(send, recv, counts, true, &mut |a, b| {
            T::reduce_into(op, a, b)
        })
    }

    /// [`reduce_scatter_v`](Self::reduce_scatter_v) with a user operation
    /// `f(lower, higher)`; `commutative` as in [`reduce_with`](Self::reduce_with).
    pub fn reduce_scatter_v_with<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        let sig = Signature::new(Coll::ReduceScatter)
            .op(OpCode::User { commutative })
            .elems::<T>(recv.len())
            .counts(counts);
        let mut d = Vec::new();
        let _in = c.enter(sig, Some(counts), || {
            d = displacements(c, counts)?;
            check_len("reduce_scatter send", send.len(), d[p])?;
            check_len("reduce_scatter: this rank's block", recv.len(), counts[me])
        })?;
        let f = &mut |a: &mut [T], b: &[T]| c.run_user_op(|| f(a, b));
        match tune::reduce_scatter(call::<T>(c, d[p], commutative))? {
            tune::ReduceScatter::Ring => {
                let mut acc = send.to_vec();
                with_scratch(c, d[p], |tmp| {
                    algo::reduce_scatter_ring(c, &mut acc, tmp, &d, f)
                })?;
                recv.copy_from_slice(&acc[d[me]..d[me + 1]]);
                Ok(())
            }
            tune::ReduceScatter::ReduceScatterv => {
                let mut full = vec![T::zeroed(); if me == 0 { send.len() } else { 0 }];
                self.reduce_with(send, &mut full, 0, commutative, f)?;
                self.scatterv(&full, counts, recv, 0)
            }
        }
    }

    /// [`gather`](Self::gather) with a count per rank (`MPI_Gatherv`): rank
    /// r sends `counts[r]` elements; the root's `recv` holds the blocks
    /// contiguously in rank order (`counts.iter().sum()` elements).
    pub fn gatherv<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        root: usize,
    ) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Gather)
            .root(root)
            .elems::<T>(send.len())
            .counts(counts);
        let mut displs = Vec::new();
        let _in = c.enter(sig, Some(counts), || {
            check_root(c, root)?;
            displs = displacements(c, counts)?;
            check_len("gatherv: this rank's block", send.len(), counts[c.rank()])?;
            if c.rank() == root {
                check_len("gatherv at the root", recv.len(), displs[c.size()])?;
            }
            Ok(())
        })?;
        if c.rank() != root {
            return net::Net::send(c, bytes(send), root, TAG_GATHER);
        }
        for r in 0..c.size() {
            let block = &mut recv[displs[r]..displs[r + 1]];
            if r == root {
                block.copy_from_slice(send);
            } else {
                net::Net::recv(c, bytes_mut(block), r, TAG_GATHER)?;
            }
        }
        Ok(())
    }

    /// [`scatter`](Self::scatter) with a count per rank (`MPI_Scatterv`).
    pub fn scatterv<T: Pod>(
        &self,
        send: &[T],
        counts: &[usize],
        recv: &mut [T],
        root: usize,
    ) -> Result<()> {
        let c = self.shared();
        let sig = Signature::new(Coll::Scatter)
            .root(root)
            .elems::<T>(recv.len())
            .counts(counts);
        let mut displs = Vec::new();
        let _in = c.enter(sig, Some(counts), || {
            check_root(c, root)?;
            displs = displacements(c, counts)?;
            check_len("scatterv: this rank's block", recv.len(), counts[c.rank()])?;
            if c.rank() == root {
                check_len("scatterv at the root", send.len(), displs[c.size()])?;
            }
            Ok(())
        })?;
        if c.rank() != root {
            return net::Net::recv(c, bytes_mut(recv), root, TAG_SCATTER);
        }
        for r in 0..c.size() {
            let block = &send[displs[r]..displs[r + 1]];
            if r == root {
                recv.copy_from_slice(block);
            } else {
                net::Net::send(c, bytes(block), r, TAG_SCATTER)?;
            }
        }
        Ok(())
    }

    /// [`all_gather`](Self::all_gather) with a count per rank
    /// (`MPI_Allgatherv`; ring, or the equal-count algorithms when the counts
    /// are equal).
    pub fn all_gatherv<T: Pod>(&self, send: &[T], recv: &mut [T], counts: &[usize]) -> Result<()> {
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        let sig = Signature::new(Coll::AllGather)
            .elems::<T>(send.len())
            .counts(counts);
        let mut d = Vec::new();
        let _in = c.enter(sig, Some(counts), || {
            d = displacements(c, counts)?;
            check_len("all_gatherv: this rank's block", send.len(), counts[me])?;
            check_len("all_gatherv", recv.len(), d[p])
        })?;
        recv[d[me]..d[me + 1]].copy_from_slice(send);
        // Equal counts are known on every rank alike (counts are arguments
        // every rank passes), so every rank picks the same algorithm.
        if counts.iter().all(|&n| n == counts[0]) {
            return self.all_gather_in_place(recv);
        }
        let sz = std::mem::size_of::<T>();
        let bd: Vec<usize> = d.iter().map(|x| x * sz).collect();
        algo::allgather_ring(c, bytes_mut(recv), &bd)
    }

    /// [`all_to_all`](Self::all_to_all) with counts (`MPI_Alltoallv`;
    /// pairwise exchange): this rank sends `send_counts[r]` elements to rank
    /// r and receives `recv_counts[r]` from it; both buffers are contiguous
    /// in rank order.
    pub fn all_to_allv<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
    ) -> Result<()> {
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        // Counts legitimately differ between ranks here: only the
        // collective and the element type are compared.
        let sig = Signature::new(Coll::AllToAllv).elems::<T>(0);
        let (mut sd, mut rd) = (Vec::new(), Vec::new());
        let _in = c.enter(sig, None, || {
            sd = displacements(c, send_counts)?;
            rd = displacements(c, recv_counts)?;
            check_len("all_to_allv send", send.len(), sd[p])?;
            check_len("all_to_allv recv", recv.len(), rd[p])?;
            check_len(
                "all_to_allv: the block to self",
                recv_counts[me],
                send_counts[me],
            )
        })?;
        let sz = std::mem::size_of::<T>();
        let sdb: Vec<usize> = sd.iter().map(|x| x * sz).collect();
        let rdb: Vec<usize> = rd.iter().map(|x| x * sz).collect();
        algo::alltoall_pairwise(c, bytes(send), &sdb, bytes_mut(recv), &rdb)
    }
}

/// Prefix sums of per-rank `counts` (one per rank of `c`): block r spans
/// `d[r]..d[r + 1]`.
fn displacements(c: &CommShared, counts: &[usize]) -> Result<Vec<usize>> {
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
