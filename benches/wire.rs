//! Frame header encode/decode: the per-message cost of the wire format.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use courier::bench_internals::wire::Frame;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    let f = Frame::Eager {
        context: 0,
        tag: 42,
        len: 8,
        sync: false,
        sreq: 0,
    };
    c.bench_function("frame_encode", |b| {
        b.iter(|| black_box(black_box(f).encode()))
    });
    let bytes = f.encode();
    c.bench_function("frame_decode", |b| {
        b.iter(|| Frame::decode(black_box(&bytes), u64::MAX))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
