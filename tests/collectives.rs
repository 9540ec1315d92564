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

#[test]
fn every_allreduce_algorithm() {
    for alg in ["recursive_doubling", "reduce_bcast"] {
        for np in [1, 2, 3, 5, 6, 8] {
            run_body_env(
                "body_collectives",
                np,
                &[("COURIER_ALLREDUCE_ALGORITHM", alg)],
                180,
            )
            .assert_ranks_passed(np);
        }
    }
}

#[test]
fn collectives_over_tcp_and_without_cma() {
    run_body_env("body_collectives", 5, &[("COURIER_TRANSPORT", "tcp")], 180)
        .assert_ranks_passed(5);
    run_body_env("body_collectives", 4, &[("COURIER_CMA", "0")], 180).assert_ranks_passed(4);
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
        // Concatenate decimal strings: a then b.
        let shift = if b[0] == 0 {
            10
        } else {
            10u64.pow(b[0].ilog10() + 1)
        };
        a[0] = a[0] * shift + b[0];
        Ok(())
    };
    let start = [me as u64 + 1];
    w.all_reduce_with(&start, &mut order, &mut place).unwrap();
    let expect: String = (1..=p).map(|d| d.to_string()).collect();
    assert_eq!(order[0].to_string(), expect, "rank order broken");
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
    check_everything(&u.world());
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
