//! Every schedule on 1 to 9 simulated ranks (threads), with eager and with
//! synchronous sends, against references computed locally.
#![allow(clippy::needless_range_loop)] // indices are the point of these checks

use super::*;
use crate::coll::net::sim::{run, SimNet};
use crate::error::Result;

/// Deterministic operand `i` of rank `r`.
fn val(r: usize, i: usize) -> u64 {
    (r as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// A float operand whose sums are not exact, so the order shows in the bits.
fn fval(r: usize, i: usize) -> f64 {
    1.0 / (1.0 + r as f64 * 3.7 + i as f64 * 0.013)
}

fn sum_u64(a: &mut [u64], b: &[u64]) -> Result<()> {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.wrapping_add(*y);
    }
    Ok(())
}

fn sum_f64(a: &mut [f64], b: &[f64]) -> Result<()> {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
    Ok(())
}

/// 2×2 matrix product (mod 2^64): associative, not commutative, so it shows
/// whether rank order was kept.
fn matmul(a: &mut [[u64; 4]], b: &[[u64; 4]]) -> Result<()> {
    for (x, y) in a.iter_mut().zip(b) {
        let m = |i: usize, j: usize| x[i].wrapping_mul(y[j]);
        *x = [
            m(0, 0).wrapping_add(m(1, 2)),
            m(0, 1).wrapping_add(m(1, 3)),
            m(2, 0).wrapping_add(m(3, 2)),
            m(2, 1).wrapping_add(m(3, 3)),
        ];
    }
    Ok(())
}

fn mat(r: usize, i: usize) -> [u64; 4] {
    [
        val(r, i) | 1,
        val(r, i + 1),
        val(r, i + 2),
        val(r, i + 3) | 1,
    ]
}

fn mat_ref(ranks: std::ops::Range<usize>, len: usize) -> Vec<[u64; 4]> {
    let mut acc: Option<Vec<[u64; 4]>> = None;
    for r in ranks {
        let v: Vec<_> = (0..len).map(|i| mat(r, i)).collect();
        acc = Some(match acc {
            None => v,
            Some(mut a) => {
                matmul(&mut a, &v).unwrap();
                a
            }
        });
    }
    acc.unwrap_or_default()
}

const COUNTS: [usize; 4] = [0, 1, 7, 1000];

/// Runs `body` for every communicator size 1..=9 and both send modes.
fn each_world<R: Send>(body: impl Fn(&SimNet) -> R + Sync, check: impl Fn(usize, Vec<R>)) {
    for p in 1..=9 {
        for sync in [false, true] {
            check(p, run(p, sync, &body));
        }
    }
}

#[test]
fn barrier_completes() {
    each_world(|n| barrier_dissemination(n).unwrap(), |_, _| ());
}

#[test]
fn broadcasts_deliver_the_root_bytes() {
    type Bcast = fn(&SimNet, &mut [u8], usize) -> Result<()>;
    fn pipelined(n: &SimNet, buf: &mut [u8], root: usize) -> Result<()> {
        bcast_binomial_pipelined(n, buf, root, 3) // tiny segments: many of them
    }
    for alg in [
        bcast_binomial::<SimNet> as Bcast,
        bcast_scatter_allgather,
        pipelined,
    ] {
        for len in COUNTS {
            let want = |root: usize| -> Vec<u8> { (0..len).map(|i| val(root, i) as u8).collect() };
            each_world(
                |n| {
                    (0..n.size())
                        .map(|root| {
                            let mut buf = if n.rank() == root {
                                want(root)
                            } else {
                                vec![0; len]
                            };
                            alg(n, &mut buf, root).unwrap();
                            buf
                        })
                        .collect::<Vec<_>>()
                },
                |_, out| {
                    for per_rank in out {
                        for (root, buf) in per_rank.into_iter().enumerate() {
                            assert_eq!(buf, want(root));
                        }
                    }
                },
            );
        }
    }
}

#[test]
fn reductions_to_every_root() {
    for len in COUNTS {
        let reference: Vec<Vec<u64>> = (1..=9)
            .map(|p| {
                (0..len)
                    .map(|i| (0..p).fold(0u64, |a, r| a.wrapping_add(val(r, i))))
                    .collect()
            })
            .collect();
        for alg in 0..6 {
            each_world(
                |n| {
                    (0..n.size())
                        .map(|root| {
                            let mut acc: Vec<u64> = (0..len).map(|i| val(n.rank(), i)).collect();
                            let mut tmp = vec![0; len];
                            let f = &mut sum_u64;
                            match alg {
                                0 => reduce_binomial(
                                    n,
                                    Reduction::new(&mut acc, &mut tmp, f),
                                    root,
                                    true,
                                ),
                                1 => reduce_binomial(
                                    n,
                                    Reduction::new(&mut acc, &mut tmp, f),
                                    root,
                                    false,
                                ),
                                2 => reduce_rabenseifner(
                                    n,
                                    Reduction::new(&mut acc, &mut tmp, f),
                                    root,
                                ),
                                3 => reduce_binomial_pipelined(n, &mut acc, root, true, 3, f),
                                4 => {
                                    let own = std::mem::replace(&mut acc, vec![0; len]);
                                    reduce_binomial_from(
                                        n,
                                        &own,
                                        Reduction::new(&mut acc, &mut tmp, f),
                                        root,
                                    )
                                }
                                _ => reduce_binomial_pipelined(n, &mut acc, root, false, 64, f),
                            }
                            .unwrap();
                            acc
                        })
                        .collect::<Vec<_>>()
                },
                |p, out| {
                    for root in 0..p {
                        assert_eq!(
                            out[root][root],
                            reference[p - 1],
                            "alg {alg} p {p} root {root}"
                        );
                    }
                },
            );
        }
    }
}

#[test]
fn non_commutative_reduce_keeps_rank_order() {
    for len in [1, 5, 9] {
        each_world(
            |n| {
                (0..n.size())
                    .map(|root| {
                        let mut acc: Vec<[u64; 4]> = (0..len).map(|i| mat(n.rank(), i)).collect();
                        let mut tmp = vec![[0; 4]; len];
                        let mut piped = acc.clone();
                        reduce_binomial(
                            n,
                            Reduction::new(&mut acc, &mut tmp, &mut matmul),
                            root,
                            false,
                        )
                        .unwrap();
                        reduce_binomial_pipelined(n, &mut piped, root, false, 2, &mut matmul)
                            .unwrap();
                        if n.rank() == root {
                            assert_eq!(piped, acc, "pipelining changed the order");
                        }
                        acc
                    })
                    .collect::<Vec<_>>()
            },
            |p, out| {
                for root in 0..p {
                    assert_eq!(out[root][root], mat_ref(0..p, len));
                }
            },
        );
    }
}

type AllReduce = fn(&SimNet, Reduction<'_, f64>) -> Result<()>;
const ALLREDUCES: [(&str, AllReduce); 5] = [
    (
        "recursive_doubling",
        allreduce_recursive_doubling::<SimNet, f64>,
    ),
    ("rabenseifner", allreduce_rabenseifner::<SimNet, f64>),
    ("rabenseifner_from", rabenseifner_from),
    ("ring", allreduce_ring::<SimNet, f64>),
    ("reduce_bcast", allreduce_reduce_bcast::<SimNet, f64>),
];

/// [`allreduce_rabenseifner_from`] where it applies (p a power of two),
/// with the operand moved out of `acc` and `acc` poisoned with NaN, so any
/// read of `acc` before it is written shows in the result.
fn rabenseifner_from(n: &SimNet, r: Reduction<'_, f64>) -> Result<()> {
    if !n.size().is_power_of_two() {
        return allreduce_rabenseifner(n, r);
    }
    let Reduction { acc, tmp, combine } = r;
    let own = acc.to_vec();
    acc.fill(f64::NAN);
    allreduce_rabenseifner_from(n, &own, Reduction::new(acc, tmp, combine))
}

#[test]
fn every_allreduce_gives_identical_bits_everywhere() {
    for (name, alg) in ALLREDUCES {
        for len in COUNTS {
            each_world(
                |n| {
                    let mut acc: Vec<f64> = (0..len).map(|i| fval(n.rank(), i)).collect();
                    let mut tmp = vec![0.0; len];
                    alg(n, Reduction::new(&mut acc, &mut tmp, &mut sum_f64)).unwrap();
                    acc
                },
                |p, out| {
                    for (r, got) in out.iter().enumerate() {
                        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(got), bits(&out[0]), "{name}: rank {r} of {p} differs");
                        for (i, x) in got.iter().enumerate() {
                            let exact: f64 = (0..p).map(|r| fval(r, i)).sum();
                            assert!((x - exact).abs() < 1e-12, "{name} p {p}: {x} vs {exact}");
                        }
                    }
                },
            );
        }
    }
}

#[test]
fn recursive_doubling_allreduce_keeps_rank_order() {
    for p in 1..=9 {
        let out = run(p, true, |n| {
            let mut acc: Vec<[u64; 4]> = (0..3).map(|i| mat(n.rank(), i)).collect();
            let mut tmp = vec![[0; 4]; 3];
            allreduce_recursive_doubling(n, Reduction::new(&mut acc, &mut tmp, &mut matmul))
                .unwrap();
            acc
        });
        for got in out {
            assert_eq!(got, mat_ref(0..p, 3));
        }
    }
}

/// Byte offsets of blocks of `bb(r)` bytes, rank by rank.
fn offsets(p: usize, bb: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut d = vec![0];
    for r in 0..p {
        d.push(d[r] + bb(r));
    }
    d
}

#[test]
fn allgathers_assemble_every_block() {
    for bb in [0usize, 1, 13, 3000] {
        for alg in [
            "ring",
            "recursive_doubling",
            "bruck",
            "ring_v",
            "ring_own",
            "recursive_doubling_own",
        ] {
            each_world(
                |n| {
                    let p = n.size();
                    let size = |r: usize| {
                        if alg == "ring_v" {
                            (bb + r * 5) % 97
                        } else {
                            bb
                        }
                    };
                    let d = offsets(p, size);
                    let mut buf = vec![0u8; d[p]];
                    let me = n.rank();
                    // The "_own" variants start with the block outside `buf`
                    // (the send buffer of a non-in-place all-gather).
                    let own: Vec<u8> = (0..d[me + 1] - d[me]).map(|k| val(me, k) as u8).collect();
                    if !alg.ends_with("_own") {
                        buf[d[me]..d[me + 1]].copy_from_slice(&own);
                    }
                    match alg {
                        "recursive_doubling" if p.is_power_of_two() => {
                            allgather_recursive_doubling(n, &mut buf, &d, None)
                        }
                        "recursive_doubling_own" if p.is_power_of_two() => {
                            allgather_recursive_doubling(n, &mut buf, &d, Some(&own))
                        }
                        "ring_own" | "recursive_doubling_own" => {
                            allgather_ring(n, &mut buf, &d, Some(&own))
                        }
                        "bruck" => allgather_bruck(n, &mut buf, bb),
                        _ => allgather_ring(n, &mut buf, &d, None),
                    }
                    .unwrap();
                    (buf, d)
                },
                |_, out| {
                    for (buf, d) in out {
                        for r in 0..d.len() - 1 {
                            for k in d[r]..d[r + 1] {
                                assert_eq!(buf[k], val(r, k - d[r]) as u8, "{alg}");
                            }
                        }
                    }
                },
            );
        }
    }
}

#[test]
fn alltoalls_transpose_the_blocks() {
    let byte = |from: usize, to: usize, k: usize| (from * 31 + to * 7 + k) as u8;
    for bb in [0usize, 1, 9, 2000] {
        for bruck in [false, true] {
            each_world(
                |n| {
                    let (p, me) = (n.size(), n.rank());
                    let d = offsets(p, |_| bb);
                    let send: Vec<u8> = (0..p * bb)
                        .map(|k| byte(me, k / bb.max(1), k % bb.max(1)))
                        .collect();
                    let mut recv = vec![0u8; p * bb];
                    if bruck {
                        alltoall_bruck(n, &send, &mut recv, bb).unwrap();
                    } else {
                        alltoall_pairwise(n, &send, &d, &mut recv, &d).unwrap();
                    }
                    recv
                },
                |p, out| {
                    for (me, recv) in out.iter().enumerate() {
                        for k in 0..p * bb {
                            assert_eq!(recv[k], byte(k / bb, me, k % bb), "bruck {bruck} p {p}");
                        }
                    }
                },
            );
        }
    }
}

#[test]
fn reduce_scatter_ring_with_uneven_counts() {
    each_world(
        |n| {
            let (p, me) = (n.size(), n.rank());
            let d = offsets(p, |r| (r * 3 + 1) % 5);
            let mut acc: Vec<u64> = (0..d[p]).map(|i| val(me, i)).collect();
            let mut tmp = vec![0; d[p]];
            reduce_scatter_ring(n, Reduction::new(&mut acc, &mut tmp, &mut sum_u64), &d).unwrap();
            acc[d[me]..d[me + 1]].to_vec()
        },
        |p, out| {
            let d = offsets(p, |r| (r * 3 + 1) % 5);
            for (me, got) in out.iter().enumerate() {
                let want: Vec<u64> = (d[me]..d[me + 1])
                    .map(|i| (0..p).fold(0u64, |a, r| a.wrapping_add(val(r, i))))
                    .collect();
                assert_eq!(got, &want);
            }
        },
    );
}

#[test]
fn scans_keep_rank_order() {
    type Scan =
        fn(&SimNet, &mut Vec<[u64; 4]>, UserOp<'_, [u64; 4]>) -> Result<Option<Vec<[u64; 4]>>>;
    for alg in [
        scan_chain::<SimNet, [u64; 4]> as Scan,
        scan_recursive_doubling,
    ] {
        for len in [0, 1, 4] {
            each_world(
                |n| {
                    let mut acc: Vec<[u64; 4]> = (0..len).map(|i| mat(n.rank(), i)).collect();
                    let excl = alg(n, &mut acc, &mut matmul).unwrap();
                    (acc, excl)
                },
                |_, out| {
                    for (me, (incl, excl)) in out.into_iter().enumerate() {
                        assert_eq!(incl, mat_ref(0..me + 1, len));
                        assert_eq!(excl, (me > 0).then(|| mat_ref(0..me, len)));
                    }
                },
            );
        }
    }
}
