//! Which algorithm each collective runs: one table of thresholds, and the
//! `COURIER_<COLLECTIVE>_ALGORITHM` environment variables that override it.
//!
//! | collective | default choice (n: bytes per rank, p: ranks) | override names |
//! |---|---|---|
//! | broadcast | binomial; scatter + ring all-gather when n ≥ 128 KiB and p ≥ 3 | `binomial`, `scatter_allgather` |
//! | reduce | binomial; Rabenseifner when n ≥ 64 KiB and the op is commutative | `binomial`, `rabenseifner` |
//! | all-reduce | recursive doubling up to 64 KiB (when oversubscribed: up to 2 KiB, then reduce + broadcast up to 64 KiB); Rabenseifner above (commutative ops); non-commutative: recursive doubling up to 64 KiB, reduce + broadcast above | `recursive_doubling`, `rabenseifner`, `ring`, `reduce_bcast` |
//! | all-gather | total ≤ 64 KiB: recursive doubling (p a power of two) or Bruck; ring above; ring for unequal counts | `ring`, `recursive_doubling`, `bruck` |
//! | all-to-all | Bruck for blocks ≤ 256 B and p ≥ 4; pairwise exchange otherwise and for unequal counts | `pairwise`, `bruck` |
//! | reduce-scatter | ring for commutative ops; reduce + scatterv otherwise | `ring`, `reduce_scatterv` |
//! | scan, exscan | recursive doubling | `recursive_doubling`, `chain` |
//!
//! An override that cannot serve a call (recursive-doubling all-gather on a
//! size that is not a power of two, Bruck with unequal counts, a
//! commutative-only algorithm with a non-commutative op) falls back to the
//! default for that call, so forcing an algorithm never gives a wrong answer.
//! The thresholds were measured with `courier bench` on a 2-core VM
//! (BENCHMARKS.md).

use crate::error::{Error, Result};
use std::sync::OnceLock;

macro_rules! algorithms {
    ($(#[$doc:meta])* $name:ident, $var:literal { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $(#[doc = $text] $variant),*
        }

        impl $name {
            /// Every algorithm, for tests and benchmarks.
            #[allow(dead_code)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The override from the environment, if any (read once).
            pub(crate) fn forced() -> Result<Option<$name>> {
                static CHOICE: OnceLock<std::result::Result<Option<$name>, String>> = OnceLock::new();
                CHOICE
                    .get_or_init(|| match std::env::var($var) {
                        Err(_) => Ok(None),
                        Ok(s) if s.is_empty() => Ok(None),
                        $(Ok(s) if s == $text => Ok(Some($name::$variant)),)*
                        Ok(s) => Err(format!(
                            concat!($var, "={:?}: expected one of ", $($text, " "),*),
                            s
                        )),
                    })
                    .clone()
                    .map_err(Error::InvalidArgument)
            }
        }
    };
}

algorithms!(
    /// Broadcast algorithms.
    Bcast, "COURIER_BCAST_ALGORITHM" {
        Binomial = "binomial",
        ScatterAllgather = "scatter_allgather",
    }
);
algorithms!(
    /// Reduce algorithms.
    Reduce, "COURIER_REDUCE_ALGORITHM" {
        Binomial = "binomial",
        Rabenseifner = "rabenseifner",
    }
);
algorithms!(
    /// All-reduce algorithms.
    Allreduce, "COURIER_ALLREDUCE_ALGORITHM" {
        RecursiveDoubling = "recursive_doubling",
        Rabenseifner = "rabenseifner",
        Ring = "ring",
        ReduceBcast = "reduce_bcast",
    }
);
algorithms!(
    /// All-gather algorithms.
    Allgather, "COURIER_ALLGATHER_ALGORITHM" {
        Ring = "ring",
        RecursiveDoubling = "recursive_doubling",
        Bruck = "bruck",
    }
);
algorithms!(
    /// All-to-all algorithms.
    Alltoall, "COURIER_ALLTOALL_ALGORITHM" {
        Pairwise = "pairwise",
        Bruck = "bruck",
    }
);
algorithms!(
    /// Reduce-scatter algorithms.
    ReduceScatter, "COURIER_REDUCE_SCATTER_ALGORITHM" {
        Ring = "ring",
        ReduceScatterv = "reduce_scatterv",
    }
);
algorithms!(
    /// Scan and exscan algorithms.
    Scan, "COURIER_SCAN_ALGORITHM" {
        RecursiveDoubling = "recursive_doubling",
        Chain = "chain",
    }
);

/// Broadcast: scatter + all-gather from this many bytes (p ≥ 3).
pub(crate) const BCAST_LARGE: usize = 128 * 1024;
/// Reduce: Rabenseifner from this many bytes (commutative ops).
pub(crate) const REDUCE_LARGE: usize = 64 * 1024;
/// All-reduce: recursive doubling up to this many bytes.
pub(crate) const ALLREDUCE_SMALL: usize = 64 * 1024;
/// All-reduce with more ranks than cores: recursive doubling up to this many
/// bytes (every step needs both partners running at once; the tree needs fewer).
pub(crate) const ALLREDUCE_SMALL_OVERSUBSCRIBED: usize = 2 * 1024;
/// All-gather: latency-bound algorithms up to this many bytes in total.
pub(crate) const ALLGATHER_SMALL: usize = 64 * 1024;
/// All-to-all: Bruck for blocks up to this many bytes (p ≥ 4).
pub(crate) const ALLTOALL_BRUCK_BLOCK: usize = 256;

/// What a call knows when choosing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    /// Ranks in the communicator.
    pub(crate) p: usize,
    /// Bytes per rank (the operand, or one rank's block).
    pub(crate) bytes: usize,
    /// The operation may be reordered.
    pub(crate) commutative: bool,
    /// More ranks than cores on this node.
    pub(crate) oversubscribed: bool,
}

pub(crate) fn bcast(c: Call) -> Result<Bcast> {
    Ok(
        Bcast::forced()?.unwrap_or(if c.bytes >= BCAST_LARGE && c.p >= 3 {
            Bcast::ScatterAllgather
        } else {
            Bcast::Binomial
        }),
    )
}

pub(crate) fn reduce(c: Call) -> Result<Reduce> {
    let default = if c.bytes >= REDUCE_LARGE && c.commutative {
        Reduce::Rabenseifner
    } else {
        Reduce::Binomial
    };
    Ok(match Reduce::forced()? {
        Some(Reduce::Rabenseifner) if !c.commutative => default,
        Some(a) => a,
        None => default,
    })
}

pub(crate) fn allreduce(c: Call) -> Result<Allreduce> {
    let small = if c.oversubscribed {
        ALLREDUCE_SMALL_OVERSUBSCRIBED
    } else {
        ALLREDUCE_SMALL
    };
    let default = if c.bytes <= small {
        Allreduce::RecursiveDoubling
    } else if c.bytes <= ALLREDUCE_SMALL || !c.commutative {
        Allreduce::ReduceBcast
    } else {
        Allreduce::Rabenseifner
    };
    Ok(match Allreduce::forced()? {
        Some(Allreduce::Rabenseifner | Allreduce::Ring) if !c.commutative => default,
        Some(a) => a,
        None => default,
    })
}

/// `equal`: every rank contributes the same count.
pub(crate) fn allgather(c: Call, equal: bool) -> Result<Allgather> {
    let small = equal && c.bytes.saturating_mul(c.p) <= ALLGATHER_SMALL;
    let default = match (small, c.p.is_power_of_two()) {
        (false, _) => Allgather::Ring,
        (true, true) => Allgather::RecursiveDoubling,
        (true, false) => Allgather::Bruck,
    };
    Ok(match Allgather::forced()? {
        Some(Allgather::RecursiveDoubling) if !c.p.is_power_of_two() => default,
        Some(Allgather::Bruck) if !equal => default,
        Some(a) => a,
        None => default,
    })
}

pub(crate) fn alltoall(c: Call, equal: bool) -> Result<Alltoall> {
    let default = if equal && c.bytes <= ALLTOALL_BRUCK_BLOCK && c.p >= 4 {
        Alltoall::Bruck
    } else {
        Alltoall::Pairwise
    };
    Ok(match Alltoall::forced()? {
        Some(Alltoall::Bruck) if !equal => default,
        Some(a) => a,
        None => default,
    })
}

pub(crate) fn reduce_scatter(c: Call) -> Result<ReduceScatter> {
    let default = if c.commutative {
        ReduceScatter::Ring
    } else {
        ReduceScatter::ReduceScatterv
    };
    Ok(match ReduceScatter::forced()? {
        Some(ReduceScatter::Ring) if !c.commutative => default,
        Some(a) => a,
        None => default,
    })
}

pub(crate) fn scan() -> Result<Scan> {
    Ok(Scan::forced()?.unwrap_or(Scan::RecursiveDoubling))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(p: usize, bytes: usize) -> Call {
        Call {
            p,
            bytes,
            commutative: true,
            oversubscribed: false,
        }
    }

    #[test]
    fn defaults_follow_the_table() {
        assert_eq!(bcast(call(2, 1 << 20)).unwrap(), Bcast::Binomial);
        assert_eq!(bcast(call(4, 1 << 20)).unwrap(), Bcast::ScatterAllgather);
        assert_eq!(allreduce(call(4, 8)).unwrap(), Allreduce::RecursiveDoubling);
        assert_eq!(
            allreduce(call(4, 1 << 20)).unwrap(),
            Allreduce::Rabenseifner
        );
        let nc = Call {
            commutative: false,
            ..call(4, 1 << 20)
        };
        assert_eq!(allreduce(nc).unwrap(), Allreduce::ReduceBcast);
        assert_eq!(reduce(nc).unwrap(), Reduce::Binomial);
        assert_eq!(reduce_scatter(nc).unwrap(), ReduceScatter::ReduceScatterv);
        assert_eq!(allgather(call(6, 8), true).unwrap(), Allgather::Bruck);
        assert_eq!(
            allgather(call(8, 8), true).unwrap(),
            Allgather::RecursiveDoubling
        );
        assert_eq!(allgather(call(8, 8), false).unwrap(), Allgather::Ring);
        assert_eq!(alltoall(call(8, 8), true).unwrap(), Alltoall::Bruck);
        assert_eq!(alltoall(call(8, 8), false).unwrap(), Alltoall::Pairwise);
    }
}
