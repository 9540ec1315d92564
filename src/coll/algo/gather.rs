//! Gather and scatter: linear at the root (p - 1 messages in and out of it;
//! (p - 1)(α + nβ)), blocks at byte offsets `d` (p + 1 entries) of the
//! root's buffer.

use super::*;

/// Every rank's `send` into block r of `recv` at `root` (`recv` is only
/// read at the root).
pub(crate) fn gather_linear<N: Net>(
    n: &N,
    send: &[u8],
    recv: &mut [u8],
    d: &[usize],
    root: usize,
) -> Result<()> {
    if n.rank() != root {
        return n.send(send, root, TAG_GATHER);
    }
    for r in 0..n.size() {
        let block = &mut recv[d[r]..d[r + 1]];
        if r == root {
            crate::sys::copy::copy(block, send);
        } else {
            n.recv(block, r, TAG_GATHER)?;
        }
    }
    Ok(())
}

/// Block r of `send` at `root` into `recv` at rank r.
pub(crate) fn scatter_linear<N: Net>(
    n: &N,
    send: &[u8],
    d: &[usize],
    recv: &mut [u8],
    root: usize,
) -> Result<()> {
    if n.rank() != root {
        return n.recv(recv, root, TAG_SCATTER);
    }
    for r in 0..n.size() {
        let block = &send[d[r]..d[r + 1]];
        if r == root {
            crate::sys::copy::copy(recv, block);
        } else {
            n.send(block, r, TAG_SCATTER)?;
        }
    }
    Ok(())
}
