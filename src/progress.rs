//! The driver: connects the sans-IO [`Engine`] to the transports and the
//! user's buffers, and decides how to wait.
//!
//! Data path: a send's header and payload go out in one vectored write,
//! straight from the user's slice. Incoming bytes are read into a per-peer
//! staging buffer; a large payload already matched to a receive is read
//! directly into the receive buffer. An eager frame that the link cannot take
//! right now is copied aside, so standard-mode sends of small messages never
//! wait for the receiver (MPI's usual eager buffering); rendezvous DATA always
//! goes from the user's buffer.
//!
//! Waiting: poll without blocking for a short spin, then yield the core for a
//! while, then block in the poller. When the node runs more ranks than it has
//! cores, the spin is cut short so waiting ranks give their cores away.

use crate::bootstrap::protocol::{Deframer, Reply, MAX_REPLY};
use crate::engine::{Dest, Engine, MsgInfo, Payload, Rank, ReqId};
use crate::error::{Error, Result};
use crate::request::BufTable;
use crate::transport::selfloop::SelfLoop;
use crate::transport::shm::ShmTransport;
use crate::transport::tcp::TcpTransport;
use crate::transport::{LinkError, Transport};
use crate::wire::{EncodedHeader, Frame, HEADER_LEN};
use std::collections::VecDeque;
use std::io::{IoSlice, Read};
use std::time::{Duration, Instant};

/// Payloads at least this large skip the staging buffer and are read in place.
const DIRECT_READ_MIN: usize = 16 * 1024;
const STAGING: usize = 64 * 1024;
/// Busy polling reads sockets directly (no `epoll_wait`) up to this many links.
const DIRECT_SPIN_MAX_LINKS: usize = 4;
/// However busy the rank, the poller (listener: new and stale connections;
/// the launcher: abort notices) is asked at least this often while it waits.
const SERVICE_INTERVAL: Duration = Duration::from_millis(5);
/// Busy rounds between two looks at the clock for [`SERVICE_INTERVAL`].
const SERVICE_CLOCK_ROUNDS: u32 = 256;

#[derive(Debug)]
enum OutPayload {
    None,
    Send(ReqId),
    Owned(Vec<u8>),
}

#[derive(Debug)]
struct OutFrame {
    header: EncodedHeader,
    payload: OutPayload,
    eager: bool,
    sent: usize,
}

#[derive(Debug, Clone, Copy)]
struct Cur {
    dest: Dest,
    len: usize,
    off: usize,
}

#[derive(Debug)]
struct InState {
    rx: Box<[u8]>,
    start: usize,
    end: usize,
    cur: Option<Cur>,
    /// The last payload was read in place: read only a header next, so the
    /// following large payload also goes straight to its buffer (one copy).
    header_only: bool,
    /// The last read from a shared-memory ring returned less than asked:
    /// the ring was empty then, so the next read waits for the next poll.
    drained: bool,
}

impl InState {
    fn new() -> Self {
        InState {
            rx: vec![0; STAGING].into_boxed_slice(),
            start: 0,
            end: 0,
            cur: None,
            header_only: false,
            drained: false,
        }
    }
}

/// How long to spin and yield before blocking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPolicy {
    pub(crate) spin: Duration,
    pub(crate) yield_for: Duration,
    pub(crate) block: Duration,
    /// More ranks on this node than cores.
    pub(crate) oversubscribed: bool,
}

impl WaitPolicy {
    /// Spin long when every rank of the node has a core, briefly otherwise.
    pub(crate) fn for_node(local_size: u32) -> Self {
        // The node's CPUs, not this process's affinity mask: a rank bound to
        // one core is not oversubscribed when every rank has its own core.
        let cores = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
            .ok()
            .flatten()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        let oversubscribed = local_size > cores;
        let (spin, yield_for) = if oversubscribed {
            (Duration::from_micros(5), Duration::from_micros(200))
        } else {
            (Duration::from_micros(500), Duration::from_millis(2))
        };
        let spin = crate::config::duration_us("COURIER_SPIN_US").unwrap_or(spin);
        let yield_for = crate::config::duration_us("COURIER_YIELD_US").unwrap_or(yield_for);
        WaitPolicy {
            spin,
            yield_for,
            block: Duration::from_millis(100),
            oversubscribed,
        }
    }
}

#[derive(Debug)]
struct ServiceLink {
    stream: mio::net::TcpStream,
    deframer: Deframer,
}

/// Which transport carries a peer's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// The rank itself.
    SelfLoop,
    /// Shared memory (a peer on the same node).
    Shm,
    /// A TCP connection.
    Tcp,
}

/// The per-rank driver.
#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) engine: Engine,
    pub(crate) bufs: BufTable,
    me: Rank,
    max_len: u64,
    tcp: TcpTransport,
    selfloop: SelfLoop,
    shm: Option<ShmTransport>,
    /// Transport of each peer (`SelfLoop` for this rank).
    kinds: Vec<LinkKind>,
    /// Node of every world rank (from wire-up); empty for a singleton.
    nodes: Vec<u32>,
    cma_warned: bool,
    out: Vec<VecDeque<OutFrame>>,
    inp: Vec<Option<Box<InState>>>,
    pending_out: Vec<Rank>,
    ready: Vec<Rank>,
    lost: Vec<(Rank, String)>,
    service: Option<ServiceLink>,
    aborted: Option<i32>,
    service_lost: bool,
    policy: WaitPolicy,
    bye_sent: bool,
    /// `finalize` ran: every later call is an error.
    finalized: bool,
    /// Busy rounds since the clock was last compared with `next_service`.
    busy_rounds: u32,
    /// When the poller is due again (see [`SERVICE_INTERVAL`]).
    next_service: Instant,
}

impl Progress {
    pub(crate) fn new(engine: Engine, size: u32, tcp: TcpTransport, policy: WaitPolicy) -> Self {
        let me = engine.me();
        Progress {
            engine,
            bufs: BufTable::default(),
            me,
            max_len: crate::config::max_message_len(),
            tcp,
            selfloop: SelfLoop::default(),
            shm: None,
            nodes: Vec::new(),
            kinds: (0..size)
                .map(|r| {
                    if r == me {
                        LinkKind::SelfLoop
                    } else {
                        LinkKind::Tcp
                    }
                })
                .collect(),
            cma_warned: false,
            out: (0..size).map(|_| VecDeque::new()).collect(),
            inp: (0..size).map(|_| None).collect(),
            pending_out: Vec::new(),
            ready: Vec::new(),
            lost: Vec::new(),
            service: None,
            aborted: None,
            service_lost: false,
            policy,
            bye_sent: false,
            finalized: false,
            busy_rounds: 0,
            next_service: Instant::now() + SERVICE_INTERVAL,
        }
    }

    /// Uses shared memory for the peers already added to `shm`.
    pub(crate) fn set_shm(&mut self, shm: ShmTransport) {
        for (r, kind) in self.kinds.iter_mut().enumerate() {
            if shm.has_peer(r as Rank) {
                *kind = LinkKind::Shm;
            }
        }
        self.shm = Some(shm);
    }

    /// Watches the rendezvous-service connection for abort notices and EOF.
    pub(crate) fn set_service(&mut self, stream: std::net::TcpStream) -> Result<()> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io(None, e))?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        self.tcp
            .register_service(&mut stream)
            .map_err(|e| Error::io(None, e))?;
        self.service = Some(ServiceLink {
            stream,
            deframer: Deframer::new(MAX_REPLY),
        });
        Ok(())
    }

    /// Sends a request to the rendezvous service (abort).
    pub(crate) fn service_send(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        if let Some(s) = self.service.as_mut() {
            s.stream.set_nodelay(true).ok();
            let mut off = 0;
            let deadline = Instant::now() + Duration::from_secs(2);
            while off < bytes.len() && Instant::now() < deadline {
                match s.stream.write(&bytes[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::yield_now()
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(None, e)),
                }
            }
        }
        Ok(())
    }

    /// Tells the launcher this rank finalized, so that its exit is not taken
    /// for a crash. Best effort: a launcher already gone needs no notice.
    pub(crate) fn tell_service_finalized(&mut self) {
        let msg = crate::bootstrap::protocol::Request::Finalize.encode();
        let _ = self.service_send(&msg);
    }

    /// Records the node of every world rank.
    pub(crate) fn set_nodes(&mut self, nodes: Vec<u32>) {
        self.nodes = nodes;
    }

    /// The node of world rank `r` (0 when unknown).
    pub(crate) fn node_of(&self, r: u32) -> u32 {
        self.nodes.get(r as usize).copied().unwrap_or(0)
    }

    /// Whether this node runs more ranks than it has cores.
    pub(crate) fn oversubscribed(&self) -> bool {
        self.policy.oversubscribed
    }

    pub(crate) fn eager_limit(&self) -> usize {
        self.engine.eager_limit()
    }

    /// After asking the launcher to abort: waits (at most `limit`) until it
    /// announces the abort, so it learns the cause before it sees us exit.
    pub(crate) fn await_abort_notice(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.aborted.is_none()
            && !self.service_lost
            && self.service.is_some()
            && Instant::now() < deadline
        {
            self.read_service();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn tcp(&self) -> &TcpTransport {
        &self.tcp
    }

    /// Links this rank has open, with their transport.
    pub(crate) fn links(&self) -> Vec<(Rank, LinkKind)> {
        let mut v: Vec<_> = self
            .tcp
            .established_peers()
            .into_iter()
            .map(|p| (p, LinkKind::Tcp))
            .collect();
        if let Some(shm) = &self.shm {
            v.extend(shm.mapped_peers().into_iter().map(|p| (p, LinkKind::Shm)));
        }
        if self.inp.get(self.me as usize).is_some_and(Option::is_some) {
            v.push((self.me, LinkKind::SelfLoop));
        }
        v.sort_by_key(|x| x.0);
        v
    }

    fn check_job(&self) -> Result<()> {
        if let Some(code) = self.aborted {
            return Err(Error::Aborted { code });
        }
        if self.service_lost {
            return Err(Error::Bootstrap(
                "lost the connection to the launcher".into(),
            ));
        }
        Ok(())
    }

    /// Moves the engine's output to the links and pushes what the links take.
    pub(crate) fn pump(&mut self) {
        if !self.engine.has_transmits() && self.pending_out.is_empty() && self.lost.is_empty() {
            return;
        }
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
            let Some(q) = self.out.get_mut(peer as usize) else {
                continue;
            };
            q.push_back(OutFrame {
                header: frame.encode(),
                payload,
                eager,
                sent: 0,
            });
            if !self.pending_out.contains(&peer) {
                self.pending_out.push(peer);
            }
            if self.kinds.get(peer as usize) == Some(&LinkKind::Tcp) {
                if let Err(e) = self.tcp.connect(peer) {
                    self.lost.push((peer, e.0));
                }
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

    fn flush(&mut self, peer: Rank) -> std::result::Result<(), LinkError> {
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
                match self.kinds[peer as usize] {
                    LinkKind::SelfLoop => self.selfloop.try_write(peer, slices)?,
                    LinkKind::Tcp => self.tcp.try_write(peer, slices)?,
                    LinkKind::Shm => match self.shm.as_mut() {
                        Some(shm) => shm.try_write(peer, slices)?,
                        None => return Err(LinkError("no shared-memory transport".into())),
                    },
                }
            };
            f.sent += n;
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
        let Some(kind) = self.kinds.get(peer as usize).copied() else {
            return false;
        };
        if self.out.get(peer as usize).is_none_or(|q| !q.is_empty())
            || (kind == LinkKind::Tcp && !self.tcp.is_established(peer))
        {
            return false;
        }
        let Some(frame) = self.engine.eager_frame_now(peer, context, tag, bytes.len()) else {
            return false;
        };
        let header = frame.encode();
        let slices = [IoSlice::new(&header), IoSlice::new(bytes)];
        let written = match kind {
            LinkKind::SelfLoop => self.selfloop.try_write(peer, &slices),
            LinkKind::Tcp => self.tcp.try_write(peer, &slices),
            LinkKind::Shm => match self.shm.as_mut() {
                Some(shm) => shm.try_write(peer, &slices),
                None => Err(LinkError("no shared-memory transport".into())),
            },
        };
        let sent = match written {
            Ok(n) => n,
            Err(e) => {
                // The message is buffered; the loss is reported by the next progress.
                self.lost.push((peer, e.0));
                0
            }
        };
        if sent < header.len() + bytes.len() {
            self.out[peer as usize].push_back(OutFrame {
                header,
                payload: OutPayload::Owned(bytes.to_vec()),
                eager: true,
                sent,
            });
            if !self.pending_out.contains(&peer) {
                self.pending_out.push(peer);
            }
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
            f.payload = OutPayload::Owned(self.bufs.send_bytes(id).to_vec());
            self.engine.handle_written(id);
        }
    }

    fn handle_lost(&mut self) {
        while let Some((peer, reason)) = self.lost.pop() {
            self.tcp.drop_peer(peer);
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

    /// Copies matched buffered messages into their receive buffers.
    pub(crate) fn deliver_pending(&mut self) {
        self.deliver();
    }

    /// The error of every call after finalize.
    #[cold]
    #[inline(never)]
    pub(crate) fn finalized_error() -> Error {
        Error::InvalidState(
            "the universe was finalized (dropped): its communicators can no longer be used".into(),
        )
    }

    /// Marks the universe finalized without closing anything (a rank
    /// unwinding from a panic).
    pub(crate) fn mark_finalized(&mut self) {
        self.finalized = true;
    }

    /// Whether the universe has been finalized.
    pub(crate) fn is_finalized(&self) -> bool {
        self.finalized
    }

    /// Gives up on request `id` without waiting for its message: collects it
    /// if it has finished, otherwise detaches its loan (the caller's memory
    /// is free afterwards; the request lives on as an orphan until the
    /// engine finishes it).
    ///
    /// Why no process writes into the caller's memory after this returns:
    /// * this process writes into a loan only through `BufTable`, which
    ///   after the detach hands out the table's own copy instead;
    /// * the only other writer is a same-node peer that was sent the
    ///   buffer's address in a CTS_COOP (it pushes its part by
    ///   `process_vm_writev`). Such a receive has a `remote_writer`, and we
    ///   do not detach it until that peer's PUSHED has arrived (it wrote,
    ///   or will not) or its process can no longer act — however long that
    ///   takes, and whatever error the job is in.
    ///
    /// A peer that was sent a *send's* address (RTS) only reads from it;
    /// after a detach it may read stale bytes, which can only happen in a
    /// job that has already failed (abort, lost launcher, a panicking rank).
    #[cold]
    #[inline(never)]
    pub(crate) fn abandon(&mut self, id: ReqId) {
        if !self.engine.is_live(id) {
            return;
        }
        if !self.engine.is_done(id) && self.bufs.is_borrowed(id) {
            self.await_remote_writer(id);
        }
        if self.engine.is_done(id) {
            let _ = self.finish(id);
        } else {
            self.bufs.detach(id);
        }
    }

    /// Makes progress until no peer may write into receive `id`'s buffer
    /// any more (see [`Progress::abandon`]). Errors of the job are ignored
    /// here: only the peer's answer or its death ends the wait.
    fn await_remote_writer(&mut self, id: ReqId) {
        let mut rounds = 0u32;
        while let Some(peer) = self.engine.remote_writer(id) {
            let pid = self.shm.as_ref().and_then(|s| s.pid(peer));
            if pid.is_none_or(|pid| !crate::sys::process_alive(pid)) {
                return;
            }
            if rounds == 0 {
                // Our CTS_COOP may still be queued: send it (the peer answers).
                self.pump();
            }
            rounds = rounds.wrapping_add(1);
            let _ = self.spin_once();
            if rounds % 64 == 0 {
                let _ = self.progress_once(Some(Duration::from_millis(1)));
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Whether request `id` has not been collected yet.
    pub(crate) fn is_live(&self, id: ReqId) -> bool {
        self.engine.is_live(id)
    }

    fn reap_orphans(&mut self) {
        let mut orphans = std::mem::take(self.bufs.orphans());
        orphans.retain(|&id| {
            if self.engine.is_done(id) {
                self.bufs.remove(id);
                let _ = self.engine.take_result(id);
                false
            } else {
                true
            }
        });
        *self.bufs.orphans() = orphans;
    }

    fn deliver(&mut self) {
        while let Some((id, data)) = self.engine.poll_delivery() {
            let dst = self.bufs.recv_bytes_mut(id);
            if let Some(dst) = dst.get_mut(..data.len()) {
                dst.copy_from_slice(&data);
            }
            self.engine.recycle(data);
        }
        if self.engine.has_pulls() {
            // CTS_COOP frames go out before we copy, so the sender pushes its
            // part while we pull ours.
            self.pump();
        }
        while let Some(push) = self.engine.poll_push() {
            let pid = self.shm.as_ref().and_then(|s| s.pid(push.peer));
            let src = self
                .bufs
                .send_bytes(push.sreq)
                .get(push.offset..push.offset + push.len);
            let r = match (pid, src) {
                (Some(pid), Some(src)) => {
                    crate::sys::cma::write(pid, push.addr.wrapping_add(push.offset as u64), src)
                }
                _ => Err(std::io::Error::other("no push source")),
            };
            self.engine.handle_push_done(push, r.is_ok());
        }
        while let Some(pull) = self.engine.poll_pull() {
            let pid = self.shm.as_ref().and_then(|s| s.pid(pull.peer));
            let dst = self.bufs.recv_bytes_mut(pull.rreq);
            let r = match (pid, dst.get_mut(pull.offset..pull.offset + pull.len)) {
                (Some(pid), Some(dst)) => {
                    crate::sys::cma::read(pid, pull.addr.wrapping_add(pull.offset as u64), dst)
                }
                _ => Err(std::io::Error::other("no pull target")),
            };
            if let Err(e) = &r {
                if !self.cma_warned {
                    self.cma_warned = true;
                    eprintln!(
                        "courier[rank {}]: cross-memory attach failed ({e}); \
                         large messages fall back to copies through shared memory",
                        self.me
                    );
                }
            }
            self.engine.handle_pull_done(pull, r.is_ok());
        }
    }

    /// Reads and handles everything available from `peer`.
    fn read_peer(&mut self, peer: Rank) -> std::result::Result<bool, LinkError> {
        let mut did = false;
        let mut links = Links {
            tcp: &mut self.tcp,
            selfloop: &mut self.selfloop,
            shm: self.shm.as_mut(),
            kind: self.kinds[peer as usize],
        };
        let st = self.inp[peer as usize].get_or_insert_with(|| Box::new(InState::new()));
        loop {
            match st.cur {
                None => {
                    let staged = st.end - st.start;
                    let hlen = match st.rx.get(st.start) {
                        Some(&first) if staged > 0 => Frame::header_len(first)
                            .map_err(|e| LinkError(format!("invalid frame header: {e}")))?,
                        _ => HEADER_LEN,
                    };
                    if staged >= hlen {
                        let frame = Frame::decode(&st.rx[st.start..st.start + hlen], self.max_len)
                            .map_err(|e| LinkError(format!("invalid frame header: {e}")))?;
                        st.start += hlen;
                        did = true;
                        let dest = self
                            .engine
                            .handle_frame(peer, frame)
                            .map_err(|e| LinkError(format!("protocol violation: {e}")))?;
                        let len = frame.payload_len() as usize;
                        match dest {
                            Some(dest) if len > 0 => st.cur = Some(Cur { dest, len, off: 0 }),
                            Some(_) => self.engine.handle_payload_done(peer),
                            None => {}
                        }
                        // Deliveries and transmits are handled by the caller.
                        continue;
                    }
                    if st.start == st.end {
                        st.start = 0;
                        st.end = 0;
                    } else if st.start > 0 {
                        st.rx.copy_within(st.start..st.end, 0);
                        st.end -= st.start;
                        st.start = 0;
                    }
                    let limit = if st.header_only {
                        HEADER_LEN
                    } else {
                        st.rx.len()
                    };
                    // A ring (unlike a socket, which must be read until it
                    // would block) is polled again anyway: skip the read
                    // that would find it still empty.
                    if st.drained {
                        st.drained = false;
                        return Ok(did);
                    }
                    let n = links.read(peer, &mut st.rx[st.end..limit])?;
                    if n == 0 {
                        return Ok(did);
                    }
                    st.drained = links.kind == LinkKind::Shm && st.end + n < limit;
                    st.end += n;
                }
                Some(mut cur) => {
                    let dst: &mut [u8] = match cur.dest {
                        Dest::Req(id) => self.bufs.recv_bytes_mut(id),
                        Dest::Staging => self.engine.staging_mut(peer).unwrap_or(&mut []),
                    };
                    let Some(dst) = dst.get_mut(cur.off..cur.len) else {
                        return Err(LinkError("payload destination vanished".into()));
                    };
                    let avail = st.end - st.start;
                    if avail > 0 {
                        let take = avail.min(dst.len());
                        dst[..take].copy_from_slice(&st.rx[st.start..st.start + take]);
                        st.start += take;
                        cur.off += take;
                    } else if dst.len() >= DIRECT_READ_MIN {
                        let n = links.read(peer, dst)?;
                        if n == 0 {
                            st.cur = Some(cur);
                            return Ok(did);
                        }
                        cur.off += n;
                        st.header_only = true;
                    } else {
                        st.start = 0;
                        st.end = 0;
                        let n = links.read(peer, &mut st.rx)?;
                        if n == 0 {
                            st.cur = Some(cur);
                            return Ok(did);
                        }
                        st.end = n;
                        continue;
                    }
                    did = true;
                    if cur.off == cur.len {
                        st.cur = None;
                        if cur.len < DIRECT_READ_MIN {
                            st.header_only = false;
                        }
                        self.engine.handle_payload_done(peer);
                    } else {
                        st.cur = Some(cur);
                    }
                }
            }
        }
    }

    /// One round: push output, poll links (waiting up to `timeout`), read input.
    /// Returns whether anything happened.
    pub(crate) fn progress_once(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.pump();
        let mut did = false;
        if self.selfloop.pending() > 0 {
            did |= self.read_one(self.me);
        }
        let service = self
            .tcp
            .poll(if did { Some(Duration::ZERO) } else { timeout })
            .map_err(|e| Error::io(None, e))?;
        if service {
            self.read_service();
        }
        self.tcp.take_lost(&mut self.lost);
        self.handle_lost();
        let mut ready = std::mem::take(&mut self.ready);
        self.tcp.take_ready(&mut ready);
        if let Some(shm) = self.shm.as_mut() {
            shm.readable(&mut ready);
        }
        for &peer in &ready {
            did |= self.read_one(peer);
        }
        ready.clear();
        self.ready = ready;
        self.pump();
        if !self.bufs.orphans().is_empty() {
            self.reap_orphans();
        }
        self.check_job()?;
        Ok(did)
    }

    /// A cheap busy-poll round for few links: read every established socket
    /// directly instead of asking the poller. Returns whether anything happened.
    fn spin_once(&mut self) -> Result<bool> {
        self.pump();
        let mut did = false;
        if self.selfloop.pending() > 0 {
            did |= self.read_one(self.me);
        }
        let mut peers = std::mem::take(&mut self.ready);
        if self.tcp.established_count() > 0 {
            for &peer in &self.pending_out {
                self.tcp.assume_writable(peer);
            }
            self.tcp.assume_readable(&mut peers);
        }
        if let Some(shm) = self.shm.as_mut() {
            shm.readable(&mut peers);
        }
        for &peer in &peers {
            did |= self.read_one(peer);
        }
        peers.clear();
        self.ready = peers;
        self.pump();
        Ok(did)
    }

    /// Whether a spin round would certainly find nothing to do: no output
    /// queued, no socket links to read, and no ring holding bytes. Much
    /// cheaper than the round itself, so a spinning rank notices a message
    /// sooner.
    fn quiet(&mut self) -> bool {
        self.pending_out.is_empty()
            && self.lost.is_empty()
            && !self.engine.has_transmits()
            && self.selfloop.pending() == 0
            && self.tcp.established_count() == 0
            && self.shm.as_mut().is_none_or(|s| !s.any_ready())
    }

    fn read_one(&mut self, peer: Rank) -> bool {
        let r = self.read_peer(peer);
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

    fn read_service(&mut self) {
        let Some(s) = self.service.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match s.stream.read(&mut buf) {
                Ok(0) => {
                    self.service_lost = true;
                    break;
                }
                Ok(n) => s.deframer.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.service_lost = true;
                    break;
                }
            }
        }
        while let Ok(Some(body)) = s.deframer.next_message() {
            if let Ok(Reply::Abort { code }) = Reply::decode(&body) {
                self.aborted = Some(code);
            }
        }
    }

    /// Drives progress until `done` holds, spinning, then yielding, then blocking.
    pub(crate) fn wait_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) -> Result<()> {
        // Control frames produced by the last call (CTS, FIN, acks) go out now,
        // not at the next call, which may be far away.
        self.pump();
        if done(self) {
            return Ok(());
        }
        // The clock is read only once spinning has begun, then every 64th
        // round while spinning (a read costs several quiet rounds), every
        // 16th on oversubscribed nodes (their spin is short and must end on
        // time, so the core goes to another rank: reading every 64th made 8
        // ranks on 2 cores 1.2-1.3x slower), and every round while yielding
        // (a yield may hand the core away for a whole time slice). The
        // poller (new connections, the launcher: system calls) is asked
        // every 4096th round while spinning, every 32nd while yielding,
        // every round when there are too many sockets to read directly, and
        // at least every SERVICE_INTERVAL while rounds keep finding work.
        let mut idle_since: Option<Instant> = None;
        let mut now_idle = Duration::ZERO;
        let mut rounds = 0u32;
        let mut yielding = false;
        let clock_every = if self.policy.oversubscribed { 16 } else { 64 };
        loop {
            rounds = rounds.wrapping_add(1);
            if yielding || rounds % clock_every == 0 {
                now_idle = idle_since.get_or_insert_with(Instant::now).elapsed();
            }
            let spinning = now_idle < self.policy.spin;
            yielding = !spinning && now_idle < self.policy.spin + self.policy.yield_for;
            let poll_due = rounds % if yielding { 32 } else { 4096 } == 0
                || self.tcp.established_count() > DIRECT_SPIN_MAX_LINKS;
            let did = if (spinning || yielding) && !poll_due {
                if self.quiet() {
                    std::hint::spin_loop();
                    false
                } else if self.service_due() {
                    self.progress_once(Some(Duration::ZERO))?
                } else {
                    self.spin_once()?
                }
            } else if spinning || yielding {
                self.progress_once(Some(Duration::ZERO))?
            } else {
                self.block()?
            };
            if done(self) {
                return Ok(());
            }
            if did {
                idle_since = None;
                now_idle = Duration::ZERO;
                rounds = 0;
            } else if yielding {
                // Give the core to a rank that shares it (oversubscribed
                // nodes): it is usually the one we are waiting for.
                std::thread::yield_now();
            }
        }
    }

    /// Whether a busy rank must ask the poller now: idle rounds reach the
    /// poller by count, but rounds that keep finding messages restart that
    /// count, so a rank busy with traffic would otherwise never accept (or
    /// close) a connection, nor hear the launcher. Counted on busy rounds
    /// only (quiet rounds cost nothing extra): the clock is read every
    /// [`SERVICE_CLOCK_ROUNDS`] of them, the poller asked every
    /// [`SERVICE_INTERVAL`].
    fn service_due(&mut self) -> bool {
        self.busy_rounds = self.busy_rounds.wrapping_add(1);
        if self.busy_rounds % SERVICE_CLOCK_ROUNDS != 0 {
            return false;
        }
        let now = Instant::now();
        if now < self.next_service {
            return false;
        }
        self.next_service = now + SERVICE_INTERVAL;
        true
    }

    /// Sleeps until something may have happened, then makes progress.
    /// With shared-memory peers the rank sleeps on its futex (senders wake
    /// it); TCP links and the launcher are then polled at short intervals.
    fn block(&mut self) -> Result<bool> {
        let Some(shm) = self.shm.as_mut() else {
            return self.progress_once(Some(self.policy.block));
        };
        if self.tcp.established_count() > 0 {
            return self.progress_once(Some(Duration::from_millis(1)));
        }
        let timeout = if self.pending_out.is_empty() {
            Duration::from_millis(20)
        } else {
            // Our output waits for a peer to drain its ring; it does not wake us.
            Duration::from_micros(200)
        };
        let seq = shm.prepare_sleep();
        let mut ready = std::mem::take(&mut self.ready);
        shm.readable(&mut ready);
        if ready.is_empty() && self.selfloop.pending() == 0 {
            shm.sleep(seq, timeout);
        } else {
            shm.cancel_sleep();
        }
        ready.clear();
        self.ready = ready;
        self.progress_once(Some(Duration::ZERO))
    }

    /// Waits for request `id` and collects its outcome.
    #[inline]
    pub(crate) fn wait(&mut self, id: ReqId) -> Result<MsgInfo> {
        self.wait_until(|p| p.engine.is_done(id))?;
        self.finish(id)
    }

    /// Collects a finished request, releasing its buffer.
    #[inline]
    pub(crate) fn finish(&mut self, id: ReqId) -> Result<MsgInfo> {
        self.bufs.remove(id);
        match self.engine.take_result(id) {
            Some(Ok(info)) => Ok(info),
            Some(Err(e)) => Err(e.into()),
            None => Err(Error::InvalidArgument("request already completed".into())),
        }
    }

    /// Finalize: flush every queue, say BYE on every open link, and wait for
    /// each of those peers to say BYE (or close) too.
    pub(crate) fn finalize(&mut self) -> Result<()> {
        let r = self.finalize_links();
        self.finalized = true;
        r
    }

    fn finalize_links(&mut self) -> Result<()> {
        self.wait_until(|p| p.pending_out.is_empty())?;
        let peers = self.tcp.established_peers();
        // Shared-memory peers we exchanged messages with learn that we are
        // gone (their later operations on us fail instead of hanging); we do
        // not wait for their answer, as there is no connection to tear down.
        let shm_peers: Vec<Rank> = match &self.shm {
            Some(shm) => {
                let mapped = shm.mapped_peers();
                (0..self.out.len() as Rank)
                    .filter(|&p| shm.has_peer(p) && self.engine.peer_open(p))
                    .filter(|&p| self.inp[p as usize].is_some() || mapped.contains(&p))
                    .collect()
            }
            None => Vec::new(),
        };
        for &p in peers.iter().chain(&shm_peers) {
            if let Some(q) = self.out.get_mut(p as usize) {
                q.push_back(OutFrame {
                    header: Frame::Bye.encode(),
                    payload: OutPayload::None,
                    eager: false,
                    sent: 0,
                });
                self.pending_out.push(p);
            }
        }
        self.bye_sent = true;
        self.wait_until(|p| p.pending_out.is_empty())?;
        for &p in &peers {
            self.tcp.shutdown_write(p);
        }
        self.wait_until(|p| peers.iter().all(|&q| !p.engine.peer_open(q)))
    }
}

/// The transports of a rank, borrowed together for reading one peer.
struct Links<'a> {
    tcp: &'a mut TcpTransport,
    selfloop: &'a mut SelfLoop,
    shm: Option<&'a mut ShmTransport>,
    kind: LinkKind,
}

impl Links<'_> {
    fn read(&mut self, peer: Rank, buf: &mut [u8]) -> std::result::Result<usize, LinkError> {
        match self.kind {
            LinkKind::SelfLoop => self.selfloop.try_read(peer, buf),
            LinkKind::Tcp => self.tcp.try_read(peer, buf),
            LinkKind::Shm => match self.shm.as_deref_mut() {
                Some(s) => s.try_read(peer, buf),
                None => Ok(0),
            },
        }
    }
}
