//! All-to-all.

use super::*;

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
    crate::sys::copy::copy(&mut recv[rd[me]..rd[me + 1]], &send[sd[me]..sd[me + 1]]);
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
        crate::sys::copy::copy(&mut tmp[i * bb..(i + 1) * bb], &send[s * bb..(s + 1) * bb]);
    }
    let mut packed = Vec::with_capacity(p.div_ceil(2) * bb);
    let mut got = Vec::new();
    let mut k = 1;
    while k < p {
        packed.clear();
        for i in (0..p).filter(|i| i & k != 0) {
            crate::sys::copy::extend(&mut packed, &tmp[i * bb..(i + 1) * bb]);
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
            crate::sys::copy::copy(&mut tmp[i * bb..(i + 1) * bb], &got[j * bb..(j + 1) * bb]);
        }
        k <<= 1;
    }
    for i in 0..p {
        let r = (me + p - i) % p;
        crate::sys::copy::copy(&mut recv[r * bb..(r + 1) * bb], &tmp[i * bb..(i + 1) * bb]);
    }
    Ok(())
}
