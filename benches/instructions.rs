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
//!
//! `instructions bw N` on a world of two ranks (`courier run -n 2`, the
//! shared-memory ring between them; `benches/callgrind.sh bw` runs callgrind
//! on rank 1 only): N windows of `osu_bw`, rank 0 `isend`s 64 messages of 8
//! bytes, rank 1 `irecv`s them, both `wait_all`, then rank 1 acknowledges.
//! `pingpong`: N round trips of 8 bytes (osu_latency), rank 1 receiving
//! and answering (`pingpong N BYTES`: of BYTES, rounded down to whole
//! `u64`s, e.g. 4096 for the ring's multi-line records). `allreduce`,
//! `reduce` and `barrier` run there too: N all-reduces of one `u64` (sum),
//! N reduces of one to rank 1 (the rank counted), or N barriers. These
//! three initialize as `courier bench` does (`Threading::Funneled`: no lock
//! per call).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "blocking".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    // The two-rank modes run as `courier bench` does (one communicating
    // thread, no locks); the singleton ones as they always have.
    let u = if matches!(
        mode.as_str(),
        "bw" | "pingpong" | "allreduce" | "reduce" | "barrier"
    ) {
        courier::init_thread(courier::Threading::Funneled).unwrap()
    } else {
        courier::init().unwrap()
    };
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
        "pingpong" => {
            // osu_latency's loop (8 bytes unless BYTES says otherwise):
            // rank 0 sends and receives, rank 1 receives and answers.
            let (me, peer) = (w.rank(), 1 - w.rank());
            let bytes: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
            let words = (bytes / 8).max(1);
            let out = vec![7u64; words];
            let mut inc = vec![0u64; words];
            for _ in 0..n {
                if me == 0 {
                    w.send(&out, peer, 5).unwrap();
                    w.recv(&mut inc, peer, 5).unwrap();
                } else {
                    w.recv(&mut inc, peer, 5).unwrap();
                    w.send(&out, peer, 5).unwrap();
                }
            }
        }
        "bw" => {
            let (me, peer) = (w.rank(), 1 - w.rank());
            let out = [7u64; 64];
            let mut inc = [0u64; 64];
            let mut ack = [0u8; 4];
            for _ in 0..n {
                courier::scope(|s| {
                    let mut reqs = Vec::with_capacity(64);
                    if me == 1 {
                        for slot in inc.chunks_mut(1) {
                            reqs.push(w.irecv(s, slot, peer, 2).unwrap());
                        }
                    } else {
                        for x in out.chunks(1) {
                            reqs.push(w.isend(s, x, peer, 2).unwrap());
                        }
                    }
                    courier::wait_all(reqs).unwrap();
                });
                if me == 0 {
                    w.recv(&mut ack, peer, 4).unwrap();
                } else {
                    w.send(&ack, peer, 4).unwrap();
                }
            }
        }
        "allreduce" => {
            let mut out = [0u64; 1];
            for i in 0..n {
                w.all_reduce(&[i as u64], &mut out, courier::Op::Sum)
                    .unwrap();
            }
        }
        "reduce" => {
            // Rank 1, the one counted, is the root.
            let mut out = [0u64; 1];
            for i in 0..n {
                w.reduce(&[i as u64], &mut out, courier::Op::Sum, 1)
                    .unwrap();
            }
        }
        "barrier" => {
            for _ in 0..n {
                w.barrier().unwrap();
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
