//! TCP links between ranks on one mio event loop (no thread per peer).
//!
//! * Lazy: a link to a peer is opened on the first frame queued for it.
//! * Every connection opens with the job-key handshake of
//!   [`bootstrap::auth`](crate::bootstrap::auth); a connection that fails it
//!   or sends garbage is logged and closed without disturbing the job.
//! * Duplicate links: when two ranks connect to each other at the same time,
//!   the connection opened by the lower rank wins. The acceptor decides after
//!   authentication: it declines an incoming connection if it already has an
//!   established link to that peer, or has its own attempt pending and is the
//!   lower rank. Either way exactly one link survives and no frame is ever
//!   written before the handshake has completed on the sending side.
//! * Handshake messages are read with exact lengths, so frame bytes that
//!   follow the handshake are never swallowed.

use super::{LinkError, Transport};
use crate::bootstrap::auth::{
    self, Acceptor, Connector, JobKey, AUTH_LEN, CHALLENGE_LEN, HELLO_LEN, VERDICT_LEN,
};
use crate::ids::Rank;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
/// Token of the rendezvous-service connection, watched for aborts and EOF.
pub(crate) const SERVICE: Token = Token(1);
const FIRST_CONN: usize = 2;

#[derive(Debug)]
enum State {
    /// Our outgoing TCP connect is in progress.
    Connecting {
        peer: Rank,
        c: Connector,
    },
    AwaitChallenge {
        peer: Rank,
        c: Connector,
    },
    AwaitVerdict {
        peer: Rank,
    },
    /// An accepted connection waiting for its HELLO.
    AwaitHello,
    AwaitAuth {
        a: Acceptor,
    },
    /// Verdict being flushed; established once written.
    Established {
        peer: Rank,
    },
}

impl State {
    fn handshake_len(&self) -> usize {
        match self {
            State::AwaitChallenge { .. } => CHALLENGE_LEN,
            State::AwaitVerdict { .. } => VERDICT_LEN,
            State::AwaitHello => HELLO_LEN,
            State::AwaitAuth { .. } => AUTH_LEN,
            State::Connecting { .. } | State::Established { .. } => 0,
        }
    }

    fn outgoing_peer(&self) -> Option<Rank> {
        match self {
            State::Connecting { peer, .. }
            | State::AwaitChallenge { peer, .. }
            | State::AwaitVerdict { peer } => Some(*peer),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    remote: Option<SocketAddr>,
    state: State,
    hs_in: Vec<u8>,
    hs_out: Vec<u8>,
    readable: bool,
    writable: bool,
    /// When the connection was accepted or opened.
    since: Instant,
}

/// Counters for the debug report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TcpStats {
    pub(crate) connects: u64,
    pub(crate) accepts: u64,
    pub(crate) declined_duplicates: u64,
    pub(crate) rejected: u64,
}

/// The TCP transport of one rank.
#[derive(Debug)]
pub(crate) struct TcpTransport {
    poll: Poll,
    events: Events,
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
    handshake_timeout: Duration,
}

/// Applies the data-link socket options: no Nagle delay, and the buffer
/// sizes of `COURIER_TCP_BUFFER` (bytes; unset: the kernel's autotuning).
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    if let Some(size) = crate::config::tcp_buffer() {
        let s = socket2::SockRef::from(stream);
        let _ = s.set_send_buffer_size(size);
        let _ = s.set_recv_buffer_size(size);
    }
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
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = None;
        let mut local_addr = None;
        if let Some(ip) = bind {
            let mut l = TcpListener::bind(SocketAddr::new(ip, 0))?;
            poll.registry()
                .register(&mut l, LISTENER, Interest::READABLE)?;
            local_addr = Some(l.local_addr()?);
            listener = Some(l);
        }
        Ok(TcpTransport {
            poll,
            events: Events::with_capacity(256),
            listener,
            local_addr,
            me,
            size,
            key,
            addrs: vec![None; size as usize],
            conns: Vec::new(),
            free: Vec::new(),
            peer_conn: vec![None; size as usize],
            ready: Vec::new(),
            lost: Vec::new(),
            stats: TcpStats::default(),
            established_n: 0,
            last_sweep: Instant::now(),
            handshake_timeout: crate::config::handshake_timeout(),
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
        self.poll
            .registry()
            .register(s, SERVICE, Interest::READABLE)
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

    /// Whether a link to `peer` exists or is being opened.
    pub(crate) fn has_link(&self, peer: Rank) -> bool {
        self.peer_conn
            .get(peer as usize)
            .is_some_and(Option::is_some)
    }

    fn insert(&mut self, conn: Conn) -> io::Result<usize> {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let slot = &mut self.conns[i];
        let c = slot.insert(conn);
        if let Err(e) = self.poll.registry().register(
            &mut c.stream,
            Token(FIRST_CONN + i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            *slot = None;
            self.free.push(i);
            return Err(e);
        }
        Ok(i)
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            if matches!(c.state, State::Established { .. }) {
                self.established_n -= 1;
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free.push(i);
            for pc in self.peer_conn.iter_mut() {
                if *pc == Some(i) {
                    *pc = None;
                }
            }
        }
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
        tune(&stream);
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
    /// Returns whether the service connection became readable.
    pub(crate) fn poll(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut service = false;
        let mut touched: Vec<(usize, bool, bool)> = Vec::new();
        for ev in self.events.iter() {
            match ev.token() {
                LISTENER => {}
                SERVICE => service = true,
                Token(t) => touched.push((
                    t - FIRST_CONN,
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable() || ev.is_error(),
                )),
            }
        }
        let listener_ready = self.events.iter().any(|e| e.token() == LISTENER);
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
        Ok(service)
    }

    /// Closes accepted connections that have not proved themselves within
    /// the handshake timeout (half-open or silent strangers would otherwise
    /// hold a descriptor each for ever). Looks at most every 100 ms.
    fn sweep_handshakes(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) < Duration::from_millis(100) {
            return;
        }
        self.last_sweep = now;
        let limit = self.handshake_timeout;
        let stale: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
            .filter(|(_, c)| {
                matches!(c.state, State::AwaitHello | State::AwaitAuth { .. })
                    && now.duration_since(c.since) > limit
            })
            .map(|(i, _)| i)
            .collect();
        for i in stale {
            self.reject(i, &format!("no handshake within {} ms", limit.as_millis()));
        }
    }

    fn accept_all(&mut self) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((stream, remote)) => {
                    tune(&stream);
                    let conn = Conn {
                        stream,
                        remote: Some(remote),
                        state: State::AwaitHello,
                        hs_in: Vec::new(),
                        hs_out: Vec::new(),
                        readable: true,
                        writable: true,
                        since: Instant::now(),
                    };
                    match self.insert(conn) {
                        Ok(i) => {
                            self.stats.accepts += 1;
                            self.advance(i);
                        }
                        Err(e) => eprintln!(
                            "courier[rank {}]: cannot watch a new connection: {e}",
                            self.me
                        ),
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: report and stop accepting for this round.
                    eprintln!("courier[rank {}]: accept failed: {e}", self.me);
                    return;
                }
            }
        }
    }

    fn reject(&mut self, i: usize, why: &str) {
        let remote = self.conns[i]
            .as_ref()
            .and_then(|c| c.remote)
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        eprintln!(
            "courier[rank {}]: rejected connection from {remote}: {why}",
            self.me
        );
        self.stats.rejected += 1;
        self.close(i);
    }

    /// Drives connection `i`'s handshake as far as its socket allows.
    fn advance(&mut self, i: usize) {
        loop {
            let Some(Some(c)) = self.conns.get_mut(i) else {
                return;
            };
            // Flush pending handshake bytes first.
            while !c.hs_out.is_empty() {
                match c.stream.write(&c.hs_out) {
                    Ok(0) => return self.fail(i, "connection closed during handshake"),
                    Ok(n) => {
                        c.hs_out.drain(..n);
                    }
                    Err(e) if would_block(&e) => {
                        c.writable = false;
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.fail(i, &format!("handshake write failed: {e}")),
                }
            }
            if let State::Established { peer } = c.state {
                // Verdict flushed: the link is usable now.
                if c.readable && !self.ready.contains(&peer) {
                    self.ready.push(peer);
                }
                return;
            }
            if let State::Connecting { .. } = c.state {
                if !c.writable {
                    return;
                }
                match c.stream.take_error() {
                    Ok(Some(e)) | Err(e) => return self.fail(i, &format!("connect failed: {e}")),
                    Ok(None) => {}
                }
                match c.stream.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                    Err(e) => return self.fail(i, &format!("connect failed: {e}")),
                }
                tune(&c.stream);
                let State::Connecting { peer, c: conn } =
                    std::mem::replace(&mut c.state, State::AwaitHello)
                else {
                    return;
                };
                c.hs_out.extend_from_slice(conn.hello());
                c.state = State::AwaitChallenge { peer, c: conn };
                continue;
            }
            // Read exactly the rest of the next handshake message.
            let need = c.state.handshake_len();
            while c.hs_in.len() < need {
                let mut buf = [0u8; HELLO_LEN + CHALLENGE_LEN];
                let want = need - c.hs_in.len();
                match c.stream.read(&mut buf[..want]) {
                    Ok(0) => return self.fail(i, "connection closed during handshake"),
                    Ok(n) => c.hs_in.extend_from_slice(&buf[..n]),
                    Err(e) if would_block(&e) => {
                        c.readable = false;
                        return;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return self.fail(i, &format!("handshake read failed: {e}")),
                }
            }
            let msg = std::mem::take(&mut c.hs_in);
            let state = std::mem::replace(&mut c.state, State::AwaitHello);
            if let Err(why) = self.step(i, state, &msg) {
                return self.fail(i, &why);
            }
        }
    }

    /// One handshake transition on a complete message.
    fn step(&mut self, i: usize, state: State, msg: &[u8]) -> Result<(), String> {
        match state {
            State::AwaitHello => {
                let hello: &[u8; HELLO_LEN] = msg.try_into().map_err(|_| "short hello")?;
                let (a, ch) = Acceptor::handle_hello(self.key.clone(), self.me, self.size, hello)
                    .map_err(|e| e.to_string())?;
                let c = self.conn(i)?;
                c.hs_out.extend_from_slice(&ch);
                c.state = State::AwaitAuth { a };
            }
            State::AwaitAuth { a } => {
                let m: &[u8; AUTH_LEN] = msg.try_into().map_err(|_| "short auth")?;
                let peer = a.handle_auth(m).map_err(|e| e.to_string())?;
                let accept = match self.peer_conn[peer as usize] {
                    None => true,
                    Some(j) => {
                        let pending_outgoing = self
                            .conns
                            .get(j)
                            .and_then(Option::as_ref)
                            .is_some_and(|o| o.state.outgoing_peer() == Some(peer));
                        pending_outgoing && self.me > peer
                    }
                };
                let c = self.conn(i)?;
                c.hs_out.extend_from_slice(&auth::verdict(accept));
                if accept {
                    c.state = State::Established { peer };
                    self.established_n += 1;
                    // Our own pending attempt (if any) will be declined by the peer.
                    self.peer_conn[peer as usize] = Some(i);
                } else {
                    self.stats.declined_duplicates += 1;
                    // Flush the verdict, then close. The peer reads it and closes too.
                    let c = self.conn(i)?;
                    let v = std::mem::take(&mut c.hs_out);
                    let _ = c.stream.write(&v);
                    self.close(i);
                }
            }
            State::AwaitChallenge { peer, c: conn } => {
                let ch: &[u8; CHALLENGE_LEN] = msg.try_into().map_err(|_| "short challenge")?;
                let reply = conn
                    .handle_challenge(ch)
                    .map_err(|e| format!("rank {peer}: {e}"))?;
                let c = self.conn(i)?;
                c.hs_out.extend_from_slice(&reply);
                c.state = State::AwaitVerdict { peer };
            }
            State::AwaitVerdict { peer } => {
                let v: &[u8; VERDICT_LEN] = msg.try_into().map_err(|_| "short verdict")?;
                let accepted = auth::parse_verdict(v).map_err(|e| e.to_string())?;
                if accepted && self.peer_conn[peer as usize] == Some(i) {
                    self.conn(i)?.state = State::Established { peer };
                    self.established_n += 1;
                } else {
                    // Declined (or superseded by the peer's own connection): the
                    // peer's connection to us is, or will be, the link.
                    self.stats.declined_duplicates += 1;
                    self.close(i);
                }
            }
            State::Connecting { .. } | State::Established { .. } => {}
        }
        Ok(())
    }

    fn conn(&mut self, i: usize) -> Result<&mut Conn, String> {
        self.conns
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| "connection vanished".to_string())
    }

    fn fail(&mut self, i: usize, why: &str) {
        let Some(Some(c)) = self.conns.get(i) else {
            return;
        };
        match c.state.outgoing_peer() {
            Some(peer) if self.peer_conn[peer as usize] == Some(i) => {
                self.lost.push((peer, format!("cannot connect: {why}")));
                self.close(i);
            }
            Some(_) => self.close(i),
            None => self.reject(i, why),
        }
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
        loop {
            match c.stream.write_vectored(bufs) {
                Ok(n) => return Ok(n),
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
