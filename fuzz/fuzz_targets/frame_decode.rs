//! Frame header decoding: never panics; what decodes re-encodes identically.
#![no_main]
use courier::bench_internals::wire::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some(&first) = rest.first() {
        let Ok(n) = Frame::header_len(first) else {
            return;
        };
        if rest.len() < n {
            return;
        }
        let (h, tail) = rest.split_at(n);
        rest = tail;
        if let Ok(f) = Frame::decode(h, 1 << 30) {
            assert_eq!(&f.encode()[..], h);
            assert!(f.payload_len() <= 1 << 30);
        }
    }
});
