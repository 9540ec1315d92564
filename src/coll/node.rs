//! Collectives over a shared-memory arena, for communicators whose ranks
//! all share one node: no point-to-point message and no matching on the
//! way, just cells published and read (see `transport::shm::arena`).
//!
//! Every operation takes the next sequence number `s` of the communicator
//! (the same on every rank: collectives are called in the same order) and
//! uses the state lines of turn `s mod LINE_DEPTH` and, above
//! `arena::INLINE` bytes per rank, its small cell of that turn (up to 256
//! bytes) or the data cells of turn `s mod DATA_DEPTH`. Before a rank
//! rewrites them it waits until every rank has started operation
//! `s - depth + 1` (`Arena::depth_for`), and so has
//! finished reading those of operation `s - depth`; that is nearly always
//! known already from what the rank saw since. A rank can thus run 63
//! small or 15 large operations ahead (a broadcast's root pipelines; on a
//! node with more ranks than cores, the running ranks get far before they
//! must give their core away: back-to-back 8-byte broadcasts on 4 ranks
//! and 2 cores took 0.5–1.0 µs with 16 cells, 0.45–0.5 µs with 64).
//!
//! An operation larger than a cell takes several turns, a cell's worth per
//! rank each (an all-gather's blocks, a reduction's elements): the root of
//! a broadcast fills the next cells while the others still copy out the
//! last ones, and a reduce's contributors publish ahead while the root
//! folds, so large operations pipeline without any message. Every cell
//! also carries the byte count of the rank's whole operation: a rank
//! whose count differs from its peers' gets an error naming the rank.
//!
//! | operation | what each rank does |
//! |---|---|
//! | barrier | publish; wait for every rank's publication |
//! | broadcast | the root publishes the data; the others wait for the root's cell and copy it out |
//! | reduce | the others publish their operands; the root waits for them and folds all in rank order |
//! | all-reduce | publish the operand; wait for all; fold them in rank order (every rank folds the same bytes in the same order, so all get the same bits) |
//! | all-gather | publish the block; wait for all; copy every block out |
//! | all-gather, all-to-all by pulls (`shm_pull`, large blocks) | publish where the block lies (process, address); copy the own block into place; pull every other block (all-to-all: this rank's piece of every other send buffer) straight from its owner's memory (cross-memory attach, one copy); publish "done" and wait until every rank is (the blocks must not change before); if a rank could not pull, all fall back to the copying version |
//! | broadcast by pulls (`shm_pull`) | publish where the buffer lies; on 2 ranks the receiver pulls 60% while the root writes the rest into it, on more every receiver pulls it all; "done" and fallback as above |
//! | reduce, all-reduce by pulls (`shm_pull`) | publish where operand and result lie; pull this rank's slice of every operand and fold it in rank order; write the folded slice into the root's (all-reduce: every rank's) result; "done" (or a failed operation) and fallback as above |
//! | all-to-all | publish the blocks for every rank; wait for all; copy this rank's block out of every cell |
//!
//! A rank that publishes nothing (a broadcast's receivers, a reduce's root)
//! announces in its progress word every few operations, and before any
//! wait, that it has moved on, which is all the others need to know from it
//! before they reuse a line or cell: per operation it moves one cache line
//! (the one it reads), not two. (It still publishes through one lap in
//! every 2^14, so that none of its lines gets too stale to place: see
//! `REFRESH_LAPS`.)
//!
//! Reductions combine in rank order, `((r0 ⊕ r1) ⊕ r2) ⊕ …`, so they serve
//! non-commutative operations too, and the result is bit-identical on
//! every rank.
//!
//! Waiting follows the rank's policy: spin, then yield the core, then sleep
//! on the arena's futex (publishers wake sleepers), looking at the job
//! (aborts, a lost launcher) between sleeps. On a node with more ranks than
//! cores the policy yields at once, and a rank waiting for others first
//! waits for those on its own CPU (each says which CPU it runs on in its
//! progress line), yielding, then for those on other CPUs by spinning a
//! little while before it yields: those run meanwhile, while yielding to
//! a rank on this CPU that has nothing left to do but wait too would only
//! pass the CPU back and forth (4 ranks on 2 cores, unbound: the barrier
//! took 0.58 of Open MPI's time, against 0.89 before). The arena is made on the
//! communicator's first collective, once every rank agrees that all of
//! them share this node through shared memory (two small all-reduces and a
//! broadcast, once per communicator); otherwise the communicator never
//! uses it.

use super::algo::{self, bytes, bytes_mut, Reduction};
use super::spread::Spread;
use super::UserOp;
use crate::comm::CommShared;
use crate::error::{Error, Result};
use crate::progress::WaitPolicy;
use crate::transport::shm::arena::{Arena, ArenaAddr, DATA_DEPTH, LARGE_TURNS, LINE_DEPTH};
use crate::transport::shm::calibrate::Profile;
use bytemuck::Pod;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

/// One rank's side of a communicator's arena.
#[derive(Debug)]
pub(crate) struct NodeColl {
    arena: Arena,
    me: usize,
    p: usize,
    /// Sequence number of the last operation (one thread at a time runs
    /// the communicator's collectives: see `coll::check`).
    seq: AtomicU64,
    /// The last operation this rank announced in its progress word.
    announced: AtomicU64,
    /// The last operation in which this rank published nothing (see
    /// [`NodeColl::begin_quiet`]).
    quiet: AtomicU64,
    /// An operation every other rank is known to have started (the least
    /// of what `seen` says of them when last computed): starting an
    /// operation whose turn that frees looks at no rank at all.
    all_started: AtomicU64,
    /// What this rank knows of the others.
    seen: Seen,
    policy: WaitPolicy,
    /// The CPU this rank last said in the arena it runs on, plus one (0:
    /// not said yet); on an oversubscribed node only.
    cpu: AtomicU32,
    /// How the node moves data between its ranks (copies through shared
    /// memory against pulls), as rank 0 saw it: the same on every rank.
    profile: Profile,
    /// Moves this rank off a crowded CPU (an oversubscribed node only).
    spread: Spread,
    /// A single-copy collective of this communicator's could not pull (or
    /// push) somewhere: every rank learned it from the same reports, so
    /// the selection table stops choosing pulls for it alike on every rank
    /// (where cross-memory attach is refused, e.g. by Yama's
    /// `ptrace_scope`, each call would otherwise try and fall back).
    pulls_refused: AtomicBool,
}

/// What a rank has seen of the others, so that it looks at shared lines
/// only when it must. Only the thread running the communicator's
/// collectives uses it (see `coll::check`): relaxed loads and stores, no
/// locked instruction on the way of a small collective.
#[derive(Debug)]
struct Seen {
    /// The highest sequence number each rank published in its cell.
    published: Box<[AtomicU64]>,
    /// The highest operation each rank is known to have started (from its
    /// cells or its progress word).
    started: Box<[AtomicU64]>,
}

impl Seen {
    fn new(p: usize) -> Self {
        Seen {
            published: (0..p).map(|_| AtomicU64::new(0)).collect(),
            started: (0..p).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn published(&self, r: usize) -> u64 {
        self.published
            .get(r)
            .map_or(0, |v| v.load(AtomicOrdering::Relaxed))
    }

    fn started(&self, r: usize) -> u64 {
        self.started
            .get(r)
            .map_or(0, |v| v.load(AtomicOrdering::Relaxed))
    }

    fn set_published(&self, r: usize, v: u64) {
        if let Some(x) = self.published.get(r) {
            x.store(v, AtomicOrdering::Relaxed);
        }
    }

    fn set_started(&self, r: usize, v: u64) {
        if let Some(x) = self.started.get(r) {
            x.store(v, AtomicOrdering::Relaxed);
        }
    }
}

/// Where a rank's buffers lie for a single-copy collective, published in
/// its state line: its process, the address others pull from, an address
/// others write to (0: none) and the length every rank must share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    pid: u64,
    from: u64,
    to: u64,
    len: u64,
}

/// Bytes of a published [`Place`] (four little-endian `u64`s).
const PLACE: usize = 32;

/// This process's id, asked of the kernel once (`getpid` is a system
/// call, and every single-copy collective publishes it).
fn own_pid() -> u64 {
    static PID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PID.get_or_init(|| u64::from(std::process::id()))
}

impl Place {
    fn encode(&self) -> [u8; PLACE] {
        let mut b = [0u8; PLACE];
        for (i, w) in [self.pid, self.from, self.to, self.len]
            .into_iter()
            .enumerate()
        {
            b[8 * i..8 * (i + 1)].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    fn decode(b: &[u8; PLACE]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[8 * i..8 * (i + 1)]);
            u64::from_le_bytes(w)
        };
        Place {
            pid: word(0),
            from: word(1),
            to: word(2),
            len: word(3),
        }
    }

    /// This process's place: pulled from at `from`, written to at `to`
    /// (0: nowhere), `len` bytes.
    fn mine(from: u64, to: u64, len: usize) -> Self {
        Place {
            pid: own_pid(),
            from,
            to,
            len: len as u64,
        }
    }

    /// The owner's process id, if it is one.
    fn process(&self) -> Option<u32> {
        u32::try_from(self.pid).ok()
    }

    /// Copies `into.len()` bytes from offset `at` of the owner's `from`
    /// into `into` (cross-memory attach); whether it could.
    fn pull(&self, at: u64, into: &mut [u8]) -> bool {
        self.process()
            .is_some_and(|pid| crate::sys::cma::read(pid, self.from.wrapping_add(at), into).is_ok())
    }

    /// Copies `data` to offset `at` of the owner's `to`; whether it could
    /// (not if the owner published no destination).
    fn push(&self, at: u64, data: &[u8]) -> bool {
        self.to != 0
            && self.process().is_some_and(|pid| {
                crate::sys::cma::write(pid, self.to.wrapping_add(at), data).is_ok()
            })
    }
}

/// Whether this rank may pull at all. One whose cross-memory attach is off
/// (`COURIER_CMA=0`, even with the algorithm forced) reports a refusal
/// instead, so that all ranks take the copying way together.
fn may_pull() -> bool {
    super::tune::cma() && !pull_refused()
}

/// Percent of a broadcast by pulls on two ranks that the receiver pulls;
/// the root writes the rest into the receiver's buffer meanwhile.
const BCAST_PULL_SHARE: usize = 60;

/// What the other ranks reported at the end of a single-copy collective.
#[derive(Debug, Clone, Copy)]
struct Reports {
    /// Every one pulled (and wrote) all it had to.
    all_pulled: bool,
    /// The first whose reduction operation failed.
    failed: Option<usize>,
}

/// What a rank reports when its part of a single-copy collective is over.
const DONE_PULLED: u8 = 1;
const DONE_REFUSED: u8 = 0;
const DONE_FAILED: u8 = 2;

/// A rank that publishes nothing in an operation (a broadcast's
/// receivers, a reduce's root) announces its progress every this many
/// operations, and before it waits: far below the line depth, so a root
/// running ahead seldom has to wait for an announcement. (Publishing an
/// empty cell in every operation instead, 2 ranks, back-to-back: 4–32-byte
/// broadcasts took 1.2–1.35× as long, reduces 1.5–1.6×.)
const ANNOUNCE_EVERY: u64 = 16;

/// How long a rank on an oversubscribed node spins, in one wait, for ranks
/// that run on another CPU before it gives its own CPU away (see
/// `NodeColl::wait_all_sharing`): long enough for that CPU to pass between
/// a few ranks (about 1.5 µs a handoff on the reference VM), short enough
/// that a rank whose CPU it wrongly believes to be another (it moved)
/// costs little.
const CROSS_CPU_SPIN: Duration = Duration::from_micros(20);

/// A wait's spell of spinning for ranks on another CPU (see
/// `NodeColl::wait_all_sharing`).
#[derive(Debug, Clone, Copy)]
enum Spell {
    NotBegun,
    /// Spinning until then.
    Until(Instant),
    /// Spent: the wait yields from now on.
    Over,
}

/// A quiet rank still publishes (an empty cell) through one lap of
/// [`LINE_DEPTH`] operations in every this many laps. A state line keeps
/// only the low 32 bits of its sequence number, which a reader can place
/// only if the line is less than 2^31 operations stale: a rank quiet for
/// longer (a broadcast's receiver in a loop of billions of broadcasts, a
/// few minutes at 0.1 µs each) would otherwise leave lines that read as
/// published. This keeps every line under 2^20 + 64 operations stale.
const REFRESH_LAPS: u64 = 1 << 14;

/// Whether operation `s` falls in a lap in which quiet ranks publish.
fn refresh_lap(s: u64) -> bool {
    (s / LINE_DEPTH) % REFRESH_LAPS == 0
}

/// `COURIER_SHM_COLL_SLOT`: the largest data bytes per rank and cell in a
/// communicator's arena (0 disables collectives over shared memory).
fn slot_limit() -> usize {
    static SLOT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SLOT.get_or_init(|| crate::config::shm_coll_slot().unwrap_or(DEFAULT_SLOT))
}

/// `COURIER_SHM_COLL_LARGE`: the largest data bytes of a large cell (0:
/// none), read once as [`slot_limit`].
fn large_limit() -> usize {
    static LARGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LARGE.get_or_init(|| crate::config::shm_coll_large().unwrap_or(LARGE_MAX))
}

/// Default largest data bytes per rank and cell.
pub(crate) const DEFAULT_SLOT: usize = 16 * 1024;
/// An arena of `p` ranks takes about this many bytes at most: cells shrink
/// (not below [`MIN_SLOT`]) as the communicator grows.
pub(crate) const ARENA_BUDGET: usize = 4 << 20;
/// The smallest cell worth an arena.
pub(crate) const MIN_SLOT: usize = 1024;

/// Large cells take at most this many bytes of an arena, over all its
/// ranks and turns...
pub(crate) const LARGE_BUDGET: usize = 4 << 20;
/// ...and hold at most this many data bytes each (`COURIER_SHM_COLL_LARGE`).
pub(crate) const LARGE_MAX: usize = 64 << 10;

/// Data bytes of a large cell in an arena of `p` ranks whose data cells
/// hold `slot` (no large cells when that is no more than `slot`).
/// Operations of more than `LARGE_TURNS` data cells' worth per rank use
/// them, in turns of a `LARGE_TURNS`th of the operation up to a large
/// cell's worth (`NodeColl::room`). With 64 KiB cells for everything against 16 KiB
/// (2 vCPUs, 3–6 interleaved rounds), broadcasts of 64 KiB – 4 MiB on 4
/// ranks took 0.63–0.68 of the time, all-gathers of 32 KiB – 1 MiB
/// 0.68–0.83, 2-rank all-gathers 0.70–0.94; but 4-rank all-gathers of
/// 256 B – 16 KiB took 1.06–1.57× as long (small operations then cycled
/// through 4 MiB of cells), hence two sizes.
pub(crate) fn large_size(p: usize, slot: usize) -> usize {
    let fair = LARGE_BUDGET / (DATA_DEPTH as usize * p.max(1));
    let large = fair.min(large_limit()) & !63;
    if large > slot {
        large
    } else {
        0
    }
}

/// Data bytes per cell for an arena of `p` ranks (0: no arena).
pub(crate) fn slot_size(p: usize) -> usize {
    let limit = slot_limit();
    if limit == 0 {
        return 0;
    }
    let fair = ARENA_BUDGET / (DATA_DEPTH as usize * p.max(1));
    fair.clamp(MIN_SLOT.min(limit), limit) & !63
}

/// The arena of `c`, made on first use if every rank can have one (`None`:
/// the communicator spans nodes or transports, and uses point-to-point
/// only). Collective: every rank of `c` calls it at the same collective.
#[inline]
pub(crate) fn arena(c: &CommShared) -> Result<Option<&NodeColl>> {
    match c.node.get() {
        Some(n) => Ok(n.as_ref()),
        None => arena_first(c),
    }
}

/// [`arena`] on the communicator's first collective: set up (or not).
#[cold]
#[inline(never)]
fn arena_first(c: &CommShared) -> Result<Option<&NodeColl>> {
    let made = setup(c)?;
    // One thread at a time runs the communicator's collectives
    // (`coll::check`), so nobody set it meanwhile.
    Ok(c.node.get_or_init(|| made).as_ref())
}

/// All ranks agree on `ok` (bitwise and over the communicator).
fn agree(c: &CommShared, ok: bool) -> Result<bool> {
    let mut v = [u64::from(ok)];
    let mut tmp = [0u64];
    algo::allreduce_recursive_doubling(
        c,
        Reduction::new(&mut v, &mut tmp, &mut |a: &mut [u64], b: &[u64]| {
            a[0] &= b[0];
            Ok(())
        }),
    )?;
    Ok(v[0] == 1)
}

fn setup(c: &CommShared) -> Result<Option<NodeColl>> {
    let (p, me) = (c.size(), c.rank());
    let slot = slot_size(p);
    let local = p >= 2 && slot > 0 && {
        let prog = c.progress.lock()?;
        (0..p).all(|r| {
            c.world_rank(r)
                .is_ok_and(|w| r == me || prog.is_shm_peer(w))
        })
    };
    if !agree(c, local)? {
        return Ok(None);
    }
    // Rank 0 makes the arena and tells the others where it is, and how
    // its node moves data (so that every rank picks the same algorithms).
    let made = if me == 0 {
        Arena::create(p, slot, large_size(p, slot)).ok()
    } else {
        None
    };
    let mut addr = [0u64; 5];
    if let Some(a) = &made {
        let ArenaAddr { pid, fd, size } = a.addr();
        let profile = c.progress.lock()?.profile();
        addr = [
            u64::from(pid),
            fd as u64,
            size as u64,
            profile as u64,
            a.large() as u64,
        ];
    }
    algo::bcast_binomial(c, bytes_mut(&mut addr), 0)?;
    let arena = match made {
        Some(a) => Some(a),
        None if addr[2] > 0 => Arena::open(
            ArenaAddr {
                pid: addr[0] as u32,
                fd: addr[1] as i32,
                size: addr[2] as usize,
            },
            p,
            slot,
            addr[4] as usize,
        )
        .ok(),
        None => None,
    };
    if !agree(c, arena.is_some())? {
        return Ok(None);
    }
    let Some(mut arena) = arena else {
        return Ok(None);
    };
    let policy = c.progress.lock()?.policy();
    let profile = u32::try_from(addr[3])
        .ok()
        .and_then(Profile::from_word)
        .unwrap_or(Profile::Far);
    // Asking for the next line (`Arena::ask_for_next_line`) where the
    // cores share caches, one rank per core: all-reduce of 4–32 bytes on
    // 2 ranks 0.91–0.94 of not asking, barrier 0.86–0.91 (two runs of 6
    // and 8 interleaved rounds); where they share none (far), the
    // all-reduce took 1.04–1.08. All-gather and broadcast, which publish
    // the same way, read 0.91–1.20 (6 rounds): left out.
    arena.set_ask_ahead(profile == Profile::Close && !policy.oversubscribed);
    Ok(Some(NodeColl {
        arena,
        me,
        p,
        seq: AtomicU64::new(0),
        announced: AtomicU64::new(0),
        quiet: AtomicU64::new(0),
        all_started: AtomicU64::new(0),
        seen: Seen::new(p),
        policy,
        cpu: AtomicU32::new(0),
        profile,
        // Only a communicator of every rank of the node sees where all of
        // them run (one of some ranks could crowd the others' CPUs).
        spread: Spread::new(policy.oversubscribed && p == policy.node_ranks as usize),
        pulls_refused: AtomicBool::new(false),
    }))
}

/// Looks at the job while a rank sleeps in a wait: an error ends the wait
/// (an abort, a lost launcher).
pub(crate) type Check<'a> = &'a dyn Fn() -> Result<()>;

/// The check a communicator's collectives make: the driver's progress,
/// which reads the launcher's notices.
pub(crate) fn job_check(c: &CommShared) -> Result<()> {
    c.progress
        .lock()?
        .progress_once(Some(Duration::ZERO))
        .map(|_| ())
}

impl NodeColl {
    /// Whether the node has more ranks than cores (the rank's policy).
    pub(crate) fn oversubscribed(&self) -> bool {
        self.policy.oversubscribed
    }

    /// How the node moves data between its ranks (rank 0's profile; the
    /// same on every rank).
    pub(crate) fn profile(&self) -> Profile {
        self.profile
    }

    /// Whether a single-copy collective of this communicator found a rank
    /// that could not pull (the same answer on every rank, between
    /// collectives).
    pub(crate) fn pulls_refused(&self) -> bool {
        self.pulls_refused.load(AtomicOrdering::Relaxed)
    }

    /// `all`, the outcome every rank of a single-copy collective computed
    /// from the same reports; a `false` is remembered
    /// ([`NodeColl::pulls_refused`]).
    fn learn(&self, all: bool) -> bool {
        if !all {
            self.pulls_refused.store(true, AtomicOrdering::Relaxed);
        }
        all
    }

    /// Data bytes a rank may publish per operation.
    pub(crate) fn slot(&self) -> usize {
        self.arena.slot()
    }

    /// Starts the next operation, of `total` bytes per rank: its sequence
    /// number, once every rank has started operation `s - depth + 1 +`
    /// [`READ_LAG`] (so the line and cells of this turn are free: a rank
    /// that has started operation `t` may still read `t - READ_LAG`).
    ///
    /// For a rank that publishes in this operation. If it published
    /// nothing in an operation since it last announced, it announces
    /// first: a rank waiting for it to have started that operation looks
    /// at the operation's own line and at the progress word only, and this
    /// rank's later cells lie in other lines. (A broadcast's receiver that
    /// never had to wait, then the root of a broadcast it left before the
    /// others asked: they waited for it forever.)
    fn begin(&self, check: Check<'_>, total: usize) -> Result<u64> {
        let s = self.next(check, total)?;
        if self.quiet.load(AtomicOrdering::Relaxed) > self.announced.load(AtomicOrdering::Relaxed) {
            self.announce();
        }
        Ok(s)
    }

    /// The sequence number of the next operation, once its turn is free
    /// (see [`NodeColl::begin`]).
    fn next(&self, check: Check<'_>, total: usize) -> Result<u64> {
        let s = self.seq.load(AtomicOrdering::Relaxed) + 1;
        self.seq.store(s, AtomicOrdering::Relaxed);
        let depth = self.arena.depth_for(total);
        let free = (s + 1 + READ_LAG).saturating_sub(depth);
        if free > self.all_started.load(AtomicOrdering::Relaxed) {
            self.wait_started(check, free)?;
        }
        Ok(s)
    }

    /// Starts the next operation of a rank that publishes nothing in it:
    /// as [`NodeColl::begin`], announcing its progress every
    /// [`ANNOUNCE_EVERY`] operations (the others learn it from there), or,
    /// in a refresh lap, publishing an empty cell (see [`REFRESH_LAPS`]).
    fn begin_quiet(&self, check: Check<'_>, total: usize) -> Result<u64> {
        let s = self.next(check, total)?;
        if refresh_lap(s) {
            self.arena.publish(s, self.me, &[], total as u64);
        } else if s % ANNOUNCE_EVERY == 0 {
            self.announce();
        } else {
            // Nothing shows it started `s` yet: a wait announces it, and
            // so does the next `begin` (a run of quiet operations of
            // [`ANNOUNCE_EVERY`] or more announces within itself).
            self.quiet.store(s, AtomicOrdering::Relaxed);
        }
        Ok(s)
    }

    /// Announces the current operation in this rank's progress word, if
    /// not done yet: a rank does before it waits, so a rank waiting for it
    /// to move on never waits for a rank that is itself waiting.
    fn announce(&self) {
        let s = self.seq.load(AtomicOrdering::Relaxed);
        if self.announced.load(AtomicOrdering::Relaxed) < s {
            self.announced.store(s, AtomicOrdering::Relaxed);
            self.arena.announce(self.me, s);
        }
    }

    /// Whether `r` has started operation `s` (or later): published in its
    /// cell of that turn, or announced.
    fn has_started(&self, s: u64, r: usize) -> Option<u64> {
        let v = self.arena.published(s, r).max(self.arena.announced(r));
        (v >= s).then_some(v)
    }

    /// Waits until every other rank has started operation `s` (or later).
    fn wait_started(&self, check: Check<'_>, s: u64) -> Result<()> {
        let mut waiter = Waiter::new(&self.policy);
        let mut least = u64::MAX;
        for r in self.others() {
            let known = self.seen.started(r).max(self.seen.published(r));
            if known >= s {
                least = least.min(known);
                continue;
            }
            loop {
                if let Some(v) = self.has_started(s, r) {
                    self.seen.set_started(r, v);
                    least = least.min(v);
                    break;
                }
                self.announce();
                waiter.pause(check, &self.arena, || self.has_started(s, r).is_some())?;
            }
        }
        if least != u64::MAX {
            self.all_started.store(least, AtomicOrdering::Relaxed);
        }
        Ok(())
    }

    /// Waits until every rank in `ranks` has published `s` (or later), an
    /// operation of `total` bytes per rank. On a node with a core per rank
    /// it first asks for each rank's small cell as it comes to that rank
    /// (`Arena::prefetch_small`), so that an operand of more than a line
    /// comes over with the state, not one transfer after it.
    fn wait_all(
        &self,
        check: Check<'_>,
        s: u64,
        ranks: impl Iterator<Item = usize> + Clone,
        total: usize,
    ) -> Result<()> {
        if self.policy.oversubscribed {
            return self.wait_all_sharing(check, s, ranks);
        }
        let mut waiter = Waiter::new(&self.policy);
        for r in ranks {
            self.arena.prefetch_small(s, r, total);
            while !self.has_published(s, r) {
                self.announce();
                waiter.pause(check, &self.arena, || self.arena.published(s, r) >= s)?;
            }
        }
        Ok(())
    }

    /// Whether `r` has published `s` (or later), as last seen or now
    /// (then remembered).
    #[inline]
    fn has_published(&self, s: u64, r: usize) -> bool {
        if self.seen.published(r) >= s {
            return true;
        }
        let v = self.arena.published(s, r);
        if v >= s {
            self.seen.set_published(r, v);
        }
        v >= s
    }

    /// [`NodeColl::wait_all`] on a node with more ranks than cores: first
    /// for the ranks on this rank's CPU (or on a CPU not known), by giving
    /// the CPU away, then for the others. For ranks on another CPU it
    /// spins a while first (up to [`CROSS_CPU_SPIN`] in all, then as the
    /// policy says) if every rank on this CPU has started operation `s`:
    /// those have nothing left to do here but wait too. (One that has not, the
    /// receiver of a broadcast a turn behind, needs this CPU to catch up.)
    fn wait_all_sharing(
        &self,
        check: Check<'_>,
        s: u64,
        ranks: impl Iterator<Item = usize> + Clone,
    ) -> Result<()> {
        if ranks.clone().all(|r| self.has_published(s, r)) {
            return Ok(()); // no wait: no look at the CPU either
        }
        let mut waiter = Waiter::new(&self.policy);
        let mut mine = self.note_cpu();
        if self
            .spread
            .maybe_move(self.me, mine, (0..self.p).map(|r| self.arena.cpu(r)))
        {
            mine = self.note_cpu();
        }
        // One spell of spinning per wait, however many ranks it covers.
        let mut spell = Spell::NotBegun;
        let mut rounds = 0u32;
        for pass in [false, true] {
            for r in ranks.clone() {
                if self.seen.published(r) >= s || (!pass && self.on_other_cpu(r, mine)) {
                    continue;
                }
                while !self.has_published(s, r) {
                    self.announce();
                    rounds = rounds.wrapping_add(1);
                    if pass && self.on_other_cpu(r, mine) {
                        let spin = match spell {
                            // The clock is read every 16th round.
                            Spell::Until(until) => {
                                if rounds % 16 != 0 || Instant::now() < until {
                                    true
                                } else {
                                    spell = Spell::Over;
                                    false
                                }
                            }
                            Spell::Over => false,
                            Spell::NotBegun if self.mates_started(s, mine) => {
                                spell = Spell::Until(Instant::now() + CROSS_CPU_SPIN);
                                true
                            }
                            Spell::NotBegun => false,
                        };
                        if spin {
                            std::hint::spin_loop();
                            continue;
                        }
                    }
                    waiter.pause(check, &self.arena, || self.arena.published(s, r) >= s)?;
                    // The scheduler may have moved this rank meanwhile.
                    mine = self.note_cpu();
                }
            }
        }
        Ok(())
    }

    /// Whether `r` said it runs on a CPU other than `mine` (a hint).
    fn on_other_cpu(&self, r: usize, mine: Option<u32>) -> bool {
        matches!((mine, self.arena.cpu(r)), (Some(m), Some(c)) if c != m)
    }

    /// Whether every other rank that runs on CPU `mine` (or on a CPU not
    /// known) has started operation `s`.
    fn mates_started(&self, s: u64, mine: Option<u32>) -> bool {
        self.others()
            .all(|q| self.on_other_cpu(q, mine) || self.has_started(s, q).is_some())
    }

    /// Says in the arena which CPU this rank runs on, if it changed, and
    /// returns it (`None`: not known).
    fn note_cpu(&self) -> Option<u32> {
        let cpu = u32::try_from(nix::sched::sched_getcpu().ok()?).ok()?;
        if self.cpu.load(AtomicOrdering::Relaxed) != cpu.wrapping_add(1) {
            self.cpu.store(cpu.wrapping_add(1), AtomicOrdering::Relaxed);
            self.arena.set_cpu(self.me, cpu);
        }
        Some(cpu)
    }

    /// Every rank but this one (what this rank published itself it need
    /// not wait for).
    fn others(&self) -> impl Iterator<Item = usize> + Clone {
        let me = self.me;
        (0..self.p).filter(move |&r| r != me)
    }

    /// Barrier.
    pub(crate) fn barrier(&self, check: Check<'_>) -> Result<()> {
        let s = self.begin(check, 0)?;
        self.arena.publish(s, self.me, &[], 0);
        self.arena.ask_for_next_line(s, self.me);
        self.wait_all(check, s, self.others(), 0)
    }

    /// Data bytes one turn of an operation of `total` bytes per rank
    /// carries: a data cell's worth, or for an operation in the large
    /// cells (`Arena::room_for`) a [`LARGE_TURNS`]th of it up to a large
    /// cell's worth, so that readers copy one turn while the writer
    /// writes the next (a 32 KiB broadcast or reduce in one 32 KiB turn
    /// took 1.3–1.4× as long as in two of 16 KiB).
    fn room(&self, total: usize) -> usize {
        let cap = self.arena.room_for(total);
        let slot = self.slot();
        if cap <= slot {
            return cap;
        }
        (total / LARGE_TURNS).next_multiple_of(64).clamp(slot, cap)
    }

    /// Turns an operation of `len` bytes per rank takes: one per cell's
    /// worth, at least one.
    fn turns(&self, len: usize) -> usize {
        if len <= self.slot() {
            1 // no division on the way of a small operation
        } else {
            len.div_ceil(self.room(len).max(1))
        }
    }

    /// Checks that `rank` published an operation of `total` bytes for `s`,
    /// as this rank did: ranks whose counts differ get a clear error
    /// instead of each other's stale bytes.
    fn check_total(&self, what: &str, s: u64, rank: usize, total: usize) -> Result<()> {
        // Compared as the arena keeps them (saturated at 2^32 - 1).
        let theirs = self.arena.total(s, rank);
        if theirs == Arena::stored_total(total as u64) {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "{what}: rank {rank} contributes {theirs} bytes where this rank has {total} \
             (the ranks' counts must match)"
        )))
    }

    /// Broadcast of `buf` from `root`, a cell's worth per turn (the root
    /// runs up to `DEPTH - 1` turns ahead, so large ones pipeline).
    pub(crate) fn bcast(&self, check: Check<'_>, buf: &mut [u8], root: usize) -> Result<()> {
        let total = buf.len();
        let room = self.room(total);
        for k in 0..self.turns(total) {
            let part = chunk(k, room, total);
            if self.me == root {
                let s = self.begin(check, total)?;
                self.arena.publish(s, self.me, &buf[part], total as u64);
                continue;
            }
            let s = self.begin_quiet(check, total)?;
            self.wait_all(check, s, std::iter::once(root), total)?;
            self.check_total("broadcast", s, root, total)?;
            self.arena.read(s, root, &mut buf[part]);
        }
        Ok(())
    }

    /// Reduce of every rank's `own` to `root`, in rank order, a cell's
    /// worth per turn. At the root, `acc` holds a copy of `own` on entry and
    /// the result on return, and `tmp` is scratch of its length; other ranks
    /// only publish `own` (their `acc` and `tmp` are not used).
    pub(crate) fn reduce<T: Pod>(
        &self,
        check: Check<'_>,
        own: &[T],
        acc: &mut [T],
        tmp: &mut [T],
        root: usize,
        combine: UserOp<'_, T>,
    ) -> Result<()> {
        let total = std::mem::size_of_val(own);
        let per = self.elems_per_turn::<T>(total);
        for k in 0..Self::element_turns(own.len(), per) {
            let part = chunk(k, per, own.len());
            if self.me != root {
                let s = self.begin(check, total)?;
                self.arena
                    .publish(s, self.me, bytes(&own[part]), total as u64);
                continue;
            }
            // The root's operand stays in its buffers: nobody else reads it.
            let s = self.begin_quiet(check, total)?;
            self.wait_all(check, s, (0..self.p).filter(|&r| r != root), total)?;
            let (Some(acc), Some(tmp)) = (acc.get_mut(part.clone()), tmp.get_mut(part.clone()))
            else {
                return Err(Error::InvalidState(
                    "reduce: the root's buffers are too short".into(),
                ));
            };
            self.fold("reduce", s, acc, tmp, Some(&own[part]), total, combine)?;
        }
        Ok(())
    }

    /// All-reduce of `acc`, in rank order on every rank, a cell's worth per
    /// turn; `tmp` is scratch of `acc`'s length.
    pub(crate) fn allreduce<T: Pod>(
        &self,
        check: Check<'_>,
        acc: &mut [T],
        tmp: &mut [T],
        combine: UserOp<'_, T>,
    ) -> Result<()> {
        let total = std::mem::size_of_val(acc);
        let per = self.elems_per_turn::<T>(total);
        for k in 0..Self::element_turns(acc.len(), per) {
            let part = chunk(k, per, acc.len());
            let s = self.begin(check, total)?;
            self.arena
                .publish(s, self.me, bytes(&acc[part.clone()]), total as u64);
            self.arena.ask_for_next_line(s, self.me);
            self.wait_all(check, s, self.others(), total)?;
            let (acc, tmp) = (&mut acc[part.clone()], &mut tmp[part]);
            self.fold("all-reduce", s, acc, tmp, None, total, combine)?;
        }
        Ok(())
    }

    /// All-reduce of `acc` as a reduce to rank 0 and a broadcast from it,
    /// both through the arena (`Allreduce::ShmRoot`): rank 0 alone folds,
    /// in rank order, so the result is the same on every rank. For large
    /// operands on more ranks than cores, where every rank folding every
    /// operand ([`NodeColl::allreduce`]) repeats the work on each core;
    /// `tmp` is scratch of `acc`'s length (used on rank 0).
    pub(crate) fn allreduce_by_root<T: Pod>(
        &self,
        check: Check<'_>,
        acc: &mut [T],
        tmp: &mut [T],
        combine: UserOp<'_, T>,
    ) -> Result<()> {
        let total = std::mem::size_of_val(acc);
        let per = self.elems_per_turn::<T>(total);
        for k in 0..Self::element_turns(acc.len(), per) {
            let part = chunk(k, per, acc.len());
            if self.me != 0 {
                let s = self.begin(check, total)?;
                self.arena
                    .publish(s, self.me, bytes(&acc[part]), total as u64);
                continue;
            }
            // Rank 0's operand is in `acc`: nobody else reads it.
            let s = self.begin_quiet(check, total)?;
            self.wait_all(check, s, 1..self.p, total)?;
            let (Some(acc), Some(tmp)) = (acc.get_mut(part.clone()), tmp.get_mut(part)) else {
                return Err(Error::InvalidState(
                    "all-reduce: the scratch buffer is too short".into(),
                ));
            };
            self.fold("all-reduce", s, acc, tmp, None, total, combine)?;
        }
        self.bcast(check, bytes_mut(acc), 0)
    }

    /// Elements of `T` one turn of an operation of `total` bytes per rank
    /// carries (the tuner sends no type larger than a data cell here).
    fn elems_per_turn<T>(&self, total: usize) -> usize {
        (self.room(total) / std::mem::size_of::<T>().max(1)).max(1)
    }

    /// Turns a reduction of `n` elements takes at `per` a turn, at least
    /// one. Counted in elements, not bytes: a cell holds a whole number of
    /// elements, so an element size that does not divide it (12-byte
    /// `[f32; 3]` in 16 KiB) leaves part of every cell unused.
    fn element_turns(n: usize, per: usize) -> usize {
        n.div_ceil(per.max(1)).max(1)
    }

    /// Folds the operands published for `s` in rank order into `acc`
    /// (which holds this rank's own operand on entry). This rank's operand
    /// is `own` when given (it published nothing), else in its cell. Each
    /// operand in the arena is folded where it lies (`Arena::with_data`);
    /// only one whose bytes are not aligned for `T` is copied to `tmp`
    /// first. Against copying every one to `tmp` (session 26, AMD EPYC VM,
    /// interleaved runs, the vCPUs sharing caches): reduce, 2 ranks, 8 KiB
    /// – 1 MiB 0.66–0.80 (10 runs each), 4 ranks on 2 cores 0.62–0.79 (8);
    /// all-reduce, 2 ranks, 128 B – 8 KiB 0.86–0.95, 4 ranks 1–128 KiB
    /// 0.76–0.94; with the close profile forced, reduce 1 KiB – 1 MiB
    /// 0.63–0.95; not sharing caches (the remote profile), 64 B – 16 KiB
    /// 0.84–1.06. (Session 10 had measured the all-reduce of 2 ranks
    /// 1.02–1.06× slower this way; the arena's waits have changed since.)
    #[allow(clippy::too_many_arguments)]
    fn fold<T: Pod>(
        &self,
        what: &str,
        s: u64,
        acc: &mut [T],
        tmp: &mut [T],
        own: Option<&[T]>,
        total: usize,
        combine: UserOp<'_, T>,
    ) -> Result<()> {
        // This rank's own count is the one compared with.
        for r in self.others() {
            self.check_total(what, s, r, total)?;
        }
        if self.me != 0 {
            // acc becomes rank 0's operand; this rank's is in its cell (or
            // `own`).
            self.arena.read(s, 0, bytes_mut(acc));
        }
        let n = std::mem::size_of_val(acc);
        for r in 1..self.p {
            if let Some(own) = own.filter(|_| r == self.me) {
                combine(acc, own)?;
                continue;
            }
            let in_place = self.arena.with_data(s, r, n, |b| {
                bytemuck::try_cast_slice::<u8, T>(b)
                    .ok()
                    .map(|x| combine(&mut *acc, x))
            });
            match in_place {
                Some(Some(folded)) => {
                    #[cfg(test)]
                    tests::FOLDED_IN_PLACE.with(|c| c.set(c.get() + 1));
                    folded?
                }
                _ => {
                    self.arena.read(s, r, bytes_mut(tmp));
                    combine(acc, tmp)?;
                }
            }
        }
        Ok(())
    }

    /// Where this rank's block lies in an all-gather's `buf`, once the
    /// lengths are checked (`own`, if given, is one block).
    fn own_block(
        &self,
        buf: &[u8],
        block: usize,
        own: Option<&[u8]>,
    ) -> Result<std::ops::Range<usize>> {
        let mine = self.me * block..(self.me + 1) * block;
        if own.is_some_and(|o| o.len() != block) || buf.get(mine.clone()).is_none() {
            return Err(Error::InvalidState(
                "all-gather: blocks of unexpected lengths".into(),
            ));
        }
        Ok(mine)
    }

    /// All-gather of equal blocks of `block` bytes, a cell's worth of each
    /// per turn. This rank's block is in place in `buf`, or in `own` (of
    /// `block` bytes), which is published from there and copied into
    /// place while the other ranks publish theirs.
    pub(crate) fn allgather(
        &self,
        check: Check<'_>,
        buf: &mut [u8],
        block: usize,
        own: Option<&[u8]>,
    ) -> Result<()> {
        let mine = self.own_block(buf, block, own)?;
        let room = self.room(block);
        // As the all-to-all: several turns per meeting of the ranks.
        for meeting in meetings(self.turns(block)) {
            let mut last = 0;
            for k in meeting.clone() {
                let part = chunk(k, room, block);
                last = self.begin(check, block)?;
                match own {
                    Some(own) => {
                        self.arena
                            .publish(last, self.me, &own[part.clone()], block as u64);
                        crate::sys::copy::copy(
                            &mut buf[mine.start + part.start..mine.start + part.end],
                            &own[part.clone()],
                        );
                    }
                    None => {
                        let data = &buf[mine.start + part.start..mine.start + part.end];
                        self.arena.publish(last, self.me, data, block as u64);
                    }
                }
            }
            self.wait_all(check, last, self.others(), block)?;
            for (s, k) in first_turn(last, &meeting).zip(meeting) {
                let part = chunk(k, room, block);
                for r in self.others() {
                    self.check_total("all-gather", s, r, block)?;
                    let at = r * block;
                    self.arena
                        .read(s, r, &mut buf[at + part.start..at + part.end]);
                }
            }
        }
        Ok(())
    }

    /// All-gather of `block` bytes per rank by single-copy pulls (see
    /// [`NodeColl::pull_blocks`]); `own` as for [`NodeColl::allgather`].
    /// `Ok(false)`: a pull was refused; the caller runs the copying
    /// all-gather instead.
    pub(crate) fn allgather_pull(
        &self,
        check: Check<'_>,
        buf: &mut [u8],
        block: usize,
        own: Option<&[u8]>,
    ) -> Result<bool> {
        let mine = self.own_block(buf, block, own)?;
        let source = match own {
            Some(own) => own.as_ptr(),
            None => buf[mine].as_ptr(),
        };
        self.pull_blocks(check, "all-gather", buf, block, source, 0, own)
    }

    /// All-to-all of equal blocks of `block` bytes by single-copy pulls:
    /// this rank's block of every other rank's `send` is pulled straight
    /// into `recv` (see [`NodeColl::pull_blocks`]). `Ok(false)`: a pull was
    /// refused; the caller runs the copying all-to-all instead.
    pub(crate) fn alltoall_pull(
        &self,
        check: Check<'_>,
        send: &[u8],
        recv: &mut [u8],
        block: usize,
    ) -> Result<bool> {
        let mine = self.me * block..(self.me + 1) * block;
        let (Some(own), true) = (send.get(mine), recv.len() == send.len()) else {
            return Err(Error::InvalidState(
                "all-to-all: blocks of unexpected lengths".into(),
            ));
        };
        let at = self.me * block;
        self.pull_blocks(
            check,
            "all-to-all",
            recv,
            block,
            send.as_ptr(),
            at,
            Some(own),
        )
    }

    /// Broadcast of `buf` from `root` by single copies: every rank
    /// publishes where its buffer lies; on two ranks the receiver pulls the
    /// first part from the root's buffer while the root writes the rest
    /// into the receiver's (both cores copy at once, as a cooperative
    /// point-to-point transfer does; [`BCAST_PULL_SHARE`]); on more, every
    /// receiver pulls it all.
    ///
    /// `Ok(false)`: a rank could not pull or write (cross-memory attach
    /// refused); every rank learns it, and the caller's fallback rewrites
    /// the receivers' buffers.
    pub(crate) fn bcast_pull(&self, check: Check<'_>, buf: &mut [u8], root: usize) -> Result<bool> {
        let len = buf.len();
        let mine = Place::mine(buf.as_ptr() as u64, buf.as_mut_ptr() as u64, len);
        let s = self.publish_place(check, mine)?;
        let places = self.places(check, "broadcast", "buffers", s, mine)?;
        let split = if self.p == 2 {
            len * BCAST_PULL_SHARE / 100
        } else {
            len
        };
        let mut ok = may_pull();
        if self.me == root {
            for (_, p) in places.iter().filter(|_| split < len) {
                if !ok {
                    break;
                }
                ok = p.push(split as u64, &buf[split..]);
            }
        } else if ok {
            ok = self
                .place_of(&places, root)
                .is_some_and(|p| p.pull(0, &mut buf[..split]));
        }
        self.report_pulls(check, ok)
    }

    /// Reduce of every rank's `own` to `root` (`Some`) or to every rank
    /// (`None`: all-reduce) by single copies, with the folding shared
    /// between the ranks: the vector is cut into one slice per rank
    /// ([`fold_slice`]); each rank pulls its slice of every other rank's
    /// operand (cross-memory attach), folds the operands in rank order,
    /// and writes its folded slice straight into the result of the root
    /// (or of every other rank). So every operand byte crosses between the
    /// processes once, and all ranks fold at once. `acc` is the result at
    /// the root and in an all-reduce (what it holds on entry is not used),
    /// scratch elsewhere; it must not overlap `own`; `tmp` is scratch; both
    /// have `own`'s length. `commutative`: the operation is, and the first
    /// two operands may be folded the other way round (the same bits).
    /// Every slice is folded by one rank, so an all-reduce's results are
    /// the same bits on every rank.
    ///
    /// `Ok(false)`: a rank could not pull or write (cross-memory attach
    /// refused); every rank learns it, and the caller's fallback must
    /// rewrite the results from scratch. A failing `combine` is an error on
    /// every rank.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fold_pull<T: Pod>(
        &self,
        check: Check<'_>,
        own: &[T],
        acc: &mut [T],
        tmp: &mut [T],
        root: Option<usize>,
        commutative: bool,
        combine: UserOp<'_, T>,
    ) -> Result<bool> {
        let what = if root.is_some() {
            "reduce"
        } else {
            "all-reduce"
        };
        let n = own.len();
        if acc.len() != n || tmp.len() != n || root.is_some_and(|r| r >= self.p) {
            return Err(Error::InvalidState(format!(
                "{what}: buffers of unexpected lengths"
            )));
        }
        let gets_result = root.is_none_or(|r| r == self.me);
        let to = if gets_result {
            acc.as_mut_ptr() as u64
        } else {
            0
        };
        let mine = Place::mine(own.as_ptr() as u64, to, std::mem::size_of_val(own));
        let s = self.publish_place(check, mine)?;
        let places = self.places(check, what, "operands", s, mine)?;
        let place = |r: usize| self.place_of(&places, r);
        let slice = fold_slice(self.p, root, n, self.me);
        let at = (slice.start * std::mem::size_of::<T>()) as u64;
        let (acc, tmp, own) = (
            &mut acc[slice.clone()],
            &mut tmp[slice.clone()],
            &own[slice],
        );
        let pull = |r: usize, into: &mut [T]| place(r).is_some_and(|p| p.pull(at, bytes_mut(into)));
        let mut pulled = may_pull();
        let mut failure = None;
        // Rank 0 of a commutative operation pulls rank 1's operand straight
        // into `acc` and folds its own into it (x1 ∘ x0 = x0 ∘ x1, bit for
        // bit, for every commutative operation): no copy of its own first.
        let swap = commutative && self.me == 0 && self.p > 1;
        if pulled {
            if swap {
                pulled = pull(1, acc);
                if pulled {
                    failure = combine(acc, own).err();
                }
            } else if self.me == 0 {
                crate::sys::copy::copy(acc, own);
            } else {
                pulled = pull(0, acc);
            }
        }
        for r in if swap { 2 } else { 1 }..self.p {
            if !pulled || failure.is_some() {
                break;
            }
            let folded = if r == self.me {
                combine(acc, own)
            } else {
                pulled = pull(r, tmp);
                if !pulled {
                    break;
                }
                combine(acc, tmp)
            };
            if let Err(e) = folded {
                failure = Some(e);
                break;
            }
        }
        if pulled && failure.is_none() && !acc.is_empty() {
            for r in self.others().filter(|&r| root.is_none_or(|root| root == r)) {
                pulled = place(r).is_some_and(|p| p.push(at, bytes(acc)));
                if !pulled {
                    break;
                }
            }
        }
        let outcome = match (&failure, pulled) {
            (Some(_), _) => DONE_FAILED,
            (None, true) => DONE_PULLED,
            (None, false) => DONE_REFUSED,
        };
        let others = self.report(check, outcome)?;
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(r) = others.failed {
            return Err(Error::InvalidState(format!(
                "{what}: the reduction operation failed on rank {r}"
            )));
        }
        Ok(self.learn(pulled && others.all_pulled))
    }

    /// Every rank gets a block of `block` bytes from every other rank by
    /// single copy: each publishes where its blocks lie (its process and
    /// `source`, in its state line), copies `own` (if any) into its own
    /// block of `recv`, pulls from each other rank the bytes at offset `at`
    /// of that rank's `source` straight into that rank's block of `recv`
    /// (cross-memory attach), and publishes that it is done; it returns
    /// (and its source may change) only once every rank is done. Each byte
    /// is copied once, with two line exchanges and no message.
    ///
    /// `Ok(false)`: a rank could not pull (cross-memory attach refused);
    /// every rank learns it from the others' reports, and nothing was
    /// lost (`recv` is rewritten by the caller's fallback).
    #[allow(clippy::too_many_arguments)]
    fn pull_blocks(
        &self,
        check: Check<'_>,
        what: &str,
        recv: &mut [u8],
        block: usize,
        source: *const u8,
        at: usize,
        own: Option<&[u8]>,
    ) -> Result<bool> {
        if recv.len() < self.p * block {
            return Err(Error::InvalidState(format!(
                "{what}: a receive buffer shorter than a block per rank"
            )));
        }
        let mine = Place::mine(source as u64, 0, block);
        let s = self.publish_place(check, mine)?;
        if let Some(own) = own {
            crate::sys::copy::copy(&mut recv[self.me * block..(self.me + 1) * block], own);
        }
        let places = self.places(check, what, "blocks", s, mine)?;
        // After a refused pull, none is tried.
        let mut pulled = may_pull();
        for (r, place) in places {
            if !pulled {
                break;
            }
            pulled = place.pull(at as u64, &mut recv[r * block..(r + 1) * block]);
        }
        self.report_pulls(check, pulled)
    }

    /// Starts a single-copy collective: publishes this rank's place as
    /// the next operation, whose number it returns.
    fn publish_place(&self, check: Check<'_>, mine: Place) -> Result<u64> {
        let s = self.begin(check, PLACE)?;
        self.arena.publish(s, self.me, &mine.encode(), PLACE as u64);
        Ok(s)
    }

    /// Rank `r`'s place among `places` (every rank's but this one's, in
    /// rank order, as [`NodeColl::places`] returns them).
    fn place_of(&self, places: &[(usize, Place)], r: usize) -> Option<Place> {
        let i = if r < self.me { r } else { r.checked_sub(1)? };
        places.get(i).filter(|&&(q, _)| q == r).map(|&(_, p)| p)
    }

    /// Waits for every other rank's [`Place`], published for operation
    /// `s` (this rank published `mine`), and returns them in rank order.
    /// Every rank's is read before any is returned: ranks whose lengths
    /// differ all see it and return their error before anyone touches
    /// another's memory (nobody reads a buffer whose owner has given up).
    fn places(
        &self,
        check: Check<'_>,
        what: &str,
        units: &str,
        s: u64,
        mine: Place,
    ) -> Result<Vec<(usize, Place)>> {
        self.wait_all(check, s, self.others(), PLACE)?;
        let mut places = Vec::with_capacity(self.p);
        for r in self.others() {
            self.check_total(what, s, r, PLACE)?;
            let mut theirs = [0u8; PLACE];
            self.arena.read(s, r, &mut theirs);
            let place = Place::decode(&theirs);
            if place.len != mine.len {
                return Err(Error::InvalidArgument(format!(
                    "{what}: rank {r} has {units} of {} bytes where this rank has {} \
                     (the ranks' counts must match)",
                    place.len, mine.len
                )));
            }
            places.push((r, place));
        }
        Ok(places)
    }

    /// [`NodeColl::report`] of a collective that only pulls or writes:
    /// whether every rank, this one included, did all it had to.
    fn report_pulls(&self, check: Check<'_>, pulled: bool) -> Result<bool> {
        let others = self.report(check, if pulled { DONE_PULLED } else { DONE_REFUSED })?;
        Ok(self.learn(pulled && others.all_pulled))
    }

    /// Publishes how this rank's part of a single-copy collective ended
    /// ([`DONE_PULLED`], [`DONE_REFUSED`], [`DONE_FAILED`]) and waits for
    /// every other rank's report: nobody returns (and lets its buffers
    /// change) before everyone is done with them.
    fn report(&self, check: Check<'_>, mine: u8) -> Result<Reports> {
        let s = self.begin(check, 1)?;
        self.arena.publish(s, self.me, &[mine], 1);
        self.wait_all(check, s, self.others(), 1)?;
        let mut others = Reports {
            all_pulled: true,
            failed: None,
        };
        for r in self.others() {
            let mut theirs = [0u8];
            self.arena.read(s, r, &mut theirs);
            others.all_pulled &= theirs[0] == DONE_PULLED;
            if theirs[0] == DONE_FAILED && others.failed.is_none() {
                others.failed = Some(r);
            }
        }
        Ok(others)
    }

    /// All-to-all of equal blocks of `block` bytes: `send` holds the block
    /// for every rank in rank order, `recv` gets rank r's block for this
    /// rank at `r * block`. Each turn a rank publishes a piece of each of
    /// its blocks (a cell's worth over all ranks: `slot / p` bytes of each),
    /// and takes the piece meant for it from every other rank.
    pub(crate) fn alltoall(
        &self,
        check: Check<'_>,
        send: &[u8],
        recv: &mut [u8],
        block: usize,
    ) -> Result<()> {
        let total = send.len();
        if self.slot() < self.p {
            return Err(Error::InvalidArgument(format!(
                "all-to-all through the arena: cells of {} bytes cannot carry a piece for each of {} ranks",
                self.slot(),
                self.p
            )));
        }
        let mine = self.me * block..(self.me + 1) * block;
        crate::sys::copy::copy(&mut recv[mine.clone()], &send[mine]);
        let room = self.room(total);
        if block <= room / self.p {
            // One turn: the pieces are the whole send buffer, one copy.
            let s = self.begin(check, total)?;
            self.arena.publish(s, self.me, send, total as u64);
            self.wait_all(check, s, self.others(), total)?;
            for r in self.others() {
                self.check_total("all-to-all", s, r, total)?;
                let to = r * block..(r + 1) * block;
                self.arena.read_at(s, r, self.me * block, &mut recv[to]);
            }
            return Ok(());
        }
        // Several turns: each carries a piece of every block but this
        // rank's own, which was copied above. Rank r's cell holds the
        // pieces for the other ranks in rank order (r's own left out); the
        // turns go in meetings of the ranks (`meetings`).
        let piece = room / (self.p - 1).max(1);
        let slot_in = |r: usize| if self.me < r { self.me } else { self.me - 1 };
        for meeting in meetings(block.div_ceil(piece)) {
            let mut last = 0;
            for k in meeting.clone() {
                let part = chunk(k, piece, block);
                last = self.begin(check, total)?;
                let pieces = (0..self.p)
                    .filter(|&r| r != self.me)
                    .map(|r| &send[r * block + part.start..r * block + part.end]);
                self.arena
                    .publish_parts(last, self.me, pieces, total as u64);
            }
            self.wait_all(check, last, self.others(), total)?;
            for (s, k) in first_turn(last, &meeting).zip(meeting) {
                let part = chunk(k, piece, block);
                for r in self.others() {
                    self.check_total("all-to-all", s, r, total)?;
                    let at = slot_in(r) * part.len();
                    let to = r * block + part.start..r * block + part.end;
                    self.arena.read_at(s, r, at, &mut recv[to]);
                }
            }
        }
        Ok(())
    }
}

/// The turns `0..turns` of an operation in meetings of [`MEETING_TURNS`]
/// (the last may be shorter): a rank publishes a meeting's turns, waits
/// for the others' last one (each rank publishes its turns in order, so
/// that one covers the rest), then reads them all.
fn meetings(turns: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..turns)
        .step_by(MEETING_TURNS)
        .map(move |k| k..(k + MEETING_TURNS).min(turns))
}

/// The sequence numbers of a meeting's turns, from the first, given the
/// last's.
fn first_turn(last: u64, meeting: &std::ops::Range<usize>) -> std::ops::RangeFrom<u64> {
    last + 1 - meeting.len() as u64..
}

/// Turns an all-to-all or all-gather through the arena publishes before it
/// waits for the others' (see [`meetings`]). Every turn of these needs
/// every rank's pieces, so each wait is a meeting of all ranks, and where
/// ranks share a core, a switch to each of the others; four turns per
/// meeting against one, new ÷ old (ABBA, AMD EPYC VM, 2 vCPUs): 4 ranks
/// 16 KiB – 1 MiB blocks 0.81–0.88 in the fast placement (8 rounds),
/// 0.80–0.95 in the slow one (6); 8 ranks 4–64 KiB 0.68–0.81 (5); 3 ranks
/// 16–256 KiB 0.68–0.88 (6); 2 ranks 256 KiB – 4 MiB 0.91–0.98 (8). Two
/// per meeting: 4 ranks 0.85–0.93; eight against four: 0.91–1.12. The
/// all-gather the same way, against its all-to-all-only predecessor: 4
/// ranks 8 KiB – 2 MiB blocks 0.65–0.99 (6–8 rounds), 2 ranks 128 KiB – 2
/// MiB 0.90–1.00, 8 ranks 32 KiB – 4 MiB 0.83–0.99; single-turn sizes
/// level (within the ±7% two runs of one binary spread by there). (The
/// data cells' depth, 16 turns, bounds it: a rank may publish a turn only
/// once every rank has started the one a depth before.)
const MEETING_TURNS: usize = 4;

/// How many turns past the one it still reads a rank may have started: an
/// all-to-all or all-gather starts a meeting's turns before it reads the
/// first (see [`meetings`]); every other operation reads only the turn it
/// started last. [`NodeColl::begin`] reuses a turn's line and cells
/// this much later. (A broadcast's root right after an all-to-all,
/// reusing the cells of a meeting's first turn when the others had only
/// started its last, overwrote pieces not yet read.)
const READ_LAG: u64 = MEETING_TURNS as u64 - 1;

/// The elements of a reduction of `n` that rank `r` of `p` folds in
/// [`NodeColl::fold_pull`]: consecutive slices in rank order. In an
/// all-reduce (`root` `None`) every rank has the same work, so equal
/// slices; in a reduce, slices in proportion to the work each rank has
/// besides: 2p - 1 for the root, 2p - 2 for every other rank, which also
/// writes its slice into the root's result (on 2 ranks: 3/5 and 2/5).
fn fold_slice(p: usize, root: Option<usize>, n: usize, r: usize) -> std::ops::Range<usize> {
    let weight = |q: usize| match root {
        None => 1,
        Some(root) if q == root => 2 * p - 1,
        Some(_) => 2 * p - 2,
    };
    let total: usize = (0..p).map(weight).sum();
    let before: usize = (0..r).map(weight).sum();
    let at = |w: usize| (n as u128 * w as u128 / total.max(1) as u128) as usize;
    at(before)..at(before + weight(r))
}

/// Whether this rank's single-copy pulls fail on purpose (the unit tests
/// of the fallback); never outside tests.
#[cfg(not(test))]
fn pull_refused() -> bool {
    false
}

#[cfg(test)]
fn pull_refused() -> bool {
    tests::REFUSE_PULL.with(std::cell::Cell::get)
}

/// Part `k` of a `len`-long sequence cut into pieces of `per`.
fn chunk(k: usize, per: usize, len: usize) -> std::ops::Range<usize> {
    (k * per).min(len)..((k + 1) * per).min(len)
}

/// Spin, then yield, then sleep (looking at the job between sleeps).
struct Waiter<'a> {
    policy: &'a WaitPolicy,
    start: Option<Instant>,
    rounds: u32,
    yielding: bool,
}

impl<'a> Waiter<'a> {
    fn new(policy: &'a WaitPolicy) -> Self {
        Waiter {
            policy,
            start: None,
            rounds: 0,
            yielding: false,
        }
    }

    /// One pause in a wait for `ready`. The clock is read every 64th
    /// round while spinning (every 4th on an oversubscribed node, whose
    /// spin is short), and every round once yielding.
    fn pause(&mut self, check: Check<'_>, arena: &Arena, ready: impl Fn() -> bool) -> Result<()> {
        self.rounds = self.rounds.wrapping_add(1);
        let start = *self.start.get_or_insert_with(Instant::now);
        let clock_every = if self.policy.oversubscribed { 4 } else { 64 };
        if !self.yielding && self.rounds % clock_every != 0 {
            std::hint::spin_loop();
            return Ok(());
        }
        let waited = start.elapsed();
        if waited < self.policy.spin {
            std::hint::spin_loop();
        } else if waited < self.policy.spin + self.policy.yield_for {
            self.yielding = true;
            std::thread::yield_now();
        } else {
            // Asleep: the job may have ended meanwhile (an abort, a dead
            // launcher).
            check()?;
            arena.sleep_unless(ready, Duration::from_millis(1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    std::thread_local! {
        /// This simulated rank's single-copy pulls fail (see `pull_refused`).
        pub(super) static REFUSE_PULL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// Operands this simulated rank folded where they lie (`fold`).
        pub(super) static FOLDED_IN_PLACE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// Set in the ranks of one `run` when one of them panicked.
        static FAILED: std::cell::RefCell<Option<Arc<std::sync::atomic::AtomicBool>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// Marks the run failed if its rank panics.
    struct FailGuard(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for FailGuard {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, AtomicOrdering::SeqCst);
            }
        }
    }

    /// The job check of the simulated ranks: an error once a rank of the
    /// run panicked, so that the others stop waiting for it (a failing
    /// test fails instead of hanging).
    fn ok() -> Result<()> {
        FAILED.with(|f| match &*f.borrow() {
            Some(failed) if failed.load(AtomicOrdering::SeqCst) => {
                Err(crate::error::Error::Aborted { code: 101 })
            }
            _ => Ok(()),
        })
    }

    /// Runs `body` on `p` threads, each with its own mapping of one arena
    /// (cells of `slot` bytes, no large cells).
    fn run<R: Send>(p: usize, slot: usize, body: impl Fn(&NodeColl) -> R + Sync) -> Vec<R> {
        run_with(p, slot, 0, body)
    }

    /// [`run`] with large cells of `large` bytes.
    fn run_with<R: Send>(
        p: usize,
        slot: usize,
        large: usize,
        body: impl Fn(&NodeColl) -> R + Sync,
    ) -> Vec<R> {
        let first = Arena::create(p, slot, large).unwrap();
        let addr = first.addr();
        let large = first.large();
        let mut arenas = vec![first];
        for _ in 1..p {
            arenas.push(Arena::open(addr, p, slot, large).unwrap());
        }
        let policy = WaitPolicy {
            spin: Duration::from_micros(50),
            yield_for: Duration::from_micros(200),
            block: Duration::from_millis(1),
            oversubscribed: true,
            own_cores: 1,
            node_ranks: p as u32,
        };
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::scope(|s| {
            let body = &body;
            let handles: Vec<_> = arenas
                .into_iter()
                .enumerate()
                .map(|(me, arena)| {
                    let failed = failed.clone();
                    s.spawn(move || {
                        FAILED.with(|f| *f.borrow_mut() = Some(failed.clone()));
                        let _guard = FailGuard(failed);
                        let n = NodeColl {
                            arena,
                            me,
                            p,
                            seq: AtomicU64::new(0),
                            announced: AtomicU64::new(0),
                            quiet: AtomicU64::new(0),
                            all_started: AtomicU64::new(0),
                            seen: Seen::new(p),
                            policy,
                            cpu: AtomicU32::new(0),
                            profile: Profile::Far,
                            spread: Spread::off(),
                            pulls_refused: AtomicBool::new(false),
                        };
                        body(&n)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    const OK: Check<'static> = &ok;

    /// A value of rank `r`, element `i`, round `k` whose float sums are not
    /// exact, so the combination order shows in the bits.
    fn val(r: usize, i: usize, k: usize) -> f64 {
        1.0 / (1.0 + r as f64 * 3.7 + i as f64 * 0.013 + k as f64 * 0.5)
    }

    #[test]
    fn every_operation_many_rounds_on_1_to_5_ranks() {
        for p in 1..=5 {
            let results = run(p, 256, |n| {
                let me = n.me;
                let mut sums = Vec::new();
                // More rounds than lines, so every line and cell is reused.
                for k in 0..3 * LINE_DEPTH as usize {
                    n.barrier(OK).unwrap();
                    let root = k % p;
                    let mut b = [0u64; 5];
                    if me == root {
                        b = [k as u64 + 1; 5];
                    }
                    n.bcast(OK, bytemuck::cast_slice_mut(&mut b), root).unwrap();
                    assert_eq!(b, [k as u64 + 1; 5], "bcast round {k}");
                    let mut acc: Vec<f64> = (0..7).map(|i| val(me, i, k)).collect();
                    let mut tmp = vec![0.0; 7];
                    let add = &mut |a: &mut [f64], b: &[f64]| {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                        Ok(())
                    };
                    n.allreduce(OK, &mut acc, &mut tmp, add).unwrap();
                    let expect: Vec<f64> = (0..7)
                        .map(|i| (1..p).fold(val(0, i, k), |a, r| a + val(r, i, k)))
                        .collect();
                    assert_eq!(acc, expect, "allreduce round {k}: rank order, same bits");
                    sums.push(acc);
                    // Non-commutative: string concatenation order as digits.
                    let mut digits = [me as u64 + 1];
                    let mut t = [0u64];
                    let concat = &mut |a: &mut [u64], b: &[u64]| {
                        a[0] = a[0] * 10 + b[0];
                        Ok(())
                    };
                    n.reduce(OK, &digits.clone(), &mut digits, &mut t, root, concat)
                        .unwrap();
                    if me == root {
                        let want = (1..=p as u64).fold(0, |a, d| a * 10 + d);
                        assert_eq!(digits[0], want, "reduce round {k} in rank order");
                    }
                    let send: Vec<u32> = (0..p).map(|to| (me * 100 + to + k) as u32).collect();
                    let mut got = vec![0u32; p];
                    n.alltoall(
                        OK,
                        bytemuck::cast_slice(&send),
                        bytemuck::cast_slice_mut(&mut got),
                        4,
                    )
                    .unwrap();
                    for (from, g) in got.iter().enumerate() {
                        assert_eq!(*g as usize, from * 100 + me + k, "alltoall round {k}");
                    }
                    let mut all = vec![0u32; 3 * p];
                    all[3 * me..3 * me + 3].copy_from_slice(&[me as u32, k as u32, 7]);
                    n.allgather(OK, bytemuck::cast_slice_mut(&mut all), 12, None)
                        .unwrap();
                    for r in 0..p {
                        assert_eq!(all[3 * r..3 * r + 3], [r as u32, k as u32, 7]);
                    }
                }
                sums
            });
            assert!(results.windows(2).all(|w| w[0] == w[1]), "p = {p}");
        }
    }

    /// Reductions fold the other ranks' operands where they lie in the
    /// arena when their bytes are aligned for the type, and copy them out
    /// first when not: `u128` (16-byte alignment) in a state line's inline
    /// bytes (8 bytes into the line) takes the copy, in a small or a data
    /// cell (also over several turns) the fold in place. Both give every
    /// rank the rank-order result.
    #[test]
    fn operands_folded_in_place_or_copied_when_not_aligned() {
        for p in [2, 3] {
            for len in [1usize, 3, 8, 40, 100] {
                let results = run(p, 1024, |n| {
                    let me = n.me;
                    FOLDED_IN_PLACE.with(|c| c.set(0));
                    let add = &mut |a: &mut [u128], b: &[u128]| {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x = *x * 3 + y);
                        Ok(())
                    };
                    let mine = |r: usize| -> Vec<u128> {
                        (0..len).map(|i| (r * 1000 + i) as u128).collect()
                    };
                    let want: Vec<u128> = (0..len)
                        .map(|i| (1..p).fold(mine(0)[i], |a, r| a * 3 + mine(r)[i]))
                        .collect();
                    let mut acc = mine(me);
                    let mut tmp = vec![0u128; len];
                    n.allreduce(OK, &mut acc, &mut tmp, add).unwrap();
                    assert_eq!(acc, want, "all-reduce of {len} on {p} ranks");
                    let own = mine(me);
                    let mut acc = own.clone();
                    n.reduce(OK, &own, &mut acc, &mut tmp, p - 1, add).unwrap();
                    if me == p - 1 {
                        assert_eq!(acc, want, "reduce of {len} on {p} ranks");
                    }
                    // 16 bytes each: up to 3 inline (copied), else in cells.
                    let in_place = FOLDED_IN_PLACE.with(std::cell::Cell::get);
                    assert_eq!(in_place > 0, len > 3, "{len} on {p} ranks: {in_place}");
                    acc
                });
                assert_eq!(results.len(), p);
            }
        }
    }

    /// Found by the soak test (seed 1796156131, 4 ranks): a broadcast's
    /// receiver that never had to wait published nothing and announced
    /// nothing in its last operations, then was the root of a broadcast,
    /// whose cells lie in other lines, and left. A rank still in that
    /// broadcast waited forever for it to have started the operations it
    /// was quiet in.
    #[test]
    fn a_quiet_rank_that_publishes_next_shows_it_started() {
        let t0 = Instant::now();
        // Fails instead of hanging (checked between sleeps).
        let bounded = || -> Result<()> {
            ok()?;
            if t0.elapsed() > Duration::from_secs(20) {
                return Err(crate::error::Error::InvalidState(
                    "waited 20 s: hang".into(),
                ));
            }
            Ok(())
        };
        run(2, 64, |n| {
            // Past the first lap of lines, in which quiet ranks publish
            // anyway (`refresh_lap`).
            for _ in 0..LINE_DEPTH {
                n.barrier(&bounded).unwrap();
            }
            // Operations 65..=79: rank 0 broadcasts 15 turns of 64 bytes;
            // rank 1 starts late, so every turn is there when it looks and
            // it neither waits nor reaches a multiple of ANNOUNCE_EVERY.
            let mut b = vec![0u8; 15 * 64];
            if n.me == 0 {
                b.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
            n.bcast(&bounded, &mut b, 0).unwrap();
            assert!(b.iter().enumerate().all(|(i, &x)| x == i as u8));
            assert_eq!(n.seq.load(AtomicOrdering::Relaxed), 79);
            // Then rank 1 broadcasts 5 turns (more than a small cell): at
            // its first, operation 80, rank 0 needs rank 1 to have started
            // 65 (80 - DATA_DEPTH + 1) before it looks at rank 1's cell.
            let mut c = vec![0u8; 5 * 64];
            if n.me == 1 {
                c.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = (i * 7) as u8);
            }
            n.bcast(&bounded, &mut c, 1).unwrap();
            assert!(c.iter().enumerate().all(|(i, &x)| x == (i * 7) as u8));
        });
    }

    #[test]
    fn large_operations_take_several_turns() {
        // 64-byte cells; 1000 elements of 8 bytes = 125 turns, more than
        // the depth, with a short last turn. Again with large cells of
        // 192 bytes (42 turns; all-to-all pieces of 192 / p bytes).
        for (p, large) in [(2, 0), (3, 0), (2, 192), (3, 192)] {
            run_with(p, 64, large, |n| {
                let me = n.me;
                let len = 1000;
                for root in 0..p {
                    let mut b: Vec<u64> = vec![0; len];
                    if me == root {
                        b = (0..len as u64).map(|i| i * 3 + root as u64).collect();
                    }
                    n.bcast(OK, bytemuck::cast_slice_mut(&mut b), root).unwrap();
                    assert!(b
                        .iter()
                        .enumerate()
                        .all(|(i, &x)| x == i as u64 * 3 + root as u64));
                    let mut acc: Vec<u64> = (0..len as u64).map(|i| i + me as u64).collect();
                    let mut tmp = vec![0u64; len];
                    let add = &mut |a: &mut [u64], b: &[u64]| {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                        Ok(())
                    };
                    n.reduce(OK, &acc.clone(), &mut acc, &mut tmp, root, add)
                        .unwrap();
                    let sum_ranks = (p * (p - 1) / 2) as u64;
                    if me == root {
                        assert!(acc
                            .iter()
                            .enumerate()
                            .all(|(i, &x)| x == i as u64 * p as u64 + sum_ranks));
                    }
                    let mut acc: Vec<u64> = (0..len as u64).map(|i| i * me as u64).collect();
                    n.allreduce(OK, &mut acc, &mut tmp, add).unwrap();
                    assert!(acc
                        .iter()
                        .enumerate()
                        .all(|(i, &x)| x == i as u64 * sum_ranks));
                    // Blocks of 301 bytes: 5 turns, the last of 45 bytes.
                    // Once in place, once from a separate send buffer.
                    let block = 301;
                    let own: Vec<u8> = (0..block).map(|i| (i * 7 + me) as u8).collect();
                    for separate in [false, true] {
                        let mut all = vec![0u8; block * p];
                        if separate {
                            n.allgather(OK, &mut all, block, Some(&own)).unwrap();
                        } else {
                            all[me * block..(me + 1) * block].copy_from_slice(&own);
                            n.allgather(OK, &mut all, block, None).unwrap();
                        }
                        for r in 0..p {
                            let got = &all[r * block..(r + 1) * block];
                            assert!(got.iter().enumerate().all(|(i, &x)| x == (i * 7 + r) as u8));
                        }
                    }
                    // All-to-all blocks of 301 bytes: pieces of 64 / p bytes
                    // of each block per turn, the last one short.
                    let val = |from: usize, to: usize, i: usize| (i * 5 + from * 3 + to) as u8;
                    let send: Vec<u8> = (0..p)
                        .flat_map(|to| (0..block).map(move |i| val(me, to, i)))
                        .collect();
                    let mut recv = vec![0u8; block * p];
                    n.alltoall(OK, &send, &mut recv, block).unwrap();
                    for from in 0..p {
                        let got = &recv[from * block..(from + 1) * block];
                        assert!(got.iter().enumerate().all(|(i, &x)| x == val(from, me, i)));
                    }
                }
            });
        }
    }

    #[test]
    fn elements_that_do_not_divide_the_cell_are_all_reduced() {
        // 64-byte cells hold 2 elements of 24 bytes (48 bytes) per turn: 41
        // elements (984 bytes) take 21 turns, not the 16 that 984 bytes of
        // cells would. Again with large cells of 128 bytes: 5 elements
        // (120 bytes) per turn, 9 turns, not 8.
        type T = [u64; 3];
        for (p, large) in [(2, 0), (3, 0), (2, 128), (3, 128)] {
            run_with(p, 64, large, |n| {
                let me = n.me as u64;
                let len = 41;
                let add = &mut |a: &mut [T], b: &[T]| {
                    for (x, y) in a.iter_mut().zip(b) {
                        for (u, v) in x.iter_mut().zip(y) {
                            *u += v;
                        }
                    }
                    Ok(())
                };
                let own: Vec<T> = (0..len as u64).map(|i| [i, me, 1]).collect();
                let sum_ranks = (p * (p - 1) / 2) as u64;
                let want: Vec<T> = (0..len as u64)
                    .map(|i| [i * p as u64, sum_ranks, p as u64])
                    .collect();
                let mut tmp = vec![[0u64; 3]; len];
                let mut acc = own.clone();
                n.allreduce(OK, &mut acc, &mut tmp, add).unwrap();
                assert_eq!(acc, want, "all-reduce");
                let mut acc = own.clone();
                n.allreduce_by_root(OK, &mut acc, &mut tmp, add).unwrap();
                assert_eq!(acc, want, "all-reduce by the root");
                let mut acc = own.clone();
                n.reduce(OK, &own, &mut acc, &mut tmp, 0, add).unwrap();
                if me == 0 {
                    assert_eq!(acc, want, "reduce");
                }
            });
        }
    }

    #[test]
    fn an_all_to_all_needs_a_byte_per_rank_in_a_cell() {
        // Cells of 2 bytes cannot carry a piece for each of 3 ranks: an
        // error on every rank, nothing truncated.
        let out = run(3, 2, |n| {
            let send = vec![n.me as u8; 3];
            let mut recv = vec![0u8; 3];
            n.alltoall(OK, &send, &mut recv, 1)
                .map_err(|e| e.to_string())
        });
        for r in out {
            assert!(r
                .unwrap_err()
                .contains("cannot carry a piece for each of 3 ranks"));
        }
    }

    #[test]
    fn counts_that_differ_between_ranks_are_an_error() {
        let errs = run(2, 64, |n| {
            // Rank 0 broadcasts 16 bytes, rank 1 expects 24: one turn each,
            // and rank 1 sees the difference.
            let mut b = vec![1u8; if n.me == 0 { 16 } else { 24 }];
            let bcast = n.bcast(OK, &mut b, 0).map_err(|e| e.to_string());
            n.barrier(OK).unwrap();
            let mut all = vec![0u8; 2 * if n.me == 0 { 8 } else { 4 }];
            let block = all.len() / 2;
            let gather = n
                .allgather(OK, &mut all, block, None)
                .map_err(|e| e.to_string());
            (bcast, gather)
        });
        assert!(errs[0].0.is_ok());
        let e = errs[1].0.as_ref().unwrap_err();
        assert!(
            e.contains("broadcast: rank 0 contributes 16 bytes where this rank has 24"),
            "{e}"
        );
        for (me, (_, g)) in errs.iter().enumerate() {
            let e = g.as_ref().unwrap_err();
            assert!(e.contains(&format!("rank {} contributes", 1 - me)), "{e}");
        }
    }

    #[test]
    fn a_root_runs_ahead_by_at_most_depth_minus_one_operations() {
        // Rank 1 sleeps before each receive: rank 0's broadcasts do not wait
        // for it until the lines (small) or cells (large) run out, and no
        // data is overwritten early.
        // 16 B in the line, 128 B in a small cell, 320 B in a data cell.
        for (words, depth) in [(2usize, LINE_DEPTH), (16, LINE_DEPTH), (40, DATA_DEPTH)] {
            run(2, 256, |n| {
                for k in 0..4 * depth {
                    let mut b = vec![0u64; words];
                    if n.me == 0 {
                        b.iter_mut()
                            .enumerate()
                            .for_each(|(i, x)| *x = k * 3 + i as u64);
                    } else {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    n.bcast(OK, bytemuck::cast_slice_mut(&mut b), 0).unwrap();
                    assert!(b.iter().enumerate().all(|(i, &x)| x == k * 3 + i as u64));
                    if n.me == 0 {
                        let known = n.seen.started(1).max(n.seen.published(1));
                        assert!(n.seq.load(AtomicOrdering::Relaxed) <= known + depth);
                    }
                }
            });
        }
    }

    #[test]
    fn quiet_ranks_announce_progress_so_others_may_run_ahead_and_reuse_lines() {
        // The quiet ranks (a broadcast's receivers, a reduce's root)
        // publish nothing: the others reuse lines and cells on their
        // announcements alone. A slow quiet rank lets them run ahead to the
        // depth, and no value may be overwritten before it is read.
        for p in [2, 3] {
            run(p, 128, |n| {
                let me = n.me;
                let slow = |k: usize| {
                    if k % 3 == 0 {
                        std::thread::sleep(Duration::from_micros(30));
                    }
                };
                // In the state line, a small cell or a data cell, in turn.
                let words = |k: usize| [3, 40, 3, 16][k % 4];
                // Broadcasts from rank 0; the last rank is slow.
                for k in 0..4 * LINE_DEPTH as usize {
                    if me == p - 1 {
                        slow(k);
                    }
                    let mut b = vec![0u64; words(k)];
                    if me == 0 {
                        b.iter_mut()
                            .enumerate()
                            .for_each(|(i, x)| *x = (k * 7 + i) as u64);
                    }
                    n.bcast(OK, bytemuck::cast_slice_mut(&mut b), 0).unwrap();
                    assert!(
                        b.iter().enumerate().all(|(i, &x)| x == (k * 7 + i) as u64),
                        "bcast {k} on {p} ranks"
                    );
                }
                // Reduces to the last rank, which is slow; in rank order.
                let root = p - 1;
                for k in 0..4 * LINE_DEPTH as usize {
                    if me == root {
                        slow(k);
                    }
                    let own = vec![(me + 1) as u64 + k as u64 * 10; words(k)];
                    let mut acc = own.clone();
                    let mut tmp = vec![0u64; words(k)];
                    let concat = &mut |a: &mut [u64], b: &[u64]| {
                        a.iter_mut()
                            .zip(b)
                            .for_each(|(x, y)| *x = x.wrapping_mul(31) ^ y);
                        Ok(())
                    };
                    n.reduce(OK, &own, &mut acc, &mut tmp, root, concat)
                        .unwrap();
                    if me == root {
                        let want = (1..p).fold(1 + k as u64 * 10, |a, r| {
                            a.wrapping_mul(31) ^ (r as u64 + 1 + k as u64 * 10)
                        });
                        assert!(acc.iter().all(|&x| x == want), "reduce {k} on {p} ranks");
                    }
                }
                // Then every rank publishes again: a barrier after it all.
                n.barrier(OK).unwrap();
            });
        }
    }

    #[test]
    fn quiet_ranks_leave_no_line_stale_for_2_to_the_31_operations() {
        // Every window of 2^20 + 2 laps holds a whole refresh lap, in which
        // a quiet rank writes each of its lines once.
        let window = (REFRESH_LAPS + 2) * LINE_DEPTH;
        assert!(window < 1 << 31);
        for start in [0u64, 1, 63, 64, 5 << 20, (1 << 32) - 7, u64::MAX / 2] {
            let laps: Vec<u64> = (start..start + window)
                .step_by(LINE_DEPTH as usize)
                .map(|s| s / LINE_DEPTH)
                .filter(|lap| lap % REFRESH_LAPS == 0)
                .collect();
            let whole = laps
                .iter()
                .any(|&lap| lap * LINE_DEPTH >= start && (lap + 1) * LINE_DEPTH <= start + window);
            assert!(whole, "no whole refresh lap after operation {start}");
        }
        assert!(refresh_lap(1) && refresh_lap(63) && !refresh_lap(64));
        assert!(refresh_lap(REFRESH_LAPS * LINE_DEPTH + 5));
    }

    #[test]
    fn an_error_from_the_job_check_ends_a_wait() {
        // Rank 1 is said to run on this CPU (it is waited for by yielding)
        // or on another one (by spinning a while first), or not said.
        for cpu in [None, Some(0), Some(u32::MAX - 1)] {
            an_error_from_the_job_check_ends_a_wait_with(cpu);
        }
    }

    fn an_error_from_the_job_check_ends_a_wait_with(cpu: Option<u32>) {
        let arena = Arena::create(2, 64, 0).unwrap();
        if let Some(c) = cpu {
            arena.set_cpu(1, c);
        }
        let n = NodeColl {
            arena,
            me: 0,
            p: 2,
            seq: AtomicU64::new(0),
            announced: AtomicU64::new(0),
            quiet: AtomicU64::new(0),
            all_started: AtomicU64::new(0),
            seen: Seen::new(2),
            profile: Profile::Far,
            cpu: AtomicU32::new(0),
            spread: Spread::off(),
            pulls_refused: AtomicBool::new(false),
            policy: WaitPolicy {
                spin: Duration::ZERO,
                yield_for: Duration::ZERO,
                block: Duration::from_millis(1),
                oversubscribed: true,
                own_cores: 1,
                node_ranks: 2,
            },
        };
        // Rank 1 never comes: the barrier waits until the check fails.
        let r = n.barrier(&|| Err(crate::error::Error::Aborted { code: 3 }));
        assert!(matches!(r, Err(crate::error::Error::Aborted { code: 3 })));
    }

    #[test]
    fn all_gather_and_all_to_all_by_single_copy_pulls_and_their_fallback() {
        // The simulated ranks are threads of this process: each pulls from
        // the others' buffers with process_vm_readv on its own pid. With
        // one rank's pulls refused, every rank reports that the pull
        // failed, and the copying all-gather then gives the same result.
        let p = 3;
        let block = 5000;
        for refused in [None, Some(1)] {
            let outcomes = run(p, 256, |n| {
                let me = n.me;
                REFUSE_PULL.with(|c| c.set(refused == Some(me)));
                let own: Vec<u8> = (0..block).map(|i| (i * 7 + me * 13) as u8).collect();
                let mut pulled = Vec::new();
                for separate in [false, true] {
                    for _ in 0..3 {
                        let mut all = vec![0u8; block * p];
                        let src = if separate {
                            Some(&own[..])
                        } else {
                            all[me * block..(me + 1) * block].copy_from_slice(&own);
                            None
                        };
                        let ok = n.allgather_pull(OK, &mut all, block, src).unwrap();
                        if !ok {
                            n.allgather(OK, &mut all, block, src).unwrap();
                        }
                        pulled.push(ok);
                        for r in 0..p {
                            let got = &all[r * block..(r + 1) * block];
                            assert!(
                                got.iter()
                                    .enumerate()
                                    .all(|(i, &x)| x == (i * 7 + r * 13) as u8),
                                "rank {me}: block {r} wrong (pulled: {ok})"
                            );
                        }
                    }
                }
                // All-to-all: this rank's piece of every send buffer.
                let val = |from: usize, to: usize, i: usize| (i * 5 + from * 3 + to) as u8;
                let send: Vec<u8> = (0..p)
                    .flat_map(|to| (0..block).map(move |i| val(me, to, i)))
                    .collect();
                for _ in 0..3 {
                    let mut recv = vec![0u8; block * p];
                    let ok = n.alltoall_pull(OK, &send, &mut recv, block).unwrap();
                    if !ok {
                        n.alltoall(OK, &send, &mut recv, block).unwrap();
                    }
                    pulled.push(ok);
                    for from in 0..p {
                        let got = &recv[from * block..(from + 1) * block];
                        assert!(
                            got.iter().enumerate().all(|(i, &x)| x == val(from, me, i)),
                            "rank {me}: piece from {from} wrong (pulled: {ok})"
                        );
                    }
                }
                // Every rank remembers a refusal alike (the table then
                // chooses no pulls for the communicator).
                assert_eq!(n.pulls_refused(), refused.is_some(), "rank {me}");
                pulled
            });
            for got in outcomes {
                assert_eq!(got, vec![refused.is_none(); 9], "refused: {refused:?}");
            }
        }
    }

    #[test]
    fn pulls_with_counts_that_differ_fail_on_every_rank_before_any_pull() {
        // Rank 1 brings blocks of another length: every rank sees it among
        // the places and returns an error (none waits for the others'
        // "done", none reads a block whose owner gave up).
        let p = 3;
        let errors = run(p, 256, |n| {
            let block = if n.me == 1 { 96 } else { 64 };
            let own = vec![n.me as u8; block];
            let mut all = vec![0u8; block * p];
            let gather = n.allgather_pull(OK, &mut all, block, Some(&own));
            let send = vec![n.me as u8; block * p];
            let mut recv = vec![0u8; block * p];
            let exchange = n.alltoall_pull(OK, &send, &mut recv, block);
            (gather.is_err(), exchange.is_err())
        });
        assert_eq!(errors, vec![(true, true); p]);
    }

    #[test]
    fn reduce_and_all_reduce_by_pulls_fold_in_rank_order_and_fall_back_together() {
        // A non-commutative fold (acc * 31 + x): any slice folded out of
        // rank order, or written to the wrong place, changes the result.
        // The commutative path (rank 0 folds its own operand into rank 1's)
        // with a wrapping sum.
        fn fold(commutative: bool, a: &mut [u64], b: &[u64]) {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = if commutative {
                    x.wrapping_add(y)
                } else {
                    x.wrapping_mul(31).wrapping_add(y)
                };
            }
        }
        let val = |r: usize, i: usize| (i * 1_000_003 + r * 7919) as u64;
        for (p, commutative) in [(2, false), (3, false), (2, true), (3, true)] {
            for refused in [None, Some(1)] {
                for n in [1usize, 2, 5, 3000] {
                    let want: Vec<u64> = (0..n)
                        .map(|i| {
                            let mut a = [val(0, i)];
                            for r in 1..p {
                                fold(commutative, &mut a, &[val(r, i)]);
                            }
                            a[0]
                        })
                        .collect();
                    let outcomes = run(p, 256, |node| {
                        let me = node.me;
                        REFUSE_PULL.with(|c| c.set(refused == Some(me)));
                        let own: Vec<u64> = (0..n).map(|i| val(me, i)).collect();
                        let mut pulled = Vec::new();
                        // Every root, then all-reduce (`None`).
                        for root in (0..p).map(Some).chain([None]) {
                            let mut acc = vec![u64::MAX; n];
                            let mut tmp = vec![0u64; n];
                            let mut f = |a: &mut [u64], b: &[u64]| {
                                fold(commutative, a, b);
                                Ok(())
                            };
                            let ok = node
                                .fold_pull(OK, &own, &mut acc, &mut tmp, root, commutative, &mut f)
                                .unwrap();
                            if !ok {
                                acc.copy_from_slice(&own);
                                match root {
                                    Some(root) => {
                                        node.reduce(OK, &own, &mut acc, &mut tmp, root, &mut f)
                                    }
                                    None => node.allreduce(OK, &mut acc, &mut tmp, &mut f),
                                }
                                .unwrap();
                            }
                            if root.is_none_or(|root| root == me) {
                                assert_eq!(acc, want, "p {p} n {n} root {root:?} pulled {ok}");
                            }
                            pulled.push(ok);
                        }
                        assert_eq!(node.pulls_refused(), refused.is_some(), "p {p} n {n}");
                        pulled
                    });
                    for got in outcomes {
                        assert_eq!(got, vec![refused.is_none(); p + 1], "p {p} n {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_failing_operation_in_a_reduce_by_pulls_is_an_error_on_every_rank() {
        let p = 3;
        let errors = run(p, 256, |node| {
            let own = vec![node.me as u32; 600];
            let (mut acc, mut tmp) = (vec![0u32; 600], vec![0u32; 600]);
            let me = node.me;
            let mut f = |_: &mut [u32], _: &[u32]| {
                if me == 1 {
                    Err(Error::InvalidArgument("no".into()))
                } else {
                    Ok(())
                }
            };
            let r = node.fold_pull(OK, &own, &mut acc, &mut tmp, Some(0), false, &mut f);
            // The next operation still works: nobody was left behind.
            node.barrier(OK).unwrap();
            r.is_err()
        });
        assert_eq!(errors, vec![true; p]);
    }

    #[test]
    fn fold_slices_cover_the_vector_in_rank_order() {
        for p in 1..6 {
            for root in (0..p).map(Some).chain([None]) {
                for n in [0usize, 1, 4, 99, 1 << 20] {
                    let mut next = 0;
                    for r in 0..p {
                        let s = fold_slice(p, root, n, r);
                        assert_eq!(s.start, next);
                        next = s.end;
                    }
                    assert_eq!(next, n);
                }
            }
        }
        // Two ranks: the root folds 3/5.
        assert_eq!(fold_slice(2, Some(0), 1000, 0), 0..600);
        assert_eq!(fold_slice(2, Some(1), 1000, 0), 0..400);
        assert_eq!(fold_slice(3, None, 10, 1), 3..6);
    }

    #[test]
    fn broadcast_by_pulls_from_every_root_and_its_fallback() {
        // Two ranks split the copy (the root writes the tail), three pull
        // it all; odd lengths put the split anywhere.
        for p in [2, 3] {
            for refused in [None, Some(1)] {
                let outcomes = run(p, 256, |node| {
                    let me = node.me;
                    REFUSE_PULL.with(|c| c.set(refused == Some(me)));
                    let mut pulled = Vec::new();
                    for len in [0usize, 1, 7, 4099] {
                        for root in 0..p {
                            let val = |i: usize| (i * 13 + root * 7 + len) as u8;
                            let mut buf: Vec<u8> = if me == root {
                                (0..len).map(val).collect()
                            } else {
                                vec![0xAA; len]
                            };
                            let ok = node.bcast_pull(OK, &mut buf, root).unwrap();
                            if !ok {
                                node.bcast(OK, &mut buf, root).unwrap();
                            }
                            assert!(
                                buf.iter().enumerate().all(|(i, &x)| x == val(i)),
                                "p {p} len {len} root {root} rank {me} pulled {ok}"
                            );
                            pulled.push(ok);
                        }
                    }
                    pulled
                });
                for got in outcomes {
                    assert_eq!(got, vec![refused.is_none(); 4 * p], "p {p}");
                }
            }
        }
    }
}
