//! What users start: sends and receives posted through the driver, and
//! matching them against the posted and unexpected queues.

use super::flow::{eager_cost, message_cost};
use super::matching::{Envelope, Pattern};
use super::requests::{
    MsgInfo, Rdv, RecvPhase, RecvState, ReqError, ReqId, ReqKind, SendPhase, SendState,
};
use super::{Body, Engine, Payload, PeerState, Transmit};
use crate::ids::Rank;
use crate::wire::Frame;

impl Engine {
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
            || (!self.transmits.is_empty() && self.transmits.iter().any(|t| t.peer == peer))
        {
            return None;
        }
        if peer != self.me {
            let p = self.peers.get_mut(peer as usize)?;
            if !p.flow.try_charge(eager_cost(len as u64)) {
                return None;
            }
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
        let id = self.reqs.alloc(ReqKind::Send(SendState {
            peer,
            len: 0,
            phase: SendPhase::Eager {
                written: true,
                need_ack: false,
            },
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
        let (eager, pull) = self.send_caps(peer, len);
        let rendezvous = !eager;
        let phase = if rendezvous {
            SendPhase::Rendezvous(Rdv::Announced)
        } else {
            SendPhase::Eager {
                written: false,
                need_ack: sync,
            }
        };
        let id = self
            .reqs
            .alloc(ReqKind::Send(SendState { peer, len, phase }));
        if let Some(PeerState::Gone(reason)) = self.peers.get(peer as usize).map(|p| &p.state) {
            let reason = reason.clone();
            self.reqs
                .complete(id, Err(ReqError::PeerLost { peer, reason }));
            return id;
        }
        let frame = if rendezvous {
            self.stats.rendezvous_sent += 1;
            self.stats.pulls_offered += u64::from(pull);
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

    /// Queues a message frame (EAGER or RTS) for `t.peer`, or holds it
    /// until credit allows, keeping per-peer order.
    pub(super) fn push_message(&mut self, t: Transmit) {
        let peer = t.peer;
        match self.peers.get_mut(peer as usize) {
            Some(p) if peer != self.me => {
                if p.flow.try_charge(message_cost(&t.frame)) {
                    self.transmits.push_back(t);
                } else {
                    self.stats.held_for_credit += 1;
                    p.flow.hold(t);
                }
            }
            _ => self.transmits.push_back(t),
        }
    }

    /// Posts a receive of at most `capacity` bytes. If a queued message
    /// matches, it is taken now (its bytes come out of `poll_delivery`, or a
    /// CTS goes out for a rendezvous message).
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn post_recv(
        &mut self,
        context: u32,
        source: Option<Rank>,
        tag: Option<u32>,
        capacity: usize,
    ) -> ReqId {
        self.post_recv_queued(context, source, tag, capacity).0
    }

    /// [`Engine::post_recv`], and whether the receive only joined the
    /// posted queue (`true`: nothing matched, nothing to deliver, transmit
    /// or copy because of it).
    #[inline]
    pub(crate) fn post_recv_queued(
        &mut self,
        context: u32,
        source: Option<Rank>,
        tag: Option<u32>,
        capacity: usize,
    ) -> (ReqId, bool) {
        let pattern = Pattern {
            context,
            source,
            tag,
        };
        let id = self.reqs.alloc(ReqKind::Recv(RecvState {
            pattern,
            capacity,
            phase: RecvPhase::Posted,
        }));
        if let Some(i) = self.unexpected.position(|u| pattern.matches(&u.env)) {
            self.take_unexpected(id, i, capacity);
            return (id, false);
        }
        if let Some(src) = source {
            if let Some(PeerState::Gone(reason)) = self.peers.get(src as usize).map(|p| &p.state) {
                let reason = reason.clone();
                self.reqs
                    .complete(id, Err(ReqError::PeerLost { peer: src, reason }));
                return (id, false);
            }
        }
        self.posted.push((id, pattern));
        (id, true)
    }

    /// Receive `id` (of `capacity` bytes) matched unexpected message `i`:
    /// it fails if the message does not fit (which stays queued), or takes it.
    pub(super) fn take_unexpected(&mut self, id: ReqId, i: usize, capacity: usize) {
        match self.take_queued(i, capacity, false) {
            None => {}
            Some(Err(e)) => self.reqs.complete(id, Err(e)),
            Some(Ok((info, Body::Eager { data, .. }))) => {
                self.deliveries.push_back((id, data));
                self.reqs.complete(id, Ok(info));
            }
            Some(Ok((info, Body::Rts { sreq, addr }))) => {
                self.start_rendezvous_recv(id, info, sreq, addr);
            }
        }
    }

    /// Queued message `i`, for a receive of `capacity` bytes: `Truncated`
    /// if it does not fit (it stays queued); otherwise it leaves the queue,
    /// its credit goes back and a synchronous eager sender is acknowledged.
    /// With `eager_only`, a rendezvous is left queued (`None`).
    #[inline]
    pub(super) fn take_queued(
        &mut self,
        i: usize,
        capacity: usize,
        eager_only: bool,
    ) -> Option<Result<(MsgInfo, Body), ReqError>> {
        let u = self.unexpected.get(i)?;
        if eager_only && matches!(u.body, Body::Rts { .. }) {
            return None;
        }
        if u.len > capacity {
            return Some(Err(ReqError::Truncated {
                source: u.env.source,
                tag: u.env.tag,
                capacity,
                incoming: u.len,
            }));
        }
        let u = self.unexpected.remove(i)?;
        let info = MsgInfo {
            source: u.env.source,
            tag: u.env.tag,
            len: u.len,
        };
        self.consumed(u.env.source, u.cost());
        if let Body::Eager {
            sync_sreq: Some(sreq),
            ..
        } = u.body
        {
            self.queue_control(u.env.source, Frame::SyncAck { sreq });
        }
        Some(Ok((info, u.body)))
    }

    /// An eager message of `len` bytes from `peer` was matched on arrival:
    /// its credit goes back and a synchronous sender is acknowledged.
    #[inline]
    pub(super) fn eager_matched(&mut self, peer: Rank, len: usize, sync_sreq: Option<u64>) {
        if let Some(sreq) = sync_sreq {
            self.queue_control(peer, Frame::SyncAck { sreq });
        }
        self.consumed(peer, eager_cost(len as u64));
    }

    /// A message from `peer` costing `cost` credit was matched: credit goes
    /// back once a quarter of the window has accumulated.
    #[inline]
    pub(super) fn consumed(&mut self, peer: Rank, cost: u64) {
        if peer == self.me {
            return;
        }
        let quarter = self.window / 4;
        let Some(p) = self.peers.get_mut(peer as usize) else {
            return;
        };
        if let Some(bytes) = p.flow.owe(cost, quarter) {
            self.queue_control(peer, Frame::Credit { bytes });
        }
    }

    pub(super) fn queue_control(&mut self, peer: Rank, frame: Frame) {
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
    pub(super) fn match_posted(&mut self, env: &Envelope, len: usize) -> Option<ReqId> {
        loop {
            let pos = self.posted.position(|(_, p)| p.matches(env))?;
            let (id, _) = self.posted.remove(pos)?;
            let capacity = match self.reqs.recv_mut(id) {
                Some(r) => r.capacity,
                None => continue,
            };
            if len > capacity {
                self.reqs.complete(
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
}
