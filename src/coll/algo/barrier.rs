//! Barrier.

use super::*;

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
