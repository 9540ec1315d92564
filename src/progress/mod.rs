//! The driver: connects the sans-IO [`Engine`] to the transports and the
//! user's buffers, and decides how to wait. It is the only layer that does
//! I/O for the library.
//!
//! The rooms: [`outbound`] (frames queued per peer and flushed to the
//! links), [`inbound`] (deframing, handing headers to the engine, payloads
//! into place, single copies), [`links`] (which transport carries each peer:
//! one dispatch), [`service`] (the launcher's connection: abort notices,
//! FINALIZE), [`loans`] (the user memory lent to in-flight requests),
//! [`wait`] (spin → yield → block). This module holds the driver itself and
//! the calls the API layer makes: posting, collecting and abandoning
//! requests, probing, finalizing. Callers never reach the engine or the
//! loan table directly.

#[allow(unsafe_code)]
mod driver;
mod inbound;
mod links;
#[allow(unsafe_code)]
mod loans;
pub(crate) mod notes;
mod outbound;
mod service;
mod wait;

pub(crate) use driver::{thread_token, Driver, Held};
pub use links::LinkKind;
pub(crate) use wait::WaitPolicy;

use crate::engine::{DirectOutcome, DirectStart, Engine, EngineStats, MsgInfo, ReqId};
use crate::error::{Error, Result};
use crate::ids::Rank;
use crate::transport::shm::calibrate::Profile;
use crate::transport::shm::ShmTransport;
use crate::transport::tcp::{TcpStats, TcpTransport};
use crate::wire::Frame;
use inbound::InState;
use links::Links;
use loans::BufTable;
use outbound::OutFrame;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The per-rank driver.
#[derive(Debug)]
pub(crate) struct Progress {
    engine: Engine,
    bufs: BufTable,
    me: Rank,
    max_len: u64,
    links: Links,
    /// Node of every world rank (from wire-up); empty for a singleton.
    nodes: Vec<u32>,
    cma_warned: bool,
    /// How this node moves data between its ranks (measured at start-up).
    profile: Profile,
    /// Frames queued per peer, and the peers with a non-empty queue.
    out: Vec<VecDeque<OutFrame>>,
    pending_out: Vec<Rank>,
    /// Deframing state per peer (created on first read).
    inp: Vec<Option<Box<InState>>>,
    /// Peers found readable (reused between rounds).
    ready: Vec<Rank>,
    /// Single-copy pulls gathered for one system call (reused).
    pulls: Vec<crate::engine::CopyPart>,
    /// Links found broken, to be handled.
    lost: Vec<(Rank, String)>,
    service: service::Service,
    policy: WaitPolicy,
    bye_sent: bool,
    /// Writes to TCP links that carried nothing but credit (the debug
    /// report's `credit_alone_writes`).
    credit_alone: u64,
    /// `finalize` ran: every later call is an error.
    finalized: bool,
    /// Busy rounds since the clock was last compared with `next_service`.
    busy_rounds: u32,
    /// Queued output went out since a progress round last looked: that
    /// round made progress. (Counting only what came in, a rank streaming
    /// a large message into a ring the reader kept draining looked idle,
    /// and went to sleep between each ring's worth.)
    wrote: bool,
    /// When the poller is due again (see `wait::SERVICE_INTERVAL`).
    next_service: Instant,
    /// How this rank's waiting threads take turns (see [`driver`]).
    turns: driver::Turns,
    /// The requests made in each open scope (`request::scope`), by slot,
    /// and the free slots.
    scopes: Vec<Vec<ReqId>>,
    free_scopes: Vec<u32>,
    /// What the API layer keeps with each request (see [`notes`]).
    pub(crate) notes: notes::Notes,
    /// Posts left before `take_at_post` looks again for messages that
    /// receives posted earlier take, and the current pause (see there).
    take_skip: u32,
    take_backoff: u32,
    /// The TCP peer the last call's nonblocking send of a small message
    /// went to, while no other call has come since: a further such send
    /// to it joins the burst (see [`Progress::isend_eager_now`]).
    burst: Option<Rank>,
    /// Frames of a burst are queued and no pump has run since: the next
    /// call that is not part of the burst pushes them (see
    /// [`Progress::end_burst`]).
    held: bool,
    /// Burst buffers already written, kept for the next bursts.
    spare_bursts: Vec<Vec<u8>>,
}

impl Progress {
    pub(crate) fn new(engine: Engine, size: u32, tcp: TcpTransport, policy: WaitPolicy) -> Self {
        let me = engine.me();
        Progress {
            engine,
            bufs: BufTable::default(),
            me,
            max_len: crate::config::max_message_len(),
            links: Links::new(me, size, tcp),
            nodes: Vec::new(),
            cma_warned: false,
            profile: Profile::Far,
            out: (0..size).map(|_| VecDeque::new()).collect(),
            pending_out: Vec::new(),
            burst: None,
            held: false,
            spare_bursts: Vec::new(),
            inp: (0..size).map(|_| None).collect(),
            ready: Vec::new(),
            pulls: Vec::new(),
            lost: Vec::new(),
            service: service::Service::default(),
            policy,
            bye_sent: false,
            credit_alone: 0,
            finalized: false,
            busy_rounds: 0,
            wrote: false,
            next_service: Instant::now() + wait::SERVICE_INTERVAL,
            turns: driver::Turns::default(),
            scopes: Vec::new(),
            free_scopes: Vec::new(),
            notes: notes::Notes::default(),
            take_skip: 0,
            take_backoff: 0,
        }
    }

    // ------------------------------------------------------------ set-up

    /// Uses shared memory for the peers already added to `shm`, on a node
    /// of this profile.
    pub(crate) fn set_shm(&mut self, mut shm: ShmTransport, profile: Profile) {
        shm.set_profile(profile);
        self.links.set_shm(shm);
        self.profile = profile;
    }

    /// Watches the rendezvous-service connection for abort notices and EOF.
    pub(crate) fn set_service(&mut self, stream: std::net::TcpStream) -> Result<()> {
        self.service.attach(stream, &mut self.links.tcp)
    }

    /// Records the node of every world rank.
    pub(crate) fn set_nodes(&mut self, nodes: Vec<u32>) {
        self.nodes = nodes;
    }

    // ------------------------------------------------------ the launcher

    /// Sends a request to the rendezvous service (abort).
    pub(crate) fn service_send(&mut self, bytes: &[u8]) -> Result<()> {
        self.service.send(bytes)
    }

    /// Tells the launcher this rank finalized, so that its exit is not taken
    /// for a crash. Best effort: a launcher already gone needs no notice.
    pub(crate) fn tell_service_finalized(&mut self) {
        self.service.tell_finalized();
    }

    /// After asking the launcher to abort: waits (at most `limit`) until it
    /// announces the abort, so it learns the cause before it sees us exit.
    pub(crate) fn await_abort_notice(&mut self, limit: Duration) {
        self.service.await_abort_notice(limit);
    }

    // -------------------------------------------------------- what it knows

    /// The node of world rank `r` (0 when unknown).
    pub(crate) fn node_of(&self, r: u32) -> u32 {
        self.nodes.get(r as usize).copied().unwrap_or(0)
    }

    /// Whether world rank `r` is reached through shared memory.
    pub(crate) fn is_shm_peer(&self, r: Rank) -> bool {
        self.links.kind(r) == Some(LinkKind::Shm)
    }

    /// How this rank waits (spin, yield, block).
    pub(crate) fn policy(&self) -> WaitPolicy {
        self.policy
    }

    /// How this node moves data between its ranks (`Far` without shared
    /// memory).
    pub(crate) fn profile(&self) -> Profile {
        self.profile
    }

    /// Whether this node runs more ranks than it has cores.
    pub(crate) fn oversubscribed(&self) -> bool {
        self.policy.oversubscribed
    }

    pub(crate) fn eager_limit(&self) -> usize {
        self.engine.eager_limit()
    }

    /// The TCP transport's counters.
    pub(crate) fn tcp_stats(&self) -> TcpStats {
        self.links.tcp.stats()
    }

    /// Writes to TCP links that carried nothing but returned credit.
    pub(crate) fn credit_alone_writes(&self) -> u64 {
        self.credit_alone
    }

    /// The address this rank accepts links on (`None` for a singleton).
    pub(crate) fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.links.tcp.local_addr()
    }

    /// The engine's counters, and its posted and unexpected queue lengths.
    pub(crate) fn engine_stats(&self) -> (EngineStats, (usize, usize)) {
        (self.engine.stats(), self.engine.queue_lengths())
    }

    /// Links this rank has open, with their transport.
    pub(crate) fn links(&self) -> Vec<(Rank, LinkKind)> {
        let mut v: Vec<_> = self
            .links
            .tcp
            .established_peers()
            .into_iter()
            .map(|p| (p, LinkKind::Tcp))
            .collect();
        if let Some(shm) = &self.links.shm {
            v.extend(shm.mapped_peers().into_iter().map(|p| (p, LinkKind::Shm)));
        }
        if self.inp.get(self.me as usize).is_some_and(Option::is_some) {
            v.push((self.me, LinkKind::SelfLoop));
        }
        v.sort_by_key(|x| x.0);
        v
    }

    // -------------------------------------------------------------- scopes

    /// A list for the requests of a new scope; returns its slot.
    pub(crate) fn open_scope(&mut self) -> u32 {
        if let Some(slot) = self.free_scopes.pop() {
            return slot;
        }
        // Room for a typical exchange or window without regrowing.
        self.scopes.push(Vec::with_capacity(16));
        (self.scopes.len() - 1) as u32
    }

    /// Records request `id` in scope `slot`.
    #[inline]
    pub(crate) fn scope_push(&mut self, slot: u32, id: ReqId) {
        if let Some(list) = self.scopes.get_mut(slot as usize) {
            list.push(id);
        }
    }

    /// The requests of scope `slot`, taken out to be waited for; give the
    /// emptied list back with [`Progress::close_scope`].
    pub(crate) fn take_scope(&mut self, slot: u32) -> Vec<ReqId> {
        self.scopes
            .get_mut(slot as usize)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Frees scope `slot`, keeping `list`'s room for the next scope.
    pub(crate) fn close_scope(&mut self, slot: u32, mut list: Vec<ReqId>) {
        if let Some(l) = self.scopes.get_mut(slot as usize) {
            list.clear();
            *l = list;
            self.free_scopes.push(slot);
        }
    }

    // ------------------------------------------------------------ requests

    /// A request for a small send already written (or copied aside) by
    /// [`Progress::send_eager_now`]: complete from the start.
    pub(crate) fn completed_send(&mut self, peer: Rank) -> ReqId {
        self.engine.completed_send(peer)
    }

    /// Posts a send of `bytes` to `peer` through the engine (queued in
    /// order behind earlier frames), lending `bytes` to it.
    ///
    /// # Safety
    /// `bytes` must stay valid and unmodified until the request is
    /// finished (collected) or abandoned.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn post_send(
        &mut self,
        peer: Rank,
        context: u32,
        tag: u32,
        bytes: &[u8],
        sync: bool,
    ) -> ReqId {
        let id = self.engine.post_send(peer, context, tag, bytes.len(), sync);
        // SAFETY: forwarded from this function's contract; sends only read.
        unsafe { self.bufs.lend(id, bytes.as_ptr().cast_mut(), bytes.len()) };
        self.pump();
        id
    }

    /// Posts a receive into `bytes`, lending it to the request; a queued
    /// message that matches is copied in at once.
    ///
    /// # Safety
    /// `bytes` must stay valid, and untouched by anyone else, until the
    /// request is finished (collected) or abandoned.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn post_recv(
        &mut self,
        context: u32,
        source: Option<Rank>,
        tag: Option<u32>,
        bytes: &mut [u8],
    ) -> ReqId {
        let (id, queued) = self
            .engine
            .post_recv_queued(context, source, tag, bytes.len());
        // SAFETY: forwarded from this function's contract.
        unsafe { self.bufs.lend(id, bytes.as_mut_ptr(), bytes.len()) };
        if !queued {
            // A queued message matched at once: copy an eager one in now,
            // or start a rendezvous (its clear-to-send goes out before any
            // copy: see `deliver`), and send what finishing it produced (a
            // pull that completed the receive owes the sender its FIN; left
            // for a later wait, it held a 2-rank reduce of 32 KiB up by
            // 3.5x once a finished receive was collected without waiting).
            self.pump();
            self.deliver();
            self.pump();
        }
        id
    }

    /// Ends the direct receive and its loan (see `BufTable::end_direct`).
    fn end_direct(&mut self) -> DirectOutcome {
        let outcome = self.engine.end_direct();
        let draining = matches!(outcome, DirectOutcome::Cancelled { receiving: true });
        self.bufs.end_direct(draining);
        outcome
    }

    /// Whether request `id` has finished (an unknown or stale id counts as finished).
    #[inline]
    pub(crate) fn is_done(&self, id: ReqId) -> bool {
        self.engine.is_done(id)
    }

    /// Whether request `id` has not been collected yet.
    pub(crate) fn is_live(&self, id: ReqId) -> bool {
        self.engine.is_live(id)
    }

    /// Collects a finished request, releasing its buffer. Inline: a
    /// window's worth of these runs per `wait_all`, and the result is read
    /// from registers rather than copied out of a callee's frame.
    #[inline(always)]
    pub(crate) fn finish(&mut self, id: ReqId) -> Result<MsgInfo> {
        if id.is_taken() {
            // Taken as posted: its status waits in the notes.
            return Ok(MsgInfo::EMPTY);
        }
        self.bufs.remove(id);
        match self.engine.take_result(id) {
            Some(Ok(info)) => Ok(info),
            Some(Err(e)) => Err(e.into()),
            None => Err(Error::InvalidArgument("request already completed".into())),
        }
    }

    /// First queued message matching the pattern, without taking it.
    pub(crate) fn probe(
        &self,
        context: u32,
        source: Option<Rank>,
        tag: Option<u32>,
    ) -> Option<MsgInfo> {
        self.engine.probe(context, source, tag)
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
            let pid = self.links.shm_pid(peer);
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

    // ------------------------------------------------------------ the end

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
}

/// The calls that wait: they may let other threads in meanwhile (see
/// [`driver`]).
impl Held<'_> {
    /// A blocking receive into `bytes` without a request, when it can be
    /// one (see the engine's `direct` module): nothing is posted before it.
    /// A queued message that matches is copied in at once. Returns `None`
    /// when it cannot be one, or when its message turned out to need an
    /// ordinary receive (it was queued for one): the caller then posts one.
    #[allow(unsafe_code)]
    pub(crate) fn recv_direct(
        &mut self,
        context: u32,
        source: Option<Rank>,
        tag: Option<u32>,
        bytes: &mut [u8],
    ) -> Option<Result<MsgInfo>> {
        /// Ends the loan however the wait ends (an unwinding panic too).
        struct Loan<'a, 'b>(&'a mut Held<'b>);
        impl Drop for Loan<'_, '_> {
            fn drop(&mut self) {
                if self.0.bufs.direct_is_borrowed() {
                    self.0.end_direct();
                }
            }
        }
        match self.engine.begin_direct(context, source, tag, bytes.len()) {
            DirectStart::Waiting => {}
            DirectStart::Queued(info, data) => {
                if let Some(dst) = bytes.get_mut(..data.len()) {
                    crate::sys::copy::copy(dst, &data);
                }
                self.engine.recycle(data);
                // A synchronous sender's acknowledgement, returned credit.
                self.pump();
                return Some(Ok(info));
            }
            DirectStart::Truncated(e) => return Some(Err(e.into())),
            DirectStart::Ordinary => return None,
        }
        // SAFETY: `bytes` is mutably borrowed for this whole call, and the
        // loan ends (`end_direct`, by the guard at the latest) before we
        // return or unwind.
        unsafe { self.bufs.lend_direct(bytes.as_mut_ptr(), bytes.len()) };
        let loan = Loan(self);
        let waited = loan.0.wait_direct(source);
        match loan.0.end_direct() {
            DirectOutcome::Done(r) => Some(r.map_err(Error::from)),
            DirectOutcome::Fallback => None,
            DirectOutcome::Cancelled { .. } => Some(waited.and_then(|()| {
                Err(Error::InvalidState(
                    "a direct receive ended unfinished".into(),
                ))
            })),
        }
    }

    /// Runs `f` with single-copy receives cooperative only from `min`
    /// bytes (or from the configured size, if larger): for receives whose
    /// bytes this rank reads again at once, pulled by its own core alone
    /// they are in its cache (see `Net::recv_to_combine`).
    pub(crate) fn with_coop_min<R>(&mut self, min: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let saved = self.engine.coop_min();
        if saved == 0 || saved >= min {
            return f(self);
        }
        self.engine.set_coop_min(min);
        let r = f(self);
        self.engine.set_coop_min(saved);
        r
    }

    /// Waits for request `id` and collects its outcome.
    pub(crate) fn wait(&mut self, id: ReqId) -> Result<MsgInfo> {
        self.wait_for(driver::WaitKey::Req(id), |p| p.engine.is_done(id))?;
        self.finish(id)
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
        let peers = self.links.tcp.established_peers();
        // Shared-memory peers we exchanged messages with learn that we are
        // gone (their later operations on us fail instead of hanging); we do
        // not wait for their answer, as there is no connection to tear down.
        let shm_peers: Vec<Rank> = match &self.links.shm {
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
            self.enqueue(p, OutFrame::control(Frame::Bye));
        }
        self.bye_sent = true;
        self.wait_until(|p| p.pending_out.is_empty())?;
        for &p in &peers {
            self.links.tcp.shutdown_write(p);
        }
        self.wait_until(|p| peers.iter().all(|&q| !p.engine.peer_open(q)))
    }
}
