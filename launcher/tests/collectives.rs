//! Collectives and communicators through real jobs of 1 to 9 ranks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{rank_init, run_body_env};
use courier::{Communicator, Error, Op, ANY_SOURCE, ANY_TAG};

#[test]
fn every_collective_on_1_to_9_ranks() {
    for np in 1..=9 {
        run_body_env("body_collectives", np, &[], 180).assert_ranks_passed(np);
    }
}

/// Two ranks take different defaults on a node that copies faster than it
/// pulls (`close`: the arena up to megabytes) and on one that does not
/// (`far`; `remote` also pulls point-to-point messages from 8 KiB); which
/// one this machine is depends on where its cores sit, so each is forced
/// here.
#[test]
fn every_collective_on_a_close_a_far_and_a_remote_node() {
    for profile in ["close", "far", "remote"] {
        run_body_env(
            "body_collectives",
            2,
            &[("COURIER_SHM_PROFILE", profile)],
            180,
        )
        .assert_ranks_passed(2);
    }
}

/// Every algorithm of every collective, forced through its environment
/// variable, on power-of-two and other sizes (2 ranks: the algorithms'
/// two-rank shapes, such as the split of a broadcast by pulls).
#[test]
fn every_algorithm_forced() {
    let forced: &[(&str, &[&str])] = &[
        ("COURIER_BARRIER_ALGORITHM", &["dissemination", "shm"]),
        (
            "COURIER_BCAST_ALGORITHM",
            &["binomial", "scatter_allgather", "shm", "shm_pull"],
        ),
        (
            "COURIER_REDUCE_ALGORITHM",
            &["binomial", "rabenseifner", "shm", "shm_pull"],
        ),
        (
            "COURIER_ALLREDUCE_ALGORITHM",
            &[
                "recursive_doubling",
                "rabenseifner",
                "ring",
                "reduce_bcast",
                "shm",
                "shm_pull",
                "shm_root",
            ],
        ),
        (
            "COURIER_ALLGATHER_ALGORITHM",
            &["ring", "recursive_doubling", "bruck", "shm", "shm_pull"],
        ),
        (
            "COURIER_ALLTOALL_ALGORITHM",
            &["pairwise", "bruck", "shm", "shm_pull"],
        ),
        (
            "COURIER_REDUCE_SCATTER_ALGORITHM",
            &["ring", "reduce_scatterv"],
        ),
        ("COURIER_SCAN_ALGORITHM", &["recursive_doubling", "chain"]),
    ];
    for (var, algs) in forced {
        for alg in *algs {
            for np in [2, 3, 4] {
                run_body_env("body_collectives", np, &[(var, alg)], 180).assert_ranks_passed(np);
            }
        }
    }
}

#[test]
fn an_unknown_algorithm_name_is_an_error() {
    let job = run_body_env(
        "body_bad_algorithm",
        2,
        &[("COURIER_ALLREDUCE_ALGORITHM", "fastest")],
        60,
    );
    job.assert_ranks_passed(2);
}

#[test]
fn collectives_over_tcp_and_without_cma() {
    run_body_env("body_collectives", 5, &[("COURIER_TRANSPORT", "tcp")], 180)
        .assert_ranks_passed(5);
    run_body_env("body_collectives", 4, &[("COURIER_CMA", "0")], 180).assert_ranks_passed(4);
    // The single-copy broadcast, reductions, all-gather and all-to-all
    // forced without cross-memory attach: every rank reports a refused
    // pull and all take the arena's copying way together.
    let env = [
        ("COURIER_CMA", "0"),
        ("COURIER_BCAST_ALGORITHM", "shm_pull"),
        ("COURIER_REDUCE_ALGORITHM", "shm_pull"),
        ("COURIER_ALLREDUCE_ALGORITHM", "shm_pull"),
        ("COURIER_ALLGATHER_ALGORITHM", "shm_pull"),
        ("COURIER_ALLTOALL_ALGORITHM", "shm_pull"),
    ];
    run_body_env("body_collectives", 3, &env, 180).assert_ranks_passed(3);
}

/// The node's arena with its smallest cells (1 KiB) and no size limit:
/// every collective that goes through it takes many turns; without large
/// cells, and with large cells of 2 KiB (operations of more than 4 KiB
/// per rank go there, in many turns too).
#[test]
fn collectives_through_the_smallest_arena_cells() {
    for large in ["0", "2048"] {
        let env = [
            ("COURIER_SHM_COLL_SLOT", "1024"),
            ("COURIER_SHM_COLL_LARGE", large),
            ("COURIER_SHM_COLL_MAX", "1000000000"),
        ];
        for np in [2, 3, 4] {
            run_body_env("body_collectives", np, &env, 180).assert_ranks_passed(np);
        }
    }
    // The all-reduce through rank 0 (a reduce, then a broadcast) in many
    // turns too.
    let root = [
        ("COURIER_SHM_COLL_SLOT", "1024"),
        ("COURIER_ALLREDUCE_ALGORITHM", "shm_root"),
    ];
    run_body_env("body_collectives", 3, &root, 180).assert_ranks_passed(3);
}

/// Two "nodes" on this machine (two host entries that are both local get
/// distinct node ids): shared memory inside each, TCP across, and the
/// node-aware all-reduce (reduce in the node, all-reduce among leaders,
/// broadcast in the node) under every collective check.
#[test]
fn collectives_across_two_nodes_of_one_machine() {
    let exe = std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for hosts in ["localhost:3,127.0.0.1:2", "localhost:2,127.0.0.1:2"] {
        let np = if hosts.ends_with(":2") && hosts.starts_with("localhost:3") {
            "5"
        } else {
            "4"
        };
        let j = common::launch(
            &["-n", np, "--host", hosts, "--timeout", "180"],
            &[
                &exe,
                "--exact",
                "body_collectives",
                "--include-ignored",
                "--nocapture",
            ],
        );
        j.assert_ranks_passed(np.parse().unwrap());
        assert_eq!(j.stdout.matches(" on node 1 (").count(), 2, "{}", j.stdout);
    }
}

#[test]
fn communicators_dup_split_and_isolation() {
    for np in [1, 2, 5, 8] {
        run_body_env("body_communicators", np, &[], 180).assert_ranks_passed(np);
    }
}

/// Value `i` of rank `r`'s contribution: small integers, so float sums are exact.
fn val(r: usize, i: usize) -> i64 {
    ((r * 31 + i * 7) % 101) as i64 - 50
}

fn check_everything(w: &Communicator) {
    let (p, me) = (w.size(), w.rank());
    w.barrier().unwrap();
    for count in [0usize, 1, 7, 100_000] {
        for root in 0..p {
            // broadcast
            let mut b: Vec<i64> = if me == root {
                (0..count).map(|i| val(root, i)).collect()
            } else {
                vec![0; count]
            };
            w.broadcast(&mut b, root).unwrap();
            assert!(
                b.iter().enumerate().all(|(i, &x)| x == val(root, i)),
                "bcast count {count} root {root}"
            );
            // reduce (sum and max) to root
            let mine: Vec<i64> = (0..count).map(|i| val(me, i)).collect();
            let mut out = vec![0i64; if me == root { count } else { 0 }];
            w.reduce(&mine, &mut out, Op::Sum, root).unwrap();
            if me == root {
                assert!(out
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == (0..p).map(|r| val(r, i)).sum::<i64>()));
            }
            let mut out = vec![0i64; if me == root { count } else { 0 }];
            w.reduce(&mine, &mut out, Op::Max, root).unwrap();
            if me == root {
                assert!(out
                    .iter()
                    .enumerate()
                    .all(|(i, &x)| x == (0..p).map(|r| val(r, i)).max().unwrap()));
            }
            // gather / scatter
            let mut g = vec![0i64; if me == root { count * p } else { 0 }];
            w.gather(&mine, &mut g, root).unwrap();
            if me == root {
                for r in 0..p {
                    assert!((0..count).all(|i| g[r * count + i] == val(r, i)));
                }
            }
            let all: Vec<i64> = if me == root {
                (0..p * count).map(|k| val(k / count.max(1), k)).collect()
            } else {
                vec![]
            };
            let mut s = vec![0i64; count];
            w.scatter(&all, &mut s, root).unwrap();
            assert!((0..count).all(|i| s[i] == val(me, me * count + i)));
        }
        // all_reduce on floats: exact values, and bit-identical on every rank
        let mine: Vec<f64> = (0..count).map(|i| val(me, i) as f64 * 0.5).collect();
        let mut sum = vec![0f64; count];
        w.all_reduce(&mine, &mut sum, Op::Sum).unwrap();
        for (i, x) in sum.iter().enumerate() {
            assert_eq!(*x, (0..p).map(|r| val(r, i) as f64 * 0.5).sum::<f64>());
        }
        let bits: Vec<u64> = sum.iter().map(|x| x.to_bits()).collect();
        let mut all_bits = vec![0u64; count * p];
        w.all_gather(&bits, &mut all_bits).unwrap();
        for r in 0..p {
            assert_eq!(
                &all_bits[r * count..(r + 1) * count],
                &bits[..],
                "rank {r} got other bits"
            );
        }
        // all_gather
        let mine: Vec<i64> = (0..count).map(|i| val(me, i)).collect();
        let mut ag = vec![0i64; count * p];
        w.all_gather(&mine, &mut ag).unwrap();
        for r in 0..p {
            assert!((0..count).all(|i| ag[r * count + i] == val(r, i)));
        }
        // all_to_all: block r from rank s is val(s * 1000 + r, i)
        let blk = count.min(1000);
        let send: Vec<i64> = (0..p * blk)
            .map(|k| val(me * 1000 + k / blk.max(1), k % blk.max(1)))
            .collect();
        let mut recv = vec![0i64; p * blk];
        w.all_to_all(&send, &mut recv).unwrap();
        for s in 0..p {
            assert!((0..blk).all(|i| recv[s * blk + i] == val(s * 1000 + me, i)));
        }
    }
    // A non-commutative user operation (decimal concatenation) keeps rank order.
    let mut order = [0u64];
    let mut place = |a: &mut [u64], b: &[u64]| {
        // Concatenate decimal strings: a then b, element by element.
        for (x, &y) in a.iter_mut().zip(b) {
            let shift = if y == 0 {
                10
            } else {
                10u64.pow(y.ilog10() + 1)
            };
            *x = *x * shift + y;
        }
        Ok(())
    };
    let start = [me as u64 + 1];
    w.all_reduce_with(&start, &mut order, false, &mut place)
        .unwrap();
    let expect: String = (1..=p).map(|d| d.to_string()).collect();
    assert_eq!(order[0].to_string(), expect, "rank order broken");
    for root in 0..p {
        let mut at_root = [0u64];
        w.reduce_with(&start, &mut at_root, root, false, &mut place)
            .unwrap();
        if me == root {
            assert_eq!(at_root[0].to_string(), expect, "reduce order broken");
        }
    }
    let mut prefix = [0u64];
    w.scan_with(&start, &mut prefix, &mut place).unwrap();
    let upto: String = (1..=me + 1).map(|d| d.to_string()).collect();
    assert_eq!(prefix[0].to_string(), upto, "scan order broken");
    let mut rs_order = [0u64];
    w.reduce_scatter_v_with(
        &vec![me as u64 + 1; p],
        &mut rs_order,
        &vec![1; p],
        false,
        &mut place,
    )
    .unwrap();
    assert_eq!(
        rs_order[0].to_string(),
        expect,
        "reduce_scatter order broken"
    );
    // v-variants: rank r contributes r % 3 + 1 elements (and 0 for the last rank).
    let counts: Vec<usize> = (0..p)
        .map(|r| if r + 1 == p && p > 1 { 0 } else { r % 3 + 1 })
        .collect();
    let displs: Vec<usize> = counts
        .iter()
        .scan(0, |acc, &n| {
            let d = *acc;
            *acc += n;
            Some(d)
        })
        .collect();
    let total: usize = counts.iter().sum();
    let mine: Vec<i64> = (0..counts[me]).map(|i| val(me, 500 + i)).collect();
    for root in 0..p {
        let mut g = vec![0i64; if me == root { total } else { 0 }];
        w.gatherv(&mine, &mut g, &counts, root).unwrap();
        if me == root {
            for r in 0..p {
                assert!((0..counts[r]).all(|i| g[displs[r] + i] == val(r, 500 + i)));
            }
        }
        let all: Vec<i64> = if me == root {
            (0..total).map(|k| val(9, k)).collect()
        } else {
            vec![]
        };
        let mut s = vec![0i64; counts[me]];
        w.scatterv(&all, &counts, &mut s, root).unwrap();
        assert!((0..counts[me]).all(|i| s[i] == val(9, displs[me] + i)));
    }
    let mut agv = vec![0i64; total];
    w.all_gatherv(&mine, &mut agv, &counts).unwrap();
    for r in 0..p {
        assert!((0..counts[r]).all(|i| agv[displs[r] + i] == val(r, 500 + i)));
    }
    // all_to_allv: rank s sends (s + r) % 4 elements to rank r.
    let sc: Vec<usize> = (0..p).map(|r| (me + r) % 4).collect();
    let rc: Vec<usize> = (0..p).map(|s| (s + me) % 4).collect();
    let send: Vec<i64> = (0..p)
        .flat_map(|r| (0..sc[r]).map(move |i| val(me * 100 + r, i)))
        .collect();
    let mut recv = vec![0i64; rc.iter().sum()];
    w.all_to_allv(&send, &sc, &mut recv, &rc).unwrap();
    let mut off = 0;
    for (s, &n) in rc.iter().enumerate() {
        assert!((0..n).all(|i| recv[off + i] == val(s * 100 + me, i)));
        off += n;
    }
    assert!(
        matches!(
            w.all_gatherv(&mine, &mut agv, &counts[..p - 1]),
            Err(Error::InvalidArgument(_))
        ) || p == 1
    );
    // min-loc / max-loc: who holds the extreme value (ties: the lower rank).
    let v = ((me * 7) % 5) as f64;
    let mut lo = [courier::LocF64::default()];
    let mine_lo = [courier::LocF64 {
        value: v,
        index: me as i64,
    }];
    w.all_reduce(&mine_lo, &mut lo, Op::MinLoc).unwrap();
    let best = (0..p)
        .map(|r| (((r * 7) % 5) as f64, r))
        .fold((f64::MAX, 0), |a, b| if b.0 < a.0 { b } else { a });
    assert_eq!((lo[0].value, lo[0].index as usize), best);
    let mut hi = [courier::LocI32::default()];
    let mine_hi = [courier::LocI32 {
        value: (me % 3) as i32,
        index: me as i32,
    }];
    w.all_reduce(&mine_hi, &mut hi, Op::MaxLoc).unwrap();
    let top = (0..p).map(|r| (r % 3) as i32).max().unwrap();
    assert_eq!(hi[0].value, top);
    assert_eq!(
        hi[0].index as usize,
        (0..p).find(|r| (r % 3) as i32 == top).unwrap()
    );
    // in place
    let mut inplace = vec![me as u32; 3];
    w.all_reduce_in_place(&mut inplace, Op::Sum).unwrap();
    assert_eq!(inplace, vec![(p * (p - 1) / 2) as u32; 3]);
    // scan, exscan, reduce_scatter
    let mine: Vec<i64> = (0..5).map(|i| val(me, i)).collect();
    let mut sc = vec![0i64; 5];
    w.scan(&mine, &mut sc, Op::Sum).unwrap();
    assert!((0..5).all(|i| sc[i] == (0..=me).map(|r| val(r, i)).sum::<i64>()));
    let mut ex = vec![-7i64; 5];
    w.exscan(&mine, &mut ex, Op::Sum).unwrap();
    if me == 0 {
        assert_eq!(ex, vec![-7; 5], "exscan leaves rank 0 untouched");
    } else {
        assert!((0..5).all(|i| ex[i] == (0..me).map(|r| val(r, i)).sum::<i64>()));
    }
    let mut concat = [0u64];
    w.scan(&[me as u64 + 1], &mut concat, Op::Sum).unwrap();
    assert_eq!(concat[0] as usize, (me + 1) * (me + 2) / 2);
    let send: Vec<i64> = (0..3 * p).map(|k| val(me, k)).collect();
    let mut rs = vec![0i64; 3];
    w.reduce_scatter(&send, &mut rs, Op::Max).unwrap();
    assert!((0..3).all(|i| rs[i] == (0..p).map(|r| val(r, me * 3 + i)).max().unwrap()));
    // reduce_scatter_v: rank r gets (r * 5) % 7 elements, some none; large
    // blocks go beyond the eager limits.
    for scale in [1usize, 20_000] {
        let counts: Vec<usize> = (0..p).map(|r| (r * 5) % 7 * scale).collect();
        let offs: Vec<usize> = (0..p).map(|r| counts[..r].iter().sum()).collect();
        let total: usize = counts.iter().sum();
        let send: Vec<i64> = (0..total).map(|k| val(me, k)).collect();
        let mut mine = vec![0i64; counts[me]];
        w.reduce_scatter_v(&send, &mut mine, &counts, Op::Sum)
            .unwrap();
        assert!(
            (0..counts[me]).all(|i| mine[i] == (0..p).map(|r| val(r, offs[me] + i)).sum::<i64>())
        );
    }
    // In-place variants.
    for root in 0..p {
        let mut buf: Vec<i64> = (0..4).map(|i| val(me, i)).collect();
        w.reduce_in_place(&mut buf, Op::Sum, root).unwrap();
        let want: Vec<i64> = (0..4)
            .map(|i| {
                if me == root {
                    (0..p).map(|r| val(r, i)).sum()
                } else {
                    val(me, i)
                }
            })
            .collect();
        assert_eq!(buf, want);
    }
    let mut ag = vec![0u16; 3 * p];
    ag[3 * me..3 * me + 3].copy_from_slice(&[me as u16; 3]);
    w.all_gather_in_place(&mut ag).unwrap();
    assert!((0..3 * p).all(|k| ag[k] as usize == k / 3));
    let mut a2a: Vec<u32> = (0..2 * p).map(|k| (me * 100 + k / 2) as u32).collect();
    w.all_to_all_in_place(&mut a2a).unwrap();
    assert!((0..2 * p).all(|k| a2a[k] as usize == (k / 2) * 100 + me));
    // Bitwise and logical ops on integers; min on i8.
    let mut x = [0u32];
    w.all_reduce(&[1u32 << me], &mut x, Op::BitOr).unwrap();
    assert_eq!(x[0], (1u32 << p) - 1);
    let mut m = [0i8];
    w.all_reduce(&[-(me as i8)], &mut m, Op::Min).unwrap();
    assert_eq!(m[0], -((p - 1) as i8));
    // Misuse gives errors, not corruption.
    assert!(matches!(
        w.broadcast(&mut [0u8], p),
        Err(Error::InvalidRank { .. })
    ));
    assert!(matches!(
        w.all_reduce(&[1u8, 2], &mut [0u8], Op::Sum),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        w.all_reduce(&[1.0f32], &mut [0.0f32], Op::BitXor),
        Err(Error::InvalidArgument(_))
    ));
    w.barrier().unwrap();
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_collectives() {
    let Some(u) = rank_init() else { return };
    let pl = u.placement();
    println!(
        "rank {} on node {} ({} of {} there)",
        u.world().rank(),
        pl.node,
        pl.local_rank,
        pl.local_size
    );
    check_everything(&u.world());
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_bad_algorithm() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let err = w.all_reduce(&[1u8], &mut [0u8], Op::Sum).unwrap_err();
    assert!(
        err.to_string().contains("COURIER_ALLREDUCE_ALGORITHM"),
        "{err}"
    );
    // The other collectives are unaffected.
    w.barrier().unwrap();
}

#[test]
#[ignore = "rank body: run through courier"]
fn body_communicators() {
    let Some(u) = rank_init() else { return };
    let w = u.world();
    let (p, me) = (w.size(), w.rank());
    // dup: same ranks, separate matching.
    let d = w.dup().unwrap();
    assert_eq!((d.rank(), d.size()), (me, p));
    if p >= 2 {
        if me == 0 {
            d.send(&[1u32], 1, 9).unwrap();
            w.send(&[2u32], 1, 9).unwrap();
        } else if me == 1 {
            let mut x = [0u32];
            let st = w.recv(&mut x, ANY_SOURCE, ANY_TAG).unwrap();
            assert_eq!(
                (x[0], st.source),
                (2, 0),
                "a world receive matched dup traffic"
            );
            d.recv(&mut x, 0, 9).unwrap();
            assert_eq!(x[0], 1);
        }
    }
    check_everything(&d);
    // split: odd and even ranks, reversed order by key; one rank opts out.
    let opt_out = p >= 5 && me == 4;
    let color = if opt_out { None } else { Some((me % 2) as u32) };
    let s = w.split(color, -(me as i32)).unwrap();
    match s {
        None => assert!(opt_out),
        Some(s) => {
            let mut members: Vec<usize> = (0..p)
                .filter(|r| r % 2 == me % 2 && !(p >= 5 && *r == 4))
                .collect();
            members.reverse();
            assert_eq!(s.size(), members.len());
            assert_eq!(s.rank(), members.iter().position(|&r| r == me).unwrap());
            // Collectives on the split run while the world runs its own.
            let mut sum = [0u64];
            s.all_reduce(&[me as u64], &mut sum, Op::Sum).unwrap();
            assert_eq!(sum[0] as usize, members.iter().sum::<usize>());
            check_everything(&s);
        }
    }
    let mut total = [0u64];
    w.all_reduce(&[1u64], &mut total, Op::Sum).unwrap();
    assert_eq!(total[0] as usize, p);
    // Many communicators: context ids are recycled when dropped.
    for _ in 0..50 {
        let c = w.dup().unwrap();
        c.barrier().unwrap();
    }
    let node = w.split_by_node(u.placement().node).unwrap();
    assert_eq!(node.size(), u.placement().local_size);
}
