//! Single-copy transfers between ranks of one node (cross-memory attach).
//!
//! A rendezvous RTS to a pull-capable peer carries the address of the
//! sender's buffer. The receiver then copies the message straight out of the
//! sender's memory (a *pull*) and answers FIN. From
//! [`Engine::set_coop_min`] bytes on, when the sender has no traffic of its
//! own towards us, the copy is *cooperative*: the receiver sends CTS_COOP
//! with its buffer's address and the split point, pulls the part before the
//! split while the sender writes the rest into the receiver (a *push*) and
//! answers PUSHED; the receiver answers FIN once both parts are in. Any part
//! that fails (the kernel refused cross-memory attach) makes the receiver
//! fetch the message again through the link (CTS → DATA).
//!
//! The driver performs each [`CopyPart`] (it alone touches memory) and
//! reports back with [`Engine::handle_copy_done`].

use super::requests::{RecvPhase, ReqEntry, ReqId, ReqKind};
use super::{Engine, Payload, ProtocolError, Transmit};
use crate::ids::Rank;
use crate::wire::Frame;

/// Which way a [`CopyPart`] moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the peer's memory into our receive's buffer.
    Pull,
    /// From our send's buffer into the peer's memory.
    Push,
}

/// One part of a single-copy transfer, for the driver: bytes
/// `offset..offset + len` of the message, between our request `req`'s
/// buffer and address `addr + offset` of `peer`'s memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyPart {
    pub(crate) peer: Rank,
    pub(crate) dir: Direction,
    /// Our request whose buffer is copied: the receive (pull) or the send (push).
    pub(crate) req: ReqId,
    /// The peer's request as named on the wire: the receive a push writes
    /// into (answered with PUSHED); the send a pull reads from.
    pub(crate) remote: u64,
    /// Address of the whole message in the peer's memory.
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

impl Engine {
    /// A matched rendezvous message `info` from the sender's request
    /// `sreq`: pull it (cooperatively if it pays) when the RTS carried an
    /// address, otherwise ask for DATA with a CTS.
    pub(super) fn start_rendezvous_recv(
        &mut self,
        id: ReqId,
        info: super::MsgInfo,
        sreq: u64,
        addr: u64,
    ) {
        if let Some(r) = self.reqs.recv_mut(id) {
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
        if addr == 0 || info.len == 0 {
            self.queue_control(
                info.source,
                Frame::Cts {
                    sreq,
                    rreq: id.to_wire(),
                },
            );
            return;
        }
        // Cooperation pays when the sender's core is otherwise idle; with
        // our own sends to it in flight (traffic both ways) it is busy too.
        let split = coop_split(info.len, self.coop_share);
        let coop = self.coop_min > 0
            && info.len >= self.coop_min
            && split > 0
            && !self.sending_to(info.source);
        if let Some(RecvPhase::Receiving {
            parts,
            push_pending,
            ..
        }) = self.reqs.recv_mut(id).map(|r| &mut r.phase)
        {
            *parts = if coop { 2 } else { 1 };
            *push_pending = coop;
        }
        let first = if coop { split } else { info.len };
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
        self.pulls.push_back(CopyPart {
            peer: info.source,
            dir: Direction::Pull,
            req: id,
            remote: sreq,
            addr,
            offset: 0,
            len: first,
        });
    }

    /// Whether a send to `peer` is still in flight.
    pub(super) fn sending_to(&self, peer: Rank) -> bool {
        self.reqs
            .running()
            .any(|(_, k)| matches!(k, ReqKind::Send(s) if s.peer == peer))
    }

    /// CTS_COOP for our send `sreq`: push our part (`split..`) into the
    /// receiver at `addr`.
    pub(super) fn on_cts_coop(
        &mut self,
        peer: Rank,
        sreq: u64,
        rreq: u64,
        addr: u64,
        split: u64,
    ) -> Result<(), ProtocolError> {
        let (id, s) = self.pending_send(sreq, peer, "CTS_COOP", |s| {
            s.phase == super::requests::SendPhase::Rendezvous(super::requests::Rdv::Announced)
        })?;
        s.phase = super::requests::SendPhase::Rendezvous(super::requests::Rdv::Pushed);
        let len = s.len;
        // The receiver chose the split; it must leave us a part.
        let split = match usize::try_from(split) {
            Ok(split) if split > 0 && split < len && addr != 0 => split,
            _ => {
                return Err(ProtocolError::new(format!(
                    "CTS_COOP splitting a message of {len} bytes at {split}"
                )))
            }
        };
        self.pushes.push_back(CopyPart {
            peer,
            dir: Direction::Push,
            req: id,
            remote: rreq,
            addr,
            offset: split,
            len: len - split,
        });
        Ok(())
    }

    /// PUSHED for our receive `rreq`: the sender's part is in (`ok`), or it
    /// could not write and we pull that part too.
    pub(super) fn on_pushed(
        &mut self,
        peer: Rank,
        rreq: u64,
        ok: bool,
    ) -> Result<(), ProtocolError> {
        let id = ReqId::from_wire(rreq);
        let (len, addr, sreq) = match self.reqs.recv_mut(id).map(|r| &mut r.phase) {
            Some(RecvPhase::Receiving {
                info,
                parts,
                addr,
                push_pending,
                sreq,
                ..
            }) if info.source == peer && *parts > 0 && *addr != 0 && *push_pending => {
                *push_pending = false;
                (info.len, *addr, *sreq)
            }
            _ => {
                return Err(ProtocolError::new(format!(
                    "PUSHED for unknown receive request {rreq:#x}"
                )))
            }
        };
        if ok {
            self.part_done(id, peer, true);
        } else {
            // The sender could not write into us: pull its part too.
            let split = coop_split(len, self.coop_share);
            self.pulls.push_back(CopyPart {
                peer,
                dir: Direction::Pull,
                req: id,
                remote: sreq,
                addr,
                offset: split,
                len: len - split,
            });
        }
        Ok(())
    }

    /// Whether copies wait in [`Engine::poll_copy`].
    pub(crate) fn has_copies(&self) -> bool {
        !self.pulls.is_empty() || !self.pushes.is_empty()
    }

    /// Next part of a single-copy transfer for the driver: our pushes (the
    /// peer waits for them) before our pulls.
    pub(crate) fn poll_copy(&mut self) -> Option<CopyPart> {
        self.pushes.pop_front().or_else(|| self.pulls.pop_front())
    }

    /// The driver finished (or could not do) a copy part. A push is
    /// answered with PUSHED; a pull counts towards its receive, which
    /// completes (and answers FIN) when every part is in, or falls back to
    /// CTS → DATA if a part failed.
    pub(crate) fn handle_copy_done(&mut self, part: CopyPart, ok: bool) {
        match part.dir {
            Direction::Push => self.queue_control(
                part.peer,
                Frame::Pushed {
                    rreq: part.remote,
                    ok,
                },
            ),
            Direction::Pull => self.part_done(part.req, part.peer, ok),
        }
    }

    /// One part of the single-copy transfer into receive `rreq` finished.
    fn part_done(&mut self, rreq: ReqId, peer: Rank, ok: bool) {
        let (info, sreq, left, failed) = match self.reqs.get_mut(rreq) {
            Some(ReqEntry {
                kind:
                    ReqKind::Recv(super::requests::RecvState {
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
            self.reqs.complete(rreq, Ok(info));
            self.queue_control(peer, Frame::Fin { sreq });
        }
    }

    /// The peer that may still write into receive `id`'s buffer by itself
    /// (cross-memory attach): it was sent the buffer's address in a
    /// CTS_COOP and has not answered with PUSHED. Such a buffer must stay
    /// valid until the answer comes or the peer's process is gone, even if
    /// the request fails or is abandoned meanwhile.
    pub(crate) fn remote_writer(&self, id: ReqId) -> Option<Rank> {
        match &self.reqs.get(id)?.kind {
            ReqKind::Recv(super::requests::RecvState {
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
}
