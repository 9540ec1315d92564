//! Which algorithm each collective runs: one table of thresholds, and the
//! `COURIER_<COLLECTIVE>_ALGORITHM` environment variables that override it.
//!
//! | collective | default choice (n: bytes per rank, p: ranks) | override names |
//! |---|---|---|
//! | barrier | over the shared-memory arena when the communicator has one; dissemination otherwise | `dissemination`, `shm` |
//! | broadcast | scatter + ring all-gather when p ≥ 8, n ≥ 512 KiB and every rank has a core; else on one node: 2 ranks: arena up to 64 KiB, single copies to 256 KiB (both cores copy), arena at every size on a close node; more ranks: arena at every size; binomial otherwise | `binomial`, `pipelined`, `scatter_allgather`, `shm`, `shm_pull` |
//! | reduce | on one node: 2 ranks: arena up to 1 MiB, single copies with the folding shared to 4 MiB (close node: arena up to 2 MiB, single copies to 4 MiB); 3–8 ranks (or more ranks than cores): arena up to 1 MiB; more ranks: arena up to 128 KiB; else binomial; when p ≥ 8, n ≥ 512 KiB and every rank has a core: Rabenseifner (commutative ops) or the pipelined tree (others) | `binomial`, `pipelined`, `rabenseifner`, `shm`, `shm_pull` |
//! | all-reduce | on one node: 2 ranks: arena up to 32 KiB, single copies with the folding shared to 2 MiB (close node: arena up to 128 KiB, then single copies); 3–8 ranks (or more ranks than cores): arena up to 16 KiB, then a reduce to rank 0 and a broadcast from it in the arena; else recursive doubling up to 8 KiB, Rabenseifner above (commutative ops); non-commutative ops: recursive doubling up to 64 KiB, reduce + broadcast above | `recursive_doubling`, `rabenseifner`, `ring`, `reduce_bcast`, `shm`, `shm_pull` |
//! | all-gather | equal counts on one node: 2 ranks: arena up to blocks of 1 MiB but recursive doubling at 64–128 KiB (close node: arena at every size but recursive doubling at 32–128 KiB); more ranks: arena at every size; else recursive doubling when p is a power of two, Bruck up to 512 KiB in total and ring above otherwise; unequal counts: ring; the point-to-point algorithms send this rank's block from the send buffer and copy it into place during the first exchange | `ring`, `recursive_doubling`, `bruck`, `shm`, `shm_pull` |
//! | all-to-all | equal counts on one node: arena up to 16 KiB of blocks per rank on 2 ranks, 64 KiB on more (several turns above a cell), pairwise exchange for blocks of 16–128 KiB on 2 ranks (32–512 KiB on a close node, where the arena takes every other size) and of 16–512 KiB on more ranks than cores; single copies for blocks of 16 KiB – 1 MiB above the arena's limit; Bruck for blocks ≤ 2 KiB and p ≥ 3; pairwise exchange otherwise and for unequal counts | `pairwise`, `bruck`, `shm`, `shm_pull` |
//! | reduce-scatter | ring for commutative ops; reduce + scatterv otherwise | `ring`, `reduce_scatterv` |
//! | scan, exscan | recursive doubling | `recursive_doubling`, `chain` |
//!
//! The arena (`coll::node`) exists when every rank of the communicator is
//! on this node and reached through shared memory; its cells hold up to
//! `COURIER_SHM_COLL_SLOT` bytes (16 KiB, less on big communicators), and
//! larger calls take several turns. `COURIER_SHM_COLL_MAX` replaces the
//! arena's size limits above.
//!
//! The rows above are for `far` and `close` nodes (the node profile its
//! ranks measure at start-up, `transport::shm::calibrate`). Two ranks of a
//! `remote` node, whose copies through shared memory are far slower than
//! pulls, use the arena only up to 8 KiB (reduce 16 KiB, all-to-all 8 KiB
//! of blocks) and pull above: broadcast to 4 MiB, reduce to 4 MiB,
//! all-reduce to 2 MiB, all-gather and all-to-all to 1 MiB; larger calls
//! go as on a far node ([`REMOTE_ARENA_MAX`]).
//!
//! Before the table, an all-reduce with a commutative operation on a
//! communicator that spans several nodes, with several ranks on at least
//! one, runs node-aware: reduce inside each node, all-reduce among node
//! leaders, broadcast inside each node (`COURIER_HIERARCHICAL=0`, or forcing
//! an algorithm, turns this off).
//!
//! Each algorithm's restrictions (a commutative operation, a power-of-two
//! rank count, equal counts) are declared once, next to its name in the
//! `algorithms!` lists below; an override that cannot serve a call falls
//! back to the default for that call, so forcing an algorithm never gives a
//! wrong answer.
//!
//! The pipelined trees cut messages into `COURIER_COLL_SEGMENT` bytes
//! (64 KiB) so that levels of the tree and the transfer of one segment with
//! the reduction of the previous overlap.
//!
//! The thresholds come from `courier bench` sweeps of every algorithm at 2,
//! 4 and 8 ranks on a 2-core VM (BENCHMARKS.md, "Choosing collective
//! algorithms"). There the latency-bound algorithms won almost everywhere:
//! with ranks sharing cores and one memory bus, fewer steps beat less
//! traffic, and the binomial tree beat scatter + all-gather broadcast,
//! Rabenseifner reduce and the pipelined trees at every size measured (the
//! pipelined ones by 1.2–3×: within a node a segment above the eager limit
//! is pulled by the receiver itself, so its transfer cannot overlap the
//! receiver's reduction, and each segment pays a rendezvous). They are
//! chosen only where this machine cannot measure (8 or more ranks, each
//! with a core of its own, large messages), following MPICH's defaults. The all-reduce
//! switch (8 KiB) sits about where recursive doubling's whole-vector steps
//! turn into a rendezvous each (the shared-memory eager limit) while
//! Rabenseifner's halves still go eagerly.

use crate::error::{Error, Result};
use crate::transport::shm::calibrate::Profile;
use std::sync::OnceLock;

/// What an algorithm needs of a call to serve it; declared once, next to
/// the algorithm's name below. A forced algorithm that cannot serve a call
/// gives way to the default for that call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Needs {
    /// A commutative operation (it reorders operands).
    pub(crate) commutative: bool,
    /// A power-of-two number of ranks.
    pub(crate) pof2: bool,
    /// The same count on every rank.
    pub(crate) equal: bool,
    /// The communicator's arena for collectives over shared memory (all
    /// ranks on this node, an element type no larger than a cell); a call
    /// larger than a cell takes several turns.
    pub(crate) node: bool,
}

impl Needs {
    /// No restriction.
    pub(crate) const ANY: Needs = Needs {
        commutative: false,
        pof2: false,
        equal: false,
        node: false,
    };

    /// Whether call `c` satisfies these needs.
    pub(crate) fn met_by(self, c: Call) -> bool {
        (!self.commutative || c.commutative)
            && (!self.pof2 || c.p.is_power_of_two())
            && (!self.equal || c.equal)
            && (!self.node || c.node_slot > 0)
    }
}

macro_rules! algorithms {
    ($(#[$doc:meta])* $name:ident, $var:literal {
        $($variant:ident = $text:literal $([$($need:ident),*])?),* $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $(#[doc = $text] $variant),*
        }

        impl $name {
            /// Every algorithm, for tests and benchmarks.
            #[allow(dead_code)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),*];

            /// What the algorithm needs of a call.
            #[allow(dead_code)]
            pub(crate) fn needs(self) -> Needs {
                match self {
                    $($name::$variant => Needs { $($($need: true,)*)? ..Needs::ANY },)*
                }
            }

            /// The override from the environment, if any (read once).
            #[inline]
            pub(crate) fn forced() -> Result<Option<$name>> {
                static CHOICE: OnceLock<std::result::Result<Option<$name>, String>> = OnceLock::new();
                // Read on every call of the collective: the choice is
                // copied out, only an error's text is cloned.
                match CHOICE.get_or_init(|| match std::env::var($var) {
                    Err(_) => Ok(None),
                    Ok(s) if s.is_empty() => Ok(None),
                    $(Ok(s) if s == $text => Ok(Some($name::$variant)),)*
                    Ok(s) => Err(format!(
                        concat!($var, "={:?}: expected one of ", $($text, " "),*),
                        s
                    )),
                }) {
                    Ok(choice) => Ok(*choice),
                    Err(e) => Err(Error::InvalidArgument(e.clone())),
                }
            }

            /// The forced algorithm if it can serve `c`, else `default`.
            #[allow(dead_code)]
            #[inline]
            pub(crate) fn choose(c: Call, default: $name) -> Result<$name> {
                Ok(match $name::forced()? {
                    Some(a) if a.needs().met_by(c) => a,
                    _ => default,
                })
            }
        }
    };
}

algorithms!(
    /// Barrier algorithms.
    Barrier, "COURIER_BARRIER_ALGORITHM" {
        Dissemination = "dissemination",
        Shm = "shm" [node],
    }
);
algorithms!(
    /// Broadcast algorithms.
    Bcast, "COURIER_BCAST_ALGORITHM" {
        Binomial = "binomial",
        Pipelined = "pipelined",
        ScatterAllgather = "scatter_allgather",
        Shm = "shm" [node],
        ShmPull = "shm_pull" [node],
    }
);
algorithms!(
    /// Reduce algorithms.
    Reduce, "COURIER_REDUCE_ALGORITHM" {
        Binomial = "binomial",
        Pipelined = "pipelined",
        Rabenseifner = "rabenseifner" [commutative],
        Shm = "shm" [node],
        ShmPull = "shm_pull" [node],
    }
);
algorithms!(
    /// All-reduce algorithms.
    Allreduce, "COURIER_ALLREDUCE_ALGORITHM" {
        RecursiveDoubling = "recursive_doubling",
        Rabenseifner = "rabenseifner" [commutative],
        Ring = "ring" [commutative],
        ReduceBcast = "reduce_bcast",
        Shm = "shm" [node],
        ShmPull = "shm_pull" [node],
        ShmRoot = "shm_root" [node],
    }
);
algorithms!(
    /// All-gather algorithms.
    Allgather, "COURIER_ALLGATHER_ALGORITHM" {
        Ring = "ring",
        RecursiveDoubling = "recursive_doubling" [pof2, equal],
        Bruck = "bruck" [equal],
        Shm = "shm" [node, equal],
        ShmPull = "shm_pull" [node, equal],
    }
);
algorithms!(
    /// All-to-all algorithms.
    Alltoall, "COURIER_ALLTOALL_ALGORITHM" {
        Pairwise = "pairwise",
        Bruck = "bruck" [equal],
        Shm = "shm" [node, equal],
        ShmPull = "shm_pull" [node, equal],
    }
);
algorithms!(
    /// Reduce-scatter algorithms.
    ReduceScatter, "COURIER_REDUCE_SCATTER_ALGORITHM" {
        Ring = "ring" [commutative],
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

/// Broadcast and reduce: bandwidth-optimal algorithms from this many bytes
/// (p ≥ [`LARGE_MIN_RANKS`], not oversubscribed).
pub(crate) const LARGE: usize = 512 * 1024;
/// Fewest ranks for which [`LARGE`] applies.
pub(crate) const LARGE_MIN_RANKS: usize = 8;
/// Largest bytes per rank a collective sends through the node's arena
/// (several turns above a cell's worth), on two ranks and on more: above
/// it the point-to-point algorithms' single-copy transfers win. From
/// interleaved sweeps of the arena against them at 2 and 4 ranks on a
/// 2-core VM (`COURIER_<COLL>_ALGORITHM` against the default): on two
/// ranks the arena stops winning at 64 KiB (broadcast, all-reduce),
/// 32 KiB (all-gather, once it sends the own block from the send buffer:
/// 9.9 against 19.4 µs at 64 KiB) and 32 KiB (reduce, once its leaves send
/// from the send buffer and its root receives into the result: binomial
/// 4.4–6.6 against the arena's 6.6–7.7 µs at 32 KiB); on four, where the
/// arena's copies overlap the other ranks', later (per constant below).
///
/// `close`: the same on two ranks of a node whose ranks copy through
/// shared memory faster than they pull (`Profile::Close`, measured at
/// start-up): there the arena beat the pulls and the point-to-point
/// algorithms up to far larger sizes (2 ranks, AMD EPYC VM with the two
/// vCPUs sharing a core's caches, 3 interleaved rounds, arena ÷ default
/// of the far table: broadcast 64 KiB – 4 MiB 0.31–0.63; all-gather 32 KiB
/// – 4 MiB 0.45–0.69; reduce 32 KiB – 1 MiB 0.31–0.96, 2 MiB 0.97, 4 MiB
/// 1.04; all-to-all 16–512 KiB 0.36–0.95, 1–4 MiB 0.98–0.99; all-reduce 32–
/// 128 KiB 0.55–0.93, 256 KiB 1.04, 512 KiB – 4 MiB 1.10–1.38).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeMax {
    pub(crate) two: usize,
    pub(crate) more: usize,
    pub(crate) close: usize,
    /// Two ranks of a remote node ([`REMOTE_ARENA_MAX`]).
    pub(crate) remote: usize,
}
/// Two ranks of a node whose ranks copy through shared memory at less
/// than 5/8 of a pull's speed (`Profile::Remote`: this VM, when its vCPUs
/// sit far apart) go through the arena only up to 8 KiB (16 KiB for
/// reduce, 8 KiB of all blocks for all-to-all) and pull above, for every
/// collective with a pulling algorithm: the arena copies twice, and both
/// copies pay for lines crossing from one rank's core to the other's.
/// Runs tagged by the profile they measured (AMD EPYC VM, 2 ranks, 1–3
/// each), arena against pulls: broadcast 8 KiB 2.4 against 3.2 µs, 16 KiB
/// 5.5 against 4.6, 64 KiB 15.0 against 8.2, 1 MiB 191 against 54; reduce
/// 16 KiB 4.8 against 6.2, 32 KiB 8.2 against 7.5, 1 MiB 295 against 171;
/// all-reduce 8 KiB 4.5 against 5.5, 16 KiB 8.5 against 5.3, 1 MiB 573
/// against 216; all-gather 8 KiB 4.3 against 3.8, 16 KiB 7.8 against 5.0,
/// 1 MiB 475 against 272; all-to-all blocks of 4 KiB 2.8 against 3.4, 8
/// KiB 4.6 against 3.7, 1 MiB 628 against 273. The point-to-point
/// algorithms the far table prefers at some sizes (recursive doubling,
/// pairwise, all-reduce by halves) do no better there, since messages
/// above 8 KiB are pulled too (`config::REMOTE_SHM_EAGER_LIMIT`).
pub(crate) const REMOTE_ARENA_MAX: usize = 8 * 1024;
/// Broadcast: see [`NodeMax`].
///
/// On more ranks, every size: the arena against the binomial tree (the
/// default above 512 KiB before), AMD EPYC VM, interleaved rounds, 4
/// ranks on 2 cores 1–4 MiB 0.60–0.68 (4 rounds, vCPUs not sharing
/// caches) and 0.46–0.64 (3, sharing); 8 ranks 1–4 MiB 0.25–0.46. With a
/// core per rank, from 8 ranks and 512 KiB, scatter + all-gather still
/// comes first (not measurable on 2 cores; MPICH's choice).
///
/// Two ranks of a far node: up to 64 KiB since session 24. Until copies
/// kept clear of `memcpy`'s slow distance (`sys::copy`) a read from a
/// page-aligned cell into a buffer at page offset 16 (any large `Vec`)
/// ran many times slower, which had sent 64–256 KiB to the pulls. The
/// arena against that table at 64 KiB, AMD EPYC VM without shared caches:
/// far profile forced, OSU's counts (5 rounds) 0.50, 500 calls (3) 0.75;
/// the new table against the old, the profile measured (6 rounds, two
/// sittings), 0.58 and 0.93. At 128 KiB 0.73, 0.91, 0.93 and then 1.31;
/// at 256 KiB – 1 MiB 0.80–0.93 forced but 1.00–1.15 measured: no
/// consistent gain, so the pulls keep 128–256 KiB and the binomial tree
/// what is above (2–4 MiB through the arena: 1.32–1.52).
pub(crate) const NODE_BCAST_MAX: NodeMax = NodeMax {
    two: 64 * 1024,
    more: usize::MAX,
    close: usize::MAX,
    remote: REMOTE_ARENA_MAX,
};
/// Reduce: see [`NodeMax`].
pub(crate) const NODE_REDUCE_MAX: NodeMax = NodeMax {
    // The arena against the pulls (their default from 32 KiB before), 2
    // ranks of a far node, AMD EPYC VM: vCPUs not sharing caches (3
    // rounds) 32 KiB 0.42, 64 KiB 0.62, 128 KiB 0.86, 256 KiB 1.06, 512
    // KiB 1.22; sharing them, far profile forced (4) 32–128 KiB 0.29–0.61.
    // Since copies keep clear of `memcpy`'s slow distance (session 24) it
    // wins up to 1 MiB too: against the pulls, runs tagged far by the
    // profile they measured (session 25), OSU's counts 512 KiB 0.75–0.86,
    // 1 MiB 0.75–0.84 (6–14 runs), 300 calls 0.77 and 0.82 (8); 256 KiB
    // 0.87–0.98; 2 MiB level, 4 MiB 1.9.
    two: 1 << 20,
    // Once the binomial tree's leaves send from the send buffer and its
    // root receives into the result (4 ranks, 3 interleaved sweeps):
    // 256 KiB 78-85 against the arena's 100-133 µs, 512 KiB 172-195
    // against 234-262; equal at 128 KiB. Then the pulls took 256 KiB – 1
    // MiB (`Reduce::ShmPull`: 4 ranks 0.77–0.83 of binomial, 8 ranks
    // 0.59–0.70). Since the arena's publications stopped fencing it beats
    // the pulls there: arena ÷ pulls, AMD EPYC VM, 4 ranks on 2 cores
    // 256 KiB – 1 MiB 0.57–0.84 with the vCPUs sharing caches and
    // 0.59–0.88 without (6 rounds each); 8 ranks 0.57–0.73 and 0.67–0.83
    // (4); 128 KiB level. So more ranks keep to the arena up to 1 MiB
    // (the largest size measured) — above 128 KiB only up to
    // ROOT_MAX_RANKS ranks or ranks sharing cores, as measured (`reduce`).
    // Every size since the large cells (session 28; forced, ÷ Open MPI,
    // fast placement: 4 ranks on 2 cores, 4 rounds, 1–4 MiB the arena
    // 0.27–0.41, Rabenseifner, the default there before, 1.01–1.12, the
    // pulls 0.63–0.71; 8 ranks, 1 round, the arena 0.14–0.18).
    more: usize::MAX,
    // Every size since the large cells (session 28; forced, ÷ Open MPI,
    // 4 rounds, fast placement: the arena 0.43–0.46 at 1–4 MiB, the pulls
    // 0.74–0.76); 2 MiB before, then the pulls to 4 MiB.
    close: usize::MAX,
    remote: 2 * REMOTE_ARENA_MAX,
};
/// All-reduce: see [`NodeMax`].
pub(crate) const NODE_ALLREDUCE_MAX: NodeMax = NodeMax {
    two: 32 * 1024,
    more: 64 * 1024,
    close: 128 * 1024,
    remote: REMOTE_ARENA_MAX,
};
/// All-gather (bytes per block): see [`NodeMax`].
///
/// On more ranks, every size: the arena against recursive doubling (the
/// default above 256 KiB before), interleaved rounds, 4 ranks on 2 cores
/// 512 KiB – 2 MiB 0.47–0.68 (4 rounds, vCPUs not sharing caches) and
/// 0.59–0.70 (3, sharing); 8 ranks 512 KiB – 1 MiB 0.37–0.40.
pub(crate) const NODE_ALLGATHER_MAX: NodeMax = NodeMax {
    // The arena against the pulls at 32 KiB, 2 ranks of a far node: 0.70
    // (vCPUs not sharing caches, 3 rounds), 0.46 (sharing, far forced, 4);
    // at 64 KiB 0.98 and 0.51 (0.83 in a second sitting, once publications
    // no longer fenced), above 1.08–1.16 without sharing. Since copies
    // keep clear of `memcpy`'s slow distance (session 24; see
    // NODE_BCAST_MAX) the arena wins from 256 KiB to 1 MiB too: against
    // the pulls (to 512 KiB) and recursive doubling, far profile forced,
    // OSU's counts (5 rounds) 0.71–0.74, 500 calls (3 rounds) 0.75–0.81;
    // the new table against the old, the profile measured (6 rounds),
    // 0.72–0.79; 2 MiB 1.84, 4 MiB 1.28 (4 rounds, forced), so those keep
    // recursive doubling. 64–128 KiB stay point to point
    // (PAIR_ALLGATHER_P2P).
    //
    // The pulls (`Allgather::ShmPull`, forced only since session 24) were
    // the default for 64 KiB + 1 – 512 KiB on two ranks of a far node:
    // against recursive doubling, 5–7 interleaved rounds, two sittings,
    // 32 KiB 0.86–0.87, 64–512 KiB 0.90–0.96, 1 MiB 0.98–0.99; against the
    // arena at 16 KiB 0.75 in one sitting and 1.15 in another (9 rounds).
    // On 4 ranks and 2 cores their two line exchanges cost context
    // switches: 1.1–1.5× at 32–128 KiB, 0.91 at 256–512 KiB (5 rounds).
    two: 1 << 20,
    more: usize::MAX,
    close: usize::MAX,
    remote: REMOTE_ARENA_MAX,
};

/// All-to-all over one node by single-copy pulls (`Alltoall::ShmPull`),
/// for blocks in this range. Against the default before it (the arena up
/// to [`NODE_ALLTOALL_MAX`], pairwise exchange above), interleaved rounds,
/// median of per-round ratios: 2 ranks (7 rounds) 16–32 KiB 0.84–0.85,
/// 64 KiB – 1 MiB 0.92–0.98, 8 KiB 0.98 (left to the arena); 4 ranks on 2
/// cores (5) 16–64 KiB 0.74–0.88, 128–256 KiB 0.91–0.96, 8 KiB 1.33; 8
/// ranks on 2 cores (3) 16–64 KiB 0.52–0.68: each piece is copied once,
/// where the arena copies it in and out.
pub(crate) const NODE_ALLTOALL_PULL: std::ops::RangeInclusive<usize> = 16 * 1024..=1024 * 1024;

/// Blocks for which an all-to-all on an oversubscribed node (more ranks
/// than cores) exchanges pairwise, point to point, instead of pulling
/// (where every rank first waits for every other's place, and each pull
/// reads from a rank that may be off its core). 4 ranks on 2 cores,
/// pairwise ÷ pulls, alternating rounds:
/// 128–512 KiB 0.75–0.79 with the vCPUs not sharing caches (7 rounds),
/// 0.95–1.00 sharing them (8 rounds); 1 MiB 0.91 and 1.15–1.22 (3
/// rounds), 16–64 KiB 0.94–1.67, so pulls stayed there while those went
/// by rendezvous. Since such a node sends up to 128 KiB eagerly (session
/// 15), pairwise against the default (the arena for 16 KiB blocks on 4
/// ranks, pulls above), vCPUs sharing a core: 4 ranks 16 KiB 0.73 and
/// 0.82, 32 KiB 0.51, 64 KiB 0.58 (6 rounds each); 8 ranks 16–64 KiB
/// 0.63–0.77 (4 rounds); 8 KiB 1.10 on 4 ranks, 1.20 on 8, so the arena
/// keeps those. (Such a node always measures itself far: its two
/// measuring ranks share cores with others.)
pub(crate) const OVERSUBSCRIBED_ALLTOALL_P2P: std::ops::RangeInclusive<usize> =
    16 * 1024..=512 * 1024;

/// Largest blocks (bytes) an all-to-all of `p` ranks on an oversubscribed
/// node (3 to 8 ranks) sends through the arena (every size on 3–4 ranks),
/// before [`OVERSUBSCRIBED_ALLTOALL_P2P`] and the pulls: since session 28 the
/// arena's large cells carry the pieces for the other ranks only. Forced
/// algorithms, ÷ Open MPI in the same rounds (fast placement): 4 ranks on
/// 2 cores (5 rounds), the arena, pulls, pairwise at 16 KiB blocks 0.63,
/// 1.35, 0.71; 64 KiB 0.59, 0.99, 0.73; 256 KiB 0.72, 1.06, 1.08; 512 KiB
/// 0.66, 0.99, 1.00; 1 MiB 0.73, 1.17, 1.11. 8 ranks (3 rounds): 4–32 KiB
/// 0.23–0.65, 0.81–0.96, 0.63–0.76; 64 KiB 0.86, 1.01, 0.94; 128 KiB –
/// 512 KiB 1.00–1.19 for each. 4 ranks at 2–4 MiB blocks (2–3 runs): the
/// arena 0.77–0.83, pairwise 1.01–1.14. Since the arena's turns go in
/// meetings (session 29), 8 ranks, the arena ÷ pairwise (the default
/// there before) 128 KiB 0.53–0.62, 256 KiB 0.71–0.91, 512 KiB 0.89–0.90,
/// 1–2 MiB 0.93–1.02 (4 and 8 rounds, placements mixed), so up to 512
/// KiB: default new ÷ old 128–512 KiB 0.63–0.92 (6 rounds). (Ranks with
/// cores of their own were not measured: they keep the table's other
/// rows.)
fn oversubscribed_arena_block(p: usize) -> usize {
    match p {
        3..=4 => usize::MAX,
        5..=8 => 512 << 10,
        _ => 0,
    }
}

/// Reduce over one node by single-copy pulls with the folding shared
/// (`Reduce::ShmPull`), for operands in this range on two ranks. Against
/// the default before it (binomial, whose root pulls the whole operand and
/// folds it alone), same build, 5 interleaved rounds, median of per-round
/// ratios: 32 KiB 0.73, 64 KiB 0.78, 128–256 KiB 0.66–0.75, 512 KiB 0.47,
/// 1 MiB 0.56, 2 MiB 0.71, 4 MiB 0.82; against the arena at 16 KiB 1.21.
/// The arena now keeps up to 1 MiB ([`NODE_REDUCE_MAX`], measured
/// against the pulls on an AMD EPYC VM).
pub(crate) const NODE_REDUCE_PULL: std::ops::RangeInclusive<usize> = (1 << 20) + 1..=4 << 20;

/// Broadcast on two ranks of one node by single copies (`Bcast::ShmPull`:
/// the receiver pulls 60% while the root writes the rest into it), for
/// buffers in this range. Against the default before it (the arena up to
/// 32 KiB, binomial with its cooperative transfer above), same build, 5
/// interleaved rounds, median of per-round ratios: 64 KiB 0.76, 128 KiB
/// 0.80, 256 KiB 0.88, 512 KiB – 1 MiB 1.00–1.02, 32 KiB 1.08 (a fixed
/// cost of about 1.8 µs: two system calls and two line exchanges). On 4
/// ranks (every receiver pulls it all, 3 rounds) 1.3–1.8×: not there.
///
/// Session 24 (copies clear of `memcpy`'s slow distance): the binomial
/// tree's eager sends beat the pulls at 64–128 KiB in OSU's 100 timed
/// calls (0.49–0.74, two sittings), but only because the root runs ahead
/// through the ring: in 1000 calls they took 1.32–1.50× the pulls' time
/// and 8.8–17.9 µs at 64 KiB against Open MPI's 8.6–11.0 (the pulls
/// 6.4–7.7). So the pulls stayed, until the arena beat them at 64 KiB
/// ([`NODE_BCAST_MAX`]).
pub(crate) const NODE_BCAST_PULL: std::ops::RangeInclusive<usize> = 64 * 1024 + 1..=256 * 1024;
/// Where a collective pulls by default (single copies, `shm_pull`): `two`
/// on two ranks with a core each, `close` on such two ranks of a node that
/// copies faster than it pulls (above the arena's [`NodeMax::close`]),
/// `remote` on two of a node that copies far slower ([`REMOTE_ARENA_MAX`]),
/// `more` otherwise; empty ranges: never.
#[derive(Debug, Clone)]
pub(crate) struct Pulls {
    pub(crate) two: std::ops::RangeInclusive<usize>,
    pub(crate) close: std::ops::RangeInclusive<usize>,
    pub(crate) remote: std::ops::RangeInclusive<usize>,
    pub(crate) more: std::ops::RangeInclusive<usize>,
}

impl Pulls {
    /// The smallest size any of the ranges holds (`usize::MAX`: none).
    const fn least(&self) -> usize {
        let mut least = usize::MAX;
        let ranges = [&self.two, &self.close, &self.remote, &self.more];
        let mut i = 0;
        while i < ranges.len() {
            let (a, b) = (*ranges[i].start(), *ranges[i].end());
            if a <= b && a < least {
                least = a;
            }
            i += 1;
        }
        least
    }
}

/// Broadcast: see [`Pulls`]; never on a close node, where the arena wins.
const BCAST_PULLS: Pulls = Pulls {
    two: NODE_BCAST_PULL,
    close: NEVER,
    remote: REMOTE_ARENA_MAX + 1..=4 << 20,
    more: NEVER,
};
/// Reduce: see [`Pulls`]; never on a close node nor on more ranks (the
/// arena, see [`NODE_REDUCE_MAX`]).
const REDUCE_PULLS: Pulls = Pulls {
    two: NODE_REDUCE_PULL,
    close: NEVER,
    remote: 2 * REMOTE_ARENA_MAX + 1..=4 << 20,
    more: NEVER,
};
/// All-reduce: see [`Pulls`]; from 256 KiB on a close node.
const ALLREDUCE_PULLS: Pulls = Pulls {
    two: NODE_ALLREDUCE_PULL,
    close: 128 * 1024 + 1..=2 << 20,
    remote: REMOTE_ARENA_MAX + 1..=2 << 20,
    more: NODE_ALLREDUCE_PULL_MORE,
};
/// All-gather: see [`Pulls`]; on two ranks of a remote node only (the
/// arena wins elsewhere, see [`NODE_ALLGATHER_MAX`]).
const ALLGATHER_PULLS: Pulls = Pulls {
    two: NEVER,
    close: NEVER,
    remote: REMOTE_ARENA_MAX + 1..=1 << 20,
    more: NEVER,
};
/// All-reduce by a reduce to rank 0 and a broadcast from it, both in the
/// arena (`Allreduce::ShmRoot`), for operands in these ranges (the same
/// shape as [`Pulls`], without needing cross-memory attach). Every rank
/// folding every operand (`Allreduce::Shm`) repeats the work on each
/// core; here rank 0 folds once. Against the default, AMD EPYC VM,
/// interleaved rounds, vCPUs sharing a core's caches: 4 ranks on 2 cores
/// 16 KiB 0.90, 32 KiB 0.62, 64 KiB – 1 MiB 0.51–0.88 (6 rounds), 1–4 MiB
/// 0.82–0.84 (4); 8 ranks 16 KiB – 1 MiB 0.32–0.75 (4); below 16 KiB
/// 0.97–1.35. Without shared caches: 4 ranks 16 KiB – 1 MiB 0.55–0.95 (6
/// rounds; 8 KiB 0.86), 8 ranks 0.40–0.86 (4); two ranks of a far node
/// 1.02–1.69 (each rank's fold runs on its own core there), so not those.
/// Two ranks of a close node (one core's two hardware
/// threads, which share its work too): 16 KiB 0.92–0.93, 32–512 KiB
/// 0.69–0.89, 1–2 MiB 0.99–1.06 (10 rounds over two sittings); up to 128
/// KiB they now go point to point ([`PAIR_ALLREDUCE_P2P`]), and a
/// commutative operation's 32 KiB – 1 MiB by halves
/// ([`PAIR_ALLREDUCE_HALVES`]), so this range serves the others, and
/// since the large cells (session 28) every operand above those too:
/// forced, ÷ Open MPI (4 rounds, fast placement), through rank 0, every
/// rank folding, the pulls: 1 MiB 0.60, 0.67, 0.82; 2 MiB 0.57, 0.71,
/// 0.74; 4 MiB 0.54, 0.61, 0.77 (before: the pulls to 2 MiB). On more
/// ranks only up to [`ROOT_MAX_RANKS`] of them, or ranks sharing cores
/// (every measurement above): with a core per rank and many ranks, rank 0
/// folding every operand alone would be the slow part. From 64 KiB per
/// rank's slice the pulls came first in session 26, not since
/// ([`NODE_ALLREDUCE_PULL_MORE`]).
const ALLREDUCE_ROOT: Pulls = Pulls {
    two: NEVER,
    close: 128 * 1024 + 1..=usize::MAX,
    remote: NEVER,
    more: 16 * 1024..=usize::MAX,
};
/// See [`ALLREDUCE_ROOT`].
const ROOT_MAX_RANKS: usize = 8;
/// Two ranks of a close node (one core's two hardware threads), each
/// with its core, exchange medium operands faster point to point, through
/// the ring's eager messages (up to 512 KiB there), than through the
/// arena: the sizes (bytes per rank, or per block) where the table sends
/// all-reduce by recursive doubling, all-to-all pairwise and all-gather by
/// recursive doubling. Against the default, AMD EPYC VM, 6 interleaved
/// rounds: all-reduce (against the arena up to 8 KiB, the reduce through
/// rank 0 above) 8 KiB 0.87, 16 KiB 0.83, 32–128 KiB 0.64–0.72; all-to-all
/// 32–128 KiB 0.61–0.76 (8 KiB 1.31, 16 KiB 0.84 and 1.03 in two
/// sittings, 256 KiB 1.06); all-gather 32–128 KiB 0.84–0.85 (16 KiB 0.98,
/// 256 KiB 1.63). The new table against the old in one more sitting (4
/// rounds): all-reduce 8–128 KiB 0.69–0.86, all-to-all 32–128 KiB
/// 0.60–0.70, all-gather 32–128 KiB 0.81–0.98. Since a close node sends
/// up to 512 KiB eagerly (session 15), all-to-all of 256 KiB blocks goes
/// pairwise too: 0.85 and 0.91 of the arena (5 and 6 rounds); at 512 KiB
/// 1.01–1.03, and all-gather and all-reduce by recursive doubling at 256
/// KiB 1.24 and 0.96, 512 KiB 1.33 and 1.20, so they keep their limits.
///
/// Two ranks of a far node (the vCPUs not sharing caches) send up to 128
/// KiB eagerly since session 15, and then point to point beats the
/// default (the arena, or pulls) too: against it, 4 interleaved rounds,
/// all-to-all pairwise 16, 32, 64, 128 KiB 0.54, 0.63, 0.72, 0.79;
/// all-gather by recursive doubling 32 KiB 0.90, 64–128 KiB 0.67–0.71 (16
/// KiB 1.00); all-reduce by recursive doubling 16–128 KiB 0.71–0.85; at
/// 256 KiB, past the eager limit, 1.02–3.1. (Reduce and broadcast by
/// binomial tree stay slower: 0.87–16×.) The new table against the old, 5
/// rounds: all-to-all 16–128 KiB 0.54–0.89; all-reduce 16–64 KiB
/// 0.71–0.89 but 128 KiB 1.01; all-gather 64–128 KiB 0.91–0.93 but 32
/// KiB 1.04. So the far ranges keep to where both sittings agree.
const PAIR_ALLREDUCE_P2P: Pair = Pair {
    close: 8 * 1024..=128 * 1024,
    far: 16 * 1024..=64 * 1024,
    remote: NEVER,
};
/// Two ranks of a close node all-reduce a commutative operation's
/// operands of 32 KiB – 1 MiB by Rabenseifner's halves, point to point:
/// each rank folds one half (the other core's half of the work, where the
/// two ranks share one core, is not repeated) and the halves cross twice
/// through the ring, eagerly. Against the table before (recursive
/// doubling to 128 KiB, the arena's reduce through rank 0 and the pulls
/// above; 2 ranks, forced close, session 19): with shared caches, 6
/// rounds, 16 KiB 0.80, 32 KiB 0.69–0.76, 64 KiB – 1 MiB 0.54–0.75;
/// without, 5 rounds, 16 KiB 1.00, 32 KiB 0.89, 64 KiB – 1 MiB 0.51–0.82,
/// 2 MiB 1.37, 4 MiB 1.00. Two ranks of a far node, each with its own
/// core, still fold half as much, and the halves of up to 256 KiB go
/// eagerly: against its table (recursive doubling to 64 KiB, then the
/// pulls), forced far, 5 rounds each, 16–256 KiB 0.37–0.65 (starting
/// without shared caches, ending with them) and 0.46–0.70 (with them); 8
/// KiB 0.92–0.98; 512 KiB – 1 MiB, whose halves are pulled, 0.97–1.13.
const PAIR_ALLREDUCE_HALVES: Pair = Pair {
    close: 32 * 1024..=1024 * 1024,
    far: 16 * 1024..=256 * 1024,
    remote: NEVER,
};
/// See [`PAIR_ALLREDUCE_P2P`]. On a close node up to 128 KiB blocks, the
/// arena above ([`NODE_ALLTOALL_MAX`]), since session 28, whose arena has
/// large cells and publishes only the pieces for other ranks (forced
/// algorithms, 6 rotating rounds in the fast placement, ÷ Open MPI in the
/// same rounds: the arena, pairwise, pulls at 128 KiB blocks 0.45, 0.38,
/// 0.92; 256 KiB 0.40, 0.46, 0.78; 512 KiB 0.60, 0.71, 0.95; 1 MiB 0.73,
/// 1.03, 1.00; 2 MiB 0.74, 1.08, 0.97; 4 MiB 0.73, 1.11, 1.06). Session
/// 27 had pairwise to 512 KiB (then: 512 KiB blocks pairwise 0.67, the
/// arena 0.89).
const PAIR_ALLTOALL_P2P: Pair = Pair {
    close: 32 * 1024..=128 * 1024,
    far: 16 * 1024..=128 * 1024,
    remote: NEVER,
};
/// See [`PAIR_ALLREDUCE_P2P`].
const PAIR_ALLGATHER_P2P: Pair = Pair {
    close: 32 * 1024..=128 * 1024,
    far: 64 * 1024..=128 * 1024,
    remote: NEVER,
};

/// Sizes at which two ranks of one node, each with its core, go point to
/// point: on a `close` node, a `far` one and a `remote` one.
struct Pair {
    close: std::ops::RangeInclusive<usize>,
    far: std::ops::RangeInclusive<usize>,
    remote: std::ops::RangeInclusive<usize>,
}

/// All-to-all: see [`Pulls`]; [`NODE_ALLTOALL_PULL`] on any number of
/// ranks (not bounded by [`PULL_MAX_RANKS`]), above the arena on two ranks
/// of a close node.
const ALLTOALL_PULLS: Pulls = Pulls {
    two: NODE_ALLTOALL_PULL,
    // (512 KiB + 1 – 1 MiB until session 27: see `NODE_ALLTOALL_MAX`.)
    close: NEVER,
    remote: REMOTE_ARENA_MAX / 2 + 1..=1024 * 1024,
    more: NODE_ALLTOALL_PULL,
};

/// Most ranks for which a collective that chooses through [`Call::pulls`]
/// (broadcast, reduce, all-reduce) pulls by default: they were measured up to 8. With more, each rank's slice shrinks and
/// its system calls grow with the rank count (2(p − 1) per all-reduce).
pub(crate) const PULL_MAX_RANKS: usize = 8;
/// No size (a collective that never pulls by default on more ranks).
#[allow(clippy::reversed_empty_ranges)]
const NEVER: std::ops::RangeInclusive<usize> = 1..=0;

/// All-reduce over one node by single-copy pulls with the folding shared
/// (`Allreduce::ShmPull`: each rank folds one slice and writes it into
/// everyone's result), for operands in this range on two ranks. Against
/// the default before it (the arena up to 32 KiB, Rabenseifner above),
/// same build, 5 interleaved rounds, median of per-round ratios: 32 KiB
/// 0.55, 64 KiB – 1 MiB 0.49–0.60, 2 MiB 0.84 (4 MiB 0.98: not won);
/// 16 KiB 0.78 and 0.98 in two sittings, 8 KiB 1.38, so the arena keeps
/// those; and 32 KiB too since the arena's publications stopped fencing
/// (AMD EPYC VM, arena ÷ pulls at 32 KiB: 0.68 with the vCPUs not sharing
/// caches, 0.59 sharing them with the far profile forced; 64 KiB 0.98 and
/// 0.81, 128 KiB 1.58 and 1.00).
pub(crate) const NODE_ALLREDUCE_PULL: std::ops::RangeInclusive<usize> = 32 * 1024 + 1..=2 << 20;
/// All-reduce by pulls on more than two ranks: never by default. Session
/// 26 (an AMD EPYC VM with 1 MiB of L2 per vCPU and 16 MiB of L3) had
/// pulls from 64 KiB per rank's slice to 4 MiB: against the reduce through
/// rank 0 ([`ALLREDUCE_ROOT`]), 4 ranks on 2 cores, vCPUs not sharing
/// caches, 256 KiB – 1 MiB 0.63–0.65; sharing them 256 KiB – 1 MiB
/// 0.96–1.00, 2–4 MiB 0.74–0.80; 8 ranks 512 KiB 0.88, 1 MiB 0.76. Session
/// 27's machine (AMD EPYC, 2 MiB of L2 per vCPU, 32 MiB of L3), the same
/// runs classed by a cache-line probe around each: the reduce through rank
/// 0 ÷ the pulls, 4 ranks, fast placement (5 rounds) 256 KiB 0.44, 512 KiB
/// 0.59, 1 MiB 0.67, 2 MiB 0.51, 4 MiB 0.65 (Open MPI: pulls 0.94–1.04,
/// the root 0.42–0.70); slow placement (4 runs each) 256 KiB – 1 MiB
/// 0.56–1.0, never behind; 8 ranks (4 rounds) 128 KiB – 4 MiB 0.28–0.80.
/// (The pulls stay a forced choice, `shm_pull`, on any number of ranks.)
const NODE_ALLREDUCE_PULL_MORE: std::ops::RangeInclusive<usize> = NEVER;

/// Whether cross-memory attach may be used (`COURIER_CMA`, read once).
pub(crate) fn cma() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(crate::config::cma_enabled)
}

/// Receives a reduction combines at once are copied cooperatively (both
/// cores) only from this many bytes; below, the receiver pulls alone so the
/// bytes are in its cache (see `Net::recv_to_combine`).
pub(crate) const COMBINE_COOP_MIN: usize = 1 << 20;
/// All-to-all (bytes of all of a rank's blocks): see [`NodeMax`]. The
/// arena copies every block twice (in, out), pairwise exchange once (single
/// copy): pairwise wins from blocks of 16 KiB on 2 ranks (3.7–3.9 against
/// 5.4–5.8 µs), the arena up to 64 KiB in all on more (8 alternating
/// runs, session 9: 16 KiB blocks on 4 ranks 29–40 µs against 43–57,
/// 8 KiB blocks on 8 ranks 74–104 against 126–181; 32 KiB blocks on 4
/// ranks 56–60 against 44–61).
/// On two ranks of a close node the arena takes every size above the
/// pairwise exchange ([`PAIR_ALLTOALL_P2P`]) since session 27 (runs as
/// there; ÷ Open MPI): 1 MiB blocks the arena 0.86 (twice), pairwise 0.87
/// and 1.05, pulls 0.98 and 1.11; 2 MiB 0.88, 0.91, 1.08; 4 MiB 0.91,
/// 0.91, 1.04. The build that does so ÷ the one before (ABBA, 10 rounds):
/// 1 MiB 0.89 (pulls before), 2 MiB 0.88, 4 MiB 0.95 (pairwise before).
/// (Before, the arena stopped at 512 KiB of all blocks, the pulls took
/// blocks of 512 KiB + 1 – 1 MiB, and pairwise exchange larger ones.)
pub(crate) const NODE_ALLTOALL_MAX: NodeMax = NodeMax {
    two: 16 * 1024,
    more: 64 * 1024,
    close: usize::MAX,
    remote: REMOTE_ARENA_MAX,
};
/// All-reduce: recursive doubling up to this many bytes (commutative ops).
pub(crate) const ALLREDUCE_SMALL: usize = 8 * 1024;
/// All-reduce with a non-commutative op: recursive doubling up to this many bytes.
pub(crate) const ALLREDUCE_SMALL_NONCOMMUTATIVE: usize = 64 * 1024;
/// All-gather on p not a power of two: Bruck up to this many bytes in total.
pub(crate) const ALLGATHER_BRUCK_TOTAL: usize = 512 * 1024;
/// All-to-all: Bruck for blocks up to this many bytes (p ≥ 3).
pub(crate) const ALLTOALL_BRUCK_BLOCK: usize = 2 * 1024;

/// Segment size of the pipelined tree algorithms (`COURIER_COLL_SEGMENT`
/// overrides it), in bytes.
pub(crate) fn segment() -> usize {
    static SEG: OnceLock<usize> = OnceLock::new();
    *SEG.get_or_init(|| {
        std::env::var("COURIER_COLL_SEGMENT")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &usize| v > 0)
            .unwrap_or(SEGMENT)
    })
}

/// Default segment of the pipelined trees.
pub(crate) const SEGMENT: usize = 64 * 1024;

/// What a call knows when choosing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    /// Ranks in the communicator.
    pub(crate) p: usize,
    /// Bytes per rank (the operand, or one rank's block).
    pub(crate) bytes: usize,
    /// The operation may be reordered.
    pub(crate) commutative: bool,
    /// Every rank contributes the same count (v-variants may not).
    pub(crate) equal: bool,
    /// More ranks than cores on this node.
    pub(crate) oversubscribed: bool,
    /// Data bytes per rank of the communicator's shared-memory arena (0:
    /// no arena: the ranks span nodes or transports, or it is disabled).
    pub(crate) node_slot: usize,
    /// Bytes each rank puts in the arena for the call (`bytes`, or all of
    /// a rank's blocks for all-to-all).
    pub(crate) node_bytes: usize,
    /// How the arena's ranks move data between them (copies through
    /// shared memory against pulls), as the communicator's rank 0 saw it.
    pub(crate) profile: Profile,
    /// No single-copy collective of the communicator has been refused a
    /// pull (`NodeColl::pulls_refused`): the table may choose pulls.
    pub(crate) pulls_ok: bool,
}

impl Call {
    /// Whether the call fits one cell of the communicator's shared-memory
    /// arena.
    pub(crate) fn fits_node(&self) -> bool {
        self.node_slot > 0 && self.node_bytes <= self.node_slot
    }

    /// Whether the call goes through the arena by default: it has one and
    /// the call is at most `max` bytes per rank (`COURIER_SHM_COLL_MAX`
    /// overrides `max` for every collective).
    #[inline]
    fn node_up_to(&self, max: NodeMax) -> bool {
        let max = match (self.p <= 2, self.profile) {
            (true, Profile::Far) => max.two,
            (true, Profile::Close) => max.close,
            (true, Profile::Remote) => max.remote,
            (false, _) => max.more,
        };
        let max = node_max_override().unwrap_or(max);
        self.node_slot > 0 && self.node_bytes <= max.max(self.node_slot)
    }

    /// Whether the call takes the arena's single-copy pulls by default:
    /// it has an arena, its blocks are in `range`, cross-memory attach is
    /// on, and `COURIER_SHM_COLL_MAX` does not ask for the copying arena.
    #[inline]
    fn pulls_in(&self, range: &std::ops::RangeInclusive<usize>) -> bool {
        self.node_slot > 0
            && self.pulls_ok
            && range.contains(&self.bytes)
            && node_max_override().is_none()
            && cma()
    }

    /// Whether the call is two ranks of one node (it has an arena), each
    /// with its core, with a size in the range of `pair` for the node's
    /// profile (see [`PAIR_ALLREDUCE_P2P`]).
    #[inline]
    fn pair_in(&self, pair: &Pair) -> bool {
        let range = match self.profile {
            Profile::Far => &pair.far,
            Profile::Close => &pair.close,
            Profile::Remote => &pair.remote,
        };
        self.p == 2 && self.node_slot > 0 && !self.oversubscribed && range.contains(&self.bytes)
    }

    /// Whether the call has an arena and its size is in the range of
    /// `ranges` for its ranks and node (unless `COURIER_SHM_COLL_MAX`
    /// decides). Out of line, as [`Call::pulls`]'s rest.
    #[inline(never)]
    fn in_arena(&self, ranges: &Pulls) -> bool {
        self.node_slot > 0
            && node_max_override().is_none()
            && self.pull_range(ranges).contains(&self.bytes)
    }

    /// [`Call::pulls_in`] the range of `pulls` for this call's ranks and
    /// node. A call below every range (every small one) decides with one
    /// comparison; the rest is out of line, so the selection stays small
    /// enough to inline.
    #[inline]
    fn pulls(&self, pulls: &Pulls) -> bool {
        self.bytes >= pulls.least() && self.pulls_by_ranks(pulls)
    }

    #[inline(never)]
    fn pulls_by_ranks(&self, pulls: &Pulls) -> bool {
        self.p <= PULL_MAX_RANKS && self.pulls_in(self.pull_range(pulls))
    }

    /// The range of `pulls` for this call: `two` on two ranks with a core
    /// each, `close` and `remote` on such two of a close and a remote
    /// node, `more` otherwise.
    #[inline]
    fn pull_range<'a>(&self, pulls: &'a Pulls) -> &'a std::ops::RangeInclusive<usize> {
        match (self.p == 2 && !self.oversubscribed, self.profile) {
            (true, Profile::Far) => &pulls.two,
            (true, Profile::Close) => &pulls.close,
            (true, Profile::Remote) => &pulls.remote,
            (false, _) => &pulls.more,
        }
    }
}

/// `COURIER_SHM_COLL_MAX`, read once: the arena's size limit for every
/// collective, instead of the table's.
#[inline]
fn node_max_override() -> Option<usize> {
    static OVERRIDE: OnceLock<Option<usize>> = OnceLock::new();
    *OVERRIDE.get_or_init(|| {
        std::env::var("COURIER_SHM_COLL_MAX")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    })
}

#[inline]
fn large(c: Call) -> bool {
    c.bytes >= LARGE && c.p >= LARGE_MIN_RANKS && !c.oversubscribed
}

#[inline]
pub(crate) fn barrier(c: Call) -> Result<Barrier> {
    let default = if c.fits_node() {
        Barrier::Shm
    } else {
        Barrier::Dissemination
    };
    Barrier::choose(c, default)
}

// Always inline: the one call site is on the way of every small call.
#[inline(always)]
pub(crate) fn bcast(c: Call) -> Result<Bcast> {
    let default = if c.pulls(&BCAST_PULLS) {
        Bcast::ShmPull
    } else if large(c) {
        Bcast::ScatterAllgather
    } else if c.node_up_to(NODE_BCAST_MAX) {
        Bcast::Shm
    } else {
        Bcast::Binomial
    };
    Bcast::choose(c, default)
}

// Always inline: the one call site is on the way of every small call.
#[inline(always)]
pub(crate) fn reduce(c: Call) -> Result<Reduce> {
    let default = match (large(c), c.commutative) {
        _ if c.pulls(&REDUCE_PULLS) => Reduce::ShmPull,
        // Above 128 KiB only on nodes like those measured (see
        // NODE_REDUCE_MAX): with a core per rank and many ranks, the root
        // folding every operand alone would be the slow part.
        _ if c.node_up_to(NODE_REDUCE_MAX)
            && (c.node_bytes <= 128 * 1024 || c.p <= ROOT_MAX_RANKS || c.oversubscribed) =>
        {
            Reduce::Shm
        }
        (true, true) => Reduce::Rabenseifner,
        (true, false) => Reduce::Pipelined,
        (false, _) => Reduce::Binomial,
    };
    Reduce::choose(c, default)
}

// Always inline: the one call site is on the way of every small call.
#[inline(always)]
pub(crate) fn allreduce(c: Call) -> Result<Allreduce> {
    let default = match (c.commutative, c.bytes) {
        _ if c.commutative && c.pair_in(&PAIR_ALLREDUCE_HALVES) => Allreduce::Rabenseifner,
        _ if c.pair_in(&PAIR_ALLREDUCE_P2P) => Allreduce::RecursiveDoubling,
        _ if c.bytes >= ALLREDUCE_ROOT.least()
            && (c.p <= ROOT_MAX_RANKS || c.oversubscribed)
            && c.in_arena(&ALLREDUCE_ROOT) =>
        {
            Allreduce::ShmRoot
        }
        _ if c.pulls(&ALLREDUCE_PULLS) => Allreduce::ShmPull,
        _ if c.node_up_to(NODE_ALLREDUCE_MAX) => Allreduce::Shm,
        (true, n) if n <= ALLREDUCE_SMALL => Allreduce::RecursiveDoubling,
        (true, _) => Allreduce::Rabenseifner,
        (false, n) if n <= ALLREDUCE_SMALL_NONCOMMUTATIVE => Allreduce::RecursiveDoubling,
        (false, _) => Allreduce::ReduceBcast,
    };
    Allreduce::choose(c, default)
}

/// Whether an all-reduce runs node-aware (reduce in each node, all-reduce
/// among node leaders, broadcast in each node) on a communicator that spans
/// several nodes with several ranks on one of them: for commutative
/// operations, unless an algorithm is forced or `COURIER_HIERARCHICAL=0`.
pub(crate) fn allreduce_hierarchical(commutative: bool) -> Result<bool> {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var("COURIER_HIERARCHICAL").as_deref() != Ok("0"));
    Ok(on && commutative && Allreduce::forced()?.is_none())
}

#[inline]
pub(crate) fn allgather(c: Call) -> Result<Allgather> {
    let default = if !c.equal {
        Allgather::Ring
    } else if c.pair_in(&PAIR_ALLGATHER_P2P) {
        Allgather::RecursiveDoubling
    } else if c.pulls(&ALLGATHER_PULLS) {
        Allgather::ShmPull
    } else if c.node_up_to(NODE_ALLGATHER_MAX) {
        Allgather::Shm
    } else if c.p.is_power_of_two() {
        Allgather::RecursiveDoubling
    } else if c.bytes.saturating_mul(c.p) <= ALLGATHER_BRUCK_TOTAL {
        Allgather::Bruck
    } else {
        Allgather::Ring
    };
    Allgather::choose(c, default)
}

#[inline]
pub(crate) fn alltoall(c: Call) -> Result<Alltoall> {
    let arena = c.equal && c.node_up_to(NODE_ALLTOALL_MAX);
    // On more than two ranks the arena keeps what fits its limit, pulls or
    // not: 4 ranks on 2 cores, 16 KiB blocks (64 KiB in all), arena ÷ pulls
    // 0.63 with the vCPUs sharing a core's caches (4 rounds), 0.97 without
    // (4); 32 KiB blocks 0.94 and 1.29 (so the limit stays at 64 KiB).
    // An oversubscribed node of up to 8 ranks takes the arena first (up
    // to `oversubscribed_arena_block`), then exchanges pairwise (see
    // `OVERSUBSCRIBED_ALLTOALL_P2P`), even blocks that fit the arena's
    // ordinary limit.
    let default = if c.oversubscribed
        && c.equal
        && c.node_slot > 0
        && node_max_override().is_none()
        && c.bytes <= oversubscribed_arena_block(c.p)
    {
        Alltoall::Shm
    } else if c.p > 2 && c.oversubscribed && OVERSUBSCRIBED_ALLTOALL_P2P.contains(&c.bytes) {
        Alltoall::Pairwise
    } else if arena && c.p > 2 {
        Alltoall::Shm
    } else if c.pair_in(&PAIR_ALLTOALL_P2P) {
        Alltoall::Pairwise
    } else if c.equal && c.pulls_in(c.pull_range(&ALLTOALL_PULLS)) {
        Alltoall::ShmPull
    } else if arena {
        Alltoall::Shm
    } else if c.equal && c.bytes <= ALLTOALL_BRUCK_BLOCK && c.p >= 3 {
        Alltoall::Bruck
    } else {
        Alltoall::Pairwise
    };
    Alltoall::choose(c, default)
}

#[inline]
pub(crate) fn reduce_scatter(c: Call) -> Result<ReduceScatter> {
    let default = if c.commutative {
        ReduceScatter::Ring
    } else {
        ReduceScatter::ReduceScatterv
    };
    ReduceScatter::choose(c, default)
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
            equal: true,
            oversubscribed: false,
            node_slot: 0,
            node_bytes: 0,
            profile: Profile::Far,
            pulls_ok: true,
        }
    }

    #[test]
    fn defaults_follow_the_table() {
        assert_eq!(bcast(call(2, 1 << 20)).unwrap(), Bcast::Binomial);
        assert_eq!(bcast(call(8, 1 << 20)).unwrap(), Bcast::ScatterAllgather);
        let crowded = Call {
            oversubscribed: true,
            ..call(8, 1 << 20)
        };
        assert_eq!(bcast(crowded).unwrap(), Bcast::Binomial);
        assert_eq!(reduce(crowded).unwrap(), Reduce::Binomial);
        assert_eq!(reduce(call(8, 1 << 20)).unwrap(), Reduce::Rabenseifner);
        let nc8 = Call {
            commutative: false,
            ..call(8, 1 << 20)
        };
        assert_eq!(reduce(nc8).unwrap(), Reduce::Pipelined);
        assert_eq!(allreduce(call(4, 8)).unwrap(), Allreduce::RecursiveDoubling);
        assert_eq!(
            allreduce(call(4, 1 << 20)).unwrap(),
            Allreduce::Rabenseifner
        );
        let nc = Call {
            commutative: false,
            ..call(8, 1 << 20)
        };
        assert_eq!(allreduce(nc).unwrap(), Allreduce::ReduceBcast);
        let nc4 = Call { p: 4, ..nc };
        assert_eq!(reduce(nc4).unwrap(), Reduce::Binomial);
        assert_eq!(reduce_scatter(nc).unwrap(), ReduceScatter::ReduceScatterv);
        assert_eq!(allgather(call(6, 8)).unwrap(), Allgather::Bruck);
        assert_eq!(allgather(call(6, 1 << 20)).unwrap(), Allgather::Ring);
        assert_eq!(allgather(call(8, 8)).unwrap(), Allgather::RecursiveDoubling);
        assert_eq!(
            allgather(Call {
                equal: false,
                ..call(8, 8)
            })
            .unwrap(),
            Allgather::Ring
        );
        assert_eq!(alltoall(call(8, 8)).unwrap(), Alltoall::Bruck);
        assert_eq!(
            alltoall(Call {
                equal: false,
                ..call(8, 8)
            })
            .unwrap(),
            Alltoall::Pairwise
        );
        assert_eq!(alltoall(call(8, 1 << 20)).unwrap(), Alltoall::Pairwise);
    }

    #[test]
    fn collectives_on_one_node_pull_from_their_ranges_on() {
        // Environment-dependent parts (`COURIER_CMA`, `COURIER_SHM_COLL_MAX`)
        // are unset in unit tests.
        let node = |p: usize, bytes: usize| Call {
            node_slot: 16 * 1024,
            node_bytes: bytes,
            ..call(p, bytes)
        };
        assert_eq!(reduce(node(2, 1 << 20)).unwrap(), Reduce::Shm);
        assert_eq!(reduce(node(2, 2 << 20)).unwrap(), Reduce::ShmPull);
        assert_eq!(reduce(node(2, 8 << 20)).unwrap(), Reduce::Binomial);
        assert_eq!(reduce(node(4, 128 << 10)).unwrap(), Reduce::Shm);
        assert_eq!(reduce(node(4, 1 << 20)).unwrap(), Reduce::Shm);
        assert_eq!(reduce(node(4, 8 << 20)).unwrap(), Reduce::Shm);
        assert_eq!(reduce(node(8, 8 << 20)).unwrap(), Reduce::Shm);
        assert_eq!(reduce(node(16, 128 << 10)).unwrap(), Reduce::Shm);
        assert_ne!(reduce(node(16, 1 << 20)).unwrap(), Reduce::Shm);
        // Two ranks of a far node go point to point at some of the eager
        // sizes (up to 128 KiB), where that beats the arena and the pulls.
        assert_eq!(allreduce(node(2, 8 << 10)).unwrap(), Allreduce::Shm);
        for n in [16 << 10, 64 << 10, 256 << 10] {
            assert_eq!(allreduce(node(2, n)).unwrap(), Allreduce::Rabenseifner);
        }
        let ordered = |bytes: usize| Call {
            commutative: false,
            ..node(2, bytes)
        };
        assert_eq!(
            allreduce(ordered(64 << 10)).unwrap(),
            Allreduce::RecursiveDoubling
        );
        assert_eq!(allreduce(ordered(128 << 10)).unwrap(), Allreduce::ShmPull);
        assert_eq!(allreduce(node(2, 512 << 10)).unwrap(), Allreduce::ShmPull);
        assert_eq!(allreduce(node(4, 8 << 10)).unwrap(), Allreduce::Shm);
        assert_eq!(allreduce(node(4, 16 << 10)).unwrap(), Allreduce::ShmRoot);
        // On more ranks the reduce through rank 0 takes every larger size
        // (no pulls by default: `NODE_ALLREDUCE_PULL_MORE`).
        for bytes in [128 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20] {
            assert_eq!(allreduce(node(4, bytes)).unwrap(), Allreduce::ShmRoot);
            assert_eq!(allreduce(node(8, bytes)).unwrap(), Allreduce::ShmRoot);
        }
        // A communicator that was refused a pull is sent elsewhere: the
        // arena, or point to point.
        let refused = |p: usize, bytes: usize| Call {
            pulls_ok: false,
            ..node(p, bytes)
        };
        assert_eq!(allreduce(refused(4, 1 << 20)).unwrap(), Allreduce::ShmRoot);
        assert_eq!(allreduce(node(2, 512 << 10)).unwrap(), Allreduce::ShmPull);
        assert_ne!(
            allreduce(refused(2, 512 << 10)).unwrap(),
            Allreduce::ShmPull
        );
        assert_eq!(reduce(node(2, 2 << 20)).unwrap(), Reduce::ShmPull);
        assert_ne!(reduce(refused(2, 2 << 20)).unwrap(), Reduce::ShmPull);
        let blocks = |pulls_ok: bool| Call {
            node_bytes: 4 << 20,
            pulls_ok,
            ..node(4, 1 << 20)
        };
        assert_eq!(alltoall(blocks(true)).unwrap(), Alltoall::ShmPull);
        assert_ne!(alltoall(blocks(false)).unwrap(), Alltoall::ShmPull);
        assert_eq!(bcast(node(2, 128 << 10)).unwrap(), Bcast::ShmPull);
        assert_ne!(bcast(refused(2, 128 << 10)).unwrap(), Bcast::ShmPull);
        assert_eq!(allreduce(node(3, 192 << 10)).unwrap(), Allreduce::ShmRoot);
        let crowded4 = Call {
            oversubscribed: true,
            ..node(4, 1 << 20)
        };
        assert_eq!(allreduce(crowded4).unwrap(), Allreduce::ShmRoot);
        let ordered4 = Call {
            commutative: false,
            ..node(4, 1 << 20)
        };
        assert_eq!(allreduce(ordered4).unwrap(), Allreduce::ShmRoot);
        assert_ne!(allreduce(node(9, 8 << 20)).unwrap(), Allreduce::ShmRoot);
        let crowded9 = Call {
            oversubscribed: true,
            ..node(9, 8 << 20)
        };
        assert_eq!(allreduce(crowded9).unwrap(), Allreduce::ShmRoot);
        let crowded = Call {
            oversubscribed: true,
            ..node(2, 8 << 10)
        };
        assert_eq!(allreduce(crowded).unwrap(), Allreduce::Shm);
        // Two ranks of a far node broadcast through the arena up to 64
        // KiB and all-gather there from 256 KiB to 1 MiB (session 24).
        assert_eq!(bcast(node(2, 64 << 10)).unwrap(), Bcast::Shm);
        assert_eq!(bcast(node(2, 128 << 10)).unwrap(), Bcast::ShmPull);
        assert_eq!(bcast(node(2, 256 << 10)).unwrap(), Bcast::ShmPull);
        assert_eq!(bcast(node(2, 512 << 10)).unwrap(), Bcast::Binomial);
        assert_eq!(bcast(node(4, 64 << 10)).unwrap(), Bcast::Shm);
        assert_eq!(allgather(node(2, 32 << 10)).unwrap(), Allgather::Shm);
        assert_eq!(
            allgather(node(2, 64 << 10)).unwrap(),
            Allgather::RecursiveDoubling
        );
        assert_eq!(
            allgather(node(2, 128 << 10)).unwrap(),
            Allgather::RecursiveDoubling
        );
        assert_eq!(allgather(node(2, 256 << 10)).unwrap(), Allgather::Shm);
        assert_eq!(allgather(node(2, 1 << 20)).unwrap(), Allgather::Shm);
        assert_eq!(
            allgather(node(2, 2 << 20)).unwrap(),
            Allgather::RecursiveDoubling
        );
        let pair = |block: usize| Call {
            node_bytes: 2 * block,
            ..node(2, block)
        };
        assert_eq!(alltoall(pair(8 << 10)).unwrap(), Alltoall::Shm);
        assert_eq!(alltoall(pair(16 << 10)).unwrap(), Alltoall::Pairwise);
        assert_eq!(alltoall(pair(128 << 10)).unwrap(), Alltoall::Pairwise);
        assert_eq!(alltoall(pair(256 << 10)).unwrap(), Alltoall::ShmPull);
        assert_eq!(allgather(node(4, 64 << 10)).unwrap(), Allgather::Shm);
        assert_eq!(allgather(node(4, 4 << 20)).unwrap(), Allgather::Shm);
        assert_eq!(bcast(node(4, 4 << 20)).unwrap(), Bcast::Shm);
        let crowded8 = Call {
            oversubscribed: true,
            ..node(8, 4 << 20)
        };
        assert_eq!(bcast(crowded8).unwrap(), Bcast::Shm);
        // All-to-all on an oversubscribed node: through the arena at every
        // size on 4 ranks, up to 64 KiB blocks on 8; larger blocks there
        // pairwise up to 512 KiB, then pulled up to 1 MiB; more than 8
        // ranks and a node with a core per rank keep the arena for small
        // blocks only.
        let crowded = |p: usize, block: usize| Call {
            oversubscribed: true,
            node_bytes: p * block,
            ..node(p, block)
        };
        for (p, block, want) in [
            (4, 8, Alltoall::Shm),
            (4, 16, Alltoall::Shm),
            (4, 1024, Alltoall::Shm),
            (4, 4096, Alltoall::Shm),
            (8, 64, Alltoall::Shm),
            (8, 512, Alltoall::Shm),
            (8, 1024, Alltoall::ShmPull),
            (16, 1, Alltoall::Shm),
            (16, 16, Alltoall::Pairwise),
        ] {
            assert_eq!(
                alltoall(crowded(p, block << 10)).unwrap(),
                want,
                "{p} ranks, {block} KiB"
            );
        }
        assert_eq!(alltoall(node(4, 256 << 10)).unwrap(), Alltoall::ShmPull);
    }

    #[test]
    fn two_ranks_of_a_remote_node_pull_above_8_kib() {
        let remote = |p: usize, bytes: usize, all: usize| Call {
            node_slot: 16 * 1024,
            node_bytes: all,
            profile: Profile::Remote,
            ..call(p, bytes)
        };
        let one = |p, bytes| remote(p, bytes, bytes);
        assert_eq!(bcast(one(2, 8 << 10)).unwrap(), Bcast::Shm);
        assert_eq!(allreduce(one(2, 8 << 10)).unwrap(), Allreduce::Shm);
        assert_eq!(allgather(one(2, 8 << 10)).unwrap(), Allgather::Shm);
        assert_eq!(reduce(one(2, 16 << 10)).unwrap(), Reduce::Shm);
        assert_eq!(
            alltoall(remote(2, 4 << 10, 8 << 10)).unwrap(),
            Alltoall::Shm
        );
        for n in [(8 << 10) + 4, 16 << 10, 128 << 10, 1 << 20] {
            assert_eq!(bcast(one(2, n)).unwrap(), Bcast::ShmPull);
            assert_eq!(allreduce(one(2, n)).unwrap(), Allreduce::ShmPull);
            assert_eq!(allgather(one(2, n)).unwrap(), Allgather::ShmPull);
            assert_eq!(alltoall(remote(2, n, 2 * n)).unwrap(), Alltoall::ShmPull);
        }
        for n in [(16 << 10) + 4, 1 << 20, 4 << 20] {
            assert_eq!(reduce(one(2, n)).unwrap(), Reduce::ShmPull);
        }
        // Beyond the pulls' ranges: as on a far node.
        assert_eq!(reduce(one(2, 8 << 20)).unwrap(), Reduce::Binomial);
        assert_eq!(
            allgather(one(2, 2 << 20)).unwrap(),
            Allgather::RecursiveDoubling
        );
        // More ranks (never calibrated remote) keep the far table.
        assert_eq!(bcast(one(4, 1 << 20)).unwrap(), Bcast::Shm);
        assert_eq!(allgather(one(4, 64 << 10)).unwrap(), Allgather::Shm);
    }

    #[test]
    fn two_ranks_of_a_close_node_keep_to_the_arena_longer() {
        let close = |p: usize, bytes: usize| Call {
            node_slot: 16 * 1024,
            node_bytes: bytes,
            profile: Profile::Close,
            ..call(p, bytes)
        };
        for n in [8 << 10, 256 << 10, 1 << 20, 8 << 20] {
            assert_eq!(bcast(close(2, n)).unwrap(), Bcast::Shm);
            assert_eq!(allgather(close(2, n)).unwrap(), Allgather::Shm);
        }
        for n in [2 << 20, 4 << 20, 8 << 20] {
            assert_eq!(reduce(close(2, n)).unwrap(), Reduce::Shm);
        }
        assert_eq!(allreduce(close(2, 4 << 10)).unwrap(), Allreduce::Shm);
        assert_eq!(
            allreduce(close(2, 16 << 10)).unwrap(),
            Allreduce::RecursiveDoubling
        );
        for n in [32 << 10, 64 << 10, 256 << 10, 1 << 20] {
            assert_eq!(allreduce(close(2, n)).unwrap(), Allreduce::Rabenseifner);
        }
        // Rabenseifner's halves need a commutative operation.
        let ordered = |bytes: usize| Call {
            commutative: false,
            ..close(2, bytes)
        };
        assert_eq!(
            allreduce(ordered(64 << 10)).unwrap(),
            Allreduce::RecursiveDoubling
        );
        assert_eq!(allreduce(ordered(256 << 10)).unwrap(), Allreduce::ShmRoot);
        for n in [(1 << 20) + 1, 2 << 20, 8 << 20] {
            assert_eq!(allreduce(close(2, n)).unwrap(), Allreduce::ShmRoot);
        }
        assert_eq!(allreduce(ordered(8 << 20)).unwrap(), Allreduce::ShmRoot);
        assert_eq!(alltoall(close(2, 64 << 10)).unwrap(), Alltoall::Pairwise);
        assert_eq!(alltoall(close(2, 128 << 10)).unwrap(), Alltoall::Pairwise);
        assert_eq!(
            allgather(close(2, 64 << 10)).unwrap(),
            Allgather::RecursiveDoubling
        );
        assert_eq!(alltoall(close(2, (128 << 10) + 1)).unwrap(), Alltoall::Shm);
        assert_eq!(alltoall(close(2, 512 << 10)).unwrap(), Alltoall::Shm);
        assert_eq!(alltoall(close(2, 4 << 20)).unwrap(), Alltoall::Shm);
        // More ranks (not measured on a close node) keep the far table.
        assert_eq!(bcast(close(4, 1 << 20)).unwrap(), Bcast::Shm);
        assert_eq!(bcast(close(8, 1 << 20)).unwrap(), Bcast::ScatterAllgather);
        assert_eq!(reduce(close(4, 256 << 10)).unwrap(), Reduce::Shm);
        // All-to-all's arena bytes are all of a rank's blocks: 4 × 16 KiB
        // fit its limit on more ranks, 4 × 32 KiB are pulled.
        let blocks = |p: usize, block: usize| Call {
            node_bytes: p * block,
            ..close(p, block)
        };
        assert_eq!(alltoall(blocks(4, 16 << 10)).unwrap(), Alltoall::Shm);
        assert_eq!(alltoall(blocks(4, 32 << 10)).unwrap(), Alltoall::ShmPull);
        assert_eq!(alltoall(blocks(8, 16 << 10)).unwrap(), Alltoall::ShmPull);
        assert_eq!(alltoall(blocks(2, 8 << 10)).unwrap(), Alltoall::Shm);
        // Two ranks sharing a core take the "more" ranges, close or not.
        let crowded = Call {
            oversubscribed: true,
            ..close(2, 256 << 10)
        };
        assert_eq!(allreduce(crowded).unwrap(), Allreduce::ShmRoot);
    }
}

#[cfg(test)]
mod needs_tests {
    use super::*;

    #[test]
    fn forced_algorithms_serve_only_calls_that_meet_their_needs() {
        let c = Call {
            p: 6,
            bytes: 8,
            commutative: false,
            equal: false,
            oversubscribed: false,
            node_slot: 0,
            node_bytes: 0,
            profile: Profile::Far,
            pulls_ok: true,
        };
        assert!(!Allgather::RecursiveDoubling.needs().met_by(c));
        assert!(Allgather::RecursiveDoubling.needs().met_by(Call {
            p: 8,
            equal: true,
            ..c
        }));
        assert!(!Allgather::Bruck.needs().met_by(c));
        assert!(Allgather::Ring.needs().met_by(c));
        assert!(!Allreduce::Ring.needs().met_by(c));
        assert!(Allreduce::ReduceBcast.needs().met_by(c));
        assert!(!Reduce::Rabenseifner.needs().met_by(c));
        assert!(!ReduceScatter::Ring.needs().met_by(c));
        assert!(!Alltoall::Bruck.needs().met_by(c));
    }
}
