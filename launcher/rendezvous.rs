//! The job's rendezvous service: key/value PUT, GET and a FENCE answered for
//! all ranks at once (cf. Hydra's `pmiserv_kvs.c`). Speaks
//! `courier::bootstrap::protocol` after the `auth` handshake; a connection
//! that fails the handshake or sends garbage is logged and closed.
//!
//! Every host's ranks hold that host's card store (`courier::bootstrap::store`):
//! this host's store is the service's, a remote host's is its proxy's. When
//! the fence completes, the service fills its own store and sends the table
//! once to each proxy ([`Event::StoreCards`]), and answers a host's ranks
//! with the table's length once their store is filled
//! ([`Service::proxy_stored`]): each host receives the cards once.

use courier::bootstrap::auth::{self, Acceptor, JobKey, AUTH_LEN, HELLO_LEN, SERVICE};
use courier::bootstrap::protocol::{Deframer, Reply, Request, MAX_REQUEST};
use courier::bootstrap::store::{self, CardStore};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum Phase {
    Hello,
    Auth(Acceptor),
    Ready(u32),
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    remote: SocketAddr,
    phase: Phase,
    hs: Vec<u8>,
    deframer: Deframer,
    out: Vec<u8>,
    /// When it was accepted.
    since: Instant,
}

/// What the service asks the supervisor to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A rank called `abort(code)`.
    Abort { rank: u32, code: i32 },
    /// A rank initialized (completed its handshake).
    Joined { rank: u32 },
    /// Proxy `proxy` is to write the card table into its host's store and
    /// say so ([`Service::proxy_stored`]).
    StoreCards {
        proxy: usize,
        table: std::rc::Rc<[u8]>,
    },
}

/// The rendezvous service of one job.
#[derive(Debug)]
pub(crate) struct Service {
    listener: TcpListener,
    base: usize,
    key: JobKey,
    size: u32,
    conns: HashMap<usize, Conn>,
    next: usize,
    kv: Vec<(String, Vec<u8>)>,
    index: HashMap<String, usize>,
    /// Connections waiting in the fence, and whether they read the store.
    fenced: Vec<(usize, bool)>,
    /// This host's card store, which the ranks started here inherit.
    store: Option<CardStore>,
    /// The proxy of each rank on a remote host (`None`: this host).
    proxy_of: Vec<Option<usize>>,
    /// Fenced connections waiting for their proxy to fill its store, and
    /// the table's length.
    awaiting: HashMap<usize, Vec<usize>>,
    table_len: u32,
    rank_conn: HashMap<u32, usize>,
    /// Ranks that completed the handshake (initialized) at some point.
    joined: HashSet<u32>,
    /// Ranks that said FINALIZE.
    finalized: HashSet<u32>,
    /// Connections refused (bad handshake, garbage, duplicates).
    pub(crate) rejected: u64,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Service {
    /// Listens on `bind`; tokens `base` (listener) and above are ours.
    pub(crate) fn new(
        registry: &Registry,
        bind: SocketAddr,
        base: usize,
        key: JobKey,
        size: u32,
        store: Option<CardStore>,
    ) -> io::Result<Self> {
        let mut listener = TcpListener::bind(bind)?;
        // Every rank (or proxy) connects at once at start-up.
        courier::bootstrap::listen_for_job(&listener, size)?;
        registry.register(&mut listener, Token(base), Interest::READABLE)?;
        Ok(Service {
            listener,
            base,
            key,
            size,
            conns: HashMap::new(),
            next: base + 1,
            kv: Vec::new(),
            index: HashMap::new(),
            fenced: Vec::new(),
            store,
            proxy_of: Vec::new(),
            awaiting: HashMap::new(),
            table_len: 0,
            rank_conn: HashMap::new(),
            joined: HashSet::new(),
            finalized: HashSet::new(),
            rejected: 0,
        })
    }

    /// Says which ranks a proxy started (`proxy_of[rank]`).
    pub(crate) fn set_proxies(&mut self, proxy_of: Vec<Option<usize>>) {
        self.proxy_of = proxy_of;
    }

    /// Proxy `proxy` filled its host's store (`ok`) or could not: its
    /// ranks waiting in the fence get the table's length, or every card.
    pub(crate) fn proxy_stored(&mut self, proxy: usize, ok: bool) {
        let len = self.table_len;
        let mut full: Option<Vec<u8>> = None;
        for id in self.awaiting.remove(&proxy).unwrap_or_default() {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            answer_fence(c, ok.then_some(len), &self.kv, &mut full);
        }
    }

    /// The descriptor of the card store the ranks of this host inherit.
    pub(crate) fn store_fd(&self) -> Option<std::os::fd::RawFd> {
        self.store.as_ref().map(CardStore::fd)
    }

    /// The address ranks connect to.
    pub(crate) fn addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether `t` is one of the service's tokens.
    pub(crate) fn owns(&self, t: Token) -> bool {
        t.0 == self.base || self.conns.contains_key(&t.0)
    }

    /// Handles readiness on token `t`; returns events for the supervisor.
    pub(crate) fn handle(&mut self, registry: &Registry, t: Token, out: &mut Vec<Event>) {
        if t.0 == self.base {
            self.accept(registry, out);
            return;
        }
        if let Err(why) = self.service_conn(t.0, out) {
            self.drop_conn(registry, t.0, why.as_deref());
        }
    }

    /// Closes connections that have not authenticated within `limit`
    /// (silent or half-open strangers), with a log line each.
    pub(crate) fn sweep(&mut self, registry: &Registry, limit: Duration) {
        let now = Instant::now();
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !matches!(c.phase, Phase::Ready(_)) && now.duration_since(c.since) > limit
            })
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            let why = format!("no handshake within {} ms", limit.as_millis());
            self.drop_conn(registry, id, Some(&why));
        }
    }

    /// Reads whatever every connection has sent (without waiting), so that
    /// a message written just before a rank exited is seen before its exit.
    pub(crate) fn drain(&mut self, registry: &Registry, out: &mut Vec<Event>) {
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            if let Err(why) = self.service_conn(id, out) {
                self.drop_conn(registry, id, why.as_deref());
            }
        }
    }

    /// Whether `rank` ever initialized.
    pub(crate) fn joined(&self, rank: u32) -> bool {
        self.joined.contains(&rank)
    }

    /// Whether any rank initialized.
    pub(crate) fn anyone_joined(&self) -> bool {
        !self.joined.is_empty()
    }

    /// Whether `rank` initialized but never said FINALIZE.
    pub(crate) fn unfinalized(&self, rank: u32) -> bool {
        self.joined.contains(&rank) && !self.finalized.contains(&rank)
    }

    /// Tells every connected rank that the job is aborting.
    pub(crate) fn broadcast_abort(&mut self, code: i32) {
        let msg = Reply::Abort { code }.encode();
        for c in self.conns.values_mut() {
            if matches!(c.phase, Phase::Ready(_)) {
                c.out.extend_from_slice(&msg);
                let _ = flush(c);
            }
        }
    }

    fn accept(&mut self, registry: &Registry, out: &mut Vec<Event>) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let id = self.next;
                    self.next += 1;
                    if registry
                        .register(
                            &mut stream,
                            Token(id),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    self.conns.insert(
                        id,
                        Conn {
                            stream,
                            remote,
                            phase: Phase::Hello,
                            hs: Vec::new(),
                            deframer: Deframer::new(MAX_REQUEST),
                            out: Vec::new(),
                            since: Instant::now(),
                        },
                    );
                    if let Err(why) = self.service_conn(id, out) {
                        self.drop_conn(registry, id, why.as_deref());
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("courier: rendezvous service: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn drop_conn(&mut self, registry: &Registry, id: usize, why: Option<&str>) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = registry.deregister(&mut c.stream);
            if let Some(why) = why {
                self.rejected += 1;
                eprintln!(
                    "courier: rendezvous service: rejected connection from {}: {why}",
                    c.remote
                );
            }
            if let Phase::Ready(rank) = c.phase {
                if self.rank_conn.get(&rank) == Some(&id) {
                    self.rank_conn.remove(&rank);
                }
            }
            self.fenced.retain(|&(f, _)| f != id);
        }
    }

    /// Reads and handles what connection `id` sent. `Err(Some(why))` drops it
    /// as a bad peer; `Err(None)` drops it quietly (EOF after a clean session).
    fn service_conn(&mut self, id: usize, out: &mut Vec<Event>) -> Result<(), Option<String>> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        flush(c).map_err(|e| Some(format!("write failed: {e}")))?;
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return Ok(());
            };
            let ready = matches!(c.phase, Phase::Ready(_));
            let mut buf = [0u8; 8192];
            let want = match c.phase {
                Phase::Hello => HELLO_LEN - c.hs.len(),
                Phase::Auth(_) => AUTH_LEN - c.hs.len(),
                Phase::Ready(_) => buf.len(),
            };
            let n = match c.stream.read(&mut buf[..want]) {
                Ok(0) if ready => return Err(None),
                Ok(0) => return Err(Some("closed during the handshake".into())),
                Ok(n) => n,
                Err(e) if would_block(&e) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A rank that dies resets its connection: not a stranger, no log.
                Err(_) if ready => return Err(None),
                Err(e) => return Err(Some(format!("read failed: {e}"))),
            };
            if ready {
                c.deframer.push(&buf[..n]);
                self.handle_messages(id, out).map_err(Some)?;
                continue;
            }
            c.hs.extend_from_slice(&buf[..n]);
            let need = if matches!(c.phase, Phase::Hello) {
                HELLO_LEN
            } else {
                AUTH_LEN
            };
            if c.hs.len() < need {
                continue;
            }
            let msg = std::mem::take(&mut c.hs);
            match std::mem::replace(&mut c.phase, Phase::Hello) {
                Phase::Hello => {
                    let hello: [u8; HELLO_LEN] = msg
                        .try_into()
                        .map_err(|_| Some("short hello".to_string()))?;
                    let (a, ch) =
                        Acceptor::handle_hello(self.key.clone(), SERVICE, self.size, &hello)
                            .map_err(|e| Some(e.to_string()))?;
                    c.out.extend_from_slice(&ch);
                    c.phase = Phase::Auth(a);
                }
                Phase::Auth(a) => {
                    let m: [u8; AUTH_LEN] =
                        msg.try_into().map_err(|_| Some("short auth".to_string()))?;
                    let rank = a.handle_auth(&m).map_err(|e| Some(e.to_string()))?;
                    let fresh = !self.rank_conn.contains_key(&rank);
                    c.out.extend_from_slice(&auth::verdict(fresh));
                    flush(c).map_err(|e| Some(e.to_string()))?;
                    if !fresh {
                        return Err(Some(format!("rank {rank} is already connected")));
                    }
                    c.phase = Phase::Ready(rank);
                    self.rank_conn.insert(rank, id);
                    self.joined.insert(rank);
                    out.push(Event::Joined { rank });
                }
                Phase::Ready(_) => {}
            }
            if let Some(c) = self.conns.get_mut(&id) {
                flush(c).map_err(|e| Some(e.to_string()))?;
            }
        }
    }

    fn handle_messages(&mut self, id: usize, out: &mut Vec<Event>) -> Result<(), String> {
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return Ok(());
            };
            let Phase::Ready(rank) = c.phase else {
                return Ok(());
            };
            let Some(body) = c.deframer.next_message().map_err(|e| e.to_string())? else {
                return Ok(());
            };
            let req = Request::decode(&body).map_err(|e| e.to_string())?;
            match req {
                Request::Put { key, value } => match self.index.get(&key) {
                    Some(&i) => self.kv[i].1 = value,
                    None => {
                        self.index.insert(key.clone(), self.kv.len());
                        self.kv.push((key, value));
                    }
                },
                Request::Get { key } => {
                    let value = self.index.get(&key).map(|&i| self.kv[i].1.clone());
                    c.out
                        .extend_from_slice(&Reply::GetResult { value }.encode());
                    flush(c).map_err(|e| e.to_string())?;
                }
                Request::Fence | Request::FenceStore => {
                    let by_store = matches!(req, Request::FenceStore);
                    if !self.fenced.iter().any(|&(f, _)| f == id) {
                        self.fenced.push((id, by_store));
                    }
                    if self.fenced.len() == self.size as usize {
                        self.complete_fence(out);
                    }
                }
                Request::Abort { code } => out.push(Event::Abort { rank, code }),
                Request::Finalize => {
                    self.finalized.insert(rank);
                    c.out.extend_from_slice(&Reply::FinalizeAck.encode());
                    flush(c).map_err(|e| e.to_string())?;
                }
            }
        }
    }
}

impl Service {
    /// Answers every rank in the fence: through its host's card store one
    /// that holds it (when the table can be made), with every pair the
    /// others. A remote host's ranks are answered once its proxy has filled
    /// its store ([`Service::proxy_stored`]).
    fn complete_fence(&mut self, out: &mut Vec<Event>) {
        let fenced = std::mem::take(&mut self.fenced);
        let table = if fenced.iter().any(|&(_, by_store)| by_store) {
            store::table_from_pairs(self.size, &self.kv)
                .map_err(|e| {
                    eprintln!("courier: card store: {e}; the fence reply carries the cards")
                })
                .ok()
        } else {
            None
        };
        let local = match &table {
            Some(t) => {
                self.table_len = t.len() as u32;
                self.fill_store(t)
            }
            None => None,
        };
        let mut remote = Vec::new();
        let mut full: Option<Vec<u8>> = None;
        for (f, by_store) in fenced {
            let Some(c) = self.conns.get_mut(&f) else {
                continue;
            };
            let proxy = match c.phase {
                Phase::Ready(rank) => self.proxy_of.get(rank as usize).copied().flatten(),
                _ => None,
            };
            match proxy {
                Some(p) if by_store && table.is_some() => {
                    self.awaiting.entry(p).or_default().push(f);
                    if !remote.contains(&p) {
                        remote.push(p);
                    }
                }
                Some(_) => answer_fence(c, None, &self.kv, &mut full),
                None => answer_fence(c, local.filter(|_| by_store), &self.kv, &mut full),
            }
        }
        if let Some(t) = table {
            let table: std::rc::Rc<[u8]> = t.into();
            for proxy in remote {
                out.push(Event::StoreCards {
                    proxy,
                    table: table.clone(),
                });
            }
        }
    }

    /// Writes the card table into this host's store; `None` (with a note)
    /// if it cannot, and the ranks get the cards in the fence reply instead.
    fn fill_store(&mut self, table: &[u8]) -> Option<u32> {
        let s = self.store.as_mut()?;
        match s.fill(table) {
            Ok(len) => Some(len),
            Err(e) => {
                eprintln!("courier: card store: {e}; the fence reply carries the cards");
                None
            }
        }
    }
}

/// Queues a fence's answer on `c`: the length of the card table in its
/// host's store, or (`None`) every pair, encoded once per fence in `full`.
fn answer_fence(
    c: &mut Conn,
    stored: Option<u32>,
    kv: &[(String, Vec<u8>)],
    full: &mut Option<Vec<u8>>,
) {
    match stored {
        Some(len) => c
            .out
            .extend_from_slice(&Reply::FenceStored { len }.encode()),
        None => {
            let reply = full.get_or_insert_with(|| {
                Reply::FenceDone {
                    entries: kv.to_vec(),
                }
                .encode()
            });
            c.out.extend_from_slice(reply);
        }
    }
    let _ = flush(c);
}

fn flush(c: &mut Conn) -> io::Result<()> {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
