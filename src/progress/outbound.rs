//! Frames on their way out: the per-peer queues the engine's transmits go
//! into, flushed to the links as far as they take them.
//!
//! A send's header and payload go out in one vectored write, straight from
//! the user's slice. An eager frame that the link cannot take right now is
//! copied aside, so standard-mode sends of small messages never wait for
//! the receiver (MPI's usual eager buffering); rendezvous DATA always goes
//! from the user's buffer.

use super::Progress;
use crate::engine::{Payload, ReqId};
use crate::ids::Rank;
use crate::transport::LinkError;
use crate::wire::{EncodedHeader, Frame};
use std::io::IoSlice;

/// Where a queued frame's payload comes from.
#[derive(Debug)]
pub(super) enum OutPayload {
    None,
    /// The loaned buffer of this send.
    Send(ReqId),
    /// A private copy.
    Owned(Vec<u8>),
}

/// A frame queued for a peer, possibly partly written.
#[derive(Debug)]
pub(super) struct OutFrame {
    pub(super) header: EncodedHeader,
    pub(super) payload: OutPayload,
    /// An EAGER frame (its payload may be copied aside).
    pub(super) eager: bool,
    /// Bytes of header and payload already written.
    pub(super) sent: usize,
}

impl OutFrame {
    /// A control frame with no payload.
    pub(super) fn control(frame: Frame) -> Self {
        OutFrame {
            header: frame.encode(),
            payload: OutPayload::None,
            eager: false,
            sent: 0,
        }
    }
}

impl Progress {
    /// Moves the engine's output to the links and pushes what the links take.
    #[inline]
    pub(crate) fn pump(&mut self) {
        if self.engine.has_transmits() || !self.pending_out.is_empty() || !self.lost.is_empty() {
            self.pump_now();
        }
    }

    fn pump_now(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            let peer = t.peer;
            let eager = matches!(t.frame, Frame::Eager { .. });
            let mut frame = t.frame;
            let payload = match t.payload {
                Payload::None => OutPayload::None,
                Payload::Send(id) => OutPayload::Send(id),
                Payload::Advertise(id) => {
                    if let Frame::Rts { addr, .. } = &mut frame {
                        *addr = self.bufs.send_bytes(id).as_ptr() as u64;
                    }
                    OutPayload::None
                }
                Payload::AdvertiseRecv(id) => {
                    if let Frame::CtsCoop { addr, .. } = &mut frame {
                        *addr = self.bufs.recv_bytes_mut(id).as_mut_ptr() as u64;
                    }
                    OutPayload::None
                }
            };
            let out = OutFrame {
                header: frame.encode(),
                payload,
                eager,
                sent: 0,
            };
            if !self.enqueue(peer, out) {
                continue;
            }
            if let Err(e) = self.links.open(peer) {
                self.lost.push((peer, e.0));
            }
        }
        let mut i = 0;
        while i < self.pending_out.len() {
            let peer = self.pending_out[i];
            if let Err(e) = self.flush(peer) {
                self.lost.push((peer, e.0));
            }
            if self.out[peer as usize].is_empty() {
                self.pending_out.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.handle_lost();
    }

    /// Queues `f` for `peer` (false for a rank outside the job).
    pub(super) fn enqueue(&mut self, peer: Rank, f: OutFrame) -> bool {
        let Some(q) = self.out.get_mut(peer as usize) else {
            return false;
        };
        q.push_back(f);
        if !self.pending_out.contains(&peer) {
            self.pending_out.push(peer);
        }
        true
    }

    /// Writes `peer`'s queued frames as far as its link takes them.
    fn flush(&mut self, peer: Rank) -> Result<(), LinkError> {
        let q = &mut self.out[peer as usize];
        while let Some(f) = q.front_mut() {
            let payload: &[u8] = match &f.payload {
                OutPayload::None => &[],
                OutPayload::Send(id) => self.bufs.send_bytes(*id),
                OutPayload::Owned(v) => v,
            };
            let hlen = f.header.len();
            let total = hlen + payload.len();
            let n = {
                let bufs;
                let slices: &[IoSlice<'_>] = if f.sent < hlen {
                    bufs = [IoSlice::new(&f.header[f.sent..]), IoSlice::new(payload)];
                    &bufs
                } else {
                    bufs = [IoSlice::new(&payload[f.sent - hlen..]), IoSlice::new(&[])];
                    &bufs[..1]
                };
                self.links.write(peer, slices)?
            };
            f.sent += n;
            self.wrote |= n > 0;
            if f.sent == total {
                if let Some(OutPayload::Send(id)) = q.pop_front().map(|f| f.payload) {
                    self.engine.handle_written(id);
                }
                continue;
            }
            break;
        }
        Ok(())
    }

    /// Sends a small message at once, without a request: writes header and
    /// payload straight to the link when nothing is queued for `peer`, and
    /// buffers any part the link does not take (eager semantics). Returns
    /// false when the general path must be used.
    pub(crate) fn send_eager_now(
        &mut self,
        peer: Rank,
        context: u32,
        tag: u32,
        bytes: &[u8],
    ) -> bool {
        if self.out.get(peer as usize).is_none_or(|q| !q.is_empty()) || !self.links.writable(peer) {
            return false;
        }
        let Some(frame) = self.engine.eager_frame_now(peer, context, tag, bytes.len()) else {
            return false;
        };
        let header = frame.encode();
        let sent = match self.links.write_small(peer, &header, bytes) {
            Ok(n) => n,
            Err(e) => {
                // The message is buffered; the loss is reported by the next progress.
                self.lost.push((peer, e.0));
                0
            }
        };
        if sent < header.len() + bytes.len() {
            self.enqueue(
                peer,
                OutFrame {
                    header,
                    payload: OutPayload::Owned(crate::sys::copy::to_vec(bytes)),
                    eager: true,
                    sent,
                },
            );
        }
        true
    }

    /// Copies the queued payload of eager send `id` aside and completes the
    /// send, so a blocking standard-mode send of a small message never waits
    /// for the receiver (MPI's eager buffering). Nonblocking sends keep
    /// reading from the caller's buffer, which stays valid until they finish.
    pub(crate) fn buffer_eager_send(&mut self, peer: Rank, id: ReqId) {
        let Some(q) = self.out.get_mut(peer as usize) else {
            return;
        };
        // The frame was queued last: search from the back.
        if let Some(f) = q
            .iter_mut()
            .rev()
            .find(|f| f.eager && matches!(f.payload, OutPayload::Send(x) if x == id))
        {
            f.payload = OutPayload::Owned(crate::sys::copy::to_vec(self.bufs.send_bytes(id)));
            self.engine.handle_written(id);
        }
    }

    /// Drops the links reported lost and fails what depended on them.
    pub(super) fn handle_lost(&mut self) {
        while let Some((peer, reason)) = self.lost.pop() {
            self.links.tcp.drop_peer(peer);
            if let Some(q) = self.out.get_mut(peer as usize) {
                q.clear();
            }
            if let Some(s) = self.inp.get_mut(peer as usize) {
                *s = None;
            }
            if self.engine.peer_open(peer) && !self.bye_sent {
                eprintln!("courier[rank {}]: lost rank {peer}: {reason}", self.me);
            }
            self.engine.handle_peer_lost(peer, reason);
        }
    }
}
