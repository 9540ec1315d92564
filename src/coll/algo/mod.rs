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

/// What a reduction algorithm works on: this rank's operand (`acc`, the
/// result on return where the algorithm leaves one), scratch space of the
/// same length (`tmp`), and the operation, `combine(lower, higher)`, which
/// folds the operand of higher ranks into that of lower ranks.
pub(crate) struct Reduction<'a, T> {
    pub(crate) acc: &'a mut [T],
    pub(crate) tmp: &'a mut [T],
    pub(crate) combine: UserOp<'a, T>,
}

impl<'a, T> Reduction<'a, T> {
    pub(crate) fn new(acc: &'a mut [T], tmp: &'a mut [T], combine: UserOp<'a, T>) -> Self {
        Reduction { acc, tmp, combine }
    }
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

/// Two disjoint ranges of `buf`, both writable.
fn split_two_mut<T>(buf: &mut [T], a: Range<usize>, b: Range<usize>) -> (&mut [T], &mut [T]) {
    debug_assert!(a.end <= b.start || b.end <= a.start);
    if a.end <= b.start {
        let (lo, hi) = buf.split_at_mut(b.start);
        (&mut lo[a], &mut hi[..b.end - b.start])
    } else {
        let (lo, hi) = buf.split_at_mut(a.start);
        (&mut hi[..a.end - a.start], &mut lo[b])
    }
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

mod allgather;
mod allreduce;
mod alltoall;
mod barrier;
mod bcast;
mod gather;
mod reduce;
mod scan;

pub(crate) use allgather::*;
pub(crate) use allreduce::*;
pub(crate) use alltoall::*;
pub(crate) use barrier::*;
pub(crate) use bcast::*;
pub(crate) use gather::*;
pub(crate) use reduce::*;
pub(crate) use scan::*;

#[cfg(test)]
mod tests;
