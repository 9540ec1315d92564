//! The request slab: ids, slots, and the state of each send and receive.
//!
//! A request lives in a slot from `alloc` until `take_result`; its id is the
//! slot index plus the slot's generation, which is bumped when the slot is
//! freed, so a stale id (kept by a caller, or named on the wire by a peer)
//! never reaches the request that reuses the slot.

use super::matching::Pattern;
use crate::ids::Rank;

/// Names a request: slot index and generation, so stale ids from the wire are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ReqId(u64);

impl ReqId {
    /// An id no request ever has (the slab never reaches that slot).
    pub(crate) const NONE: ReqId = ReqId(u64::MAX);
    /// Another id no request ever has (nor the slot before the last).
    pub(crate) const SPENT: ReqId = ReqId(u64::MAX - 1);

    /// The index bit of a receive taken as posted (`Progress::take_at_post`,
    /// whose status the driver keeps: see `progress::notes`); the slab
    /// never reaches it.
    const TAKEN: u32 = 1 << 31;

    pub(crate) fn new(index: u32, gen: u32) -> Self {
        ReqId((u64::from(gen) << 32) | u64::from(index))
    }
    /// The id of the `slot`th status of receives taken as posted, in its
    /// generation `gen` (below 2^31, so that [`ReqId::NONE`] and
    /// [`ReqId::SPENT`] are never such ids).
    pub(crate) fn taken(slot: u32, gen: u32) -> Self {
        ReqId::new(slot | Self::TAKEN, gen & !Self::TAKEN)
    }
    /// Whether this names a receive taken as posted (see [`ReqId::taken`]).
    #[inline]
    pub(crate) fn is_taken(self) -> bool {
        // The index's bit set, the generation's clear: one mask.
        const MASK: u64 = (1 << 63) | (1 << 31);
        self.0 & MASK == 1 << 31
    }
    /// The slot of a receive taken as posted.
    pub(crate) fn taken_slot(self) -> usize {
        self.index() & !(Self::TAKEN as usize)
    }
    pub(crate) fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The id as a peer names it in frames.
    pub(crate) fn to_wire(self) -> u64 {
        self.0
    }
    pub(super) fn from_wire(x: u64) -> Self {
        ReqId(x)
    }
}

/// What a completed receive (or probe) learned about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MsgInfo {
    pub(crate) source: Rank,
    pub(crate) tag: u32,
    pub(crate) len: usize,
}

impl MsgInfo {
    /// What a send (or a request complete when posted) reports.
    pub(crate) const EMPTY: MsgInfo = MsgInfo {
        source: 0,
        tag: 0,
        len: 0,
    };
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReqError {
    /// The matched message (from `source`, with `tag`) has `incoming`
    /// bytes; the receive holds `capacity`.
    Truncated {
        source: Rank,
        tag: u32,
        capacity: usize,
        incoming: usize,
    },
    PeerLost {
        peer: Rank,
        reason: String,
    },
}

/// A send in flight.
#[derive(Debug)]
pub(super) struct SendState {
    pub(super) peer: Rank,
    pub(super) len: usize,
    pub(super) phase: SendPhase,
}

/// Where a send stands. Eager sends complete once their payload has left
/// the user's buffer (and, if synchronous, the receiver has matched);
/// rendezvous sends once the receiver has the data (FIN, or DATA written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendPhase {
    /// The payload travels with the envelope. `written`: it has left the
    /// user's buffer; `need_ack`: a synchronous send still waits for
    /// SYNC_ACK (which may come before or after the write completes).
    Eager { written: bool, need_ack: bool },
    /// Only the envelope (RTS) went out.
    Rendezvous(Rdv),
}

/// The sender's side of a rendezvous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rdv {
    /// RTS queued or sent; no answer yet.
    Announced,
    /// A CTS_COOP arrived and our part of the copy was queued; the receiver
    /// answers FIN (done) or CTS (fall back to DATA).
    Pushed,
    /// A CTS arrived: DATA is queued; the send completes once it is written.
    Data,
}

impl SendState {
    /// Whether this send still needs `peer`'s link (fails when it is lost).
    pub(super) fn needs_peer(&self) -> bool {
        match self.phase {
            SendPhase::Eager { written, need_ack } => !written || need_ack,
            SendPhase::Rendezvous(_) => true,
        }
    }
}

/// A receive in flight.
#[derive(Debug)]
pub(super) struct RecvState {
    pub(super) pattern: Pattern,
    pub(super) capacity: usize,
    pub(super) phase: RecvPhase,
}

#[derive(Debug)]
pub(super) enum RecvPhase {
    Posted,
    /// Matched; payload bytes are arriving from `info.source`.
    Receiving {
        info: MsgInfo,
        rendezvous: bool,
        /// The sender's request (rendezvous), for FIN or a fallback CTS.
        sreq: u64,
        /// Parts of a single-copy transfer still outstanding (pull and push).
        parts: u8,
        /// A part of the single-copy transfer failed: fall back to DATA.
        failed: bool,
        /// The message's address in the sender's memory (single copy), or 0.
        addr: u64,
        /// A CTS_COOP gave the sender this receive's address and its PUSHED
        /// has not arrived: the sender may still write into the buffer.
        push_pending: bool,
    },
}

#[derive(Debug)]
pub(super) enum ReqKind {
    Send(SendState),
    Recv(RecvState),
}

#[derive(Debug)]
pub(super) struct ReqEntry {
    pub(super) kind: ReqKind,
    pub(super) result: Option<Result<MsgInfo, ReqError>>,
}

#[derive(Debug, Default)]
struct Slot {
    gen: u32,
    entry: Option<ReqEntry>,
}

/// Every request of one engine, by slot.
#[derive(Debug, Default)]
pub(super) struct Requests {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Requests {
    /// A new request in a free slot (reused last-in first-out).
    #[inline]
    pub(super) fn alloc(&mut self, kind: ReqKind) -> ReqId {
        let entry = ReqEntry { kind, result: None };
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.entry = Some(entry);
            ReqId::new(index, slot.gen)
        } else {
            let index = self.slots.len() as u32;
            self.slots.push(Slot {
                gen: 0,
                entry: Some(entry),
            });
            ReqId::new(index, 0)
        }
    }

    /// The live request `id` (not a stale id of its slot).
    pub(super) fn get(&self, id: ReqId) -> Option<&ReqEntry> {
        let slot = self.slots.get(id.index())?;
        if slot.gen != id.gen() {
            return None;
        }
        slot.entry.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: ReqId) -> Option<&mut ReqEntry> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.gen != id.gen() {
            return None;
        }
        slot.entry.as_mut()
    }

    /// A receive of `id` still running (no result yet).
    pub(super) fn recv_mut(&mut self, id: ReqId) -> Option<&mut RecvState> {
        match self.get_mut(id)? {
            ReqEntry {
                kind: ReqKind::Recv(r),
                result: None,
            } => Some(r),
            _ => None,
        }
    }

    /// A send of `id` still running (no result yet).
    pub(super) fn send_mut(&mut self, id: ReqId) -> Option<&mut SendState> {
        match self.get_mut(id)? {
            ReqEntry {
                kind: ReqKind::Send(s),
                result: None,
            } => Some(s),
            _ => None,
        }
    }

    /// Sets the outcome of `id` (it then counts as done).
    #[inline]
    pub(super) fn complete(&mut self, id: ReqId, result: Result<MsgInfo, ReqError>) {
        if let Some(e) = self.get_mut(id) {
            e.result = Some(result);
        }
    }

    /// Whether the request has finished (successfully or not); an unknown
    /// or stale id counts as finished.
    pub(crate) fn is_done(&self, id: ReqId) -> bool {
        self.get(id).is_none_or(|e| e.result.is_some())
    }

    /// Whether `id` names a request not yet collected with `take_result`.
    pub(crate) fn is_live(&self, id: ReqId) -> bool {
        self.get(id).is_some()
    }

    /// Removes a finished request and returns its outcome; `None` while it
    /// runs (or for a stale id). Frees the slot under a new generation.
    #[inline]
    pub(super) fn take_result(&mut self, id: ReqId) -> Option<Result<MsgInfo, ReqError>> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.gen != id.gen() {
            return None;
        }
        // Only the result moves out (the entry is mostly its kind, which a
        // finished request no longer needs).
        let result = slot.entry.as_mut()?.result.take()?;
        slot.entry = None;
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(id.index() as u32);
        Some(result)
    }

    /// Every request still running, with its id.
    pub(super) fn running(&self) -> impl Iterator<Item = (ReqId, &ReqKind)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.entry {
                Some(ReqEntry { kind, result: None }) => Some((ReqId::new(i as u32, s.gen), kind)),
                _ => None,
            })
    }
}
