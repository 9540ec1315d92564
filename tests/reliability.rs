//! Load and flow control: a flood of small messages to a slow receiver stays
//! within a memory bound, on shared memory and on TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{rank_init, run_body_env};

/// Messages in the flood.
const FLOOD: u64 = 1_000_000;
/// Allowed growth of peak RSS over the baseline, per rank.
const RSS_BOUND: u64 = 64 << 20;

/// Peak resident set size of this process, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_flood_of_small_messages_to_a_sleeping_receiver_stays_bounded() {
    for transport in ["shm", "tcp"] {
        run_body_env("body_flood", 2, &[("COURIER_TRANSPORT", transport)], 300)
            .assert_ranks_passed(2);
    }
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_flood() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    // Warm up both directions so links and pools exist in the baseline.
    let mut x = [0u64; 2];
    w.sendrecv(&[1u64, 2], 1 - w.rank(), 0, &mut x, 1 - w.rank(), 0)
        .unwrap();
    let base = peak_rss();
    if w.rank() == 0 {
        for i in 0..FLOOD {
            w.send(&[i, !i], 1, 7).unwrap();
        }
    } else {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let mut m = [0u64; 2];
        for i in 0..FLOOD {
            w.recv(&mut m, 0, 7).unwrap();
            assert_eq!(m, [i, !i], "message {i} lost, duplicated or reordered");
        }
    }
    w.barrier().unwrap();
    let grew = peak_rss().saturating_sub(base);
    println!("rank {}: peak RSS grew by {} KiB", w.rank(), grew >> 10);
    assert!(
        grew < RSS_BOUND,
        "rank {}: peak RSS grew by {} MiB during the flood",
        w.rank(),
        grew >> 20
    );
}
