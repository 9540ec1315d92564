//! Wire-up: how a rank learns who it is and how to reach its peers. Shared
//! with the `courier` launcher; not part of the library's API (hidden from
//! its documentation).
//!
//! `courier run` starts each rank with the environment below and serves a
//! small key/value space (the rendezvous service). A rank authenticates to it
//! ([`auth`]), PUTs its card (node, TCP address, shared-memory segment) under `card.<rank>`, FENCEs once and
//! receives every card in the fence reply ([`protocol`]). A process started
//! without these variables is a singleton world of size 1.
//!
//! | variable | meaning |
//! |---|---|
//! | `COURIER_RANK`, `COURIER_SIZE` | this rank and the job size |
//! | `COURIER_LOCAL_RANK`, `COURIER_LOCAL_SIZE` | position among the ranks of this node |
//! | `COURIER_NODE_ID` | the node (placement group) the launcher put this rank on |
//! | `COURIER_SERVICE` | `host:port` of the rendezvous service |
//! | `COURIER_JOB_KEY` | the per-job secret, hex (never sent on any connection) |
//! | `COURIER_BIND` | address the data listener binds to (default 127.0.0.1) |
//! | `COURIER_CARD_STORE` | descriptor of the node's card store, if the launcher made one ([`store`]) |

/// The job key and the connection handshake (shared with the launcher and
/// the rendezvous service; it lives next to the TCP link it opens).
pub mod auth {
    pub use crate::transport::tcp::handshake::*;
}
pub(crate) mod pmi;
pub mod protocol;
pub mod store;

/// Listen queues sized to a job (the launcher's rendezvous service uses it
/// too).
pub use crate::transport::tcp::listen_for_job;

use crate::transport::shm::ShmAddr;
use auth::{Connector, JobKey, CHALLENGE_LEN, SERVICE, VERDICT_LEN};
use protocol::{Deframer, Reply, Request, MAX_REPLY};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Environment variable: this rank.
pub const ENV_RANK: &str = "COURIER_RANK";
/// Environment variable: job size.
pub const ENV_SIZE: &str = "COURIER_SIZE";
/// Environment variable: rank among this node's ranks.
pub const ENV_LOCAL_RANK: &str = "COURIER_LOCAL_RANK";
/// Environment variable: number of ranks on this node.
pub const ENV_LOCAL_SIZE: &str = "COURIER_LOCAL_SIZE";
/// Environment variable: node id assigned by the launcher.
pub const ENV_NODE_ID: &str = "COURIER_NODE_ID";
/// Environment variable: rendezvous service address.
pub const ENV_SERVICE: &str = "COURIER_SERVICE";
/// Environment variable: per-job key, hex.
pub const ENV_JOB_KEY: &str = "COURIER_JOB_KEY";
/// Environment variable: address for the data listener.
pub const ENV_BIND: &str = "COURIER_BIND";
/// Environment variable: the inherited descriptor of the node's card store.
pub const ENV_CARD_STORE: &str = "COURIER_CARD_STORE";
/// Environment variable: how many CPUs the job's ranks on this node may
/// use (the launcher's CPU mask there), which decides whether the node's
/// ranks outnumber its cores. Unset: the node's online CPUs.
pub const ENV_NODE_CORES: &str = crate::config::NODE_CORES;

/// Why wire-up failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A variable is missing or malformed.
    #[error("environment variable {name}: {problem}")]
    Env {
        /// Variable name.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The rendezvous service could not be reached or dropped us.
    #[error("rendezvous service at {addr}: {source}")]
    Io {
        /// Service address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The service failed authentication or spoke nonsense.
    #[error("rendezvous service: {0}")]
    Protocol(String),
}

impl From<BootstrapError> for crate::Error {
    fn from(e: BootstrapError) -> Self {
        crate::Error::Bootstrap(e.to_string())
    }
}

/// What the launcher told this rank.
#[derive(Debug, Clone)]
pub(crate) struct JobEnv {
    pub(crate) rank: u32,
    pub(crate) size: u32,
    pub(crate) local_rank: u32,
    pub(crate) local_size: u32,
    pub(crate) node: u32,
    pub(crate) service: SocketAddr,
    pub(crate) key: JobKey,
    pub(crate) bind: std::net::IpAddr,
    /// The node's card store, inherited from the launcher.
    pub(crate) card_store: Option<std::os::fd::RawFd>,
}

fn var(name: &'static str) -> Result<Option<String>, BootstrapError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(BootstrapError::Env {
            name,
            problem: e.to_string(),
        }),
    }
}

fn parse<T: std::str::FromStr>(name: &'static str) -> Result<T, BootstrapError>
where
    T::Err: std::fmt::Display,
{
    let v = var(name)?.ok_or(BootstrapError::Env {
        name,
        problem: "not set (is this process started by `courier run`?)".into(),
    })?;
    v.parse().map_err(|e: T::Err| BootstrapError::Env {
        name,
        problem: format!("{v:?}: {e}"),
    })
}

impl JobEnv {
    /// Reads the launcher's variables; `Ok(None)` when not started by a launcher.
    pub(crate) fn from_env() -> Result<Option<JobEnv>, BootstrapError> {
        if var(ENV_RANK)?.is_none() {
            return Ok(None);
        }
        let rank: u32 = parse(ENV_RANK)?;
        let size: u32 = parse(ENV_SIZE)?;
        if size == 0 || rank >= size {
            return Err(BootstrapError::Env {
                name: ENV_RANK,
                problem: format!("rank {rank} is not below size {size}"),
            });
        }
        let key_hex = var(ENV_JOB_KEY)?.unwrap_or_default();
        let key = JobKey::from_hex(&key_hex).ok_or(BootstrapError::Env {
            name: ENV_JOB_KEY,
            problem: "missing or not 64 hex digits".into(),
        })?;
        let bind = match var(ENV_BIND)? {
            Some(_) => parse(ENV_BIND)?,
            None => std::net::IpAddr::from([127, 0, 0, 1]),
        };
        Ok(Some(JobEnv {
            rank,
            size,
            local_rank: var(ENV_LOCAL_RANK)?.map_or(Ok(0), |_| parse(ENV_LOCAL_RANK))?,
            local_size: var(ENV_LOCAL_SIZE)?.map_or(Ok(1), |_| parse(ENV_LOCAL_SIZE))?,
            node: var(ENV_NODE_ID)?.map_or(Ok(0), |_| parse(ENV_NODE_ID))?,
            service: parse(ENV_SERVICE)?,
            key,
            bind,
            card_store: var(ENV_CARD_STORE)?
                .map_or(Ok(None), |_| parse(ENV_CARD_STORE).map(Some))?,
        }))
    }
}

/// Lower-case hex of `b` (values in the process managers' key/value spaces
/// and in the launcher-proxy protocol, so any bytes pass).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Inverse of [`hex`]; `None` for anything that is not even-length hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The address of this host on the route to `target` (no packet is sent:
/// a connected UDP socket only asks the kernel's routing table).
pub fn route_address(target: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let any = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(target)?;
    Ok(s.local_addr()?.ip())
}

/// The IPv4 address of network interface `name` (`--iface`, `COURIER_IFACE`).
pub fn iface_address(name: &str) -> Result<std::net::IpAddr, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    addrs
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address.as_ref()?.as_sockaddr_in().map(|sin| sin.ip()))
        .map(std::net::IpAddr::V4)
        .ok_or_else(|| format!("interface {name:?} has no IPv4 address"))
}

/// The address this host listens on for ranks of other hosts when no
/// launcher chose one (PMI): the IPv4 address of `COURIER_IFACE`, else of the
/// first interface that is up and not loopback.
pub(crate) fn outward_address() -> Result<std::net::IpAddr, String> {
    if let Ok(name) = std::env::var("COURIER_IFACE") {
        return iface_address(&name).map_err(|e| format!("COURIER_IFACE: {e}"));
    }
    use nix::net::if_::InterfaceFlags;
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    addrs
        .filter(|a| {
            a.flags.contains(InterfaceFlags::IFF_UP)
                && !a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        })
        .find_map(|a| a.address.as_ref()?.as_sockaddr_in().map(|sin| sin.ip()))
        .map(std::net::IpAddr::V4)
        .ok_or_else(|| "no network interface to reach other hosts (set COURIER_IFACE)".into())
}

/// How to reach a rank, as published at wire-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerCard {
    pub(crate) node: u32,
    pub(crate) tcp: SocketAddr,
    /// The rank's shared-memory segment, if it offers one.
    pub(crate) shm: Option<ShmAddr>,
}

/// A shared-memory address in a card: `pid.fd.size.local_rank`.
fn encode_shm(a: &ShmAddr) -> String {
    format!("{}.{}.{}.{}", a.pid, a.fd, a.size, a.local_rank)
}

fn decode_shm(s: &str) -> Option<ShmAddr> {
    let mut it = s.split('.');
    let a = ShmAddr {
        pid: it.next()?.parse().ok()?,
        fd: it.next()?.parse().ok()?,
        size: it.next()?.parse().ok()?,
        local_rank: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(a)
}

impl PeerCard {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut s = format!("node={};tcp={}", self.node, self.tcp);
        if let Some(shm) = &self.shm {
            s.push_str(";shm=");
            s.push_str(&encode_shm(shm));
        }
        s.into_bytes()
    }

    pub(crate) fn decode(b: &[u8]) -> Option<PeerCard> {
        let s = std::str::from_utf8(b).ok()?;
        let (mut node, mut tcp, mut shm) = (None, None, None);
        for field in s.split(';') {
            let (k, v) = field.split_once('=')?;
            match k {
                "node" => node = v.parse().ok(),
                "tcp" => tcp = v.parse().ok(),
                "shm" => shm = Some(decode_shm(v)?),
                _ => {} // fields of other versions are ignored
            }
        }
        Some(PeerCard {
            node: node?,
            tcp: tcp?,
            shm,
        })
    }
}

/// Every card of a job of `size` ranks from key/value pairs
/// (`card.<rank>` → text card); `Err` names a rank whose card is missing
/// or malformed.
pub(crate) fn cards_from_pairs(
    size: u32,
    pairs: &[(String, Vec<u8>)],
) -> Result<Vec<PeerCard>, String> {
    let mut cards: Vec<Option<PeerCard>> = vec![None; size as usize];
    for (k, v) in pairs {
        let Some(r) = k
            .strip_prefix("card.")
            .and_then(|r| r.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(slot) = cards.get_mut(r) {
            *slot = PeerCard::decode(v);
        }
    }
    cards
        .into_iter()
        .enumerate()
        .map(|(r, c)| c.ok_or_else(|| format!("no valid card for rank {r}")))
        .collect()
}

/// A blocking client of the rendezvous service, used during `init`.
#[derive(Debug)]
pub(crate) struct ServiceClient {
    stream: TcpStream,
    addr: SocketAddr,
    deframer: Deframer,
}

impl ServiceClient {
    /// Connects and authenticates as `rank`.
    pub(crate) fn connect(env: &JobEnv) -> Result<Self, BootstrapError> {
        let addr = env.service;
        let io = |source| BootstrapError::Io { addr, source };
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let c = Connector::new(env.key.clone(), env.rank, SERVICE).map_err(io)?;
        stream.write_all(c.hello()).map_err(io)?;
        let mut ch = [0u8; CHALLENGE_LEN];
        stream.read_exact(&mut ch).map_err(io)?;
        let auth = c
            .handle_challenge(&ch)
            .map_err(|e| BootstrapError::Protocol(e.to_string()))?;
        stream.write_all(&auth).map_err(io)?;
        let mut v = [0u8; VERDICT_LEN];
        stream.read_exact(&mut v).map_err(io)?;
        if !auth::parse_verdict(&v).map_err(|e| BootstrapError::Protocol(e.to_string()))? {
            return Err(BootstrapError::Protocol(format!(
                "the service declined rank {} (already connected?)",
                env.rank
            )));
        }
        Ok(ServiceClient {
            stream,
            addr,
            deframer: Deframer::new(MAX_REPLY),
        })
    }

    fn io(&self, source: std::io::Error) -> BootstrapError {
        BootstrapError::Io {
            addr: self.addr,
            source,
        }
    }

    pub(crate) fn send(&mut self, r: &Request) -> Result<(), BootstrapError> {
        self.stream.write_all(&r.encode()).map_err(|e| self.io(e))
    }

    pub(crate) fn recv(&mut self) -> Result<Reply, BootstrapError> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.deframer.next_message() {
                Ok(Some(body)) => {
                    return Reply::decode(&body)
                        .map_err(|e| BootstrapError::Protocol(e.to_string()))
                }
                Ok(None) => {}
                Err(e) => return Err(BootstrapError::Protocol(e.to_string())),
            }
            let n = self.stream.read(&mut buf).map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.deframer.push(&buf[..n]);
        }
    }

    /// PUT own card, FENCE, and return every card indexed by rank: from
    /// the node's card store when the launcher gave this rank one and
    /// filled it, else from the fence reply.
    pub(crate) fn exchange_cards(
        &mut self,
        env: &JobEnv,
        card: &PeerCard,
    ) -> Result<Vec<PeerCard>, BootstrapError> {
        self.send(&Request::Put {
            key: format!("card.{}", env.rank),
            value: card.encode(),
        })?;
        self.send(&match env.card_store {
            Some(_) => Request::FenceStore,
            None => Request::Fence,
        })?;
        let entries = match (self.recv()?, env.card_store) {
            (Reply::FenceStored { len }, Some(fd)) => return store::read_store(fd, len, env.size),
            (Reply::FenceDone { entries }, fd) => {
                // The service could not fill the store: it stays unread.
                if let Some(fd) = fd {
                    store::discard(fd);
                }
                entries
            }
            (Reply::Abort { code }, _) => {
                return Err(BootstrapError::Protocol(format!(
                    "job aborted with code {code} during wire-up"
                )))
            }
            (other, _) => {
                return Err(BootstrapError::Protocol(format!(
                    "unexpected reply {other:?}"
                )))
            }
        };
        cards_from_pairs(env.size, &entries).map_err(BootstrapError::Protocol)
    }

    /// The connected stream, for the progress engine to watch after wire-up.
    pub(crate) fn into_stream(self) -> TcpStream {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_addr_round_trip() {
        let a = ShmAddr {
            pid: 12,
            fd: 5,
            size: 4096,
            local_rank: 3,
        };
        assert_eq!(decode_shm(&encode_shm(&a)), Some(a));
        assert_eq!(decode_shm("1.2.3"), None);
        assert_eq!(decode_shm("1.2.3.4.5"), None);
    }

    #[test]
    fn card_round_trip_and_tolerance() {
        let mut c = PeerCard {
            node: 3,
            tcp: "127.0.0.1:4000".parse().unwrap(),
            shm: None,
        };
        assert_eq!(PeerCard::decode(&c.encode()), Some(c.clone()));
        let mut extended = c.encode();
        extended.extend_from_slice(b";future=abc");
        assert_eq!(PeerCard::decode(&extended), Some(c.clone()));
        // Cards of earlier versions carried the host name: ignored.
        assert_eq!(
            PeerCard::decode(b"node=3;tcp=127.0.0.1:4000;host=h1"),
            Some(c.clone())
        );
        c.shm = Some(ShmAddr {
            pid: 7,
            fd: 9,
            size: 4096,
            local_rank: 1,
        });
        assert_eq!(PeerCard::decode(&c.encode()), Some(c.clone()));
        assert_eq!(PeerCard::decode(b"node=1;tcp=127.0.0.1:1;shm=bad"), None);
        assert_eq!(PeerCard::decode(b"node=1;tcp=nonsense"), None);
        assert_eq!(PeerCard::decode(b"\xff"), None);
    }
}
