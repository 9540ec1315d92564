//! The rendezvous service's framing and request/reply decoders.
#![no_main]
use courier::bootstrap::protocol::{Deframer, Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Deframer::new(4096);
    for chunk in data.chunks(7) {
        d.push(chunk);
        while let Ok(Some(body)) = d.next_message() {
            assert!(body.len() <= 4096);
            let _ = Request::decode(&body);
            let _ = Reply::decode(&body);
        }
    }
});
