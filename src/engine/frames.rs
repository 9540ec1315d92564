//! What the engine does with each frame a peer sends: one handler per kind,
//! like MPICH's per-message callbacks. [`Engine::handle_frame`] validates
//! the sender and dispatches; payloads follow through
//! [`Engine::handle_payload_done`].

use super::flow::{eager_cost, ENVELOPE_COST};
use super::matching::{Envelope, Pattern};
use super::requests::{MsgInfo, Rdv, RecvPhase, ReqId, ReqKind, SendPhase, SendState};
use super::{
    direct, Body, Dest, Engine, Incoming, Payload, PeerState, ProtocolError, Transmit, Unexpected,
};
use crate::ids::Rank;
use crate::wire::Frame;

impl Engine {
    /// Handles one validated frame header from `peer`. Returns where its
    /// payload goes (`None` when it has none). Any `Err` is a protocol
    /// violation: the driver must drop the link and call `handle_peer_lost`.
    pub(crate) fn handle_frame(
        &mut self,
        peer: Rank,
        frame: Frame,
    ) -> Result<Option<Dest>, ProtocolError> {
        self.check_header_allowed(peer)?;
        match frame {
            Frame::Eager {
                context,
                tag,
                len,
                sync,
                sreq,
            } => self.on_eager(peer, context, tag, len, sync.then_some(sreq), None),
            Frame::Rts {
                context,
                tag,
                len,
                sreq,
                addr,
            } => self
                .on_rts(peer, context, tag, len, sreq, addr)
                .map(|()| None),
            Frame::Cts { sreq, rreq } => self.on_cts(peer, sreq, rreq).map(|()| None),
            Frame::Data { rreq, len } => self.on_data(peer, rreq, len).map(Some),
            Frame::SyncAck { sreq } => self.on_sync_ack(peer, sreq).map(|()| None),
            Frame::CtsCoop {
                sreq,
                rreq,
                addr,
                split,
            } => self
                .on_cts_coop(peer, sreq, rreq, addr, split)
                .map(|()| None),
            Frame::Pushed { rreq, ok } => self.on_pushed(peer, rreq, ok).map(|()| None),
            Frame::Fin { sreq } => self.on_fin(peer, sreq).map(|()| None),
            Frame::Bye => {
                self.handle_peer_lost(peer, "the peer finalized".into());
                Ok(None)
            }
            Frame::Credit { bytes } => {
                if let Some(p) = self.peers.get_mut(peer as usize) {
                    p.flow.grant(bytes, &mut self.transmits);
                }
                Ok(None)
            }
        }
    }

    /// An eager message whose whole payload is at hand (read with its
    /// header): the driver copies `payload` into the returned destination
    /// at once, and the receive it completes is complete when this returns
    /// (no [`Engine::handle_payload_done`] follows). `None`: the engine
    /// kept the message (unexpected). Never [`Dest::Staging`]. Only for
    /// `Frame::Eager` (anything else is an error).
    pub(crate) fn handle_eager_whole(
        &mut self,
        peer: Rank,
        frame: Frame,
        payload: &[u8],
    ) -> Result<Option<Dest>, ProtocolError> {
        let Frame::Eager {
            context,
            tag,
            len,
            sync,
            sreq,
        } = frame
        else {
            return Err(ProtocolError::new(format!(
                "{frame:?} handled as a plain eager message"
            )));
        };
        if len != payload.len() as u64 {
            return Err(ProtocolError::new(format!(
                "eager payload of {} bytes announced as {len}",
                payload.len()
            )));
        }
        let env = Envelope {
            context,
            source: peer,
            tag,
        };
        if !sync {
            if let Some(id) = self.take_first_posted(&env, payload.len()) {
                return Ok(Some(Dest::Req(id)));
            }
        }
        self.check_header_allowed(peer)?;
        self.on_eager(peer, context, tag, len, sync.then_some(sreq), Some(payload))
    }

    /// A plain eager message of `len` bytes from `peer`, whole at hand
    /// (still in its link), that the direct receive or else the first
    /// posted receive takes now, finished: the caller then copies the
    /// payload into that receive's buffer (`dest`). `None`: the general
    /// way ([`Engine::handle_eager_whole`] and the rest) must handle it,
    /// and decides as this would have. See [`Engine::take_first_posted`]
    /// and `Engine::take_direct_now`.
    #[inline]
    pub(crate) fn take_eager_now(
        &mut self,
        peer: Rank,
        context: u32,
        tag: u32,
        len: usize,
    ) -> Option<Dest> {
        let env = Envelope {
            context,
            source: peer,
            tag,
        };
        if self.direct.is_some() {
            return self.take_direct_now(&env, len).then_some(Dest::Direct);
        }
        self.take_first_posted(&env, len).map(Dest::Req)
    }

    /// The usual case of a stream of small messages, done in one pass: a
    /// plain eager message of `len` bytes, at hand whole, from a peer whose
    /// link is between frames, that the first posted receive takes (it
    /// matches and has room) while no direct receive waits. The receive
    /// is complete when this returns. Anything else (`None`) goes the
    /// general way ([`Engine::on_eager`]), which decides exactly as this
    /// would have: the first posted receive that matches is the first one
    /// in the queue.
    #[inline(always)]
    fn take_first_posted(&mut self, env: &Envelope, len: usize) -> Option<ReqId> {
        if self.direct.is_some() {
            return None;
        }
        let p = self.peers.get(env.source as usize)?;
        if p.incoming.is_some() || len > p.eager_limit || env.source == self.me {
            return None;
        }
        let &(id, pattern) = self.posted.front()?;
        if !pattern.matches(env) {
            return None;
        }
        let e = self.reqs.get_mut(id)?;
        match &e.kind {
            ReqKind::Recv(r) if e.result.is_none() && len <= r.capacity => {}
            _ => return None,
        }
        e.result = Some(Ok(MsgInfo {
            source: env.source,
            tag: env.tag,
            len,
        }));
        self.posted.pop_front();
        self.consumed(env.source, eager_cost(len as u64));
        Some(id)
    }

    /// Whether a receive of `pattern`, about to be posted, may take the
    /// next message from its (named) source straight from the link, before
    /// it is posted (`Progress::take_at_post`): no receive posted before
    /// it and no direct receive waits (either would come first), no
    /// message of that source is part-way, and no queued message matches
    /// (a queued one arrived before anything still in the link).
    #[inline]
    pub(crate) fn may_take_at_post(&self, pattern: &Pattern) -> bool {
        let Some(src) = pattern.source else {
            return false;
        };
        self.direct.is_none()
            && self.posted.len() == 0
            && src != self.me
            && self
                .peers
                .get(src as usize)
                .is_some_and(|p| p.incoming.is_none() && p.state == PeerState::Open)
            && self
                .unexpected
                .position(|u| pattern.matches(&u.env))
                .is_none()
    }

    /// The next message from `env.source`, a plain eager one of `len`
    /// bytes at hand whole, for a receive of `pattern` and `capacity`
    /// bytes that [`Engine::may_take_at_post`] allowed: whether the
    /// receive takes it (it matches and fits; its credit is then owed, as
    /// for any matched message: [`Engine::consumed`]). The receive never enters
    /// the engine: the caller copies the payload and completes it.
    #[inline]
    pub(crate) fn take_at_post(
        &mut self,
        pattern: &Pattern,
        capacity: usize,
        env: &Envelope,
        len: usize,
    ) -> bool {
        if !pattern.matches(env) || len > capacity {
            return false;
        }
        if self
            .peers
            .get(env.source as usize)
            .is_none_or(|p| len > p.eager_limit)
        {
            return false;
        }
        self.consumed(env.source, eager_cost(len as u64));
        self.stats.taken_at_post += 1;
        true
    }

    /// An eager message: into the first matching posted receive (or the
    /// direct receive), or staged as unexpected (it "arrives" when its
    /// payload is complete). With `whole`, the payload is at hand: a
    /// matched receive completes now and an unexpected message is kept at
    /// once (see [`Engine::handle_eager_whole`]).
    fn on_eager(
        &mut self,
        peer: Rank,
        context: u32,
        tag: u32,
        len: u64,
        sync_sreq: Option<u64>,
        whole: Option<&[u8]>,
    ) -> Result<Option<Dest>, ProtocolError> {
        let limit = self.eager_accept_limit(peer);
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= limit)
            .ok_or_else(|| {
                ProtocolError::new(format!(
                    "eager message of {len} bytes exceeds the eager limit"
                ))
            })?;
        let env = Envelope {
            context,
            source: peer,
            tag,
        };
        let info = MsgInfo {
            source: peer,
            tag,
            len,
        };
        // The direct receive, when there is one, was begun with no receive
        // posted (`begin_direct`): any posted now came later (another
        // thread), so it matches first.
        if self.direct.is_some() {
            if let direct::DirectMatch::Take = self.match_direct(&env, len) {
                self.eager_matched(peer, len, sync_sreq);
                if whole.is_some() {
                    self.direct_payload_done();
                    return Ok(Some(Dest::Direct));
                }
                return Ok(Some(self.direct_incoming(peer)));
            }
        }
        let incoming = if let Some(id) = self.match_posted(&env, len) {
            self.eager_matched(peer, len, sync_sreq);
            if whole.is_some() {
                self.reqs.complete(id, Ok(info));
                return Ok(Some(Dest::Req(id)));
            }
            if let Some(r) = self.reqs.recv_mut(id) {
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
            Incoming::Recv(id)
        } else {
            self.stats.unexpected_arrivals += 1;
            let mut data = self.pool.take(len);
            if let Some(payload) = whole {
                crate::sys::copy::copy(&mut data, payload);
                self.queue_unexpected_eager(env, data, sync_sreq);
                return Ok(None);
            }
            Incoming::Staged {
                env,
                data,
                sync_sreq,
            }
        };
        let dest = match incoming {
            Incoming::Recv(id) => Dest::Req(id),
            Incoming::Staged { .. } => Dest::Staging,
            Incoming::Direct => Dest::Direct,
        };
        if let Some(p) = self.peers.get_mut(peer as usize) {
            p.incoming = Some(incoming);
        }
        Ok(Some(dest))
    }

    /// The envelope of a rendezvous message: start the transfer into the
    /// first matching posted receive, or queue it as unexpected.
    fn on_rts(
        &mut self,
        peer: Rank,
        context: u32,
        tag: u32,
        len: u64,
        sreq: u64,
        addr: u64,
    ) -> Result<(), ProtocolError> {
        let len = usize::try_from(len)
            .map_err(|_| ProtocolError::new(format!("message of {len} bytes is too large")))?;
        let env = Envelope {
            context,
            source: peer,
            tag,
        };
        // A direct receive waiting for it came first (see `on_eager`): it
        // falls back to an ordinary receive, which finds it queued.
        let direct_first = self.direct.is_some() && self.direct_waits_for(&env);
        if let Some(id) = (!direct_first)
            .then(|| self.match_posted(&env, len))
            .flatten()
        {
            let info = MsgInfo {
                source: peer,
                tag,
                len,
            };
            self.consumed(peer, ENVELOPE_COST);
            self.start_rendezvous_recv(id, info, sreq, addr);
        } else {
            self.stats.unexpected_arrivals += 1;
            self.defer_direct(&env);
            self.unexpected.push(Unexpected {
                env,
                len,
                body: Body::Rts { sreq, addr },
            });
        }
        Ok(())
    }

    /// CTS for our send: queue DATA (also after CTS_COOP, when the
    /// receiver falls back to DATA).
    fn on_cts(&mut self, peer: Rank, sreq: u64, rreq: u64) -> Result<(), ProtocolError> {
        let (id, s) = self.pending_send(sreq, peer, "CTS", |s| {
            matches!(s.phase, SendPhase::Rendezvous(Rdv::Announced | Rdv::Pushed))
        })?;
        s.phase = SendPhase::Rendezvous(Rdv::Data);
        let len = s.len as u64;
        self.transmits.push_back(Transmit {
            peer,
            frame: Frame::Data { rreq, len },
            payload: Payload::Send(id),
        });
        Ok(())
    }

    /// DATA for our receive: its payload goes straight into the buffer.
    fn on_data(&mut self, peer: Rank, rreq: u64, len: u64) -> Result<Dest, ProtocolError> {
        let id = ReqId::from_wire(rreq);
        match self.reqs.recv_mut(id).map(|r| &r.phase) {
            Some(RecvPhase::Receiving {
                info,
                rendezvous: true,
                ..
            }) if info.source == peer && info.len as u64 == len => {}
            _ => {
                return Err(ProtocolError::new(format!(
                    "DATA for unknown receive request {rreq:#x}"
                )))
            }
        }
        if let Some(p) = self.peers.get_mut(peer as usize) {
            p.incoming = Some(Incoming::Recv(id));
        }
        Ok(Dest::Req(id))
    }

    fn on_sync_ack(&mut self, peer: Rank, sreq: u64) -> Result<(), ProtocolError> {
        let (id, s) = self.pending_send(sreq, peer, "SYNC_ACK", |s| {
            matches!(s.phase, SendPhase::Eager { need_ack: true, .. })
        })?;
        if let SendPhase::Eager { need_ack, .. } = &mut s.phase {
            *need_ack = false;
        }
        self.maybe_finish_send(id);
        Ok(())
    }

    /// FIN: the receiver copied our message itself; the send is done.
    fn on_fin(&mut self, peer: Rank, sreq: u64) -> Result<(), ProtocolError> {
        let (id, _) = self.pending_send(sreq, peer, "FIN", |s| {
            matches!(s.phase, SendPhase::Rendezvous(Rdv::Announced | Rdv::Pushed))
        })?;
        self.finish_send(id);
        Ok(())
    }

    /// The pending send `sreq` (as named on the wire) to `peer`, if it
    /// satisfies `ok`; otherwise a protocol error naming `frame`.
    pub(super) fn pending_send(
        &mut self,
        sreq: u64,
        peer: Rank,
        frame: &str,
        ok: impl FnOnce(&SendState) -> bool,
    ) -> Result<(ReqId, &mut SendState), ProtocolError> {
        let id = ReqId::from_wire(sreq);
        match self.reqs.send_mut(id) {
            Some(s) if s.peer == peer && ok(s) => Ok((id, s)),
            _ => Err(ProtocolError::new(format!(
                "{frame} for unknown send request {sreq:#x}"
            ))),
        }
    }

    /// The staging buffer of the unexpected eager message arriving from `peer`.
    pub(crate) fn staging_mut(&mut self, peer: Rank) -> Option<&mut [u8]> {
        match self.peers.get_mut(peer as usize)?.incoming.as_mut()? {
            Incoming::Staged { data, .. } => Some(data),
            Incoming::Recv(_) | Incoming::Direct => None,
        }
    }

    /// A frame header from `peer` may be handled now: the peer is known
    /// and no payload of its previous frame is still expected.
    fn check_header_allowed(&self, peer: Rank) -> Result<(), ProtocolError> {
        match self.peers.get(peer as usize) {
            None => Err(ProtocolError::new(format!(
                "frame from unknown rank {peer}"
            ))),
            Some(p) if p.incoming.is_some() => Err(ProtocolError::new(
                "header received while a payload was expected".into(),
            )),
            Some(_) => Ok(()),
        }
    }

    /// An eager message no receive took: queued as unexpected (a direct
    /// receive it matches falls back to an ordinary one, which takes it).
    fn queue_unexpected_eager(&mut self, env: Envelope, data: Vec<u8>, sync_sreq: Option<u64>) {
        self.defer_direct(&env);
        self.unexpected.push(Unexpected {
            env,
            len: data.len(),
            body: Body::Eager { data, sync_sreq },
        });
    }

    /// All payload bytes of the current frame from `peer` have arrived.
    pub(crate) fn handle_payload_done(&mut self, peer: Rank) {
        let Some(incoming) = self
            .peers
            .get_mut(peer as usize)
            .and_then(|p| p.incoming.take())
        else {
            return;
        };
        match incoming {
            Incoming::Recv(id) => {
                let info = match self.reqs.get(id).map(|e| &e.kind) {
                    Some(super::requests::ReqKind::Recv(super::requests::RecvState {
                        phase: RecvPhase::Receiving { info, .. },
                        ..
                    })) => *info,
                    _ => return,
                };
                self.reqs.complete(id, Ok(info));
            }
            Incoming::Staged {
                env,
                data,
                sync_sreq,
            } => {
                // The message "arrives" now: a receive posted meanwhile may take it.
                let len = data.len();
                if let Some(id) = self.match_posted(&env, len) {
                    self.eager_matched(peer, len, sync_sreq);
                    self.deliveries.push_back((id, data));
                    let info = MsgInfo {
                        source: env.source,
                        tag: env.tag,
                        len,
                    };
                    self.reqs.complete(id, Ok(info));
                } else {
                    self.queue_unexpected_eager(env, data, sync_sreq);
                }
            }
            Incoming::Direct => self.direct_payload_done(),
        }
    }
}
