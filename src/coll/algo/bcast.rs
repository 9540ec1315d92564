//! Broadcast.

use super::*;

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
