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

/// Soak: random sizes from 0 B to 8 MiB, random tags, any-source and
/// any-tag receives, mixed collectives, every byte checked. Short here
/// (`COURIER_SOAK_STEPS`, default 40); `scripts/soak.sh` runs it long.
#[test]
fn soak_random_traffic_and_collectives() {
    let steps = std::env::var("COURIER_SOAK_STEPS").unwrap_or_else(|_| "40".into());
    let seed = std::env::var("COURIER_SOAK_SEED").unwrap_or_else(|_| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        t.to_string()
    });
    println!("soak seed {seed} (COURIER_SOAK_SEED replays it)");
    for np in [4, 7] {
        run_body_env(
            "body_soak",
            np,
            &[("COURIER_SOAK_STEPS", &steps), ("COURIER_SOAK_SEED", &seed)],
            600,
        )
        .assert_ranks_passed(np);
    }
}

/// splitmix64: the same stream on every rank for the same inputs.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Byte `i` of the message `id` (a checksum in disguise: every byte depends
/// on the message and its position).
fn content(id: u64, i: usize) -> u8 {
    (mix(id ^ (i as u64 / 8)) >> ((i % 8) * 8)) as u8
}

/// Size of a soak message: mostly small, some medium, rarely up to 8 MiB.
fn soak_len(r: u64) -> usize {
    match r % 100 {
        0..=59 => (r >> 8) as usize % 256,
        60..=89 => (r >> 8) as usize % (64 << 10),
        90..=97 => (r >> 8) as usize % (1 << 20),
        _ => (r >> 8) as usize % (8 << 20) + 1,
    }
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_soak() {
    use courier::{Op, ANY_SOURCE, ANY_TAG};
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (p, me) = (w.size(), w.rank());
    let steps: u64 = std::env::var("COURIER_SOAK_STEPS")
        .unwrap()
        .parse()
        .unwrap();
    let seed: u64 = std::env::var("COURIER_SOAK_SEED").unwrap().parse().unwrap();
    // What rank `r` sends at `step`: (destination, tag, length) per message.
    let plan = |step: u64, r: usize| -> Vec<(usize, u16, usize)> {
        let k = mix(seed ^ (step << 20) ^ r as u64) % 6;
        (0..k)
            .map(|j| {
                let x = mix(seed ^ (step << 20) ^ ((r as u64) << 8) ^ (j + 1));
                (
                    (x % p as u64) as usize,
                    (x >> 16) as u16 % 4,
                    soak_len(mix(x)),
                )
            })
            .collect()
    };
    let mut last_seq = vec![None::<u64>; p];
    let mut seq = 0u64;
    let (mut sent, mut got) = (0u64, 0u64);
    for step in 0..steps {
        // Point-to-point round: nonblocking sends of every planned message,
        // then receives from anyone with any tag, then the sends complete.
        let mut sends = Vec::new();
        for (dest, tag, len) in plan(step, me) {
            // 16-byte header: sender, per-sender sequence; then the content.
            let id = mix(seed ^ ((me as u64) << 40) ^ seq);
            let mut msg = Vec::with_capacity(16 + len);
            msg.extend_from_slice(&(me as u64).to_le_bytes());
            msg.extend_from_slice(&seq.to_le_bytes());
            msg.extend((0..len).map(|i| content(id, i)));
            seq += 1;
            sent += 1;
            sends.push(w.isend_owned(msg, dest, u32::from(tag)).unwrap());
        }
        let expected: usize = (0..p)
            .map(|r| plan(step, r).iter().filter(|m| m.0 == me).count())
            .sum();
        for _ in 0..expected {
            let (msg, st) = w.recv_vec::<u8>(ANY_SOURCE, ANY_TAG).unwrap();
            let src = u64::from_le_bytes(msg[..8].try_into().unwrap()) as usize;
            let s = u64::from_le_bytes(msg[8..16].try_into().unwrap());
            assert_eq!(src, st.source, "header names another sender");
            assert!(
                last_seq[src].is_none_or(|l| s > l),
                "step {step}: message {s} from rank {src} overtook or repeated {:?}",
                last_seq[src]
            );
            last_seq[src] = Some(s);
            let id = mix(seed ^ ((src as u64) << 40) ^ s);
            let body = &msg[16..];
            if let Some(i) = (0..body.len()).find(|&i| body[i] != content(id, i)) {
                panic!("step {step}: byte {i} of message {s} from rank {src} corrupted");
            }
            got += 1;
        }
        for s in sends {
            s.wait().unwrap();
        }
        // Collective round, sizes drawn from the shared stream.
        let x = mix(seed ^ step.wrapping_mul(7919));
        let n = soak_len(x) / 8;
        let mine: Vec<f64> = (0..n).map(|i| (me * 3 + i % 17) as f64).collect();
        let mut sum = vec![0f64; n];
        w.all_reduce(&mine, &mut sum, Op::Sum).unwrap();
        for (i, v) in sum.iter().enumerate() {
            let want: f64 = (0..p).map(|r| (r * 3 + i % 17) as f64).sum();
            assert_eq!(*v, want, "step {step}: all_reduce element {i}");
        }
        let root = (x >> 32) as usize % p;
        let mut b: Vec<u8> = if me == root {
            (0..n).map(|i| content(x, i)).collect()
        } else {
            vec![0; n]
        };
        w.broadcast(&mut b, root).unwrap();
        assert!(
            (0..n).all(|i| b[i] == content(x, i)),
            "step {step}: broadcast"
        );
        let counts: Vec<usize> = (0..p).map(|r| (mix(x ^ r as u64) % 300) as usize).collect();
        let send: Vec<u32> = (0..p)
            .flat_map(|r| {
                (0..counts[(r + me) % p]).map(move |i| (me * 1000 + r * 10 + i % 10) as u32)
            })
            .collect();
        let send_counts: Vec<usize> = (0..p).map(|r| counts[(r + me) % p]).collect();
        let recv_counts: Vec<usize> = (0..p).map(|r| counts[(me + r) % p]).collect();
        let mut recv = vec![0u32; recv_counts.iter().sum()];
        w.all_to_allv(&send, &send_counts, &mut recv, &recv_counts)
            .unwrap();
        let mut off = 0;
        for (r, &c) in recv_counts.iter().enumerate() {
            assert!(
                (0..c).all(|i| recv[off + i] as usize == r * 1000 + me * 10 + i % 10),
                "step {step}: all_to_allv block from {r}"
            );
            off += c;
        }
        w.barrier().unwrap();
    }
    // Nothing lost or duplicated anywhere: totals agree.
    let mut totals = [0u64; 2];
    w.all_reduce(&[sent, got], &mut totals, Op::Sum).unwrap();
    assert_eq!(totals[0], totals[1], "messages sent vs received");
    println!("rank {me}: {sent} sent, {got} received, {steps} steps");
}
