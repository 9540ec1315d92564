//! The library's contract under misuse, through real jobs: a busy rank
//! still serves its listener; an abandoned receive keeps its buffer out of
//! a peer's reach until the peer is done writing; re-entrant collectives,
//! a second `init` and communicators outliving their universe are errors;
//! `COURIER_CHECK=1` turns mismatched collective arguments into the same
//! error on every rank.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{rank_init, run_body, run_body_env};
use courier::{Error, Op};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- drivers

#[test]
fn a_busy_rank_still_closes_strangers_on_time() {
    for transport in ["auto", "tcp"] {
        run_body_env(
            "body_strangers_busy",
            2,
            &[
                ("COURIER_TRANSPORT", transport),
                ("COURIER_HANDSHAKE_TIMEOUT_MS", "500"),
            ],
            60,
        )
        .assert_ranks_passed(2);
    }
}

#[test]
fn an_abandoned_receive_waits_for_the_peer_writing_into_it() {
    run_body_env(
        "body_abandon_waits_for_pusher",
        2,
        &[("COURIER_TRANSPORT", "shm")],
        60,
    )
    .assert_ranks_passed(2);
}

#[test]
fn collectives_from_inside_a_reduction_op_are_errors() {
    run_body("body_reentrant", 2);
}

#[test]
fn init_twice_and_use_after_finalize_are_errors() {
    run_body("body_lifecycle", 2);
}

#[test]
fn courier_check_names_the_first_mismatching_rank_on_every_rank() {
    run_body_env("body_check", 3, &[("COURIER_CHECK", "1")], 60).assert_ranks_passed(3);
}

// ---------------------------------------------------------------- bodies

/// Seconds until `s` is closed by its peer (EOF or reset), reading
/// whatever the peer says first.
fn closed_after(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut b = [0u8; 256];
    while t.elapsed() < limit {
        match s.read(&mut b) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(t.elapsed()),
        }
    }
    None
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_strangers_busy() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    let text = format!("{:<64}", u.local_endpoint().unwrap());
    let mut all = vec![0u8; 128];
    w.all_gather(text.as_bytes(), &mut all).unwrap();
    let target = String::from_utf8_lossy(&all[64..]).trim().to_string();
    // Rank 1 is kept busy by a ping-pong for as long as rank 0's attacker
    // thread needs; the attacker measures how soon rank 1 closes a silent
    // connection (handshake timeout 500 ms) and one that sends garbage.
    let done = Arc::new(AtomicBool::new(false));
    let attacker = (me == 0).then(|| {
        let done = done.clone();
        std::thread::spawn(move || {
            let silent = TcpStream::connect(&target).unwrap();
            let mut garbage = TcpStream::connect(&target).unwrap();
            garbage.write_all(&[0x5a; 64]).unwrap();
            let g = closed_after(garbage, Duration::from_secs(15));
            let s = closed_after(silent, Duration::from_secs(15));
            done.store(true, Ordering::Release);
            (g, s)
        })
    });
    let mut rounds = 0u64;
    let mut go = [1u64];
    loop {
        if me == 0 {
            go[0] = u64::from(!done.load(Ordering::Acquire));
            w.send(&go, 1, 1).unwrap();
            w.recv(&mut go, 1, 1).unwrap();
        } else {
            w.recv(&mut go, 0, 1).unwrap();
            w.send(&go, 0, 1).unwrap();
        }
        rounds += 1;
        if go[0] == 0 {
            break;
        }
    }
    if let Some(a) = attacker {
        let (garbage, silent) = a.join().unwrap();
        println!("{rounds} round trips; garbage closed after {garbage:?}, silent after {silent:?}");
        let garbage = garbage.expect("the garbage connection was never closed");
        let silent = silent.expect("the silent connection was never closed");
        assert!(garbage < Duration::from_millis(500), "garbage: {garbage:?}");
        assert!(
            silent >= Duration::from_millis(450) && silent < Duration::from_millis(1500),
            "silent: {silent:?} (handshake timeout 500 ms)"
        );
    } else {
        assert!(u.rejected_connections() >= 2, "{}", u.debug_report());
    }
    w.barrier().unwrap();
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_abandon_waits_for_pusher() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    const LEN: usize = 1 << 20; // cooperative copy: the sender pushes 40%
    if w.rank() == 0 {
        let out = vec![0xABu8; LEN];
        courier::scope(|s| {
            let send = w.isend(s, &out, 1, 1).unwrap();
            // Behind the RTS on the same link: when rank 1 has this, it
            // has matched the large message and sent us CTS_COOP.
            w.send(&[1u8], 1, 3).unwrap();
            // Do not look at the link for a while: our push is late.
            std::thread::sleep(Duration::from_millis(600));
            send.wait().unwrap();
        });
        w.send(&[2u8], 1, 2).unwrap();
    } else {
        let mut buf = vec![0u8; LEN];
        let t = Instant::now();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            courier::scope(|s| {
                let _r = w.irecv(s, &mut buf, 0, 1).unwrap();
                let mut b = [0u8];
                w.recv(&mut b, 0, 3).unwrap();
                panic!("injected panic with a receive in flight");
            })
        }));
        assert!(caught.is_err());
        let waited = t.elapsed();
        // The receive was abandoned while the sender could still push into
        // `buf`: the unwinding must have waited for that push.
        assert!(
            waited >= Duration::from_millis(400),
            "abandoned after {waited:?}, before the peer's push"
        );
        buf.fill(0xEE);
        let mut b = [0u8];
        w.recv(&mut b, 0, 2).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            buf.iter().all(|&x| x == 0xEE),
            "a peer wrote into an abandoned buffer"
        );
    }
    w.barrier().unwrap();
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_reentrant() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let mut inner = Vec::new();
    let mut out = [0f64; 4];
    w.all_reduce_with(&[1.0; 4], &mut out, true, &mut |a, b| {
        let mut x = [0f64; 4];
        inner.push(w.all_reduce(&[2.0; 4], &mut x, Op::Sum).map(|_| ()));
        inner.push(w.barrier());
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(out, [2.0; 4]);
    assert!(!inner.is_empty(), "the op ran");
    for r in &inner {
        assert!(matches!(r, Err(Error::InvalidState(_))), "{r:?}");
    }
    // A collective on another communicator from inside the op is fine.
    let other = w.dup().unwrap();
    let mut out = [0u64];
    w.all_reduce_with(&[1u64], &mut out, true, &mut |a, b| {
        other.barrier()?;
        a[0] += b[0];
        Ok(())
    })
    .unwrap();
    assert_eq!(out[0], 2);
    // The communicator still works.
    let mut sum = [0u32];
    w.all_reduce(&[1], &mut sum, Op::Sum).unwrap();
    assert_eq!(sum[0], 2);
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_lifecycle() {
    let Some(u) = rank_init() else { return };
    assert!(matches!(courier::init(), Err(Error::InvalidState(_))));
    let w = u.world();
    let peer = 1 - w.rank();
    // A receive that never matches outlives the universe.
    let pending = w.irecv_owned(vec![0u8; 4], peer, 99).unwrap();
    w.barrier().unwrap();
    u.finalize().unwrap();
    let state = |r: courier::Result<()>| matches!(r, Err(Error::InvalidState(_)));
    assert!(state(w.send(&[1u8], peer, 0)));
    assert!(state(w.recv(&mut [0u8], peer, 0).map(|_| ())));
    assert!(state(w.barrier()));
    assert!(state(w.dup().map(|_| ())));
    assert!(state(w.probe(peer, 0).map(|_| ())));
    let mut x = [0u8];
    assert!(state(w.broadcast(&mut x, 0)));
    assert!(state(w.isend_owned(vec![1u8], peer, 0).map(|_| ())));
    assert!(state(pending.wait().map(|_| ())));
    assert!(matches!(courier::init(), Err(Error::InvalidState(_))));
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_check() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    let expect = |r: courier::Result<()>, rank: usize, argument: &str| match r {
        Err(e @ Error::CollectiveMismatch(_)) => {
            let Error::CollectiveMismatch(m) = &e else {
                unreachable!()
            };
            assert_eq!((m.rank, m.argument), (rank, argument), "{e}");
            let text = e.to_string();
            assert!(text.contains(&format!("rank {rank}")), "{text}");
        }
        other => {
            panic!("rank {me}: expected a mismatch of {argument} at rank {rank}, got {other:?}")
        }
    };
    // A different root on rank 2.
    let mut b = [0u32; 4];
    expect(w.broadcast(&mut b, if me == 2 { 1 } else { 0 }), 2, "root");
    // A different element type on rank 1.
    let r = if me == 1 {
        w.all_reduce(&[1i64; 3], &mut [0i64; 3], Op::Sum)
    } else {
        w.all_reduce(&[1f64; 3], &mut [0f64; 3], Op::Sum)
    };
    expect(r, 1, "element type");
    // A different count on rank 0: rank 1 is the first to differ from it.
    let n = if me == 0 { 4 } else { 5 };
    let mut out = vec![0u32; n];
    expect(w.reduce(&vec![1u32; n], &mut out, Op::Sum, 0), 1, "count");
    // A different operation.
    let op = if me == 2 { Op::Max } else { Op::Sum };
    expect(w.all_reduce(&[1u32], &mut [0u32], op), 2, "op");
    // A different collective.
    let r = if me == 1 {
        w.barrier()
    } else {
        w.broadcast(&mut b, 0)
    };
    expect(r, 1, "collective");
    // gatherv: rank 2 brings 2 elements where the counts give it 3; every
    // rank hears of it (without checking, only rank 2 would, and the root
    // would wait for ever).
    let counts = [1usize, 2, 3];
    let mine = if me == 2 { 2 } else { counts[me] };
    let mut all = vec![0u32; 6];
    expect(
        w.gatherv(&vec![me as u32; mine], &mut all, &counts, 0),
        2,
        "count",
    );
    // Different counts vectors.
    let counts2 = if me == 1 { [2usize, 1, 3] } else { counts };
    let mut all = vec![0u32; 6];
    expect(
        w.all_gatherv(&vec![me as u32; counts2[me]], &mut all, &counts2),
        1,
        "counts",
    );
    // A receive buffer shorter than the operand on one rank (checked in
    // the one entry of a predefined reduction): that rank gets its own
    // error, every other rank hears it rejected its arguments.
    let own_error = |r: courier::Result<()>, bad: usize, what: &str| match r {
        Err(Error::InvalidArgument(m)) if me == bad => {
            assert!(m.contains(&format!("{what}: buffer holds 2")), "{m}")
        }
        Err(Error::InvalidArgument(m)) => {
            assert!(m.contains(&format!("rank {bad} rejected")), "{m}")
        }
        other => panic!("rank {me}: expected rank {bad}'s argument error, got {other:?}"),
    };
    let n = if me == 1 { 2 } else { 3 };
    own_error(
        w.all_reduce(&[1u64; 3], &mut vec![0u64; n], Op::Sum),
        1,
        "all_reduce",
    );
    // The same at a reduce's root (rank 2).
    let n = if me == 2 { 2 } else { 3 };
    own_error(
        w.reduce(&[1u64; 3], &mut vec![0u64; n], Op::Sum, 2),
        2,
        "reduce at the root",
    );
    // And of a scan's (rank 0) and an exclusive scan's (rank 1).
    let n = if me == 0 { 2 } else { 3 };
    own_error(w.scan(&[1u64; 3], &mut vec![0u64; n], Op::Sum), 0, "scan");
    let n = if me == 1 { 2 } else { 3 };
    own_error(
        w.exscan(&[1u64; 3], &mut vec![0u64; n], Op::Sum),
        1,
        "exscan",
    );
    // No stray message is left behind: correct calls work.
    let mut sum = [0u64];
    w.all_reduce(&[me as u64], &mut sum, Op::Sum).unwrap();
    assert_eq!(sum[0], 3);
    let mut all = vec![0u32; 6];
    w.all_gatherv(&vec![me as u32; counts[me]], &mut all, &counts)
        .unwrap();
    assert_eq!(all, [0, 1, 1, 2, 2, 2]);
}
