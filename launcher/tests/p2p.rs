//! Point-to-point semantics through real multi-process jobs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{message, rank_init, run_body, run_body_env};
use courier::{Error, ANY_SOURCE, ANY_TAG};

/// Counter `name` of this rank's debug report (`name=` followed by a number).
fn counter(u: &courier::Universe, name: &str) -> u64 {
    let r = u.debug_report();
    let f = r
        .split(&format!(" {name}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name} in {r}"));
    f.split_whitespace().next().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------- drivers

#[test]
fn ring_1_to_8_ranks() {
    for np in [1, 2, 3, 4, 5, 8] {
        run_body("body_ring", np);
    }
}

#[test]
fn pingpong_mixed_sizes() {
    run_body("body_pingpong", 2);
}

#[test]
fn wildcards_any_source_any_tag() {
    run_body("body_wildcards", 5);
}

#[test]
fn ordering_thousands_of_mixed_messages() {
    run_body("body_ordering", 4);
}

/// The smallest rings (16 KiB, records of at most 4 KiB): frames split
/// across records and small frames batched into one record, both read
/// through the staged and the in-place paths.
#[test]
fn ordering_and_pingpong_through_the_smallest_rings() {
    let env = [("COURIER_SHM_BUDGET", "1"), ("COURIER_TRANSPORT", "shm")];
    run_body_env("body_ordering", 4, &env, 120).assert_ranks_passed(4);
    run_body_env("body_pingpong", 2, &env, 120).assert_ranks_passed(2);
}

#[test]
fn truncation_and_bad_arguments_are_errors() {
    run_body("body_errors", 2);
}

#[test]
fn large_64mib_message_checksum() {
    run_body("body_large", 2);
}

#[test]
fn nonblocking_ring_exchange_beyond_buffers() {
    for np in [2, 3, 8] {
        run_body("body_isend_ring", np);
    }
}

#[test]
fn synchronous_send_waits_for_the_match() {
    run_body("body_ssend", 2);
}

#[test]
fn a_receive_finished_at_once_still_answers_its_sender() {
    run_body("body_progress_after_collect", 2);
}

#[test]
fn probe_and_recv_vec() {
    run_body("body_probe", 3);
}

#[test]
fn owned_requests_wait_any_and_test() {
    run_body("body_owned", 2);
}

#[test]
fn receives_that_find_their_message_as_they_are_posted() {
    // Taken as posted only where the ranks share caches (a `close` node).
    for profile in ["close", "far"] {
        run_body_env(
            "body_taken_at_post",
            3,
            &[("COURIER_SHM_PROFILE", profile)],
            120,
        )
        .assert_ranks_passed(3);
    }
}

#[test]
fn the_same_bodies_over_tcp() {
    let tcp = [("COURIER_TRANSPORT", "tcp")];
    for (body, np) in [
        ("body_ring", 3),
        ("body_pingpong", 2),
        ("body_wildcards", 4),
        ("body_ordering", 2),
        ("body_errors", 2),
        ("body_isend_ring", 3),
        ("body_ssend", 2),
        ("body_probe", 3),
        ("body_owned", 2),
        ("body_taken_at_post", 3),
    ] {
        run_body_env(body, np, &tcp, 120).assert_ranks_passed(np);
    }
}

/// Bursts of nonblocking sends to one TCP peer go in a few writes, not
/// one per message, and every message still arrives whole and in order,
/// whatever ends the burst: a blocking receive the sender makes before it
/// waits (its peer answers only once it has them all), a barrier, a test
/// loop, owned sends; with sizes above the burst's limit and rendezvous
/// ones mixed in, and bursts to two peers interleaved. The same bodies on
/// shared memory (nothing gathered there).
#[test]
fn bursts_of_nonblocking_sends() {
    run_body_env("body_isend_bursts", 3, &[("COURIER_TRANSPORT", "tcp")], 120)
        .assert_ranks_passed(3);
    run_body("body_isend_bursts", 3);
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_isend_bursts() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    let tcp = std::env::var("COURIER_TRANSPORT").as_deref() == Ok("tcp");
    let writes = |u: &courier::Universe| counter(u, "tcp_writes");
    // Elements of u32: up to 4096 (16 KiB) a burst holds a message back;
    // 4097 and 5000 are written as posted; 70 000 (280 KiB) go by
    // rendezvous.
    let sizes = [0usize, 1, 2, 25, 300, 1024, 4096, 4097, 5000, 70_000];
    let len = |k: usize| sizes[k % sizes.len()];
    let take_all = |src: usize, tag: u32, count: usize, len: &dyn Fn(usize) -> usize| {
        let mut buf = vec![0u32; 70_000];
        for k in 0..count {
            let st = w.recv(&mut buf, src, tag).unwrap();
            let n = st.count::<u32>().unwrap();
            assert_eq!(n, len(k), "message {k} from {src} on tag {tag}");
            assert_eq!(&buf[..n], &message(src, k, n)[..], "message {k} from {src}");
        }
    };

    // 1. 100 small messages: a few writes. The burst ends with the blocking
    // receive, which rank 1 answers only once it has all of them. (The
    // link is set up first: sends posted before it is are queued, and
    // gathered, the general way.)
    let n = 100;
    if me < 2 {
        let mut hello = [0u8];
        w.sendrecv(&[1u8], 1 - me, 9, &mut hello, 1 - me, 9)
            .unwrap();
    }
    if me == 0 {
        let msgs: Vec<Vec<u32>> = (0..n).map(|k| message(0, k, 2)).collect();
        let before = writes(&u);
        courier::scope(|s| {
            let reqs: Vec<_> = msgs.iter().map(|m| w.isend(s, m, 1, 1).unwrap()).collect();
            w.recv(&mut [0u8], 1, 2).unwrap();
            let used = writes(&u) - before;
            if tcp {
                assert!(
                    used <= 8,
                    "{used} writes for {n} messages: {}",
                    u.debug_report()
                );
            }
            for r in reqs {
                r.wait().unwrap();
            }
        });
    } else if me == 1 {
        take_all(0, 1, n, &|_| 2);
        w.send(&[1u8], 0, 2).unwrap();
    }

    // 2. Mixed sizes, ended the same way.
    let n = 200;
    if me == 0 {
        let msgs: Vec<Vec<u32>> = (0..n).map(|k| message(0, k, len(k))).collect();
        courier::scope(|s| {
            let reqs: Vec<_> = msgs.iter().map(|m| w.isend(s, m, 1, 3).unwrap()).collect();
            w.recv(&mut [0u8], 1, 4).unwrap();
            for r in reqs {
                r.wait().unwrap();
            }
        });
    } else if me == 1 {
        take_all(0, 3, n, &len);
        w.send(&[1u8], 0, 4).unwrap();
    }

    // 3. Bursts to ranks 1 and 2 interleaved (runs of 1-4 messages to one
    // peer), ended by a barrier the receivers enter only once they have
    // every message.
    let n = 120;
    let to = |k: usize| 1 + (k / (1 + k % 4)) % 2;
    if me == 0 {
        let mut seq = [0usize; 3];
        let msgs: Vec<(usize, Vec<u32>)> = (0..n)
            .map(|k| {
                let p = to(k);
                let m = message(0, seq[p], len(seq[p]));
                seq[p] += 1;
                (p, m)
            })
            .collect();
        courier::scope(|s| {
            for (p, m) in &msgs {
                let _sent = w.isend(s, m, *p, 5).unwrap();
            }
            w.barrier().unwrap();
        });
    } else {
        let count = (0..n).filter(|&k| to(k) == me).count();
        take_all(0, 5, count, &len);
        w.barrier().unwrap();
    }

    // 4. A burst whose sender tests its last request until rank 1, which
    // has taken them all, says so.
    let n = 50;
    if me == 0 {
        let msgs: Vec<Vec<u32>> = (0..n).map(|k| message(0, k, len(k) % 3000)).collect();
        courier::scope(|s| {
            let mut reqs: Vec<_> = msgs.iter().map(|m| w.isend(s, m, 1, 6).unwrap()).collect();
            let mut last = reqs.pop().unwrap();
            while last.test().is_none() {}
            let mut go = [0u8];
            courier::scope(|s2| {
                let mut r = w.irecv(s2, &mut go, 1, 7).unwrap();
                while r.test().is_none() {}
            });
        });
    } else if me == 1 {
        take_all(0, 6, n, &|k| len(k) % 3000);
        w.send(&[1u8], 0, 7).unwrap();
    }

    // 5. Owned sends in a burst: waited for in reverse order after rank 1
    // has taken them all.
    let n = 40;
    if me == 0 {
        let sends: Vec<_> = (0..n)
            .map(|k| w.isend_owned(message(0, k, len(k) % 3000), 1, 8).unwrap())
            .collect();
        w.recv(&mut [0u8], 1, 9).unwrap();
        for (k, s) in sends.into_iter().enumerate().rev() {
            assert_eq!(s.wait().unwrap(), message(0, k, len(k) % 3000));
        }
    } else if me == 1 {
        take_all(0, 8, n, &|k| len(k) % 3000);
        w.send(&[1u8], 0, 9).unwrap();
    }
    w.barrier().unwrap();
}

/// Over TCP a large message sent alone goes eagerly (no RTS, CTS) while
/// the credit covers it; a window's later messages go by rendezvous. The
/// same data, statuses, order and truncation either way, and with the
/// lone eager limit off.
#[test]
fn lone_large_messages_over_tcp() {
    // The default (2 MiB), a larger limit (the credit window grows with
    // it), and none.
    for lone in ["", "4194304", "0"] {
        let env = [
            ("COURIER_TRANSPORT", "tcp"),
            ("COURIER_LONE_EAGER_LIMIT", lone),
        ];
        run_body_env("body_lone_eager", 3, &env, 120).assert_ranks_passed(3);
    }
}

/// Buffers whose addresses lie 16 bytes apart modulo the page (where
/// `memcpy`'s `rep movsb`, and the kernel's, is many times slower on AMD
/// Zen, so the runtime copies such pairs in pieces or through scratch)
/// still move every byte: point to point at every protocol's sizes, a
/// window, and collectives whose own-block copies go from the send buffer
/// into the receive buffer at that distance. On every node profile (eager
/// limits, pulls and cooperative copies differ) and over TCP.
#[test]
fn buffers_at_memcpys_slow_distance_arrive_whole() {
    for env in [
        [("COURIER_SHM_PROFILE", "close"), ("COURIER_TRANSPORT", "")],
        [("COURIER_SHM_PROFILE", "far"), ("COURIER_TRANSPORT", "")],
        [("COURIER_SHM_PROFILE", "remote"), ("COURIER_TRANSPORT", "")],
        [("COURIER_SHM_PROFILE", ""), ("COURIER_TRANSPORT", "tcp")],
    ] {
        run_body_env("body_slow_distance", 2, &env, 120).assert_ranks_passed(2);
    }
}

#[test]
fn small_eager_limit_forces_rendezvous_everywhere() {
    let small = [
        ("COURIER_EAGER_LIMIT", "64"),
        ("COURIER_SHM_EAGER_LIMIT", "64"),
        ("COURIER_LONE_EAGER_LIMIT", "0"),
    ];
    run_body_env("body_ordering", 4, &small, 120).assert_ranks_passed(4);
    let zero = [
        ("COURIER_EAGER_LIMIT", "0"),
        ("COURIER_SHM_EAGER_LIMIT", "0"),
        ("COURIER_LONE_EAGER_LIMIT", "0"),
    ];
    run_body_env("body_isend_ring", 3, &zero, 120).assert_ranks_passed(3);
}

#[test]
fn singleton_world_talks_to_itself() {
    // Not started by the launcher: a world of size 1.
    assert!(std::env::var_os("COURIER_RANK").is_none());
    let u = courier::init().unwrap();
    let w = u.world();
    assert_eq!((w.rank(), w.size()), (0, 1));
    self_messages(&w);
}

fn self_messages(w: &courier::Communicator) {
    let me = w.rank();
    w.send(&[1u8, 2, 3], me, 5).unwrap();
    let mut b = [0u8; 3];
    let st = w.recv(&mut b, me, 5).unwrap();
    assert_eq!(
        (b, st.source, st.tag, st.count::<u8>().unwrap()),
        ([1, 2, 3], me, 5, 3)
    );
    // Larger than the eager limit: rendezvous to self needs a nonblocking send.
    let big = message(me, 1, 300_000);
    let mut got = vec![0u32; big.len()];
    courier::scope(|s| {
        let r = w.isend(s, &big, me, 6).unwrap();
        w.recv(&mut got, me, 6).unwrap();
        r.wait().unwrap();
    });
    assert_eq!(got, big);
    w.send::<u64>(&[], me, 7).unwrap();
    let st = w.recv::<u64>(&mut [], me, 7).unwrap();
    assert_eq!(st.count::<u64>().unwrap(), 0);
}

// ---------------------------------------------------------------- bodies

#[test]
#[ignore = "rank body: run through courier"]
fn body_ring() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (r, n) = (w.rank(), w.size());
    let next = (r + 1) % n;
    let prev = (r + n - 1) % n;
    let mut token = [0u64; 1];
    for lap in 0..3u64 {
        if r == 0 {
            w.send(&[lap * 1000], next, 1).unwrap();
            w.recv(&mut token, prev, 1).unwrap();
            assert_eq!(token[0], lap * 1000 + (n * (n - 1) / 2) as u64);
        } else {
            w.recv(&mut token, prev, 1).unwrap();
            w.send(&[token[0] + r as u64], next, 1).unwrap();
        }
    }
    self_messages(&w);
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_pingpong() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    let mut sizes = vec![0usize, 1, 7, 64, 1000];
    // Around 2 KiB with the frame header: over TCP a message of up to 2
    // KiB in all is copied into one buffer and sent, a larger one written
    // from its two parts.
    sizes.extend([507, 508, 509]);
    sizes.extend([16_383, 16_384, 16_385, 100_000, 1 << 20]);
    for (seq, &len) in sizes.iter().enumerate() {
        let mut buf = vec![0u32; len];
        if me == 0 {
            w.send(&message(0, seq, len), 1, seq as u32).unwrap();
            let st = w.recv(&mut buf, 1, seq as u32).unwrap();
            assert_eq!((st.source, st.count::<u32>().unwrap()), (1, len));
            assert_eq!(buf, message(1, seq, len));
        } else {
            let st = w.recv(&mut buf, 0, seq as u32).unwrap();
            assert_eq!(
                (st.source, st.tag, st.count::<u32>().unwrap()),
                (0, seq as u32, len)
            );
            assert_eq!(buf, message(0, seq, len));
            w.send(&message(1, seq, len), 0, seq as u32).unwrap();
        }
    }
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_wildcards() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (me, n) = (w.rank(), w.size());
    if me == 0 {
        let mut seen = vec![0usize; n];
        for _ in 0..2 * (n - 1) {
            let mut buf = [0u32; 64];
            let st = w.recv(&mut buf, ANY_SOURCE, ANY_TAG).unwrap();
            assert_eq!(st.tag as usize, 10 * st.source + seen[st.source]);
            assert_eq!(
                &buf[..st.count::<u32>().unwrap()],
                &message(st.source, seen[st.source], st.count::<u32>().unwrap())[..]
            );
            seen[st.source] += 1;
        }
        assert!(seen[1..].iter().all(|&c| c == 2));
        w.send(&[0u8], 1, 997).unwrap();
        // Any source with a specific tag, then a specific source with any tag.
        let mut b = [0u32; 1];
        let st = w.recv(&mut b, ANY_SOURCE, 999).unwrap();
        assert_eq!((b[0], st.tag), (st.source as u32, 999));
        let st = w.recv(&mut b, 1, ANY_TAG).unwrap();
        assert_eq!((st.source, st.tag), (1, 998));
    } else {
        for k in 0..2 {
            w.send(&message(me, k, 10 + me), 0, (10 * me + k) as u32)
                .unwrap();
        }
        if me == 1 {
            w.recv(&mut [0u8], 0, 997).unwrap();
            w.send(&[me as u32], 0, 998).unwrap();
            w.send(&[me as u32], 0, 999).unwrap();
        }
    }
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_ordering() {
    // Ranks pair up (0,1), (2,3): each sender sends 3000 messages of mixed
    // sizes on two tags; the receiver takes them by tag and by ANY_TAG and
    // checks sequence numbers never go backwards per tag.
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    let count = 3000;
    let len_of = |seq: usize| match seq % 7 {
        0 => 0,
        1 => 1,
        2 => 33,
        3 => 1000,
        4 => 20_000,
        5 => 70_000,
        _ => 5,
    };
    if me % 2 == 0 && me + 1 < w.size() {
        for seq in 0..count {
            let len = len_of(seq);
            let mut m = message(me, seq, len);
            if let Some(first) = m.first_mut() {
                *first = seq as u32;
            }
            w.send(&m, me + 1, (seq % 2) as u32).unwrap();
        }
    } else if me % 2 == 1 {
        let src = me - 1;
        let mut next = [0usize, 1];
        let mut buf = vec![0u32; 70_000];
        for k in 0..count {
            let st = if k % 3 == 0 {
                w.recv(&mut buf, src, ANY_TAG).unwrap()
            } else {
                let want = if next[0] < count && (k % 2 == 0 || next[1] >= count) {
                    0
                } else {
                    1
                };
                w.recv(&mut buf, src, want as u32).unwrap()
            };
            let tag = st.tag as usize;
            let seq = next[tag];
            assert_eq!(
                st.count::<u32>().unwrap(),
                len_of(seq),
                "message {seq} on tag {tag}"
            );
            let mut expect = message(src, seq, st.count::<u32>().unwrap());
            if let Some(first) = expect.first_mut() {
                *first = seq as u32;
            }
            assert_eq!(
                &buf[..st.count::<u32>().unwrap()],
                &expect[..],
                "message {seq} on tag {tag}"
            );
            next[tag] += 2;
        }
    }
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_errors() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    // Invalid ranks and tags fail before anything moves.
    assert!(matches!(
        w.send(&[1u8], 7, 0),
        Err(Error::InvalidRank { rank: 7, size: 2 })
    ));
    assert!(matches!(
        w.recv(&mut [0u8], 2, 0),
        Err(Error::InvalidRank { .. })
    ));
    assert!(matches!(
        w.send(&[1u8], 0, u32::MAX),
        Err(Error::InvalidTag { .. })
    ));
    for (tag, len) in [(1u32, 100usize), (2, 300_000)] {
        if me == 0 {
            w.send(&message(0, tag as usize, len), 1, tag).unwrap();
        } else {
            let mut small = vec![0u32; 10];
            match w.recv(&mut small, 0, courier::ANY_TAG) {
                Err(
                    e @ Error::Truncated {
                        rank,
                        tag: t,
                        capacity,
                        incoming,
                    },
                ) => {
                    assert_eq!((rank, t, capacity, incoming), (0, tag, 40, 4 * len));
                    let text = e.to_string();
                    assert!(
                        text.contains("rank 0")
                            && text.contains(&format!("tag {tag}"))
                            && text.contains(&format!("{} bytes", 4 * len))
                            && text.contains("holds 40"),
                        "{text}"
                    );
                }
                other => panic!("expected truncation, got {other:?}"),
            }
            // The message is not lost.
            let mut big = vec![0u32; len];
            let st = w.recv(&mut big, 0, tag).unwrap();
            assert_eq!(st.count::<u32>().unwrap(), len);
            assert_eq!(big, message(0, tag as usize, len));
        }
    }
    // Truncation names the sender by its rank in the receive's communicator:
    // in `rev`, world rank 0 is rank 1.
    let rev = w.split(Some(0), -(me as i32)).unwrap().unwrap();
    if me == 0 {
        rev.send(&[7u32; 9], 0, 11).unwrap();
    } else {
        match rev.recv(&mut [0u32; 2], courier::ANY_SOURCE, 11) {
            Err(Error::Truncated { rank, tag, .. }) => assert_eq!((rank, tag), (1, 11)),
            other => panic!("expected truncation, got {other:?}"),
        }
        let st = rev.recv(&mut [0u32; 9], 1, 11).unwrap();
        assert_eq!((st.source, st.count::<u32>().unwrap()), (1, 9));
    }
    // A send's status is empty: it names no rank.
    courier::scope(|s| {
        let st = w.isend(s, &[1u8], 1 - me, 12).unwrap().wait().unwrap();
        assert!(st.is_empty());
        assert_eq!(
            (st.source, st.tag, st.bytes),
            (courier::NO_SOURCE, courier::NO_TAG, 0)
        );
        let mut b = [0u8];
        w.recv(&mut b, 1 - me, 12).unwrap();
    });
    // A probe's status counts bytes; `count::<T>()` converts, or refuses
    // a length that is not whole elements.
    if me == 0 {
        w.send(&[1u8, 2, 3, 4, 5, 6], 1, 13).unwrap();
    } else {
        let st = w.probe(0, 13).unwrap();
        assert_eq!(st.bytes, 6);
        assert_eq!(st.count::<u16>().unwrap(), 3);
        assert!(matches!(
            st.count::<u32>(),
            Err(Error::LengthMismatch {
                bytes: 6,
                elem_size: 4
            })
        ));
        w.recv(&mut [0u16; 3], 0, 13).unwrap();
    }
    // A byte length that is not a whole number of elements.
    if me == 0 {
        w.send(&[1u8, 2, 3], 1, 3).unwrap();
    } else {
        let mut b = [0u32; 4];
        assert!(matches!(
            w.recv(&mut b, 0, 3),
            Err(Error::LengthMismatch {
                bytes: 3,
                elem_size: 4
            })
        ));
    }
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_large() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let n = 64 << 20; // 64 MiB
    let fill = |v: &mut [u8]| {
        for (i, b) in v.iter_mut().enumerate() {
            *b = (i as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(17) as u8;
        }
    };
    let checksum = |v: &[u8]| {
        v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
    };
    let mut buf = vec![0u8; n];
    if w.rank() == 0 {
        fill(&mut buf);
        w.send(&buf, 1, 0).unwrap();
        let mut sum = [0u64];
        w.recv(&mut sum, 1, 1).unwrap();
        assert_eq!(sum[0], checksum(&buf));
    } else {
        let st = w.recv(&mut buf, 0, 0).unwrap();
        assert_eq!(st.count::<u8>().unwrap(), n);
        let mut expect = vec![0u8; n];
        fill(&mut expect);
        assert!(buf == expect, "64 MiB payload corrupted");
        w.send(&[checksum(&buf)], 0, 1).unwrap();
    }
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_isend_ring() {
    // Everyone isends 4 MiB right and receives from the left: completes only
    // if a rank blocked in recv keeps progressing its own send.
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (r, n) = (w.rank(), w.size());
    let len = 1 << 20;
    for round in 0..3 {
        let out = message(r, round, len);
        let mut inc = vec![0u32; len];
        courier::scope(|s| {
            let req = w.isend(s, &out, (r + 1) % n, 4).unwrap();
            let st = w.recv(&mut inc, (r + n - 1) % n, 4).unwrap();
            assert_eq!(st.count::<u32>().unwrap(), len);
            req.wait().unwrap();
        });
        assert_eq!(inc, message((r + n - 1) % n, round, len));
    }
    // sendrecv in the other direction.
    let out = message(r, 9, 1000);
    let mut inc = vec![0u32; 1000];
    w.sendrecv(&out, (r + n - 1) % n, 5, &mut inc, (r + 1) % n, 5)
        .unwrap();
    assert_eq!(inc, message((r + 1) % n, 9, 1000));
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_ssend() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    for len in [4usize, 200_000] {
        let data = message(0, len, len);
        if w.rank() == 0 {
            courier::scope(|s| {
                let mut req = w.issend(s, &data, 1, 1).unwrap();
                // Rank 1 posts no matching receive until it gets "go".
                let until = std::time::Instant::now() + std::time::Duration::from_millis(150);
                while std::time::Instant::now() < until {
                    assert!(
                        req.test().is_none(),
                        "ssend completed before the receive was posted"
                    );
                }
                w.send(&[1u8], 1, 2).unwrap();
                req.wait().unwrap();
            });
            w.ssend(&data, 1, 3).unwrap();
        } else {
            w.recv(&mut [0u8], 0, 2).unwrap();
            let mut buf = vec![0u32; len];
            w.recv(&mut buf, 0, 1).unwrap();
            assert_eq!(buf, data);
            w.recv(&mut buf, 0, 3).unwrap();
            assert_eq!(buf, data);
        }
    }
}

/// Rank 0 receives a single-copy message whose request-to-send is
/// already queued: the receive is posted, pulls and finishes at once, and
/// is collected without waiting. Rank 0 then makes no call at all until
/// rank 1 says (outside Courier, through a file) that its send returned,
/// which it can only if rank 0's FIN went out with that receive.
#[test]
#[ignore = "rank body: run through courier"]
fn body_progress_after_collect() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    // Both ranks are children of one launcher: its pid names this job.
    let flag = std::env::temp_dir().join(format!(
        "courier-progress-{}",
        std::os::unix::process::parent_id()
    ));
    // Above the shared-memory eager limit, below the cooperative split:
    // the receiver alone pulls it.
    let data = message(1, 0, 8 * 1024);
    if w.rank() == 1 {
        w.send(&data, 0, 9).unwrap();
        std::fs::write(&flag, b"sent").unwrap();
    } else {
        let _ = std::fs::remove_file(&flag);
        w.probe(1, 9).unwrap();
        let mut buf = vec![0u32; data.len()];
        courier::scope(|s| {
            let r = w.irecv(s, &mut buf, 1, 9).unwrap();
            r.wait().unwrap();
        });
        assert_eq!(buf, data);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !flag.exists() {
            assert!(
                std::time::Instant::now() < until,
                "the sender is still waiting for the receive's FIN"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::fs::remove_file(&flag).unwrap();
    }
    w.barrier().unwrap();
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_probe() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    if me == 0 {
        assert!(w.iprobe(1, 77).unwrap().is_none(), "nobody sends tag 77");
        for _ in 0..2 {
            let st = w.probe(ANY_SOURCE, 5).unwrap();
            let (v, st2) = w.recv_vec::<u32>(st.source, 5).unwrap();
            assert_eq!((st.source, st.bytes), (st2.source, st2.bytes));
            assert_eq!(v, message(st.source, 5, st.source * 50_000));
        }
        // iprobe eventually sees the tagged message without receiving it.
        let st = loop {
            if let Some(st) = w.iprobe(2, 6).unwrap() {
                break st;
            }
        };
        assert_eq!((st.source, st.tag, st.bytes), (2, 6, 8));
        let (v, _) = w.recv_vec::<u64>(2, 6).unwrap();
        assert_eq!(v, vec![42]);
    } else {
        w.send(&message(me, 5, me * 50_000), 0, 5).unwrap();
        if me == 2 {
            w.send(&[42u64], 0, 6).unwrap();
        }
    }
}

/// Nonblocking receives posted while their messages already wait in the
/// link (the receiver stays out of the runtime until the sender is done),
/// in orders that a receive may take its message at once, or must leave it
/// to one posted earlier, or to the general way: the same matches, data
/// and statuses (ranks of a communicator whose ranks are not the world's)
/// as ever; on shared memory some of them are taken as posted.
#[test]
#[ignore = "rank body: run through courier"]
fn body_taken_at_post() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    // Reversed: world rank 0 is rank 2 here, world rank 1 stays rank 1.
    let rev = w.split(Some(0), -(me as i32)).unwrap().unwrap();
    // Taken as posted: on shared memory, where the ranks share caches.
    let takes = std::env::var("COURIER_TRANSPORT").as_deref() != Ok("tcp")
        && std::env::var("COURIER_SHM_PROFILE").as_deref() == Ok("close");
    // (tag, elements) of the messages, in sending order.
    let msgs: [(u32, usize); 9] = [
        (1, 1),
        (2, 5),
        (1, 0),
        (3, 3),
        (5, 2),
        (5, 2),
        (5, 2),
        (6, 4),
        (7, 9),
    ];
    let taken = |u: &courier::Universe| counter(u, "taken_at_post");
    for round in 0..40usize {
        let mut stop = 0u8;
        if me == 0 {
            for (k, &(tag, n)) in msgs.iter().enumerate() {
                rev.send(&message(0, round * 16 + k, n), 1, tag).unwrap();
            }
            // Six bytes: not whole u32 elements for the receiver.
            rev.send(&[9u8; 6], 1, 8).unwrap();
            w.recv(&mut [0u8; 1], 1, 99).unwrap();
        } else if me == 1 {
            // Out of the runtime while the messages arrive.
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut bufs: Vec<Vec<u32>> = vec![vec![0; 9]; msgs.len()];
            let mut odd = [0u32; 2];
            let (statuses, odd_outcome) = courier::scope(|s| {
                let mut it = bufs.iter_mut();
                let mut next = || it.next().unwrap().as_mut_slice();
                let mut reqs = vec![
                    // Any tag: the first message.
                    rev.irecv(s, next(), 2, ANY_TAG).unwrap(),
                    rev.irecv(s, next(), 2, 2).unwrap(),
                    // Tag 3 is behind a tag-1 message: posted, and the
                    // next receive (tag 1) must not go before it...
                    rev.irecv(s, next(), 2, 3).unwrap(),
                    // ...yet takes the tag-1 message.
                    rev.irecv(s, next(), 2, 1).unwrap(),
                    rev.irecv(s, next(), 2, 5).unwrap(),
                    rev.irecv(s, next(), 2, 5).unwrap(),
                    rev.irecv(s, next(), 2, 5).unwrap(),
                    rev.irecv(s, next(), 2, ANY_TAG).unwrap(),
                    rev.irecv(s, next(), 2, 7).unwrap(),
                ];
                let odd_req = rev.irecv(s, &mut odd, 2, 8).unwrap();
                // wait_any hands out every request once, finished ones
                // first.
                let first = courier::wait_any(&mut reqs).unwrap();
                let mut rest = courier::wait_all(reqs).unwrap();
                rest.insert(first.0, first.1.unwrap());
                (rest, odd_req.wait())
            });
            // Receive k got message `want[k]` (indices into msgs).
            let want = [0usize, 1, 3, 2, 4, 5, 6, 7, 8];
            for (k, (st, buf)) in statuses.iter().zip(&bufs).enumerate() {
                let (tag, n) = msgs[want[k]];
                assert_eq!(
                    (st.source, st.tag, st.count::<u32>().unwrap()),
                    (2, tag, n),
                    "round {round}, receive {k}"
                );
                assert_eq!(buf[..n], message(0, round * 16 + want[k], n)[..]);
            }
            match odd_outcome {
                Err(Error::LengthMismatch {
                    bytes: 6,
                    elem_size: 4,
                }) => {}
                other => panic!("expected a length mismatch, got {other:?}"),
            }
            w.send(&[1u8], 0, 99).unwrap();
            if round >= 3 && (!takes || taken(&u) > 0) {
                stop = 1;
            }
        }
        // Rank 2 only joins the split; rank 1 tells the others when to stop.
        let mut any = [0u8];
        w.all_reduce(&[stop], &mut any, courier::Op::Max).unwrap();
        if any[0] == 1 {
            break;
        }
        assert!(
            round < 39,
            "no receive was taken as posted: {}",
            u.debug_report()
        );
    }
    if me == 1 {
        assert_eq!(taken(&u) > 0, takes, "{}", u.debug_report());
    }
}

/// Ranks 0 and 2 send large messages to rank 1 over TCP: alone (ping-pong,
/// unexpected, overtaken by a later tag, truncated, from any source) and in
/// a window, checking data, statuses and order, and how each went (the
/// engine's counters in the debug report).
#[test]
#[ignore = "rank body: run through courier"]
fn body_lone_eager() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    let limit: usize = match std::env::var("COURIER_LONE_EAGER_LIMIT").as_deref() {
        Ok("") | Err(_) => 2 << 20,
        Ok(v) => v.parse().unwrap(),
    };
    let lone = limit > 0;
    let counts = |u: &courier::Universe| (counter(u, "eager_sent"), counter(u, "rendezvous_sent"));
    // Ping-pong, 0 ↔ 1: above the eager limit (64 KiB) up to 4 MiB,
    // each side of the default lone limit (2 MiB).
    let sizes = [16_385usize, 262_144, 1 << 19, 1 << 20];
    let before = counts(&u);
    for (k, &n) in sizes.iter().enumerate() {
        let mut buf = vec![0u32; n];
        if me == 0 {
            w.send(&message(0, k, n), 1, 1).unwrap();
            let st = w.recv(&mut buf, 1, 1).unwrap();
            assert_eq!(st.count::<u32>().unwrap(), n);
            assert_eq!(buf, message(1, k, n), "echo of {n} elements");
        } else if me == 1 {
            let st = w.recv(&mut buf, 0, 1).unwrap();
            assert_eq!((st.source, st.count::<u32>().unwrap()), (0, n));
            assert_eq!(buf, message(0, k, n), "{n} elements");
            w.send(&message(1, k, n), 0, 1).unwrap();
        }
    }
    let after = counts(&u);
    if me < 2 {
        let (eager, rdv) = (after.0 - before.0, after.1 - before.1);
        // Above the eager limit (64 KiB) all of them; eager those the
        // lone limit covers.
        let covered = sizes.iter().filter(|&&n| 4 * n <= limit).count() as u64;
        let want = (covered, sizes.len() as u64 - covered);
        assert_eq!((eager, rdv), want, "rank {me}: {}", u.debug_report());
    }
    w.barrier().unwrap();
    // A 1 MiB ping-pong whose receives are posted before the messages
    // arrive: the credit rank 1 owes for each message (a quarter of the
    // window or more) goes in the same write as its answer, never in a
    // write of its own.
    let alone = |u: &courier::Universe| counter(u, "credit_alone_writes");
    let n = 1 << 18;
    let before = alone(&u);
    for k in 0..6 {
        let mut buf = vec![0u32; n];
        if me == 0 {
            courier::scope(|s| {
                let r = w.irecv(s, &mut buf, 1, 3).unwrap();
                let mut go = [0u8];
                w.recv(&mut go, 1, 4).unwrap();
                w.send(&message(0, k, n), 1, 3).unwrap();
                r.wait().unwrap();
            });
            assert_eq!(buf, message(1, k, n), "answer {k}");
        } else if me == 1 {
            courier::scope(|s| {
                let r = w.irecv(s, &mut buf, 0, 3).unwrap();
                w.send(&[1u8], 0, 4).unwrap();
                r.wait().unwrap();
            });
            assert_eq!(buf, message(0, k, n), "message {k}");
            w.send(&message(1, k, n), 0, 3).unwrap();
        }
    }
    if me == 1 {
        assert_eq!(alone(&u), before, "{}", u.debug_report());
    }
    w.barrier().unwrap();
    // Unexpected, and overtaken by a later tag; then truncated: the
    // message stays for the next receive.
    let n = 1 << 18;
    if me == 0 {
        let big = message(0, 10, n);
        courier::scope(|s| {
            let r = w.isend(s, &big, 1, 10).unwrap();
            w.send(&[5u32; 2], 1, 11).unwrap();
            r.wait().unwrap();
        });
        w.send(&message(0, 12, n), 1, 12).unwrap();
    } else if me == 1 {
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut small = [0u32; 2];
        let st = w.recv(&mut small, 0, 11).unwrap();
        assert_eq!((st.tag, small), (11, [5, 5]));
        let mut buf = vec![0u32; n];
        w.recv(&mut buf, 0, 10).unwrap();
        assert_eq!(buf, message(0, 10, n));
        let mut short = vec![0u32; n - 1];
        match w.recv(&mut short, 0, 12) {
            Err(Error::Truncated {
                rank: 0,
                tag: 12,
                incoming,
                ..
            }) => assert_eq!(incoming, 4 * n),
            other => panic!("expected truncation, got {other:?}"),
        }
        let st = w.recv(&mut buf, 0, 12).unwrap();
        assert_eq!(st.count::<u32>().unwrap(), n);
        assert_eq!(buf, message(0, 12, n));
    }
    // A window of 48 messages of 256 KiB to a receiver that posts late: the
    // credit cannot cover them all, so some go by rendezvous, none waits.
    let (n, count) = (1usize << 16, 48);
    let before = counts(&u);
    if me == 0 {
        let msgs: Vec<Vec<u32>> = (0..count).map(|k| message(0, 100 + k, n)).collect();
        courier::scope(|s| {
            let reqs: Vec<_> = msgs.iter().map(|m| w.isend(s, m, 1, 20).unwrap()).collect();
            courier::wait_all(reqs).unwrap();
        });
        let (eager, rdv) = (counts(&u).0 - before.0, counts(&u).1 - before.1);
        assert_eq!(eager + rdv, count as u64);
        assert!(
            rdv > 0 && (eager > 0) == lone,
            "eager {eager}, rendezvous {rdv}"
        );
    } else if me == 1 {
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut bufs = vec![vec![0u32; n]; count];
        courier::scope(|s| {
            let reqs: Vec<_> = bufs
                .iter_mut()
                .map(|b| w.irecv(s, b.as_mut_slice(), 0, 20).unwrap())
                .collect();
            courier::wait_all(reqs).unwrap();
        });
        for (k, b) in bufs.iter().enumerate() {
            assert_eq!(b[..], message(0, 100 + k, n)[..], "window message {k}");
        }
    }
    // From any source: ranks 0 and 2 each send 2 MiB alone.
    let n = 1 << 19;
    if me == 1 {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let mut buf = vec![0u32; n];
            let st = w.recv(&mut buf, ANY_SOURCE, 30).unwrap();
            assert_eq!(buf, message(st.source, 30, n), "from {}", st.source);
            seen.push(st.source);
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 2]);
    } else {
        w.send(&message(me, 30, n), 1, 30).unwrap();
    }
    w.barrier().unwrap();
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_owned() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    let peer = 1 - me;
    let sizes = [10usize, 100_000, 1000];
    // Owned receives posted first, owned sends second.
    let recvs: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| w.irecv_owned(vec![0u32; n], peer, k as u32).unwrap())
        .collect();
    let sends: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| w.isend_owned(message(me, k, n), peer, k as u32).unwrap())
        .collect();
    for (k, s) in sends.into_iter().enumerate() {
        assert_eq!(s.wait().unwrap(), message(me, k, sizes[k]));
    }
    for (k, r) in recvs.into_iter().enumerate() {
        let (v, st) = r.wait().unwrap();
        assert_eq!(
            (st.source, st.tag as usize, st.count::<u32>().unwrap()),
            (peer, k, sizes[k])
        );
        assert_eq!(v, message(peer, k, sizes[k]));
    }
    // wait_any over borrowed requests returns each exactly once.
    let mut bufs = vec![vec![0u32; 500]; 4];
    let outs: Vec<Vec<u32>> = (0..4).map(|k| message(me, 10 + k, 500)).collect();
    courier::scope(|s| {
        let mut reqs = Vec::new();
        for (k, b) in bufs.iter_mut().enumerate() {
            reqs.push(w.irecv(s, b, peer, 10 + k as u32).unwrap());
        }
        for (k, o) in outs.iter().enumerate().rev() {
            w.send(o, peer, 10 + k as u32).unwrap();
        }
        let mut seen = 0;
        while let Some((_, st)) = courier::wait_any(&mut reqs) {
            st.unwrap();
            seen += 1;
        }
        assert_eq!(seen, 4);
    });
    for (k, b) in bufs.iter().enumerate() {
        assert_eq!(b, &message(peer, 10 + k, 500));
    }
}

/// The slice of `buf` of `len` bytes that starts at page offset `at`.
fn at_page_offset(buf: &mut [u8], at: usize, len: usize) -> &mut [u8] {
    let start = (at + 4096 - buf.as_ptr() as usize % 4096) % 4096;
    &mut buf[start..start + len]
}

/// Bytes of message `seq` from `src`, `len` long.
fn bytes(src: usize, seq: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) ^ seq.wrapping_mul(17) ^ src.wrapping_mul(7)) as u8)
        .collect()
}

/// See `buffers_at_memcpys_slow_distance_arrive_whole`: rank 0's buffers
/// start at page offset 0, rank 1's at 16 (a receive there lies 16 bytes
/// past the sender's buffer modulo the page), and rank 0 receives the
/// echo at 32.
#[test]
#[ignore = "rank body: run through courier"]
fn body_slow_distance() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let me = w.rank();
    let peer = 1 - me;
    let sizes = [2049usize, 4096, 40_000, 65_536, 200_000, 1 << 20, 3 << 20];
    let mut out_mem = vec![0u8; (3 << 20) + 8192];
    let mut in_mem = vec![0u8; (3 << 20) + 8192];
    for (k, &n) in sizes.iter().enumerate() {
        let out = at_page_offset(&mut out_mem, 16 * me, n);
        out.copy_from_slice(&bytes(me, k, n));
        let inb = at_page_offset(&mut in_mem, if me == 0 { 32 } else { 16 }, n);
        if me == 0 {
            w.send(&*out, 1, k as u32).unwrap();
            w.recv(inb, 1, k as u32).unwrap();
        } else {
            w.recv(inb, 0, k as u32).unwrap();
            w.send(&*out, 0, k as u32).unwrap();
        }
        assert!(inb == bytes(peer, k, n).as_slice(), "{n} bytes from {peer}");
    }
    // A window of 8 messages of 64 KiB each way, at the same distances.
    let n = 65_536;
    let mut outs = vec![0u8; 8 * n + 4096];
    let mut ins = vec![0u8; 8 * n + 4096];
    let out = at_page_offset(&mut outs, 16 * me, 8 * n);
    for (k, c) in out.chunks_mut(n).enumerate() {
        c.copy_from_slice(&bytes(me, 100 + k, n));
    }
    let inb = at_page_offset(&mut ins, 16 + 16 * me, 8 * n);
    courier::scope(|s| {
        let mut reqs = Vec::new();
        for (k, c) in inb.chunks_mut(n).enumerate() {
            reqs.push(w.irecv(s, c, peer, 100 + k as u32).unwrap());
        }
        for (k, c) in out.chunks(n).enumerate() {
            reqs.push(w.isend(s, c, peer, 100 + k as u32).unwrap());
        }
        courier::wait_all(reqs).unwrap();
    });
    for (k, c) in inb.chunks(n).enumerate() {
        assert!(
            c == bytes(peer, 100 + k, n).as_slice(),
            "window message {k}"
        );
    }
    // Collectives: each rank's receive buffer lies 16 bytes past its send
    // buffer modulo the page (as two equal vectors allocated in a row do).
    for block in [4096usize, 32_768, 262_144] {
        let mut send_mem = vec![0u8; 2 * block + 4096];
        let mut recv_mem = vec![0u8; 2 * block + 4096];
        let send = at_page_offset(&mut send_mem, 0, 2 * block);
        let recv = at_page_offset(&mut recv_mem, 16, 2 * block);
        send.copy_from_slice(&bytes(me, block, 2 * block));
        w.all_gather(&send[..block], recv).unwrap();
        for r in 0..2 {
            assert!(
                recv[r * block..(r + 1) * block] == bytes(r, block, 2 * block)[..block],
                "all-gather of {block}-byte blocks, rank {r}'s"
            );
        }
        w.all_to_all(&*send, recv).unwrap();
        for r in 0..2 {
            assert!(
                recv[r * block..(r + 1) * block]
                    == bytes(r, block, 2 * block)[me * block..(me + 1) * block],
                "all-to-all of {block}-byte blocks, from rank {r}"
            );
        }
        let b = at_page_offset(&mut recv_mem, 16 * me, 2 * block);
        if me == 0 {
            b.copy_from_slice(&bytes(9, block, 2 * block));
        }
        w.broadcast(b, 0).unwrap();
        assert!(
            b == bytes(9, block, 2 * block).as_slice(),
            "broadcast of {}",
            2 * block
        );
    }
}
