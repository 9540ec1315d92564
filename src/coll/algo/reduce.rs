//! Reduce, and the reduce-scatter steps other reductions are built from.

use super::*;

/// Binomial tree: ⌈lg p⌉(α + nβ + nγ); the result lands in `acc` at `root`.
/// With `commutative` the tree is rooted at `root` (ranks relative to it);
/// otherwise it is rooted at rank 0, combining contiguous blocks of ranks in
/// rank order, and rank 0 forwards the result to the root.
/// `tmp` has `acc.len()` elements.
pub(crate) fn reduce_binomial<N: Net, T: Pod>(
    n: &N,
    r: Reduction<'_, T>,
    root: usize,
    commutative: bool,
) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    let (p, me) = (n.size(), n.rank());
    let base = if commutative { root } else { 0 };
    let (parent, children) = tree_links(p, (me + p - base) % p, base);
    for c in children {
        n.recv_to_combine(bytes_mut(tmp), c, TAG_REDUCE)?;
        combine(acc, tmp)?; // acc holds the lower block of ranks
    }
    if let Some(par) = parent {
        n.send(bytes(acc), par, TAG_REDUCE)?;
    }
    forward_result(n, acc, base, root)
}

/// The part of [`reduce_binomial`] (or, with `seg`, of
/// [`reduce_binomial_pipelined`]) of a rank that has no children in the
/// tree and is not the root: it only sends its operand up, here straight
/// from `own` (no copy into a working buffer first). Returns `false`, doing
/// nothing, on any other rank.
pub(crate) fn reduce_binomial_leaf<N: Net, T: Pod>(
    n: &N,
    own: &[T],
    root: usize,
    commutative: bool,
    seg: Option<usize>,
) -> Result<bool> {
    let (p, me) = (n.size(), n.rank());
    let base = if commutative { root } else { 0 };
    let (parent, children) = tree_links(p, (me + p - base) % p, base);
    let Some(par) = parent.filter(|_| children.is_empty() && me != root) else {
        return Ok(false);
    };
    match seg {
        None => n.send(bytes(own), par, TAG_REDUCE)?,
        Some(seg) => {
            let seg = seg.max(1);
            for k in 0..own.len().div_ceil(seg).max(1) {
                let part = &own[(k * seg).min(own.len())..((k + 1) * seg).min(own.len())];
                n.send(bytes(part), par, TAG_REDUCE)?;
            }
        }
    }
    Ok(true)
}

/// [`reduce_binomial`] for a commutative operation, with this rank's operand
/// in `own` rather than already in `acc`: the first child's operand is
/// received straight into `acc` and `own` folded into it (the operation
/// commutes, so the order may change), which saves copying `own` into `acc`
/// first — at 2 ranks the root then does one transfer and one combine.
pub(crate) fn reduce_binomial_from<N: Net, T: Pod>(
    n: &N,
    own: &[T],
    r: Reduction<'_, T>,
    root: usize,
) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    let (p, me) = (n.size(), n.rank());
    let (parent, children) = tree_links(p, (me + p - root) % p, root);
    let mut children = children.into_iter();
    match children.next() {
        Some(c) => {
            n.recv_to_combine(bytes_mut(acc), c, TAG_REDUCE)?;
            combine(acc, own)?;
        }
        None => crate::sys::copy::copy(acc, own),
    }
    for c in children {
        n.recv_to_combine(bytes_mut(tmp), c, TAG_REDUCE)?;
        combine(acc, tmp)?;
    }
    if let Some(par) = parent {
        n.send(bytes(acc), par, TAG_REDUCE)?;
    }
    Ok(())
}

/// Moves a reduction's result from `holder`, where the tree left it, to
/// `root` (nothing to do when they are the same rank).
pub(super) fn forward_result<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    holder: usize,
    root: usize,
) -> Result<()> {
    if holder != root {
        if n.rank() == holder {
            n.send(bytes(acc), root, TAG_REDUCE)?;
        } else if n.rank() == root {
            n.recv(bytes_mut(acc), holder, TAG_REDUCE)?;
        }
    }
    Ok(())
}

/// [`reduce_binomial`] in segments of `seg` elements: while a rank combines
/// segment k from one child, the next segment (from the next child, or the
/// first child's next segment) is already arriving, and finished segments go
/// up at once, so the tree's levels overlap transfer and reduction. The
/// combination order of every element is that of [`reduce_binomial`].
pub(crate) fn reduce_binomial_pipelined<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    root: usize,
    commutative: bool,
    seg: usize,
    combine: UserOp<'_, T>,
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let base = if commutative { root } else { 0 };
    let v = (me + p - base) % p;
    let (parent, children) = tree_links(p, v, base);
    let len = acc.len();
    let seg = seg.max(1);
    let nseg = len.div_ceil(seg).max(1);
    let r = |k: usize| k * seg..((k + 1) * seg).min(len);
    let items: Vec<(usize, usize)> = (0..nseg)
        .flat_map(|k| children.iter().map(move |&c| (k, c)))
        .collect();
    if let Some((&(k0, c0), _)) = items.split_first() {
        let mut cur = vec![T::zeroed(); seg.min(len)];
        let mut next = vec![T::zeroed(); seg.min(len)];
        n.recv(bytes_mut(&mut cur[..r(k0).len()]), c0, TAG_REDUCE)?;
        let last_child = children.last().copied();
        for (i, &(k, c)) in items.iter().enumerate() {
            let mut finish = || -> Result<()> {
                combine(&mut acc[r(k)], &cur[..r(k).len()])?;
                if Some(c) == last_child {
                    if let Some(par) = parent {
                        n.send(bytes(&acc[r(k)]), par, TAG_REDUCE)?;
                    }
                }
                Ok(())
            };
            match items.get(i + 1) {
                Some(&(k1, c1)) => n.recv_while(
                    bytes_mut(&mut next[..r(k1).len()]),
                    c1,
                    TAG_REDUCE,
                    &mut finish,
                )?,
                None => finish()?,
            }
            std::mem::swap(&mut cur, &mut next);
        }
    } else if let Some(par) = parent {
        for k in 0..nseg {
            n.send(bytes(&acc[r(k)]), par, TAG_REDUCE)?;
        }
    }
    forward_result(n, acc, base, root)
}

/// The ranks beyond the largest power of two fold into a neighbour: among
/// the first 2·rem ranks, even ones hand `acc` to the odd one above and sit
/// out (None); the others get a rank among pof2 survivors.
pub(super) fn fold<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    tmp: &mut [T],
    tag: u32,
    combine: UserOp<'_, T>,
) -> Result<Option<usize>> {
    let (p, me) = (n.size(), n.rank());
    let rem = p - pof2_floor(p);
    if me < 2 * rem {
        if me % 2 == 0 {
            n.send(bytes(acc), me + 1, tag)?;
            Ok(None)
        } else {
            n.recv_to_combine(bytes_mut(tmp), me - 1, tag)?;
            combine(tmp, acc)?; // lower rank's operand first
            crate::sys::copy::copy(acc, tmp);
            Ok(Some(me / 2))
        }
    } else {
        Ok(Some(me - rem))
    }
}

/// Real rank of survivor `nr` after [`fold`].
pub(super) fn unfolded(p: usize, nr: usize) -> usize {
    let rem = p - pof2_floor(p);
    if nr < rem {
        2 * nr + 1
    } else {
        nr + rem
    }
}

/// Recursive halving among the pof2 survivors: survivor `nr` ends owning
/// block `nr` (of pof2 blocks) fully reduced. Commutative.
pub(super) fn reduce_scatter_halving<N: Net, T: Pod>(
    n: &N,
    nr: usize,
    acc: &mut [T],
    tmp: &mut [T],
    tag: u32,
    combine: UserOp<'_, T>,
) -> Result<()> {
    let pof2 = pof2_floor(n.size());
    halving_steps(
        n,
        nr,
        Reduction::new(acc, tmp, combine),
        tag,
        (0, pof2),
        pof2 >> 1,
    )
}

/// The steps of [`reduce_scatter_halving`] from the one exchanging `mask`
/// blocks on, this rank's range of blocks being `lo..hi`.
pub(super) fn halving_steps<N: Net, T: Pod>(
    n: &N,
    nr: usize,
    r: Reduction<'_, T>,
    tag: u32,
    (mut lo, mut hi): (usize, usize),
    mut mask: usize,
) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    let pof2 = pof2_floor(n.size());
    let cnt = acc.len();
    let b = |i: usize| block(cnt, pof2, i);
    while mask > 0 {
        let np = nr ^ mask;
        let mid = lo + mask;
        let (keep, give) = if nr < np {
            (lo..mid, mid..hi)
        } else {
            (mid..hi, lo..mid)
        };
        let k = b(keep.start)..b(keep.end);
        let peer = unfolded(n.size(), np);
        n.sendrecv(
            bytes(&acc[b(give.start)..b(give.end)]),
            peer,
            bytes_mut(&mut tmp[k.clone()]),
            peer,
            tag,
        )?;
        combine(&mut acc[k.clone()], &tmp[k])?;
        (lo, hi) = (keep.start, keep.end);
        mask >>= 1;
    }
    Ok(())
}

/// Rabenseifner: reduce-scatter by recursive halving, then a binomial gather
/// of the blocks; 2 lg p·α + 2(p-1)/p·nβ + (p-1)/p·nγ. Commutative.
pub(crate) fn reduce_rabenseifner<N: Net, T: Pod>(
    n: &N,
    r: Reduction<'_, T>,
    root: usize,
) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    let p = n.size();
    if p == 1 {
        return Ok(());
    }
    let pof2 = pof2_floor(p);
    let cnt = acc.len();
    let b = |i: usize| block(cnt, pof2, i);
    if let Some(nr) = fold(n, acc, tmp, TAG_REDUCE, combine)? {
        reduce_scatter_halving(n, nr, acc, tmp, TAG_REDUCE, combine)?;
        let mut mask = 1;
        while mask < pof2 {
            if nr & mask != 0 {
                n.send(
                    bytes(&acc[b(nr)..b(nr + mask)]),
                    unfolded(p, nr - mask),
                    TAG_REDUCE,
                )?;
                break;
            }
            let r = b(nr + mask)..b(nr + 2 * mask);
            n.recv(bytes_mut(&mut acc[r]), unfolded(p, nr + mask), TAG_REDUCE)?;
            mask <<= 1;
        }
    }
    forward_result(n, acc, unfolded(p, 0), root)
}

/// Ring reduce-scatter of blocks `d(i)..d(i + 1)`: after p - 1 steps rank r
/// holds block r fully reduced (accumulated along the ring starting at rank
/// r + 1). Commutative. `tmp` is as long as `acc`.
pub(super) fn ring_reduce_scatter<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    tmp: &mut [T],
    d: &dyn Fn(usize) -> usize,
    tag: u32,
    combine: UserOp<'_, T>,
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let (right, left) = ((me + 1) % p, (me + p - 1) % p);
    for s in 0..p.saturating_sub(1) {
        let sb = (me + 2 * p - s - 1) % p;
        let rb = (me + 2 * p - s - 2) % p;
        let r = d(rb)..d(rb + 1);
        n.sendrecv(
            bytes(&acc[d(sb)..d(sb + 1)]),
            right,
            bytes_mut(&mut tmp[r.clone()]),
            left,
            tag,
        )?;
        combine(&mut acc[r.clone()], &tmp[r])?;
    }
    Ok(())
}

/// Ring reduce-scatter with per-rank counts (element offsets `d`, p + 1
/// entries): on return `acc[d[me]..d[me + 1]]` holds this rank's block.
/// Commutative.
pub(crate) fn reduce_scatter_ring<N: Net, T: Pod>(
    n: &N,
    r: Reduction<'_, T>,
    d: &[usize],
) -> Result<()> {
    let Reduction { acc, tmp, combine } = r;
    ring_reduce_scatter(n, acc, tmp, &|i| d[i], TAG_REDUCE_SCATTER, combine)
}
