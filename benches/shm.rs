//! The shared-memory building blocks: ring enqueue/dequeue (8 B and 4 KiB
//! frames), a two-thread ping-pong and a two-thread stream over two rings,
//! and the single-copy (CMA) path against a plain memcpy.
//! Run: cargo bench --features bench-internals --bench shm

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use courier::bench_internals::{cma_copy, combine_sum, copy, ring_pingpong, ring_stream, HeapRing};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_push_pop");
    for size in [8usize, 48, 4096] {
        let mut r = HeapRing::new(1 << 20);
        let src = vec![1u8; size];
        let mut dst = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                r.push(black_box(&src));
                r.pop(black_box(&mut dst))
            })
        });
    }
    g.finish();
}

/// One hop (half a round trip) between two threads over two rings: the
/// cost of moving a message between cores with nothing around it (sizes:
/// an 8 B, 256 B, 1 KiB and 4 KiB message behind its 16-byte header).
fn pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_pingpong_hop");
    for size in [24usize, 280, 1040, 4112] {
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter_custom(|iters| ring_pingpong(size, iters) / 2)
        });
    }
    g.finish();
}

/// One message of a stream between two threads, windows of 64 answered
/// by one write (the osu_bw pattern): the ring's message rate with nothing
/// around it. 24 bytes: an 8-byte message behind its 16-byte header.
fn stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_stream_message");
    for size in [24usize, 80, 1040] {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter_custom(|iters| ring_stream(size, iters))
        });
    }
    g.finish();
}

fn single_copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("large_copy");
    g.sample_size(20);
    for size in [64usize << 10, 1 << 20, 4 << 20] {
        let src = vec![3u8; size];
        let mut dst = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("process_vm_readv", size), &size, |b, _| {
            b.iter(|| cma_copy(black_box(&src), black_box(&mut dst)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| dst.copy_from_slice(black_box(&src)))
        });
    }
    g.finish();
}

/// A copy whose destination lies 0 or 16 bytes past its source modulo the
/// page (16: two equal buffers allocated one after the other), through
/// `memcpy`, the runtime's `copy` and cross-memory attach: at 16 bytes
/// glibc's `rep movsb` (and the kernel's) runs many times slower on AMD
/// Zen; `copy` and the runtime's pulls move such pairs in pieces.
fn copy_distance(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy_distance");
    g.sample_size(20);
    for size in [16usize << 10, 256 << 10] {
        let src_buf = vec![3u8; size + 4096];
        let mut dst_buf = vec![0u8; size + 8192];
        let s0 = (4096 - src_buf.as_ptr() as usize % 4096) % 4096;
        let src = &src_buf[s0..s0 + size];
        for distance in [0usize, 16] {
            let d0 =
                (src.as_ptr() as usize + distance).wrapping_sub(dst_buf.as_ptr() as usize) % 4096;
            let dst = &mut dst_buf[d0..d0 + size];
            g.throughput(Throughput::Bytes(size as u64));
            let id = |what: &str| BenchmarkId::new(format!("{what}/distance {distance}"), size);
            g.bench_function(id("memcpy"), |b| {
                b.iter(|| dst.copy_from_slice(black_box(src)))
            });
            g.bench_function(id("copy"), |b| b.iter(|| copy(dst, black_box(src))));
            g.bench_function(id("process_vm_readv"), |b| {
                b.iter(|| cma_copy(black_box(src), dst).unwrap())
            });
        }
    }
    g.finish();
}

/// A reduction's local combine of 64 MiB of f64 (`acc += x`), in one
/// thread and split over two rayon threads (when a rank has a core to
/// spare: `COURIER_PAR_COMBINE_MIN`).
fn combine(c: &mut Criterion) {
    let mut g = c.benchmark_group("combine_sum_f64");
    g.sample_size(10);
    let n = (64 << 20) / 8;
    let x = vec![1.5f64; n];
    let mut acc = vec![0.5f64; n];
    g.throughput(Throughput::Bytes(64 << 20));
    for threads in [1usize, 2] {
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, &t| {
            b.iter(|| combine_sum(black_box(&mut acc), black_box(&x), t).unwrap())
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    ring,
    pingpong,
    stream,
    single_copy,
    copy_distance,
    combine
);
criterion_main!(benches);
