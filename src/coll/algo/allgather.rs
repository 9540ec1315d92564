//! All-gather (also the second half of some broadcasts and all-reduces).

use super::*;

/// Ring: block `me_idx` is in place; p - 1 steps each pass one block to the
/// right; (p - 1)(α + (n/p)β). `d(i)..d(i + 1)` is block i.
pub(super) fn ring_allgather<N: Net>(
    n: &N,
    buf: &mut [u8],
    d: &dyn Fn(usize) -> usize,
    me_idx: usize,
    right: usize,
    left: usize,
    tag: u32,
) -> Result<()> {
    let at = RingPos {
        idx: me_idx,
        right,
        left,
    };
    ring_steps(n, buf, d, at, 0..n.size().saturating_sub(1), tag)
}

/// A rank's place in a ring: its index, and its neighbours' ranks.
#[derive(Debug, Clone, Copy)]
struct RingPos {
    idx: usize,
    right: usize,
    left: usize,
}

/// Steps `steps` of [`ring_allgather`]: step s passes block `idx - s` to
/// the right and takes block `idx - s - 1` from the left.
fn ring_steps<N: Net>(
    n: &N,
    buf: &mut [u8],
    d: &dyn Fn(usize) -> usize,
    at: RingPos,
    steps: Range<usize>,
    tag: u32,
) -> Result<()> {
    let p = n.size();
    for s in steps {
        let ob = (at.idx + p - s) % p;
        let ib = (at.idx + 2 * p - s - 1) % p;
        let (out, inc) = split_pair(buf, d(ob)..d(ob + 1), d(ib)..d(ib + 1));
        n.sendrecv(out, at.right, inc, at.left, tag)?;
    }
    Ok(())
}

/// Ring all-gather of blocks at byte offsets `d` (p + 1 entries). This
/// rank's block is already in place, or, with `own`, is sent from there and
/// copied into place during the first exchange (see [`first_exchange`]).
pub(crate) fn allgather_ring<N: Net>(
    n: &N,
    buf: &mut [u8],
    d: &[usize],
    own: Option<&[u8]>,
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    let (right, left) = ((me + 1) % p, (me + p - 1) % p);
    let Some(own) = own else {
        return ring_allgather(n, buf, &|i| d[i], me, right, left, TAG_ALLGATHER);
    };
    if p == 1 {
        crate::sys::copy::copy(&mut buf[d[me]..d[me + 1]], own);
        return Ok(());
    }
    first_exchange(
        n,
        buf,
        d[me]..d[me + 1],
        own,
        right,
        d[left]..d[left + 1],
        left,
    )?;
    let at = RingPos {
        idx: me,
        right,
        left,
    };
    ring_steps(n, buf, &|i| d[i], at, 1..p - 1, TAG_ALLGATHER)
}

/// The first exchange of an all-gather whose own block is not in place
/// yet: sends it from `own` (the caller's send buffer) to `dest` while
/// copying it to `buf[own_at]`, and receives `buf[inc_at]` from `src`.
///
/// Sending from the send buffer rather than from the copy matters between
/// ranks of one node: the peer reads the sent bytes straight from this
/// rank's memory (single copy), which leaves those cache lines shared; a
/// block sent from the receive buffer is then written again by the next
/// call's local copy, and every line must first be taken back from the
/// peer's cache. At 2 ranks that made a 128 KiB all-gather 2.3× slower than
/// the exchange and the copy separately (26–30 µs against 9 + 4.5 µs).
fn first_exchange<N: Net>(
    n: &N,
    buf: &mut [u8],
    own_at: Range<usize>,
    own: &[u8],
    dest: usize,
    inc_at: Range<usize>,
    src: usize,
) -> Result<()> {
    let (place, inc) = split_two_mut(buf, own_at, inc_at);
    n.sendrecv_while(own, dest, inc, src, TAG_ALLGATHER, &mut || {
        crate::sys::copy::copy(place, own);
        Ok(())
    })
}

/// Recursive doubling (p a power of two): lg p steps exchanging ever larger
/// windows; lg p·α + (p-1)/p·nβ. `own` as for [`allgather_ring`].
pub(crate) fn allgather_recursive_doubling<N: Net>(
    n: &N,
    buf: &mut [u8],
    d: &[usize],
    own: Option<&[u8]>,
) -> Result<()> {
    let (p, me) = (n.size(), n.rank());
    debug_assert!(p.is_power_of_two());
    let mut mask = 1;
    if let Some(own) = own {
        if p == 1 {
            crate::sys::copy::copy(&mut buf[d[me]..d[me + 1]], own);
            return Ok(());
        }
        let np = me ^ 1;
        first_exchange(n, buf, d[me]..d[me + 1], own, np, d[np]..d[np + 1], np)?;
        mask = 2;
    }
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
    crate::sys::copy::copy(&mut tmp[..bb], &buf[me * bb..(me + 1) * bb]);
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
        crate::sys::copy::copy(&mut buf[r * bb..(r + 1) * bb], &tmp[i * bb..(i + 1) * bb]);
    }
    Ok(())
}
