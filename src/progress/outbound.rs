//! Frames on their way out: the per-peer queues the engine's transmits go
//! into, flushed to the links as far as they take them.
//!
//! A send's header and payload go out in one vectored write, straight from
//! the user's slice. An eager frame that the link cannot take right now is
//! copied aside, so standard-mode sends of small messages never wait for
//! the receiver (MPI's usual eager buffering); rendezvous DATA always goes
//! from the user's buffer.

use super::links::LinkKind;
use super::loans::BufTable;
use super::Progress;
use crate::engine::{Payload, ReqId};
use crate::ids::Rank;
use crate::transport::LinkError;
use crate::wire::{EncodedHeader, Frame};
use std::io::IoSlice;

/// At most this many queued frames go in one vectored write to a TCP link
/// (a credit with the message after it; a window that queued up while the
/// socket was full or the link was being set up)...
const GATHER_FRAMES: usize = 64;
/// ...and no frame joins a write that already offers this many bytes.
/// Large frames go one per write: gathering up to 8 of them made `bw`
/// over loopback at 64 KiB – 4 MiB 0.65–0.85× as fast (4 rounds).
const GATHER_BYTES: usize = 16 * 1024;
/// A burst buffer (see [`Progress::hold_back`]) is written once it holds
/// this many bytes, as one frame of the queue (one slice of a write).
/// Against 16 KiB: `bw` over TCP at 1–8 KiB 1.26–1.67× (8 rounds).
const BURST_BYTES: usize = 64 * 1024;

/// Messages of up to this many bytes join a burst of nonblocking sends to
/// a TCP peer (see [`Progress::isend_eager_now`]); larger ones are written
/// as they are posted.
const BURST_MAX: usize = 16 * 1024;
/// Written burst buffers kept for reuse (see [`Progress::hold_back`]).
const SPARE_BURSTS: usize = 4;

/// Where a queued frame's payload comes from.
#[derive(Debug)]
pub(super) enum OutPayload {
    None,
    /// The loaned buffer of this send.
    Send(ReqId),
    /// A private copy.
    Owned(Vec<u8>),
    /// Whole frames of a burst of small sends, headers and payloads, one
    /// after another (the frame's own header is empty); its buffer is
    /// reused once written (see [`Progress::hold_back`]).
    Burst(Vec<u8>),
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
    /// A CREDIT frame, which a TCP link may hold back for a pump (see
    /// [`Progress::pump_deferring`]).
    pub(super) credit: bool,
    /// The payload from the peer that was arriving when this frame was
    /// queued ([`InState::arriving`](super::inbound::InState::arriving)).
    pub(super) during: Option<u32>,
}

impl OutPayload {
    /// The payload's bytes (empty for none).
    fn bytes<'a>(&'a self, bufs: &'a BufTable) -> &'a [u8] {
        match self {
            OutPayload::None => &[],
            OutPayload::Send(id) => bufs.send_bytes(*id),
            OutPayload::Owned(v) | OutPayload::Burst(v) => v,
        }
    }
}

impl OutFrame {
    /// A control frame with no payload.
    pub(super) fn control(frame: Frame) -> Self {
        OutFrame {
            header: frame.encode(),
            payload: OutPayload::None,
            eager: false,
            sent: 0,
            credit: matches!(frame, Frame::Credit { .. }),
            during: None,
        }
    }
}

impl Progress {
    /// Moves the engine's output to the links and pushes what the links take.
    #[inline]
    pub(crate) fn pump(&mut self) {
        if self.has_output() {
            self.pump_now(false);
        }
    }

    /// Whether a pump has anything to do: frames from the engine, queued
    /// frames, or lost links to handle.
    #[inline]
    fn has_output(&self) -> bool {
        self.engine.has_transmits() || !self.pending_out.is_empty() || !self.lost.is_empty()
    }

    /// [`Progress::pump`] at the end of a progress round, whose caller
    /// looks at its wait next: credit owed to a TCP peer with nothing else
    /// queued for it stays queued until the next pump, the next round's
    /// or the next call's, so that it goes in one write with that call's
    /// message (a ping-pong's answer) instead of in a segment of its own.
    /// A 1 MiB ping-pong over loopback returns credit after every message;
    /// a raw-socket probe of that pattern took 1.05–1.25× as long with a
    /// separate 40-byte write before each answer as with none, 0.95–1.09×
    /// with the two in one `writev` (Courier's 1 MiB latency: 0.66–0.78×
    /// of before). Credit waits at most until the rank's next progress: a
    /// rank's waits pump before they spin or sleep.
    #[inline]
    pub(crate) fn pump_deferring(&mut self) {
        if self.has_output() {
            self.pump_now(true);
        }
    }

    fn pump_now(&mut self, defer: bool) {
        self.held = false;
        while let Some(t) = self.engine.poll_transmit() {
            let peer = t.peer;
            let eager = matches!(t.frame, Frame::Eager { .. });
            let credit = matches!(t.frame, Frame::Credit { .. });
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
                credit,
                during: if credit {
                    self.inp
                        .get(peer as usize)
                        .and_then(|s| s.as_ref()?.arriving())
                } else {
                    None
                },
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
            if let Err(e) = self.flush(peer, defer) {
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
    fn flush(&mut self, peer: Rank, defer: bool) -> Result<(), LinkError> {
        if self.links.kind(peer) == Some(LinkKind::Tcp) {
            self.flush_gathered(peer, defer)
        } else {
            self.flush_each(peer)
        }
    }

    /// Writes TCP peer `peer`'s queued frames as far as its link takes
    /// them, up to [`GATHER_FRAMES`] in one vectored write. A queue holding
    /// only credit frames not yet begun is left for a later pump with
    /// `defer` (see [`Progress::pump_deferring`]), and while the payload
    /// from that peer that was arriving when they were queued still is (a
    /// message's credit is owed from its header on; a stream's later
    /// payloads do not hold it back).
    fn flush_gathered(&mut self, peer: Rank, defer: bool) -> Result<(), LinkError> {
        let q = &mut self.out[peer as usize];
        if q.iter().all(|f| f.credit && f.sent == 0) {
            let arriving = self.inp[peer as usize].as_ref().and_then(|s| s.arriving());
            if defer || (arriving.is_some() && q.iter().all(|f| f.during == arriving)) {
                return Ok(());
            }
        }
        while !q.is_empty() {
            let mut slices: [IoSlice<'_>; 2 * GATHER_FRAMES] =
                [IoSlice::new(&[]); 2 * GATHER_FRAMES];
            let mut k = 0;
            let mut offered = 0;
            let mut only_credit = true;
            for f in q.iter().take(GATHER_FRAMES) {
                if offered >= GATHER_BYTES {
                    break;
                }
                only_credit &= f.credit;
                let payload = f.payload.bytes(&self.bufs);
                let hlen = f.header.len();
                if f.sent < hlen {
                    slices[k] = IoSlice::new(&f.header[f.sent..]);
                    k += 1;
                    if !payload.is_empty() {
                        slices[k] = IoSlice::new(payload);
                        k += 1;
                    }
                } else {
                    slices[k] = IoSlice::new(&payload[f.sent - hlen..]);
                    k += 1;
                }
                offered += hlen + payload.len() - f.sent;
            }
            let written = self.links.write(peer, &slices[..k])?;
            self.wrote |= written > 0;
            if only_credit && written > 0 {
                self.credit_alone += 1;
            }
            let mut n = written;
            // Hand the written bytes to the frames they belong to.
            while n > 0 {
                let Some(f) = q.front_mut() else { break };
                let left = f.header.len() + f.payload.bytes(&self.bufs).len() - f.sent;
                if n < left {
                    f.sent += n;
                    break;
                }
                n -= left;
                match q.pop_front().map(|f| f.payload) {
                    Some(OutPayload::Send(id)) => self.engine.handle_written(id),
                    Some(OutPayload::Burst(mut v)) if self.spare_bursts.len() < SPARE_BURSTS => {
                        v.clear();
                        self.spare_bursts.push(v);
                    }
                    _ => {}
                }
            }
            if written < offered {
                // The link is full for now.
                break;
            }
        }
        Ok(())
    }

    /// Writes `peer`'s queued frames one per write as far as its link
    /// takes them (shared memory: a ring record per frame).
    fn flush_each(&mut self, peer: Rank) -> Result<(), LinkError> {
        let q = &mut self.out[peer as usize];
        while let Some(f) = q.front_mut() {
            let payload = f.payload.bytes(&self.bufs);
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
                    credit: false,
                    during: None,
                },
            );
        }
        true
    }

    /// [`Progress::send_eager_now`] for a nonblocking send, which may join
    /// a burst: a message of up to [`BURST_MAX`] bytes to a TCP peer whose
    /// last call was also a nonblocking send of such a message to that
    /// peer (no other call in between) is copied into a burst buffer in
    /// the peer's queue, not written. The queue goes out at the next call
    /// that is not part of the burst (any call but such a send: a wait, a
    /// test, a receive, a collective; see [`Progress::end_burst`]), or
    /// once a buffer holds [`BURST_BYTES`], in one write per buffer. The
    /// burst's first message is written as it is posted, so a lone send
    /// still leaves before the program computes.
    ///
    /// Over loopback every write is a trip through the whole TCP path: a
    /// window of `osu_bw`'s 64 small sends took 64 of them. Gathered, the
    /// window takes two or three; `bw` over TCP is 15–20× what it was at
    /// 1 B – 1 KiB, 10.5× at 2 KiB and 1.8–6.2× at 4–16 KiB (figures in
    /// `docs/benchmarks-history.md`, session 30). MPI allows it: a
    /// nonblocking send need not move before the program's next call
    /// (progress is only promised inside calls).
    #[inline(always)]
    pub(crate) fn isend_eager_now(
        &mut self,
        peer: Rank,
        context: u32,
        tag: u32,
        bytes: &[u8],
    ) -> bool {
        if !self.links.any_tcp() {
            // Shared memory and this rank only: no bursts.
            return self.send_eager_now(peer, context, tag, bytes);
        }
        if self.links.kind(peer) != Some(LinkKind::Tcp) || bytes.len() > BURST_MAX {
            self.burst = None;
            return self.send_eager_now(peer, context, tag, bytes);
        }
        if self.burst == Some(peer) {
            return self.hold_back(peer, context, tag, bytes);
        }
        let sent = self.send_eager_now(peer, context, tag, bytes);
        self.burst = sent.then_some(peer);
        sent
    }

    /// Queues a small message of a burst to `peer` without writing it (see
    /// [`Progress::isend_eager_now`]); false when the general path must
    /// send it (no credit, or frames for `peer` wait in the engine).
    ///
    /// The frame, header and payload, is appended to the burst buffer at
    /// the back of `peer`'s queue (a new one, from the spares, when the
    /// last is full or already being written); once that holds
    /// [`BURST_BYTES`], the queue is written.
    #[inline(never)]
    fn hold_back(&mut self, peer: Rank, context: u32, tag: u32, bytes: &[u8]) -> bool {
        if !self.links.writable(peer) || self.out.get(peer as usize).is_none() {
            return false;
        }
        let Some(frame) = self.engine.eager_frame_now(peer, context, tag, bytes.len()) else {
            return false;
        };
        let room = |f: &OutFrame| match &f.payload {
            OutPayload::Burst(v) => f.sent == 0 && v.len() < BURST_BYTES,
            _ => false,
        };
        if !self.out[peer as usize].back().is_some_and(room) {
            let v = self.spare_bursts.pop().unwrap_or_default();
            self.enqueue(
                peer,
                OutFrame {
                    header: EncodedHeader::NONE,
                    payload: OutPayload::Burst(v),
                    eager: false,
                    sent: 0,
                    credit: false,
                    during: None,
                },
            );
        }
        let full = match self.out[peer as usize].back_mut().map(|f| &mut f.payload) {
            Some(OutPayload::Burst(v)) => {
                v.extend_from_slice(&frame.encode());
                crate::sys::copy::extend(v, bytes);
                v.len() >= BURST_BYTES
            }
            _ => false,
        };
        self.held = true;
        if full {
            self.pump();
        }
        true
    }

    /// Ends a burst of nonblocking sends (see
    /// [`Progress::isend_eager_now`]): what it queued is written now.
    /// Every call but such a send comes here first, as it takes the
    /// driver (`Driver::lock`), and so does a collective that runs beside
    /// the driver (`Driver::check_callable`).
    #[inline(always)]
    pub(crate) fn end_burst(&mut self) {
        self.burst = None;
        if self.held {
            self.write_burst();
        }
    }

    /// [`Progress::end_burst`]'s write, out of the way of every call.
    #[cold]
    #[inline(never)]
    fn write_burst(&mut self) {
        self.pump();
    }

    /// Whether frames of a burst wait to be written (see
    /// [`Progress::end_burst`]).
    #[inline]
    pub(crate) fn holds_burst(&self) -> bool {
        self.held
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
