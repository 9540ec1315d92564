//! Unit tests of the parent module.

use super::*;

#[test]
fn header_len_tells_the_two_forms_apart() {
    let eager = Frame::Eager {
        context: 0,
        tag: 1,
        len: 8,
        sync: false,
        sreq: 0,
    };
    assert_eq!(Frame::header_len(eager.encode()[0]), Ok(SHORT_HEADER_LEN));
    assert_eq!(Frame::header_len(Frame::Bye.encode()[0]), Ok(HEADER_LEN));
    let f = Frame::Cts { sreq: 1, rreq: 2 };
    assert_eq!(Frame::decode(&f.encode(), u64::MAX), Ok(f));
}

fn all_kinds() -> Vec<Frame> {
    vec![
        Frame::Eager {
            context: 3,
            tag: 77,
            len: 12,
            sync: false,
            sreq: 0,
        },
        Frame::Eager {
            context: 0,
            tag: 0,
            len: 0,
            sync: true,
            sreq: 9 << 32 | 4,
        },
        Frame::Rts {
            context: 1,
            tag: u32::MAX >> 1,
            len: 1 << 30,
            sreq: 5,
            addr: 0,
        },
        Frame::Rts {
            context: 1,
            tag: 3,
            len: 1 << 20,
            sreq: 5,
            addr: 0x7fff_1234_5000,
        },
        Frame::Fin { sreq: 5 },
        Frame::CtsCoop {
            sreq: 5,
            rreq: 6,
            addr: 0x7ffd_dead_b000,
            split: 1 << 19,
        },
        Frame::Pushed { rreq: 6, ok: true },
        Frame::Pushed { rreq: 6, ok: false },
        Frame::Credit { bytes: 1 << 20 },
        Frame::Cts { sreq: 5, rreq: 6 },
        Frame::Data {
            rreq: 6,
            len: 1 << 30,
        },
        Frame::SyncAck { sreq: 42 },
        Frame::Bye,
    ]
}

#[test]
fn round_trip_every_kind() {
    for f in all_kinds() {
        let b = f.encode();
        assert_eq!(Frame::decode(&b, u64::MAX), Ok(f));
    }
}

#[test]
fn rejects_bad_magic_version_kind() {
    let mut b = Frame::Bye.encode().to_vec();
    b[0] ^= 1;
    assert!(matches!(Frame::decode(&b, 10), Err(WireError::BadMagic(_))));
    let mut b = Frame::Bye.encode().to_vec();
    b[1] ^= 1;
    assert!(matches!(Frame::decode(&b, 10), Err(WireError::BadMagic(_))));
    // Version 1 (before the short header) is refused, as is any other.
    for v in [1, 3] {
        let mut b = Frame::Bye.encode().to_vec();
        b[2] = v;
        assert_eq!(Frame::decode(&b, 10), Err(WireError::BadVersion(v)));
    }
    let mut b = Frame::Bye.encode().to_vec();
    b[3] = 0;
    assert_eq!(Frame::decode(&b, 10), Err(WireError::BadKind(0)));
    b[3] = 200;
    assert_eq!(Frame::decode(&b, 10), Err(WireError::BadKind(200)));
}

#[test]
fn rejects_flags_lengths_and_reserved_fields() {
    let mut b = Frame::Cts { sreq: 1, rreq: 2 }.encode().to_vec();
    b[4] = 1;
    assert!(matches!(
        Frame::decode(&b, 10),
        Err(WireError::BadFlags { .. })
    ));
    let b = Frame::Data { rreq: 1, len: 11 }.encode();
    assert_eq!(
        Frame::decode(&b, 10),
        Err(WireError::TooLong { len: 11, max: 10 })
    );
    let mut b = Frame::Bye.encode().to_vec();
    b[20] = 1;
    assert_eq!(Frame::decode(&b, u64::MAX), Err(WireError::Reserved(6)));
}

#[test]
fn every_single_byte_corruption_is_decoded_or_rejected_without_panic() {
    for f in all_kinds() {
        let good = f.encode().to_vec();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                let _ = Frame::decode(&b, 1 << 20);
            }
        }
    }
}

#[test]
fn plain_eager_messages_use_the_short_header() {
    let f = Frame::Eager {
        context: 7,
        tag: 9,
        len: 8,
        sync: false,
        sreq: 0,
    };
    let b = f.encode();
    assert_eq!(b.len(), SHORT_HEADER_LEN);
    assert_eq!(Frame::header_len(b[0]), Ok(SHORT_HEADER_LEN));
    assert_eq!(Frame::decode(&b, 8), Ok(f));
    assert_eq!(
        Frame::decode(&b, 7),
        Err(WireError::TooLong { len: 8, max: 7 })
    );
    // Synchronous eager messages carry a request id: full form.
    let sync = Frame::Eager {
        context: 7,
        tag: 9,
        len: 8,
        sync: true,
        sreq: 3,
    };
    assert_eq!(sync.encode().len(), HEADER_LEN);
    // The full form of a plain eager message is not canonical.
    let mut full = sync.encode().to_vec();
    full[4] = 0;
    full[24..32].fill(0);
    assert_eq!(Frame::decode(&full, 8), Err(WireError::NonCanonical));
    // Wrong lengths and reserved bytes.
    assert_eq!(Frame::decode(&b[..15], 8), Err(WireError::BadLength(15)));
    assert_eq!(Frame::decode(&full[..16], 8), Err(WireError::BadLength(16)));
    assert_eq!(Frame::decode(&[], 8), Err(WireError::BadLength(0)));
    let mut r = b.to_vec();
    r[3] = 1;
    assert_eq!(Frame::decode(&r, 8), Err(WireError::Reserved(KIND_EAGER)));
    let mut v = b.to_vec();
    v[1] = 9;
    assert_eq!(Frame::decode(&v, 8), Err(WireError::BadVersion(9)));
}

mod props {
    use super::super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any 40 bytes decode to a frame or an error, never a panic; a
        /// frame re-encodes to exactly the bytes it came from.
        #[test]
        fn decode_never_panics_and_round_trips(b in prop::array::uniform32(any::<u8>()), tail in prop::array::uniform8(any::<u8>())) {
            let mut h = [0u8; HEADER_LEN];
            h[..32].copy_from_slice(&b);
            h[32..].copy_from_slice(&tail);
            if let Ok(f) = Frame::decode(&h, u64::MAX) {
                prop_assert_eq!(&f.encode()[..], &h[..]);
            }
        }

        /// The same for any 16 bytes (the short form's length).
        #[test]
        fn short_headers_never_panic_and_round_trip(b in prop::array::uniform16(any::<u8>()), short in any::<bool>()) {
            let mut h = b;
            if short {
                h[0] = SHORT_MAGIC;
            }
            if let Ok(f) = Frame::decode(&h, u64::MAX) {
                prop_assert_eq!(&f.encode()[..], &h[..]);
            }
        }

        /// Headers that start right (magic, version, a known kind) with
        /// random fields: still never a panic, and the length bound holds.
        #[test]
        fn plausible_headers_respect_the_length_bound(kind in 0u8..12, fields in prop::array::uniform32(any::<u8>()), rest in prop::array::uniform4(any::<u8>()), max in 0u64..(1 << 20)) {
            let mut h = [0u8; HEADER_LEN];
            h[0..2].copy_from_slice(&MAGIC.to_le_bytes());
            h[2] = VERSION;
            h[3] = kind;
            h[4..36].copy_from_slice(&fields);
            h[36..].copy_from_slice(&rest);
            if let Ok(f) = Frame::decode(&h, max) {
                prop_assert!(f.payload_len() <= max);
            }
        }
    }
}

#[test]
fn payloads_of_every_small_length_are_copied_exactly() {
    let src: Vec<u8> = (1..=100u8).collect();
    for n in 0..=100 {
        let mut dst = vec![0u8; n + 2];
        copy_payload(&mut dst[1..=n], &src[..n]);
        assert_eq!(&dst[1..=n], &src[..n], "length {n}");
        assert_eq!((dst[0], dst[n + 1]), (0, 0), "length {n}: wrote outside");
    }
}

#[test]
fn short_eager_accepts_exactly_what_decode_reads_as_plain_eager() {
    let plain = Frame::Eager {
        context: 3,
        tag: 9,
        len: 2048,
        sync: false,
        sreq: 0,
    }
    .encode();
    let head: [u8; SHORT_HEADER_LEN] = plain[..SHORT_HEADER_LEN].try_into().unwrap();
    assert_eq!(Frame::short_eager(&head, 4096), Some((3, 9, 2048)));
    // The full form (a synchronous eager message) is not a short header.
    let sync = Frame::Eager {
        context: 3,
        tag: 9,
        len: 2048,
        sync: true,
        sreq: 5,
    }
    .encode();
    let sync_head: [u8; SHORT_HEADER_LEN] = sync[..SHORT_HEADER_LEN].try_into().unwrap();
    assert_eq!(Frame::short_eager(&sync_head, 4096), None);
    // Too long for the bound, and every single-byte corruption of the
    // fixed fields: refused here, and an error (or another frame) for
    // decode, never a different eager message.
    assert_eq!(Frame::short_eager(&head, 2047), None);
    for at in 0..4 {
        let mut bad = head;
        bad[at] ^= 0x40;
        assert_eq!(Frame::short_eager(&bad, 4096), None, "byte {at}");
        assert!(!matches!(
            Frame::decode(&bad, 4096),
            Ok(Frame::Eager { sync: false, .. })
        ));
    }
    // Any field value goes through unchanged.
    let mut odd = head;
    odd[8..16].copy_from_slice(&[0xff; 8]);
    assert_eq!(
        Frame::short_eager(&odd, 4096),
        Some((u32::MAX, u32::MAX, 2048))
    );
}
