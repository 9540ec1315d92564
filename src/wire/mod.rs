//! The versioned frame header spoken between ranks.
//!
//! Every message between two ranks travels as one or more frames. A frame is a
//! header, little-endian, optionally followed by a payload. A plain eager
//! message (the small-message path, where every byte counts: a frame that
//! fits one 64-byte cache line moves between cores in one transfer) has a
//! 16-byte short header:
//!
//! ```text
//! offset size field
//!      0    1 magic    0xE1
//!      1    1 version  2
//!      2    2 reserved 0
//!      4    4 len      payload bytes that follow
//!      8    4 context  communicator context id
//!     12    4 tag      message tag
//! ```
//!
//! Every other frame has the full 40-byte header (its first byte, 0xDE,
//! tells the two apart):
//!
//! ```text
//! offset size field
//!      0    2 magic    0xC0DE
//!      2    1 version  2
//!      3    1 kind     1 EAGER, 2 RTS, 3 CTS, 4 DATA, 5 SYNC_ACK, 6 BYE, 7 FIN,
//!                      8 CTS_COOP, 9 PUSHED, 10 CREDIT
//!      4    4 flags    bit 0 SYNC (the sender waits for a match: ssend)
//!      8    4 context  communicator context id
//!     12    4 tag      message tag
//!     16    8 len      EAGER/DATA: payload bytes that follow; RTS: message
//!                      length; CTS_COOP: where the copy is split
//!     24    8 sreq     sender's request id (EAGER with SYNC, RTS, CTS, SYNC_ACK)
//!     32    8 rreq     receiver's request id (CTS, DATA); RTS: sender's buffer
//!                      address for a single-copy pull, or 0
//! ```
//!
//! Protocols: EAGER carries a whole small message. A large message goes as
//! RTS (request to send) → CTS (clear to send, naming the receive request) →
//! DATA (payload straight into the posted buffer). Between ranks of one node
//! the RTS may carry the sender's buffer address instead: the receiver copies
//! the message out of the sender's memory (cross-memory attach) and answers
//! FIN, or falls back to CTS → DATA. For large messages the copy is shared:
//! the receiver answers CTS_COOP carrying its own buffer address (in the
//! context and tag fields: low and high 32 bits) and where it splits the
//! message (`len`), pulls the part before the split while the sender pushes
//! the rest into it, and the sender reports PUSHED
//! (`len` 0: done, 1: refused, the receiver then pulls that part too).
//! SYNC_ACK completes a synchronous eager send once it has matched. BYE
//! announces a clean close. CREDIT returns flow-control credit: `len` bytes
//! of eager data and envelopes the receiver has matched (see the engine's
//! flow control).
//!
//! Every frame has exactly one encoding (a plain eager frame in the full
//! form is rejected), so what decodes re-encodes identically.
//! [`Frame::decode`] validates every field; it never panics on peer data.

/// Length in bytes of the full frame header (the longest).
pub const HEADER_LEN: usize = 40;
/// Length in bytes of the short header of a plain eager message.
pub const SHORT_HEADER_LEN: usize = 16;
/// First byte of a short header.
const SHORT_MAGIC: u8 = 0xE1;
/// Magic number opening every header.
pub const MAGIC: u16 = 0xC0DE;
/// Wire protocol version.
pub const VERSION: u8 = 2;

const FLAG_SYNC: u32 = 1;

const KIND_EAGER: u8 = 1;
const KIND_RTS: u8 = 2;
const KIND_CTS: u8 = 3;
const KIND_DATA: u8 = 4;
const KIND_SYNC_ACK: u8 = 5;
const KIND_BYE: u8 = 6;
const KIND_FIN: u8 = 7;
const KIND_CTS_COOP: u8 = 8;
const KIND_PUSHED: u8 = 9;
const KIND_CREDIT: u8 = 10;

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message; `len` payload bytes follow.
    Eager {
        /// Communicator context.
        context: u32,
        /// Message tag.
        tag: u32,
        /// Payload length.
        len: u64,
        /// Synchronous send: acknowledge with SYNC_ACK on match.
        sync: bool,
        /// Sender request id (meaningful when `sync`).
        sreq: u64,
    },
    /// Request to send a large message of `len` bytes; no payload follows.
    Rts {
        /// Communicator context.
        context: u32,
        /// Message tag.
        tag: u32,
        /// Message length.
        len: u64,
        /// Sender request id, echoed by CTS or FIN.
        sreq: u64,
        /// Address of the message in the sender's memory (0: no single-copy pull).
        addr: u64,
    },
    /// Clear to send: the receive `rreq` matched the RTS of `sreq`.
    Cts {
        /// Sender request id from the RTS.
        sreq: u64,
        /// Receiver request id, echoed by DATA.
        rreq: u64,
    },
    /// Payload of a rendezvous message; `len` bytes follow.
    Data {
        /// Receiver request id from the CTS.
        rreq: u64,
        /// Payload length.
        len: u64,
    },
    /// A synchronous eager message was matched.
    SyncAck {
        /// Sender request id.
        sreq: u64,
    },
    /// The peer is finalizing; no more frames follow.
    Bye,
    /// The receiver has pulled the message of `sreq`; the send is complete.
    Fin {
        /// Sender request id.
        sreq: u64,
    },
    /// Cooperative copy: the receive `rreq` matched the RTS of `sreq`; the
    /// sender pushes bytes `split..` of the message into `addr + split` (the
    /// receiver's buffer) while the receiver pulls bytes `..split`.
    CtsCoop {
        /// Sender request id from the RTS.
        sreq: u64,
        /// Receiver request id, echoed by PUSHED.
        rreq: u64,
        /// The receiver's buffer address.
        addr: u64,
        /// Where the message is split between the two copies.
        split: u64,
    },
    /// The sender finished (or could not do) its part of a cooperative copy.
    Pushed {
        /// Receiver request id from CTS_COOP.
        rreq: u64,
        /// Whether the push succeeded.
        ok: bool,
    },
    /// Flow control: the receiver has matched messages worth `bytes` of
    /// credit; the sender may send that much more.
    Credit {
        /// Credit returned, in bytes.
        bytes: u64,
    },
}

/// Why a header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The magic number is wrong: not a Courier peer, or a desynchronized stream.
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    /// A different protocol version.
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// Unknown flag bits, or flags on a kind that takes none.
    #[error("invalid flags {flags:#x} for frame kind {kind}")]
    BadFlags {
        /// Kind byte.
        kind: u8,
        /// Flags word.
        flags: u32,
    },
    /// A length beyond the configured limit.
    #[error("length {len} exceeds the limit of {max}")]
    TooLong {
        /// Announced length.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// A field that must be zero for this kind is not.
    #[error("non-zero reserved field in frame kind {0}")]
    Reserved(u8),
    /// A header of the wrong length for its form.
    #[error("header of {0} bytes does not match its form")]
    BadLength(usize),
    /// A plain eager message in the full form: it must use the short one.
    #[error("plain eager message with a full header")]
    NonCanonical,
}

/// An encoded frame header (short or full form); dereferences to its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedHeader {
    bytes: [u8; HEADER_LEN],
    len: u8,
}

impl EncodedHeader {
    /// No header at all: for bytes queued that already hold whole encoded
    /// frames (a burst of small sends gathered into one buffer).
    pub(crate) const NONE: EncodedHeader = EncodedHeader {
        bytes: [0; HEADER_LEN],
        len: 0,
    };
}

impl std::ops::Deref for EncodedHeader {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Frame {
    /// Number of payload bytes that follow this header on the wire.
    pub fn payload_len(&self) -> u64 {
        match *self {
            Frame::Eager { len, .. } | Frame::Data { len, .. } => len,
            _ => 0,
        }
    }

    /// The context, tag and payload length of a valid plain eager frame's
    /// short header in `b` (`None` for anything else, valid or not: the
    /// caller hands those to [`Frame::decode`]). `max_len` bounds the
    /// length, as in `decode`.
    #[inline]
    pub(crate) fn short_eager(
        b: &[u8; SHORT_HEADER_LEN],
        max_len: u64,
    ) -> Option<(u32, u32, usize)> {
        if b[0] != SHORT_MAGIC || b[1] != VERSION || b[2] != 0 || b[3] != 0 {
            return None;
        }
        let len = u32_at(b, 4);
        if u64::from(len) > max_len {
            return None;
        }
        Some((u32_at(b, 8), u32_at(b, 12), usize::try_from(len).ok()?))
    }

    /// Length of the header that starts with byte `first` (see the unit
    /// test `header_len_tells_the_two_forms_apart`).
    pub fn header_len(first: u8) -> Result<usize, WireError> {
        match first {
            SHORT_MAGIC => Ok(SHORT_HEADER_LEN),
            b if b == MAGIC.to_le_bytes()[0] => Ok(HEADER_LEN),
            b => Err(WireError::BadMagic(u16::from(b))),
        }
    }

    /// Encodes the header: the short form for a plain eager message, the
    /// full form otherwise.
    pub fn encode(&self) -> EncodedHeader {
        let mut b = [0u8; HEADER_LEN];
        if let Frame::Eager {
            context,
            tag,
            len,
            sync: false,
            ..
        } = *self
        {
            if let Ok(len) = u32::try_from(len) {
                // Two 8-byte stores, which the two 8-byte loads copying the
                // header into a ring record forward from (built a byte and
                // a word at a time, each load waited for the stores to
                // drain: store-to-load forwarding fails).
                let w0 = u64::from(SHORT_MAGIC) | u64::from(VERSION) << 8 | u64::from(len) << 32;
                let w1 = u64::from(context) | u64::from(tag) << 32;
                b[..8].copy_from_slice(&w0.to_le_bytes());
                b[8..16].copy_from_slice(&w1.to_le_bytes());
                return EncodedHeader {
                    bytes: b,
                    len: SHORT_HEADER_LEN as u8,
                };
            }
        }
        self.encode_full(b)
    }

    fn encode_full(&self, mut b: [u8; HEADER_LEN]) -> EncodedHeader {
        let (kind, flags, context, tag, len, sreq, rreq) = match *self {
            Frame::Eager {
                context,
                tag,
                len,
                sync,
                sreq,
            } => (
                KIND_EAGER,
                if sync { FLAG_SYNC } else { 0 },
                context,
                tag,
                len,
                sreq,
                0,
            ),
            Frame::Rts {
                context,
                tag,
                len,
                sreq,
                addr,
            } => (KIND_RTS, 0, context, tag, len, sreq, addr),
            Frame::Cts { sreq, rreq } => (KIND_CTS, 0, 0, 0, 0, sreq, rreq),
            Frame::Data { rreq, len } => (KIND_DATA, 0, 0, 0, len, 0, rreq),
            Frame::SyncAck { sreq } => (KIND_SYNC_ACK, 0, 0, 0, 0, sreq, 0),
            Frame::Bye => (KIND_BYE, 0, 0, 0, 0, 0, 0),
            Frame::Fin { sreq } => (KIND_FIN, 0, 0, 0, 0, sreq, 0),
            Frame::CtsCoop {
                sreq,
                rreq,
                addr,
                split,
            } => (
                KIND_CTS_COOP,
                0,
                addr as u32,
                (addr >> 32) as u32,
                split,
                sreq,
                rreq,
            ),
            Frame::Pushed { rreq, ok } => (KIND_PUSHED, 0, 0, 0, u64::from(!ok), 0, rreq),
            Frame::Credit { bytes } => (KIND_CREDIT, 0, 0, 0, bytes, 0, 0),
        };
        b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        b[2] = VERSION;
        b[3] = kind;
        b[4..8].copy_from_slice(&flags.to_le_bytes());
        b[8..12].copy_from_slice(&context.to_le_bytes());
        b[12..16].copy_from_slice(&tag.to_le_bytes());
        b[16..24].copy_from_slice(&len.to_le_bytes());
        b[24..32].copy_from_slice(&sreq.to_le_bytes());
        b[32..40].copy_from_slice(&rreq.to_le_bytes());
        EncodedHeader {
            bytes: b,
            len: HEADER_LEN as u8,
        }
    }

    /// Decodes and validates a header (`b` holds exactly the header, of the
    /// length [`Frame::header_len`] gives). `max_len` bounds every length
    /// field (payloads and announced message sizes).
    ///
    /// One function, longer than most: the table of which fields each frame
    /// kind uses reads better whole, and splitting it off changed how the
    /// hot short-header path around it was compiled (2-rank broadcasts of
    /// 16–64 B measured 1.2–1.4× slower, with no more instructions).
    pub fn decode(b: &[u8], max_len: u64) -> Result<Frame, WireError> {
        let Some(&first) = b.first() else {
            return Err(WireError::BadLength(0));
        };
        if b.len() != Frame::header_len(first)? {
            return Err(WireError::BadLength(b.len()));
        }
        if first == SHORT_MAGIC {
            return Frame::decode_short(b, max_len);
        }
        let magic = u16::from_le_bytes([b[0], b[1]]);
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        if b[2] != VERSION {
            return Err(WireError::BadVersion(b[2]));
        }
        let kind = b[3];
        let flags = u32_at(b, 4);
        let context = u32_at(b, 8);
        let tag = u32_at(b, 12);
        let len = u64_at(b, 16);
        let sreq = u64_at(b, 24);
        let rreq = u64_at(b, 32);
        let allowed_flags = if kind == KIND_EAGER { FLAG_SYNC } else { 0 };
        if flags & !allowed_flags != 0 {
            return Err(WireError::BadFlags { kind, flags });
        }
        if len > max_len {
            return Err(WireError::TooLong { len, max: max_len });
        }
        let zero = |fields: &[u64]| {
            if fields.iter().all(|&f| f == 0) {
                Ok(())
            } else {
                Err(WireError::Reserved(kind))
            }
        };
        let ctx_tag = [u64::from(context), u64::from(tag)];
        match kind {
            KIND_EAGER => {
                zero(&[rreq])?;
                let sync = flags & FLAG_SYNC != 0;
                if !sync {
                    zero(&[sreq])?;
                    if u32::try_from(len).is_ok() {
                        return Err(WireError::NonCanonical);
                    }
                }
                Ok(Frame::Eager {
                    context,
                    tag,
                    len,
                    sync,
                    sreq,
                })
            }
            KIND_RTS => Ok(Frame::Rts {
                context,
                tag,
                len,
                sreq,
                addr: rreq,
            }),
            KIND_CTS => {
                zero(&ctx_tag)?;
                zero(&[len])?;
                Ok(Frame::Cts { sreq, rreq })
            }
            KIND_DATA => {
                zero(&ctx_tag)?;
                zero(&[sreq])?;
                Ok(Frame::Data { rreq, len })
            }
            KIND_SYNC_ACK => {
                zero(&ctx_tag)?;
                zero(&[len, rreq])?;
                Ok(Frame::SyncAck { sreq })
            }
            KIND_BYE => {
                zero(&ctx_tag)?;
                zero(&[len, sreq, rreq])?;
                Ok(Frame::Bye)
            }
            KIND_FIN => {
                zero(&ctx_tag)?;
                zero(&[len, rreq])?;
                Ok(Frame::Fin { sreq })
            }
            KIND_CTS_COOP => Ok(Frame::CtsCoop {
                sreq,
                rreq,
                addr: u64::from(context) | (u64::from(tag) << 32),
                split: len,
            }),
            KIND_PUSHED => {
                zero(&ctx_tag)?;
                zero(&[sreq])?;
                if len > 1 {
                    return Err(WireError::Reserved(kind));
                }
                Ok(Frame::Pushed { rreq, ok: len == 0 })
            }
            KIND_CREDIT => {
                zero(&ctx_tag)?;
                zero(&[sreq, rreq])?;
                Ok(Frame::Credit { bytes: len })
            }
            other => Err(WireError::BadKind(other)),
        }
    }

    fn decode_short(b: &[u8], max_len: u64) -> Result<Frame, WireError> {
        if b[1] != VERSION {
            return Err(WireError::BadVersion(b[1]));
        }
        if b[2] != 0 || b[3] != 0 {
            return Err(WireError::Reserved(KIND_EAGER));
        }
        let len = u64::from(u32_at(b, 4));
        if len > max_len {
            return Err(WireError::TooLong { len, max: max_len });
        }
        Ok(Frame::Eager {
            context: u32_at(b, 8),
            tag: u32_at(b, 12),
            len,
            sync: false,
            sreq: 0,
        })
    }
}

#[cfg(test)]
mod tests;

/// Copies `src` into `dst` (equal lengths): up to 64 bytes with a few
/// fixed-size moves instead of a call to `memcpy` (whose dispatch costs
/// more than a small message's payload; most messages of a message-rate
/// stream are a few bytes), above through [`crate::sys::copy::copy`]
/// (`memcpy`, in pieces at a distance where one `memcpy` would be slow).
#[inline]
pub(crate) fn copy_payload(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if n != dst.len() {
        dst.copy_from_slice(src); // panics, as copy_from_slice does
        return;
    }
    fn two<const K: usize>(dst: &mut [u8], src: &[u8], n: usize) {
        // Two overlapping K-byte moves cover K..=2K bytes.
        let (a, b) = (&src[..K], &src[n - K..]);
        let (a, b): ([u8; K], [u8; K]) = (
            a.try_into().unwrap_or([0; K]),
            b.try_into().unwrap_or([0; K]),
        );
        dst[..K].copy_from_slice(&a);
        dst[n - K..].copy_from_slice(&b);
    }
    match n {
        0 => {}
        1..=3 => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
        4..=7 => two::<4>(dst, src, n),
        // 16 bytes too: a short frame header, just built in two 8-byte
        // stores, is copied in two 8-byte loads that forward from them.
        8..=16 => two::<8>(dst, src, n),
        17..=32 => two::<16>(dst, src, n),
        33..=64 => two::<32>(dst, src, n),
        _ => crate::sys::copy::copy(dst, src),
    }
}
