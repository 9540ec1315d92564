//! Collective algorithms (schedules), written against [`Net`] only.
//!
//! Cost lines use p ranks, n bytes, α per-message latency, β time per byte
//! and γ reduction time per byte. "Blocks" split a vector of `len` units into
//! `k` nearly equal parts: block i spans `len·i/k .. len·(i+1)/k`.
//!
//! **Reduction order.** Algorithms marked *commutative* are used only for
//! commutative operations (every predefined [`Op`](super::Op), or a user op
//! declared commutative); each element of their result is still computed
//! once, by one rank, in an order that depends only on p, so every rank
//! receives the same bits and reruns give the same bits. The others keep
//! rank order: `((r0 ⊕ r1) ⊕ r2) ⊕ ...` up to associativity.

use super::net::Net;
use super::UserOp;
use crate::error::Result;
use bytemuck::Pod;
use std::ops::Range;

pub(crate) const TAG_BARRIER: u32 = 1;
pub(crate) const TAG_BCAST: u32 = 2;
pub(crate) const TAG_REDUCE: u32 = 3;
pub(crate) const TAG_ALLREDUCE: u32 = 4;
pub(crate) const TAG_GATHER: u32 = 5;
pub(crate) const TAG_SCATTER: u32 = 6;
pub(crate) const TAG_ALLGATHER: u32 = 7;
pub(crate) const TAG_ALLTOALL: u32 = 8;
pub(crate) const TAG_SCAN: u32 = 9;
pub(crate) const TAG_REDUCE_SCATTER: u32 = 10;
/// Collective argument checking (`COURIER_CHECK=1`): the signature exchange.
pub(crate) const TAG_CHECK: u32 = 11;

pub(crate) fn bytes<T: Pod>(x: &[T]) -> &[u8] {
    bytemuck::cast_slice(x)
}

pub(crate) fn bytes_mut<T: Pod>(x: &mut [T]) -> &mut [u8] {
    bytemuck::cast_slice_mut(x)
}

/// Start of block `i` of `len` units split into `k` blocks.
fn block(len: usize, k: usize, i: usize) -> usize {
    (len as u128 * i as u128 / k as u128) as usize
}

/// Largest power of two ≤ p (p ≥ 1).
fn pof2_floor(p: usize) -> usize {
    1usize << (usize::BITS - 1 - p.leading_zeros())
}

/// Two disjoint ranges of one buffer: the first shared, the second mutable.
fn split_pair<T>(buf: &mut [T], a: Range<usize>, b: Range<usize>) -> (&[T], &mut [T]) {
    debug_assert!(a.end <= b.start || b.end <= a.start);
    if a.end <= b.start {
        let (lo, hi) = buf.split_at_mut(b.start);
        (&lo[a], &mut hi[..b.end - b.start])
    } else {
        let (lo, hi) = buf.split_at_mut(a.start);
        (&hi[..a.end - a.start], &mut lo[b])
    }
}

// ---------------------------------------------------------------- barrier

/// Dissemination barrier: ⌈lg p⌉ rounds of empty messages; ⌈lg p⌉α.
pub(crate) fn barrier_dissemination<N: Net>(n: &N) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let mut dist = 1;
    while dist < p {
        n.sendrecv(
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

// -------------------------------------------------------------- broadcast

/// Binomial tree from the root: ⌈lg p⌉(α + nβ).
pub(crate) fn bcast_binomial<N: Net>(n: &N, buf: &mut [u8], root: usize) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let (parent, children) = tree_links(p, (me + p - root) % p, root);
    if let Some(par) = parent {
        n.recv(buf, par, TAG_BCAST)?;
    }
    // Largest subtree first, so it starts forwarding soonest.
    for c in children.into_iter().rev() {
        n.send(buf, c, TAG_BCAST)?;
    }
    Ok(())
}

/// Binomial tree in segments of `seg` bytes: a rank forwards segment k to
/// its children while segment k + 1 arrives from its parent, so the tree's
/// levels work at once; ⌈lg p⌉α·(n/seg) + (⌈lg p⌉ + n/seg)·seg·β.
pub(crate) fn bcast_binomial_pipelined<N: Net>(
    n: &N,
    buf: &mut [u8],
    root: usize,
    seg: usize,
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    if p == 1 {
        return Ok(());
    }
    let v = (me + p - root) % p;
    let (parent, children) = tree_links(p, v, root);
    let children: Vec<usize> = children.into_iter().rev().collect(); // largest subtree first
    let len = buf.len();
    let seg = seg.max(1);
    let nseg = len.div_ceil(seg).max(1);
    let r = |k: usize| k * seg..((k + 1) * seg).min(len);
    let Some(parent) = parent else {
        for k in 0..nseg {
            for &c in &children {
                n.send(&buf[r(k)], c, TAG_BCAST)?;
            }
        }
        return Ok(());
    };
    n.recv(&mut buf[r(0)], parent, TAG_BCAST)?;
    for k in 0..nseg {
        if k + 1 < nseg {
            let (lo, hi) = buf.split_at_mut(r(k + 1).start);
            let cur = &lo[r(k)];
            let next = &mut hi[..r(k + 1).len()];
            n.recv_while(next, parent, TAG_BCAST, &mut || {
                for &c in &children {
                    n.send(cur, c, TAG_BCAST)?;
                }
                Ok(())
            })?;
        } else {
            for &c in &children {
                n.send(&buf[r(k)], c, TAG_BCAST)?;
            }
        }
    }
    Ok(())
}

/// Parent and children (real ranks) of relative rank `v` in the binomial
/// tree rooted at `base`; children in the order they send up (smallest
/// subtree first).
fn tree_links(p: usize, v: usize, base: usize) -> (Option<usize>, Vec<usize>) {
    let mut children = Vec::new();
    let mut mask = 1;
    while mask < p {
        if v & mask != 0 {
            return (Some((v - mask + base) % p), children);
        }
        if v + mask < p {
            children.push((v + mask + base) % p);
        }
        mask <<= 1;
    }
    (None, children)
}

/// Scatter (binomial) then ring all-gather (van de Geijn):
/// (lg p + p - 1)α + 2·(p-1)/p·nβ. Blocks are indexed by rank relative to
/// the root.
pub(crate) fn bcast_scatter_allgather<N: Net>(n: &N, buf: &mut [u8], root: usize) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    if p == 1 {
        return Ok(());
    }
    let len = buf.len();
    let v = (me + p - root) % p;
    let real = |vr: usize| (vr + root) % p;
    let b = |i: usize| block(len, p, i);
    let mut mask = 1;
    while mask < p {
        if v & mask != 0 {
            let hi = (v + mask).min(p);
            n.recv(&mut buf[b(v)..b(hi)], real(v - mask), TAG_BCAST)?;
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if v + mask < p {
            let (lo, hi) = (v + mask, (v + 2 * mask).min(p));
            n.send(&buf[b(lo)..b(hi)], real(lo), TAG_BCAST)?;
        }
        mask >>= 1;
    }
    ring_allgather(n, buf, &b, v, real(v + 1), real(v + p - 1), TAG_BCAST)
}

// ------------------------------------------------------------ all-gather

/// Ring: block `me_idx` is in place; p - 1 steps each pass one block to the
/// right; (p - 1)(α + (n/p)β). `d(i)..d(i + 1)` is block i.
fn ring_allgather<N: Net>(
    n: &N,
    buf: &mut [u8],
    d: &dyn Fn(usize) -> usize,
    me_idx: usize,
    right: usize,
    left: usize,
    tag: u32,
) -> Result<()> {
    let p = n.size();
    for s in 0..p.saturating_sub(1) {
        let ob = (me_idx + p - s) % p;
        let ib = (me_idx + 2 * p - s - 1) % p;
        let (out, inc) = split_pair(buf, d(ob)..d(ob + 1), d(ib)..d(ib + 1));
        n.sendrecv(out, right, inc, left, tag)?;
    }
    Ok(())
}

/// Ring all-gather of blocks at byte offsets `d` (p + 1 entries); this
/// rank's block is already in place.
pub(crate) fn allgather_ring<N: Net>(n: &N, buf: &mut [u8], d: &[usize]) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    ring_allgather(
        n,
        buf,
        &|i| d[i],
        me,
        (me + 1) % p,
        (me + p - 1) % p,
        TAG_ALLGATHER,
    )
}

/// Recursive doubling (p a power of two): lg p steps exchanging ever larger
/// windows; lg p·α + (p-1)/p·nβ.
pub(crate) fn allgather_recursive_doubling<N: Net>(
    n: &N,
    buf: &mut [u8],
    d: &[usize],
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    debug_assert!(p.is_power_of_two());
    let mut mask = 1;
    while mask < p {
        let np = me ^ mask;
        let (mine, theirs) = (me & !(mask - 1), np & !(mask - 1));
        let (out, inc) = split_pair(buf, d[mine]..d[mine + mask], d[theirs]..d[theirs + mask]);
        n.sendrecv(out, np, inc, np, TAG_ALLGATHER)?;
        mask <<= 1;
    }
    Ok(())
}

/// Bruck: ⌈lg p⌉ steps for any p, equal blocks of `bb` bytes; this rank's
/// block is in place. ⌈lg p⌉α + (p-1)/p·nβ plus one local rotation.
pub(crate) fn allgather_bruck<N: Net>(n: &N, buf: &mut [u8], bb: usize) -> Result<()> {
    allgather_bruck_tagged(n, buf, bb, TAG_ALLGATHER)
}

/// [`allgather_bruck`] on messages tagged `tag`.
pub(crate) fn allgather_bruck_tagged<N: Net>(
    n: &N,
    buf: &mut [u8],
    bb: usize,
    tag: u32,
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let mut tmp = vec![0u8; p * bb];
    tmp[..bb].copy_from_slice(&buf[me * bb..(me + 1) * bb]);
    let mut k = 1;
    while k < p {
        let cnt = k.min(p - k);
        let (out, inc) = tmp.split_at_mut(k * bb);
        n.sendrecv(
            &out[..cnt * bb],
            (me + p - k) % p,
            &mut inc[..cnt * bb],
            (me + k) % p,
            tag,
        )?;
        k <<= 1;
    }
    for i in 0..p {
        let r = (me + i) % p;
        buf[r * bb..(r + 1) * bb].copy_from_slice(&tmp[i * bb..(i + 1) * bb]);
    }
    Ok(())
}

// ------------------------------------------------------------ all-to-all

/// Pairwise exchange: p - 1 steps, step s sends to me + s and receives from
/// me - s. Blocks at byte offsets `sd` / `rd`.
pub(crate) fn alltoall_pairwise<N: Net>(
    n: &N,
    send: &[u8],
    sd: &[usize],
    recv: &mut [u8],
    rd: &[usize],
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    recv[rd[me]..rd[me + 1]].copy_from_slice(&send[sd[me]..sd[me + 1]]);
    for s in 1..p {
        let (to, from) = ((me + s) % p, (me + p - s) % p);
        n.sendrecv(
            &send[sd[to]..sd[to + 1]],
            to,
            &mut recv[rd[from]..rd[from + 1]],
            from,
            TAG_ALLTOALL,
        )?;
    }
    Ok(())
}

/// Bruck: ⌈lg p⌉ steps, each moving about half the blocks (equal blocks of
/// `bb` bytes); wins for small blocks where latency dominates.
pub(crate) fn alltoall_bruck<N: Net>(n: &N, send: &[u8], recv: &mut [u8], bb: usize) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let mut tmp = vec![0u8; p * bb];
    for i in 0..p {
        let s = (me + i) % p;
        tmp[i * bb..(i + 1) * bb].copy_from_slice(&send[s * bb..(s + 1) * bb]);
    }
    let mut packed = Vec::with_capacity(p.div_ceil(2) * bb);
    let mut got = Vec::new();
    let mut k = 1;
    while k < p {
        packed.clear();
        for i in (0..p).filter(|i| i & k != 0) {
            packed.extend_from_slice(&tmp[i * bb..(i + 1) * bb]);
        }
        got.resize(packed.len(), 0);
        n.sendrecv(
            &packed,
            (me + k) % p,
            &mut got,
            (me + p - k) % p,
            TAG_ALLTOALL,
        )?;
        for (j, i) in (0..p).filter(|i| i & k != 0).enumerate() {
            tmp[i * bb..(i + 1) * bb].copy_from_slice(&got[j * bb..(j + 1) * bb]);
        }
        k <<= 1;
    }
    for i in 0..p {
        let r = (me + p - i) % p;
        recv[r * bb..(r + 1) * bb].copy_from_slice(&tmp[i * bb..(i + 1) * bb]);
    }
    Ok(())
}

// ---------------------------------------------------------------- reduce

/// Binomial tree: ⌈lg p⌉(α + nβ + nγ); the result lands in `acc` at `root`.
/// With `commutative` the tree is rooted at `root` (ranks relative to it);
/// otherwise it is rooted at rank 0, combining contiguous blocks of ranks in
/// rank order, and rank 0 forwards the result to the root.
/// `tmp` has `acc.len()` elements.
pub(crate) fn reduce_binomial<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    tmp: &mut [T],
    root: usize,
    commutative: bool,
    combine: UserOp<'_, T>,
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let base = if commutative { root } else { 0 };
    let (parent, children) = tree_links(p, (me + p - base) % p, base);
    for c in children {
        n.recv(bytes_mut(tmp), c, TAG_REDUCE)?;
        combine(acc, tmp)?; // acc holds the lower block of ranks
    }
    if let Some(par) = parent {
        n.send(bytes(acc), par, TAG_REDUCE)?;
    }
    forward_result(n, acc, base, root)
}

/// Moves a reduction's result from `holder`, where the tree left it, to
/// `root` (nothing to do when they are the same rank).
fn forward_result<N: Net, T: Pod>(n: &N, acc: &mut [T], holder: usize, root: usize) -> Result<()> {
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
fn fold<N: Net, T: Pod>(
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
            n.recv(bytes_mut(tmp), me - 1, tag)?;
            combine(tmp, acc)?; // lower rank's operand first
            acc.copy_from_slice(tmp);
            Ok(Some(me / 2))
        }
    } else {
        Ok(Some(me - rem))
    }
}

/// Real rank of survivor `nr` after [`fold`].
fn unfolded(p: usize, nr: usize) -> usize {
    let rem = p - pof2_floor(p);
    if nr < rem {
        2 * nr + 1
    } else {
        nr + rem
    }
}

/// Recursive halving among the pof2 survivors: survivor `nr` ends owning
/// block `nr` (of pof2 blocks) fully reduced. Commutative.
fn reduce_scatter_halving<N: Net, T: Pod>(
    n: &N,
    nr: usize,
    acc: &mut [T],
    tmp: &mut [T],
    tag: u32,
    combine: UserOp<'_, T>,
) -> Result<()> {
    let pof2 = pof2_floor(n.size());
    let cnt = acc.len();
    let b = |i: usize| block(cnt, pof2, i);
    let (mut lo, mut hi) = (0, pof2);
    let mut mask = pof2 >> 1;
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
    acc: &mut [T],
    tmp: &mut [T],
    root: usize,
    combine: UserOp<'_, T>,
) -> Result<()> {
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

// ------------------------------------------------------------ all-reduce

/// Recursive doubling: ⌈lg p⌉(α + nβ + nγ) (+2 steps when p is not a power
/// of two). Both partners of a step combine the lower block with the higher
/// one in that order, so they compute the same bits; by induction every rank
/// ends with identical results. Keeps rank order for any p (folded pairs and
/// exchanged windows are always adjacent blocks of ranks), so it also serves
/// non-commutative operations.
pub(crate) fn allreduce_recursive_doubling<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    tmp: &mut [T],
    combine: UserOp<'_, T>,
) -> Result<()> {
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
                acc.copy_from_slice(tmp);
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
fn unfold<N: Net, T: Pod>(n: &N, acc: &mut [T], tag: u32) -> Result<()> {
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
pub(crate) fn allreduce_rabenseifner<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    tmp: &mut [T],
    combine: UserOp<'_, T>,
) -> Result<()> {
    let p = n.size();
    if p == 1 {
        return Ok(());
    }
    let pof2 = pof2_floor(p);
    let cnt = acc.len();
    let b = |i: usize| block(cnt, pof2, i);
    if let Some(nr) = fold(n, acc, tmp, TAG_ALLREDUCE, combine)? {
        reduce_scatter_halving(n, nr, acc, tmp, TAG_ALLREDUCE, combine)?;
        let mut mask = 1;
        while mask < pof2 {
            let np = nr ^ mask;
            let (mine, theirs) = (nr & !(mask - 1), np & !(mask - 1));
            let (out, inc) = split_pair(acc, b(mine)..b(mine + mask), b(theirs)..b(theirs + mask));
            let peer = unfolded(p, np);
            n.sendrecv(bytes(out), peer, bytes_mut(inc), peer, TAG_ALLREDUCE)?;
            mask <<= 1;
        }
    }
    unfold(n, acc, TAG_ALLREDUCE)
}

/// Ring reduce-scatter of blocks `d(i)..d(i + 1)`: after p - 1 steps rank r
/// holds block r fully reduced (accumulated along the ring starting at rank
/// r + 1). Commutative. `tmp` is as long as `acc`.
fn ring_reduce_scatter<N: Net, T: Pod>(
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

/// Ring: reduce-scatter then all-gather around the ring;
/// 2(p-1)α + 2(p-1)/p·nβ + (p-1)/p·nγ, for any p. Commutative.
pub(crate) fn allreduce_ring<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    tmp: &mut [T],
    combine: UserOp<'_, T>,
) -> Result<()> {
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
pub(crate) fn allreduce_reduce_bcast<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    tmp: &mut [T],
    combine: UserOp<'_, T>,
) -> Result<()> {
    reduce_binomial(n, acc, tmp, 0, false, combine)?;
    bcast_binomial(n, bytes_mut(acc), 0)
}

// -------------------------------------------------------- reduce-scatter

/// Ring reduce-scatter with per-rank counts (element offsets `d`, p + 1
/// entries): on return `acc[d[me]..d[me + 1]]` holds this rank's block.
/// Commutative.
pub(crate) fn reduce_scatter_ring<N: Net, T: Pod>(
    n: &N,
    acc: &mut [T],
    tmp: &mut [T],
    d: &[usize],
    combine: UserOp<'_, T>,
) -> Result<()> {
    ring_reduce_scatter(n, acc, tmp, &|i| d[i], TAG_REDUCE_SCATTER, combine)
}

// ------------------------------------------------------------------ scan

/// Chain in rank order: rank r waits for the prefix of ranks below it;
/// (p - 1)(α + nβ + nγ). `acc` holds this rank's operand and becomes the
/// inclusive prefix; returns the exclusive prefix (None at rank 0).
pub(crate) fn scan_chain<N: Net, T: Pod>(
    n: &N,
    acc: &mut Vec<T>,
    combine: UserOp<'_, T>,
) -> Result<Option<Vec<T>>> {
    let (p, me) = (n.size(), n.rank());
    let mut excl = None;
    if me > 0 {
        let mut below = vec![T::zeroed(); acc.len()];
        n.recv(bytes_mut(&mut below), me - 1, TAG_SCAN)?;
        let prefix = below.clone();
        combine(&mut below, acc)?; // lower ranks first
        *acc = below;
        excl = Some(prefix);
    }
    if me + 1 < p {
        n.send(bytes(acc), me + 1, TAG_SCAN)?;
    }
    Ok(excl)
}

/// Recursive doubling: ⌈lg p⌉(α + nβ + 2nγ); lower ranks' operands always
/// come first, so any associative operation works. Same contract as
/// [`scan_chain`].
pub(crate) fn scan_recursive_doubling<N: Net, T: Pod>(
    n: &N,
    acc: &mut Vec<T>,
    combine: UserOp<'_, T>,
) -> Result<Option<Vec<T>>> {
    let (p, me) = (n.size(), n.rank());
    // `partial`: reduction of this rank's whole current window of ranks;
    // `acc`: prefix of the window up to and including me; `excl`: the same
    // without me.
    let mut partial = acc.clone();
    let mut excl: Option<Vec<T>> = None;
    let mut tmp = vec![T::zeroed(); acc.len()];
    let mut mask = 1;
    while mask < p {
        let dst = me ^ mask;
        if dst < p {
            n.sendrecv(bytes(&partial), dst, bytes_mut(&mut tmp), dst, TAG_SCAN)?;
            if dst < me {
                // tmp covers the ranks just below this window.
                let mut t = tmp.clone();
                combine(&mut t, acc)?;
                *acc = t;
                excl = Some(match excl.take() {
                    None => tmp.clone(),
                    Some(e) => {
                        let mut t = tmp.clone();
                        combine(&mut t, &e)?;
                        t
                    }
                });
                combine(&mut tmp, &partial)?;
                std::mem::swap(&mut tmp, &mut partial);
            } else {
                combine(&mut partial, &tmp)?;
            }
        }
        mask <<= 1;
    }
    Ok(excl)
}

#[cfg(test)]
mod tests;
