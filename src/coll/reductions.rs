//! Reductions: reduce, all-reduce, scan and exscan, reduce-scatter.
//!
//! Every rank receives the same bits whatever the algorithm (see `algo`).
//! User operations run guarded: a collective on the same communicator from
//! inside one is an error.

use super::algo::{self, Reduction};
use super::check::{Coll, OpCode, Signature};
use super::op::{combine, Op, Reducible};
use super::{
    arena, call, check_len, check_op, check_root, combine_threads, displacements, guarded, node,
    tune, with_scratch, UserOp,
};
use crate::comm::{CommShared, Communicator};
use crate::error::Result;
use bytemuck::Pod;

impl Communicator {
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
        let sig = || {
            Signature::new(Coll::Reduce)
                .root(root)
                .op(OpCode::Predefined(op))
                .elems::<T>(send.len())
        };
        // An operation undefined for T fails on every rank, before any message.
        let _in = c.enter(sig, None, || {
            check_op::<T>(op)?;
            check_reduce_args(c, send, recv, root)
        })?;
        let par = combine_threads(c, std::mem::size_of_val(send));
        // A predefined operation cannot call into Courier: it runs unguarded.
        self.reduce_entered(send, recv, root, true, &mut |a, b| combine(op, a, b, par))
    }

    /// [`reduce`](Self::reduce) in place (`MPI_IN_PLACE`): `buf` holds this
    /// rank's operand; at the root it becomes the result (elsewhere it is
    /// left as it was).
    pub fn reduce_in_place<T: Reducible>(&self, buf: &mut [T], op: Op, root: usize) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::Reduce)
                .root(root)
                .op(OpCode::Predefined(op))
                .elems::<T>(buf.len())
        };
        let _in = c.enter(sig, None, || {
            check_op::<T>(op)?;
            check_root(c, root)
        })?;
        let send = crate::sys::copy::to_vec(buf);
        let mut none = [];
        let recv: &mut [T] = if self.rank() == root { buf } else { &mut none };
        let par = combine_threads(c, std::mem::size_of_val(&send[..]));
        self.reduce_entered(&send, recv, root, true, &mut |a, b| combine(op, a, b, par))
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
        let sig = || {
            Signature::new(Coll::Reduce)
                .root(root)
                .op(OpCode::User { commutative })
                .elems::<T>(send.len())
        };
        let _in = c.enter(sig, None, || check_reduce_args(c, send, recv, root))?;
        self.reduce_entered(send, recv, root, commutative, &mut guarded(c, f))
    }

    /// The reduce itself, once entered (arguments checked; a user's
    /// operation guarded).
    fn reduce_entered<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: usize,
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        let mut alg = tune::reduce(call::<T>(c, send.len(), commutative)?)?;
        if alg == tune::Reduce::ShmPull {
            if reduce_by_pulls(c, send, recv, root, commutative, f)? {
                return Ok(());
            }
            // Refused somewhere: every rank takes the copying arena reduce.
            alg = tune::Reduce::Shm;
        }
        let seg = (tune::segment() / std::mem::size_of::<T>().max(1)).max(1);
        // A rank that only sends its operand up sends it straight from
        // `send`: copying it to a working buffer first cost a copy per call
        // and, the peer reading it in place, cache lines to take back.
        if c.rank() != root {
            let leaf = match alg {
                tune::Reduce::Shm | tune::Reduce::ShmPull => {
                    return arena(c)?.reduce(
                        &|| node::job_check(c),
                        send,
                        &mut [],
                        &mut [],
                        root,
                        f,
                    );
                }
                tune::Reduce::Binomial => {
                    algo::reduce_binomial_leaf(c, send, root, commutative, None)?
                }
                tune::Reduce::Pipelined => {
                    algo::reduce_binomial_leaf(c, send, root, commutative, Some(seg))?
                }
                tune::Reduce::Rabenseifner => false,
            };
            if leaf {
                return Ok(());
            }
        }
        // Commutative binomial: the first child's operand lands straight in
        // the working buffer, which needs no copy of `send` first.
        let direct = commutative && alg == tune::Reduce::Binomial;
        let mut own;
        let acc: &mut [T] = if c.rank() == root {
            if !direct {
                crate::sys::copy::copy(recv, send);
            }
            recv
        } else {
            own = if direct {
                vec![T::zeroed(); send.len()]
            } else {
                crate::sys::copy::to_vec(send)
            };
            &mut own
        };
        with_scratch(c, send.len(), |tmp| match alg {
            tune::Reduce::Binomial if direct => {
                algo::reduce_binomial_from(c, send, Reduction::new(acc, tmp, f), root)
            }
            tune::Reduce::Binomial => {
                algo::reduce_binomial(c, Reduction::new(acc, tmp, f), root, commutative)
            }
            tune::Reduce::Pipelined => {
                algo::reduce_binomial_pipelined(c, acc, root, commutative, seg, f)
            }
            tune::Reduce::Rabenseifner => {
                algo::reduce_rabenseifner(c, Reduction::new(acc, tmp, f), root)
            }
            tune::Reduce::Shm | tune::Reduce::ShmPull => {
                arena(c)?.reduce(&|| node::job_check(c), send, acc, tmp, root, f)
            }
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
        let sig = || {
            Signature::new(Coll::AllReduce)
                .op(OpCode::Predefined(op))
                .elems::<T>(send.len())
        };
        let _in = c.enter(sig, None, || {
            check_op::<T>(op)?;
            check_len("all_reduce", recv.len(), send.len())
        })?;
        let par = combine_threads(c, std::mem::size_of_val(send));
        // A predefined operation cannot call into Courier: it runs
        // unguarded, and the call enters once (no second `enter` through
        // `all_reduce_with`: on the way of every small all-reduce).
        self.all_reduce_into(Some(send), recv, true, &mut |a, b| combine(op, a, b, par))
    }

    /// [`all_reduce`](Self::all_reduce) in place (`MPI_IN_PLACE`): `buf` holds
    /// this rank's operand on entry and the result on return.
    pub fn all_reduce_in_place<T: Reducible>(&self, buf: &mut [T], op: Op) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::AllReduce)
                .op(OpCode::Predefined(op))
                .elems::<T>(buf.len())
        };
        let _in = c.enter(sig, None, || check_op::<T>(op))?;
        let par = combine_threads(c, std::mem::size_of_val(buf));
        self.all_reduce_into(None, buf, true, &mut |a, b| combine(op, a, b, par))
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
        let sig = || {
            Signature::new(Coll::AllReduce)
                .op(OpCode::User { commutative })
                .elems::<T>(send.len())
        };
        let _in = c.enter(sig, None, || {
            check_len("all_reduce", recv.len(), send.len())
        })?;
        self.all_reduce_into(Some(send), recv, commutative, &mut guarded(c, f))
    }

    /// [`all_reduce_with`](Self::all_reduce_with) in place.
    pub fn all_reduce_in_place_with<T: Pod>(
        &self,
        buf: &mut [T],
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::AllReduce)
                .op(OpCode::User { commutative })
                .elems::<T>(buf.len())
        };
        let _in = c.enter(sig, None, || Ok(()))?;
        self.all_reduce_into(None, buf, commutative, &mut guarded(c, f))
    }

    /// All-reduce of `own` (`None`: of `buf`'s contents) into `buf`, once
    /// entered (arguments checked; a user's operation guarded).
    fn all_reduce_into<T: Pod>(
        &self,
        own: Option<&[T]>,
        buf: &mut [T],
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        // Across nodes: reduce inside each node (shared memory), all-reduce
        // among node leaders (network), broadcast inside each node. Every
        // rank receives its leader's bytes, which all leaders computed alike.
        if tune::allreduce_hierarchical(commutative)? {
            if let Some(h) = self.hierarchy()? {
                if let Some(own) = own {
                    crate::sys::copy::copy(buf, own);
                }
                let mut tmp = crate::sys::copy::to_vec(buf);
                h.node.reduce_with(buf, &mut tmp, 0, true, &mut *f)?;
                if let Some(leaders) = &h.leaders {
                    leaders.all_reduce_in_place_with(&mut tmp, true, &mut *f)?;
                    crate::sys::copy::copy(buf, &tmp);
                }
                return h.node.broadcast(buf, 0);
            }
        }
        self.all_reduce_flat_with(own, buf, commutative, f)
    }

    /// All-reduce without the node-aware path (used to agree on context ids,
    /// which the node-aware path itself needs).
    pub(crate) fn all_reduce_flat<T: Reducible>(&self, buf: &mut [T], op: Op) -> Result<()> {
        T::reduce_into(op, &mut [], &[])?;
        self.all_reduce_flat_with(None, buf, true, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// `own` as for `all_reduce_into`.
    fn all_reduce_flat_with<T: Pod>(
        &self,
        own: Option<&[T]>,
        buf: &mut [T],
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        let alg = tune::allreduce(call::<T>(c, buf.len(), commutative)?)?;
        // Rabenseifner on a power of two takes the operand from the send
        // buffer itself; every other algorithm starts from a copy.
        let direct = alg == tune::Allreduce::Rabenseifner && c.size().is_power_of_two();
        let alg = match alg {
            tune::Allreduce::ShmPull if all_reduce_by_pulls(c, own, buf, commutative, f)? => {
                return Ok(());
            }
            // Refused somewhere: every rank takes the copying arena
            // all-reduce (which starts from `own` below, or from the operand
            // restored in `buf`): on more than two ranks the reduce through
            // rank 0 and broadcast, as the table chose below the pulls, so
            // that not every rank folds every operand.
            tune::Allreduce::ShmPull if c.size() > 2 => tune::Allreduce::ShmRoot,
            tune::Allreduce::ShmPull => tune::Allreduce::Shm,
            alg => alg,
        };
        match own {
            Some(own) if direct => {
                return with_scratch(c, buf.len(), |tmp| {
                    algo::allreduce_rabenseifner_from(c, own, Reduction::new(buf, tmp, f))
                });
            }
            Some(own) => crate::sys::copy::copy(buf, own),
            None => {}
        }
        with_scratch(c, buf.len(), |tmp| match alg {
            tune::Allreduce::RecursiveDoubling => {
                algo::allreduce_recursive_doubling(c, Reduction::new(buf, tmp, f))
            }
            tune::Allreduce::Rabenseifner => {
                algo::allreduce_rabenseifner(c, Reduction::new(buf, tmp, f))
            }
            tune::Allreduce::Ring => algo::allreduce_ring(c, Reduction::new(buf, tmp, f)),
            tune::Allreduce::ReduceBcast => {
                algo::allreduce_reduce_bcast(c, Reduction::new(buf, tmp, f))
            }
            tune::Allreduce::Shm | tune::Allreduce::ShmPull => {
                arena(c)?.allreduce(&|| node::job_check(c), buf, tmp, f)
            }
            tune::Allreduce::ShmRoot => {
                arena(c)?.allreduce_by_root(&|| node::job_check(c), buf, tmp, f)
            }
        })
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
        let sig = || {
            Signature::new(Coll::Scan)
                .op(OpCode::Predefined(op))
                .elems::<T>(send.len())
        };
        let _in = c.enter(sig, None, || {
            check_op::<T>(op)?;
            check_len("scan", recv.len(), send.len())
        })?;
        self.scan_entered(send, recv, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// Exclusive prefix reduction (`MPI_Exscan`): rank r > 0 gets the
    /// reduction of ranks 0..r; rank 0's `recv` is left untouched.
    pub fn exscan<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::Exscan)
                .op(OpCode::Predefined(op))
                .elems::<T>(send.len())
        };
        let _in = c.enter(sig, None, || {
            check_op::<T>(op)?;
            check_len("exscan", recv.len(), send.len())
        })?;
        self.exscan_entered(send, recv, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// [`scan`](Self::scan) with a user operation `f(lower, higher)`; rank
    /// order is always kept.
    pub fn scan_with<T: Pod>(&self, send: &[T], recv: &mut [T], f: UserOp<'_, T>) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::Scan)
                .op(OpCode::User { commutative: false })
                .elems::<T>(send.len())
        };
        let _in = c.enter(sig, None, || check_len("scan", recv.len(), send.len()))?;
        self.scan_entered(send, recv, &mut guarded(c, f))
    }

    /// The scan itself, once entered (lengths checked in the one entry,
    /// where with checking every rank hears of a wrong one; a user's
    /// operation guarded).
    fn scan_entered<T: Pod>(&self, send: &[T], recv: &mut [T], f: UserOp<'_, T>) -> Result<()> {
        let mut acc = crate::sys::copy::to_vec(send);
        self.prefix(&mut acc, f)?;
        crate::sys::copy::copy(recv, &acc);
        Ok(())
    }

    /// [`exscan`](Self::exscan) with a user operation `f(lower, higher)`.
    pub fn exscan_with<T: Pod>(&self, send: &[T], recv: &mut [T], f: UserOp<'_, T>) -> Result<()> {
        let c = self.shared();
        let sig = || {
            Signature::new(Coll::Exscan)
                .op(OpCode::User { commutative: false })
                .elems::<T>(send.len())
        };
        let _in = c.enter(sig, None, || check_len("exscan", recv.len(), send.len()))?;
        self.exscan_entered(send, recv, &mut guarded(c, f))
    }

    /// The exclusive scan itself, once entered (see `scan_entered`).
    fn exscan_entered<T: Pod>(&self, send: &[T], recv: &mut [T], f: UserOp<'_, T>) -> Result<()> {
        let mut acc = crate::sys::copy::to_vec(send);
        if let Some(excl) = self.prefix(&mut acc, f)? {
            crate::sys::copy::copy(recv, &excl);
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
        let sig = || {
            Signature::new(Coll::ReduceScatter)
                .op(OpCode::Predefined(op))
                .elems::<T>(recv.len())
        };
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
        let sig = || {
            Signature::new(Coll::ReduceScatter)
                .op(OpCode::Predefined(op))
                .elems::<T>(recv.len())
                .counts(counts)
        };
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
        let sig = || {
            Signature::new(Coll::ReduceScatter)
                .op(OpCode::User { commutative })
                .elems::<T>(recv.len())
                .counts(counts)
        };
        let mut d = Vec::new();
        let _in = c.enter(sig, Some(counts), || {
            d = displacements(c, counts)?;
            check_len("reduce_scatter send", send.len(), d[p])?;
            check_len("reduce_scatter: this rank's block", recv.len(), counts[me])
        })?;
        let f = &mut guarded(c, f);
        match tune::reduce_scatter(call::<T>(c, d[p], commutative)?)? {
            tune::ReduceScatter::Ring => {
                let mut acc = crate::sys::copy::to_vec(send);
                with_scratch(c, d[p], |tmp| {
                    algo::reduce_scatter_ring(c, Reduction::new(&mut acc, tmp, f), &d)
                })?;
                crate::sys::copy::copy(recv, &acc[d[me]..d[me + 1]]);
                Ok(())
            }
            tune::ReduceScatter::ReduceScatterv => {
                let mut full = vec![T::zeroed(); if me == 0 { send.len() } else { 0 }];
                self.reduce_with(send, &mut full, 0, commutative, f)?;
                self.scatterv(&full, counts, recv, 0)
            }
        }
    }
}

// The single-copy reductions, out of line: they serve large calls only,
// and kept inside the functions above they grew them past what the
// compiler inlines on the way of small calls; their copying fallbacks are
// the callers' own arena paths, so those keep a single call site.

/// This rank's part of a reduce by pulls (`NodeColl::fold_pull`): into
/// `recv` at the root, through scratch elsewhere. `Ok(false)`: refused
/// somewhere, nothing was delivered.
#[inline(never)]
fn reduce_by_pulls<T: Pod>(
    c: &crate::comm::CommShared,
    send: &[T],
    recv: &mut [T],
    root: usize,
    commutative: bool,
    f: UserOp<'_, T>,
) -> Result<bool> {
    let node = arena(c)?;
    let check = || node::job_check(c);
    let n = send.len();
    if c.rank() == root {
        // The result is written whole: nothing of `send` is copied into it
        // first (that would only take back the lines the others wrote).
        return with_scratch(c, n, |tmp| {
            node.fold_pull(&check, send, recv, tmp, Some(root), commutative, f)
        });
    }
    with_scratch(c, 2 * n, |s: &mut [T]| {
        let (acc, tmp) = s.split_at_mut(n);
        node.fold_pull(&check, send, acc, tmp, Some(root), commutative, f)
    })
}

/// All-reduce by pulls of `own` (`None`: of `buf`'s contents) into `buf`.
/// The others pull from the operand while they write into `buf`: in
/// place, the operand is copied aside first. `Ok(false)`: refused
/// somewhere; in place, `buf` holds its operand again, otherwise parts of
/// it may have been written and the caller starts from `own` anew.
#[inline(never)]
fn all_reduce_by_pulls<T: Pod>(
    c: &crate::comm::CommShared,
    own: Option<&[T]>,
    buf: &mut [T],
    commutative: bool,
    f: UserOp<'_, T>,
) -> Result<bool> {
    let node = arena(c)?;
    let check = || node::job_check(c);
    let n = buf.len();
    match own {
        Some(own) => with_scratch(c, n, |tmp| {
            node.fold_pull(&check, own, buf, tmp, None, commutative, f)
        }),
        None => with_scratch(c, 2 * n, |s: &mut [T]| {
            let (own, tmp) = s.split_at_mut(n);
            crate::sys::copy::copy(own, buf);
            let pulled = node.fold_pull(&check, own, buf, tmp, None, commutative, f)?;
            if !pulled {
                crate::sys::copy::copy(buf, own);
            }
            Ok(pulled)
        }),
    }
}

/// A reduce's own arguments: `root` a rank of `c`, and at the root a
/// `recv` as long as `send`.
fn check_reduce_args<T>(c: &CommShared, send: &[T], recv: &[T], root: usize) -> Result<()> {
    check_root(c, root)?;
    if c.rank() == root {
        check_len("reduce at the root", recv.len(), send.len())?;
    }
    Ok(())
}
