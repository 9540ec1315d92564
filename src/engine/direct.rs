//! Direct receives: a blocking receive matched without a request.
//!
//! A rank blocked in `recv` waits for one message and does nothing else, so
//! its receive needs none of a request's machinery (a slot in the slab, a
//! place in the posted queue, a loan looked up by id, a result collected
//! afterwards). When nothing is posted before it, the driver announces it
//! with [`Engine::begin_direct`]: a queued eager message that matches is
//! taken at once; otherwise an arriving eager message that matches is
//! taken on the spot, and its payload goes to [`Dest::Direct`] (the
//! receive's buffer, which the driver holds) straight from the link. The
//! outcome is read with [`Engine::end_direct`].
//!
//! Only a plain eager message is taken this way. A message that needs more
//! (a rendezvous, or an unexpected message whose payload had begun to
//! arrive before the receive) is queued as unexpected, as if no receive
//! were waiting, and the direct receive ends in [`DirectOutcome::Fallback`]:
//! the driver then posts an ordinary receive, which takes that very message
//! first (matching order is unchanged: nothing was posted before the direct
//! receive, and the message is the first queued one that matches).

use super::matching::{Envelope, Pattern};
use super::requests::{MsgInfo, ReqError};
use super::{Body, Dest, Engine, Incoming, PeerState};
use crate::ids::Rank;

/// The direct receive waiting in the engine.
#[derive(Debug)]
pub(super) struct DirectRecv {
    pattern: Pattern,
    capacity: usize,
    state: DirectState,
}

impl DirectRecv {
    /// The messages it takes.
    pub(super) fn pattern(&self) -> &Pattern {
        &self.pattern
    }
}

#[derive(Debug)]
enum DirectState {
    /// Nothing matched yet.
    Waiting,
    /// A message matched; its payload is arriving.
    Receiving(MsgInfo),
    /// Finished (received, truncated or failed).
    Done(Result<MsgInfo, ReqError>),
    /// The matching message needs an ordinary receive.
    Fallback,
}

/// How a direct receive ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DirectOutcome {
    /// Received (or failed: truncated, peer lost).
    Done(Result<MsgInfo, ReqError>),
    /// The matching message was queued: post an ordinary receive for it.
    Fallback,
    /// Ended before its message arrived; if a payload was on its way, the
    /// engine keeps sending it to [`Dest::Direct`] until it is complete (the
    /// driver must give those bytes somewhere harmless).
    Cancelled { receiving: bool },
}

/// What an arriving message is to the direct receive.
pub(super) enum DirectMatch {
    /// Not its message (or there is no direct receive).
    No,
    /// Taken: the payload goes to [`Dest::Direct`].
    Take,
}

/// How a direct receive starts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DirectStart {
    /// Waiting for its message: make progress until
    /// [`Engine::direct_finished`].
    Waiting,
    /// A queued eager message matched and was taken: the driver copies
    /// it into the buffer and hands the vector back with
    /// [`Engine::recycle`].
    Queued(MsgInfo, Vec<u8>),
    /// Finished at once: the queued message that matches is larger than
    /// the buffer (it stays queued, as for any receive).
    Truncated(ReqError),
    /// It cannot be a direct receive: post an ordinary one.
    Ordinary,
}

impl Engine {
    /// Starts a direct receive of at most `capacity` bytes. It cannot be
    /// one (`Ordinary`) when a receive is posted (that one must match
    /// first), when the first queued message that matches is a rendezvous,
    /// when the named source is gone (an ordinary receive reports it), or
    /// while an earlier direct receive is active or still has a payload
    /// arriving.
    pub(crate) fn begin_direct(
        &mut self,
        context: u32,
        source: Option<Rank>,
        tag: Option<u32>,
        capacity: usize,
    ) -> DirectStart {
        let pattern = Pattern {
            context,
            source,
            tag,
        };
        if self.direct.is_some() || self.direct_draining || self.posted.len() != 0 {
            return DirectStart::Ordinary;
        }
        if let Some(i) = self.unexpected.position(|u| pattern.matches(&u.env)) {
            return self.take_queued_direct(i, capacity);
        }
        if let Some(src) = source {
            match self.peers.get(src as usize).map(|p| &p.state) {
                Some(PeerState::Open) => {}
                _ => return DirectStart::Ordinary,
            }
        }
        self.direct = Some(DirectRecv {
            pattern,
            capacity,
            state: DirectState::Waiting,
        });
        DirectStart::Waiting
    }

    /// A direct receive of `capacity` bytes matched queued message `i`.
    #[inline]
    fn take_queued_direct(&mut self, i: usize, capacity: usize) -> DirectStart {
        // A rendezvous needs a request: it is left queued (`None`) for an
        // ordinary receive.
        match self.take_queued(i, capacity, true) {
            Some(Err(e)) => DirectStart::Truncated(e),
            Some(Ok((info, Body::Eager { data, .. }))) => DirectStart::Queued(info, data),
            Some(Ok((_, Body::Rts { .. }))) | None => DirectStart::Ordinary,
        }
    }

    /// A plain eager message of `len` bytes, whole at hand, from a peer
    /// between frames and within its eager limit, that the waiting direct
    /// receive takes: it matches and fits. The receive is finished when
    /// this returns true; anything else (a mismatch, a truncation, a peer
    /// mid-payload) is left to the general way (`Engine::on_eager`), which
    /// decides as this would have for a message it takes. Out of line: it
    /// serves one message per blocking receive, and inlined it made the
    /// stream of messages into posted receives 20 instructions dearer.
    #[inline(never)]
    pub(super) fn take_direct_now(&mut self, env: &Envelope, len: usize) -> bool {
        let Some(p) = self.peers.get(env.source as usize) else {
            return false;
        };
        if p.incoming.is_some() || len > p.eager_limit || env.source == self.me {
            return false;
        }
        let Some(d) = self.direct.as_mut() else {
            return false;
        };
        if self.direct_draining
            || !matches!(d.state, DirectState::Waiting)
            || !d.pattern.matches(env)
            || len > d.capacity
        {
            return false;
        }
        d.state = DirectState::Done(Ok(MsgInfo {
            source: env.source,
            tag: env.tag,
            len,
        }));
        self.eager_matched(env.source, len, None);
        true
    }

    /// Whether the direct receive has an outcome (finished, or falls back).
    #[inline]
    pub(crate) fn direct_finished(&self) -> bool {
        matches!(
            self.direct.as_ref().map(|d| &d.state),
            Some(DirectState::Done(_) | DirectState::Fallback)
        )
    }

    /// Ends the direct receive and says how.
    pub(crate) fn end_direct(&mut self) -> DirectOutcome {
        match self.direct.take().map(|d| d.state) {
            Some(DirectState::Done(r)) => DirectOutcome::Done(r),
            Some(DirectState::Fallback) => DirectOutcome::Fallback,
            Some(DirectState::Receiving(_)) => {
                self.direct_draining = true;
                DirectOutcome::Cancelled { receiving: true }
            }
            Some(DirectState::Waiting) | None => DirectOutcome::Cancelled { receiving: false },
        }
    }

    /// An eager message of `len` bytes that no posted receive took: the
    /// direct receive's, if it matches (a message too large for it fails
    /// the receive with `Truncated` and stays queued, as for any receive).
    pub(super) fn match_direct(&mut self, env: &Envelope, len: usize) -> DirectMatch {
        let Some(d) = self.direct.as_mut() else {
            return DirectMatch::No;
        };
        if !matches!(d.state, DirectState::Waiting) || !d.pattern.matches(env) {
            return DirectMatch::No;
        }
        if len > d.capacity {
            d.state = DirectState::Done(Err(ReqError::Truncated {
                source: env.source,
                tag: env.tag,
                capacity: d.capacity,
                incoming: len,
            }));
            return DirectMatch::No;
        }
        d.state = DirectState::Receiving(MsgInfo {
            source: env.source,
            tag: env.tag,
            len,
        });
        DirectMatch::Take
    }

    /// Whether the direct receive is waiting for a message like `env`.
    pub(super) fn direct_waits_for(&self, env: &Envelope) -> bool {
        self.direct
            .as_ref()
            .is_some_and(|d| matches!(d.state, DirectState::Waiting) && d.pattern.matches(env))
    }

    /// A message that no posted receive took and that only an ordinary
    /// receive can take (it is queued as unexpected): if it is the direct
    /// receive's, that one falls back.
    pub(super) fn defer_direct(&mut self, env: &Envelope) {
        if let Some(d) = self.direct.as_mut() {
            if matches!(d.state, DirectState::Waiting) && d.pattern.matches(env) {
                d.state = DirectState::Fallback;
            }
        }
    }

    /// The direct receive's payload is complete.
    pub(super) fn direct_payload_done(&mut self) {
        if self.direct_draining {
            self.direct_draining = false;
            return;
        }
        if let Some(d) = self.direct.as_mut() {
            if let DirectState::Receiving(info) = d.state {
                d.state = DirectState::Done(Ok(info));
            }
        }
    }

    /// `peer` is lost: a direct receive that needs it fails.
    pub(super) fn direct_peer_lost(&mut self, peer: Rank, reason: &str, was_receiving: bool) {
        if was_receiving {
            self.direct_draining = false;
        }
        let Some(d) = self.direct.as_mut() else {
            return;
        };
        let fails = match d.state {
            DirectState::Waiting => d.pattern.source == Some(peer),
            DirectState::Receiving(info) => info.source == peer,
            DirectState::Done(_) | DirectState::Fallback => false,
        };
        if fails {
            d.state = DirectState::Done(Err(ReqError::PeerLost {
                peer,
                reason: reason.to_string(),
            }));
        }
    }

    /// Where a taken message's payload goes, and what arrives from `peer`.
    pub(super) fn direct_incoming(&mut self, peer: Rank) -> Dest {
        if let Some(p) = self.peers.get_mut(peer as usize) {
            p.incoming = Some(Incoming::Direct);
        }
        Dest::Direct
    }
}
