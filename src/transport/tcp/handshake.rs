//! The per-job key and the challenge/response handshake that opens every
//! connection of a job (rank ↔ rank and rank ↔ rendezvous service).
//!
//! Sans-IO: these types produce and consume fixed-size messages; the caller
//! moves the bytes. The key never crosses the wire. Both sides prove that they
//! know it with HMAC-SHA-256 over fresh nonces from both ends, so a recorded
//! handshake cannot be replayed.
//!
//! ```text
//! connector → acceptor  HELLO     "CRHS" ver(1) 0 0 0 | from u32 | to u32 | nonce_c[32]     (48 B)
//! acceptor  → connector CHALLENGE nonce_a[32] | HMAC(key, "acceptor"  ‖ hello ‖ nonce_a)  (64 B)
//! connector → acceptor  AUTH      HMAC(key, "connector" ‖ hello ‖ nonce_a)               (32 B)
//! acceptor  → connector VERDICT   1 = accepted, 0 = declined (a duplicate link)          (1 B)
//! ```
//!
//! `to` is the acceptor's rank, or [`SERVICE`] for the rendezvous service.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Length of a job key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a HELLO message.
pub const HELLO_LEN: usize = 48;
/// Length of a CHALLENGE message.
pub const CHALLENGE_LEN: usize = 64;
/// Length of an AUTH message.
pub const AUTH_LEN: usize = 32;
/// Length of a VERDICT message.
pub const VERDICT_LEN: usize = 1;
/// The `to` field naming the launcher's rendezvous service.
pub const SERVICE: u32 = u32::MAX;

const HS_MAGIC: &[u8; 4] = b"CRHS";
const HS_VERSION: u8 = 1;

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The opening bytes are not a Courier HELLO of this version.
    #[error("not a Courier handshake (bad magic or version)")]
    BadHello,
    /// The HELLO names a rank that does not exist or is not this endpoint.
    #[error("handshake names rank {from} → {to}, which is not valid here")]
    BadRanks {
        /// Claimed sender rank.
        from: u32,
        /// Claimed target.
        to: u32,
    },
    /// The peer does not know the job key.
    #[error("authentication failed: wrong job key")]
    BadMac,
    /// The acceptor sent an undefined verdict byte.
    #[error("invalid verdict byte {0}")]
    BadVerdict(u8),
}

/// A random per-job secret shared by the launcher and the ranks.
#[derive(Clone, PartialEq, Eq)]
pub struct JobKey([u8; KEY_LEN]);

impl fmt::Debug for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobKey(..)")
    }
}

impl JobKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> std::io::Result<Self> {
        let mut k = [0u8; KEY_LEN];
        getrandom::getrandom(&mut k).map_err(std::io::Error::other)?;
        Ok(JobKey(k))
    }

    /// Hex encoding, for passing to ranks through the environment.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the hex encoding.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 2 * KEY_LEN {
            return None;
        }
        let mut k = [0u8; KEY_LEN];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok()?;
            k[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(JobKey(k))
    }

    fn mac(&self, label: &[u8], hello: &[u8; HELLO_LEN], nonce_a: &[u8; 32]) -> HmacSha256 {
        // new_from_slice only fails for key lengths HMAC cannot take; any length works for HMAC.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        m.update(label);
        m.update(hello);
        m.update(nonce_a);
        m
    }
}

fn nonce() -> std::io::Result<[u8; 32]> {
    let mut n = [0u8; 32];
    getrandom::getrandom(&mut n).map_err(std::io::Error::other)?;
    Ok(n)
}

/// The connecting side of a handshake.
#[derive(Debug)]
pub struct Connector {
    key: JobKey,
    hello: [u8; HELLO_LEN],
}

impl Connector {
    /// Starts a handshake from rank `from` to `to` (a rank or [`SERVICE`]).
    pub fn new(key: JobKey, from: u32, to: u32) -> std::io::Result<Self> {
        let mut hello = [0u8; HELLO_LEN];
        hello[0..4].copy_from_slice(HS_MAGIC);
        hello[4] = HS_VERSION;
        hello[8..12].copy_from_slice(&from.to_le_bytes());
        hello[12..16].copy_from_slice(&to.to_le_bytes());
        hello[16..48].copy_from_slice(&nonce()?);
        Ok(Connector { key, hello })
    }

    /// The HELLO to send first.
    pub fn hello(&self) -> &[u8; HELLO_LEN] {
        &self.hello
    }

    /// Checks the acceptor's proof and returns the AUTH message to send.
    pub fn handle_challenge(
        &self,
        ch: &[u8; CHALLENGE_LEN],
    ) -> Result<[u8; AUTH_LEN], HandshakeError> {
        let mut nonce_a = [0u8; 32];
        nonce_a.copy_from_slice(&ch[..32]);
        self.key
            .mac(b"acceptor", &self.hello, &nonce_a)
            .verify_slice(&ch[32..])
            .map_err(|_| HandshakeError::BadMac)?;
        let mut auth = [0u8; AUTH_LEN];
        auth.copy_from_slice(
            &self
                .key
                .mac(b"connector", &self.hello, &nonce_a)
                .finalize()
                .into_bytes(),
        );
        Ok(auth)
    }
}

/// Decodes a VERDICT byte: `Ok(true)` accepted, `Ok(false)` declined.
pub fn parse_verdict(v: &[u8; VERDICT_LEN]) -> Result<bool, HandshakeError> {
    match v[0] {
        1 => Ok(true),
        0 => Ok(false),
        b => Err(HandshakeError::BadVerdict(b)),
    }
}

/// Encodes a VERDICT.
pub fn verdict(accept: bool) -> [u8; VERDICT_LEN] {
    [u8::from(accept)]
}

/// The accepting side of a handshake.
#[derive(Debug)]
pub struct Acceptor {
    key: JobKey,
    hello: [u8; HELLO_LEN],
    nonce_a: [u8; 32],
    from: u32,
}

impl Acceptor {
    /// Handles a HELLO addressed to `me` (a rank or [`SERVICE`]) in a job of
    /// `size` ranks; returns the acceptor state and the CHALLENGE to send.
    pub fn handle_hello(
        key: JobKey,
        me: u32,
        size: u32,
        hello: &[u8; HELLO_LEN],
    ) -> Result<(Self, [u8; CHALLENGE_LEN]), HandshakeError> {
        if &hello[0..4] != HS_MAGIC || hello[4] != HS_VERSION || hello[5..8] != [0, 0, 0] {
            return Err(HandshakeError::BadHello);
        }
        let from = u32::from_le_bytes([hello[8], hello[9], hello[10], hello[11]]);
        let to = u32::from_le_bytes([hello[12], hello[13], hello[14], hello[15]]);
        if to != me || from >= size || from == me {
            return Err(HandshakeError::BadRanks { from, to });
        }
        let nonce_a = nonce().map_err(|_| HandshakeError::BadHello)?;
        let mut ch = [0u8; CHALLENGE_LEN];
        ch[..32].copy_from_slice(&nonce_a);
        ch[32..].copy_from_slice(
            &key.mac(b"acceptor", hello, &nonce_a)
                .finalize()
                .into_bytes(),
        );
        Ok((
            Acceptor {
                key,
                hello: *hello,
                nonce_a,
                from,
            },
            ch,
        ))
    }

    /// Checks the connector's AUTH; returns the authenticated peer rank.
    pub fn handle_auth(&self, auth: &[u8; AUTH_LEN]) -> Result<u32, HandshakeError> {
        self.key
            .mac(b"connector", &self.hello, &self.nonce_a)
            .verify_slice(auth)
            .map_err(|_| HandshakeError::BadMac)?;
        Ok(self.from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> JobKey {
        JobKey::generate().unwrap()
    }

    #[test]
    fn key_hex_round_trip() {
        let k = key();
        assert_eq!(JobKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(JobKey::from_hex("zz"), None);
        assert_eq!(JobKey::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn handshake_succeeds_with_the_same_key() {
        let k = key();
        let c = Connector::new(k.clone(), 1, 0).unwrap();
        let (a, ch) = Acceptor::handle_hello(k, 0, 4, c.hello()).unwrap();
        let auth = c.handle_challenge(&ch).unwrap();
        assert_eq!(a.handle_auth(&auth), Ok(1));
        assert_eq!(parse_verdict(&verdict(true)), Ok(true));
        assert_eq!(parse_verdict(&verdict(false)), Ok(false));
        assert_eq!(parse_verdict(&[7]), Err(HandshakeError::BadVerdict(7)));
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let c = Connector::new(key(), 1, 0).unwrap();
        let (a, ch) = Acceptor::handle_hello(key(), 0, 4, c.hello()).unwrap();
        assert_eq!(c.handle_challenge(&ch), Err(HandshakeError::BadMac));
        assert_eq!(a.handle_auth(&[0; AUTH_LEN]), Err(HandshakeError::BadMac));
    }

    #[test]
    fn replayed_auth_fails_against_a_fresh_challenge() {
        let k = key();
        let c = Connector::new(k.clone(), 2, 0).unwrap();
        let (_a1, ch1) = Acceptor::handle_hello(k.clone(), 0, 4, c.hello()).unwrap();
        let auth1 = c.handle_challenge(&ch1).unwrap();
        // An eavesdropper replays HELLO and AUTH; the acceptor picks a new nonce.
        let (a2, _ch2) = Acceptor::handle_hello(k, 0, 4, c.hello()).unwrap();
        assert_eq!(a2.handle_auth(&auth1), Err(HandshakeError::BadMac));
    }

    #[test]
    fn bad_hellos_are_refused() {
        let k = key();
        let mut h = *Connector::new(k.clone(), 1, 0).unwrap().hello();
        h[0] = b'X';
        assert_eq!(
            Acceptor::handle_hello(k.clone(), 0, 4, &h).unwrap_err(),
            HandshakeError::BadHello
        );
        let c = Connector::new(k.clone(), 9, 0).unwrap();
        assert!(matches!(
            Acceptor::handle_hello(k.clone(), 0, 4, c.hello()),
            Err(HandshakeError::BadRanks { from: 9, to: 0 })
        ));
        let c = Connector::new(k.clone(), 1, 2).unwrap();
        assert!(Acceptor::handle_hello(k, 0, 4, c.hello()).is_err());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Random HELLO and AUTH messages never panic the acceptor and are
            /// never accepted without the key.
            #[test]
            fn random_handshakes_are_refused(hello in prop::collection::vec(any::<u8>(), HELLO_LEN), auth in prop::array::uniform32(any::<u8>())) {
                let key = JobKey::generate().unwrap();
                let hello: [u8; HELLO_LEN] = hello.try_into().unwrap();
                if let Ok((a, _challenge)) = Acceptor::handle_hello(key, 1, 4, &hello) {
                    prop_assert!(a.handle_auth(&auth).is_err());
                }
            }

            /// A connector refuses random challenges (the acceptor's proof).
            #[test]
            fn random_challenges_are_refused(ch in prop::collection::vec(any::<u8>(), CHALLENGE_LEN)) {
                let c = Connector::new(JobKey::generate().unwrap(), 0, 1).unwrap();
                let ch: [u8; CHALLENGE_LEN] = ch.try_into().unwrap();
                prop_assert!(c.handle_challenge(&ch).is_err());
            }
        }
    }
}
