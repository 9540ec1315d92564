//! Frame header decoding: never panics; what decodes re-encodes identically.
#![no_main]
use courier::wire::{Frame, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks_exact(HEADER_LEN) {
        let Ok(h) = <&[u8; HEADER_LEN]>::try_from(chunk) else {
            return;
        };
        if let Ok(f) = Frame::decode(h, 1 << 30) {
            assert_eq!(&f.encode(), h);
            assert!(f.payload_len() <= 1 << 30);
        }
    }
});
