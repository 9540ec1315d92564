//! The point-to-point protocol engine: matching and the eager/rendezvous
//! state machines, with no I/O at all (sans-IO, in the manner of quinn-proto).
//!
//! The engine never touches sockets, clocks, threads, raw pointers or user
//! buffers. Requests are named by [`ReqId`]; the driver (`progress`) owns the
//! buffers and moves bytes. The driver pushes input with `handle_*` calls and
//! pulls output with `poll_*` calls:
//!
//! * [`Engine::post_send`] / [`Engine::post_recv`] start requests.
//! * [`Engine::handle_frame`] takes one validated header from a peer and says
//!   where its payload (if any) goes: into a request's buffer or into the
//!   engine's staging buffer for an unexpected message.
//! * [`Engine::handle_payload_done`] reports that the payload is all there.
//! * [`Engine::handle_written`] reports that a frame carrying a send's payload
//!   has left the sender's buffer (written to the link or copied away).
//! * [`Engine::poll_transmit`] yields frames to send, in per-peer order.
//! * [`Engine::poll_delivery`] yields buffered message bytes that the driver
//!   must copy into a request's buffer (an unexpected eager message matched).
//! * [`Engine::poll_pull`] yields single-copy pulls: a matched RTS that
//!   carried the sender's buffer address; the driver copies the message out
//!   of the sender's memory and reports [`Engine::handle_pull_done`].
//! * [`Engine::take_result`] collects a finished request.
//!
//! Ordering: each peer is one FIFO link and both queues are scanned in arrival
//! order, so messages between one pair on one context never overtake.
//!
//! Truncation: a receive that matches a message larger than its buffer fails
//! with [`ReqError::Truncated`] and the message stays queued for a later receive.

pub(crate) mod matching;

#[cfg(test)]
mod tests;

use crate::wire::Frame;
use matching::{Envelope, OrderedQueue, Pattern};
use std::collections::VecDeque;

/// A world rank, as the engine sees peers.
pub(crate) type Rank = u32;

/// Names a request: slot index and generation, so stale ids from the wire are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ReqId(u64);

impl ReqId {
    pub(crate) fn new(index: u32, gen: u32) -> Self {
        ReqId((u64::from(gen) << 32) | u64::from(index))
    }
    pub(crate) fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub(crate) fn to_wire(self) -> u64 {
        self.0
    }
    fn from_wire(x: u64) -> Self {
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

/// A protocol violation by a peer; the driver closes that link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ProtocolError(pub(crate) String);

/// Where the payload of the frame just handled goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Into the buffer of this receive request, from offset 0.
    Req(ReqId),
    /// Into the engine's staging buffer for this peer ([`Engine::staging_mut`]).
    Staging,
}

/// The payload source of a frame to transmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    None,
    /// The whole buffer of this send request.
    Send(ReqId),
    /// No payload, but the driver writes the address of this send request's
    /// buffer into the RTS (`addr`), offering a single-copy pull.
    Advertise(ReqId),
    /// No payload, but the driver writes the address of this receive
    /// request's buffer into the CTS_COOP (`addr`), for the sender's push.
    AdvertiseRecv(ReqId),
}

/// A single-copy transfer for the driver: copy `len` bytes from address
/// `addr` of `peer`'s memory into receive `rreq`'s buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pull {
    pub(crate) peer: Rank,
    pub(crate) rreq: ReqId,
    /// Address of the whole message in the peer's memory.
    pub(crate) addr: u64,
    /// Part to copy: bytes `offset..offset + len` of the message.
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// The sender's part of a cooperative copy: write bytes `offset..offset+len`
/// of send `sreq`'s buffer to address `addr + offset` of `peer`'s memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Push {
    pub(crate) peer: Rank,
    pub(crate) sreq: ReqId,
    pub(crate) rreq: u64,
    pub(crate) addr: u64,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// Where a cooperative copy splits a message of `len` bytes when the
/// receiver copies `share` percent of it: the receiver pulls `..split`, the
/// sender pushes `split..` (page aligned; 0 when a part would be empty).
pub(crate) fn coop_split(len: usize, share: u32) -> usize {
    let split = ((len as u128 * u128::from(share.clamp(1, 99)) / 100) as usize) & !4095;
    if split >= len {
        0
    } else {
        split
    }
}

/// Default receiver's share of a cooperative copy, in percent. The receiver
/// copies into its own (mapped, usually cached) buffer, faster than the
/// sender writes into another process: on this project's VM a 60/40 split
/// moved 4 MiB messages at 14.3–14.7 GB/s against 12.2 for halves
/// (BENCHMARKS.md).
pub(crate) const DEFAULT_COOP_SHARE: u32 = 60;

/// One frame for the driver to put on the link to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transmit {
    pub(crate) peer: Rank,
    pub(crate) frame: Frame,
    pub(crate) payload: Payload,
}

#[derive(Debug)]
struct SendState {
    peer: Rank,
    len: usize,
    rendezvous: bool,
    /// Rendezvous: the CTS arrived and DATA is queued.
    cts: bool,
    /// Rendezvous: a CTS_COOP arrived and our part of the copy was pushed.
    coop: bool,
    /// The payload has left the user's buffer.
    written: bool,
    /// Synchronous eager send still waiting for SYNC_ACK.
    need_ack: bool,
}

#[derive(Debug)]
enum RecvPhase {
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
struct RecvState {
    pattern: Pattern,
    capacity: usize,
    phase: RecvPhase,
}

#[derive(Debug)]
enum ReqKind {
    Send(SendState),
    Recv(RecvState),
}

#[derive(Debug)]
struct ReqEntry {
    kind: ReqKind,
    result: Option<Result<MsgInfo, ReqError>>,
}

#[derive(Debug, Default)]
struct Slot {
    gen: u32,
    entry: Option<ReqEntry>,
}

#[derive(Debug)]
enum Body {
    Eager {
        data: Vec<u8>,
        sync_sreq: Option<u64>,
    },
    Rts {
        sreq: u64,
        addr: u64,
    },
}

#[derive(Debug)]
struct Unexpected {
    env: Envelope,
    len: usize,
    body: Body,
}

/// What is arriving from one peer right now.
#[derive(Debug)]
enum Incoming {
    /// Payload goes into this matched receive.
    Recv(ReqId),
    /// An unmatched eager message being staged.
    Staged {
        env: Envelope,
        data: Vec<u8>,
        sync_sreq: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerState {
    Open,
    Gone(String),
}

/// Counters for the debug report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EngineStats {
    /// Messages that waited for flow-control credit.
    pub(crate) held_for_credit: u64,
    pub(crate) eager_sent: u64,
    pub(crate) rendezvous_sent: u64,
    pub(crate) unexpected_arrivals: u64,
}

/// The matching and protocol engine of one rank. See the module docs.
#[derive(Debug)]
pub(crate) struct Engine {
    me: Rank,
    size: u32,
    eager_limit: usize,
    /// Per-peer eager limit and whether the peer can be pulled from.
    peer_caps: Vec<(usize, bool)>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    posted: OrderedQueue<ReqId>,
    unexpected: OrderedQueue<Unexpected>,
    incoming: Vec<Option<Incoming>>,
    peers: Vec<PeerState>,
    transmits: VecDeque<Transmit>,
    deliveries: VecDeque<(ReqId, Vec<u8>)>,
    pulls: VecDeque<Pull>,
    pushes: VecDeque<Push>,
    /// Messages of at least this many bytes are copied cooperatively (0: never).
    coop_min: usize,
    /// Percent of a cooperatively copied message the receiver copies.
    coop_share: u32,
    pool: BufferPool,
    stats: EngineStats,
    /// Flow-control window per peer, in credit bytes (see [`Flow`]).
    window: u64,
    flow: Vec<Flow>,
}

/// Credit charged for a message's envelope besides its eager payload: the
/// receiver's bookkeeping for one unexpected message (queue entry, buffer
/// header), so the window bounds message counts as well as bytes.
pub(crate) const ENVELOPE_COST: u64 = 128;

/// Flow control towards and from one peer.
///
/// A receiver must keep every eager message (and every rendezvous envelope)
/// that arrives before its receive is posted. So that a fast sender cannot
/// grow a slow receiver's memory without bound, each sender holds credit for
/// `window` bytes per peer: an EAGER costs its payload plus
/// [`ENVELOPE_COST`], an RTS costs [`ENVELOPE_COST`]. A message the credit
/// does not cover waits, in order, in `held` (a blocking send blocks; a
/// nonblocking one stays incomplete). The receiver counts what it has
/// matched and returns it with a CREDIT frame once a quarter of the window
/// has accumulated. The receiver's unmatched messages from one peer thus
/// never exceed one window. Messages to self are not counted.
#[derive(Debug, Default)]
struct Flow {
    /// Bytes we may still send to the peer.
    credit: u64,
    /// Messages to the peer waiting for credit, in posting order.
    held: VecDeque<Transmit>,
    /// Bytes of the peer's messages matched here but not yet returned.
    owed: u64,
}

/// Credit a message frame costs (0 for control frames).
fn message_cost(frame: &Frame) -> u64 {
    match *frame {
        Frame::Eager { len, .. } => len.saturating_add(ENVELOPE_COST),
        Frame::Rts { .. } => ENVELOPE_COST,
        _ => 0,
    }
}

/// Recycled buffers for unexpected eager messages, so a stream of them costs
/// no allocation, zeroing or freeing per message. Bounded in count and bytes.
#[derive(Debug, Default)]
struct BufferPool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

impl BufferPool {
    const MAX_BUFFERS: usize = 256;
    const MAX_BYTES: usize = 16 << 20;

    /// A buffer of exactly `len` bytes (contents unspecified but initialized).
    fn take(&mut self, len: usize) -> Vec<u8> {
        match self.free.iter().rposition(|b| b.capacity() >= len) {
            Some(i) => {
                let mut b = self.free.swap_remove(i);
                self.bytes -= b.capacity();
                if b.len() >= len {
                    b.truncate(len);
                } else {
                    b.resize(len, 0);
                }
                b
            }
            None => vec![0; len],
        }
    }

    fn give(&mut self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap > 0 && self.free.len() < Self::MAX_BUFFERS && self.bytes + cap <= Self::MAX_BYTES {
            self.bytes += cap;
            self.free.push(buf);
        }
    }
}

impl Engine {
    /// An engine for rank `me` of `size`; messages above `eager_limit` bytes
    /// use rendezvous. The flow-control window is `DEFAULT_WINDOW` until
    /// [`Engine::set_window`].
    pub(crate) fn new(me: Rank, size: u32, eager_limit: usize) -> Self {
        let n = size as usize;
        let window = Self::DEFAULT_WINDOW;
        Engine {
            me,
            size,
            eager_limit,
            peer_caps: vec![(eager_limit, false); n],
            slots: Vec::new(),
            free: Vec::new(),
            posted: OrderedQueue::default(),
            unexpected: OrderedQueue::default(),
            incoming: (0..n).map(|_| None).collect(),
            peers: vec![PeerState::Open; n],
            transmits: VecDeque::new(),
            deliveries: VecDeque::new(),
            pulls: VecDeque::new(),
            pushes: VecDeque::new(),
            coop_min: 0,
            coop_share: DEFAULT_COOP_SHARE,
            pool: BufferPool::default(),
            stats: EngineStats::default(),
            window,
            flow: (0..n)
                .map(|_| Flow {
                    credit: window,
                    ..Flow::default()
                })
                .collect(),
        }
    }

    /// Default flow-control window per peer, in credit bytes.
    pub(crate) const DEFAULT_WINDOW: u64 = 4 << 20;

    /// Sets the flow-control window per peer (before any message). It is
    /// raised to twice the largest eager message plus envelope, so that
    /// every eager message fits and returned credit always unblocks.
    pub(crate) fn set_window(&mut self, bytes: u64) {
        let largest = self
            .peer_caps
            .iter()
            .map(|c| c.0 as u64)
            .chain([self.eager_limit as u64])
            .max()
            .unwrap_or(0);
        let window = bytes.max(2 * (largest + ENVELOPE_COST));
        self.window = window;
        for f in &mut self.flow {
            f.credit = window;
        }
    }

    /// Queues a message frame (EAGER or RTS) for `t.peer`, or holds it
    /// until credit allows, keeping per-peer order.
    fn push_message(&mut self, t: Transmit) {
        let peer = t.peer;
        let cost = message_cost(&t.frame);
        match self.flow.get_mut(peer as usize) {
            Some(f) if peer != self.me => {
                if f.held.is_empty() && f.credit >= cost {
                    f.credit -= cost;
                    self.transmits.push_back(t);
                } else {
                    self.stats.held_for_credit += 1;
                    f.held.push_back(t);
                }
            }
            _ => self.transmits.push_back(t),
        }
    }

    /// A message from `peer` costing `cost` credit was matched: credit goes
    /// back once a quarter of the window has accumulated.
    fn consumed(&mut self, peer: Rank, cost: u64) {
        if peer == self.me {
            return;
        }
        let quarter = self.window / 4;
        let Some(f) = self.flow.get_mut(peer as usize) else {
            return;
        };
        f.owed += cost;
        if f.owed >= quarter {
            let bytes = std::mem::take(&mut f.owed);
            self.queue_control(peer, Frame::Credit { bytes });
        }
    }

    /// Sets `peer`'s eager limit, and whether large messages to it offer a
    /// single-copy pull (its link can reach our memory).
    pub(crate) fn set_peer_caps(&mut self, peer: Rank, eager_limit: usize, pull: bool) {
        if let Some(c) = self.peer_caps.get_mut(peer as usize) {
            *c = (eager_limit, pull);
        }
    }

    /// Messages of at least `min` bytes to pull-capable peers are copied
    /// cooperatively (both sides copy a part at once); 0 disables.
    pub(crate) fn set_coop_min(&mut self, min: usize) {
        self.coop_min = min;
    }

    /// Sets the percent of a cooperatively copied message the receiver
    /// copies (1–99; the sender copies the rest, where the receiver says).
    pub(crate) fn set_coop_share(&mut self, share: u32) {
        self.coop_share = share.clamp(1, 99);
    }

    fn caps(&self, peer: Rank) -> (usize, bool) {
        self.peer_caps
            .get(peer as usize)
            .copied()
            .unwrap_or((self.eager_limit, false))
    }

    pub(crate) fn stats(&self) -> EngineStats {
        self.stats
    }

    fn alloc(&mut self, kind: ReqKind) -> ReqId {
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

    fn entry_mut(&mut self, id: ReqId) -> Option<&mut ReqEntry> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.gen != id.gen() {
            return None;
        }
        slot.entry.as_mut()
    }

    fn complete(&mut self, id: ReqId, result: Result<MsgInfo, ReqError>) {
        if let Some(e) = self.entry_mut(id) {
            e.result = Some(result);
        }
    }

    /// Messages up to this many bytes are sent eagerly.
    pub(crate) fn eager_limit(&self) -> usize {
        self.eager_limit
    }

    /// Whether the request has finished (successfully or not).
    pub(crate) fn is_done(&self, id: ReqId) -> bool {
        self.slots
            .get(id.index())
            .filter(|s| s.gen == id.gen())
            .and_then(|s| s.entry.as_ref())
            .is_none_or(|e| e.result.is_some())
    }

    /// Whether `id` names a request not yet collected with `take_result`.
    pub(crate) fn is_live(&self, id: ReqId) -> bool {
        self.slots
            .get(id.index())
            .is_some_and(|s| s.gen == id.gen() && s.entry.is_some())
    }

    /// The peer that may still write into receive `id`'s buffer by itself
    /// (cross-memory attach): it was sent the buffer's address in a
    /// CTS_COOP and has not answered with PUSHED. Such a buffer must stay
    /// valid until the answer comes or the peer's process is gone, even if
    /// the request fails or is abandoned meanwhile.
    pub(crate) fn remote_writer(&self, id: ReqId) -> Option<Rank> {
        let slot = self.slots.get(id.index()).filter(|s| s.gen == id.gen())?;
        match &slot.entry.as_ref()?.kind {
            ReqKind::Recv(RecvState {
                phase:
                    RecvPhase::Receiving {
                        info,
                        push_pending: true,
                        ..
                    },
                ..
            }) => Some(info.source),
            _ => None,
        }
    }

    /// Removes a finished request and returns its outcome; `None` while it runs.
    pub(crate) fn take_result(&mut self, id: ReqId) -> Option<Result<MsgInfo, ReqError>> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.gen != id.gen() || slot.entry.as_ref()?.result.is_none() {
            return None;
        }
        let entry = slot.entry.take()?;
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(id.index() as u32);
        entry.result
    }

    /// A standard-mode eager send that needs no request: the frame to write
    /// now, if the message goes eagerly to an open peer and no frame for that
    /// peer waits in the engine (per-peer order). The driver must then put
    /// the whole frame on the link or buffer what is left of it, in order.
    pub(crate) fn eager_frame_now(
        &mut self,
        peer: Rank,
        context: u32,
        tag: u32,
        len: usize,
    ) -> Option<Frame> {
        if len > self.caps(peer).0
            || !self.peer_open(peer)
            || self.transmits.iter().any(|t| t.peer == peer)
        {
            return None;
        }
        if peer != self.me {
            let cost = (len as u64).saturating_add(ENVELOPE_COST);
            let f = self.flow.get_mut(peer as usize)?;
            if !f.held.is_empty() || f.credit < cost {
                return None;
            }
            f.credit -= cost;
        }
        self.stats.eager_sent += 1;
        Some(Frame::Eager {
            context,
            tag,
            len: len as u64,
            sync: false,
            sreq: 0,
        })
    }

    /// A request for a send the driver has already written (or copied
    /// aside) through [`Engine::eager_frame_now`]: complete from the start.
    pub(crate) fn completed_send(&mut self, peer: Rank) -> ReqId {
        let id = self.alloc(ReqKind::Send(SendState {
            peer,
            len: 0,
            rendezvous: false,
            cts: false,
            coop: false,
            written: true,
            need_ack: false,
        }));
        self.maybe_finish_send(id);
        id
    }

    /// Starts a send of `len` bytes to `peer`. Sends to a peer that is gone fail at once.
    pub(crate) fn post_send(
        &mut self,
        peer: Rank,
        context: u32,
        tag: u32,
        len: usize,
        sync: bool,
    ) -> ReqId {
        let (limit, pull) = self.caps(peer);
        let rendezvous = len > limit;
        let id = self.alloc(ReqKind::Send(SendState {
            peer,
            len,
            rendezvous,
            cts: false,
            coop: false,
            written: false,
            need_ack: sync && !rendezvous,
        }));
        if let Some(PeerState::Gone(reason)) = self.peers.get(peer as usize) {
            let reason = reason.clone();
            self.complete(id, Err(ReqError::PeerLost { peer, reason }));
            return id;
        }
        let frame = if rendezvous {
            self.stats.rendezvous_sent += 1;
            Frame::Rts {
                context,
                tag,
                len: len as u64,
                sreq: id.to_wire(),
                addr: 0,
            }
        } else {
            self.stats.eager_sent += 1;
            Frame::Eager {
                context,
                tag,
                len: len as u64,
                sync,
                sreq: if sync { id.to_wire() } else { 0 },
            }
        };
        let payload = match (rendezvous, pull) {
            (false, _) => Payload::Send(id),
            (true, true) => Payload::Advertise(id),
            (true, false) => Payload::None,
        };
        self.push_message(Transmit {
            peer,
            frame,
            payload,
        });
        id
    }

    /// Posts a receive of at most `capacity` bytes. If a queued message
    /// matches, it is taken now (its bytes come out of `poll_delivery`, or a
    /// CTS goes out for a rendezvous message).
    pub(crate) fn post_recv(
        &mut self,
        context: u32,
        source: Option<Rank>,
        tag: Option<u32>,
        capacity: usize,
    ) -> ReqId {
        let pattern = Pattern {
            context,
            source,
            tag,
        };
        let id = self.alloc(ReqKind::Recv(RecvState {
            pattern,
            capacity,
            phase: RecvPhase::Posted,
        }));
        if let Some(i) = self.unexpected.position(|u| pattern.matches(&u.env)) {
            let Some(u) = self.unexpected.get(i) else {
                return id;
            };
            if u.len > capacity {
                let err = ReqError::Truncated {
                    source: u.env.source,
                    tag: u.env.tag,
                    capacity,
                    incoming: u.len,
                };
                self.complete(id, Err(err));
                return id;
            }
            let Some(u) = self.unexpected.remove(i) else {
                return id;
            };
            let info = MsgInfo {
                source: u.env.source,
                tag: u.env.tag,
                len: u.len,
            };
            let cost = match &u.body {
                Body::Eager { .. } => (u.len as u64).saturating_add(ENVELOPE_COST),
                Body::Rts { .. } => ENVELOPE_COST,
            };
            self.consumed(u.env.source, cost);
            match u.body {
                Body::Eager { data, sync_sreq } => {
                    if let Some(sreq) = sync_sreq {
                        self.queue_control(u.env.source, Frame::SyncAck { sreq });
                    }
                    self.deliveries.push_back((id, data));
                    self.complete(id, Ok(info));
                }
                Body::Rts { sreq, addr } => {
                    self.start_rendezvous_recv(id, info, sreq, addr);
                }
            }
            return id;
        }
        if let Some(src) = source {
            if let Some(PeerState::Gone(reason)) = self.peers.get(src as usize) {
                let reason = reason.clone();
                self.complete(id, Err(ReqError::PeerLost { peer: src, reason }));
                return id;
            }
        }
        self.posted.push(id);
        id
    }

    fn start_rendezvous_recv(&mut self, id: ReqId, info: MsgInfo, sreq: u64, addr: u64) {
        if let Some(ReqEntry {
            kind: ReqKind::Recv(r),
            ..
        }) = self.entry_mut(id)
        {
            r.phase = RecvPhase::Receiving {
                info,
                rendezvous: true,
                sreq,
                parts: 0,
                failed: false,
                addr,
                push_pending: false,
            };
        }
        if addr != 0 && info.len > 0 {
            // Cooperation pays when the sender's core is otherwise idle; with
            // our own sends to it in flight (traffic both ways) it is busy too.
            let coop = self.coop_min > 0
                && info.len >= self.coop_min
                && coop_split(info.len, self.coop_share) > 0
                && !self.sending_to(info.source);
            let first = if coop {
                coop_split(info.len, self.coop_share)
            } else {
                info.len
            };
            if let Some(ReqEntry {
                kind:
                    ReqKind::Recv(RecvState {
                        phase:
                            RecvPhase::Receiving {
                                parts,
                                push_pending,
                                ..
                            },
                        ..
                    }),
                ..
            }) = self.entry_mut(id)
            {
                *parts = if coop { 2 } else { 1 };
                *push_pending = coop;
            }
            if coop {
                self.transmits.push_back(Transmit {
                    peer: info.source,
                    frame: Frame::CtsCoop {
                        sreq,
                        rreq: id.to_wire(),
                        addr: 0,
                        split: first as u64,
                    },
                    payload: Payload::AdvertiseRecv(id),
                });
            }
            self.pulls.push_back(Pull {
                peer: info.source,
                rreq: id,
                addr,
                offset: 0,
                len: first,
            });
        } else {
            self.queue_control(
                info.source,
                Frame::Cts {
                    sreq,
                    rreq: id.to_wire(),
                },
            );
        }
    }

    /// Whether pulls wait in `poll_pull`.
    pub(crate) fn has_pulls(&self) -> bool {
        !self.pulls.is_empty()
    }

    /// The pending send `sreq` (as named on the wire) to `peer`, if it
    /// satisfies `ok`; otherwise a protocol error naming `frame`.
    fn pending_send(
        &mut self,
        sreq: u64,
        peer: Rank,
        frame: &str,
        ok: impl FnOnce(&SendState) -> bool,
    ) -> Result<(ReqId, &mut SendState), ProtocolError> {
        let id = ReqId::from_wire(sreq);
        match self.entry_mut(id) {
            Some(ReqEntry {
                kind: ReqKind::Send(s),
                result: None,
            }) if s.peer == peer && ok(s) => Ok((id, s)),
            _ => Err(ProtocolError(format!(
                "{frame} for unknown send request {sreq:#x}"
            ))),
        }
    }

    /// Whether a send to `peer` is still in flight.
    fn sending_to(&self, peer: Rank) -> bool {
        self.slots.iter().any(|s| {
            matches!(&s.entry, Some(ReqEntry { kind: ReqKind::Send(x), result: None }) if x.peer == peer)
        })
    }

    /// Next single-copy pull for the driver.
    pub(crate) fn poll_pull(&mut self) -> Option<Pull> {
        self.pulls.pop_front()
    }

    /// The driver finished a pull: when every part of the transfer is in,
    /// the receive completes and the sender gets FIN. If a part failed (the
    /// kernel refused cross-memory attach), the message is fetched again
    /// through the link: CTS → DATA.
    pub(crate) fn handle_pull_done(&mut self, pull: Pull, ok: bool) {
        self.part_done(pull.rreq, pull.peer, ok);
    }

    /// One part of the single-copy transfer into receive `rreq` finished.
    fn part_done(&mut self, rreq: ReqId, peer: Rank, ok: bool) {
        let (info, sreq, left, failed) = match self.entry_mut(rreq) {
            Some(ReqEntry {
                kind:
                    ReqKind::Recv(RecvState {
                        phase:
                            RecvPhase::Receiving {
                                info,
                                sreq,
                                parts,
                                failed,
                                ..
                            },
                        ..
                    }),
                result: None,
            }) if *parts > 0 => {
                *parts -= 1;
                *failed |= !ok;
                (*info, *sreq, *parts, *failed)
            }
            _ => return,
        };
        if left > 0 {
            return;
        }
        if failed {
            self.queue_control(
                peer,
                Frame::Cts {
                    sreq,
                    rreq: rreq.to_wire(),
                },
            );
        } else {
            self.complete(rreq, Ok(info));
            self.queue_control(peer, Frame::Fin { sreq });
        }
    }

    /// Next push (sender's part of a cooperative copy) for the driver.
    pub(crate) fn poll_push(&mut self) -> Option<Push> {
        self.pushes.pop_front()
    }

    /// The driver finished (or could not do) a push: tell the receiver.
    pub(crate) fn handle_push_done(&mut self, push: Push, ok: bool) {
        self.queue_control(
            push.peer,
            Frame::Pushed {
                rreq: push.rreq,
                ok,
            },
        );
    }

    fn queue_control(&mut self, peer: Rank, frame: Frame) {
        self.transmits.push_back(Transmit {
            peer,
            frame,
            payload: Payload::None,
        });
    }

    /// First queued message matching the pattern, without taking it.
    pub(crate) fn probe(
        &self,
        context: u32,
        source: Option<Rank>,
        tag: Option<u32>,
    ) -> Option<MsgInfo> {
        let pattern = Pattern {
            context,
            source,
            tag,
        };
        self.unexpected
            .iter()
            .find(|u| pattern.matches(&u.env))
            .map(|u| MsgInfo {
                source: u.env.source,
                tag: u.env.tag,
                len: u.len,
            })
    }

    /// Finds the first posted receive matching `env`, failing (and removing)
    /// those that match but are too small for `len` bytes.
    fn match_posted(&mut self, env: &Envelope, len: usize) -> Option<ReqId> {
        loop {
            let slots = &self.slots;
            let pos = self.posted.position(|id| {
                slots
                    .get(id.index())
                    .and_then(|s| s.entry.as_ref())
                    .is_some_and(|e| matches!(&e.kind, ReqKind::Recv(r) if r.pattern.matches(env)))
            })?;
            let id = self.posted.remove(pos)?;
            let capacity = match self.entry_mut(id) {
                Some(ReqEntry {
                    kind: ReqKind::Recv(r),
                    ..
                }) => r.capacity,
                _ => continue,
            };
            if len > capacity {
                self.complete(
                    id,
                    Err(ReqError::Truncated {
                        source: env.source,
                        tag: env.tag,
                        capacity,
                        incoming: len,
                    }),
                );
                continue;
            }
            return Some(id);
        }
    }

    /// Handles one validated frame header from `peer`. Returns where its
    /// payload goes (`None` when it has none). Any `Err` is a protocol
    /// violation: the driver must drop the link and call `handle_peer_lost`.
    pub(crate) fn handle_frame(
        &mut self,
        peer: Rank,
        frame: Frame,
    ) -> Result<Option<Dest>, ProtocolError> {
        if peer >= self.size {
            return Err(ProtocolError(format!("frame from unknown rank {peer}")));
        }
        if self.incoming[peer as usize].is_some() {
            return Err(ProtocolError(
                "header received while a payload was expected".into(),
            ));
        }
        match frame {
            Frame::Eager {
                context,
                tag,
                len,
                sync,
                sreq,
            } => {
                let limit = self.caps(peer).0;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= limit)
                    .ok_or_else(|| {
                        ProtocolError(format!(
                            "eager message of {len} bytes exceeds the eager limit"
                        ))
                    })?;
                let env = Envelope {
                    context,
                    source: peer,
                    tag,
                };
                let sync_sreq = sync.then_some(sreq);
                if let Some(id) = self.match_posted(&env, len) {
                    let info = MsgInfo {
                        source: peer,
                        tag,
                        len,
                    };
                    if let Some(ReqEntry {
                        kind: ReqKind::Recv(r),
                        ..
                    }) = self.entry_mut(id)
                    {
                        r.phase = RecvPhase::Receiving {
                            info,
                            rendezvous: false,
                            sreq: 0,
                            parts: 0,
                            failed: false,
                            addr: 0,
                            push_pending: false,
                        };
                    }
                    if let Some(sreq) = sync_sreq {
                        self.queue_control(peer, Frame::SyncAck { sreq });
                    }
                    self.consumed(peer, (len as u64).saturating_add(ENVELOPE_COST));
                    self.incoming[peer as usize] = Some(Incoming::Recv(id));
                    Ok(Some(Dest::Req(id)))
                } else {
                    self.stats.unexpected_arrivals += 1;
                    self.incoming[peer as usize] = Some(Incoming::Staged {
                        env,
                        data: self.pool.take(len),
                        sync_sreq,
                    });
                    Ok(Some(Dest::Staging))
                }
            }
            Frame::Rts {
                context,
                tag,
                len,
                sreq,
                addr,
            } => {
                let len = usize::try_from(len)
                    .map_err(|_| ProtocolError(format!("message of {len} bytes is too large")))?;
                let env = Envelope {
                    context,
                    source: peer,
                    tag,
                };
                if let Some(id) = self.match_posted(&env, len) {
                    let info = MsgInfo {
                        source: peer,
                        tag,
                        len,
                    };
                    self.consumed(peer, ENVELOPE_COST);
                    self.start_rendezvous_recv(id, info, sreq, addr);
                } else {
                    self.stats.unexpected_arrivals += 1;
                    self.unexpected.push(Unexpected {
                        env,
                        len,
                        body: Body::Rts { sreq, addr },
                    });
                }
                Ok(None)
            }
            Frame::Cts { sreq, rreq } => {
                // Also after CTS_COOP: the receiver falls back to DATA.
                let (id, s) = self.pending_send(sreq, peer, "CTS", |s| s.rendezvous && !s.cts)?;
                s.cts = true;
                let len = s.len as u64;
                self.transmits.push_back(Transmit {
                    peer,
                    frame: Frame::Data { rreq, len },
                    payload: Payload::Send(id),
                });
                Ok(None)
            }
            Frame::Data { rreq, len } => {
                let id = ReqId::from_wire(rreq);
                match self.entry_mut(id) {
                    Some(ReqEntry {
                        kind:
                            ReqKind::Recv(RecvState {
                                phase:
                                    RecvPhase::Receiving {
                                        info,
                                        rendezvous: true,
                                        ..
                                    },
                                ..
                            }),
                        result: None,
                    }) if info.source == peer && info.len as u64 == len => {}
                    _ => {
                        return Err(ProtocolError(format!(
                            "DATA for unknown receive request {rreq:#x}"
                        )))
                    }
                }
                self.incoming[peer as usize] = Some(Incoming::Recv(id));
                Ok(Some(Dest::Req(id)))
            }
            Frame::SyncAck { sreq } => {
                let (id, s) = self.pending_send(sreq, peer, "SYNC_ACK", |s| s.need_ack)?;
                s.need_ack = false;
                self.maybe_finish_send(id);
                Ok(None)
            }
            Frame::CtsCoop {
                sreq,
                rreq,
                addr,
                split,
            } => {
                let (id, s) = self.pending_send(sreq, peer, "CTS_COOP", |s| {
                    s.rendezvous && !s.cts && !s.coop
                })?;
                s.coop = true;
                let len = s.len;
                // The receiver chose the split; it must leave us a part.
                let split = match usize::try_from(split) {
                    Ok(split) if split > 0 && split < len && addr != 0 => split,
                    _ => {
                        return Err(ProtocolError(format!(
                            "CTS_COOP splitting a message of {len} bytes at {split}"
                        )))
                    }
                };
                self.pushes.push_back(Push {
                    peer,
                    sreq: id,
                    rreq,
                    addr,
                    offset: split,
                    len: len - split,
                });
                Ok(None)
            }
            Frame::Pushed { rreq, ok } => {
                let id = ReqId::from_wire(rreq);
                let (len, addr) = match self.entry_mut(id) {
                    Some(ReqEntry {
                        kind:
                            ReqKind::Recv(RecvState {
                                phase:
                                    RecvPhase::Receiving {
                                        info,
                                        parts,
                                        addr,
                                        push_pending,
                                        ..
                                    },
                                ..
                            }),
                        result: None,
                    }) if info.source == peer && *parts > 0 && *addr != 0 && *push_pending => {
                        *push_pending = false;
                        (info.len, *addr)
                    }
                    _ => {
                        return Err(ProtocolError(format!(
                            "PUSHED for unknown receive request {rreq:#x}"
                        )))
                    }
                };
                if ok {
                    self.part_done(id, peer, true);
                } else {
                    // The sender could not write into us: pull its part too.
                    let split = coop_split(len, self.coop_share);
                    self.pulls.push_back(Pull {
                        peer,
                        rreq: id,
                        addr,
                        offset: split,
                        len: len - split,
                    });
                }
                Ok(None)
            }
            Frame::Fin { sreq } => {
                let (id, s) = self.pending_send(sreq, peer, "FIN", |s| s.rendezvous && !s.cts)?;
                s.written = true;
                self.maybe_finish_send(id);
                Ok(None)
            }
            Frame::Bye => {
                self.handle_peer_lost(peer, "the peer finalized".into());
                Ok(None)
            }
            Frame::Credit { bytes } => {
                let Some(f) = self.flow.get_mut(peer as usize) else {
                    return Ok(None);
                };
                f.credit = f.credit.saturating_add(bytes);
                while let Some(t) = f.held.front() {
                    let cost = message_cost(&t.frame);
                    if cost > f.credit {
                        break;
                    }
                    f.credit -= cost;
                    if let Some(t) = f.held.pop_front() {
                        self.transmits.push_back(t);
                    }
                }
                Ok(None)
            }
        }
    }

    /// The staging buffer of the unexpected eager message arriving from `peer`.
    pub(crate) fn staging_mut(&mut self, peer: Rank) -> Option<&mut [u8]> {
        match self.incoming.get_mut(peer as usize)? {
            Some(Incoming::Staged { data, .. }) => Some(data),
            _ => None,
        }
    }

    /// All payload bytes of the current frame from `peer` have arrived.
    pub(crate) fn handle_payload_done(&mut self, peer: Rank) {
        let Some(incoming) = self.incoming.get_mut(peer as usize).and_then(Option::take) else {
            return;
        };
        match incoming {
            Incoming::Recv(id) => {
                let info = match self.entry_mut(id) {
                    Some(ReqEntry {
                        kind:
                            ReqKind::Recv(RecvState {
                                phase: RecvPhase::Receiving { info, .. },
                                ..
                            }),
                        ..
                    }) => *info,
                    _ => return,
                };
                self.complete(id, Ok(info));
            }
            Incoming::Staged {
                env,
                data,
                sync_sreq,
            } => {
                // The message "arrives" now: a receive posted meanwhile may take it.
                let len = data.len();
                if let Some(id) = self.match_posted(&env, len) {
                    if let Some(sreq) = sync_sreq {
                        self.queue_control(peer, Frame::SyncAck { sreq });
                    }
                    self.deliveries.push_back((id, data));
                    let info = MsgInfo {
                        source: env.source,
                        tag: env.tag,
                        len,
                    };
                    self.complete(id, Ok(info));
                } else {
                    self.unexpected.push(Unexpected {
                        env,
                        len,
                        body: Body::Eager { data, sync_sreq },
                    });
                }
            }
        }
    }

    /// The frame carrying send `id`'s payload has left the user's buffer.
    pub(crate) fn handle_written(&mut self, id: ReqId) {
        if let Some(ReqEntry {
            kind: ReqKind::Send(s),
            result: None,
        }) = self.entry_mut(id)
        {
            s.written = true;
        }
        self.maybe_finish_send(id);
    }

    fn maybe_finish_send(&mut self, id: ReqId) {
        let done = matches!(
            self.entry_mut(id),
            Some(ReqEntry { kind: ReqKind::Send(s), result: None }) if s.written && !s.need_ack
        );
        if done {
            let peer = match self.entry_mut(id) {
                Some(ReqEntry {
                    kind: ReqKind::Send(s),
                    ..
                }) => s.peer,
                _ => return,
            };
            self.complete(
                id,
                Ok(MsgInfo {
                    source: peer,
                    tag: 0,
                    len: 0,
                }),
            );
        }
    }

    /// The link to `peer` is gone: every request that needs it fails, and
    /// later ones fail at once. Messages already queued from it stay receivable.
    pub(crate) fn handle_peer_lost(&mut self, peer: Rank, reason: String) {
        let Some(state) = self.peers.get_mut(peer as usize) else {
            return;
        };
        if *state != PeerState::Open {
            return;
        }
        *state = PeerState::Gone(reason.clone());
        self.incoming[peer as usize] = None;
        let err = || ReqError::PeerLost {
            peer,
            reason: reason.clone(),
        };
        let mut failed = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(e) = &slot.entry else { continue };
            if e.result.is_some() {
                continue;
            }
            let involved = match &e.kind {
                ReqKind::Send(s) => s.peer == peer && (!s.written || s.need_ack),
                ReqKind::Recv(r) => match &r.phase {
                    RecvPhase::Posted => r.pattern.source == Some(peer),
                    RecvPhase::Receiving { info, .. } => info.source == peer,
                },
            };
            if involved {
                failed.push(ReqId::new(index as u32, slot.gen));
            }
        }
        let slots = &self.slots;
        self.posted.drain_where(|id| {
            failed.contains(id) || slots.get(id.index()).is_none_or(|s| s.gen != id.gen())
        });
        for id in failed {
            self.complete(id, Err(err()));
        }
        self.transmits.retain(|t| t.peer != peer);
        if let Some(f) = self.flow.get_mut(peer as usize) {
            f.held.clear();
        }
    }

    /// Whether `peer` is still usable.
    pub(crate) fn peer_open(&self, peer: Rank) -> bool {
        matches!(self.peers.get(peer as usize), Some(PeerState::Open))
    }

    /// Whether frames wait in `poll_transmit`.
    pub(crate) fn has_transmits(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// Next frame to transmit.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next buffered message to copy into a receive's buffer. Hand the
    /// buffer back with [`Engine::recycle`] once copied.
    pub(crate) fn poll_delivery(&mut self) -> Option<(ReqId, Vec<u8>)> {
        self.deliveries.pop_front()
    }

    /// Returns a delivered message's buffer for reuse by later unexpected messages.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.give(buf);
    }

    /// Number of posted receives and queued unexpected messages.
    pub(crate) fn queue_lengths(&self) -> (usize, usize) {
        (self.posted.len(), self.unexpected.len())
    }

    /// This rank.
    pub(crate) fn me(&self) -> Rank {
        self.me
    }
}

/// Feeds untrusted bytes to an engine the way a driver would: a stream of
/// `[peer byte][40-byte header][payload]` records, with receives, sends and
/// pulls posted along the way. Used by the fuzz targets and a property
/// test; it must never panic, whatever the bytes.
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) fn feed_untrusted(data: &[u8]) {
    use crate::wire::HEADER_LEN;
    let mut e = Engine::new(0, 4, 64);
    e.set_peer_caps(1, 64, true);
    e.set_coop_min(128);
    e.set_window(0);
    let mut live = Vec::new();
    let mut rest = data;
    while let Some((&peer, tail)) = rest.split_first() {
        // Now and then act like the application.
        match peer % 16 {
            13 => live.push(e.post_recv(0, None, None, 256)),
            14 => live.push(e.post_send(
                u32::from(peer % 4),
                0,
                1,
                usize::from(peer) * 3,
                peer % 2 == 0,
            )),
            15 => {
                while let Some(p) = e.poll_pull() {
                    e.handle_pull_done(p, peer % 3 != 0);
                }
                while let Some(p) = e.poll_push() {
                    e.handle_push_done(p, peer % 3 == 0);
                }
            }
            _ => {}
        }
        let Some(hlen) = tail
            .first()
            .map(|&b| Frame::header_len(b).unwrap_or(HEADER_LEN))
        else {
            break;
        };
        if tail.len() < hlen {
            break;
        }
        let (h, tail) = tail.split_at(hlen);
        rest = tail;
        let Ok(frame) = Frame::decode(h, 1 << 20) else {
            continue;
        };
        let from = u32::from(peer % 5); // 4 is out of range on purpose
        match e.handle_frame(from, frame) {
            Ok(Some(_)) => {
                let n = (frame.payload_len() as usize).min(rest.len());
                if let Some(buf) = e.staging_mut(from) {
                    let k = n.min(buf.len());
                    buf[..k].copy_from_slice(&rest[..k]);
                }
                rest = &rest[n..];
                e.handle_payload_done(from);
            }
            Ok(None) => {}
            Err(ProtocolError(why)) => e.handle_peer_lost(from, why),
        }
        while e.poll_transmit().is_some() {}
        while let Some((_, buf)) = e.poll_delivery() {
            e.recycle(buf);
        }
        for &id in &live {
            let _ = e.take_result(id);
        }
    }
}
