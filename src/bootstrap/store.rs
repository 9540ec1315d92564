//! The node's card store: every rank's card written once per node into a
//! sealed memfd that the node's ranks read, instead of one copy of every
//! card sent to every rank (O(N) bytes per node, not per rank; the design of
//! PMIx's shared-memory store).
//!
//! `courier run` creates the store before it starts its ranks, which
//! inherit the descriptor (its number is in `COURIER_CARD_STORE`). When the
//! fence completes, the rendezvous service writes the card table into the
//! store, seals it against any change, and answers each rank's FENCE_STORE
//! with the table's length alone. A rank checks that the descriptor is a
//! sealed courier store before it reads the table, then closes it.
//!
//! The table is binary, fixed-size records indexed by rank, so a rank finds
//! any card without parsing text:
//!
//! ```text
//!   0   magic "CRCARDS1", ranks: u32, record size: u32 (48)
//!   16  one record per rank, little-endian:
//!       node u32 | flags u8 (1 = IPv6, 2 = shared memory) | 0 u8 | port u16
//!       | IP address [u8; 16] (IPv4 in the first 4) | shm pid u32 | shm fd i32
//!       | shm local rank u32 | 0 u32 | shm segment size u64
//! ```

use super::{BootstrapError, PeerCard};
use crate::transport::shm::ShmAddr;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

const MAGIC: &[u8; 8] = b"CRCARDS1";
const HEADER: usize = 16;
/// Bytes per rank in the table.
pub const RECORD: usize = 48;
const IPV6: u8 = 1;
const SHM: u8 = 2;
/// The memfd's name, which a rank checks before it trusts the descriptor.
const NAME: &str = "courier-cards";

fn put_record(c: &PeerCard, r: &mut [u8]) {
    r[0..4].copy_from_slice(&c.node.to_le_bytes());
    let mut flags = 0;
    match c.tcp.ip() {
        IpAddr::V4(ip) => r[8..12].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => {
            flags |= IPV6;
            r[8..24].copy_from_slice(&ip.octets());
        }
    }
    r[6..8].copy_from_slice(&c.tcp.port().to_le_bytes());
    if let Some(a) = &c.shm {
        flags |= SHM;
        r[24..28].copy_from_slice(&a.pid.to_le_bytes());
        r[28..32].copy_from_slice(&a.fd.to_le_bytes());
        r[32..36].copy_from_slice(&a.local_rank.to_le_bytes());
        r[40..48].copy_from_slice(&(a.size as u64).to_le_bytes());
    }
    r[4] = flags;
}

fn u32_at(r: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(r.get(at..at + 4)?.try_into().ok()?))
}

fn get_record(r: &[u8]) -> Option<PeerCard> {
    let flags = *r.get(4)?;
    if flags & !(IPV6 | SHM) != 0 {
        return None;
    }
    let port = u16::from_le_bytes(r.get(6..8)?.try_into().ok()?);
    let ip = if flags & IPV6 != 0 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(r.get(8..24)?).ok()?))
    } else {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(r.get(8..12)?).ok()?))
    };
    let shm = if flags & SHM != 0 {
        Some(ShmAddr {
            pid: u32_at(r, 24)?,
            fd: u32_at(r, 28)? as i32,
            local_rank: u32_at(r, 32)?,
            size: usize::try_from(u64::from_le_bytes(r.get(40..48)?.try_into().ok()?)).ok()?,
        })
    } else {
        None
    };
    Some(PeerCard {
        node: u32_at(r, 0)?,
        tcp: SocketAddr::new(ip, port),
        shm,
    })
}

/// The table of `cards`, indexed by rank.
pub(crate) fn encode_table(cards: &[PeerCard]) -> Vec<u8> {
    let mut t = vec![0u8; HEADER + cards.len() * RECORD];
    t[0..8].copy_from_slice(MAGIC);
    t[8..12].copy_from_slice(&(cards.len() as u32).to_le_bytes());
    t[12..16].copy_from_slice(&(RECORD as u32).to_le_bytes());
    for (c, r) in cards.iter().zip(t[HEADER..].chunks_exact_mut(RECORD)) {
        put_record(c, r);
    }
    t
}

/// Every card of a job of `size` ranks from a table, checked against the
/// job's size; `Err` names what is wrong.
pub(crate) fn decode_table(t: &[u8], size: u32) -> Result<Vec<PeerCard>, String> {
    if t.len() < HEADER || &t[0..8] != MAGIC {
        return Err("not a card table".into());
    }
    let (n, rec) = (u32_at(t, 8), u32_at(t, 12));
    if n != Some(size) || rec != Some(RECORD as u32) {
        return Err(format!(
            "card table for {n:?} ranks of {rec:?} bytes, expected {size} of {RECORD}"
        ));
    }
    if t.len() != HEADER + size as usize * RECORD {
        return Err(format!("card table of {} bytes for {size} ranks", t.len()));
    }
    t[HEADER..]
        .chunks_exact(RECORD)
        .enumerate()
        .map(|(r, rec)| get_record(rec).ok_or_else(|| format!("invalid card for rank {r}")))
        .collect()
}

/// The card table of a job of `size` ranks from the rendezvous service's
/// pairs (`card.<rank>` → text card); `Err` if a rank's card is missing or
/// malformed.
pub fn table_from_pairs(size: u32, pairs: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    super::cards_from_pairs(size, pairs).map(|c| encode_table(&c))
}

/// The launcher's side of a node's card store.
#[derive(Debug)]
pub struct CardStore {
    file: File,
    filled: bool,
}

impl CardStore {
    /// An empty store (close-on-exec: a child inherits it only through
    /// [`CardStore::inherit`] in its pre-exec hook).
    pub fn create() -> io::Result<CardStore> {
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        let fd: OwnedFd = memfd_create(
            c"courier-cards",
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )?;
        Ok(CardStore {
            file: File::from(fd),
            filled: false,
        })
    }

    /// The descriptor, whose number a rank finds in `COURIER_CARD_STORE`.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Clears close-on-exec on `fd` so that the program about to be
    /// executed keeps it. Only `fcntl`: safe to call between fork and exec.
    pub fn inherit(fd: RawFd) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        Ok(())
    }

    /// Writes `table` and seals the store against any change; returns the
    /// length to announce. A store is filled once.
    pub fn fill(&mut self, table: &[u8]) -> io::Result<u32> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        if self.filled {
            return Err(io::Error::other("the card store is already filled"));
        }
        let len = u32::try_from(table.len())
            .map_err(|_| io::Error::other("card table larger than 4 GiB"))?;
        self.filled = true;
        self.file.write_all_at(table, 0)?;
        fcntl(
            self.file.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        Ok(len)
    }
}

/// Closes the store this rank inherited as `fd` without reading it (the
/// fence reply carried the cards), if `fd` is one.
pub(crate) fn discard(fd: RawFd) {
    if check_store(fd).is_ok() {
        let _ = nix::unistd::close(fd);
    }
}

/// `Ok` when this process's descriptor `fd` is a courier card store (a
/// memfd of that name), else what it is.
fn check_store(fd: RawFd) -> Result<(), String> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| e.to_string())?;
    if target
        .to_string_lossy()
        .starts_with(&format!("/memfd:{NAME}"))
    {
        Ok(())
    } else {
        Err(format!("{} is not a card store", target.display()))
    }
}

/// Reads the `len`-byte card table of a job of `size` ranks from the store
/// this rank inherited as `fd`, then closes `fd`. Refuses a descriptor that
/// is not a sealed courier card store.
pub(crate) fn read_store(fd: RawFd, len: u32, size: u32) -> Result<Vec<PeerCard>, BootstrapError> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let bad =
        |why: String| BootstrapError::Protocol(format!("card store (descriptor {fd}): {why}"));
    check_store(fd).map_err(bad)?;
    // Our own open file description: the inherited number is closed below.
    let file = File::open(format!("/proc/self/fd/{fd}")).map_err(|e| bad(e.to_string()))?;
    let _ = nix::unistd::close(fd);
    let seals = fcntl(file.as_raw_fd(), FcntlArg::F_GET_SEALS).map_err(|e| bad(e.to_string()))?;
    let seals = SealFlag::from_bits_truncate(seals);
    if !seals.contains(SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK) {
        return Err(bad("not sealed".into()));
    }
    let mut t = vec![0u8; len as usize];
    file.read_exact_at(&mut t, 0)
        .map_err(|e| bad(format!("reading {len} bytes: {e}")))?;
    decode_table(&t, size).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cards() -> Vec<PeerCard> {
        vec![
            PeerCard {
                node: 0,
                tcp: "127.0.0.1:4000".parse().unwrap(),
                shm: Some(ShmAddr {
                    pid: 77,
                    fd: 5,
                    size: 1 << 22,
                    local_rank: 0,
                }),
            },
            PeerCard {
                node: 3,
                tcp: "[fe80::1]:65535".parse().unwrap(),
                shm: None,
            },
        ]
    }

    #[test]
    fn table_round_trip() {
        let t = encode_table(&cards());
        assert_eq!(t.len(), HEADER + 2 * RECORD);
        assert_eq!(decode_table(&t, 2), Ok(cards()));
    }

    #[test]
    fn table_refuses_what_does_not_fit() {
        let t = encode_table(&cards());
        assert!(decode_table(&t, 3).is_err());
        assert!(decode_table(&t[..t.len() - 1], 2).is_err());
        assert!(decode_table(&t[..8], 2).is_err());
        let mut bad = t.clone();
        bad[0] = b'X';
        assert!(decode_table(&bad, 2).is_err());
        let mut bad = t.clone();
        bad[HEADER + RECORD + 4] = 0x80; // unknown flag
        assert_eq!(
            decode_table(&bad, 2),
            Err("invalid card for rank 1".to_string())
        );
    }

    #[test]
    fn table_from_text_pairs() {
        let pairs: Vec<(String, Vec<u8>)> = cards()
            .iter()
            .enumerate()
            .rev()
            .map(|(r, c)| (format!("card.{r}"), c.encode()))
            .chain([("other".to_string(), b"x".to_vec())])
            .collect();
        let t = table_from_pairs(2, &pairs).unwrap();
        assert_eq!(decode_table(&t, 2), Ok(cards()));
        assert_eq!(
            table_from_pairs(3, &pairs),
            Err("no valid card for rank 2".to_string())
        );
    }

    #[test]
    fn store_is_filled_once_sealed_and_read_back() {
        let mut s = CardStore::create().unwrap();
        let t = encode_table(&cards());
        let len = s.fill(&t).unwrap();
        assert!(s.fill(&t).is_err(), "a second fill is refused");
        // Sealed: nobody can change the table any more.
        assert!(s.file.write_all_at(b"X", 0).is_err());
        assert!(s.file.set_len(1).is_err());
        // A rank reads it through its own descriptor (here a duplicate).
        let dup = nix::unistd::dup(s.fd()).unwrap();
        assert_eq!(read_store(dup, len, 2).unwrap(), cards());
        assert!(
            std::fs::read_link(format!("/proc/self/fd/{dup}"))
                .map_or(true, |p| !p.to_string_lossy().contains(NAME)),
            "the inherited descriptor is closed"
        );
    }

    #[test]
    fn discard_closes_only_a_store() {
        let s = CardStore::create().unwrap();
        let dup = nix::unistd::dup(s.fd()).unwrap();
        discard(dup);
        assert!(std::fs::read_link(format!("/proc/self/fd/{dup}"))
            .map_or(true, |p| !p.to_string_lossy().contains(NAME)));
        let f = File::open("/proc/self/stat").unwrap();
        discard(f.as_raw_fd());
        assert!(std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).is_ok());
    }

    #[test]
    fn read_store_refuses_other_descriptors() {
        let f = File::open("/proc/self/stat").unwrap();
        let e = read_store(f.as_raw_fd(), 16, 1).unwrap_err().to_string();
        assert!(e.contains("is not a card store"), "{e}");
        // An unsealed courier store is refused too.
        let s = CardStore::create().unwrap();
        s.file.write_all_at(&encode_table(&cards()), 0).unwrap();
        let dup = nix::unistd::dup(s.fd()).unwrap();
        let e = read_store(dup, 16, 2).unwrap_err().to_string();
        assert!(e.contains("not sealed"), "{e}");
    }
}
