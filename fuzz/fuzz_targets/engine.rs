//! The matching engine driven by frames from (possibly hostile) peers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    courier::bench_internals::engine_feed(data);
});
