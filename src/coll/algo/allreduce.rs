//! All-reduce.

use super::*;

/// Recursive doubling: ⌈lg p⌉(α + nβ + nγ) (+2 steps when p is not a power
/// of two). Both partners of a step combine the lower block with the higher
/// one in that order, so they compute the same bits; by induction every rank
/// ends with identical results. Keeps rank order for any p (folded pairs and
/// exchanged windows are always adjacent blocks of ranks), so it also serves
/// non-commutative operations.
pub(crate) fn allreduce_recursive_doubling<N: Net, T: Pod>(
    n: &N,
    r: Reduction<'_, T>,
) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    let p = n.size();
    if p == 1 {
        return Ok(());
    }
    if let Some(nr) = fold(n, acc, tmp, TAG_ALLREDUCE, combine)? {
        let pof2 = pof2_floor(p);
        let mut mask = 1;
        while mask < pof2 {
            let np = nr ^ mask;
            let peer = unfolded(p, np);
            n.sendrecv(bytes(acc), peer, bytes_mut(tmp), peer, TAG_ALLREDUCE)?;
            if np < nr {
                combine(tmp, acc)?; // the partner holds the lower block
                crate::sys::copy::copy(acc, tmp);
            } else {
                combine(acc, tmp)?;
            }
            mask <<= 1;
        }
    }
    unfold(n, acc, TAG_ALLREDUCE)
}

/// The odd ranks of the first 2·rem give the result back to the even ones
/// that sat out in [`fold`].
pub(super) fn unfold<N: Net, T: Pod>(n: &N, acc: &mut [T], tag: u32) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let rem = p - pof2_floor(p);
    if me < 2 * rem {
        if me % 2 == 0 {
            n.recv(bytes_mut(acc), me + 1, tag)?;
        } else {
            n.send(bytes(acc), me - 1, tag)?;
        }
    }
    Ok(())
}

/// Rabenseifner: reduce-scatter by recursive halving, all-gather by
/// recursive doubling; 2 lg p·α + 2(p-1)/p·nβ + (p-1)/p·nγ. Commutative.
pub(crate) fn allreduce_rabenseifner<N: Net, T: Pod>(n: &N, r: Reduction<'_, T>) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    let p = n.size();
    if p == 1 {
        return Ok(());
    }
    if let Some(nr) = fold(n, acc, tmp, TAG_ALLREDUCE, combine)? {
        reduce_scatter_halving(n, nr, acc, tmp, TAG_ALLREDUCE, combine)?;
        doubling_allgather(n, nr, acc)?;
    }
    unfold(n, acc, TAG_ALLREDUCE)
}

/// The all-gather half of [`allreduce_rabenseifner`]: recursive doubling
/// among the power-of-two survivors, survivor `nr` holding block `nr`.
fn doubling_allgather<N: Net, T: Pod>(n: &N, nr: usize, acc: &mut [T]) -> Result<()> {
    let p = n.size();
    let pof2 = pof2_floor(p);
    let cnt = acc.len();
    let b = |i: usize| block(cnt, pof2, i);
    let mut mask = 1;
    while mask < pof2 {
        let np = nr ^ mask;
        let (mine, theirs) = (nr & !(mask - 1), np & !(mask - 1));
        let (out, inc) = split_pair(acc, b(mine)..b(mine + mask), b(theirs)..b(theirs + mask));
        let peer = unfolded(p, np);
        n.sendrecv(bytes(out), peer, bytes_mut(inc), peer, TAG_ALLREDUCE)?;
        mask <<= 1;
    }
    Ok(())
}

/// [`allreduce_rabenseifner`] on a power-of-two number of ranks, with this
/// rank's operand in `own` rather than already in `acc`. The first halving
/// step sends its half straight from `own` and receives the partner's half
/// of the kept range straight into `acc`, folding `own` into it (the
/// operation commutes): no copy of the operand into `acc` first, and the
/// sent half is read from memory no one writes (on one node the partner
/// copies it out of this rank's memory; sent from `acc`, which the next
/// call writes again, its cache lines would have to be taken back first).
pub(crate) fn allreduce_rabenseifner_from<N: Net, T: Pod>(
    n: &N,
    own: &[T],
    r: Reduction<'_, T>,
) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    let (p, nr) = (n.size(), n.rank());
    if p == 1 {
        crate::sys::copy::copy(acc, own);
        return Ok(());
    }
    debug_assert!(p.is_power_of_two());
    let cnt = acc.len();
    let b = |i: usize| block(cnt, p, i);
    let mask = p >> 1;
    let np = nr ^ mask;
    let (keep, give) = if nr < np {
        (0..mask, mask..p)
    } else {
        (mask..p, 0..mask)
    };
    let k = b(keep.start)..b(keep.end);
    n.sendrecv(
        bytes(&own[b(give.start)..b(give.end)]),
        np,
        bytes_mut(&mut acc[k.clone()]),
        np,
        TAG_ALLREDUCE,
    )?;
    combine(&mut acc[k.clone()], &own[k])?;
    let r = Reduction::new(&mut *acc, tmp, combine);
    halving_steps(n, nr, r, TAG_ALLREDUCE, (keep.start, keep.end), mask >> 1)?;
    doubling_allgather(n, nr, acc)
}

/// Ring: reduce-scatter then all-gather around the ring;
/// 2(p-1)α + 2(p-1)/p·nβ + (p-1)/p·nγ, for any p. Commutative.
pub(crate) fn allreduce_ring<N: Net, T: Pod>(n: &N, r: Reduction<'_, T>) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    let (p, me) = (n.size(), n.rank());
    if p == 1 {
        return Ok(());
    }
    let cnt = acc.len();
    let sz = std::mem::size_of::<T>();
    ring_reduce_scatter(n, acc, tmp, &|i| block(cnt, p, i), TAG_ALLREDUCE, combine)?;
    ring_allgather(
        n,
        bytes_mut(acc),
        &|i| block(cnt, p, i) * sz,
        me,
        (me + 1) % p,
        (me + p - 1) % p,
        TAG_ALLREDUCE,
    )
}

/// Reduce to rank 0 in rank order (binomial), then binomial broadcast: every
/// rank receives the bytes rank 0 computed. Any operation.
pub(crate) fn allreduce_reduce_bcast<N: Net, T: Pod>(n: &N, r: Reduction<'_, T>) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    reduce_binomial(n, Reduction::new(&mut *acc, tmp, combine), 0, false)?;
    bcast_binomial(n, bytes_mut(acc), 0)
}
