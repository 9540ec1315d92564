//! Bytes coming in: deframing each peer's stream, handing headers to the
//! engine, and putting payloads where the engine says.
//!
//! From a socket, incoming bytes are read into a per-peer staging buffer
//! (many frames per system call); a large payload already matched to a
//! receive is read directly into the receive buffer (and the next read asks
//! only for a header, so the next large payload also goes straight to its
//! buffer: one copy). A shared-memory ring tells how large the record at
//! its front is before it is read (`Links::shm_pending`): a small record is
//! read whole into staging; of a larger one only the frame header is, and
//! the payload then goes straight from the ring to its destination (the
//! receive's buffer when one matched: one copy). Buffered messages the
//! engine matches later are copied out here, and single-copy parts
//! performed.

use super::links::{LinkKind, Links};
use super::loans::BufTable;
use super::Progress;
use crate::engine::matching::{Envelope, Pattern};
use crate::engine::{CopyPart, Dest, Direction, Engine, MsgInfo};
use crate::ids::Rank;
use crate::transport::shm::calibrate::Profile;
use crate::transport::shm::Taken;
use crate::transport::LinkError;
use crate::wire::{Frame, HEADER_LEN, SHORT_HEADER_LEN};

/// At most this many single-copy pulls go in one system call (the
/// kernel's limit on one call's ranges is 1024).
const PULL_BATCH: usize = 64;

/// Payloads at least this large skip the staging buffer and are read in place.
const DIRECT_READ_MIN: usize = 16 * 1024;
/// A payload of at least this many bytes read in parts asks its link to
/// acknowledge at once after each part that leaves more to come (TCP's
/// `TCP_QUICKACK`). Between two ranks that answer each other the kernel
/// delays acknowledgements, expecting the answer to carry them; the
/// sender of a large message then waits for them to open its window.
/// Interleaved rounds over loopback, against no quick acknowledgements:
/// latency 1–4 MiB 0.78–0.88×, 512 KiB 0.94–1.06×; from 128 KiB, 128–256
/// KiB lost up to 56% in some sittings (the extra acknowledgements cost
/// more than the waits they save), hence the bound.
const QUICK_ACK_MIN: usize = 512 * 1024;

/// At most this many posts pass between two looks of
/// [`Progress::take_at_post`] that find nothing (the pause doubles from
/// one post with each such look).
const TAKE_BACKOFF_MAX: u32 = 64;

/// Shared-memory records up to this size are read whole into staging
/// (with every such record behind them, up to [`SHM_BATCH`]), and a message
/// that arrived whole is matched and copied in one step; larger records
/// are read header first, payload in place (one copy). 544 bytes: a
/// message of up to 528 bytes arrives whole, a larger one's record goes
/// in place unless it holds the whole message (see `SHM_WHOLE_MESSAGE`);
/// measured when a 1 KiB message still went in two records of 520. Measured on 2 ranks, 8-10
/// interleaved rounds, against 96 bytes (a short header and 80 payload
/// bytes): latency 128-512 B 0.93-0.95x, 1 KiB 0.95x, 4 KiB 0.99x; window
/// bandwidth 128-512 B 1.17-1.22x, 1 KiB 1.09x, 8 B unchanged. 1056
/// bytes (4 KiB messages whole too) made 4 KiB latency 6% worse: two
/// copies instead of one.
const SHM_WHOLE_RECORD: usize = 544;
/// Records up to this size that hold one whole message (since session 20
/// every message up to a quarter of the ring is one record) are read
/// whole too, with the records behind them: a
/// stream of 1–2 KiB messages goes with one read and one engine call per
/// message instead of two of each. Against 544 for all (2 ranks, vCPUs
/// sharing caches, 4 interleaved rounds): `bw` 1–2 KiB 1.26, `bibw`
/// 1.11–1.14; reading a conversation's 1.4 KiB pieces of a 4 KiB message
/// whole (two copies) made its latency 1.17× slower, hence the check.
const SHM_WHOLE_MESSAGE: usize = 2 * 1024 + 64;
/// At most this many bytes of small records are read in one go.
const SHM_BATCH: usize = 8192;
const STAGING: usize = 64 * 1024;

/// The payload being received from a peer.
#[derive(Debug, Clone, Copy)]
struct Cur {
    dest: Dest,
    len: usize,
    off: usize,
}

/// Deframing state of one peer's stream.
#[derive(Debug)]
pub(super) struct InState {
    rx: Box<[u8]>,
    start: usize,
    end: usize,
    cur: Option<Cur>,
    /// The last payload was read in place: read only a header next, so the
    /// following large payload also goes straight to its buffer (one copy).
    header_only: bool,
    /// Payloads begun (wrapping): names the one arriving now.
    begun: u32,
}

/// What one step of reading a peer did.
enum Step {
    /// Handled a header or payload bytes.
    Handled,
    /// Read bytes into the staging buffer (not handled yet).
    Refilled,
    /// Nothing more to read now.
    Idle,
    /// Handled messages and found nothing more to read (`Handled`, then
    /// `Idle`, in one step).
    Drained,
}

fn bad_header(e: crate::wire::WireError) -> LinkError {
    LinkError(format!("invalid frame header: {e}"))
}

/// Whether the rest of a `len`-byte payload from a shared-memory ring goes
/// straight to its destination: when it ends its record (one frame per
/// record, the usual case) or is not tiny; several small frames batched in
/// one record (a sender that got ahead) are staged with one read instead of
/// two per frame.
fn ring_to_dest(links: &mut Links, peer: Rank, len: usize) -> Result<bool, LinkError> {
    Ok(links.kind(peer) == Some(LinkKind::Shm)
        && (len > SHM_WHOLE_RECORD || links.shm_pending(peer)? <= len))
}

/// Whether the `rec`-byte record at the front of `peer`'s ring holds
/// exactly one whole plain eager message (its short header looked at in
/// place, not read; a header `Frame::short_eager` refuses is read the
/// general way, and refused again there by `Frame::decode`). Out of line:
/// only records above `SHM_WHOLE_RECORD` get here.
#[inline(never)]
fn one_message(links: &mut Links, peer: Rank, rec: usize) -> Result<bool, LinkError> {
    let mut head = [0u8; SHORT_HEADER_LEN];
    let n = links.shm_peek(peer, &mut head)?;
    Ok(n == SHORT_HEADER_LEN
        && Frame::short_eager(&head, u64::MAX)
            .is_some_and(|(_, _, len)| len + SHORT_HEADER_LEN == rec))
}

/// Takes the messages at the front of `peer`'s shared-memory ring, each a
/// whole plain eager message in a record of its own, that the direct
/// receive or the first posted receive takes (`Engine::take_eager_now`;
/// `Staging` is never returned): header read from the ring,
/// payload copied from it straight into the receive's buffer (no staging,
/// no frame value). Stops at the first message that must go the general
/// way, where the ring ends, or after `max` messages.
#[inline]
fn take_from_ring(
    peer: Rank,
    links: &mut Links,
    engine: &mut Engine,
    bufs: &mut BufTable,
    max_len: u64,
    max: usize,
) -> Result<Taken, LinkError> {
    let mut vanished = false;
    // Records of any size: a whole message in one record goes this way
    // (a stream's, or a conversation's above the split), with one copy,
    // as the general way's payload read in place does, but without its
    // two reads and engine steps. Against records up to 2 KiB only (2
    // ranks, 6 alternating rounds): `bw` 4–16 KiB 1.13–1.30×, `bibw` 4–128
    // KiB 1.11–2.16× with the vCPUs sharing caches, 8–32 KiB 1.09–1.31×
    // without; latency level to 0.91× (8 KiB).
    let taken = links.shm_take_up_to(peer, max, |head, body| {
        let Some((context, tag, len)) = Frame::short_eager(head, max_len) else {
            return false;
        };
        if len != body.len() {
            return false;
        }
        let dst = match engine.take_eager_now(peer, context, tag, len) {
            Some(Dest::Req(id)) => bufs.recv_bytes_mut(id),
            Some(Dest::Direct) => bufs.direct_bytes_mut(),
            Some(Dest::Staging) | None => return false,
        };
        match dst.get_mut(..len) {
            Some(dst) => body.copy_to(dst),
            None => vanished = true,
        }
        true
    })?;
    if vanished {
        return Err(LinkError("payload destination vanished".into()));
    }
    Ok(taken)
}

impl InState {
    /// The payload from this peer being read now, if any (a number that
    /// tells it from the others).
    pub(super) fn arriving(&self) -> Option<u32> {
        self.cur.map(|_| self.begun)
    }

    fn new() -> Self {
        InState {
            rx: vec![0; STAGING].into_boxed_slice(),
            start: 0,
            end: 0,
            cur: None,
            header_only: false,
            begun: 0,
        }
    }

    /// Between payloads: hands the next staged header to the engine, or
    /// reads more bytes.
    #[inline]
    fn header_step(
        &mut self,
        peer: Rank,
        links: &mut Links,
        engine: &mut Engine,
        bufs: &mut BufTable,
        max_len: u64,
    ) -> Result<Step, LinkError> {
        let staged = self.end - self.start;
        let hlen = match self.rx.get(self.start) {
            Some(&first) if staged > 0 => Frame::header_len(first).map_err(bad_header)?,
            _ => HEADER_LEN,
        };
        if staged >= hlen {
            let frame = Frame::decode(&self.rx[self.start..self.start + hlen], max_len)
                .map_err(bad_header)?;
            if let Frame::Eager { len, .. } = frame {
                if len <= (staged - hlen) as u64 {
                    // The whole message is staged: matched and copied in
                    // one step (no payload state, no second engine call).
                    let body = self.start + hlen..self.start + hlen + len as usize;
                    self.start = body.end;
                    let dest = engine
                        .handle_eager_whole(peer, frame, &self.rx[body.clone()])
                        .map_err(|e| LinkError(format!("protocol violation: {e}")))?;
                    let dst: &mut [u8] = match dest {
                        Some(Dest::Req(id)) => bufs.recv_bytes_mut(id),
                        Some(Dest::Direct) => bufs.direct_bytes_mut(),
                        // Kept by the engine (Staging is never returned).
                        Some(Dest::Staging) | None => return Ok(Step::Handled),
                    };
                    let Some(dst) = dst.get_mut(..body.len()) else {
                        return Err(LinkError("payload destination vanished".into()));
                    };
                    crate::wire::copy_payload(dst, &self.rx[body]);
                    return Ok(Step::Handled);
                }
            }
            self.start += hlen;
            let dest = engine
                .handle_frame(peer, frame)
                .map_err(|e| LinkError(format!("protocol violation: {e}")))?;
            let len = frame.payload_len() as usize;
            match dest {
                Some(dest) if len > 0 => {
                    self.cur = Some(Cur { dest, len, off: 0 });
                    self.begun = self.begun.wrapping_add(1);
                }
                Some(_) => engine.handle_payload_done(peer),
                None => {}
            }
            // Deliveries and transmits are handled by the caller.
            return Ok(Step::Handled);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.rx.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let limit = if links.kind(peer) == Some(LinkKind::Shm) {
            if staged > 0 {
                hlen // the rest of a header split between records
            } else {
                // Whole messages, each in a record of its own, that the
                // direct receive or the first posted receive takes go
                // straight from the ring into its buffer.
                // When it took messages up to the end of the ring, there is
                // nothing more to look for now (on the way of a blocking
                // receive and of every burst of small messages).
                match take_from_ring(peer, links, engine, bufs, max_len, usize::MAX)? {
                    Taken {
                        count: 0,
                        drained: true,
                    } => return Ok(Step::Idle),
                    Taken { count: 0, .. } => {}
                    Taken { drained: true, .. } => return Ok(Step::Drained),
                    Taken { .. } => return Ok(Step::Handled),
                }
                let whole = match links.shm_pending(peer)? {
                    0 => return Ok(Step::Idle),
                    // Small: whole, one read (a second costs more than
                    // copying the payload once more), with every small
                    // record behind it (a stream of small messages).
                    rec if rec <= SHM_WHOLE_RECORD => SHM_WHOLE_RECORD,
                    rec if rec <= SHM_WHOLE_MESSAGE && one_message(links, peer, rec)? => {
                        SHM_WHOLE_MESSAGE
                    }
                    // Larger: the header alone, then the payload straight
                    // to its destination.
                    _ => 0,
                };
                if whole > 0 {
                    let room = &mut self.rx[..SHM_BATCH];
                    let n = links.shm_read_records(peer, room, whole)?;
                    self.end = n;
                    return Ok(if n == 0 { Step::Idle } else { Step::Refilled });
                }
                SHORT_HEADER_LEN
            }
        } else if self.header_only {
            HEADER_LEN
        } else {
            self.rx.len()
        };
        let n = links.read(peer, &mut self.rx[self.end..limit])?;
        if n == 0 {
            return Ok(Step::Idle);
        }
        self.end += n;
        Ok(Step::Refilled)
    }

    /// Inside a payload: moves staged bytes (or reads, in place when large)
    /// into its destination.
    #[inline]
    fn payload_step(
        &mut self,
        peer: Rank,
        mut cur: Cur,
        links: &mut Links,
        engine: &mut Engine,
        bufs: &mut BufTable,
    ) -> Result<Step, LinkError> {
        let dst: &mut [u8] = match cur.dest {
            Dest::Req(id) => bufs.recv_bytes_mut(id),
            Dest::Staging => engine.staging_mut(peer).unwrap_or(&mut []),
            Dest::Direct => bufs.direct_bytes_mut(),
        };
        let Some(dst) = dst.get_mut(cur.off..cur.len) else {
            return Err(LinkError("payload destination vanished".into()));
        };
        let avail = self.end - self.start;
        if avail > 0 {
            let take = avail.min(dst.len());
            crate::sys::copy::copy(&mut dst[..take], &self.rx[self.start..self.start + take]);
            self.start += take;
            cur.off += take;
        } else if dst.len() >= DIRECT_READ_MIN || ring_to_dest(links, peer, dst.len())? {
            let n = links.read(peer, dst)?;
            if n == 0 {
                return Ok(Step::Idle);
            }
            cur.off += n;
            self.header_only = true;
            if cur.off < cur.len && cur.len >= QUICK_ACK_MIN {
                links.ask_quick_acks(peer);
            }
        } else {
            self.start = 0;
            self.end = 0;
            let n = links.read(peer, &mut self.rx)?;
            if n == 0 {
                return Ok(Step::Idle);
            }
            self.end = n;
            return Ok(Step::Refilled);
        }
        if cur.off == cur.len {
            self.cur = None;
            if cur.len < DIRECT_READ_MIN {
                self.header_only = false;
            }
            engine.handle_payload_done(peer);
        } else {
            self.cur = Some(cur);
        }
        Ok(Step::Handled)
    }
}

impl Progress {
    /// Reads and handles everything available from `peer`, then delivers
    /// what the engine matched. Returns whether anything happened; a broken
    /// link is lost (and counts as something).
    pub(super) fn read_one(&mut self, peer: Rank) -> bool {
        let r = self.read_peer(peer);
        self.settle_read(peer, r)
    }

    /// After a read from `peer`: delivers what it matched, and reports a
    /// link error as the peer's loss. Returns whether the read handled
    /// anything (a loss counts).
    #[inline(always)]
    fn settle_read(&mut self, peer: Rank, r: Result<bool, LinkError>) -> bool {
        self.deliver();
        match r {
            Ok(did) => did,
            Err(e) => {
                self.lost.push((peer, e.0));
                self.handle_lost();
                true
            }
        }
    }

    /// Whether receives may be taken as posted here at all (see
    /// [`Progress::take_at_post`]): on a `close` node.
    #[inline]
    pub(crate) fn takes_at_post(&self) -> bool {
        self.profile == Profile::Close
    }

    /// Whether bytes `src` sent are staged or a payload from it is
    /// part-way: the front of its ring is not the next message then.
    fn mid_stream(&self, src: Rank) -> bool {
        self.inp
            .get(src as usize)
            .and_then(Option::as_ref)
            .is_some_and(|st| st.cur.is_some() || st.start != st.end)
    }

    /// A nonblocking receive of `pattern` (its source named) into `bytes`,
    /// about to be posted, that finds its message at the front of the
    /// source's shared-memory ring takes it there, straight into `bytes`,
    /// and completes at once: no request, no posted-queue entry, no later
    /// match and collection. First, messages at the front of that ring
    /// that receives posted earlier take are handed to them (they would
    /// have come first). `None`: post the receive the general way, which
    /// decides as this would have.
    ///
    /// A stream of small messages to a receiver that is behind (the
    /// receiver's work per message bounds the rate) then costs the
    /// receiver a look and a copy per message: callgrind on `bw` of 8 B,
    /// 767 → 535 instructions per message received when every receive
    /// looks (620–637 with the back-off below, under callgrind's timing,
    /// where more receives go the general way). Only on a `close`
    /// node: where the ranks share no cache, a receiver looking at the
    /// line the sender is writing made `bw` of 1–512 B 0.55–0.96× slower;
    /// with shared caches, 1.13–1.29× faster (interleaved rounds).
    pub(crate) fn take_at_post(
        &mut self,
        pattern: &Pattern,
        bytes: &mut [u8],
        elem_size: usize,
    ) -> Option<MsgInfo> {
        let src = pattern.source?;
        if !self.takes_at_post() || self.links.kind(src) != Some(LinkKind::Shm) {
            return None;
        }
        if self.mid_stream(src) {
            return None;
        }
        let max_len = self.max_len;
        if self.engine.posted_len() > 0 {
            // Looks that find nothing back off: while the peer is not
            // sending (it posts its own receives, say) every look costs a
            // read of the line it is about to write. Looking at every post
            // made `bibw` of 1 B – 2 KiB 0.73–0.86× slower.
            if self.take_skip > 0 {
                self.take_skip -= 1;
                return None;
            }
            let r = take_from_ring(
                src,
                &mut self.links,
                &mut self.engine,
                &mut self.bufs,
                max_len,
                usize::MAX,
            );
            match r {
                Ok(Taken { count: 0, .. }) => {
                    self.take_backoff = (self.take_backoff * 2).clamp(1, TAKE_BACKOFF_MAX);
                    self.take_skip = self.take_backoff;
                    return None;
                }
                Ok(_) => {
                    self.take_backoff = 0;
                    self.settle_read(src, r.map(|_| true));
                    self.pump();
                }
                Err(_) => {
                    self.settle_read(src, r.map(|_| true));
                    return None;
                }
            }
        }
        if !self.engine.may_take_at_post(pattern) {
            return None;
        }
        let engine = &mut self.engine;
        let capacity = bytes.len();
        let mut info = None;
        let taken = self.links.shm_take_up_to(src, 1, |head, body| {
            let Some((context, tag, len)) = Frame::short_eager(head, max_len) else {
                return false;
            };
            let env = Envelope {
                context,
                source: src,
                tag,
            };
            // Whole elements only: a length mismatch is the receive's
            // error, reported the general way.
            let elem = elem_size.max(1);
            let whole = if elem.is_power_of_two() {
                len & (elem - 1) == 0
            } else {
                len % elem == 0
            };
            if len != body.len() || !whole {
                return false;
            }
            // A message longer than the buffer is the receive's error,
            // reported the general way (`take_at_post` refuses it too).
            let Some(dst) = bytes.get_mut(..len) else {
                return false;
            };
            if !engine.take_at_post(pattern, capacity, &env, len) {
                return false;
            }
            body.copy_to(dst);
            info = Some(MsgInfo {
                source: src,
                tag,
                len,
            });
            true
        });
        match taken {
            Ok(_) => {
                if info.is_some() && self.engine.has_transmits() {
                    self.pump();
                }
                info
            }
            Err(e) => {
                self.settle_read(src, Err(e));
                None
            }
        }
    }

    /// The look of a direct receive at `src`'s shared-memory ring: the
    /// message at its front, when it is a whole eager one in a record of
    /// its own that the receive takes, goes straight into the receive's
    /// buffer, without the general way's staging steps, and nothing else
    /// is read; otherwise [`Progress::read_one`]. Returns whether it
    /// handled anything.
    pub(super) fn read_for_direct(&mut self, src: Rank) -> bool {
        if !self.mid_stream(src) {
            let max_len = self.max_len;
            match take_from_ring(
                src,
                &mut self.links,
                &mut self.engine,
                &mut self.bufs,
                max_len,
                1,
            ) {
                Ok(Taken { count: 0, .. }) => {}
                r => return self.settle_read(src, r.map(|_| true)),
            }
        }
        self.read_one(src)
    }

    /// Reads and handles everything available from `peer`.
    fn read_peer(&mut self, peer: Rank) -> Result<bool, LinkError> {
        let Some(slot) = self.inp.get_mut(peer as usize) else {
            return Err(LinkError(format!("no rank {peer}")));
        };
        let st = slot.get_or_insert_with(|| Box::new(InState::new()));
        let mut did = false;
        loop {
            let step = match st.cur {
                None => st.header_step(
                    peer,
                    &mut self.links,
                    &mut self.engine,
                    &mut self.bufs,
                    self.max_len,
                )?,
                Some(cur) => {
                    st.payload_step(peer, cur, &mut self.links, &mut self.engine, &mut self.bufs)?
                }
            };
            match step {
                Step::Handled => did = true,
                Step::Refilled => {}
                Step::Idle => return Ok(did),
                Step::Drained => return Ok(true),
            }
        }
    }

    /// Copies matched buffered messages into their receive buffers and
    /// performs the single-copy parts the engine asks for.
    #[inline]
    pub(super) fn deliver(&mut self) {
        if self.engine.has_deliveries() || self.engine.has_copies() {
            self.deliver_now();
        }
    }

    fn deliver_now(&mut self) {
        while let Some((id, data)) = self.engine.poll_delivery() {
            let dst = self.bufs.recv_bytes_mut(id);
            if let Some(dst) = dst.get_mut(..data.len()) {
                crate::sys::copy::copy(dst, &data);
            }
            self.engine.recycle(data);
        }
        if self.engine.has_copies() {
            // CTS_COOP frames go out before we copy, so the sender pushes its
            // part while we pull ours.
            self.pump();
        }
        // Pushes (a peer waits for them) one by one as they come; pulls
        // from one peer together, in one system call per batch.
        let mut pulls = std::mem::take(&mut self.pulls);
        while let Some(part) = self.engine.poll_copy() {
            match part.dir {
                Direction::Push => {
                    let ok = self.copy(&part);
                    self.engine.handle_copy_done(part, ok);
                }
                Direction::Pull => pulls.push(part),
            }
        }
        let mut rest = &pulls[..];
        while let Some(first) = rest.first() {
            let same = rest
                .iter()
                .take(PULL_BATCH)
                .take_while(|p| p.peer == first.peer)
                .count();
            let (batch, tail) = rest.split_at(same);
            let whole = if batch.len() > 1 {
                self.pull_together(batch)
            } else {
                0
            };
            for (i, part) in batch.iter().enumerate() {
                let ok = i < whole || self.copy(part);
                self.engine.handle_copy_done(*part, ok);
            }
            rest = tail;
        }
        pulls.clear();
        self.pulls = pulls;
    }

    /// Pulls several parts from one peer with one system call; returns how
    /// many (from the first) were copied whole.
    fn pull_together(&mut self, batch: &[CopyPart]) -> usize {
        let Some(pid) = self.links.shm_pid(batch[0].peer) else {
            return 0;
        };
        let remote: Vec<(u64, usize)> = batch
            .iter()
            .map(|p| (p.addr.wrapping_add(p.offset as u64), p.len))
            .collect();
        let ranges: Vec<_> = batch
            .iter()
            .map(|p| (p.req, p.offset..p.offset + p.len))
            .collect();
        self.bufs
            .with_recv_ranges(&ranges, |local| {
                crate::sys::cma::read_many(pid, &remote, local)
            })
            .unwrap_or(0)
    }

    /// Performs one part of a single-copy transfer with cross-memory attach.
    fn copy(&mut self, part: &CopyPart) -> bool {
        let pid = self.links.shm_pid(part.peer);
        let at = part.addr.wrapping_add(part.offset as u64);
        let range = part.offset..part.offset + part.len;
        let r = match (part.dir, pid) {
            (Direction::Push, Some(pid)) => match self.bufs.send_bytes(part.req).get(range) {
                Some(src) => crate::sys::cma::write(pid, at, src),
                None => Err(std::io::Error::other("no push source")),
            },
            (Direction::Pull, Some(pid)) => match self.bufs.recv_bytes_mut(part.req).get_mut(range)
            {
                Some(dst) => crate::sys::cma::read(pid, at, dst),
                None => Err(std::io::Error::other("no pull target")),
            },
            (_, None) => Err(std::io::Error::other("no shared-memory peer")),
        };
        if let (Err(e), Direction::Pull) = (&r, part.dir) {
            if !self.cma_warned {
                self.cma_warned = true;
                eprintln!(
                    "courier[rank {}]: cross-memory attach failed ({e}); \
                     large messages fall back to copies through shared memory",
                    self.me
                );
            }
        }
        r.is_ok()
    }
}
