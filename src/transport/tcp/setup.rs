//! Connections being set up: accepting, the job-key handshake in both
//! directions (through the sans-IO `handshake` state
//! machines), the duplicate-link decision, and closing strangers that fail
//! it or stay silent past the handshake timeout.

use super::handshake::{
    self, Acceptor, Connector, AUTH_LEN, CHALLENGE_LEN, HELLO_LEN, VERDICT_LEN,
};
use super::{tune, would_block, TcpTransport, FIRST_CONN};
use crate::ids::Rank;
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) enum State {
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
    pub(super) fn handshake_len(&self) -> usize {
        match self {
            State::AwaitChallenge { .. } => CHALLENGE_LEN,
            State::AwaitVerdict { .. } => VERDICT_LEN,
            State::AwaitHello => HELLO_LEN,
            State::AwaitAuth { .. } => AUTH_LEN,
            State::Connecting { .. } | State::Established { .. } => 0,
        }
    }

    pub(super) fn outgoing_peer(&self) -> Option<Rank> {
        match self {
            State::Connecting { peer, .. }
            | State::AwaitChallenge { peer, .. }
            | State::AwaitVerdict { peer } => Some(*peer),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) remote: Option<SocketAddr>,
    pub(super) state: State,
    pub(super) hs_in: Vec<u8>,
    pub(super) hs_out: Vec<u8>,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// When the connection was accepted or opened.
    pub(super) since: Instant,
}

impl TcpTransport {
    pub(super) fn insert(&mut self, conn: Conn) -> io::Result<usize> {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let slot = &mut self.conns[i];
        let c = slot.insert(conn);
        if let Err(e) = self.registry.register(
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

    pub(super) fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns.get_mut(i).and_then(Option::take) {
            if matches!(c.state, State::Established { .. }) {
                self.established_n -= 1;
            }
            let _ = self.registry.deregister(&mut c.stream);
            self.free.push(i);
            for pc in self.peer_conn.iter_mut() {
                if *pc == Some(i) {
                    *pc = None;
                }
            }
        }
    }

    /// Closes accepted connections that have not proved themselves within
    /// the handshake timeout (half-open or silent strangers would otherwise
    /// hold a descriptor each for ever). Looks at most every 100 ms.
    pub(super) fn sweep_handshakes(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_sweep) < Duration::from_millis(100) {
            return;
        }
        self.last_sweep = now;
        let limit = self.options.handshake_timeout;
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

    pub(super) fn accept_all(&mut self) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((stream, remote)) => {
                    tune(&stream, &self.options);
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

    pub(super) fn reject(&mut self, i: usize, why: &str) {
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
    pub(super) fn advance(&mut self, i: usize) {
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
                tune(&c.stream, &self.options);
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
    pub(super) fn step(&mut self, i: usize, state: State, msg: &[u8]) -> Result<(), String> {
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
                c.hs_out.extend_from_slice(&handshake::verdict(accept));
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
                let accepted = handshake::parse_verdict(v).map_err(|e| e.to_string())?;
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

    pub(super) fn conn(&mut self, i: usize) -> Result<&mut Conn, String> {
        self.conns
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or_else(|| "connection vanished".to_string())
    }

    pub(super) fn fail(&mut self, i: usize, why: &str) {
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
}
