//! A fixed amount of small-message work for instruction counting under
//! `valgrind --tool=callgrind` (see `benches/callgrind.sh`): counts are
//! exact and repeatable, unlike times on a VM that changes speed.
//!
//! `instructions MODE N` on a singleton world (engine, driver and API; the
//! self link instead of a ring), N iterations of:
//! * `blocking`: an 8-byte `send` to self, then the matching `recv`;
//! * `window`: 64 `isend`s of 8 bytes to self and 64 `irecv`s, then `wait_all`
//!   (the pattern of `osu_bw`), i.e. 64 messages per iteration;
//! * `stream`: 64 blocking sends of 8 bytes to self, then 64 receives: every
//!   message arrives before its receive (the unexpected path, as for a rank
//!   that falls behind a broadcast's root).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "blocking".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let u = courier::init().unwrap();
    let w = u.world();
    match mode.as_str() {
        "blocking" => {
            let mut buf = [0u64; 1];
            for i in 0..n {
                w.send(&[i as u64], 0, 1).unwrap();
                w.recv(&mut buf, 0, 1).unwrap();
            }
        }
        "window" => {
            let out = [7u64; 64];
            let mut inc = [0u64; 64];
            for _ in 0..n {
                courier::scope(|s| {
                    let mut reqs = Vec::with_capacity(128);
                    for slot in inc.chunks_mut(1) {
                        reqs.push(w.irecv(s, slot, 0, 2).unwrap());
                    }
                    for x in out.chunks(1) {
                        reqs.push(w.isend(s, x, 0, 2).unwrap());
                    }
                    courier::wait_all(reqs).unwrap();
                });
            }
        }
        "stream" => {
            let mut buf = [0u64; 1];
            for _ in 0..n {
                for i in 0..64u64 {
                    w.send(&[i], 0, 3).unwrap();
                }
                for _ in 0..64 {
                    w.recv(&mut buf, 0, 3).unwrap();
                }
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
