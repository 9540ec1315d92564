//! The door every public collective enters through: re-entrancy rules and
//! collective argument checking.
//!
//! * A collective started from inside a reduction operation running on the
//!   same communicator is refused with [`Error::InvalidState`] (it would
//!   interleave its messages with the running collective's).
//! * A collective on a communicator whose universe was finalized is refused.
//! * With `COURIER_CHECK=1`, every outermost collective call first
//!   all-gathers a small [`Signature`] of its arguments (which collective,
//!   root, operation, element type and count, the counts of the v-variants,
//!   and whether this rank's own arguments were valid). Every rank then
//!   compares the same gathered signatures in the same order, so a mismatch
//!   becomes the same [`Error::CollectiveMismatch`] on every rank — naming
//!   the first rank whose call differs from rank 0's and the argument —
//!   instead of a hang on the ranks that did not notice. Calls nested inside
//!   a collective on the same communicator (e.g. `split`'s all-gather) are
//!   not checked again.
//!
//! Cost: one Bruck all-gather of 64 bytes per rank on the collective
//! context, i.e. ⌈lg p⌉ small messages (measured in BENCHMARKS.md).

use super::algo::{allgather_bruck_tagged, TAG_CHECK};
use crate::comm::CommShared;
use crate::error::{Error, Mismatch, Result};
use bytemuck::Pod;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which collective a signature describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coll {
    Barrier = 1,
    Bcast,
    Reduce,
    AllReduce,
    Gather,
    Scatter,
    AllGather,
    AllToAll,
    Scan,
    Exscan,
    ReduceScatter,
    Dup,
    Split,
    AllToAllv,
}

impl Coll {
    fn name(code: u64) -> &'static str {
        const NAMES: [&str; 15] = [
            "?",
            "barrier",
            "broadcast",
            "reduce",
            "all_reduce",
            "gather",
            "scatter",
            "all_gather",
            "all_to_all",
            "scan",
            "exscan",
            "reduce_scatter",
            "dup",
            "split",
            "all_to_allv",
        ];
        NAMES.get(code as usize).copied().unwrap_or("?")
    }
}

/// The operation of a reduction, as compared across ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    Predefined(crate::Op),
    User { commutative: bool },
}

impl OpCode {
    fn code(self) -> u64 {
        match self {
            OpCode::Predefined(op) => 1 + op as u64,
            OpCode::User { commutative: true } => 100,
            OpCode::User { commutative: false } => 101,
        }
    }

    fn describe(code: u64) -> String {
        match code {
            0 => "none".into(),
            100 => "a commutative user op".into(),
            101 => "a non-commutative user op".into(),
            c => {
                const OPS: [&str; 12] = [
                    "Sum",
                    "Prod",
                    "Min",
                    "Max",
                    "BitAnd",
                    "BitOr",
                    "BitXor",
                    "LogicalAnd",
                    "LogicalOr",
                    "LogicalXor",
                    "MinLoc",
                    "MaxLoc",
                ];
                OPS.get(c as usize - 1)
                    .map_or_else(|| format!("op #{c}"), |s| format!("Op::{s}"))
            }
        }
    }
}

/// What one rank says about its call. Encoded as eight little-endian u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signature {
    coll: u64,
    root: u64,
    op: u64,
    elem_size: u64,
    type_hash: u64,
    count: u64,
    counts_hash: u64,
    /// Non-zero when this rank's own arguments were invalid.
    local_error: u64,
}

const NO_ROOT: u64 = u64::MAX;
const SIG_BYTES: usize = 64;

/// FNV-1a: a stable hash of type names and count vectors (the same on
/// every rank of a job, which runs one build).
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Signature {
    pub(crate) fn new(coll: Coll) -> Self {
        Signature {
            coll: coll as u64,
            root: NO_ROOT,
            op: 0,
            elem_size: 0,
            type_hash: 0,
            count: 0,
            counts_hash: 0,
            local_error: 0,
        }
    }

    pub(crate) fn root(mut self, root: usize) -> Self {
        self.root = root as u64;
        self
    }

    pub(crate) fn op(mut self, op: OpCode) -> Self {
        self.op = op.code();
        self
    }

    /// `count` elements of `T`, the count every rank must agree on.
    pub(crate) fn elems<T: Pod>(mut self, count: usize) -> Self {
        self.elem_size = std::mem::size_of::<T>() as u64;
        self.type_hash = fnv(std::any::type_name::<T>().bytes());
        self.count = count as u64;
        self
    }

    /// Per-rank counts (v-variants): every rank must pass the same vector.
    pub(crate) fn counts(mut self, counts: &[usize]) -> Self {
        self.counts_hash = fnv(counts.iter().flat_map(|c| (*c as u64).to_le_bytes()));
        self
    }

    fn encode(&self) -> [u8; SIG_BYTES] {
        let mut out = [0u8; SIG_BYTES];
        let fields = [
            self.coll,
            self.root,
            self.op,
            self.elem_size,
            self.type_hash,
            self.count,
            self.counts_hash,
            self.local_error,
        ];
        for (chunk, f) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&f.to_le_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> Self {
        let f = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[8 * i..8 * i + 8]);
            u64::from_le_bytes(w)
        };
        Signature {
            coll: f(0),
            root: f(1),
            op: f(2),
            elem_size: f(3),
            type_hash: f(4),
            count: f(5),
            counts_hash: f(6),
            local_error: f(7),
        }
    }

    /// The call as text, from the signature alone (so every rank writes
    /// the same words).
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.root != NO_ROOT {
            parts.push(format!("root {}", self.root));
        }
        if self.op != 0 {
            parts.push(OpCode::describe(self.op));
        }
        if self.elem_size != 0 || self.type_hash != 0 {
            parts.push(format!(
                "{} elements of {} bytes [type {:04x}]",
                self.count,
                self.elem_size,
                self.type_hash & 0xffff
            ));
        }
        if self.counts_hash != 0 {
            parts.push(format!("counts [{:04x}]", self.counts_hash & 0xffff));
        }
        format!("{}({})", Coll::name(self.coll), parts.join(", "))
    }

    /// The first argument in which `self` differs from `reference`.
    fn differs_from(&self, reference: &Signature) -> Option<&'static str> {
        if self.coll != reference.coll {
            Some("collective")
        } else if self.root != reference.root {
            Some("root")
        } else if self.op != reference.op {
            Some("op")
        } else if self.elem_size != reference.elem_size || self.type_hash != reference.type_hash {
            Some("element type")
        } else if self.counts_hash != reference.counts_hash {
            Some("counts")
        } else if self.count != reference.count && reference.counts_hash == 0 {
            Some("count")
        } else {
            None
        }
    }
}

/// `COURIER_CHECK`: 1 turns collective argument checking on.
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        matches!(
            std::env::var("COURIER_CHECK").as_deref().map(str::trim),
            Ok("1" | "yes" | "true")
        )
    })
}

/// Proof of having entered a collective on a communicator; leaving (drop)
/// lets the next outermost call be checked again, and another thread in.
#[derive(Debug)]
pub(crate) struct Entered<'a> {
    c: &'a CommShared,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        // Only the owner thread changes the depth (see `enter`).
        let depth = self.c.coll_depth.load(Ordering::Relaxed);
        self.c
            .coll_depth
            .store(depth.saturating_sub(1), Ordering::Relaxed);
        if depth == 1 {
            self.c.coll_owner.store(0, Ordering::Release);
        }
    }
}

impl CommShared {
    /// Enters a collective described by `sig` (built only when checking:
    /// hashing a type name costs what a small collective does). `local` validates this
    /// rank's own arguments: without checking its error returns at once;
    /// with checking it is exchanged first, so that no rank is left
    /// waiting for one that gave up. `counts` (v-variants) says which count
    /// each rank must bring: with checking, rank r's count must equal
    /// `counts[r]`.
    ///
    /// One thread at a time runs collectives on a communicator (MPI's rule):
    /// a second thread entering one while another runs is refused with an
    /// error, whatever the checking setting.
    pub(crate) fn enter(
        &self,
        sig: impl FnOnce() -> Signature,
        counts: Option<&[usize]>,
        local: impl FnOnce() -> Result<()>,
    ) -> Result<Entered<'_>> {
        let me = crate::progress::thread_token();
        if self.in_user_op.load(Ordering::Relaxed) && self.coll_owner.load(Ordering::Relaxed) == me
        {
            return Err(Error::InvalidState(format!(
                "{} called from inside a reduction operation running on the same communicator",
                Coll::name(sig().coll)
            )));
        }
        self.progress.check_callable()?;
        let claimed = if self.progress.is_owned() {
            // Only the owner thread gets past an owned driver's lock above:
            // plain stores claim the communicator (a locked instruction
            // here waits for the last collective's stores to the arena
            // to reach the other core, a good part of a small collective).
            match self.coll_owner.load(Ordering::Relaxed) {
                0 => {
                    self.coll_owner.store(me, Ordering::Relaxed);
                    Ok(0)
                }
                owner => Err(owner),
            }
        } else {
            self.coll_owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        };
        let outermost = match claimed {
            Ok(_) => true,
            Err(owner) if owner == me => false,
            Err(_) => {
                return Err(Error::InvalidState(format!(
                    "{} called on a communicator while another thread runs a collective \
                     on it: collectives on one communicator must be called by one thread \
                     at a time, in the same order on every rank",
                    Coll::name(sig().coll)
                )))
            }
        };
        // Only the owner changes the depth (load and store, not a locked
        // add: see above).
        let depth = self.coll_depth.load(Ordering::Relaxed);
        self.coll_depth.store(depth + 1, Ordering::Relaxed);
        let entered = Entered { c: self };
        if !(outermost && enabled()) {
            local()?;
            return Ok(entered);
        }
        let local = local();
        let mut mine = sig();
        mine.local_error = u64::from(local.is_err());
        let p = self.size();
        let mut all = vec![0u8; SIG_BYTES * p];
        all[SIG_BYTES * self.rank()..SIG_BYTES * (self.rank() + 1)].copy_from_slice(&mine.encode());
        allgather_bruck_tagged(self, &mut all, SIG_BYTES, TAG_CHECK)?;
        let sigs: Vec<Signature> = all.chunks_exact(SIG_BYTES).map(Signature::decode).collect();
        judge(&sigs, counts)?;
        if let Some(r) = sigs.iter().position(|s| s.local_error != 0) {
            return match local {
                Err(e) => Err(e),
                Ok(()) => Err(Error::InvalidArgument(format!(
                    "{}: rank {r} rejected its own arguments (its error says why)",
                    Coll::name(sigs[r].coll)
                ))),
            };
        }
        Ok(entered)
    }

    /// Runs a user's reduction operation; collectives on this communicator
    /// are refused while it runs.
    pub(crate) fn run_user_op<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Reset<'a>(&'a AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Relaxed);
            }
        }
        self.in_user_op.store(true, Ordering::Relaxed);
        let _reset = Reset(&self.in_user_op);
        f()
    }
}

/// The same verdict on every rank: compares every signature with rank
/// 0's, then (v-variants, once every rank is known to pass the same counts)
/// each rank's own count with the counts. Only gathered data decides, so
/// every rank reaches the same verdict.
fn judge(sigs: &[Signature], counts: Option<&[usize]>) -> Result<()> {
    let Some(reference) = sigs.first() else {
        return Ok(());
    };
    let mismatch = |r: usize, argument: &'static str, expected: String| {
        Err(Error::CollectiveMismatch(Box::new(Mismatch {
            rank: r,
            argument,
            expected,
            found: sigs[r].describe(),
        })))
    };
    for (r, s) in sigs.iter().enumerate() {
        if let Some(argument) = s.differs_from(reference) {
            return mismatch(r, argument, reference.describe());
        }
    }
    // Every rank passed the same counts vector (equal hashes), so this
    // rank's `counts` is everyone's.
    if let Some(counts) = counts {
        for (r, s) in sigs.iter().enumerate() {
            let want = counts.get(r).copied().unwrap_or(0);
            if s.count != want as u64 {
                let expected = format!(
                    "{} with {want} elements from rank {r}",
                    reference.describe()
                );
                return mismatch(r, "count", expected);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mismatch(r: Result<()>) -> (usize, &'static str) {
        match r {
            Err(Error::CollectiveMismatch(m)) => (m.rank, m.argument),
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn the_first_differing_rank_and_argument_are_named() {
        let base = Signature::new(Coll::Reduce)
            .root(0)
            .op(OpCode::Predefined(crate::Op::Sum))
            .elems::<f64>(4);
        assert!(judge(&[base, base, base], None).is_ok());
        let other_root = base.root(1);
        let other_type = Signature::new(Coll::Reduce)
            .root(0)
            .op(OpCode::Predefined(crate::Op::Sum))
            .elems::<i64>(4);
        assert_eq!(
            mismatch(judge(&[base, base, other_type, other_root], None)),
            (2, "element type")
        );
        let e = judge(&[base, other_root], None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("rank 1") && text.contains("root") && text.contains("reduce("),
            "{text}"
        );
        let bcast = Signature::new(Coll::Bcast).root(0).elems::<f64>(4);
        assert_eq!(mismatch(judge(&[base, bcast], None)), (1, "collective"));
        let decoded = Signature::decode(&other_type.encode());
        assert_eq!(decoded, other_type);
    }

    #[test]
    fn v_variants_check_each_rank_against_the_counts() {
        let counts = [1usize, 2, 3];
        let sig = |n: usize| {
            Signature::new(Coll::Gather)
                .root(0)
                .elems::<u32>(n)
                .counts(&counts)
        };
        assert!(judge(&[sig(1), sig(2), sig(3)], Some(&counts)).is_ok());
        assert_eq!(
            mismatch(judge(&[sig(1), sig(2), sig(4)], Some(&counts))),
            (2, "count")
        );
        let other_counts = Signature::new(Coll::Gather)
            .root(0)
            .elems::<u32>(2)
            .counts(&[1, 2, 2]);
        assert_eq!(
            mismatch(judge(&[sig(1), other_counts, sig(3)], Some(&counts))),
            (1, "counts")
        );
    }
}
