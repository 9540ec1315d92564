//! Shared-memory links between ranks of one node.
//!
//! Each rank owns one segment holding its *inbound* rings, one per local
//! sender (indexed by the sender's local rank), plus a wake-up word and the
//! senders' announcements:
//!
//! ```text
//!   0      magic "CRSHM004" (u64), ring capacity (u64), slots (u64),
//!          announced: AtomicU32 (how many senders announced themselves)
//!   64     wake: AtomicU32 (futex word), sleeping: AtomicU32,
//!          barrier: AtomicU32 (1: the owner sleeps through a global membarrier)
//!   128    announcement bits: AtomicU64 × ⌈slots / 64⌉, padded to 64 bytes
//!   rings  ring of local rank 0, ring of local rank 1, ... (ring::CTL_BYTES + capacity each)
//!   end    calibrate::AREA bytes, page aligned: where local ranks 0 and 1
//!          measure the node at start-up (see `calibrate`; used in local
//!          rank 0's segment only, untouched and so never resident elsewhere)
//! ```
//!
//! A sender announces itself once, when it maps the segment for its first
//! message: it sets its bit and bumps `announced`, then writes. The owner
//! polls only the rings of senders that announced themselves, rereading the
//! bits when `announced` changes (one load per poll otherwise). So a poll
//! costs O(peers that ever sent), not O(local ranks), and the ring of a
//! peer that never sends is never touched: an idle rank of a 1,024-rank
//! node keeps no page of 1,023 rings resident.
//!
//! The per-rank budget (`COURIER_SHM_BUDGET`, default 4 MiB) is split among
//! the local senders, so a node's footprint is `local ranks × budget`: it
//! grows with the local rank count, not with its square. A sender maps the
//! receiver's segment lazily, on its first message to it.
//!
//! Waiting: a rank about to sleep sets `sleeping`, re-checks its rings, then
//! sleeps on `wake` (futex); a sender that published bytes and sees
//! `sleeping` bumps `wake` and wakes it. Dekker's pattern: each side needs a
//! full barrier between its store and its load, or a wake-up can be lost.
//! The sleeper's side is rare, the sender's is every message, and on x86 a
//! sender's fence waits for the record's cache line to come back from the
//! receiver's core. So when every process could register for
//! `membarrier(2)` (see `sys::membarrier`), the sleeper issues a global
//! barrier and says so in its header (`barrier` = 1), and senders to it
//! skip their fence; otherwise both fence (`COURIER_SHM_MEMBARRIER=0`
//! forces that).

pub(crate) mod arena;
pub(crate) mod calibrate;
pub(crate) mod ring;

use super::{LinkError, Transport};
use crate::ids::Rank;
use crate::sys::{futex, segment::Segment};
use ring::{Consumer, Corrupt, Producer, RingPtr};
pub(crate) use ring::{RecordBody, Taken, TAKE_HEAD};
use std::io::IoSlice;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Asks the cache for the line at `p`, for writing (`prefetchw`: the line
/// arrives exclusive, so a store that follows need not wait for it) or for
/// reading. A hint only: it reads and writes nothing and never faults,
/// whatever the address, so any pointer will do (the rings and the arena
/// pass addresses inside their mappings).
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8, write: bool) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no architectural effect (no access, no fault),
    // so no address can make it unsound.
    unsafe {
        if write {
            // Not `_mm_prefetch` with `_MM_HINT_ET0`: without the `prfchw`
            // target feature that emits no instruction.
            std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
        } else {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, write);
}

const MAGIC: u64 = u64::from_le_bytes(*b"CRSHM004");
const HEADER: usize = 128;
const MIN_RING: usize = 16 * 1024;
const MAX_RING: usize = 1 << 20;

/// Ring capacity for a node of `local_size` ranks with `budget` bytes per rank.
pub(crate) fn ring_capacity(local_size: u32, budget: usize) -> usize {
    let senders = local_size.saturating_sub(1).max(1) as usize;
    let per = (budget / senders).clamp(MIN_RING, MAX_RING);
    // Round down to a power of two.
    1 << (usize::BITS - 1 - per.leading_zeros())
}

/// Offset of the first ring: after the header and the announcement bits.
fn rings_at(slots: usize) -> usize {
    HEADER + (slots.div_ceil(64) * 8).next_multiple_of(64)
}

/// Offset of the ring of local rank `slot`.
fn ring_offset(slots: usize, slot: usize, cap: usize) -> usize {
    rings_at(slots) + slot * RingPtr::footprint(cap)
}

fn segment_size(slots: usize, cap: usize) -> usize {
    (rings_at(slots) + slots * RingPtr::footprint(cap)).next_multiple_of(4096) + calibrate::AREA
}

/// How a peer's segment is reached, from its card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShmAddr {
    pub(crate) pid: u32,
    pub(crate) fd: i32,
    pub(crate) size: usize,
    pub(crate) local_rank: u32,
}

#[derive(Debug)]
struct Header<'a> {
    wake: &'a AtomicU32,
    sleeping: &'a AtomicU32,
    /// 1 while the owner puts a global membarrier between announcing its
    /// sleep and re-checking its rings: its senders need no fence.
    barrier: &'a AtomicU32,
}

/// Reads the header fields of a mapped segment.
///
/// The returned references borrow `seg`, which keeps the mapping alive.
fn header(seg: &Segment) -> Header<'_> {
    let base = seg.as_ptr();
    // SAFETY: 1. the segment is at least HEADER bytes (checked by callers at
    // map time) and page aligned, so offsets 64, 68 and 72 are valid, aligned u32s;
    // 2. the references borrow `seg`, so the mapping outlives them; 3. peers
    // access these words only atomically.
    unsafe {
        Header {
            wake: &*(base.add(64) as *const AtomicU32),
            sleeping: &*(base.add(68) as *const AtomicU32),
            barrier: &*(base.add(72) as *const AtomicU32),
        }
    }
}

/// The count of announced senders.
fn announced(seg: &Segment) -> &AtomicU32 {
    // SAFETY: offset 24 is inside the header of a mapped segment (callers
    // check the size at map time), 4-byte aligned; the reference borrows
    // `seg`; all access to the word is atomic.
    unsafe { &*(seg.as_ptr().add(24) as *const AtomicU32) }
}

/// Word `i` of the announcement bits of a segment of `slots` slots.
fn announce_word(seg: &Segment, slots: usize, i: usize) -> Option<&AtomicU64> {
    if i >= slots.div_ceil(64) || rings_at(slots) > seg.len() {
        return None;
    }
    // SAFETY: the word lies between HEADER and rings_at(slots), inside the
    // mapping (checked above), 8-byte aligned; the reference borrows `seg`;
    // all access to the bits is atomic.
    Some(unsafe { &*(seg.as_ptr().add(HEADER + 8 * i) as *const AtomicU64) })
}

fn word(seg: &Segment, at: usize) -> u64 {
    // SAFETY: `at` is 0, 8 or 16, inside the header of a mapped segment; the
    // words are written once before the segment is published and read atomically.
    unsafe { (*(seg.as_ptr().add(at) as *const AtomicU64)).load(Ordering::Acquire) }
}

fn ring_in(seg: &Segment, slots: usize, slot: usize, cap: usize) -> Option<RingPtr> {
    let off = ring_offset(slots, slot, cap);
    if off + RingPtr::footprint(cap) > seg.len() {
        return None;
    }
    // SAFETY: 1. the ring lies inside the mapping (checked above) and is
    // 64-byte aligned (rings_at and footprints are multiples of 64, the mapping
    // is page aligned); 2. the owner of `seg` keeps it mapped as long as the
    // producer/consumer made from this pointer (both live in the same
    // `ShmTransport` as the segment); 3. slot `slot` has exactly one producer
    // (the rank with that local rank) and one consumer (the owner).
    Some(unsafe { RingPtr::new(seg.as_ptr().add(off), cap) })
}

#[derive(Debug)]
struct Peer {
    addr: ShmAddr,
    /// Their segment and our producer on our slot in it, once mapped.
    out: Option<(Segment, Producer)>,
    /// Index of our consumer on their slot in our segment, in `inbound`.
    inbound: usize,
    /// Our mapping of their slot has been faulted in.
    primed: bool,
    /// Bytes came from them since our last write to them: the exchange is
    /// a conversation, and our next write answers them (it asks for no
    /// lines ahead: see `Producer::set_streaming`).
    heard: bool,
}

/// The shared-memory transport of one rank.
#[derive(Debug)]
pub(crate) struct ShmTransport {
    /// Shared with the [`Sleeper`]s lent to a thread that sleeps without
    /// the driver's lock.
    own: std::sync::Arc<Segment>,
    my_local: u32,
    peers: Vec<Option<Peer>>,
    local_peers: Vec<Rank>,
    /// Our consumers, one per local peer: those that announced themselves
    /// first (`..active`, the ones polled), packed for cheap polling.
    inbound: Vec<(Rank, Consumer)>,
    active: usize,
    /// The peer of each slot of our segment.
    slot_peer: Vec<Option<Rank>>,
    /// `announced` when the bits were last read.
    seen: u32,
    /// This process is registered for global membarriers: it may skip the
    /// fence after a write to a peer that sleeps through one, and it
    /// sleeps through one itself.
    light: bool,
    /// The node's cores share no cache (its profile is far): streams ask
    /// for their rings' lines ahead (see `ring::AHEAD_LINES`). (A rank
    /// that hears a record asks for the lines of its answer on any node:
    /// `Producer::prepare_next`.)
    ahead: bool,
}

impl ShmTransport {
    /// Creates this rank's segment for a node of `local_size` ranks.
    /// `membarrier`: use asymmetric barriers for wake-ups if the kernel can
    /// (see the module's documentation).
    pub(crate) fn new(
        size: u32,
        my_local: u32,
        local_size: u32,
        budget: usize,
        membarrier: bool,
    ) -> std::io::Result<Self> {
        let cap = ring_capacity(local_size, budget);
        let slots = local_size.max(1) as usize;
        let own = Segment::create(segment_size(slots, cap))?;
        // SAFETY: the header words are inside the fresh mapping, aligned, and
        // nobody else has the segment yet.
        unsafe {
            let b = own.as_ptr();
            (*(b.add(8) as *const AtomicU64)).store(cap as u64, Ordering::Relaxed);
            (*(b.add(16) as *const AtomicU64)).store(slots as u64, Ordering::Relaxed);
            (*(b as *const AtomicU64)).store(MAGIC, Ordering::Release);
        }
        let light = membarrier && crate::sys::membarrier::register();
        header(&own).barrier.store(light as u32, Ordering::Release);
        Ok(ShmTransport {
            own: std::sync::Arc::new(own),
            my_local,
            peers: (0..size).map(|_| None).collect(),
            local_peers: Vec::new(),
            inbound: Vec::new(),
            active: 0,
            slot_peer: vec![None; slots],
            seen: 0,
            light,
            ahead: false,
        })
    }

    /// Tunes the rings to the node's profile: on a far or remote node,
    /// streams ask for their lines ahead (see `ring::AHEAD_LINES`).
    pub(crate) fn set_profile(&mut self, profile: calibrate::Profile) {
        self.ahead = profile != calibrate::Profile::Close;
        for (_, c) in &mut self.inbound {
            c.set_prefetch_ahead(self.ahead);
        }
    }

    /// What peers put in their card to reach us.
    pub(crate) fn addr(&self) -> ShmAddr {
        ShmAddr {
            pid: std::process::id(),
            fd: self.own.fd(),
            size: self.own.len(),
            local_rank: self.my_local,
        }
    }

    fn own_cap(&self) -> usize {
        word(&self.own, 8) as usize
    }

    /// Declares `peer` a shared-memory peer reachable at `addr`.
    pub(crate) fn add_peer(&mut self, peer: Rank, addr: ShmAddr) -> Result<(), LinkError> {
        let cap = self.own_cap();
        let slots = word(&self.own, 16) as usize;
        if addr.local_rank as usize >= slots || addr.local_rank == self.my_local {
            return Err(LinkError(format!(
                "rank {peer}: invalid local rank {}",
                addr.local_rank
            )));
        }
        let ring = ring_in(&self.own, slots, addr.local_rank as usize, cap)
            .ok_or_else(|| LinkError("ring outside the segment".into()))?;
        let Some(entry) = self.peers.get_mut(peer as usize) else {
            return Err(LinkError(format!("no rank {peer}")));
        };
        if entry.is_some() || self.slot_peer[addr.local_rank as usize].is_some() {
            return Err(LinkError(format!("rank {peer} added twice")));
        }
        *entry = Some(Peer {
            addr,
            out: None,
            inbound: self.inbound.len(),
            primed: false,
            heard: true,
        });
        // Our segment is fresh and only we read our rings: each head is 0.
        let mut consumer = Consumer::fresh(ring);
        consumer.set_prefetch_ahead(self.ahead);
        self.inbound.push((peer, consumer));
        self.local_peers.push(peer);
        let slot = addr.local_rank as usize;
        self.slot_peer[slot] = Some(peer);
        // It may have announced itself before we knew it (a later
        // announcement bumps the count, which `refresh` notices).
        if announce_word(&self.own, slots, slot / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (slot % 64)) != 0)
        {
            self.activate(peer);
        }
        Ok(())
    }

    /// Starts polling the rings of senders that announced themselves since
    /// the last look (one load when none did).
    #[inline]
    fn refresh(&mut self) {
        let now = announced(&self.own).load(Ordering::Acquire);
        if now != self.seen {
            self.seen = now;
            self.activate_announced();
        }
    }

    #[cold]
    fn activate_announced(&mut self) {
        let slots = self.slot_peer.len();
        for i in 0..slots.div_ceil(64) {
            let Some(w) = announce_word(&self.own, slots, i) else {
                return;
            };
            let mut bits = w.load(Ordering::Acquire);
            while bits != 0 {
                let slot = i * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // Bits of slots we have no peer for (yet) wait for `add_peer`.
                if let Some(Some(peer)) = self.slot_peer.get(slot) {
                    self.activate(*peer);
                }
            }
        }
    }

    /// Moves `peer`'s consumer into the polled part of `inbound`.
    fn activate(&mut self, peer: Rank) {
        let Some(Some(p)) = self.peers.get(peer as usize) else {
            return;
        };
        let at = p.inbound;
        if at < self.active {
            return;
        }
        let to = self.active;
        self.inbound.swap(at, to);
        self.active += 1;
        for i in [at, to] {
            let moved = self.inbound[i].0;
            if let Some(Some(q)) = self.peers.get_mut(moved as usize) {
                q.inbound = i;
            }
        }
    }

    /// How many senders this rank polls (those that announced themselves).
    #[cfg(test)]
    fn polled(&self) -> usize {
        self.active
    }

    /// Whether `peer` is reached through shared memory.
    pub(crate) fn has_peer(&self, peer: Rank) -> bool {
        self.peers.get(peer as usize).is_some_and(Option::is_some)
    }

    /// The process id of a shared-memory peer (for cross-memory attach).
    pub(crate) fn pid(&self, peer: Rank) -> Option<u32> {
        self.peers.get(peer as usize)?.as_ref().map(|p| p.addr.pid)
    }

    /// Local peers whose rings in our segment hold bytes (or are corrupt:
    /// reading them reports it).
    pub(crate) fn readable(&mut self, out: &mut Vec<Rank>) {
        self.refresh();
        for (p, c) in &mut self.inbound[..self.active] {
            if c.ready() {
                out.push(*p);
            }
        }
    }

    /// Unread bytes of the record at the front of `peer`'s ring (0: none
    /// yet, or no ring): lets a reader size its read to what arrived.
    pub(crate) fn pending(&mut self, peer: Rank) -> Result<usize, LinkError> {
        self.look_at(peer, Consumer::pending)
    }

    /// The first unread bytes of the record at the front of `peer`'s ring,
    /// left unread (see `Consumer::peek`); 0 when none.
    pub(crate) fn peek(&mut self, peer: Rank, dst: &mut [u8]) -> Result<usize, LinkError> {
        self.look_at(peer, |ring| ring.peek(dst))
    }

    /// Runs `look` on `peer`'s inbound ring without reading from it (0 if
    /// it has none).
    #[inline]
    fn look_at(
        &mut self,
        peer: Rank,
        look: impl FnOnce(&mut Consumer) -> Result<usize, Corrupt>,
    ) -> Result<usize, LinkError> {
        let Some(Some(p)) = self.peers.get(peer as usize) else {
            return Ok(0);
        };
        let Some((_, inbound)) = self.inbound.get_mut(p.inbound) else {
            return Ok(0);
        };
        look(inbound).map_err(|_| corrupted(peer))
    }

    /// Whether `peer`'s ring in our segment holds bytes (false for a rank
    /// that is not a shared-memory peer).
    #[inline]
    pub(crate) fn ready(&self, peer: Rank) -> bool {
        let Some(Some(p)) = self.peers.get(peer as usize) else {
            return false;
        };
        self.inbound.get(p.inbound).is_some_and(|(_, c)| c.ready())
    }

    /// Whether any ring in our segment holds bytes: the cheap check a
    /// spinning rank makes.
    pub(crate) fn any_ready(&mut self) -> bool {
        self.refresh();
        self.inbound[..self.active]
            .iter_mut()
            .any(|(_, c)| c.ready())
    }

    /// Peers whose segments we have mapped (links in use).
    pub(crate) fn mapped_peers(&self) -> Vec<Rank> {
        self.local_peers
            .iter()
            .copied()
            .filter(|&p| {
                matches!(
                    self.peers.get(p as usize),
                    Some(Some(Peer { out: Some(_), .. }))
                )
            })
            .collect()
    }

    /// Maps `peer`'s segment and takes our ring in it, before our first
    /// write to it (nothing to do once mapped). On success `peer`'s
    /// `out` is set: [`ShmTransport::write_first`] relies on it.
    fn map_peer(&mut self, peer: Rank) -> Result<(), LinkError> {
        let my_local = self.my_local as usize;
        let Some(Some(p)) = self.peers.get_mut(peer as usize) else {
            return Err(LinkError(format!(
                "rank {peer} is not a shared-memory peer"
            )));
        };
        if p.out.is_none() {
            let a = p.addr;
            let seg = Segment::open_peer(a.pid, a.fd, a.size)
                .map_err(|e| LinkError(format!("cannot map the segment of rank {peer}: {e}")))?;
            if seg.len() < HEADER || word(&seg, 0) != MAGIC {
                return Err(LinkError(format!("rank {peer}: not a Courier segment")));
            }
            let cap = word(&seg, 8) as usize;
            let slots = word(&seg, 16) as usize;
            if !cap.is_power_of_two()
                || cap < 128
                || my_local >= slots
                || seg.len() != segment_size(slots, cap)
            {
                return Err(LinkError(format!("rank {peer}: malformed segment header")));
            }
            let ring = ring_in(&seg, slots, my_local, cap)
                .ok_or_else(|| LinkError("ring outside the segment".into()))?;
            let prod = Producer::new(ring);
            // The ring is ours to fill: fault it in once, now, rather than
            // page by page during the first lap of traffic.
            seg.prefault(ring_offset(slots, my_local, cap), RingPtr::footprint(cap));
            // Announce ourselves before the first write, so the owner polls
            // our ring from now on (see the module's documentation).
            let w = announce_word(&seg, slots, my_local / 64)
                .ok_or_else(|| LinkError(format!("rank {peer}: malformed segment header")))?;
            w.fetch_or(1 << (my_local % 64), Ordering::SeqCst);
            announced(&seg).fetch_add(1, Ordering::SeqCst);
            p.out = Some((seg, prod));
        }
        Ok(())
    }

    /// Prepares to sleep: announces it, so senders will wake us. Returns the
    /// wake word's value to pass to [`ShmTransport::sleep`], after which the
    /// caller must check its rings once more.
    pub(crate) fn prepare_sleep(&mut self) -> u32 {
        let h = header(&self.own);
        let seq = h.wake.load(Ordering::SeqCst);
        h.sleeping.store(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.light && !crate::sys::membarrier::global() {
            // Never seen after a successful registration; if it happens,
            // senders fence from now on. One that read the old flag just
            // now may have been missed: this sleep is cut short instead.
            self.light = false;
            h.barrier.store(0, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            h.sleeping.store(0, Ordering::SeqCst);
            return seq.wrapping_sub(1);
        }
        seq
    }

    /// Cancels a `prepare_sleep` that found work.
    pub(crate) fn cancel_sleep(&self) {
        header(&self.own).sleeping.store(0, Ordering::SeqCst);
    }

    /// A handle to sleep on this rank's doorbell after `prepare_sleep`,
    /// usable without borrowing the transport (a thread sleeps with the
    /// driver unlocked, so that the rank's other threads can work).
    pub(crate) fn sleeper(&self) -> Sleeper {
        Sleeper(self.own.clone())
    }

    /// Rings this rank's own doorbell: a thread of this rank asleep on it
    /// (see [`ShmTransport::sleeper`]) wakes up.
    pub(crate) fn wake_own(&self) {
        let h = header(&self.own);
        h.wake.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(h.wake);
    }
}

/// This rank's doorbell, to sleep on without the transport (see
/// [`ShmTransport::sleeper`]); it keeps the segment mapped.
#[derive(Debug)]
pub(crate) struct Sleeper(std::sync::Arc<Segment>);

impl Sleeper {
    /// Sleeps until a sender (or [`ShmTransport::wake_own`]) wakes us or
    /// `timeout` passes; `seq` is what `prepare_sleep` returned.
    pub(crate) fn sleep(&self, seq: u32, timeout: Duration) {
        let h = header(&self.0);
        futex::wait(h.wake, seq, timeout);
        h.sleeping.store(0, Ordering::SeqCst);
    }
}

impl Transport for ShmTransport {
    fn try_write(&mut self, peer: Rank, bufs: &[IoSlice<'_>]) -> Result<usize, LinkError> {
        self.write_small(
            peer,
            bufs.first().map_or(&[][..], |b| &b[..]),
            bufs.get(1).map_or(&[][..], |b| &b[..]),
        )
    }

    fn try_read(&mut self, peer: Rank, buf: &mut [u8]) -> Result<usize, LinkError> {
        self.read_with(peer, |ring| ring.read(buf))
    }
}

/// The error for a peer whose ring (its or ours) broke the ring's rules.
fn corrupted(peer: Rank) -> LinkError {
    LinkError(format!("rank {peer} corrupted its shared ring"))
}

/// After a write into a peer's ring: wakes the peer if it sleeps (see the
/// module's documentation on waiting).
#[inline]
fn wake_reader(seg: &Segment, light: bool) {
    let h = header(seg);
    if light && h.barrier.load(Ordering::Relaxed) == 1 {
        // The receiver's membarrier stands in for our fence; keep only the
        // compiler from moving the load above the store.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
    if h.sleeping.load(Ordering::SeqCst) != 0 {
        h.wake.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(h.wake);
    }
}

impl ShmTransport {
    /// [`Transport::try_write`] of `head` then `body` (the general write
    /// comes here too), straight into the peer's ring as one record; as one
    /// line's record when they fit one ([`ring::LINE_RECORD`] bytes: the
    /// small messages that make most of the traffic). The peer's segment is
    /// mapped on the first write. Returns the bytes written: all of a
    /// line's, or a prefix of a larger record's (up to the ring's cap on a
    /// record, a quarter of it; none when the ring is full).
    ///
    /// One record whatever the size: the reader takes a message in one
    /// record straight into the receive buffer. A conversation's medium
    /// messages used to go in several records, so the reader could copy
    /// one out while the writer copied the next in (1–2 KiB on a far node,
    /// 4–8 KiB on a close one). Since the reader takes whole records
    /// straight and a rank that hears a record asks for its answer's
    /// lines, that costs more than it overlaps: one record ÷ split,
    /// latency, 2 ranks, 30 and 12 interleaved rounds (the vCPUs sharing
    /// caches, in between, and 4 rounds not): far profile 1 KiB 0.59–0.66,
    /// 2–8 KiB 0.91–1.06; close profile 4 KiB 0.91–0.98, 6 KiB 0.77 (10
    /// rounds); `bibw` 1–8 KiB 0.93–1.40, where a copy of the old build
    /// read 0.95–1.05.
    ///
    /// Always inlined: with `try_write` and [`ShmTransport::write_first`]
    /// calling it too, `#[inline]` left it out of line, 14 instructions
    /// more per 8-byte send (callgrind).
    #[inline(always)]
    pub(crate) fn write_small(
        &mut self,
        peer: Rank,
        head: &[u8],
        body: &[u8],
    ) -> Result<usize, LinkError> {
        let (light, ahead) = (self.light, self.ahead);
        let Some(Some(Peer {
            out: Some((seg, prod)),
            heard,
            ..
        })) = self.peers.get_mut(peer as usize)
        else {
            return self.write_first(peer, head, body);
        };
        let heard = std::mem::replace(heard, false);
        prod.set_streaming(ahead && !heard);
        let n = prod.write_line(head, body).map_err(|_| corrupted(peer))?;
        if n > 0 {
            wake_reader(seg, light);
        }
        Ok(n)
    }

    /// [`ShmTransport::write_small`]'s first write to `peer`: maps its
    /// segment, then writes (out of line, so that the writes after it stay
    /// inlined where they are made).
    #[cold]
    #[inline(never)]
    fn write_first(&mut self, peer: Rank, head: &[u8], body: &[u8]) -> Result<usize, LinkError> {
        self.map_peer(peer)?;
        self.write_small(peer, head, body)
    }

    /// Reads whole records from `peer`'s ring into `buf`, as many as fit,
    /// stopping before one of more than `max_record` bytes (see
    /// `Consumer::read_records`).
    pub(crate) fn read_records(
        &mut self,
        peer: Rank,
        buf: &mut [u8],
        max_record: usize,
    ) -> Result<usize, LinkError> {
        self.read_with(peer, |ring| ring.read_records(buf, max_record))
    }

    /// Takes up to `max` whole records from `peer`'s ring
    /// while `take` accepts them (see `Consumer::take_up_to`).
    #[inline]
    pub(crate) fn take_up_to(
        &mut self,
        peer: Rank,
        max: usize,
        take: impl FnMut(&[u8; TAKE_HEAD], RecordBody<'_>) -> bool,
    ) -> Result<Taken, LinkError> {
        let mut drained = false;
        let count = self.read_with(peer, |ring| {
            let taken = ring.take_up_to(max, take)?;
            drained = taken.drained;
            Ok(taken.count)
        })?;
        Ok(Taken { count, drained })
    }

    /// Runs `read` on `peer`'s inbound ring (0 bytes if it has none).
    #[inline]
    fn read_with(
        &mut self,
        peer: Rank,
        read: impl FnOnce(&mut Consumer) -> Result<usize, Corrupt>,
    ) -> Result<usize, LinkError> {
        let Some(Some(p)) = self.peers.get_mut(peer as usize) else {
            return Ok(0);
        };
        if !p.primed {
            // First bytes from this peer: map its (already faulted-in) ring
            // pages into our page table at once, not one fault per page.
            p.primed = true;
            let cap = word(&self.own, 8) as usize;
            let slots = self.slot_peer.len();
            self.own.prefault(
                ring_offset(slots, p.addr.local_rank as usize, cap),
                RingPtr::footprint(cap),
            );
        }
        let Some((_, inbound)) = self.inbound.get_mut(p.inbound) else {
            return Ok(0);
        };
        // Written to them since we last heard from them: what comes is
        // likely the answer this rank waits for.
        inbound.set_answer(!p.heard);
        let n = read(inbound).map_err(|_| corrupted(peer))?;
        if n > 0 && !p.heard {
            // The first record since our last write to them: an answer is
            // likely to follow, so ask for the lines it will take now (see
            // `Producer::prepare_next`). Not again until we have written:
            // behind every record of a stream the request would take the
            // line a writer polls for our answer back from it (`bw` 1 B –
            // 4 KiB level either way, 6 rounds with shared caches).
            if let Some((_, prod)) = p.out.as_ref() {
                prod.prepare_next(inbound.last_lines());
            }
        }
        p.heard |= n > 0;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_follow_the_budget() {
        assert_eq!(ring_capacity(2, 4 << 20), 1 << 20);
        assert_eq!(ring_capacity(8, 4 << 20), 512 << 10);
        assert_eq!(ring_capacity(64, 4 << 20), 64 << 10);
        assert_eq!(ring_capacity(1024, 4 << 20), 16 << 10);
        assert_eq!(ring_capacity(1, 4 << 20), 1 << 20);
    }

    /// Two "ranks" in one process, ranks 0 and 1 of a 2-rank node, mapping
    /// each other's segments through /proc/self.
    fn pair() -> (ShmTransport, ShmTransport) {
        let mut a = ShmTransport::new(2, 0, 2, 64 << 10, true).unwrap();
        let mut b = ShmTransport::new(2, 1, 2, 64 << 10, true).unwrap();
        a.add_peer(1, b.addr()).unwrap();
        b.add_peer(0, a.addr()).unwrap();
        (a, b)
    }

    #[test]
    fn small_writes_go_whole_into_one_record_each() {
        let (mut a, mut b) = pair();
        let head = [7u8; 16];
        let body: Vec<u8> = (0..4000u32).map(|i| (i % 249) as u8).collect();
        let mut got = vec![0u8; 4096];
        // One line (up to 40 payload bytes with the 16-byte head), two
        // lines, several; the first write maps the peer's ring.
        for len in [0, 8, 40, 41, 300, 4000] {
            let total = head.len() + len;
            assert_eq!(a.write_small(1, &head, &body[..len]).unwrap(), total);
            assert_eq!(b.pending(0).unwrap(), total, "{len} bytes");
            assert_eq!(b.try_read(0, &mut got).unwrap(), total);
            assert_eq!((&got[..16], &got[16..total]), (&head[..], &body[..len]));
        }
        // Into a full ring: a line goes whole or not at all, a larger
        // record as a prefix; what was written reads back in order.
        let mut sent = Vec::new();
        loop {
            let n = a.write_small(1, &head, &body[..300]).unwrap();
            let all: Vec<u8> = head.iter().chain(&body[..300]).copied().collect();
            sent.extend_from_slice(&all[..n]);
            if n < all.len() {
                break;
            }
        }
        assert_eq!(a.write_small(1, &head, &body[..8]).unwrap(), 0);
        let mut back = vec![0u8; sent.len() + 1];
        let mut off = 0;
        while off < sent.len() {
            let n = b.try_read(0, &mut back[off..]).unwrap();
            assert!(n > 0);
            off += n;
        }
        assert_eq!(&back[..off], &sent[..]);
    }

    #[test]
    fn every_write_goes_in_one_record_up_to_a_quarter_of_the_ring() {
        let (mut a, mut b) = pair();
        let head = [9u8; 16];
        let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut got = vec![0u8; head.len() + body.len()];
        // The ring of `pair` holds 64 KiB: records of up to 16 KiB, their
        // 8-byte header included.
        let cap = (16 << 10) - 8;
        for profile in [
            calibrate::Profile::Far,
            calibrate::Profile::Close,
            calibrate::Profile::Remote,
        ] {
            a.set_profile(profile);
            for answered in [true, false] {
                for len in [
                    300, 1000, 1025, 2048, 4096, 6000, 8192, 9000, 16_000, 20_000,
                ] {
                    if answered {
                        // The peer answers first: a conversation.
                        assert_eq!(b.try_write(0, &[IoSlice::new(b"ack")]).unwrap(), 3);
                        assert_eq!(a.try_read(1, &mut got).unwrap(), 3);
                    }
                    let total = head.len() + len;
                    let what = format!("{profile:?}, answered {answered}, {len} bytes");
                    let n = a
                        .try_write(1, &[IoSlice::new(&head), IoSlice::new(&body[..len])])
                        .unwrap();
                    assert_eq!(n, total.min(cap), "{what}");
                    assert_eq!(b.pending(0).unwrap(), n, "{what}");
                    let rest = a.try_write(1, &[IoSlice::new(&body[n - head.len()..len])]);
                    assert_eq!(rest.unwrap(), total - n, "{what}");
                    let mut off = 0;
                    while off < total {
                        let k = b.try_read(0, &mut got[off..total]).unwrap();
                        assert!(k > 0, "{what}");
                        off += k;
                    }
                    assert_eq!(
                        (&got[..16], &got[16..total]),
                        (&head[..], &body[..len]),
                        "{what}"
                    );
                }
            }
        }
    }

    #[test]
    fn two_transports_in_one_process_exchange_bytes() {
        let (mut a, mut b) = pair();
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut got = Vec::new();
        let mut off = 0;
        let mut buf = vec![0u8; 7000];
        while got.len() < msg.len() {
            if off < msg.len() {
                off += a.try_write(1, &[IoSlice::new(&msg[off..])]).unwrap();
            }
            let mut ready = Vec::new();
            b.readable(&mut ready);
            if ready.contains(&0) {
                let n = b.try_read(0, &mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got, msg);
        assert_eq!(a.mapped_peers(), vec![1]);
        assert!(b.mapped_peers().is_empty());
    }

    #[test]
    fn only_senders_that_announced_themselves_are_polled() {
        // Ranks 0, 1, 2 of a 3-rank node.
        let mut t: Vec<ShmTransport> = (0..3)
            .map(|l| ShmTransport::new(3, l, 3, 64 << 10, true).unwrap())
            .collect();
        // Rank 0 sends to rank 2 before rank 2 has added it as a peer.
        let addr2 = t[2].addr();
        t[0].add_peer(2, addr2).unwrap();
        assert_eq!(t[0].try_write(2, &[IoSlice::new(b"early")]).unwrap(), 5);
        for (me, other) in [(1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2)] {
            if (me, other) != (0, 2) {
                let a = t[other].addr();
                t[me].add_peer(other as Rank, a).unwrap();
            }
        }
        let ready = |t: &mut ShmTransport| {
            let mut v = Vec::new();
            t.readable(&mut v);
            v
        };
        assert_eq!(ready(&mut t[2]), vec![0]);
        assert_eq!(
            t[2].polled(),
            1,
            "rank 1 never sent: its ring is not polled"
        );
        let mut buf = [0u8; 16];
        assert_eq!(t[2].try_read(0, &mut buf).unwrap(), 5);
        assert!(ready(&mut t[2]).is_empty());
        // Rank 1's first message announces it.
        assert_eq!(t[1].try_write(2, &[IoSlice::new(b"late")]).unwrap(), 4);
        assert_eq!(ready(&mut t[2]), vec![1]);
        assert_eq!(t[2].polled(), 2);
        assert!(t[2].any_ready());
        assert_eq!(t[2].try_read(1, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"late");
        // Nobody sent to rank 0 or 1.
        assert_eq!((t[0].polled(), t[1].polled()), (0, 0));
        assert!(!t[0].any_ready());
    }

    #[test]
    fn a_sleeper_is_woken_by_its_own_rank() {
        let (_a, mut b) = pair();
        let seq = b.prepare_sleep();
        let sleeper = b.sleeper();
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            sleeper.sleep(seq, Duration::from_secs(20));
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        b.wake_own();
        let slept = t.join().unwrap();
        assert!(slept < Duration::from_secs(10), "slept {slept:?}");
    }

    #[test]
    fn a_sleeper_is_woken_by_a_write() {
        let (mut a, mut b) = pair();
        let t = std::thread::spawn(move || {
            let seq = b.prepare_sleep();
            let start = std::time::Instant::now();
            b.sleeper().sleep(seq, Duration::from_secs(20));
            (start.elapsed(), b)
        });
        std::thread::sleep(Duration::from_millis(100));
        // The write sees `sleeping` and wakes the futex.
        assert_eq!(a.try_write(1, &[IoSlice::new(b"x")]).unwrap(), 1);
        let (slept, _b) = t.join().unwrap();
        assert!(
            slept < Duration::from_secs(10),
            "not woken: slept {slept:?}"
        );
    }

    /// A writer races a reader that sleeps whenever its ring is empty: a
    /// lost wake-up would leave the reader asleep until its (long) timeout.
    /// Run in both modes: with fences on both sides, and with the sleeper's
    /// membarrier standing in for the writer's fence. (It catches a protocol
    /// that misses wake-ups in ordinary interleavings; the store-buffer
    /// window the barriers close is too narrow to be hit on demand.)
    #[test]
    fn no_wake_up_is_lost_when_writes_race_sleeps() {
        for membarrier in [false, true] {
            let mut a = ShmTransport::new(2, 0, 2, 64 << 10, membarrier).unwrap();
            let mut b = ShmTransport::new(2, 1, 2, 64 << 10, membarrier).unwrap();
            a.add_peer(1, b.addr()).unwrap();
            b.add_peer(0, a.addr()).unwrap();
            const N: usize = 20_000;
            let reader = std::thread::spawn(move || {
                let (mut got, mut worst, mut slept) = (0, Duration::ZERO, 0);
                let mut buf = [0u8; 256];
                while got < N {
                    let seq = b.prepare_sleep();
                    if b.any_ready() {
                        b.cancel_sleep();
                    } else {
                        let start = std::time::Instant::now();
                        b.sleeper().sleep(seq, Duration::from_secs(5));
                        worst = worst.max(start.elapsed());
                        slept += 1;
                    }
                    while let Ok(n @ 1..) = b.try_read(0, &mut buf) {
                        got += n;
                    }
                }
                (worst, slept)
            });
            let mut x = 12345u32;
            for _ in 0..N {
                // A pseudo-random pause, so writes land at every point of
                // the reader's way to sleep.
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                for _ in 0..x % 64 {
                    std::hint::spin_loop();
                }
                while a.try_write(1, &[IoSlice::new(b"x")]).unwrap() == 0 {}
            }
            let (worst, slept) = reader.join().unwrap();
            assert!(
                worst < Duration::from_secs(2),
                "membarrier {membarrier}: a wake-up was lost ({worst:?} asleep; {slept} sleeps)"
            );
        }
    }
}
