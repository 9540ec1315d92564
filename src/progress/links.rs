//! The links of a rank, one per peer, each carried by one transport: a
//! single dispatch for reading and writing, so every path treats a missing
//! transport the same way (the link is lost).

use crate::ids::Rank;
use crate::transport::selfloop::SelfLoop;
use crate::transport::shm::{RecordBody, ShmTransport, Taken, TAKE_HEAD};
use crate::transport::tcp::TcpTransport;
use crate::transport::{LinkError, Transport};
use std::io::IoSlice;

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

/// Every transport of a rank, and which one carries each peer.
#[derive(Debug)]
pub(super) struct Links {
    pub(super) tcp: TcpTransport,
    pub(super) selfloop: SelfLoop,
    pub(super) shm: Option<ShmTransport>,
    /// Transport of each peer (`SelfLoop` for this rank).
    kinds: Vec<LinkKind>,
    /// Some peer's link is TCP.
    any_tcp: bool,
}

fn no_shm() -> LinkError {
    LinkError("no shared-memory transport".into())
}

impl Links {
    /// TCP to every peer but this rank (`me`), until [`Links::set_shm`].
    pub(super) fn new(me: Rank, size: u32, tcp: TcpTransport) -> Self {
        Links {
            tcp,
            selfloop: SelfLoop::default(),
            shm: None,
            kinds: (0..size)
                .map(|r| {
                    if r == me {
                        LinkKind::SelfLoop
                    } else {
                        LinkKind::Tcp
                    }
                })
                .collect(),
            any_tcp: size > 1,
        }
    }

    /// Uses shared memory for the peers already added to `shm`.
    pub(super) fn set_shm(&mut self, shm: ShmTransport) {
        for (r, kind) in self.kinds.iter_mut().enumerate() {
            if shm.has_peer(r as Rank) {
                *kind = LinkKind::Shm;
            }
        }
        self.any_tcp = self.kinds.contains(&LinkKind::Tcp);
        self.shm = Some(shm);
    }

    /// Whether some peer's link is TCP.
    #[inline]
    pub(super) fn any_tcp(&self) -> bool {
        self.any_tcp
    }

    /// The transport of `peer` (`None` for a rank outside the job).
    pub(super) fn kind(&self, peer: Rank) -> Option<LinkKind> {
        self.kinds.get(peer as usize).copied()
    }

    /// Writes a prefix of `bufs` to `peer` (see the transport contract).
    pub(super) fn write(&mut self, peer: Rank, bufs: &[IoSlice<'_>]) -> Result<usize, LinkError> {
        match self.kind(peer) {
            Some(LinkKind::SelfLoop) => self.selfloop.try_write(peer, bufs),
            Some(LinkKind::Tcp) => self.tcp.try_write(peer, bufs),
            Some(LinkKind::Shm) => self.shm.as_mut().ok_or_else(no_shm)?.try_write(peer, bufs),
            None => Err(LinkError(format!("no rank {peer}"))),
        }
    }

    /// Writes `head` then `body` to `peer`: [`Links::write`], by the
    /// shared-memory transport's way for small writes where it applies.
    #[inline]
    pub(super) fn write_small(
        &mut self,
        peer: Rank,
        head: &[u8],
        body: &[u8],
    ) -> Result<usize, LinkError> {
        match (self.kind(peer), self.shm.as_mut()) {
            (Some(LinkKind::Shm), Some(shm)) => shm.write_small(peer, head, body),
            _ => self.write(peer, &[IoSlice::new(head), IoSlice::new(body)]),
        }
    }

    /// Reads what `peer` has sent, into `buf`.
    pub(super) fn read(&mut self, peer: Rank, buf: &mut [u8]) -> Result<usize, LinkError> {
        match self.kind(peer) {
            Some(LinkKind::SelfLoop) => self.selfloop.try_read(peer, buf),
            Some(LinkKind::Tcp) => self.tcp.try_read(peer, buf),
            Some(LinkKind::Shm) => self.shm.as_mut().ok_or_else(no_shm)?.try_read(peer, buf),
            None => Err(LinkError(format!("no rank {peer}"))),
        }
    }

    /// Asks `peer`'s link to acknowledge what arrives at once: a large
    /// payload is still coming (TCP only; see
    /// [`TcpTransport::ask_quick_acks`]).
    pub(super) fn ask_quick_acks(&mut self, peer: Rank) {
        if self.kind(peer) == Some(LinkKind::Tcp) {
            self.tcp.ask_quick_acks(peer);
        }
    }

    /// Unread bytes of the record at the front of `peer`'s shared-memory
    /// ring (0 for other links).
    pub(super) fn shm_pending(&mut self, peer: Rank) -> Result<usize, LinkError> {
        match (self.kind(peer), self.shm.as_mut()) {
            (Some(LinkKind::Shm), Some(shm)) => shm.pending(peer),
            _ => Ok(0),
        }
    }

    /// The first unread bytes of the record at the front of `peer`'s
    /// shared-memory ring, left unread (0 for other links).
    pub(super) fn shm_peek(&mut self, peer: Rank, buf: &mut [u8]) -> Result<usize, LinkError> {
        match (self.kind(peer), self.shm.as_mut()) {
            (Some(LinkKind::Shm), Some(shm)) => shm.peek(peer, buf),
            _ => Ok(0),
        }
    }

    /// Takes up to `max` whole records from `peer`'s
    /// shared-memory ring while `take` accepts them (none for other links;
    /// see `Consumer::take_up_to`).
    #[inline]
    pub(super) fn shm_take_up_to(
        &mut self,
        peer: Rank,
        max: usize,
        take: impl FnMut(&[u8; TAKE_HEAD], RecordBody<'_>) -> bool,
    ) -> Result<Taken, LinkError> {
        match (self.kind(peer), self.shm.as_mut()) {
            (Some(LinkKind::Shm), Some(shm)) => shm.take_up_to(peer, max, take),
            _ => Ok(Taken::default()),
        }
    }

    /// Reads whole records of at most `max_record` bytes from `peer`'s
    /// shared-memory ring, as many as fit in `buf` (0 for other links).
    pub(super) fn shm_read_records(
        &mut self,
        peer: Rank,
        buf: &mut [u8],
        max_record: usize,
    ) -> Result<usize, LinkError> {
        match (self.kind(peer), self.shm.as_mut()) {
            (Some(LinkKind::Shm), Some(shm)) => shm.read_records(peer, buf, max_record),
            _ => Ok(0),
        }
    }

    /// Whether `peer`'s shared-memory ring holds bytes (false for other links).
    #[inline]
    pub(super) fn shm_ready(&self, peer: Rank) -> bool {
        self.shm.as_ref().is_some_and(|s| s.ready(peer))
    }

    /// Starts opening `peer`'s link if it is a TCP link not yet connected.
    pub(super) fn open(&mut self, peer: Rank) -> Result<(), LinkError> {
        if self.kind(peer) == Some(LinkKind::Tcp) {
            self.tcp.connect(peer)?;
        }
        Ok(())
    }

    /// Whether a write to `peer` can be tried right now (a TCP link must be
    /// established first).
    pub(super) fn writable(&self, peer: Rank) -> bool {
        match self.kind(peer) {
            Some(LinkKind::Tcp) => self.tcp.is_established(peer),
            Some(_) => true,
            None => false,
        }
    }

    /// The process id of a shared-memory peer.
    pub(super) fn shm_pid(&self, peer: Rank) -> Option<u32> {
        self.shm.as_ref().and_then(|s| s.pid(peer))
    }
}
