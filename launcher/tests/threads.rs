//! Threads inside ranks (`MPI_THREAD_MULTIPLE`): concurrent point-to-point
//! with per-(source, tag) order checked, progress shared between waiting
//! threads, collectives on different communicators at once, concurrent
//! collectives on one communicator refused, and requests started from
//! rayon tasks inside a scope. Real jobs through `courier run`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{datum, rank_init, run_body_env};
use courier::{Communicator, Error, Op, ANY_SOURCE, ANY_TAG};
use std::sync::mpsc;
use std::time::Duration;

/// Threads per rank in these tests.
const THREADS: usize = 4;

/// `COURIER_THREADS_SCALE` (default 1): multiplies the messages of the
/// exchange test (`scripts/threads_stress.sh` runs it long).
fn scale() -> usize {
    std::env::var("COURIER_THREADS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn run(body: &str, np: usize, transport: &str) {
    let scale = scale().to_string();
    let env = [
        ("COURIER_TRANSPORT", transport),
        ("COURIER_THREADS_SCALE", scale.as_str()),
    ];
    run_body_env(body, np, &env, 120 * scale.parse::<u32>().unwrap_or(1)).assert_ranks_passed(np);
}

/// A message's size: mostly small, some medium, a few large (up to 4 MiB
/// when `big`), from a fixed pseudo-random sequence.
fn size_of(src: usize, thread: usize, k: usize, big: bool) -> usize {
    let h = datum(src, thread * 7919 + k, 1) as usize;
    match h % 16 {
        0 if big => 1 + (h >> 8) % (4 << 20),
        0..=2 => 1 + (h >> 8) % (256 << 10),
        3 => 0,
        _ => (h >> 8) % 4096,
    }
}

/// Message `k` of thread `thread` of rank `src`: `len` bytes as u32 words
/// (rounded down), the first one naming `k` so that order is checked.
fn payload(src: usize, thread: usize, k: usize, len: usize) -> Vec<u32> {
    (0..len / 4)
        .map(|i| datum(src * 64 + thread, k, i))
        .collect()
}

fn check(got: &[u32], src: usize, thread: usize, k: usize) {
    let want = payload(src, thread, k, got.len() * 4);
    assert!(
        got == want.as_slice(),
        "message {k} of thread {thread} of rank {src}: wrong or out-of-order contents ({} words)",
        got.len()
    );
}

#[test]
fn threads_exchange_concurrently_in_order() {
    for (np, transport) in [(2, "shm"), (4, "shm"), (2, "tcp")] {
        run("body_threads_exchange", np, transport);
    }
}

/// Phase 1: thread `t` of every rank streams messages (tag `t`, blocking
/// and nonblocking alternately) to the next rank and receives the previous
/// rank's thread-`t` stream from any source. Phase 2: threads 1.. stream
/// to the next rank with their own tags while thread 0 takes all of it
/// with any source and any tag, checking order per (source, tag).
#[test]
#[ignore = "rank body: run through courier"]
fn body_threads_exchange() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (me, n) = (w.rank(), w.size());
    let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
    let big = std::env::var("COURIER_TRANSPORT").as_deref() == Ok("shm");
    let m = 60 * scale();
    std::thread::scope(|ts| {
        for t in 0..THREADS {
            let w = w.clone();
            ts.spawn(move || {
                let mut inc = vec![0u32; (4 << 20) / 4];
                for k in 0..m {
                    let out = payload(me, t, k, size_of(me, t, k, big));
                    let want = size_of(prev, t, k, big) / 4;
                    if k % 2 == 0 {
                        courier::scope(|s| {
                            let r = w.irecv(s, &mut inc[..want], ANY_SOURCE, t as u32).unwrap();
                            let sr = w.isend(s, &out, next, t as u32).unwrap();
                            let st = r.wait().unwrap();
                            sr.wait().unwrap();
                            assert_eq!((st.source, st.tag, st.bytes), (prev, t as u32, want * 4));
                        });
                    } else {
                        // Blocking: send first on even ranks, receive first
                        // on odd ones (eager and rendezvous alike).
                        let recv = |inc: &mut [u32]| {
                            let st = w.recv(&mut inc[..want], ANY_SOURCE, t as u32).unwrap();
                            assert_eq!((st.source, st.bytes), (prev, want * 4));
                        };
                        if me % 2 == 0 && n > 1 {
                            courier::scope(|s| {
                                let sr = w.isend(s, &out, next, t as u32).unwrap();
                                recv(&mut inc);
                                sr.wait().unwrap();
                            });
                        } else {
                            recv(&mut inc);
                            w.send(&out, next, t as u32).unwrap();
                        }
                    }
                    check(&inc[..want], prev, t, k);
                }
            });
        }
    });
    w.barrier().unwrap();

    let m2 = 100 * scale();
    std::thread::scope(|ts| {
        for t in 1..THREADS {
            let w = w.clone();
            ts.spawn(move || {
                for k in 0..m2 {
                    let len = size_of(me, t, k, false) % 2048;
                    w.send(&payload(me, t, k, len), next, 100 + t as u32)
                        .unwrap();
                }
            });
        }
        let mut seen = [0usize; THREADS];
        let mut inc = vec![0u32; 512];
        for _ in 0..(THREADS - 1) * m2 {
            let st = w.recv(&mut inc, ANY_SOURCE, ANY_TAG).unwrap();
            assert_eq!(st.source, prev);
            let t = st.tag as usize - 100;
            let k = seen[t];
            assert_eq!(st.bytes, (size_of(prev, t, k, false) % 2048) / 4 * 4);
            check(&inc[..st.bytes / 4], prev, t, k);
            seen[t] += 1;
        }
    });
    w.barrier().unwrap();
}

#[test]
fn waiting_threads_progress_for_each_other() {
    run("body_threads_relay", 2, "shm");
    run("body_threads_relay", 2, "tcp");
}

/// Rank 0's threads 1.. each block in a receive of their own tag. Rank 1
/// sends those messages in reverse order of tags, after a go from rank
/// 0's main thread: whichever thread polls must deliver the others'
/// messages and wake them, or the job hangs.
#[test]
#[ignore = "rank body: run through courier"]
fn body_threads_relay() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    const T: usize = 8;
    for round in 0..20u32 {
        if w.rank() == 0 {
            std::thread::scope(|ts| {
                for t in 1..T {
                    let w = w.clone();
                    ts.spawn(move || {
                        let mut v = [0u32; 2];
                        w.recv(&mut v, 1, t as u32).unwrap();
                        assert_eq!(v, [round, t as u32]);
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
                w.send(&[round], 1, 0).unwrap();
            });
        } else {
            let mut go = [0u32];
            w.recv(&mut go, 0, 0).unwrap();
            assert_eq!(go[0], round);
            for t in (1..T).rev() {
                w.send(&[round, t as u32], 0, t as u32).unwrap();
                if t % 3 == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        }
    }
}

#[test]
fn a_burst_of_sends_leaves_while_another_thread_waits() {
    run("body_threads_burst", 2, "tcp");
    run("body_threads_burst", 2, "shm");
}

/// Rank 0's main thread blocks in a receive whose message rank 1 sends
/// only once it has a whole burst of small sends that a second thread of
/// rank 0 posts meanwhile, and then leaves alone (it blocks on a channel
/// until the main thread's receive is over, so no call of its own ends
/// the burst): the waiting thread's progress must write it. Every other
/// round the poster starts late, once the waiter sleeps (the poster's
/// calls wake it).
#[test]
#[ignore = "rank body: run through courier"]
fn body_threads_burst() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let n = 40;
    for round in 0..10u32 {
        if w.rank() == 0 {
            let (done_tx, done_rx) = mpsc::channel::<()>();
            std::thread::scope(|ts| {
                let poster = w.clone();
                ts.spawn(move || {
                    if round % 2 == 1 {
                        // Let the waiter go to sleep first.
                        std::thread::sleep(Duration::from_millis(30));
                    }
                    let msgs: Vec<Vec<u32>> = (0..n)
                        .map(|k| vec![round, k as u32, datum(0, k, round as usize)])
                        .collect();
                    courier::scope(|s| {
                        for m in &msgs {
                            let _sent = poster.isend(s, m, 1, 7).unwrap();
                        }
                        // No Courier call until the answer has come.
                        done_rx.recv().unwrap();
                    });
                });
                let mut answer = [0u32; 1];
                w.recv(&mut answer, 1, 8).unwrap();
                assert_eq!(answer[0], round);
                done_tx.send(()).unwrap();
            });
        } else {
            for k in 0..n {
                let mut m = [0u32; 3];
                w.recv(&mut m, 0, 7).unwrap();
                assert_eq!(m, [round, k as u32, datum(0, k, round as usize)]);
            }
            w.send(&[round], 0, 8).unwrap();
        }
    }
}

#[test]
fn collectives_on_different_communicators_run_at_once() {
    run("body_threads_collectives", 2, "shm");
    run("body_threads_collectives", 4, "shm");
}

/// Each thread makes its own communicator (a dup, at the same time as the
/// other threads: the context-id agreement takes turns) and runs
/// collectives on it while the other threads run theirs.
#[test]
#[ignore = "rank body: run through courier"]
fn body_threads_collectives() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (me, n) = (w.rank(), w.size());
    let parents: Vec<Communicator> = (0..THREADS).map(|_| w.dup().unwrap()).collect();
    std::thread::scope(|ts| {
        for (t, parent) in parents.iter().enumerate() {
            ts.spawn(move || {
                let c = parent.dup().unwrap();
                for i in 0..40u64 {
                    let v = [me as u64 + t as u64 + i; 3];
                    let mut sum = [0u64; 3];
                    c.all_reduce(&v, &mut sum, Op::Sum).unwrap();
                    let want = (n * (n - 1) / 2) as u64 + n as u64 * (t as u64 + i);
                    assert_eq!(sum, [want; 3]);
                    let mut b = vec![if me == (i as usize) % n { i + 1 } else { 0 }; 1000];
                    c.broadcast(&mut b, (i as usize) % n).unwrap();
                    assert!(b.iter().all(|&x| x == i + 1));
                    c.barrier().unwrap();
                }
            });
        }
    });
    w.barrier().unwrap();
}

#[test]
fn concurrent_collectives_on_one_communicator_are_refused() {
    run("body_threads_same_comm", 2, "shm");
}

/// Two threads of rank 0 call a barrier on one communicator; rank 1 joins
/// only after one of them has been refused, so the two calls overlap
/// whatever the timing: one must fail with a clear error, the other then
/// completes.
#[test]
#[ignore = "rank body: run through courier"]
fn body_threads_same_comm() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let c = w.dup().unwrap();
    if w.rank() == 0 {
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|ts| {
            for _ in 0..2 {
                let (c, tx) = (c.clone(), tx.clone());
                ts.spawn(move || tx.send(c.barrier()).unwrap());
            }
            let first = rx.recv().unwrap();
            match first {
                Err(Error::InvalidState(m)) => {
                    assert!(m.contains("another thread"), "{m}")
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
            w.send(&[1u8], 1, 0).unwrap();
            rx.recv().unwrap().unwrap();
        });
    } else {
        let mut go = [0u8];
        w.recv(&mut go, 0, 0).unwrap();
        c.barrier().unwrap();
    }
    // The communicator works on afterwards.
    let mut s = [0u32];
    c.all_reduce(&[1u32], &mut s, Op::Sum).unwrap();
    assert_eq!(s[0], 2);
}

#[test]
fn requests_start_from_rayon_tasks_inside_a_scope() {
    run("body_rayon_scope", 2, "shm");
}

/// `rayon::scope` inside `courier::scope`: every task exchanges its own
/// block with the peer (nonblocking, tag = block), borrowing its slices
/// for the scope; some requests are left to the scope's end.
#[test]
#[ignore = "rank body: run through courier"]
fn body_rayon_scope() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (me, peer) = (w.rank(), 1 - w.rank());
    const BLOCKS: usize = 16;
    const LEN: usize = 40_000;
    let out: Vec<u32> = (0..BLOCKS * LEN).map(|i| datum(me, 0, i)).collect();
    let mut inc = vec![0u32; BLOCKS * LEN];
    courier::scope(|s| {
        rayon::scope(|rs| {
            for (b, (o, i)) in out.chunks(LEN).zip(inc.chunks_mut(LEN)).enumerate() {
                let w = &w;
                rs.spawn(move |_| {
                    let r = w.irecv(s, i, peer, b as u32).unwrap();
                    let sr = w.isend(s, o, peer, b as u32).unwrap();
                    if b % 2 == 0 {
                        r.wait().unwrap();
                        sr.wait().unwrap();
                    } else {
                        // Left for the scope's end to wait for.
                        std::mem::forget(r);
                        std::mem::forget(sr);
                    }
                });
            }
        });
    });
    assert!(inc.iter().enumerate().all(|(i, &x)| x == datum(peer, 0, i)));
}

#[test]
fn the_hybrid_example_runs_with_rayon_threads() {
    // The example, built next to the launcher (same profile) if it is not
    // there yet (`cargo test --all-targets` builds examples as tests).
    let dir = std::path::Path::new(common::courier()).parent().unwrap();
    let exe = dir.join("examples/hybrid");
    if !exe.exists() {
        let mut build = std::process::Command::new(env!("CARGO"));
        build
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "-q", "-p", "courier", "--example", "hybrid"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "building examples/hybrid"
        );
    }
    assert!(exe.exists(), "{} not built", exe.display());
    for np in ["2", "4"] {
        let j = common::launch(
            &[
                "-n",
                np,
                "--bind-to",
                "none",
                "--timeout",
                "120",
                "-x",
                "RAYON_NUM_THREADS=2",
            ],
            &[&exe.to_string_lossy()],
        );
        assert!(
            j.code == Some(0) && j.stdout.contains("hybrid: ok"),
            "{np} ranks: exit {:?}\n{}\n{}",
            j.code,
            j.stdout,
            j.stderr
        );
        assert!(j.stdout.contains("x 2 rayon threads"), "{}", j.stdout);
    }
}
