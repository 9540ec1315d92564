//! The rendezvous service protocol between ranks and `courier run`.
//!
//! Sans-IO codec. After the [`auth`](super::auth) handshake (the rank is the
//! connector, the service uses `to = SERVICE`), each side sends messages
//! framed as a little-endian `u32` length followed by that many bytes; the
//! first byte is the operation. Strings are `u16` length + UTF-8, byte values
//! are `u32` length + bytes.
//!
//! ```text
//! rank → service   1 PUT key value      store (key, value) in the job's space
//!                  2 FENCE              wait until every rank has fenced
//!                  3 GET key            look a key up (after a fence)
//!                  4 ABORT code:i32     end the whole job with this exit code
//!                  5 FINALIZE           this rank is finishing cleanly
//!                  6 FENCE_STORE        FENCE, answered through the node's card store
//! service → rank 130 FENCE_DONE n (key value)*n   every pair put before the fence
//!                134 FENCE_STORED len:u32  the card table fills `len` bytes of the store
//!                131 GET_RESULT found:u8 [value]
//!                132 ABORT code:i32     the job is being torn down
//!                133 FINALIZE_ACK
//! ```
//!
//! Wire-up costs one PUT and one FENCE per rank: the service answers the fence
//! for all ranks at once, so start-up is O(1) round trips. A rank the
//! launcher started on its own host holds the node's card store (see
//! [`store`](super::store)) and asks FENCE_STORE: the service writes every
//! card once, as a binary table, into the store and answers with its length
//! alone, so a node receives the cards once instead of once per rank. Any
//! other rank (or a store that cannot be filled) gets FENCE_DONE with every
//! pair.

/// Largest message a rank may send to the service.
pub const MAX_REQUEST: usize = 1 << 20;
/// Largest message the service may send to a rank (a fence reply holds every card).
pub const MAX_REPLY: usize = 256 << 20;

/// A rank's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store a pair.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Collective fence over all ranks.
    Fence,
    /// Look a key up.
    Get {
        /// Key.
        key: String,
    },
    /// Abort the job.
    Abort {
        /// Exit code for the job.
        code: i32,
    },
    /// Clean finish.
    Finalize,
    /// Collective fence, answered with [`Reply::FenceStored`] when the
    /// service can fill the node's card store (else with
    /// [`Reply::FenceDone`]).
    FenceStore,
}

/// The service's reply or notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Every pair stored before the fence completed.
    FenceDone {
        /// The pairs.
        entries: Vec<(String, Vec<u8>)>,
    },
    /// Result of a GET.
    GetResult {
        /// The value, if the key exists.
        value: Option<Vec<u8>>,
    },
    /// The job is being aborted.
    Abort {
        /// The job's exit code.
        code: i32,
    },
    /// FINALIZE acknowledged.
    FinalizeAck,
    /// The fence completed and the card table fills the first `len` bytes
    /// of the node's card store.
    FenceStored {
        /// Length of the table in bytes.
        len: u32,
    },
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A message longer than allowed.
    #[error("message of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// Ends before a field does.
    #[error("truncated message")]
    Truncated,
    /// Unknown operation byte.
    #[error("unknown operation {0}")]
    BadOp(u8),
    /// A string that is not UTF-8.
    #[error("invalid UTF-8 in a key")]
    BadUtf8,
    /// Bytes left over after the last field.
    #[error("trailing bytes after the message")]
    Trailing,
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.b.len() < n {
            return Err(CodecError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(self.u32()? as i32)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        let s = self.take(2)?;
        let n = usize::from(u16::from_le_bytes([s[0], s[1]]));
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| CodecError::BadUtf8)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, CodecError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn end(&self) -> Result<(), CodecError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Trailing)
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    // Keys are short by construction; longer ones are cut to what u16 can say.
    let b = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn framed(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

impl Request {
    /// Encodes with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Request::Put { key, value } => {
                b.push(1);
                put_string(&mut b, key);
                put_bytes(&mut b, value);
            }
            Request::Fence => b.push(2),
            Request::Get { key } => {
                b.push(3);
                put_string(&mut b, key);
            }
            Request::Abort { code } => {
                b.push(4);
                b.extend_from_slice(&code.to_le_bytes());
            }
            Request::Finalize => b.push(5),
            Request::FenceStore => b.push(6),
        }
        framed(b)
    }

    /// Decodes one message body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader { b: body };
        let req = match r.u8()? {
            1 => Request::Put {
                key: r.string()?,
                value: r.bytes()?,
            },
            2 => Request::Fence,
            3 => Request::Get { key: r.string()? },
            4 => Request::Abort { code: r.i32()? },
            5 => Request::Finalize,
            6 => Request::FenceStore,
            op => return Err(CodecError::BadOp(op)),
        };
        r.end()?;
        Ok(req)
    }
}

impl Reply {
    /// Encodes with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Reply::FenceDone { entries } => {
                b.push(130);
                b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for (k, v) in entries {
                    put_string(&mut b, k);
                    put_bytes(&mut b, v);
                }
            }
            Reply::GetResult { value } => {
                b.push(131);
                match value {
                    Some(v) => {
                        b.push(1);
                        put_bytes(&mut b, v);
                    }
                    None => b.push(0),
                }
            }
            Reply::Abort { code } => {
                b.push(132);
                b.extend_from_slice(&code.to_le_bytes());
            }
            Reply::FinalizeAck => b.push(133),
            Reply::FenceStored { len } => {
                b.push(134);
                b.extend_from_slice(&len.to_le_bytes());
            }
        }
        framed(b)
    }

    /// Decodes one message body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader { b: body };
        let rep = match r.u8()? {
            130 => {
                let n = r.u32()? as usize;
                // Each entry takes at least 6 bytes: bound the allocation by the input.
                let mut entries = Vec::with_capacity(n.min(body.len() / 6));
                for _ in 0..n {
                    entries.push((r.string()?, r.bytes()?));
                }
                Reply::FenceDone { entries }
            }
            131 => match r.u8()? {
                0 => Reply::GetResult { value: None },
                1 => Reply::GetResult {
                    value: Some(r.bytes()?),
                },
                _ => return Err(CodecError::Truncated),
            },
            132 => Reply::Abort { code: r.i32()? },
            133 => Reply::FinalizeAck,
            134 => Reply::FenceStored { len: r.u32()? },
            op => return Err(CodecError::BadOp(op)),
        };
        r.end()?;
        Ok(rep)
    }
}

/// Splits a byte stream into message bodies.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    max: usize,
}

impl Deframer {
    /// A deframer refusing messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Deframer {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message body, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let n = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if n > self.max {
            return Err(CodecError::TooLong(n));
        }
        if self.buf.len() < 4 + n {
            return Ok(None);
        }
        let body = self.buf[4..4 + n].to_vec();
        self.buf.drain(..4 + n);
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Vec<u8> {
        let mut d = Deframer::new(MAX_REPLY);
        d.push(bytes);
        d.next_message().unwrap().unwrap()
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Put {
                key: "card.3".into(),
                value: b"tcp=127.0.0.1:5".to_vec(),
            },
            Request::Fence,
            Request::Get { key: "k".into() },
            Request::Abort { code: -3 },
            Request::Finalize,
            Request::FenceStore,
        ] {
            assert_eq!(Request::decode(&one(&r.encode())), Ok(r));
        }
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::FenceDone {
                entries: vec![("a".into(), vec![1, 2]), ("b".into(), vec![])],
            },
            Reply::GetResult { value: None },
            Reply::GetResult {
                value: Some(vec![9]),
            },
            Reply::Abort { code: 7 },
            Reply::FinalizeAck,
            Reply::FenceStored { len: 4096 },
        ] {
            assert_eq!(Reply::decode(&one(&r.encode())), Ok(r));
        }
    }

    #[test]
    fn deframer_handles_split_and_oversized_input() {
        let bytes = Request::Fence.encode();
        let mut d = Deframer::new(16);
        d.push(&bytes[..2]);
        assert_eq!(d.next_message(), Ok(None));
        d.push(&bytes[2..]);
        assert_eq!(d.next_message(), Ok(Some(vec![2])));
        d.push(&1000u32.to_le_bytes());
        assert_eq!(d.next_message(), Err(CodecError::TooLong(1000)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Request::decode(&[]), Err(CodecError::Truncated));
        assert_eq!(Request::decode(&[9]), Err(CodecError::BadOp(9)));
        assert_eq!(Request::decode(&[2, 0]), Err(CodecError::Trailing));
        assert_eq!(
            Request::decode(&[1, 5, 0, b'a']),
            Err(CodecError::Truncated)
        );
        assert_eq!(Request::decode(&[3, 1, 0, 0xff]), Err(CodecError::BadUtf8));
        assert!(Reply::decode(&[130, 255, 255, 255, 255]).is_err());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// A byte stream cut anywhere never makes the deframer or the
            /// decoders panic; messages are bounded by the deframer's limit.
            #[test]
            fn arbitrary_streams_are_rejected_or_decoded(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16)) {
                let mut d = Deframer::new(256);
                for c in &chunks {
                    d.push(c);
                    while let Ok(Some(body)) = d.next_message() {
                        prop_assert!(body.len() <= 256);
                        let _ = Request::decode(&body);
                        let _ = Reply::decode(&body);
                    }
                }
            }
        }
    }
}
