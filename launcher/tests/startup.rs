//! Start-up at scale and lazy connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{rank_init, run_body, run_body_env};
use courier::{Communicator, LinkKind};

/// The link kind a same-host job uses under the current `COURIER_TRANSPORT`.
fn expected_kind() -> LinkKind {
    match std::env::var("COURIER_TRANSPORT").as_deref() {
        Ok("tcp") => LinkKind::Tcp,
        _ => LinkKind::Shm,
    }
}

/// Exchanges an empty message with each of `peers` (over links that already
/// exist), so nobody finalizes (and closes its links) before everyone got here.
fn meet(w: &Communicator, peers: &[usize], tag: u32) {
    courier::scope(|s| {
        let mut reqs = Vec::new();
        for &p in peers {
            reqs.push(w.irecv::<u8>(s, &mut [], p, tag).unwrap());
            reqs.push(w.isend::<u8>(s, &[], p, tag).unwrap());
        }
        courier::wait_all(reqs).unwrap();
    });
}

#[test]
fn sixty_four_ranks_wire_up_and_pass_a_ring() {
    run_body_env("body_ring64", 64, &[], 300).assert_ranks_passed(64);
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_ring64() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (r, n) = (w.rank(), w.size());
    assert_eq!(n, 64);
    assert_eq!(r.to_string(), std::env::var("COURIER_RANK").unwrap());
    // The cards came from the node's card store, which init closed.
    assert!(std::env::var_os("COURIER_CARD_STORE").is_some());
    assert!(
        !common::holds_card_store(),
        "rank {r} kept its card store open"
    );
    let mut token = [0u64; 2];
    if r == 0 {
        w.send(&[0u64, 1], 1, 0).unwrap();
        w.recv(&mut token, n - 1, 0).unwrap();
        // Every rank added its rank (sum 0..64) and set its bit in a count.
        assert_eq!(token, [(n * (n - 1) / 2) as u64, n as u64]);
    } else {
        w.recv(&mut token, r - 1, 0).unwrap();
        w.send(&[token[0] + r as u64, token[1] + 1], (r + 1) % n, 0)
            .unwrap();
    }
    // Only the two ring neighbours were ever linked.
    let links = u.links();
    assert!(links.len() <= 2, "rank {r}: {links:?}");
}

#[test]
fn a_rank_that_talks_to_one_peer_opens_one_link() {
    run_body("body_one_peer", 6);
    run_body_env("body_one_peer", 6, &[("COURIER_TRANSPORT", "tcp")], 120).assert_ranks_passed(6);
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_one_peer() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let r = w.rank();
    let peer = r ^ 1;
    let mut x = [0u32];
    if r % 2 == 0 {
        w.send(&[r as u32], peer, 0).unwrap();
        w.recv(&mut x, peer, 0).unwrap();
    } else {
        w.recv(&mut x, peer, 0).unwrap();
        w.send(&[r as u32], peer, 0).unwrap();
    }
    assert_eq!(x[0] as usize, peer);
    assert_eq!(
        u.links(),
        vec![(peer, expected_kind())],
        "{}",
        u.debug_report()
    );
    meet(&w, &[peer], 9);
}

#[test]
fn simultaneous_connects_leave_exactly_one_link_per_pair() {
    for _ in 0..3 {
        run_body_env(
            "body_all_pairs_at_once",
            6,
            &[("COURIER_TRANSPORT", "tcp")],
            120,
        )
        .assert_ranks_passed(6);
    }
    run_body("body_all_pairs_at_once", 6);
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_all_pairs_at_once() {
    // Every rank sends to every other at the same moment, so both ends of
    // each pair try to connect at once; the tie-break must keep one link.
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (r, n) = (w.rank(), w.size());
    let outs: Vec<Vec<u32>> = (0..n).map(|d| vec![(r * 100 + d) as u32; 1000]).collect();
    let mut ins = vec![vec![0u32; 1000]; n];
    courier::scope(|s| {
        let mut reqs = Vec::new();
        for (src, b) in ins.iter_mut().enumerate() {
            if src != r {
                reqs.push(w.irecv(s, b, src, 0).unwrap());
            }
        }
        for (d, o) in outs.iter().enumerate() {
            if d != r {
                reqs.push(w.isend(s, o, d, 0).unwrap());
            }
        }
        courier::wait_all(reqs).unwrap();
    });
    for (src, b) in ins.iter().enumerate() {
        if src != r {
            assert!(b.iter().all(|&x| x as usize == src * 100 + r));
        }
    }
    let others: Vec<usize> = (0..n).filter(|&p| p != r).collect();
    meet(&w, &others, 8);
    let links = u.links();
    let expect: Vec<_> = others.iter().map(|&p| (p, expected_kind())).collect();
    assert_eq!(links, expect, "{}", u.debug_report());
    meet(&w, &others, 9);
}

/// The kernel's count of connections dropped because a listen queue was
/// full (`TcpExt: ListenOverflows` in /proc/net/netstat), if readable.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let i = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        return values.split_whitespace().nth(i)?.parse().ok();
    }
    None
}

/// Every rank connects to the launcher at once at start-up: its listen
/// queue must hold them all (a queue of 128 overflowed from about 256
/// ranks, and each dropped connection cost its rank a second).
#[test]
fn a_512_rank_start_overflows_no_listen_queue() {
    let Some(before) = listen_overflows() else {
        eprintln!("skipped: no ListenOverflows counter in /proc/net/netstat");
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_string_lossy();
    let j = common::launch(
        &["-n", "512", "--oversubscribe", "--timeout", "300"],
        &[
            &exe,
            "--exact",
            "body_init_only",
            "--include-ignored",
            "--test-threads",
            "1",
        ],
    );
    j.assert_ranks_passed(512);
    let after = listen_overflows().unwrap();
    assert_eq!(after - before, 0, "listen queue overflows during the start");
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_init_only() {
    let Some(u) = rank_init() else { return };
    assert_eq!(u.world().size(), 512);
}
