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
//! * [`Engine::poll_copy`] yields the parts of single-copy transfers (pull a
//!   message out of a same-node sender, or push our part into its receiver);
//!   the driver reports [`Engine::handle_copy_done`].
//! * [`Engine::take_result`] collects a finished request.
//!
//! The rooms: [`requests`] (the request slab and each request's state),
//! [`post`] (sends and receives posted by users, and matching against the
//! queues of [`matching`]), [`frames`] (one handler per frame kind),
//! [`flow`] (credit flow control), [`copy`] (single-copy transfers),
//! [`pool`] (buffers for unexpected messages). This module holds the engine
//! itself: its state, set-up, completion and the driver's `poll_*` calls.
//!
//! Ordering: each peer is one FIFO link and both queues are scanned in arrival
//! order, so messages between one pair on one context never overtake.
//!
//! Truncation: a receive that matches a message larger than its buffer fails
//! with [`ReqError::Truncated`] and the message stays queued for a later receive.

pub(crate) mod copy;
mod direct;
mod flow;
mod frames;
pub(crate) mod matching;
mod pool;
mod post;
pub(crate) mod requests;
#[cfg(any(test, feature = "bench-internals"))]
mod untrusted;

#[cfg(test)]
mod tests;

pub(crate) use copy::{CopyPart, Direction, DEFAULT_COOP_SHARE};
pub(crate) use direct::{DirectOutcome, DirectStart};
pub(crate) use requests::{MsgInfo, ReqError, ReqId};
#[cfg(any(test, feature = "bench-internals"))]
pub(crate) use untrusted::feed_untrusted;

use crate::ids::Rank;
use crate::wire::Frame;
use flow::{eager_cost, Flow, ENVELOPE_COST};
use matching::{Envelope, OrderedQueue, Pattern};
use pool::BufferPool;
use requests::{RecvPhase, ReqKind, Requests, SendPhase};
use std::collections::VecDeque;

/// A protocol violation by a peer; the driver closes that link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ProtocolError(pub(crate) Box<str>);

impl ProtocolError {
    /// Boxed, so that the handlers' results stay small: they are returned
    /// for every frame, and a large one went through memory on the way.
    #[cold]
    pub(crate) fn new(why: String) -> Self {
        ProtocolError(why.into_boxed_str())
    }
}

/// Where the payload of the frame just handled goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Into the buffer of this receive request, from offset 0.
    Req(ReqId),
    /// Into the engine's staging buffer for this peer ([`Engine::staging_mut`]).
    Staging,
    /// Into the buffer of the direct receive (see [`direct`]), from offset 0.
    Direct,
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

/// One frame for the driver to put on the link to `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transmit {
    pub(crate) peer: Rank,
    pub(crate) frame: Frame,
    pub(crate) payload: Payload,
}

/// What an unexpected message brought.
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

/// A message that arrived before any receive matched it.
#[derive(Debug)]
struct Unexpected {
    env: Envelope,
    len: usize,
    body: Body,
}

impl Unexpected {
    /// Flow-control credit this message cost its sender.
    fn cost(&self) -> u64 {
        match self.body {
            Body::Eager { .. } => eager_cost(self.len as u64),
            Body::Rts { .. } => ENVELOPE_COST,
        }
    }
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
    /// Payload goes into the direct receive's buffer.
    Direct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerState {
    Open,
    Gone(String),
}

/// The smallest flow-control window for eager messages of up to
/// `eager_limit` bytes: two of them, so that returned credit always
/// unblocks the next.
fn window_for(eager_limit: usize) -> u64 {
    (eager_limit as u64)
        .saturating_add(ENVELOPE_COST)
        .saturating_mul(2)
}

/// Everything the engine keeps per peer.
#[derive(Debug)]
struct Peer {
    /// Largest message sent to it eagerly.
    eager_limit: usize,
    /// Largest message sent to it eagerly when alone (see
    /// [`Engine::set_lone_eager_limit`]); 0: none above `eager_limit`.
    lone_limit: usize,
    /// Largest rendezvous message whose data goes through the link, not a
    /// pull, in an exchange or a stream (see
    /// [`Engine::set_exchange_limit`]).
    exchange_limit: usize,
    /// Large messages to it offer a single-copy pull (its link reaches our memory).
    pull: bool,
    /// The payload being received from it.
    incoming: Option<Incoming>,
    state: PeerState,
    flow: Flow,
}

/// Counters for the debug report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EngineStats {
    /// Messages that waited for flow-control credit.
    pub(crate) held_for_credit: u64,
    pub(crate) eager_sent: u64,
    pub(crate) rendezvous_sent: u64,
    /// Rendezvous messages that offered a single-copy pull (the others
    /// move their data through the link).
    pub(crate) pulls_offered: u64,
    pub(crate) unexpected_arrivals: u64,
    /// Receives that took their message from the link as they were posted
    /// (never entering the engine).
    pub(crate) taken_at_post: u64,
}

/// The matching and protocol engine of one rank. See the module docs.
#[derive(Debug)]
pub(crate) struct Engine {
    me: Rank,
    eager_limit: usize,
    peers: Vec<Peer>,
    reqs: Requests,
    /// Posted receives in posting order, with their patterns (scanned
    /// without touching the request slab).
    posted: OrderedQueue<(ReqId, Pattern)>,
    unexpected: OrderedQueue<Unexpected>,
    /// The blocking receive matched without a request, if one waits.
    direct: Option<direct::DirectRecv>,
    /// A cancelled direct receive's payload is still arriving (no new
    /// direct receive may start: its bytes would land in the new buffer).
    direct_draining: bool,
    transmits: VecDeque<Transmit>,
    deliveries: VecDeque<(ReqId, Vec<u8>)>,
    /// Single-copy parts for the driver: our pulls, and our pushes (which a
    /// peer waits for, so they go first).
    pulls: VecDeque<CopyPart>,
    pushes: VecDeque<CopyPart>,
    /// Messages of at least this many bytes are copied cooperatively (0: never).
    coop_min: usize,
    /// Percent of a cooperatively copied message the receiver copies.
    coop_share: u32,
    pool: BufferPool,
    stats: EngineStats,
    /// Flow-control window per peer, in credit bytes (see [`flow`]).
    window: u64,
}

impl Engine {
    /// An engine for rank `me` of `size`; messages above `eager_limit` bytes
    /// use rendezvous. The flow-control window is `DEFAULT_WINDOW` (or
    /// what the eager limit needs, see [`Engine::set_window`]) until
    /// [`Engine::set_window`].
    pub(crate) fn new(me: Rank, size: u32, eager_limit: usize) -> Self {
        let window = Self::DEFAULT_WINDOW.max(window_for(eager_limit));
        Engine {
            me,
            eager_limit,
            peers: (0..size)
                .map(|_| Peer {
                    eager_limit,
                    lone_limit: 0,
                    exchange_limit: 0,
                    pull: false,
                    incoming: None,
                    state: PeerState::Open,
                    flow: Flow::new(window),
                })
                .collect(),
            reqs: Requests::default(),
            posted: OrderedQueue::default(),
            unexpected: OrderedQueue::default(),
            direct: None,
            direct_draining: false,
            transmits: VecDeque::new(),
            deliveries: VecDeque::new(),
            pulls: VecDeque::new(),
            pushes: VecDeque::new(),
            coop_min: 0,
            coop_share: DEFAULT_COOP_SHARE,
            pool: BufferPool::default(),
            stats: EngineStats::default(),
            window,
        }
    }

    /// Default flow-control window per peer, in credit bytes.
    pub(crate) const DEFAULT_WINDOW: u64 = 4 << 20;

    /// Sets the flow-control window per peer (before any message). It is
    /// raised to twice the largest eager message plus envelope, so that
    /// every eager message fits and returned credit always unblocks.
    pub(crate) fn set_window(&mut self, bytes: u64) {
        let largest = self
            .peers
            .iter()
            .map(|p| p.eager_limit as u64)
            .chain([self.eager_limit as u64])
            .max()
            .unwrap_or(0);
        let window = bytes.max(window_for(largest as usize));
        self.window = window;
        for p in &mut self.peers {
            p.flow.reset(window);
        }
    }

    /// Sets `peer`'s eager limit, and whether large messages to it offer a
    /// single-copy pull (its link can reach our memory).
    ///
    /// The window grows, for every peer, to what an eager message of that
    /// size needs (see [`Engine::set_window`]): a message the whole window
    /// could not pay for would wait for credit forever.
    pub(crate) fn set_peer_caps(&mut self, peer: Rank, eager_limit: usize, pull: bool) {
        if let Some(p) = self.peers.get_mut(peer as usize) {
            p.eager_limit = eager_limit;
            p.pull = pull;
            self.grow_window(window_for(eager_limit));
        }
    }

    /// Messages to `peer` above its eager limit and up to `bytes` go
    /// eagerly when alone: no other send to `peer` is in flight and the
    /// flow-control credit covers the whole message now (a message never
    /// waits for credit on this account: otherwise it goes by rendezvous).
    /// A lone message's receiver most likely waits for it, and the eager
    /// send saves rendezvous' round trip (RTS, CTS), which on a link with
    /// no single-copy pull (TCP) is the price of every large message. A
    /// window or a stream of large messages still goes by rendezvous after
    /// its first, so the receiver's unmatched bytes stay within one window
    /// and its messages never wait for credit.
    ///
    /// The window grows, for every peer, to two such messages.
    pub(crate) fn set_lone_eager_limit(&mut self, peer: Rank, bytes: usize) {
        if let Some(p) = self.peers.get_mut(peer as usize) {
            p.lone_limit = bytes;
        }
        self.grow_window(window_for(bytes));
    }

    /// Raises the flow-control window of every peer to at least `need`.
    fn grow_window(&mut self, need: u64) {
        if need > self.window {
            let more = need - self.window;
            self.window = need;
            for p in &mut self.peers {
                p.flow.grant(more, &mut self.transmits);
            }
        }
    }

    /// Rendezvous messages to `peer` of up to `bytes` move their data
    /// through the link (RTS, CTS, DATA), not by a single-copy pull, when a
    /// receive from `peer` is posted (here or in the direct receive: an
    /// exchange, both ranks sending and receiving) or another send to it
    /// is in flight (a stream). Both cores are busy then, so the
    /// cooperative pull's second half finds no idle core, and where the
    /// two ranks share caches a pull, with the kernel pinning every page,
    /// moves fewer bytes per second than the ring's two copies. A lone
    /// message, its receiver likely waiting for it alone, is pulled. 0
    /// (the default): always pulled.
    pub(crate) fn set_exchange_limit(&mut self, peer: Rank, bytes: usize) {
        if let Some(p) = self.peers.get_mut(peer as usize) {
            p.exchange_limit = bytes;
        }
    }

    /// Messages of at least `min` bytes to pull-capable peers are copied
    /// cooperatively (both sides copy a part at once); 0 disables.
    pub(crate) fn set_coop_min(&mut self, min: usize) {
        self.coop_min = min;
    }

    /// The size from which copies are cooperative (0: never).
    pub(crate) fn coop_min(&self) -> usize {
        self.coop_min
    }

    /// Sets the percent of a cooperatively copied message the receiver
    /// copies (1–99; the sender copies the rest, where the receiver says).
    pub(crate) fn set_coop_share(&mut self, share: u32) {
        self.coop_share = share.clamp(1, 99);
    }

    /// Whether a message of `len` bytes to `peer` goes eagerly, and
    /// whether, if not, its RTS offers a pull (see
    /// [`Engine::set_exchange_limit`]).
    fn send_caps(&self, peer: Rank, len: usize) -> (bool, bool) {
        let Some(p) = self.peers.get(peer as usize) else {
            return (len <= self.eager_limit, false);
        };
        let eager = len <= p.eager_limit
            || (len <= p.lone_limit
                && p.flow.covers(eager_cost(len as u64))
                && !self.sending_to(peer));
        // An exchange's or a stream's message: its data goes through the
        // link (looked at only where a pull is possible at all).
        let through_link = || {
            !eager && len <= p.exchange_limit && (self.expects_from(peer) || self.sending_to(peer))
        };
        (eager, p.pull && !through_link())
    }

    /// Whether a receive that `peer`'s messages can match is posted.
    fn expects_from(&self, peer: Rank) -> bool {
        let from = |pattern: &Pattern| pattern.source.is_none_or(|s| s == peer);
        self.posted.iter().any(|(_, pattern)| from(pattern))
            || self.direct.as_ref().is_some_and(|d| from(d.pattern()))
    }

    /// The largest eager message `peer` may send us: what we would send it
    /// eagerly, alone or not (the two ranks' limits agree: they come from
    /// the job's configuration and the node's profile).
    fn eager_accept_limit(&self, peer: Rank) -> usize {
        self.peers
            .get(peer as usize)
            .map_or(self.eager_limit, |p| p.eager_limit.max(p.lone_limit))
    }

    /// `peer`'s eager limit, and whether it can be pulled from.
    fn caps(&self, peer: Rank) -> (usize, bool) {
        self.peers
            .get(peer as usize)
            .map_or((self.eager_limit, false), |p| (p.eager_limit, p.pull))
    }

    pub(crate) fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Messages up to this many bytes are sent eagerly.
    pub(crate) fn eager_limit(&self) -> usize {
        self.eager_limit
    }

    /// Whether the request has finished (successfully or not).
    #[inline]
    pub(crate) fn is_done(&self, id: ReqId) -> bool {
        self.reqs.is_done(id)
    }

    /// Whether `id` names a request not yet collected with `take_result`.
    pub(crate) fn is_live(&self, id: ReqId) -> bool {
        self.reqs.is_live(id)
    }

    /// Removes a finished request and returns its outcome; `None` while it runs.
    #[inline]
    pub(crate) fn take_result(&mut self, id: ReqId) -> Option<Result<MsgInfo, ReqError>> {
        self.reqs.take_result(id)
    }

    /// The frame carrying send `id`'s payload has left the user's buffer.
    pub(crate) fn handle_written(&mut self, id: ReqId) {
        match self.reqs.send_mut(id).map(|s| &mut s.phase) {
            Some(SendPhase::Eager { written, .. }) => *written = true,
            // DATA of a rendezvous: the receiver has all it needs.
            Some(SendPhase::Rendezvous(_)) => return self.finish_send(id),
            None => {}
        }
        self.maybe_finish_send(id);
    }

    /// An eager send completes once written and (if synchronous) acknowledged.
    fn maybe_finish_send(&mut self, id: ReqId) {
        if matches!(
            self.reqs.send_mut(id).map(|s| s.phase),
            Some(SendPhase::Eager {
                written: true,
                need_ack: false
            })
        ) {
            self.finish_send(id);
        }
    }

    /// Completes send `id` successfully.
    fn finish_send(&mut self, id: ReqId) {
        if let Some(peer) = self.reqs.send_mut(id).map(|s| s.peer) {
            let info = MsgInfo {
                source: peer,
                tag: 0,
                len: 0,
            };
            self.reqs.complete(id, Ok(info));
        }
    }

    /// The link to `peer` is gone: every request that needs it fails, and
    /// later ones fail at once. Messages already queued from it stay receivable.
    pub(crate) fn handle_peer_lost(&mut self, peer: Rank, reason: String) {
        let Some(p) = self.peers.get_mut(peer as usize) else {
            return;
        };
        if p.state != PeerState::Open {
            return;
        }
        p.state = PeerState::Gone(reason.clone());
        let was_direct = matches!(p.incoming.take(), Some(Incoming::Direct));
        p.flow.drop_held();
        self.direct_peer_lost(peer, &reason, was_direct);
        let failed: Vec<ReqId> = self
            .reqs
            .running()
            .filter(|(_, kind)| match kind {
                ReqKind::Send(s) => s.peer == peer && s.needs_peer(),
                ReqKind::Recv(r) => match &r.phase {
                    RecvPhase::Posted => r.pattern.source == Some(peer),
                    RecvPhase::Receiving { info, .. } => info.source == peer,
                },
            })
            .map(|(id, _)| id)
            .collect();
        let reqs = &self.reqs;
        self.posted
            .drain_where(|(id, _)| failed.contains(id) || !reqs.is_live(*id));
        for id in failed {
            let err = ReqError::PeerLost {
                peer,
                reason: reason.clone(),
            };
            self.reqs.complete(id, Err(err));
        }
        self.transmits.retain(|t| t.peer != peer);
    }

    /// Whether `peer` is still usable.
    pub(crate) fn peer_open(&self, peer: Rank) -> bool {
        matches!(
            self.peers.get(peer as usize).map(|p| &p.state),
            Some(PeerState::Open)
        )
    }

    /// Receives posted and not matched yet.
    #[inline]
    pub(crate) fn posted_len(&self) -> usize {
        self.posted.len()
    }

    /// Whether frames wait in `poll_transmit`.
    pub(crate) fn has_transmits(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// Next frame to transmit.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Whether buffered messages wait in `poll_delivery`.
    pub(crate) fn has_deliveries(&self) -> bool {
        !self.deliveries.is_empty()
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
