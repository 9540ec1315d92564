//! Matching engine costs, measured through a singleton world's self link
//! (engine + driver, no sockets): an eager send+recv to self, and a receive
//! that must skip a queue of unexpected messages with other tags.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let u = courier::init().expect("singleton init");
    let w = u.world();
    let mut buf = [0u64; 1];
    c.bench_function("self_send_recv_8B", |b| {
        b.iter(|| {
            w.send(&[7u64], 0, 1).unwrap();
            w.recv(&mut buf, 0, 1).unwrap();
        })
    });
    // 100 queued messages on other tags in front of the one we want.
    for t in 0..100u32 {
        w.send(&[t as u64], 0, 1000 + t).unwrap();
    }
    c.bench_function("match_behind_100_unexpected", |b| {
        b.iter(|| {
            w.send(&[7u64], 0, 1).unwrap();
            w.recv(&mut buf, 0, 1).unwrap();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
