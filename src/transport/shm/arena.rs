//! A communicator's collective arena on one node: a shared-memory segment
//! of *cells*, one per rank and parity, where collectives over shared
//! memory publish their operands and results without any point-to-point
//! message (MPICH's release/gather, Open MPI's `coll/sm`).
//!
//! A cell is a state *line* and, for operations of more than [`INLINE`]
//! bytes per rank, a small cell (up to 256 bytes) or a data cell: a rank
//! writes its data, then stores the operation's sequence number and
//! length into the state (one store, release); readers wait until the
//! state shows the sequence they want (acquire), then read the data. The
//! length is the byte count of the rank's whole operation (a large one
//! takes several turns), so a reader can tell that the ranks' counts
//! differ, and where the data is: up to [`INLINE`] bytes share the state's
//! cache line (a small collective moves one line per rank), more go to a
//! small cell or the data cell, and an operation of more than
//! [`LARGE_TURNS`] data cells' worth to a large cell. (A separate length word
//! cost a second transfer of that line whenever the other rank polled
//! between the two stores: a back-to-back 64-byte broadcast took twice as
//! long.)
//!
//! The state packs the low 32 bits of the sequence number (high half) and
//! of the length (low half). Ranks of one arena are never more than
//! [`LINE_DEPTH`] operations apart, and no line goes unwritten for 2^31
//! operations (`coll::node` has ranks that publish nothing refresh their
//! lines now and then), so the full sequence number is recovered from the
//! one a reader expects (wrapping arithmetic). Each rank
//! has [`LINE_DEPTH`] state lines and [`DATA_DEPTH`] data cells, used in
//! turn (sequence number modulo the depth): a rank may rewrite a line (a
//! data cell) only once every rank has started the operation
//! `LINE_DEPTH - 1` (`DATA_DEPTH - 1`) after the one that used it last, and
//! so has finished reading it. Small operations thus let a rank run up to
//! 63 operations ahead of the slowest (a broadcast's root, the leaves of a
//! reduce: on a node with more ranks than cores, the ranks that do run get
//! far before they must give their core away), large ones up to 15 with
//! modest memory; `coll::node` keeps those rules.
//!
//! Layout (offsets in bytes, every part 64-byte aligned):
//! ```text
//!   0     magic "CRARENA4", ranks (u64), cell data bytes (u64), large
//!         cell data bytes (u64)
//!  64     wake: AtomicU32 (futex word), sleepers: AtomicU32,
//!         fence: AtomicU32 (1: publishers fence; see "Waiting")
//! 128     progress: [rank 0 .. rank p-1], one line each: AtomicU64,
//!         then the rank's CPU: AtomicU32 (CPU + 1; 0: not known)
//!  ..     lines: [turn 0: rank 0 .. rank p-1] ... [turn LINE_DEPTH-1: ...]
//!         line = state: AtomicU64 (seq << 32 | length), INLINE data bytes
//!  ..     small cells: as the lines, 256 bytes each (none above 128 ranks)
//!  ..     cells: [turn 0: rank 0 .. rank p-1] ... [turn DATA_DEPTH-1: ...]
//!         cell = `slot` data bytes, rounded up to 64
//!  ..     large cells: as the cells, `large` bytes each (a multiple of 64;
//!         none when that is no more than `slot`), for operations of more
//!         than `LARGE_TURNS * slot` bytes per rank
//! ```
//!
//! A rank need not publish in every operation (a broadcast's receivers,
//! a reduce's root: nobody reads their cells). It then tells how far it
//! has got through its *progress* word instead, on a line of its own,
//! which others read only to know that it has moved on (to reuse a line or
//! cell): `coll::node` writes it every few operations and before any wait,
//! so such a rank moves one line per operation, not two.
//!
//! Waiting: a rank about to sleep counts itself in `sleepers`, re-checks its
//! condition, then sleeps on `wake` (futex); a rank that published and sees
//! sleepers bumps `wake` and wakes them. Between the publisher's store and
//! its load of `sleepers`, and the sleeper's store and its re-check, each
//! side needs a full barrier (Dekker's pattern), or a wake-up can be lost.
//! As in the shm transport, the barrier sits on the rare side: a sleeper
//! whose process is registered for `membarrier(2)` issues a global one
//! (every registered process passes a full barrier), and publishers keep
//! only a compiler fence. A full fence per publication made a 2-rank
//! reduce of 4–32 bytes take 0.15 µs against 0.08 without, with the two
//! vCPUs of an AMD EPYC VM not sharing caches: the leaf's store waited for
//! the root's core to hand back the line. A rank that cannot issue the
//! barrier (not registered, `COURIER_SHM_MEMBARRIER=0`, or refused) sets
//! `fence` for good, and every publisher fences from then on; a publisher
//! that skipped its fence just before is covered by the sleep's limit (a
//! millisecond in `coll::node`), never missed for longer.
//!
//! The segment may be mapped by a buggy process of the same user: indices
//! and lengths are checked against the arena's own geometry, so the worst a
//! peer can do is make us read garbage bytes or wait, never access memory
//! outside the mapping.

use crate::sys::{futex, segment::Segment};
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const MAGIC: u64 = u64::from_le_bytes(*b"CRARENA4");
const HEADER: usize = 128;
/// Bytes of a state line before its inline data: the state word.
const STATE: usize = 8;
/// Bytes of a state line.
const LINE: usize = 64;
/// Data bytes that travel in the state line: operations of at most this
/// many bytes per rank use no data cell.
pub(crate) const INLINE: usize = LINE - STATE;
/// State lines (and small cells) per rank, used in turn.
pub(crate) const LINE_DEPTH: u64 = 64;
/// Data cells per rank, used in turn.
pub(crate) const DATA_DEPTH: u64 = 16;
/// Operations of more than this many data cells' worth per rank use the
/// large cells (when the arena has them), in turns of at least a data
/// cell's worth: at most that many bytes, an operation keeps the data
/// cells and their turns. (All of more than a data cell in the large
/// cells: 4-rank reduces of 32–64 KiB took 1.11–1.19× as long, in as many
/// turns as before, 10 interleaved rounds.)
pub(crate) const LARGE_TURNS: usize = 4;

/// Bytes of a small cell: operations of more than [`INLINE`] and at most
/// this many bytes per rank use one, which has the lines' depth (a data
/// cell's depth of 16 let a broadcast's root run only 15 operations ahead:
/// 64-byte broadcasts on 4 ranks and 2 cores took 2.5× as long as 32-byte
/// ones).
const SMALL: usize = 256;
/// Arenas of more ranks have no small cells (they would take
/// `64 × SMALL` bytes per rank).
const SMALL_RANKS: usize = 128;

/// Bytes of a small cell in an arena of `ranks` ranks (0: none).
fn small_of(ranks: usize) -> usize {
    if ranks <= SMALL_RANKS {
        SMALL
    } else {
        0
    }
}

/// Offset of the state lines: after the header and the progress lines.
fn lines_at(ranks: usize) -> usize {
    HEADER + ranks * LINE
}

/// Offset of the small cells: after the state lines.
fn small_at(ranks: usize) -> usize {
    lines_at(ranks) + LINE_DEPTH as usize * ranks * LINE
}

/// Offset of the data cells: after the small cells.
fn cells_at(ranks: usize) -> usize {
    small_at(ranks) + LINE_DEPTH as usize * ranks * small_of(ranks)
}

/// Offset of the large cells: after the data cells of `cell` bytes.
fn large_at(ranks: usize, cell: usize) -> usize {
    cells_at(ranks) + DATA_DEPTH as usize * ranks * cell
}

/// Where a rank finds an arena (sent to the other ranks when it is made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArenaAddr {
    pub(crate) pid: u32,
    pub(crate) fd: i32,
    pub(crate) size: usize,
}

/// One rank's mapping of a collective arena.
#[derive(Debug)]
pub(crate) struct Arena {
    seg: Segment,
    ranks: usize,
    slot: usize,
    cell: usize,
    /// Data bytes of a large cell (0: none).
    large: usize,
    /// This process is registered for global membarriers: its sleeps issue
    /// one, and its publications need no fence while `fence` is 0.
    light: bool,
    /// Ask for this rank's line of the next turn for writing (see
    /// [`Arena::ask_for_next_line`]).
    ask_ahead: bool,
}

/// Whether this process may leave the publication barrier to sleepers
/// (see the module's documentation).
fn light() -> bool {
    crate::config::shm_membarrier() && crate::sys::membarrier::register()
}

/// A data cell's size, a large cell's (0: none, when asked for no more
/// than a data cell holds) and the arena's size.
fn geometry(ranks: usize, slot: usize, large: usize) -> (usize, usize, usize) {
    let cell = slot.max(1).next_multiple_of(64);
    let large = if large > slot {
        large.next_multiple_of(64)
    } else {
        0
    };
    (
        cell,
        large,
        large_at(ranks, cell) + DATA_DEPTH as usize * ranks * large,
    )
}

impl Arena {
    /// Makes an arena for `ranks` ranks with `slot` data bytes per cell,
    /// and large cells of `large` bytes (rounded up to 64) for operations
    /// of more than `slot` bytes per rank (none when `large <= slot`).
    pub(crate) fn create(ranks: usize, slot: usize, large: usize) -> io::Result<Arena> {
        let (cell, large, size) = geometry(ranks, slot, large);
        let seg = Segment::create(size)?;
        // The large cells are left to be faulted in by the first large
        // operation: a communicator that never has one (most of a
        // program's many) takes no memory for them.
        seg.prefault(0, large_at(ranks, cell));
        let a = Arena {
            seg,
            ranks,
            slot,
            cell,
            large,
            light: light(),
            ask_ahead: false,
        };
        a.word(8).store(ranks as u64, Ordering::Relaxed);
        if !a.light {
            a.u32_at(72).store(1, Ordering::SeqCst);
        }
        a.word(16).store(slot as u64, Ordering::Relaxed);
        a.word(24).store(large as u64, Ordering::Relaxed);
        a.word(0).store(MAGIC, Ordering::Release);
        Ok(a)
    }

    /// Maps the arena another rank made, checking that it has the
    /// geometry this rank expects (`large` as its maker's
    /// [`Arena::large`] says).
    pub(crate) fn open(
        addr: ArenaAddr,
        ranks: usize,
        slot: usize,
        large: usize,
    ) -> io::Result<Arena> {
        let (cell, large, size) = geometry(ranks, slot, large);
        if addr.size != size {
            return Err(io::Error::other("collective arena of an unexpected size"));
        }
        let seg = Segment::open_peer(addr.pid, addr.fd, size)?;
        let a = Arena {
            seg,
            ranks,
            slot,
            cell,
            large,
            light: light(),
            ask_ahead: false,
        };
        let ok = a.word(0).load(Ordering::Acquire) == MAGIC
            && a.word(8).load(Ordering::Relaxed) == ranks as u64
            && a.word(16).load(Ordering::Relaxed) == slot as u64
            && a.word(24).load(Ordering::Relaxed) == large as u64;
        if !ok {
            return Err(io::Error::other("not a collective arena of this geometry"));
        }
        if !a.light {
            a.u32_at(72).store(1, Ordering::SeqCst);
        }
        Ok(a)
    }

    /// This mapping fences after every publication and issues no
    /// membarrier (as a process that could not register does).
    #[cfg(test)]
    fn fenced(mut self) -> Self {
        self.light = false;
        self.u32_at(72).store(1, Ordering::SeqCst);
        self
    }

    /// How other ranks map this arena.
    pub(crate) fn addr(&self) -> ArenaAddr {
        ArenaAddr {
            pid: std::process::id(),
            fd: self.seg.fd(),
            size: self.seg.len(),
        }
    }

    /// Data bytes of a cell.
    pub(crate) fn slot(&self) -> usize {
        self.slot
    }

    /// Data bytes of a large cell (0: none).
    pub(crate) fn large(&self) -> usize {
        self.large
    }

    /// Data bytes of the cell an operation of `total` bytes per rank uses:
    /// a data cell's, or a large cell's for an operation of more than
    /// [`LARGE_TURNS`] data cells' worth when the arena has large cells.
    pub(crate) fn room_for(&self, total: usize) -> usize {
        if self.uses_large(total as u64) {
            self.large
        } else {
            self.slot
        }
    }

    /// Whether an operation of `total` bytes per rank uses the large cells.
    fn uses_large(&self, total: u64) -> bool {
        self.large > 0 && total > (LARGE_TURNS * self.slot) as u64
    }

    /// The 8-byte word at byte offset `at` of the header (0, 8, 16 or 24).
    fn word(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at <= 24 && at % 8 == 0);
        // SAFETY: 1. `at` is 0, 8, 16 or 24, inside the 128-byte header of a
        // page-aligned mapping at least HEADER bytes long, so the word is
        // valid and 8-byte aligned; 2. the reference borrows `self`, which
        // keeps the mapping alive; 3. every process accesses these words
        // atomically only.
        unsafe { &*(self.seg.as_ptr().add(at) as *const AtomicU64) }
    }

    fn u32_at(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at == 64 || at == 68 || at == 72);
        // SAFETY: as in `word`: offsets 64, 68 and 72 are 4-byte aligned words
        // inside the header, accessed atomically only.
        unsafe { &*(self.seg.as_ptr().add(at) as *const AtomicU32) }
    }

    /// Start of the state line of `rank` for sequence number `seq` (rank
    /// checked), or `None`.
    fn line_ptr(&self, seq: u64, rank: usize) -> Option<*mut u8> {
        if rank >= self.ranks {
            return None;
        }
        let index = (seq % LINE_DEPTH) as usize * self.ranks + rank;
        // SAFETY: index < LINE_DEPTH * ranks, so the line lies inside the
        // mapping, whose state lines span lines_at(ranks) ..
        // small_at(ranks) (the size was checked when mapped).
        Some(unsafe { self.seg.as_ptr().add(lines_at(self.ranks) + index * LINE) })
    }

    /// Start of the data cell of `rank` for sequence number `seq` (rank
    /// checked), or `None`.
    fn cell_ptr(&self, seq: u64, rank: usize) -> Option<*mut u8> {
        if rank >= self.ranks {
            return None;
        }
        let index = (seq % DATA_DEPTH) as usize * self.ranks + rank;
        // SAFETY: index < DATA_DEPTH * ranks, so the cell lies inside the
        // mapping, whose size is cells_at(ranks) + DATA_DEPTH * ranks * cell
        // (checked when mapped).
        Some(unsafe {
            self.seg
                .as_ptr()
                .add(cells_at(self.ranks) + index * self.cell)
        })
    }

    /// Start of the large cell of `rank` for sequence number `seq` (rank
    /// checked; `None` also when the arena has none).
    fn large_ptr(&self, seq: u64, rank: usize) -> Option<*mut u8> {
        if rank >= self.ranks || self.large == 0 {
            return None;
        }
        let index = (seq % DATA_DEPTH) as usize * self.ranks + rank;
        // SAFETY: index < DATA_DEPTH * ranks, so the cell lies inside the
        // large cells, which end the mapping: large_at(ranks, cell) ..
        // large_at(ranks, cell) + DATA_DEPTH * ranks * large, its size
        // (checked when mapped).
        Some(unsafe {
            self.seg
                .as_ptr()
                .add(large_at(self.ranks, self.cell) + index * self.large)
        })
    }

    /// Start of the small cell of `rank` for sequence number `seq` (rank
    /// checked; `None` also when the arena has no small cells).
    fn small_ptr(&self, seq: u64, rank: usize) -> Option<*mut u8> {
        let small = small_of(self.ranks);
        if rank >= self.ranks || small == 0 {
            return None;
        }
        let index = (seq % LINE_DEPTH) as usize * self.ranks + rank;
        // SAFETY: index < LINE_DEPTH * ranks, so the cell lies inside the
        // small cells, small_at(ranks) .. cells_at(ranks), of the mapping
        // (its size was checked when mapped).
        Some(unsafe { self.seg.as_ptr().add(small_at(self.ranks) + index * small) })
    }

    /// Asks for the lines of `rank`'s small cell for `seq`, when an
    /// operation of `total` bytes per rank uses one (more than [`INLINE`],
    /// at most a small cell): called just before looking at `rank`'s
    /// state, so that the data lines, written before the state, come over
    /// with it rather than one transfer after it (the reader learns that
    /// the state is ready only once its line arrives, and only then would
    /// it ask for the data). A hint only: a line it brings before the
    /// writer rewrote it is simply fetched again.
    pub(crate) fn prefetch_small(&self, seq: u64, rank: usize, total: usize) {
        if total <= INLINE || total > small_of(self.ranks) {
            return;
        }
        let Some(p) = self.small_ptr(seq, rank) else {
            return;
        };
        // `at < total <= small`: inside the small cell (see `small_ptr`).
        for at in (0..total).step_by(LINE) {
            super::prefetch_line(p.wrapping_add(at), false);
        }
    }

    /// The turns a rank may run ahead of the slowest before it reuses what
    /// an operation of `total` bytes per rank uses: the lines' depth for
    /// what fits a line or a small cell, the data cells' otherwise.
    pub(crate) fn depth_for(&self, total: usize) -> u64 {
        if total <= INLINE.max(small_of(self.ranks)) {
            LINE_DEPTH
        } else {
            DATA_DEPTH
        }
    }

    /// The progress word of `rank` (checked), or `None`.
    fn progress_word(&self, rank: usize) -> Option<&AtomicU64> {
        if rank >= self.ranks {
            return None;
        }
        // SAFETY: 1. rank < ranks, so the word starts a line inside the
        // progress lines (HEADER .. lines_at(ranks)) of the mapping, 8-byte
        // aligned; 2. the reference borrows `self` (the mapping); 3. every
        // process accesses it atomically only.
        Some(unsafe { &*(self.seg.as_ptr().add(HEADER + rank * LINE) as *const AtomicU64) })
    }

    /// Tells that `rank` has started operation `seq` (and so is done
    /// reading everything of earlier ones), and wakes sleepers.
    pub(crate) fn announce(&self, rank: usize, seq: u64) {
        if let Some(w) = self.progress_word(rank) {
            w.store(seq, Ordering::Release);
            self.wake_sleepers();
        }
    }

    /// The operation `rank` last announced it had started (acquire).
    pub(crate) fn announced(&self, rank: usize) -> u64 {
        self.progress_word(rank)
            .map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// The CPU word of `rank` (checked), or `None`: in its progress line,
    /// after the progress word.
    fn cpu_word(&self, rank: usize) -> Option<&AtomicU32> {
        if rank >= self.ranks {
            return None;
        }
        // SAFETY: as in `progress_word`: rank < ranks, so bytes 8..12 of
        // the rank's progress line lie inside the mapping, 4-byte aligned;
        // the reference borrows `self`; every process accesses the word
        // atomically only.
        Some(unsafe { &*(self.seg.as_ptr().add(HEADER + rank * LINE + 8) as *const AtomicU32) })
    }

    /// Tells the others which CPU `rank` runs on (see `coll::node`: on a
    /// node with more ranks than cores, a rank waits for one on another
    /// CPU by spinning, for one on its own by giving the CPU away).
    pub(crate) fn set_cpu(&self, rank: usize, cpu: u32) {
        if let Some(w) = self.cpu_word(rank) {
            w.store(cpu.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// The CPU `rank` last said it runs on, if it said (a hint: a process
    /// may have moved since).
    pub(crate) fn cpu(&self, rank: usize) -> Option<u32> {
        let v = self.cpu_word(rank)?.load(Ordering::Relaxed);
        v.checked_sub(1)
    }

    /// Where `rank`'s data for `seq` lies and how many bytes it holds, for
    /// an operation of `total` bytes per rank: in the state line, a small
    /// cell, a data cell or a large cell (see [`Arena::room_for`]).
    fn data_ptr(&self, seq: u64, rank: usize, total: u64) -> Option<(*mut u8, usize)> {
        let small = small_of(self.ranks);
        if total <= INLINE as u64 {
            // SAFETY: the line's INLINE data bytes follow its state word
            // inside the line (see `line_ptr`).
            self.line_ptr(seq, rank)
                .map(|p| (unsafe { p.add(STATE) }, INLINE))
        } else if total <= small as u64 {
            self.small_ptr(seq, rank).map(|p| (p, small))
        } else if self.uses_large(total) {
            self.large_ptr(seq, rank).map(|p| (p, self.large))
        } else {
            self.cell_ptr(seq, rank).map(|p| (p, self.slot))
        }
    }

    fn state(&self, seq: u64, rank: usize) -> Option<&AtomicU64> {
        // SAFETY: the line starts on a 64-byte boundary inside the mapping
        // (see `line_ptr`); its first 8 bytes are the state word, accessed
        // atomically only; the reference borrows `self` (the mapping).
        self.line_ptr(seq, rank)
            .map(|p| unsafe { &*(p as *const AtomicU64) })
    }

    /// The operation byte count `total` as the state word keeps it: its
    /// 32 bits saturate, so an operation of 4 GiB or more reads as
    /// `u32::MAX` (and its data, like any large operation's, lies in the
    /// data cells) rather than as its low bits, which could name the
    /// inline bytes of the line.
    pub(crate) fn stored_total(total: u64) -> u32 {
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// The length `rank` published with its data for `seq`
    /// ([`Arena::stored_total`] of the operation's byte count). Call only
    /// after `published` showed `seq` there.
    pub(crate) fn total(&self, seq: u64, rank: usize) -> u32 {
        self.state(seq, rank)
            .map_or(0, |s| s.load(Ordering::Acquire) as u32)
    }

    /// The sequence number `rank` last published in its cell for turn
    /// `seq` (acquire): `seq` or later once it has published `seq`,
    /// earlier before.
    pub(crate) fn published(&self, seq: u64, rank: usize) -> u64 {
        let Some(state) = self.state(seq, rank) else {
            return 0;
        };
        let low = (state.load(Ordering::Acquire) >> 32) as u32;
        // The cell holds `seq` itself, an older turn's number (before), or
        // a newer one (after): all within 2^31 of `seq`.
        let ahead = low.wrapping_sub(seq as u32) as i32;
        seq.saturating_add_signed(i64::from(ahead))
    }

    /// Writes `data` (at most `slot` bytes) for `seq` into this rank's
    /// state line (operations of at most [`INLINE`] bytes in `total`) or
    /// data cell, then publishes `seq` and `total` (the byte count of the
    /// rank's whole operation) in its state, and wakes sleepers.
    pub(crate) fn publish(&self, seq: u64, rank: usize, data: &[u8], total: u64) {
        self.publish_parts(seq, rank, [data], total);
    }

    /// [`Arena::publish`] of the concatenation of `parts` (an all-to-all's
    /// pieces for every rank), cut at what the line or cell holds.
    pub(crate) fn publish_parts<'a>(
        &self,
        seq: u64,
        rank: usize,
        parts: impl IntoIterator<Item = &'a [u8]>,
        total: u64,
    ) {
        // Where the data goes follows the count the readers will see.
        let stored = Self::stored_total(total);
        let (Some((p, room)), Some(state)) = (
            self.data_ptr(seq, rank, u64::from(stored)),
            self.state(seq, rank),
        ) else {
            return;
        };
        let mut at = 0;
        for part in parts {
            let n = part.len().min(room - at);
            // SAFETY: 1. `p + at .. p + at + n` lies inside the line's
            // inline bytes or the cell (at + n <= room); 2. by the arena's
            // protocol no other process reads this data until the state
            // store below publishes it, and none writes it (it is this
            // rank's); 3. `part` is local memory, so the ranges do not
            // overlap.
            unsafe { crate::sys::copy::copy_nonoverlapping(part.as_ptr(), p.add(at), n) };
            at += n;
        }
        state.store((seq << 32) | u64::from(stored), Ordering::Release);
        self.wake_sleepers();
    }

    /// Whether [`Arena::ask_for_next_line`] asks (see there).
    pub(crate) fn set_ask_ahead(&mut self, on: bool) {
        self.ask_ahead = on;
    }

    /// Asks for `rank`'s line of turn `seq + 1` for writing, right after
    /// its publication for `seq` (a hint only, and only where
    /// [`Arena::set_ask_ahead`] turned it on). The line's transfer from
    /// the other ranks' caches (they read it a lap of turns ago) then
    /// overlaps with this rank's wait for the others, instead of holding
    /// up its next publication while they wait for it.
    #[inline]
    pub(crate) fn ask_for_next_line(&self, seq: u64, rank: usize) {
        if !self.ask_ahead {
            return;
        }
        if let Some(p) = self.line_ptr(seq + 1, rank) {
            super::prefetch_line(p, true);
        }
    }

    /// Wakes the ranks asleep in [`Arena::sleep_unless`], after a store of
    /// what they wait for: with a full fence between the two unless the
    /// sleepers' membarrier stands in for it (see the module's
    /// documentation).
    fn wake_sleepers(&self) {
        if self.light && self.u32_at(72).load(Ordering::Relaxed) == 0 {
            // Keep only the compiler from moving the load above the store.
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        if self.u32_at(68).load(Ordering::SeqCst) > 0 {
            self.u32_at(64).fetch_add(1, Ordering::SeqCst);
            futex::wake_all(self.u32_at(64));
        }
    }

    /// Copies the first `out.len()` data bytes `rank` published for `seq`
    /// into `out`. Call only after `published` showed `seq` (or later)
    /// there.
    pub(crate) fn read(&self, seq: u64, rank: usize, out: &mut [u8]) {
        self.read_at(seq, rank, 0, out);
    }

    /// Like [`Arena::read`], from byte `offset` of the data (the part past
    /// what the publisher could write is not read). Where the data lies
    /// follows the length the publisher stored with it.
    pub(crate) fn read_at(&self, seq: u64, rank: usize, offset: usize, out: &mut [u8]) {
        let Some((p, room)) = self.published_place(seq, rank) else {
            return;
        };
        let n = out.len().min(room.saturating_sub(offset));
        if n == 0 {
            return;
        }
        // SAFETY: 1. `offset + n <= room`, so the range lies inside the
        // line's inline bytes or the cell; 2. the acquire load that showed
        // the state ordered the writer's data before this read, and the
        // writer does not rewrite it until this rank has moved on (the
        // arena's protocol); 3. `out` is local memory, so the ranges do not
        // overlap.
        unsafe { crate::sys::copy::copy_nonoverlapping(p.add(offset), out.as_mut_ptr(), n) };
    }

    /// Where `rank`'s data for `seq` lies and how many bytes that place
    /// holds, as the length the publisher stored with it says (the one
    /// choice its readers all make alike).
    fn published_place(&self, seq: u64, rank: usize) -> Option<(*mut u8, usize)> {
        self.data_ptr(seq, rank, u64::from(self.total(seq, rank)))
    }

    /// Lends the first `len` data bytes `rank` published for `seq` to `f`
    /// where they lie, without a copy; `None` (`f` not called) when the
    /// place that holds an operation of that size (the line's inline
    /// bytes, a small cell or a data cell) holds fewer. Call only after
    /// `published` showed `seq` (or later) there, and publish nothing from
    /// inside `f` (a publication of this process for `rank` could rewrite
    /// the lent bytes; the one caller, `NodeColl::fold`, only combines them
    /// into private memory).
    pub(crate) fn with_data<R>(
        &self,
        seq: u64,
        rank: usize,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        let (p, room) = self.published_place(seq, rank)?;
        if len > room {
            return None;
        }
        // SAFETY: 1. `len <= room`, so the range lies inside the line's
        // inline bytes or the cell, in the mapping that `self` keeps for
        // the borrow; 2. the acquire load that showed the state ordered
        // the writer's data before these reads, and the writer does not
        // write these bytes again until this rank has started an
        // operation a whole depth later (the arena's protocol), which it
        // cannot do while `f` runs; 3. this process writes the arena only
        // by publishing, which it does not do inside `f` (the contract
        // above), so its own cells do not change under `f` either. (A peer
        // that broke the protocol and wrote these bytes during `f` would
        // race with its reads, as with `read`'s copy: `f` could see values
        // change, but the slice's bounds are fixed, so no access leaves the
        // mapping.)
        let data = unsafe { std::slice::from_raw_parts(p.cast_const(), len) };
        Some(f(data))
    }

    /// Sleeps (at most `timeout`) unless `ready()` holds once this rank is
    /// counted among the sleepers; publishers wake it.
    pub(crate) fn sleep_unless(&self, ready: impl Fn() -> bool, timeout: Duration) {
        let sleepers = self.u32_at(68);
        let wake = self.u32_at(64);
        sleepers.fetch_add(1, Ordering::SeqCst);
        if self.light && !crate::sys::membarrier::global() {
            // Publishers fence from now on; one that read the old flag is
            // covered by the sleep's limit.
            self.u32_at(72).store(1, Ordering::SeqCst);
        }
        let seen = wake.load(Ordering::SeqCst);
        if !ready() {
            futex::wait(wake, seen, timeout);
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mappings_publish_and_read_cells_in_turn() {
        let a = Arena::create(3, 100, 0).unwrap();
        let b = Arena::open(a.addr(), 3, 100, 0).unwrap();
        assert!(Arena::open(a.addr(), 4, 100, 0).is_err(), "wrong geometry");
        assert_eq!(b.published(1, 2), 0);
        a.publish(1, 2, &[7u8; 100], 300);
        a.publish(2, 2, &[9u8; 10], 10);
        assert_eq!((b.published(1, 2), b.published(2, 2)), (1, 2));
        assert_eq!((b.total(1, 2), b.total(2, 2)), (300, 10));
        // Sequence numbers past 32 bits: recovered around the expected one.
        let big = (1u64 << 32) + 5;
        a.publish(big, 1, &[1], 1);
        assert_eq!(b.published(big, 1), big);
        assert!(b.published(big + LINE_DEPTH, 1) < big + LINE_DEPTH);
        let mut out = [0u8; 100];
        b.read(1, 2, &mut out);
        assert_eq!(out, [7u8; 100]);
        b.read(2, 2, &mut out[..10]);
        assert_eq!(out[..10], [9u8; 10]);
        // Out-of-range ranks and oversized data are refused or cut.
        a.publish(3, 5, &[1u8; 10], 10);
        assert_eq!(b.published(3, 5), 0);
        a.publish(3, 0, &[3u8; 1000], 1000);
        let mut big = [0u8; 1000];
        b.read(3, 0, &mut big);
        assert!(big[..100].iter().all(|&x| x == 3) && big[100..].iter().all(|&x| x == 0));
    }

    #[test]
    fn published_data_is_lent_where_it_lies() {
        let a = Arena::create(2, 512, 0).unwrap();
        let b = Arena::open(a.addr(), 2, 512, 0).unwrap();
        // Inline in the state line, in a small cell and in a data cell.
        for (seq, len) in [(1u64, 20usize), (2, 200), (3, 500)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + seq as usize) as u8).collect();
            a.publish(seq, 1, &data, len as u64);
            assert_eq!(b.with_data(seq, 1, len, |d| d.to_vec()), Some(data.clone()));
            assert_eq!(
                b.with_data(seq, 1, 3, |d| d.to_vec()),
                Some(data[..3].to_vec())
            );
            // More than the publication's room: refused, `f` not called.
            assert_eq!(b.with_data(seq, 1, 4096, |_| unreachable!()), None::<()>);
        }
        // A rank outside the arena has nothing to lend.
        assert_eq!(b.with_data(1, 7, 1, |_| unreachable!()), None::<()>);
    }

    /// An operation of 4 GiB or more (a cell's worth per turn) keeps its
    /// data in the data cells, where readers look for it: its count
    /// saturates instead of wrapping to a small one, whose data would lie
    /// in the line.
    #[test]
    fn operations_of_4_gib_and_more_are_read_from_the_data_cells() {
        let a = Arena::create(2, 512, 0).unwrap();
        let b = Arena::open(a.addr(), 2, 512, 0).unwrap();
        for total in [(1u64 << 32) + 20, 1 << 40] {
            let data: Vec<u8> = (0..500).map(|i| (i % 251) as u8).collect();
            a.publish(7, 0, &data, total);
            assert_eq!(b.total(7, 0), u32::MAX);
            let mut out = vec![0u8; 500];
            b.read(7, 0, &mut out);
            assert_eq!(out, data);
            assert_eq!(b.with_data(7, 0, 500, |d| d.to_vec()), Some(data));
        }
        assert_eq!(Arena::stored_total(20), 20);
        assert_eq!(Arena::stored_total(u64::from(u32::MAX)), u32::MAX);
    }

    /// A publisher races a reader that sleeps whenever the next turn is not
    /// there yet: a lost wake-up would leave the reader asleep until its
    /// (long) timeout. With the sleeper's membarrier standing in for the
    /// publisher's fence, and with fences (one mapping fenced makes both
    /// fence). Like the shm transport's test, it catches a protocol that
    /// misses wake-ups in ordinary interleavings.
    #[test]
    fn no_wake_up_is_lost_when_publications_race_sleeps() {
        for fenced in [false, true] {
            let a = Arena::create(2, 64, 0).unwrap();
            let b = Arena::open(a.addr(), 2, 64, 0).unwrap();
            let b = if fenced { b.fenced() } else { b };
            if !fenced && !a.light {
                continue; // no membarrier here: both fence already
            }
            const N: u64 = 5_000;
            let reader = std::thread::spawn(move || {
                let (mut worst, mut slept) = (Duration::ZERO, 0);
                for seq in 1..=N {
                    while b.published(seq, 0) < seq {
                        let start = std::time::Instant::now();
                        b.sleep_unless(|| b.published(seq, 0) >= seq, Duration::from_secs(5));
                        worst = worst.max(start.elapsed());
                        slept += 1;
                    }
                    b.announce(1, seq);
                }
                (worst, slept)
            });
            let mut x = 12345u32;
            for seq in 1..=N {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                for _ in 0..x % 256 {
                    std::hint::spin_loop();
                }
                // Stay within the lines' depth of the reader.
                while seq > LINE_DEPTH && a.announced(1) + LINE_DEPTH <= seq {
                    std::hint::spin_loop();
                }
                a.publish(seq, 0, &[seq as u8], 1);
            }
            let (worst, slept) = reader.join().unwrap();
            assert!(
                worst < Duration::from_secs(2),
                "fenced {fenced}: a wake-up was lost ({worst:?} asleep; {slept} sleeps)"
            );
        }
    }

    #[test]
    fn cpu_words_share_the_progress_line_and_leave_the_progress_word_alone() {
        let a = Arena::create(3, 64, 0).unwrap();
        let b = Arena::open(a.addr(), 3, 64, 0).unwrap();
        assert_eq!((b.cpu(0), b.cpu(2)), (None, None));
        a.announce(1, 5);
        a.set_cpu(1, 0);
        a.set_cpu(2, 7);
        a.set_cpu(3, 1); // no such rank: ignored
        assert_eq!(
            (b.cpu(0), b.cpu(1), b.cpu(2), b.cpu(3)),
            (None, Some(0), Some(7), None)
        );
        assert_eq!((b.announced(1), b.announced(2)), (5, 0));
        a.announce(2, 9);
        assert_eq!(b.cpu(2), Some(7));
    }

    #[test]
    fn progress_words_are_per_rank_and_apart_from_the_cells() {
        let a = Arena::create(3, 64, 0).unwrap();
        let b = Arena::open(a.addr(), 3, 64, 0).unwrap();
        assert_eq!((b.announced(0), b.announced(2)), (0, 0));
        a.announce(2, 77);
        a.announce(9, 1); // no such rank: ignored
        assert_eq!((b.announced(0), b.announced(1), b.announced(2)), (0, 0, 77));
        // Cells and lines of every turn and rank leave the words alone.
        for seq in 0..LINE_DEPTH {
            for r in 0..3 {
                a.publish(seq, r, &[0xff; 64], 1000);
                a.publish(seq, r, &[0xff; 200], 200);
                a.publish(seq, r, &[0xff; 8], 8);
            }
        }
        assert_eq!((b.announced(0), b.announced(1), b.announced(2)), (0, 0, 77));
        a.announce(2, 1 << 40);
        assert_eq!(b.announced(2), 1 << 40, "a full 64-bit count");
    }

    #[test]
    fn lines_small_cells_and_data_cells_never_overlap() {
        let p = 3;
        let a = Arena::create(p, 512, 0).unwrap();
        let b = Arena::open(a.addr(), p, 512, 0).unwrap();
        // In the line, a small cell, a data cell.
        let sizes = [40usize, 200, 500];
        assert_eq!(
            sizes.map(|n| a.depth_for(n)),
            [LINE_DEPTH, LINE_DEPTH, DATA_DEPTH]
        );
        // Where each (turn, rank, kind) lies: apart from every other, and
        // inside the mapping (data cells repeat every DATA_DEPTH turns).
        let mut places = Vec::new();
        for seq in 0..LINE_DEPTH {
            for r in 0..p {
                for len in sizes {
                    if len > SMALL && seq >= DATA_DEPTH {
                        continue;
                    }
                    let (ptr, room) = a.data_ptr(seq, r, len as u64).unwrap();
                    assert!(room >= len.min(512));
                    places.push((ptr as usize, room));
                }
            }
        }
        places.sort();
        for w in places.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?} overlap");
        }
        let end = a.seg.as_ptr() as usize + a.seg.len();
        assert!(places.iter().all(|&(ptr, room)| ptr + room <= end));
        // Round trips, each kind.
        for (i, len) in sizes.into_iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|k| (k * 3 + i) as u8).collect();
            a.publish(5, 2, &data, len as u64);
            let mut out = vec![0u8; len];
            b.read(5, 2, &mut out);
            assert_eq!(out, data);
        }
        // A big arena has no small cells: a 200-byte operation uses a data
        // cell, with its depth.
        let big = Arena::create(SMALL_RANKS + 1, 1024, 0).unwrap();
        assert_eq!(big.depth_for(200), DATA_DEPTH);
        assert_eq!(big.data_ptr(0, 0, 200).map(|(_, room)| room), Some(1024));
    }

    #[test]
    fn large_cells_follow_the_data_cells_and_take_what_a_cell_cannot() {
        let (p, slot, large) = (3, 512, 1000);
        let a = Arena::create(p, slot, large).unwrap();
        assert_eq!(a.large(), 1024, "rounded up to 64");
        assert!(Arena::open(a.addr(), p, slot, 0).is_err(), "wrong geometry");
        let b = Arena::open(a.addr(), p, slot, a.large()).unwrap();
        assert_eq!((a.room_for(2048), a.room_for(2049)), (512, 1024));
        // Data cells for operations that fit one (and no small cell),
        // large cells above: apart from each other and inside the mapping,
        // the large cells last.
        let mut places = Vec::new();
        for seq in 0..DATA_DEPTH {
            for r in 0..p {
                for (total, room) in [(300u64, 512), (5000, 1024)] {
                    let (ptr, got) = a.data_ptr(seq, r, total).unwrap();
                    assert_eq!(got, room);
                    places.push((ptr as usize, got));
                }
            }
        }
        places.sort();
        for w in places.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:?} overlap");
        }
        let end = a.seg.as_ptr() as usize + a.seg.len();
        assert_eq!(places.last().map(|&(ptr, room)| ptr + room), Some(end));
        // A turn of a 5000-byte operation carries 1024 bytes.
        let data: Vec<u8> = (0..1024).map(|k| k as u8).collect();
        a.publish(7, 1, &data, 5000);
        let mut out = vec![0u8; 1024];
        b.read(7, 1, &mut out);
        assert_eq!(out, data);
        a.publish(8, 1, &data[..300], 300);
        b.read(8, 1, &mut out[..300]);
        assert_eq!(out[..300], data[..300]);
        // No large cells when they would hold no more than a cell.
        assert_eq!(Arena::create(p, slot, slot).unwrap().large(), 0);
    }

    #[test]
    fn a_sleeper_is_woken_by_a_publish_or_an_announcement() {
        for announce in [false, true] {
            let a = Arena::create(2, 8, 0).unwrap();
            let b = Arena::open(a.addr(), 2, 8, 0).unwrap();
            let ready = || {
                if announce {
                    b.announced(1) >= 3
                } else {
                    b.published(1, 1) >= 1
                }
            };
            let t = std::time::Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(50));
                    if announce {
                        a.announce(1, 3);
                    } else {
                        a.publish(1, 1, &[1], 1);
                    }
                });
                while !ready() {
                    b.sleep_unless(ready, Duration::from_secs(5));
                }
            });
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
    }
}
