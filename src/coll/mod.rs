//! Collective operations, built only on point-to-point messages on each
//! communicator's collective context (so they never match user traffic).
//!
//! Algorithms (cost lines: p ranks, n bytes, α latency, β time per byte):
//! * barrier — dissemination: ⌈lg p⌉ rounds of empty messages; ⌈lg p⌉α.
//! * broadcast — binomial tree from the root; ⌈lg p⌉(α + nβ).
//! * reduce — binomial tree towards the root; ⌈lg p⌉(α + nβ + nγ).
//!   **Reduction order:** the tree combines contiguous blocks of ranks,
//!   lower block on the left: ((r0 ⊕ r1) ⊕ (r2 ⊕ r3)) ⊕ ... The order depends
//!   only on p (a non-commutative operation is reduced towards rank 0 and
//!   the result sent to the root), never on timing.
//! * all-reduce — up to 64 KiB with a predefined (commutative) operation,
//!   when every rank of the node has a core of its own: recursive doubling, ⌈lg p⌉(α + nβ + nγ) (+2 steps when p is not a power
//!   of two: the extra ranks fold into a partner first and get the result
//!   back last). Both partners of a step combine the lower block with the
//!   higher one in that order, so they compute the same bits, and by
//!   induction every rank ends with identical results, floats included.
//!   Larger data or user operations: reduce to rank 0, then broadcast (every
//!   rank receives the bytes rank 0 computed; rank order kept).
//!   `COURIER_ALLREDUCE_ALGORITHM=recursive_doubling|reduce_bcast` overrides.
//! * gather / scatter — linear at the root; (p - 1)(α + nβ). The
//!   fixed-count forms are the v-variants with equal counts.
//! * all-gather — ring: p - 1 steps, each passing one block on; (p - 1)(α + nβ).
//! * all-to-all — pairwise exchange: p - 1 steps of sendrecv.
//! * scan / exscan — a chain in rank order: rank r waits for the prefix of
//!   ranks below it, so (p - 1)(α + nβ + nγ); rank order kept exactly.
//! * reduce-scatter (block) — reduce to rank 0, then scatter.
//! * v-variants (gatherv, scatterv, all_gatherv, all_to_allv) — the same
//!   algorithms with per-rank counts; blocks are laid out contiguously in
//!   rank order (displacements are the prefix sums of the counts).
//!
//! Mismatched use (different counts on different ranks, a root out of
//! range, a buffer of the wrong length) returns an error on the ranks that
//! can detect it.

pub(crate) mod op;

use crate::comm::{CommShared, Communicator};
use crate::error::{Error, Result};
use bytemuck::Pod;
use op::{Op, Reducible};

/// A user reduction: `f(lower, higher)` folds the operand of higher ranks
/// into that of lower ranks, element by element.
pub type UserOp<'a, T> = &'a mut dyn FnMut(&mut [T], &[T]) -> Result<()>;

const TAG_BARRIER: u32 = 1;
const TAG_BCAST: u32 = 2;
const TAG_REDUCE: u32 = 3;
const TAG_GATHER: u32 = 5;
const TAG_SCATTER: u32 = 6;
const TAG_ALLGATHER: u32 = 7;
const TAG_ALLTOALL: u32 = 8;
const TAG_SCAN: u32 = 9;

fn bytes<T: Pod>(x: &[T]) -> &[u8] {
    bytemuck::cast_slice(x)
}

fn bytes_mut<T: Pod>(x: &mut [T]) -> &mut [u8] {
    bytemuck::cast_slice_mut(x)
}

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

/// Binomial-tree broadcast of `buf` (already filled at `root`).
fn bcast_bytes(c: &CommShared, buf: &mut [u8], root: usize) -> Result<()> {
    let (p, me) = (c.size(), c.rank());
    let vrank = (me + p - root) % p;
    let mut mask = 1;
    while mask < p {
        if vrank & mask != 0 {
            c.coll_recv(buf, (vrank - mask + root) % p, TAG_BCAST)?;
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if vrank + mask < p {
            c.coll_send(buf, (vrank + mask + root) % p, TAG_BCAST)?;
        }
        mask >>= 1;
    }
    Ok(())
}

/// Binomial-tree reduction of `acc` towards rank 0; on return rank 0's `acc`
/// holds the result. `combine(lower, higher)` folds a higher block into a
/// lower one. Uses the communicator's scratch buffer: no allocation per call
/// once it has grown (large fresh allocations page-fault on every call).
fn reduce_to_zero<T: Pod>(c: &CommShared, acc: &mut [T], combine: UserOp<'_, T>) -> Result<()> {
    let (p, me) = (c.size(), c.rank());
    if p == 1 {
        return Ok(());
    }
    let mut scratch = c.scratch.borrow_mut();
    let need = std::mem::size_of_val(acc);
    let words = need.div_ceil(16);
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    // u128 storage is aligned for every Pod element type of size <= 16.
    let tmp: &mut [T] = bytemuck::try_cast_slice_mut(&mut bytes_mut(&mut scratch[..])[..need])
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "element type unsuitable for reduction scratch: {e:?}"
            ))
        })?;
    let mut mask = 1;
    while mask < p {
        if me & mask != 0 {
            return c.coll_send(bytes(acc), me - mask, TAG_REDUCE);
        }
        if me + mask < p {
            c.coll_recv(bytes_mut(tmp), me + mask, TAG_REDUCE)?;
            combine(acc, tmp)?;
        }
        mask <<= 1;
    }
    Ok(())
}

/// `len` elements of the communicator's scratch buffer, grown as needed (no
/// allocation per call once grown: large fresh allocations page-fault).
fn scratch_slice<T: Pod>(scratch: &mut Vec<u128>, len: usize) -> Result<&mut [T]> {
    let need = len * std::mem::size_of::<T>();
    let words = need.div_ceil(16);
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    // u128 storage is aligned for every Pod element type of alignment <= 16.
    bytemuck::try_cast_slice_mut(&mut bytes_mut(&mut scratch[..])[..need]).map_err(|e| {
        Error::InvalidArgument(format!(
            "element type unsuitable for reduction scratch: {e:?}"
        ))
    })
}

/// Largest all-reduce (bytes per rank) done by recursive doubling by default.
const RD_MAX_BYTES: usize = 64 * 1024;
const TAG_ALLREDUCE: u32 = 4;

/// Recursive-doubling all-reduce of `acc` in place, for commutative
/// operations; see the module docs for the order that keeps every rank's
/// result bit-identical.
fn allreduce_recursive_doubling<T: Pod>(
    c: &CommShared,
    acc: &mut [T],
    combine: UserOp<'_, T>,
) -> Result<()> {
    let (p, me) = (c.size(), c.rank());
    if p == 1 {
        return Ok(());
    }
    let pof2 = 1usize << (usize::BITS - 1 - p.leading_zeros());
    let rem = p - pof2;
    let mut scratch = c.scratch.borrow_mut();
    let tmp = scratch_slice::<T>(&mut scratch, acc.len())?;
    // Fold the extra ranks: among the first 2·rem ranks, even ones hand their
    // data to the odd neighbour and sit out.
    let newrank = if me < 2 * rem {
        if me % 2 == 0 {
            c.coll_send(bytes(acc), me + 1, TAG_ALLREDUCE)?;
            None
        } else {
            c.coll_recv(bytes_mut(tmp), me - 1, TAG_ALLREDUCE)?;
            combine(tmp, acc)?; // lower rank's data first
            acc.copy_from_slice(tmp);
            Some(me / 2)
        }
    } else {
        Some(me - rem)
    };
    if let Some(nr) = newrank {
        let mut mask = 1;
        while mask < pof2 {
            let np = nr ^ mask;
            let partner = if np < rem { 2 * np + 1 } else { np + rem };
            // `acc` is sent in place: the exchange returns once the send is done.
            c.coll_sendrecv(bytes(acc), partner, bytes_mut(tmp), partner, TAG_ALLREDUCE)?;
            if np < nr {
                combine(tmp, acc)?; // the partner holds the lower block
                acc.copy_from_slice(tmp);
            } else {
                combine(acc, tmp)?;
            }
            mask <<= 1;
        }
    }
    // Unfold: the odd ranks give the result back to the ranks that sat out.
    if me < 2 * rem {
        if me % 2 == 0 {
            c.coll_recv(bytes_mut(acc), me + 1, TAG_ALLREDUCE)?;
        } else {
            c.coll_send(bytes(acc), me - 1, TAG_ALLREDUCE)?;
        }
    }
    Ok(())
}

impl Communicator {
    /// Blocks until every rank of the communicator has called it (`MPI_Barrier`).
    pub fn barrier(&self) -> Result<()> {
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        let mut dist = 1;
        while dist < p {
            c.coll_sendrecv(
                &[],
                (me + dist) % p,
                &mut [],
                (me + p - dist) % p,
                TAG_BARRIER,
            )?;
            dist <<= 1;
        }
        Ok(())
    }

    /// Copies `buf` from `root` to every rank (`MPI_Bcast`). Every rank
    /// passes a buffer of the same length.
    ///
    /// ```no_run
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
        check_root(self.shared(), root)?;
        bcast_bytes(self.shared(), bytes_mut(buf), root)
    }

    /// Combines every rank's `send` element-wise with `op` into `recv` at
    /// `root` (`MPI_Reduce`). `recv` is only written at the root; elsewhere
    /// it may be empty.
    pub fn reduce<T: Reducible>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: Op,
        root: usize,
    ) -> Result<()> {
        // An operation undefined for T fails on every rank, before any message.
        T::reduce_into(op, &mut [], &[])?;
        self.reduce_with(send, recv, root, true, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// [`reduce`](Self::reduce) with a user operation `f(lower, higher)`
    /// folding the operand of higher ranks into that of lower ranks.
    /// `commutative` tells whether operands may be reordered; the current
    /// algorithm keeps rank order (0 ⊕ 1 ⊕ ... ⊕ p-1, associativity assumed)
    /// for every operation, so both values give the same result today.
    pub fn reduce_with<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        root: usize,
        commutative: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        let c = self.shared();
        check_root(c, root)?;
        if c.rank() == root {
            check_len("reduce at the root", recv.len(), send.len())?;
        }
        let _rank_order_kept_for_any = commutative;
        let mut acc = send.to_vec();
        reduce_to_zero(c, &mut acc, f)?;
        if root == 0 {
            if c.rank() == 0 {
                recv.copy_from_slice(&acc);
            }
        } else if c.rank() == 0 {
            c.coll_send(bytes(&acc), root, TAG_REDUCE)?;
        } else if c.rank() == root {
            c.coll_recv(bytes_mut(recv), 0, TAG_REDUCE)?;
        }
        Ok(())
    }

    /// Combines every rank's `send` element-wise with `op`; every rank gets
    /// the result in `recv` (`MPI_Allreduce`), bit-for-bit identical.
    ///
    /// ```no_run
    /// use courier::Op;
    /// let universe = courier::init()?;
    /// let world = universe.world();
    /// let mut total = [0u64];
    /// world.all_reduce(&[world.rank() as u64], &mut total, Op::Sum)?;
    /// assert_eq!(total[0] as usize, world.size() * (world.size() - 1) / 2);
    /// # Ok::<(), courier::Error>(())
    /// ```
    pub fn all_reduce<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        T::reduce_into(op, &mut [], &[])?;
        let rd = match crate::config::allreduce_algorithm() {
            Some("recursive_doubling") => true,
            Some("reduce_bcast") => false,
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "COURIER_ALLREDUCE_ALGORITHM={other:?}: expected recursive_doubling or reduce_bcast"
                )))
            }
            // Each step needs both partners running at once: with more ranks
            // than cores, the tree (fewer simultaneous partners) wins.
            None => std::mem::size_of_val(send) <= RD_MAX_BYTES && !self.shared().progress.borrow().oversubscribed(),
        };
        if !rd {
            return self.all_reduce_with(send, recv, &mut |a, b| T::reduce_into(op, a, b));
        }
        check_len("all_reduce", recv.len(), send.len())?;
        recv.copy_from_slice(send);
        allreduce_recursive_doubling(self.shared(), recv, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// [`all_reduce`](Self::all_reduce) in place (`MPI_IN_PLACE`): `buf` holds
    /// this rank's operand on entry and the result on return.
    pub fn all_reduce_in_place<T: Reducible>(&self, buf: &mut [T], op: Op) -> Result<()> {
        // The reduction needs the operand while `buf` becomes the result: one copy.
        let send = buf.to_vec();
        self.all_reduce(&send, buf, op)
    }

    /// [`all_reduce`](Self::all_reduce) with a user operation `f(lower, higher)`.
    pub fn all_reduce_with<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        f: UserOp<'_, T>,
    ) -> Result<()> {
        check_len("all_reduce", recv.len(), send.len())?;
        let c = self.shared();
        recv.copy_from_slice(send);
        reduce_to_zero(c, recv, f)?;
        bcast_bytes(c, bytes_mut(recv), 0)
    }

    /// Collects every rank's `send` at `root`, in rank order, into `recv`
    /// (`size × send.len()` elements at the root; ignored elsewhere) (`MPI_Gather`).
    pub fn gather<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        self.gatherv(send, recv, &vec![send.len(); self.size()], root)
    }

    /// Sends block `r` of `send` (`size × recv.len()` elements at the root)
    /// to rank `r` (`MPI_Scatter`).
    pub fn scatter<T: Pod>(&self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        self.scatterv(send, &vec![recv.len(); self.size()], recv, root)
    }

    /// Every rank gets every rank's `send`, in rank order, in `recv`
    /// (`size × send.len()` elements) (`MPI_Allgather`; ring algorithm).
    pub fn all_gather<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        self.all_gatherv(send, recv, &vec![send.len(); self.size()])
    }

    /// Block `r` of `send` goes to rank `r`, which stores it as block `me`
    /// of its `recv` (`MPI_Alltoall`; pairwise exchange). Both buffers hold
    /// `size` equal blocks.
    pub fn all_to_all<T: Pod>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let p = self.size();
        if send.len() % p != 0 {
            return Err(Error::InvalidArgument(format!(
                "all_to_all: {} elements do not split into {p} blocks",
                send.len()
            )));
        }
        let counts = vec![send.len() / p; p];
        self.all_to_allv(send, &counts, recv, &counts)
    }

    /// Inclusive prefix reduction (`MPI_Scan`): rank r gets
    /// `send(0) op send(1) op ... op send(r)` in `recv`.
    pub fn scan<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        T::reduce_into(op, &mut [], &[])?;
        self.prefix(send, recv, true, &mut |a, b| T::reduce_into(op, a, b))
    }

    /// Exclusive prefix reduction (`MPI_Exscan`): rank r > 0 gets the
    /// reduction of ranks 0..r; rank 0's `recv` is left untouched.
    pub fn exscan<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        T::reduce_into(op, &mut [], &[])?;
        self.prefix(send, recv, false, &mut |a, b| T::reduce_into(op, a, b))
    }

    fn prefix<T: Pod>(
        &self,
        send: &[T],
        recv: &mut [T],
        inclusive: bool,
        f: UserOp<'_, T>,
    ) -> Result<()> {
        check_len("scan", recv.len(), send.len())?;
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        // `acc` becomes the prefix of ranks 0..=me, passed on to me + 1.
        let mut acc = send.to_vec();
        if me > 0 {
            let mut below = vec![T::zeroed(); send.len()];
            c.coll_recv(bytes_mut(&mut below), me - 1, TAG_SCAN)?;
            if !inclusive {
                recv.copy_from_slice(&below);
            }
            f(&mut below, send)?; // lower ranks first
            acc = below;
        }
        if inclusive {
            recv.copy_from_slice(&acc);
        }
        if me + 1 < p {
            c.coll_send(bytes(&acc), me + 1, TAG_SCAN)?;
        }
        Ok(())
    }

    /// Reduces every rank's `send` (`size × recv.len()` elements) element-wise
    /// with `op` and gives block r of the result to rank r
    /// (`MPI_Reduce_scatter_block`).
    pub fn reduce_scatter<T: Reducible>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        let p = self.size();
        check_len("reduce_scatter", send.len(), recv.len() * p)?;
        let mut full = vec![T::zeroed(); if self.rank() == 0 { send.len() } else { 0 }];
        self.reduce(send, &mut full, op, 0)?;
        self.scatter(&full, recv, 0)
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
        check_root(c, root)?;
        let displs = displacements(c, counts)?;
        check_len("gatherv: this rank's block", send.len(), counts[c.rank()])?;
        if c.rank() != root {
            return c.coll_send(bytes(send), root, TAG_GATHER);
        }
        check_len("gatherv at the root", recv.len(), displs[c.size()])?;
        for r in 0..c.size() {
            let block = &mut recv[displs[r]..displs[r + 1]];
            if r == root {
                block.copy_from_slice(send);
            } else {
                c.coll_recv(bytes_mut(block), r, TAG_GATHER)?;
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
        check_root(c, root)?;
        let displs = displacements(c, counts)?;
        check_len("scatterv: this rank's block", recv.len(), counts[c.rank()])?;
        if c.rank() != root {
            return c.coll_recv(bytes_mut(recv), root, TAG_SCATTER);
        }
        check_len("scatterv at the root", send.len(), displs[c.size()])?;
        for r in 0..c.size() {
            let block = &send[displs[r]..displs[r + 1]];
            if r == root {
                recv.copy_from_slice(block);
            } else {
                c.coll_send(bytes(block), r, TAG_SCATTER)?;
            }
        }
        Ok(())
    }

    /// [`all_gather`](Self::all_gather) with a count per rank (`MPI_Allgatherv`; ring).
    pub fn all_gatherv<T: Pod>(&self, send: &[T], recv: &mut [T], counts: &[usize]) -> Result<()> {
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        let d = displacements(c, counts)?;
        check_len("all_gatherv: this rank's block", send.len(), counts[me])?;
        check_len("all_gatherv", recv.len(), d[p])?;
        recv[d[me]..d[me + 1]].copy_from_slice(send);
        let (right, left) = ((me + 1) % p, (me + p - 1) % p);
        for step in 0..p.saturating_sub(1) {
            let ob = (me + p - step) % p;
            let ib = (me + p - step - 1) % p;
            let out = recv[d[ob]..d[ob + 1]].to_vec();
            c.coll_sendrecv(
                bytes(&out),
                right,
                bytes_mut(&mut recv[d[ib]..d[ib + 1]]),
                left,
                TAG_ALLGATHER,
            )?;
        }
        Ok(())
    }

    /// [`all_to_all`](Self::all_to_all) with counts (`MPI_Alltoallv`): this
    /// rank sends `send_counts[r]` elements to rank r and receives
    /// `recv_counts[r]` from it; both buffers are contiguous in rank order.
    pub fn all_to_allv<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
    ) -> Result<()> {
        let c = self.shared();
        let (p, me) = (c.size(), c.rank());
        let sd = displacements(c, send_counts)?;
        let rd = displacements(c, recv_counts)?;
        check_len("all_to_allv send", send.len(), sd[p])?;
        check_len("all_to_allv recv", recv.len(), rd[p])?;
        check_len(
            "all_to_allv: the block to self",
            recv_counts[me],
            send_counts[me],
        )?;
        recv[rd[me]..rd[me + 1]].copy_from_slice(&send[sd[me]..sd[me + 1]]);
        for step in 1..p {
            let to = (me + step) % p;
            let from = (me + p - step) % p;
            c.coll_sendrecv(
                bytes(&send[sd[to]..sd[to + 1]]),
                to,
                bytes_mut(&mut recv[rd[from]..rd[from + 1]]),
                from,
                TAG_ALLTOALL,
            )?;
        }
        Ok(())
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
