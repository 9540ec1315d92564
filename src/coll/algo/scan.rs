//! Inclusive and exclusive prefix reductions.

use super::*;

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
