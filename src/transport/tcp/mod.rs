//! TCP links between ranks on one mio event loop (no thread per peer).
//!
//! * Lazy: a link to a peer is opened on the first frame queued for it.
//! * Every connection opens with the job-key [`handshake`] (set up in
//!   [`setup`]); a connection that fails it or sends garbage is logged and
//!   closed without disturbing the job.
//! * Duplicate links: when two ranks connect to each other at the same time,
//!   the connection opened by the lower rank wins. The acceptor decides after
//!   authentication: it declines an incoming connection if it already has an
//!   established link to that peer, or has its own attempt pending and is the
//!   lower rank. Either way exactly one link survives and no frame is ever
//!   written before the handshake has completed on the sending side.
//! * Handshake messages are read with exact lengths, so frame bytes that
//!   follow the handshake are never swallowed.

pub(crate) mod handshake;
mod setup;

use super::{LinkError, Transport};
use crate::ids::Rank;
use handshake::{Connector, JobKey};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use setup::{Conn, State};
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
/// Token of the rendezvous-service connection, watched for aborts and EOF.
pub(crate) const SERVICE: Token = Token(1);
const FIRST_CONN: usize = 2;
/// Token of the waker another thread of this rank uses to end a sleep in
/// the poller (see [`TcpTransport::wake`]).
const WAKER: Token = Token(usize::MAX);

/// The poller and its event buffer, lent to the thread that sleeps in it
/// with the driver unlocked (so that the rank's other threads can work
/// meanwhile); see [`TcpTransport::lend_poller`].
#[derive(Debug)]
pub(crate) struct Poller {
    poll: Poll,
    events: Events,
}

impl Poller {
    /// Waits up to `timeout` for events (an interrupted wait found none).
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.events.clear();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Counters for the debug report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TcpStats {
    pub(crate) connects: u64,
    pub(crate) accepts: u64,
    pub(crate) declined_duplicates: u64,
    pub(crate) rejected: u64,
    /// Writes (system calls) that moved bytes to a peer.
    pub(crate) writes: u64,
}

/// The TCP transport of one rank.
#[derive(Debug)]
pub(crate) struct TcpTransport {
    /// `None` while lent out (see [`TcpTransport::lend_poller`]).
    poller: Option<Poller>,
    /// Registers sockets, also while the poller is lent out.
    registry: mio::Registry,
    waker: mio::Waker,
    listener: Option<TcpListener>,
    local_addr: Option<SocketAddr>,
    me: Rank,
    size: u32,
    key: JobKey,
    addrs: Vec<Option<SocketAddr>>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Current (pending or established) connection index per peer.
    peer_conn: Vec<Option<usize>>,
    ready: Vec<Rank>,
    lost: Vec<(Rank, String)>,
    stats: TcpStats,
    established_n: usize,
    /// Last look for handshakes that took too long.
    last_sweep: Instant,
    options: TcpOptions,
    /// Where a write of several buffers of at most [`SEND_GATHER`] bytes in
    /// all is put together, to go in one `send` (see `try_write`).
    gather: Vec<u8>,
}

/// Writes of several buffers up to this many bytes in all are copied into
/// one and sent with `send` rather than `writev`: the kernel's vectored
/// path costs more than the copy. `courier bench latency --transport tcp`,
/// new ÷ old with the limit at 4 KiB, 6 interleaved rounds: 1 B – 1 KiB
/// 0.96–0.98, 2 KiB (gathered then) 0.99, 4 KiB and above level; the
/// limit is 2 KiB, where the gain has gone (a 2 KiB message with its
/// header goes as before). A protocol-free
/// ping-pong over loopback, a 16-byte header and the payload, `writev` of
/// the two against one `send` after copying them: 64 B 1.03–1.04, 1 KiB
/// 1.01–1.02.
const SEND_GATHER: usize = 2048;

/// How TCP links are set up (from the configuration, by the caller).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpOptions {
    /// SO_SNDBUF/SO_RCVBUF of data links (`None`: the kernel's autotuning).
    pub(crate) buffer: Option<usize>,
    /// Accepted connections that have not authenticated within this time are closed.
    pub(crate) handshake_timeout: Duration,
}

/// Applies the data-link socket options: no Nagle delay, and the buffer
/// sizes asked for.
fn tune(stream: &TcpStream, options: &TcpOptions) {
    let _ = stream.set_nodelay(true);
    if let Some(size) = options.buffer {
        let s = socket2::SockRef::from(stream);
        let _ = s.set_send_buffer_size(size);
        let _ = s.set_recv_buffer_size(size);
    }
}

/// Gives `listener` a queue with room for `size` connections arriving at
/// once (at least 1024; the kernel caps it at `net.core.somaxconn`). mio
/// listens with 128: a job's ranks connecting together (to the launcher at
/// start-up, or to one peer) overflowed it from about 256 ranks, and the
/// kernel retries a dropped connection only after a second.
pub fn listen_for_job(listener: &impl std::os::fd::AsFd, size: u32) -> io::Result<()> {
    let backlog = i32::try_from(size.saturating_add(64))
        .unwrap_or(i32::MAX)
        .max(1024);
    socket2::SockRef::from(listener).listen(backlog)
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl TcpTransport {
    /// A transport for rank `me` of `size`, listening on `bind` (port chosen by the OS).
    pub(crate) fn new(
        me: Rank,
        size: u32,
        key: JobKey,
        bind: Option<std::net::IpAddr>,
        options: TcpOptions,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(&registry, WAKER)?;
        let mut listener = None;
        let mut local_addr = None;
        if let Some(ip) = bind {
            let mut l = TcpListener::bind(SocketAddr::new(ip, 0))?;
            listen_for_job(&l, size)?;
            poll.registry()
                .register(&mut l, LISTENER, Interest::READABLE)?;
            local_addr = Some(l.local_addr()?);
            listener = Some(l);
        }
        Ok(TcpTransport {
            poller: Some(Poller {
                poll,
                events: Events::with_capacity(256),
            }),
            registry,
            waker,
            listener,
            local_addr,
            me,
            size,
            key,
            addrs: vec![None; size as usize],
            conns: Vec::new(),
            gather: Vec::with_capacity(SEND_GATHER),
            free: Vec::new(),
            peer_conn: vec![None; size as usize],
            ready: Vec::new(),
            lost: Vec::new(),
            stats: TcpStats::default(),
            established_n: 0,
            last_sweep: Instant::now(),
            options,
        })
    }

    /// The address peers connect to.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Records where `peer` listens.
    pub(crate) fn set_addr(&mut self, peer: Rank, addr: SocketAddr) {
        if let Some(a) = self.addrs.get_mut(peer as usize) {
            *a = Some(addr);
        }
    }

    /// Watches the rendezvous-service connection.
    pub(crate) fn register_service(&mut self, s: &mut TcpStream) -> io::Result<()> {
        self.registry.register(s, SERVICE, Interest::READABLE)
    }

    pub(crate) fn stats(&self) -> TcpStats {
        self.stats
    }

    /// Peers with an established link.
    pub(crate) fn established_peers(&self) -> Vec<Rank> {
        (0..self.size)
            .filter(|&p| self.established(p).is_some())
            .collect()
    }

    /// Number of established links.
    pub(crate) fn established_count(&self) -> usize {
        self.established_n
    }

    fn established(&self, peer: Rank) -> Option<usize> {
        let i = (*self.peer_conn.get(peer as usize)?)?;
        match self.conns.get(i)?.as_ref()?.state {
            State::Established { .. } => Some(i),
            _ => None,
        }
    }

    /// Whether the link to `peer` is established (frames can be written now).
    pub(crate) fn is_established(&self, peer: Rank) -> bool {
        self.established(peer).is_some()
    }

    /// Asks the kernel to acknowledge what `peer` sends at once
    /// (`TCP_QUICKACK`, which it drops again by itself), while a large
    /// message from `peer` is arriving in parts.
    pub(crate) fn ask_quick_acks(&mut self, peer: Rank) {
        let Some(i) = self.established(peer) else {
            return;
        };
        if let Some(Some(c)) = self.conns.get(i) {
            // A hint: a failure only leaves acknowledgements delayed.
            let _ = socket2::SockRef::from(&c.stream).set_quickack(true);
        }
    }

    /// Whether a link to `peer` exists or is being opened.
    pub(crate) fn has_link(&self, peer: Rank) -> bool {
        self.peer_conn
            .get(peer as usize)
            .is_some_and(Option::is_some)
    }

    /// Starts opening a link to `peer` unless one exists.
    pub(crate) fn connect(&mut self, peer: Rank) -> Result<(), LinkError> {
        if self.has_link(peer) {
            return Ok(());
        }
        let addr = self
            .addrs
            .get(peer as usize)
            .copied()
            .flatten()
            .ok_or_else(|| LinkError(format!("no address known for rank {peer}")))?;
        let err = |e: io::Error| LinkError(format!("connect to rank {peer} at {addr}: {e}"));
        let stream = TcpStream::connect(addr).map_err(err)?;
        // No Nagle delay on our side either (accepted links get the same).
        tune(&stream, &self.options);
        let c = Connector::new(self.key.clone(), self.me, peer).map_err(err)?;
        let i = self
            .insert(Conn {
                stream,
                remote: Some(addr),
                state: State::Connecting { peer, c },
                hs_in: Vec::new(),
                hs_out: Vec::new(),
                readable: false,
                writable: false,
                since: Instant::now(),
            })
            .map_err(err)?;
        self.stats.connects += 1;
        self.peer_conn[peer as usize] = Some(i);
        Ok(())
    }

    /// Peers whose links became readable since the last call.
    pub(crate) fn take_ready(&mut self, out: &mut Vec<Rank>) {
        out.append(&mut self.ready);
    }

    /// Links lost since the last call, with a reason.
    pub(crate) fn take_lost(&mut self, out: &mut Vec<(Rank, String)>) {
        out.append(&mut self.lost);
    }

    /// Waits up to `timeout` for events and advances accepts and handshakes.
    /// Returns whether the service connection became readable. While the
    /// poller is lent out, finds nothing (its borrower handles the events).
    pub(crate) fn poll(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        let Some(poller) = self.poller.as_mut() else {
            return Ok(false);
        };
        poller.wait(timeout)?;
        Ok(self.handle_events())
    }

    /// Lends the poller to a thread that sleeps in it without the driver's
    /// lock; `None` when it is already lent. Give it back with
    /// [`TcpTransport::return_poller`].
    pub(crate) fn lend_poller(&mut self) -> Option<Poller> {
        self.poller.take()
    }

    /// Takes the poller back and handles the events it caught; returns
    /// whether the service connection became readable.
    pub(crate) fn return_poller(&mut self, poller: Poller) -> bool {
        self.poller = Some(poller);
        self.handle_events()
    }

    /// Ends a sleep in the poller (from another thread of this rank).
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Advances accepts, handshakes and links on the events last caught.
    fn handle_events(&mut self) -> bool {
        let Some(poller) = self.poller.as_ref() else {
            return false;
        };
        let mut service = false;
        let mut listener_ready = false;
        let mut touched: Vec<(usize, bool, bool)> = Vec::new();
        for ev in poller.events.iter() {
            match ev.token() {
                LISTENER => listener_ready = true,
                SERVICE => service = true,
                WAKER => {}
                Token(t) => touched.push((
                    t - FIRST_CONN,
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable() || ev.is_error(),
                )),
            }
        }
        if listener_ready {
            self.accept_all();
        }
        if self.stats.accepts > 0 {
            self.sweep_handshakes();
        }
        for (i, r, w) in touched {
            let Some(Some(c)) = self.conns.get_mut(i) else {
                continue;
            };
            c.readable |= r;
            c.writable |= w;
            if let State::Established { peer } = c.state {
                if r && c.hs_out.is_empty() && !self.ready.contains(&peer) {
                    self.ready.push(peer);
                }
                if !c.hs_out.is_empty() {
                    self.advance(i);
                }
            } else {
                self.advance(i);
            }
        }
        service
    }

    /// Closes the link to `peer` (after loss or at finalize).
    pub(crate) fn drop_peer(&mut self, peer: Rank) {
        if let Some(Some(i)) = self.peer_conn.get(peer as usize).copied() {
            self.close(i);
        }
        self.ready.retain(|&p| p != peer);
    }

    /// Marks every established link readable, so the next reads try the
    /// socket without waiting for the poller (busy polling); returns how many.
    pub(crate) fn assume_readable(&mut self, out: &mut Vec<Rank>) {
        for (peer, pc) in self.peer_conn.iter().enumerate() {
            let Some(i) = *pc else { continue };
            if let Some(Some(c)) = self.conns.get_mut(i) {
                if matches!(c.state, State::Established { .. }) && c.hs_out.is_empty() {
                    c.readable = true;
                    out.push(peer as Rank);
                }
            }
        }
    }

    /// Marks `peer`'s established link writable, so the next write tries the
    /// socket without waiting for the poller (busy polling).
    pub(crate) fn assume_writable(&mut self, peer: Rank) {
        if let Some(i) = self.established(peer) {
            if let Some(Some(c)) = self.conns.get_mut(i) {
                c.writable = true;
            }
        }
    }

    /// Half-closes our side of the link after the last frame (finalize).
    pub(crate) fn shutdown_write(&mut self, peer: Rank) {
        if let Some(i) = self.established(peer) {
            if let Some(Some(c)) = self.conns.get(i) {
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            }
        }
    }

    fn lost_err(&mut self, i: usize, why: String) -> LinkError {
        self.close(i);
        LinkError(why)
    }
}

impl Transport for TcpTransport {
    fn try_write(&mut self, peer: Rank, bufs: &[IoSlice<'_>]) -> Result<usize, LinkError> {
        let Some(i) = self.established(peer) else {
            return Ok(0);
        };
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return Ok(0);
        };
        if !c.writable || !c.hs_out.is_empty() {
            return Ok(0);
        }
        let one = match bufs {
            [b] => Some(&b[..]),
            _ if bufs.iter().map(|b| b.len()).sum::<usize>() <= SEND_GATHER => {
                self.gather.clear();
                for b in bufs {
                    crate::sys::copy::extend(&mut self.gather, b);
                }
                Some(&self.gather[..])
            }
            _ => None,
        };
        loop {
            let wrote = match one {
                Some(b) => c.stream.write(b),
                None => c.stream.write_vectored(bufs),
            };
            match wrote {
                Ok(n) => {
                    self.stats.writes += 1;
                    return Ok(n);
                }
                Err(e) if would_block(&e) => {
                    c.writable = false;
                    return Ok(0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.lost_err(i, format!("write failed: {e}"))),
            }
        }
    }

    fn try_read(&mut self, peer: Rank, buf: &mut [u8]) -> Result<usize, LinkError> {
        let Some(i) = self.established(peer) else {
            return Ok(0);
        };
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return Ok(0);
        };
        if !c.readable || buf.is_empty() {
            return Ok(0);
        }
        loop {
            match c.stream.read(buf) {
                Ok(0) => return Err(self.lost_err(i, "connection closed".into())),
                Ok(n) => {
                    // A short read drained the socket: edge-triggered epoll
                    // reports the next arrival, so skip the EAGAIN read.
                    if n < buf.len() {
                        c.readable = false;
                    }
                    return Ok(n);
                }
                Err(e) if would_block(&e) => {
                    c.readable = false;
                    return Ok(0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.lost_err(i, format!("read failed: {e}"))),
            }
        }
    }
}
